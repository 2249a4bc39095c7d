//! The CPU backend: the reference for every operation, and the fallback trainer.
//! Row-parallel with rayon; GEMMs through matrixmultiply; the transcendental hot loops use the
//! branch-free approximations of [`crate::math`] so that they vectorise.

use rayon::prelude::*;

mod bernoulli;
mod conv;
mod credit;
mod dense;
pub mod ksample;
mod simd;
pub mod softmax;
mod state;
pub use credit::{tables_len as credit_tables_len, take_credit_nanos};
pub use dense::sgemm_calls;
use simd::chunked_sum;
pub use simd::Simd;

use super::{Elem, MemoryOps};
use crate::math::{exp_neg, log_sigmoid, sigmoid};
use crate::rng::RngKey;

/// Probabilities are clipped to [CLIP, 1 - CLIP] wherever p itself enters a formula
/// (p(1-p), the hindsight ratios, log((1-p)/p)); log-probabilities use raw logits.
pub const CLIP: f32 = 1e-5;
/// log((1 - CLIP) / CLIP): σ(±CLIP_LOGIT) are the clipped probabilities.
pub const CLIP_LOGIT: f32 = 11.512915;

#[inline(always)]
pub fn clipped_p(logit: f32) -> f32 {
    sigmoid(logit).clamp(CLIP, 1.0 - CLIP)
}

/// log((1 - p)/p) for p = [`clipped_p`]`(logit)`: minus the logit, clipped the same way (exact,
/// and no logarithm).
#[inline(always)]
pub fn clipped_log_odds_against(logit: f32) -> f32 {
    -logit.clamp(-CLIP_LOGIT, CLIP_LOGIT)
}

/// Elements of work below which an operation runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 15;

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    pub fn new() -> Self {
        Cpu
    }

    /// Runs `f` on a thread of rayon's pool, as training on the CPU does: every parallel
    /// operation inside is then pushed to that thread's own queue, instead of being injected
    /// into the pool from outside (a cross-thread hand-off per operation, and a new block of
    /// rayon's injector queue every 63 operations).
    pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        rayon::scope(|_| f())
    }
}

/// The training clock's step added to a key's (see [`Backend::bernoulli_sample`]).
fn clocked(key: RngKey, clock: Option<&Vec<u32>>) -> RngKey {
    RngKey { step: key.step + clock.map_or(0, |c| super::clock::step(c)), ..key }
}

impl MemoryOps for Cpu {
    type Buf = Vec<f32>;
    type Array<T: Elem> = Vec<T>;
    /// Nothing is recorded: every operation runs when it is called.
    type Graph = ();

    fn zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }

    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }

    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }

    fn write(&self, dst: &mut Vec<f32>, host: &[f32]) {
        dst.copy_from_slice(host);
    }

    fn array<T: Elem>(&self, host: &[T]) -> Vec<T> {
        host.to_vec()
    }

    fn read_array<T: Elem>(&self, a: &Vec<T>) -> Vec<T> {
        a.clone()
    }

    fn write_array<T: Elem>(&self, a: &mut Vec<T>, host: &[T]) {
        a.copy_from_slice(host);
    }

    fn end_recording(&self) -> Result<(), String> {
        Ok(())
    }

    fn replay(&self, _graph: &()) {}
}

/// Row r of a (rows, n) array, or the array's one row (n) shared by every row when `broadcast`.
fn row_of(v: &[f32], r: usize, n: usize, broadcast: bool) -> &[f32] {
    if broadcast {
        &v[..n]
    } else {
        &v[r * n..(r + 1) * n]
    }
}

/// Runs `f(r, row)` for every row of `out`, (rows, n), on rayon's threads when the rows hold at
/// least PAR_MIN_WORK units of work (`work_per_row` each). Rows are independent, so the result is
/// the same on any number of threads.
fn for_each_row(out: &mut [f32], n: usize, work_per_row: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if n == 0 {
        return;
    }
    let rows = out.len() / n;
    if rows > 1 && rows * work_per_row >= PAR_MIN_WORK {
        out.par_chunks_mut(n).enumerate().with_min_len(min_rows_per_task(work_per_row)).for_each(|(r, row)| f(r, row));
    } else {
        out.chunks_mut(n).enumerate().for_each(|(r, row)| f(r, row));
    }
}

/// [`for_each_row`] over two outputs of the same shape.
fn for_each_row_pair(a: &mut [f32], b: &mut [f32], n: usize, work_per_row: usize, f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send) {
    if n == 0 {
        return;
    }
    let rows = a.len() / n;
    if rows > 1 && rows * work_per_row >= PAR_MIN_WORK {
        a.par_chunks_mut(n)
            .zip(b.par_chunks_mut(n))
            .enumerate()
            .with_min_len(min_rows_per_task(work_per_row))
            .for_each(|(r, (a, b))| f(r, a, b));
    } else {
        a.chunks_mut(n).zip(b.chunks_mut(n)).enumerate().for_each(|(r, (a, b))| f(r, a, b));
    }
}

/// Enough rows per rayon task that splitting costs little against the work.
fn min_rows_per_task(work_per_row: usize) -> usize {
    (PAR_MIN_WORK / 4 / work_per_row.max(1)).max(1)
}

/// log Bernoulli(x; σ(a)) for a bit x: log σ(±a).
#[inline(always)]
fn log_prob_of_bit(a: f32, x: f32) -> f32 {
    log_sigmoid((2.0 * x - 1.0) * a)
}

/// One row of an encoder layer's units as [`Backend::hnca_unit_grad`] reads it: (p) slices, the
/// row's totals from the terms table, and the output's scale.
struct UnitRow<'a> {
    logits: &'a [f32],
    z: &'a [f32],
    flip_dec: &'a [f32],
    gen_logits: &'a [f32],
    /// Empty for the top layer (no stochastic children in the encoder).
    flip_lp: &'a [f32],
    flip_ent: &'a [f32],
    dec_actual: f32,
    gen_total: f32,
    ent_actual: f32,
    reward: f32,
    scale: f32,
    accumulate: bool,
}

/// f-HNCA's logit gradient p(1-p)·G for one row's units (kernels/credit.cu, hnca_unit_grad, term
/// for term): a plain loop with selects, no branches, so that it vectorises; ABOVE when the layer
/// has stochastic children in the encoder, ALL_CHILD for the all-child ablation.
#[inline(always)]
fn unit_grad_row<const ABOVE: bool, const ALL_CHILD: bool>(out: &mut [f32], row: &UnitRow) {
    let n = out.len();
    let (logits, z, flip_dec, gen) = (&row.logits[..n], &row.z[..n], &row.flip_dec[..n], &row.gen_logits[..n]);
    let (flip_lp, flip_ent) = if ABOVE { (&row.flip_lp[..n], &row.flip_ent[..n]) } else { (flip_dec, flip_dec) };
    for k in 0..n {
        let pk = clipped_p(logits[k]);
        let on = z[k] > 0.5;
        // A term's value at Φ = 1 and Φ = 0, from its actual value and the change that flipping
        // Φ makes (the credit pass's output).
        let split = |actual: f32, change: f32| if on { (actual, actual + change) } else { (actual + change, actual) };
        let (dec1, dec0) = split(row.dec_actual, flip_dec[k]);
        let (rho1, rho0, ent1, ent0) = if ABOVE {
            // δ = log P_0 - log P_1 is ± the change itself: no cancellation.
            let change = flip_lp[k];
            let (rho1, rho0) = hindsight_ratios(pk, if on { change } else { -change });
            let (e1, e0) = split(row.ent_actual, flip_ent[k]);
            (rho1, rho0, e1, e0)
        } else {
            (1.0, 1.0, 0.0, 0.0)
        };
        let (own1, own0) = (log_sigmoid(gen[k]), log_sigmoid(-gen[k]));
        let siblings = row.gen_total - if on { own1 } else { own0 };
        let (dec_term, ent_term) =
            if ALL_CHILD { (rho1 * dec1 - rho0 * dec0, rho1 * ent1 - rho0 * ent0) } else { (dec1 - dec0, ent1 - ent0) };
        let credit =
            clipped_log_odds_against(logits[k]) + dec_term + rho1 * own1 - rho0 * own0 + (rho1 - rho0) * (siblings + row.reward) + ent_term;
        let g = row.scale * (pk * (1.0 - pk) * credit);
        out[k] = if row.accumulate { out[k] + g } else { g };
    }
}

/// HNCA's hindsight ratios ρ_1 = P(Φ=1 | children)/p and ρ_0 = P(Φ=0 | children)/(1-p), from the
/// fire rate p and δ = log P_0 - log P_1, branching on the sign of δ so no exponential overflows.
#[inline(always)]
pub fn hindsight_ratios(p: f32, delta: f32) -> (f32, f32) {
    // e = P_1/P_0 ≤ 1 when δ ≥ 0, else P_0/P_1 < 1. Both sides computed and selected, so that
    // loops over units vectorise.
    let e = exp_neg(-delta.abs());
    let ahead = delta >= 0.0;
    let den = if ahead { p * e + (1.0 - p) } else { p + (1.0 - p) * e };
    let (n1, n0) = if ahead { (e, 1.0) } else { (1.0, e) };
    (n1 / den, n0 / den)
}
