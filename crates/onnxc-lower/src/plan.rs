//! Static memory planning: arena offsets from buffer lifetimes.
//!
//! A buffer's lifetime is the span of kernels that mention it (kernels run
//! in order). Buffers are placed first-fit by offset, in order of first use,
//! avoiding every placed buffer whose lifetime overlaps. Offsets are 64-byte
//! aligned.

use onnxc_kir::{BufferKind, Expr, Program, Stmt};

/// Inclusive (first, last) kernel index mentioning each buffer.
pub fn lifetimes(program: &Program) -> Vec<Option<(usize, usize)>> {
    let mut life: Vec<Option<(usize, usize)>> = vec![None; program.buffers.len()];
    for (k, kernel) in program.kernels.iter().enumerate() {
        let mut mark = |b: u32| {
            let l = &mut life[b as usize];
            *l = Some(match *l {
                None => (k, k),
                Some((f, _)) => (f, k),
            });
        };
        fn expr(e: &Expr, mark: &mut dyn FnMut(u32)) {
            match e {
                Expr::Var(_) | Expr::Int(..) | Expr::Float(..) => {}
                Expr::Load { buf, index } => {
                    mark(buf.0);
                    expr(index, mark);
                }
                Expr::Unary(_, a) | Expr::Cast(_, a) => expr(a, mark),
                Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
                    expr(a, mark);
                    expr(b, mark);
                }
                Expr::Select { cond, then, otherwise } => {
                    expr(cond, mark);
                    expr(then, mark);
                    expr(otherwise, mark);
                }
            }
        }
        fn stmts(s: &[Stmt], mark: &mut dyn FnMut(u32)) {
            for st in s {
                match st {
                    Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => stmts(body, mark),
                    Stmt::Store { buf, index, value } => {
                        mark(buf.0);
                        expr(index, mark);
                        expr(value, mark);
                    }
                    Stmt::Assign { value, .. } => expr(value, mark),
                    Stmt::FailIf { cond, .. } => expr(cond, mark),
                    Stmt::Gemm(g) => {
                        for (b, off) in g.operands() {
                            mark(b.0);
                            expr(off, mark);
                        }
                    }
                    Stmt::Pack(p) => {
                        for (b, off) in p.operands() {
                            mark(b.0);
                            expr(off, mark);
                        }
                    }
                    Stmt::Depthwise(d) => stmts(&d.loops, mark),
                    Stmt::Rows(d) => stmts(&d.loops, mark),
                    Stmt::Transpose(d) => stmts(&d.loops, mark),
                }
            }
        }
        stmts(&kernel.body, &mut mark);
    }
    life
}

/// Sets every arena buffer's offset and the program's arena size.
/// Empties the constants no kernel reads (and no input or output names):
/// the originals of weights a lowering transformed at compile time
/// (Winograd's filters, the transposed 1x1 convolutions' weights), which
/// would otherwise ship in the artifact and count as its weights.
pub fn drop_unread_constants(program: &mut Program) {
    let life = lifetimes(program);
    let io: Vec<u32> = program.inputs.iter().chain(&program.outputs).map(|d| d.buffer.0).collect();
    for (i, b) in program.buffers.iter_mut().enumerate() {
        if matches!(b.kind, BufferKind::Constant(_)) && life[i].is_none() && !io.contains(&(i as u32)) {
            b.kind = BufferKind::Constant(Vec::new());
            b.len = 0;
        }
    }
}

pub fn assign_arena(program: &mut Program) {
    let life = lifetimes(program);
    let mut order: Vec<usize> = (0..program.buffers.len())
        .filter(|&i| matches!(program.buffers[i].kind, BufferKind::Arena { .. }) && life[i].is_some())
        .collect();
    order.sort_by_key(|&i| (life[i].map(|l| l.0), i));
    let mut placed: Vec<(u64, u64, (usize, usize))> = Vec::new();
    let mut arena = 0u64;
    for i in order {
        let size = program.buffers[i].bytes().div_ceil(64).max(1) * 64;
        let l = life[i].expect("filtered to live buffers");
        let mut clashes: Vec<(u64, u64)> =
            placed.iter().filter(|p| p.2 .0 <= l.1 && l.0 <= p.2 .1).map(|p| (p.0, p.1)).collect();
        clashes.sort();
        let mut offset = 0u64;
        for (start, end) in clashes {
            if offset + size <= start {
                break;
            }
            offset = offset.max(end);
        }
        program.buffers[i].kind = BufferKind::Arena { offset };
        placed.push((offset, offset + size, l));
        arena = arena.max(offset + size);
    }
    program.arena_bytes = arena;
}
