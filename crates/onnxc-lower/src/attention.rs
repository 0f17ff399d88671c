//! ONNX Attention as one kernel per (batch, head, query): scores against
//! the (past + new) keys, mask/causal/window bias, a guarded softmax (rows
//! whose bias masks everything give zeros, as the reference does), then the
//! weighted sum of values. Present keys/values are materialized first in
//! [batch, kv_heads, total, head] layout.

use crate::ops::{broadcast_strides, require_f32};
use crate::{KernelBuilder, Lowering};
use onnxc_ir::{AttentionAttrs, NodeId};
use onnxc_kir::build::*;
use onnxc_kir::{BinOp, BufferId, CmpOp, Expr, ScalarType, Stmt, UnOp};

/// Element (b, h, s, d) of a Q/K/V tensor in its input layout.
fn at4(three_d: bool, heads: usize, seq: usize, head: usize, b: &Expr, h: &Expr, s: &Expr, d: &Expr) -> Expr {
    let (heads, seq, head) = (heads as i64, seq as i64, head as i64);
    if three_d {
        add(add(mul(add(mul(b.clone(), int(seq)), s.clone()), int(heads * head)), mul(h.clone(), int(head))), d.clone())
    } else {
        add(mul(add(mul(add(mul(b.clone(), int(heads)), h.clone()), int(seq)), s.clone()), int(head)), d.clone())
    }
}

/// Copies past (if any) then new rows into a [B, H, total, head] buffer.
fn present(
    cx: &mut Lowering,
    name: String,
    dst: BufferId,
    past: Option<BufferId>,
    new: BufferId,
    geo: (usize, usize, usize, usize, usize, bool),
) {
    let (batch, heads, past_len, new_len, head, three_d) = geo;
    let total = past_len + new_len;
    let mut k = KernelBuilder::new(name);
    let mut body = Vec::new();
    if let Some(p) = past {
        body.extend(k.nest(&[batch, heads, past_len, head], |_, v| {
            let src = linear(v, &[(heads * past_len * head) as i64, (past_len * head) as i64, head as i64, 1]);
            let dsti = linear(v, &[(heads * total * head) as i64, (total * head) as i64, head as i64, 1]);
            vec![Stmt::Store { buf: dst, index: dsti, value: load(p, src) }]
        }));
    }
    body.extend(k.nest(&[batch, heads, new_len, head], |_, v| {
        let src = at4(three_d, heads, new_len, head, &v[0], &v[1], &v[2], &v[3]);
        let t = add(v[2].clone(), int(past_len as i64));
        let dsti = linear(
            &[v[0].clone(), v[1].clone(), t, v[3].clone()],
            &[(heads * total * head) as i64, (total * head) as i64, head as i64, 1],
        );
        vec![Stmt::Store { buf: dst, index: dsti, value: load(new, src) }]
    }));
    cx.kernels.push(k.finish(body));
}

pub fn attention(cx: &mut Lowering, id: NodeId, at: &AttentionAttrs) -> Result<(), String> {
    require_f32(cx, id)?;
    let g = onnxc_ir::infer::attention_geometry(cx.graph, id, at)?;
    let name = cx.graph.graph[id].name.clone();
    let n_out = cx.graph.graph[id].outputs.len();
    let (q, kb, vb) = (cx.input(id, 0)?, cx.input(id, 1)?, cx.input(id, 2)?);
    let (past_k, past_v) = if g.past > 0 || cx.graph.input_of(id, 4).is_some() {
        (Some(cx.input(id, 4)?), Some(cx.input(id, 5)?))
    } else {
        (None, None)
    };
    let pk = if n_out > 1 {
        cx.value_buffer((id, 1))?
    } else {
        cx.temp(format!("{name}_keys"), ScalarType::F32, g.batch * g.kv_heads * g.total * g.head)
    };
    let pv = if n_out > 2 {
        cx.value_buffer((id, 2))?
    } else {
        cx.temp(format!("{name}_values"), ScalarType::F32, g.batch * g.kv_heads * g.total * g.v_head)
    };
    present(
        cx,
        format!("{name}_present_keys"),
        pk,
        past_k,
        kb,
        (g.batch, g.kv_heads, g.past, g.kv_seq, g.head, g.three_d),
    );
    present(
        cx,
        format!("{name}_present_values"),
        pv,
        past_v,
        vb,
        (g.batch, g.kv_heads, g.past, g.kv_seq, g.v_head, g.three_d),
    );
    let qk_out = if n_out > 3 { Some(cx.value_buffer((id, 3))?) } else { None };
    let y = cx.output(id)?;
    let scores = cx.temp(format!("{name}_scores"), ScalarType::F32, g.total.max(1));
    // The mask, broadcast over [B, Hq, S, mask_len]; keys past mask_len are masked.
    let mask = if cx.graph.input_of(id, 3).is_some() {
        let md = cx.in_dims(id, 3)?;
        let mt = cx.in_type(id, 3)?;
        let mlen = *md.last().ok_or("the mask must have rank >= 1")?;
        if md.len() > 4 {
            return Err(format!("mask {md:?} has rank above 4"));
        }
        let strides = broadcast_strides(&md, &[g.batch, g.q_heads, g.q_seq, mlen]);
        Some((cx.input(id, 3)?, mt, mlen, strides))
    } else {
        None
    };
    // Per-batch count of valid keys (an external, padded cache).
    let nonpad = cx.optional_input(id, 6)?;
    let scale = at.scale.map(|s| s as f64).unwrap_or(1.0 / (g.head as f64).sqrt()) as f32;
    let group = (g.q_heads / g.kv_heads) as i64;
    let neg_inf = f32c(f32::NEG_INFINITY);
    let mut k = KernelBuilder::new(name);
    let (acc, m, bm, sum) =
        (k.var(ScalarType::F32), k.var(ScalarType::F32), k.var(ScalarType::F32), k.var(ScalarType::F32));
    let body = k.nest(&[g.batch, g.q_heads, g.q_seq], |k, v| {
        let (b, h, i) = (v[0].clone(), v[1].clone(), v[2].clone());
        let kvh = bin(BinOp::Div, h.clone(), int(group));
        let qk_at = |j: &Expr| {
            linear(
                &[b.clone(), h.clone(), i.clone(), j.clone()],
                &[(g.q_heads * g.q_seq * g.total) as i64, (g.q_seq * g.total) as i64, g.total as i64, 1],
            )
        };
        let kv_at = |j: &Expr, d: &Expr, width: usize| {
            linear(
                &[b.clone(), kvh.clone(), j.clone(), d.clone()],
                &[(g.kv_heads * g.total * width) as i64, (g.total * width) as i64, width as i64, 1],
            )
        };
        let bias = |j: &Expr| -> Expr {
            let mut terms: Vec<Expr> = Vec::new();
            if let Some((mb, mt, mlen, ms)) = &mask {
                let jj = bin(BinOp::Min, j.clone(), int(*mlen as i64 - 1));
                let mv = load(*mb, linear(&[b.clone(), h.clone(), i.clone(), jj], ms));
                let term = if *mt == ScalarType::U8 {
                    select(cmp(CmpOp::Ne, mv, Expr::Int(0, ScalarType::U8)), f32c(0.0), neg_inf.clone())
                } else {
                    mv
                };
                terms.push(select(cmp(CmpOp::Lt, j.clone(), int(*mlen as i64)), term, neg_inf.clone()));
            }
            // Absolute query position: after the past cache, or aligned to the
            // end of each batch entry's valid keys.
            let pos = match nonpad {
                Some(np) => {
                    let len = Expr::Cast(ScalarType::I64, Box::new(load(np, b.clone())));
                    terms.push(select(cmp(CmpOp::Lt, j.clone(), len.clone()), f32c(0.0), neg_inf.clone()));
                    add(i.clone(), bin(BinOp::Sub, len, int(g.q_seq as i64)))
                }
                None => add(i.clone(), int(g.past as i64)),
            };
            let diff = bin(BinOp::Sub, pos, j.clone());
            if at.is_causal {
                terms.push(select(cmp(CmpOp::Ge, diff.clone(), int(0)), f32c(0.0), neg_inf.clone()));
            }
            if at.left_window >= 0 {
                terms.push(select(cmp(CmpOp::Le, diff.clone(), int(at.left_window)), f32c(0.0), neg_inf.clone()));
            }
            if at.right_window >= 0 {
                terms.push(select(cmp(CmpOp::Ge, diff.clone(), int(-at.right_window)), f32c(0.0), neg_inf.clone()));
            }
            terms.into_iter().reduce(|a, c| bin(BinOp::Add, a, c)).unwrap_or(f32c(0.0))
        };
        let mut s =
            vec![Stmt::Assign { var: m, value: neg_inf.clone() }, Stmt::Assign { var: bm, value: neg_inf.clone() }];
        s.extend(k.nest(&[g.total], |k, jv| {
            let j = jv[0].clone();
            let mut s = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
            s.extend(k.nest(&[g.head], |_, dv| {
                let qv = load(q, at4(g.three_d, g.q_heads, g.q_seq, g.head, &b, &h, &i, &dv[0]));
                let kv = load(pk, kv_at(&j, &dv[0], g.head));
                vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, qv, kv)) }]
            }));
            let mut sc = bin(BinOp::Mul, var(acc), f32c(scale));
            if at.softcap > 0.0 {
                sc = bin(BinOp::Mul, f32c(at.softcap), un(UnOp::Tanh, bin(BinOp::Div, sc, f32c(at.softcap))));
            }
            s.push(Stmt::Assign { var: acc, value: sc });
            if let (Some(qb), 0 | 1) = (qk_out, at.qk_mode) {
                s.push(Stmt::Store { buf: qb, index: qk_at(&j), value: var(acc) });
            }
            s.push(Stmt::Store { buf: scores, index: j.clone(), value: bin(BinOp::Add, var(acc), bias(&j)) });
            if let (Some(qb), 2) = (qk_out, at.qk_mode) {
                s.push(Stmt::Store { buf: qb, index: qk_at(&j), value: load(scores, j.clone()) });
            }
            s.push(Stmt::Assign { var: m, value: bin(BinOp::Max, var(m), load(scores, j.clone())) });
            s.push(Stmt::Assign { var: bm, value: bin(BinOp::Max, var(bm), bias(&j)) });
            s
        }));
        s.push(Stmt::Assign { var: m, value: select(cmp(CmpOp::Eq, var(m), neg_inf.clone()), f32c(0.0), var(m)) });
        s.push(Stmt::Assign { var: sum, value: f32c(0.0) });
        s.extend(k.nest(&[g.total], |_, jv| {
            let j = jv[0].clone();
            vec![
                Stmt::Store {
                    buf: scores,
                    index: j.clone(),
                    value: un(UnOp::Exp, bin(BinOp::Sub, load(scores, j.clone()), var(m))),
                },
                Stmt::Assign { var: sum, value: bin(BinOp::Add, var(sum), load(scores, j)) },
            ]
        }));
        let inv = select(
            cmp(CmpOp::Eq, var(bm), neg_inf.clone()),
            f32c(0.0),
            bin(BinOp::Div, f32c(1.0), select(cmp(CmpOp::Eq, var(sum), f32c(0.0)), f32c(1.0), var(sum))),
        );
        s.push(Stmt::Assign { var: sum, value: inv });
        s.extend(k.nest(&[g.total], |_, jv| {
            let j = jv[0].clone();
            let mut s = vec![Stmt::Store {
                buf: scores,
                index: j.clone(),
                value: bin(BinOp::Mul, load(scores, j.clone()), var(sum)),
            }];
            if let (Some(qb), 3) = (qk_out, at.qk_mode) {
                s.push(Stmt::Store { buf: qb, index: qk_at(&j), value: load(scores, j) });
            }
            s
        }));
        s.extend(k.nest(&[g.v_head], |k, ev| {
            let e = ev[0].clone();
            let mut s = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
            s.extend(k.nest(&[g.total], |_, jv| {
                let j = jv[0].clone();
                vec![Stmt::Assign {
                    var: acc,
                    value: bin(
                        BinOp::Add,
                        var(acc),
                        bin(BinOp::Mul, load(scores, j.clone()), load(pv, kv_at(&j, &e, g.v_head))),
                    ),
                }]
            }));
            s.push(Stmt::Store {
                buf: y,
                index: at4(g.three_d, g.q_heads, g.q_seq, g.v_head, &b, &h, &i, &e),
                value: var(acc),
            });
            s
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}
