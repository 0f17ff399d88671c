//! RNN, GRU and LSTM: one kernel per node, running the directions in turn.
//! Each time step computes the
//! gate pre-activations (input part, then recurrent part) into a scratch
//! buffer, then updates the state elementwise. Sequence lengths freeze the
//! state and zero the outputs past each sequence's end.

use crate::ops::require_f32;
use crate::{KernelBuilder, Lowering};
use onnxc_ir::{CellKind, NodeId, RecurrentAttrs};
use onnxc_kir::build::*;
use onnxc_kir::{BinOp, BufferId, CmpOp, Expr, ScalarType, Stmt, UnOp, VarId};

fn act(a: &(String, f32, f32), x: Expr) -> Expr {
    let c = |v: f32| f32c(v);
    let (al, be) = (a.1, a.2);
    match a.0.as_str() {
        "Sigmoid" => bin(BinOp::Div, c(1.0), bin(BinOp::Add, c(1.0), un(UnOp::Exp, un(UnOp::Neg, x)))),
        "Tanh" => un(UnOp::Tanh, x),
        "Relu" => bin(BinOp::Max, x, c(0.0)),
        "LeakyRelu" => select(cmp(CmpOp::Ge, x.clone(), c(0.0)), x.clone(), bin(BinOp::Mul, c(al), x)),
        "ThresholdedRelu" => select(cmp(CmpOp::Gt, x.clone(), c(al)), x, c(0.0)),
        "ScaledTanh" => bin(BinOp::Mul, c(al), un(UnOp::Tanh, bin(BinOp::Mul, c(be), x))),
        "HardSigmoid" => {
            bin(BinOp::Max, c(0.0), bin(BinOp::Min, c(1.0), bin(BinOp::Add, bin(BinOp::Mul, c(al), x), c(be))))
        }
        "Elu" => select(
            cmp(CmpOp::Ge, x.clone(), c(0.0)),
            x.clone(),
            bin(BinOp::Mul, c(al), bin(BinOp::Sub, un(UnOp::Exp, x), c(1.0))),
        ),
        "Softsign" => bin(BinOp::Div, x.clone(), bin(BinOp::Add, c(1.0), un(UnOp::Abs, x))),
        "Softplus" => un(UnOp::Log, bin(BinOp::Add, c(1.0), un(UnOp::Exp, x))),
        _ => bin(BinOp::Add, bin(BinOp::Mul, c(al), x), c(be)), // Affine (names are checked at import)
    }
}

pub fn recurrent(cx: &mut Lowering, id: NodeId, r: &RecurrentAttrs) -> Result<(), String> {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let (seq, batch, input) = if r.layout == 1 { (xd[1], xd[0], xd[2]) } else { (xd[0], xd[1], xd[2]) };
    let h = r.hidden;
    let gates = match r.cell {
        CellKind::Rnn => 1,
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    };
    let gh = gates * h;
    let dirs = r.forward as usize + r.reverse as usize;
    let present = |s: usize| cx.graph.input_of(id, s).is_some();
    let opt = |cx: &mut Lowering, s: usize| -> Result<Option<BufferId>, String> {
        if present(s) {
            cx.input(id, s).map(Some)
        } else {
            Ok(None)
        }
    };
    let (x, w, rr) = (cx.input(id, 0)?, cx.input(id, 1)?, cx.input(id, 2)?);
    let bias = opt(cx, 3)?;
    let lens = opt(cx, 4)?;
    let init_h = opt(cx, 5)?;
    let init_c = if r.cell == CellKind::Lstm { opt(cx, 6)? } else { None };
    let peep = if r.cell == CellKind::Lstm { opt(cx, 7)? } else { None };
    let n_out = cx.graph.graph[id].outputs.len();
    let y = cx.output(id)?;
    let y_h = if n_out > 1 { Some(cx.value_buffer((id, 1))?) } else { None };
    let y_c = if n_out > 2 && r.cell == CellKind::Lstm { Some(cx.value_buffer((id, 2))?) } else { None };
    let name = cx.graph.graph[id].name.clone();
    let hs = cx.temp(format!("{name}_h"), ScalarType::F32, batch * h);
    let cs = cx.temp(format!("{name}_c"), ScalarType::F32, batch * h);
    let g = cx.temp(format!("{name}_gates"), ScalarType::F32, batch * gh);

    let x_at = |t: &Expr, b: &Expr, k: &Expr| {
        if r.layout == 1 {
            linear(&[b.clone(), t.clone(), k.clone()], &[(seq * input) as i64, input as i64, 1])
        } else {
            linear(&[t.clone(), b.clone(), k.clone()], &[(batch * input) as i64, input as i64, 1])
        }
    };
    let y_at = |t: &Expr, d: usize, b: &Expr, j: &Expr| {
        if r.layout == 1 {
            add(
                linear(&[b.clone(), t.clone(), j.clone()], &[(seq * dirs * h) as i64, (dirs * h) as i64, 1]),
                int((d * h) as i64),
            )
        } else {
            add(
                linear(&[t.clone(), b.clone(), j.clone()], &[(dirs * batch * h) as i64, h as i64, 1]),
                int((d * batch * h) as i64),
            )
        }
    };
    let state_at = |d: usize, b: &Expr, j: &Expr| {
        if r.layout == 1 {
            add(linear(&[b.clone(), j.clone()], &[(dirs * h) as i64, 1]), int((d * h) as i64))
        } else {
            add(linear(&[b.clone(), j.clone()], &[h as i64, 1]), int((d * batch * h) as i64))
        }
    };

    let mut k = KernelBuilder::new(name);
    let (acc, tt_var, valid_var) = (k.var(ScalarType::F32), k.var(ScalarType::I64), k.var(ScalarType::U8));
    let t_var: VarId = k.var(ScalarType::I64);
    let mut body =
        k.nest(&[seq * dirs * batch * h], |_, v| vec![Stmt::Store { buf: y, index: v[0].clone(), value: f32c(0.0) }]);
    let directions: Vec<(usize, bool)> = [(r.forward, false), (r.reverse, true)]
        .iter()
        .filter(|(on, _)| *on)
        .enumerate()
        .map(|(d, (_, rev))| (d, *rev))
        .collect();
    for (d, reverse) in directions {
        let acts = &r.activations[d];
        // Initial state.
        body.extend(k.nest(&[batch, h], |_, v| {
            let idx = linear(v, &[h as i64, 1]);
            let mut s = vec![Stmt::Store {
                buf: hs,
                index: idx.clone(),
                value: match init_h {
                    Some(ih) => load(ih, state_at(d, &v[0], &v[1])),
                    None => f32c(0.0),
                },
            }];
            s.push(Stmt::Store {
                buf: cs,
                index: idx,
                value: match init_c {
                    Some(ic) => load(ic, state_at(d, &v[0], &v[1])),
                    None => f32c(0.0),
                },
            });
            s
        }));
        // Time index and validity of batch entry `b` at step t.
        let step = |b: &Expr| -> (Expr, Expr) {
            let t = var(t_var);
            match (lens, reverse) {
                (Some(l), rev) => {
                    let len = Expr::Cast(ScalarType::I64, Box::new(load(l, b.clone())));
                    let valid = cmp(CmpOp::Lt, t.clone(), len.clone());
                    let tt =
                        if rev { bin(BinOp::Max, bin(BinOp::Sub, bin(BinOp::Sub, len, int(1)), t), int(0)) } else { t };
                    (tt, valid)
                }
                (None, true) => (bin(BinOp::Sub, int(seq as i64 - 1), t), cmp(CmpOp::Eq, int(0), int(0))),
                (None, false) => (t, cmp(CmpOp::Eq, int(0), int(0))),
            }
        };
        let w_off = (d * gh * input) as i64;
        let r_off = (d * gh * h) as i64;
        let b_off = (d * 2 * gh) as i64;
        let clip = |e: Expr| match r.clip {
            Some(c) => bin(BinOp::Min, bin(BinOp::Max, e, f32c(-c)), f32c(c)),
            None => e,
        };
        let mut steps = Vec::new();
        // Phase A: input part and both biases of every gate.
        steps.extend(k.nest(&[batch, gh], |k, v| {
            let (b, row) = (v[0].clone(), v[1].clone());
            let (tt, _) = step(&b);
            let mut s = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
            s.extend(k.nest(&[input], |_, kv| {
                let xv = load(x, x_at(&tt, &b, &kv[0]));
                let wv = load(w, add(int(w_off), add(mul(row.clone(), int(input as i64)), kv[0].clone())));
                vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, xv, wv)) }]
            }));
            let mut value = var(acc);
            if let Some(bb) = bias {
                value = bin(BinOp::Add, value, load(bb, add(int(b_off), row.clone())));
                // GRU's h gate gets Rbh with its recurrent part (inside the
                // reset product when linear_before_reset).
                let rb = load(bb, add(int(b_off + gh as i64), row.clone()));
                value = if r.cell == CellKind::Gru {
                    select(cmp(CmpOp::Lt, row.clone(), int(2 * h as i64)), bin(BinOp::Add, value.clone(), rb), value)
                } else {
                    bin(BinOp::Add, value, rb)
                };
            }
            s.push(Stmt::Store { buf: g, index: linear(&[b, row], &[gh as i64, 1]), value });
            s
        }));
        // Phase B: recurrent part.
        let normal_rows = if r.cell == CellKind::Gru { 2 * h } else { gh };
        steps.extend(k.nest(&[batch, normal_rows], |k, v| {
            let (b, row) = (v[0].clone(), v[1].clone());
            let mut s = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
            s.extend(k.nest(&[h], |_, kv| {
                let hv = load(hs, linear(&[b.clone(), kv[0].clone()], &[h as i64, 1]));
                let rv = load(rr, add(int(r_off), add(mul(row.clone(), int(h as i64)), kv[0].clone())));
                vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, hv, rv)) }]
            }));
            let gi = linear(&[b, row], &[gh as i64, 1]);
            let mut pre = bin(BinOp::Add, load(g, gi.clone()), var(acc));
            if r.cell == CellKind::Gru {
                pre = act(&acts[0], clip(pre));
            }
            s.push(Stmt::Store { buf: g, index: gi, value: pre });
            s
        }));
        if r.cell == CellKind::Gru {
            // The h gate: z and r are activated in g[0..2h].
            steps.extend(k.nest(&[batch, h], |k, v| {
                let (b, j) = (v[0].clone(), v[1].clone());
                let r_at = |kk: &Expr| load(g, add(linear(&[b.clone(), kk.clone()], &[gh as i64, 1]), int(h as i64)));
                let mut s = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
                s.extend(k.nest(&[h], |_, kv| {
                    let hv = load(hs, linear(&[b.clone(), kv[0].clone()], &[h as i64, 1]));
                    let hv = if r.linear_before_reset { hv } else { bin(BinOp::Mul, r_at(&kv[0]), hv) };
                    let rv = load(
                        rr,
                        add(int(r_off + (2 * h * h) as i64), add(mul(j.clone(), int(h as i64)), kv[0].clone())),
                    );
                    vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, hv, rv)) }]
                }));
                let rbh = match bias {
                    Some(bb) => load(bb, add(int(b_off + gh as i64 + 2 * h as i64), j.clone())),
                    None => f32c(0.0),
                };
                let rec = bin(BinOp::Add, var(acc), rbh);
                let rec = if r.linear_before_reset { bin(BinOp::Mul, r_at(&j), rec) } else { rec };
                let gi = add(linear(&[b, j], &[gh as i64, 1]), int(2 * h as i64));
                s.push(Stmt::Store { buf: g, index: gi.clone(), value: bin(BinOp::Add, load(g, gi), rec) });
                s
            }));
        }
        // Phase C: the state update.
        steps.extend(k.nest(&[batch, h], |_, v| {
            let (b, j) = (v[0].clone(), v[1].clone());
            let (tt, valid) = step(&b);
            let gate = |q: usize| load(g, add(linear(&[b.clone(), j.clone()], &[gh as i64, 1]), int((q * h) as i64)));
            let si = linear(&[b.clone(), j.clone()], &[h as i64, 1]);
            let h_old = load(hs, si.clone());
            let c_old = load(cs, si.clone());
            let mut s = vec![Stmt::Assign { var: tt_var, value: tt }, Stmt::Assign { var: valid_var, value: valid }];
            let keep =
                |new: Expr, old: Expr| select(cmp(CmpOp::Ne, var(valid_var), Expr::Int(0, ScalarType::U8)), new, old);
            let (h_new, c_new) = match r.cell {
                CellKind::Rnn => (act(&acts[0], clip(gate(0))), None),
                CellKind::Gru => {
                    let z = gate(0);
                    let hh = act(&acts[1], clip(gate(2)));
                    (
                        bin(
                            BinOp::Add,
                            bin(BinOp::Mul, bin(BinOp::Sub, f32c(1.0), z.clone()), hh),
                            bin(BinOp::Mul, z, h_old.clone()),
                        ),
                        None,
                    )
                }
                CellKind::Lstm => {
                    let p = |q: usize| match peep {
                        Some(pb) => load(pb, add(int((d * 3 * h + q * h) as i64), j.clone())),
                        None => f32c(0.0),
                    };
                    let i_g = act(&acts[0], clip(bin(BinOp::Add, gate(0), bin(BinOp::Mul, p(0), c_old.clone()))));
                    let f_g = if r.input_forget {
                        bin(BinOp::Sub, f32c(1.0), i_g.clone())
                    } else {
                        act(&acts[0], clip(bin(BinOp::Add, gate(2), bin(BinOp::Mul, p(2), c_old.clone()))))
                    };
                    let c_t = act(&acts[1], clip(gate(3)));
                    let c_new = bin(BinOp::Add, bin(BinOp::Mul, f_g, c_old.clone()), bin(BinOp::Mul, i_g, c_t));
                    (c_new.clone(), Some(c_new))
                }
            };
            if let Some(c_new) = c_new {
                // LSTM: store C first, then H = o * h(C) reading the new C.
                s.push(Stmt::Store { buf: cs, index: si.clone(), value: keep(c_new, c_old) });
                let c = load(cs, si.clone());
                let o_g = act(
                    &acts[0],
                    clip(bin(BinOp::Add, gate(1), bin(BinOp::Mul, p_peep(peep, d, h, 1, &j), c.clone()))),
                );
                let h_val = bin(BinOp::Mul, o_g, act(&acts[2], c));
                s.push(Stmt::Store { buf: hs, index: si.clone(), value: keep(h_val, h_old) });
            } else {
                s.push(Stmt::Store { buf: hs, index: si.clone(), value: keep(h_new, h_old) });
            }
            let yi = y_at(&var(tt_var), d, &b, &j);
            s.push(Stmt::Store { buf: y, index: yi.clone(), value: keep(load(hs, si), load(y, yi)) });
            s
        }));
        body.push(Stmt::For { var: t_var, start: 0, end: seq as i64, body: steps });
        body.extend(k.nest(&[batch, h], |_, v| {
            let si = linear(v, &[h as i64, 1]);
            let mut s = Vec::new();
            if let Some(yh) = y_h {
                s.push(Stmt::Store { buf: yh, index: state_at(d, &v[0], &v[1]), value: load(hs, si.clone()) });
            }
            if let Some(yc) = y_c {
                s.push(Stmt::Store { buf: yc, index: state_at(d, &v[0], &v[1]), value: load(cs, si) });
            }
            s
        }));
    }
    cx.kernels.push(k.finish(body));
    Ok(())
}

fn p_peep(peep: Option<BufferId>, d: usize, h: usize, q: usize, j: &Expr) -> Expr {
    match peep {
        Some(pb) => load(pb, add(int((d * 3 * h + q * h) as i64), j.clone())),
        None => f32c(0.0),
    }
}
