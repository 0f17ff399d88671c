//! PLACEHOLDER written by the lead so the crate builds; helper: overwrite this file freely.
use crate::ir::build::*;
use crate::ir::*;
pub fn needs_expansion(op: UnOp) -> bool {
    op.is_transcendental()
}
pub fn unary(op: UnOp, _t: ScalarType, x: GExpr, _f: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    un(op, x)
}
pub fn pow(_t: ScalarType, a: GExpr, b: GExpr, _f: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    bin(BinOp::Pow, a, b)
}
pub fn fmod(_t: ScalarType, a: GExpr, b: GExpr, _f: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    bin(BinOp::Rem, a, b)
}
pub fn f32_to_minifloat(
    _mf: onnxc_kir::minifloat::MiniFloat,
    x: GExpr,
    _f: &mut dyn FnMut(ScalarType) -> VarId,
) -> GExpr {
    cast(ScalarType::U8, x)
}
pub fn f32_to_e8m0(x: GExpr, _f: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    cast(ScalarType::U8, x)
}
pub fn f32_to_bf16(x: GExpr, _f: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    cast(ScalarType::U16, x)
}
