//! Resize, planned at compile time: output sizes and, per resized axis, a
//! table of taps (input index and weight for each output index). Follows
//! the ONNX reference implementation's separable, one-axis-at-a-time
//! formulation, so kernels only gather and weight.

use crate::{Graph, NodeId, ResizeAttrs};

/// One axis's interpolation table.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisTable {
    pub axis: usize,
    pub out: usize,
    /// Taps per output index.
    pub taps: usize,
    /// `out * taps` clamped input indices and weights.
    pub index: Vec<i64>,
    pub weight: Vec<f64>,
    /// Per output index: `Some(v)` where the output is the extrapolation value.
    pub extrapolated: Vec<bool>,
}

/// Output dims and the axes to interpolate, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizePlan {
    pub output: Vec<usize>,
    pub tables: Vec<AxisTable>,
}

fn floats(graph: &Graph, id: NodeId, slot: usize) -> Result<Option<Vec<f64>>, String> {
    if graph.input_of(id, slot).is_none() {
        return Ok(None);
    }
    let t = graph.const_input(id, slot).ok_or_else(|| format!("input {slot} must be known at compile time"))?;
    let v = t.to_f64_vec().ok_or_else(|| format!("input {slot} must be numeric"))?;
    Ok((!v.is_empty()).then_some(v))
}

fn coeffs(r: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
    let a = r.cubic_coeff_a;
    match (r.mode.as_str(), r.antialias) {
        ("nearest", _) => {
            if ratio.fract() == 0.0 {
                return vec![0.0, 1.0];
            }
            let up = match r.nearest_mode.as_str() {
                "round_prefer_ceil" => ratio >= 0.5,
                "floor" => false,
                "ceil" => true,
                _ => ratio > 0.5,
            };
            if up {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        }
        ("linear", false) => vec![1.0 - ratio, ratio],
        ("linear", true) => {
            let scale = scale.min(1.0);
            let start = (-1.0 / scale).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            let c: Vec<f64> = (start..start + footprint)
                .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                .collect();
            let s: f64 = c.iter().sum();
            c.into_iter().map(|x| x / s).collect()
        }
        ("cubic", false) => {
            let (r1, q) = (ratio + 1.0, 1.0 - ratio);
            vec![
                ((a * r1 - 5.0 * a) * r1 + 8.0 * a) * r1 - 4.0 * a,
                ((a + 2.0) * ratio - (a + 3.0)) * ratio * ratio + 1.0,
                ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
            ]
        }
        _ => {
            let scale = scale.min(1.0);
            let f = |x: f64| {
                let x = x.abs();
                let (x2, x3) = (x * x, x * x * x);
                if x <= 1.0 {
                    (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                } else if x < 2.0 {
                    a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                } else {
                    0.0
                }
            };
            let start = (-2.0 / scale).floor() as i64 + 1;
            let c: Vec<f64> = (start..2 - start).map(|i| f(scale * (i as f64 - ratio))).collect();
            let s: f64 = c.iter().sum();
            c.into_iter().map(|x| x / s).collect()
        }
    }
}

fn axis_table(
    r: &ResizeAttrs,
    axis: usize,
    input: usize,
    out: usize,
    scale: f64,
    roi: Option<(f64, f64)>,
) -> Result<AxisTable, String> {
    let out_f = scale * input as f64;
    let (mut index, mut weight, mut extrapolated) = (Vec::new(), Vec::new(), Vec::new());
    let mut taps = 0;
    for y in 0..out {
        let yf = y as f64;
        let mut extra = false;
        let x = match r.coordinate_transformation_mode.as_str() {
            "align_corners" => {
                if out_f == 1.0 {
                    0.0
                } else {
                    yf * (input as f64 - 1.0) / (out_f - 1.0)
                }
            }
            "asymmetric" => yf / scale,
            "tf_crop_and_resize" => {
                let (r0, r1) = roi.unwrap_or((0.0, 1.0));
                let x = if out_f == 1.0 {
                    (r1 - r0) * (input as f64 - 1.0) / 2.0
                } else {
                    yf * (r1 - r0) * (input as f64 - 1.0) / (out_f - 1.0)
                };
                let x = x + r0 * (input as f64 - 1.0);
                extra = x < 0.0 || x > input as f64 - 1.0;
                x
            }
            "pytorch_half_pixel" => {
                if out_f == 1.0 {
                    -0.5
                } else {
                    (yf + 0.5) / scale - 0.5
                }
            }
            "half_pixel" => (yf + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let adjustment = out as f64 / out_f;
                let center = input as f64 / 2.0;
                center * (1.0 - adjustment) + (yf + 0.5) / scale - 0.5
            }
            other => return Err(format!("coordinate_transformation_mode '{other}' is not supported")),
        };
        let xi = x.floor();
        let ratio = if x == xi { 1.0 } else { x - xi };
        let mut c = coeffs(r, ratio, scale);
        let n = c.len();
        taps = n;
        let pad = n.div_ceil(2) as f64;
        let xp = x + pad;
        let p = xp.floor();
        let frac = xp - p;
        let offset = if n.is_multiple_of(2) {
            if frac == 0.0 {
                -((n / 2) as f64)
            } else {
                -((n / 2) as f64) + 1.0
            }
        } else {
            let base = -(((n - 1) / 2) as f64);
            if frac <= 0.5 {
                base
            } else {
                base + 1.0
            }
        };
        let start = (p + offset) as i64 - pad as i64;
        let idx: Vec<i64> = (0..n as i64).map(|t| start + t).collect();
        if r.exclude_outside {
            for (k, &i) in idx.iter().enumerate() {
                if i < 0 || i >= input as i64 {
                    c[k] = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            c.iter_mut().for_each(|v| *v /= s);
        }
        index.extend(idx.iter().map(|&i| i.clamp(0, input as i64 - 1)));
        weight.extend(c);
        extrapolated.push(extra);
    }
    Ok(AxisTable { axis, out, taps, index, weight, extrapolated })
}

/// Plans a Resize of an input with dims `xd`.
pub fn resize_plan(graph: &Graph, id: NodeId, r: &ResizeAttrs, xd: &[usize]) -> Result<ResizePlan, String> {
    if !matches!(r.mode.as_str(), "nearest" | "linear" | "cubic") {
        return Err(format!("mode '{}' is not supported", r.mode));
    }
    if r.mode == "nearest" && r.antialias {
        return Err("antialias is not defined for nearest mode".into());
    }
    let rank = xd.len();
    let (roi_slot, scales_slot, sizes_slot) = if r.legacy_inputs { (usize::MAX, 1, usize::MAX) } else { (1, 2, 3) };
    let roi_in = if roi_slot == usize::MAX { None } else { floats(graph, id, roi_slot)? };
    let scales_in = floats(graph, id, scales_slot)?;
    let sizes_in = if sizes_slot == usize::MAX { None } else { floats(graph, id, sizes_slot)? };
    let axes: Vec<usize> = match &r.axes {
        Some(a) => a
            .iter()
            .map(|&v| crate::shape::normalize_axis(v, rank).ok_or_else(|| format!("axis {v} is out of range")))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let expand = |v: &[f64], fill: &dyn Fn(usize) -> f64| -> Result<Vec<f64>, String> {
        if v.len() != axes.len() {
            return Err(format!("{} values given for {} axes", v.len(), axes.len()));
        }
        let mut full: Vec<f64> = (0..rank).map(fill).collect();
        for (i, &a) in axes.iter().enumerate() {
            full[a] = v[i];
        }
        Ok(full)
    };
    let roi: Option<Vec<(f64, f64)>> = match roi_in {
        Some(v) => {
            if v.len() != 2 * axes.len() {
                return Err(format!("roi has {} values, expected {}", v.len(), 2 * axes.len()));
            }
            let mut full = vec![(0.0, 1.0); rank];
            for (i, &a) in axes.iter().enumerate() {
                full[a] = (v[i], v[axes.len() + i]);
            }
            Some(full)
        }
        None => None,
    };
    let (scales, output): (Vec<f64>, Vec<usize>) = match (sizes_in, scales_in) {
        (Some(sizes), _) => {
            let sizes = expand(&sizes, &|i| xd[i] as f64)?;
            let mut scales: Vec<f64> = (0..rank).map(|i| sizes[i] / xd[i] as f64).collect();
            let mut out: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
            if r.keep_aspect_ratio_policy != "stretch" {
                let pick = axes.iter().map(|&a| scales[a]);
                let s = match r.keep_aspect_ratio_policy.as_str() {
                    "not_larger" => pick.fold(f64::INFINITY, f64::min),
                    "not_smaller" => pick.fold(f64::NEG_INFINITY, f64::max),
                    other => return Err(format!("keep_aspect_ratio_policy '{other}' is not supported")),
                };
                for i in 0..rank {
                    if axes.contains(&i) {
                        scales[i] = s;
                        out[i] = (s * xd[i] as f64 + 0.5) as usize;
                    }
                }
            }
            (scales, out)
        }
        (None, Some(scales)) => {
            let scales = expand(&scales, &|_| 1.0)?;
            let out = (0..rank).map(|i| (scales[i] * xd[i] as f64) as usize).collect();
            (scales, out)
        }
        (None, None) => return Err("needs scales or sizes".into()),
    };
    let mut tables = Vec::new();
    for &a in &axes {
        let roi_a = roi.as_ref().map(|v| v[a]);
        let trivial_roi = roi_a.is_none_or(|(lo, hi)| (lo - 0.0).abs() < 1e-9 && (hi - 1.0).abs() < 1e-9);
        if (scales[a] - 1.0).abs() < 1e-9 && output[a] == xd[a] && trivial_roi {
            continue;
        }
        if xd[a] == 0 {
            return Err(format!("cannot resize the empty axis {a}"));
        }
        tables.push(axis_table(r, a, xd[a], output[a], scales[a], roi_a)?);
    }
    Ok(ResizePlan { output, tables })
}
