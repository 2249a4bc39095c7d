//! The bandit's softmax output unit, row by row; `kernels/softmax.cu` computes the same
//! quantities in the same order (one thread per row), so sampled actions are bit-identical.

use super::{clocked, for_each_row, Cpu};
use crate::backend::SoftmaxOps;
use crate::math::exp_neg;
use crate::rng::RngKey;

/// The largest logit of a row and Σ_j exp(z_j - max), summed in index order.
#[inline]
pub fn max_and_sum(z: &[f32]) -> (f32, f32) {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum = z.iter().fold(0.0f32, |s, &v| s + exp_neg(v - max));
    (max, sum)
}

/// An action drawn from softmax(z) by inverse CDF with the uniform `u` in [0, 1): the first j
/// whose cumulative probability exceeds u (the last action if rounding leaves u above them all).
#[inline]
pub fn sample(z: &[f32], u: f32) -> usize {
    let (max, sum) = max_and_sum(z);
    let target = u * sum;
    let mut acc = 0.0f32;
    for (j, &v) in z.iter().enumerate() {
        acc += exp_neg(v - max);
        if target < acc {
            return j;
        }
    }
    z.len() - 1
}

/// [`log_prob_change`] in product form: d·w[act] - log Σ_j π_j·e_j, with π = softmax(z) from
/// (max, sum) and e_j = e^{d·w_j} from the tables (credit.rs); no exponential per parent, and no
/// cancellation (every term positive). Summed in index order, as the kernel does.
#[inline]
pub fn log_prob_change_tabled(z: &[f32], (max, sum): (f32, f32), e: &[f32], dw_act: f32) -> f32 {
    let inv = 1.0 / sum;
    let s = z.iter().zip(e).fold(0.0f32, |s, (&v, &ej)| s + (exp_neg(v - max) * inv) * ej);
    dw_act - s.ln()
}

/// log softmax(z + d·w)[act] - log softmax(z)[act]: the change in the log-probability of the
/// action taken when a parent's flip moves the logits by d·w; (max, sum) = max_and_sum(z), the
/// same for every parent of a row. Written as the change in the action's logit minus the change
/// in log-sum-exp, so no large values cancel. The per-edge form, for weights beyond the tables'
/// range (credit.rs's renormalisation interval 0).
#[inline]
pub fn log_prob_change(z: &[f32], (max, sum): (f32, f32), w: &[f32], d: f32, act: usize) -> f32 {
    let max2 = z.iter().zip(w).fold(f32::NEG_INFINITY, |m, (&v, &wj)| m.max(v + d * wj));
    let sum2 = z.iter().zip(w).fold(0.0f32, |s, (&v, &wj)| s + exp_neg(v + d * wj - max2));
    d * w[act] - ((max2 - max) + (sum2 / sum).ln())
}

impl SoftmaxOps for Cpu {
    fn softmax_act(
        &self,
        action: &mut Vec<f32>,
        reward: &mut Vec<f32>,
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        key: RngKey,
        clock: Option<&Vec<u32>>,
        b: usize,
        a: usize,
    ) {
        let key = clocked(key, clock);
        for r in 0..b {
            let act = sample(&logits[r * a..(r + 1) * a], key.uniform(r as u32));
            action[r] = act as f32;
            reward[r] = (act as f32 == labels[r]) as u8 as f32;
        }
    }

    fn softmax_score(&self, dout: &mut Vec<f32>, logits: &Vec<f32>, action: &Vec<f32>, coef: &Vec<f32>, b: usize, a: usize) {
        for r in 0..b {
            let (z, out) = (&logits[r * a..(r + 1) * a], &mut dout[r * a..(r + 1) * a]);
            let (max, sum) = max_and_sum(z);
            for j in 0..a {
                let onehot = (j as f32 == action[r]) as u8 as f32;
                out[j] = (onehot - exp_neg(z[j] - max) / sum) * coef[r];
            }
        }
    }

    fn softmax_credit(
        &self,
        flip: &mut Vec<f32>,
        parent: &Vec<f32>,
        w2: &Vec<f32>,
        tables: &mut Vec<f32>,
        logits: &Vec<f32>,
        action: &Vec<f32>,
        b: usize,
        p: usize,
        a: usize,
    ) {
        super::credit::credit_tables(tables, w2, p, a);
        let tables = &*tables;
        let (ap, plane) = (super::credit::padded(a), p * super::credit::padded(a));
        for_each_row(&mut flip[..b * p], p, 4 * p * a, |r, out| {
            let z = &logits[r * a..(r + 1) * a];
            let (act, base) = (action[r] as usize, max_and_sum(z));
            for (i, o) in out.iter_mut().enumerate() {
                let d = 1.0 - 2.0 * parent[r * p + i];
                let w = &w2[i * a..(i + 1) * a];
                *o = if tables[3 * plane + i] > 0.0 {
                    let e = &tables[if d > 0.0 { 0 } else { plane } + i * ap..][..a];
                    log_prob_change_tabled(z, base, e, d * w[act])
                } else {
                    log_prob_change(z, base, w, d, act)
                };
            }
        });
    }
}
