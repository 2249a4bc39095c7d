//! The CPU backend: the reference for every operation, and the fallback trainer.
//! Row-parallel with rayon; GEMMs through matrixmultiply; the transcendental hot loops use the
//! branch-free approximations of [`crate::math`] so that they vectorise.

use rayon::prelude::*;

mod conv;
mod credit;
mod gemm;
pub mod ksample;
mod simd;
pub mod softmax;
mod state;
pub use credit::{tables_len as credit_tables_len, take_credit_nanos};
pub use gemm::sgemm_calls;
use simd::chunked_sum;
pub use simd::Simd;

use super::{AdamHyper, Backend, ConvGeom, Elem, GemmInit, HncaInputs, KScoreInputs, SampleMode, ScoreAlt, StatsPlan};
use crate::data::Binarize;
use crate::math::{bernoulli_entropy_from_logit, exp_neg, log_sigmoid, sigmoid};
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

impl Backend for Cpu {
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

    fn gather_binarize(
        &self,
        x: &mut Vec<f32>,
        labels: Option<(&mut Vec<f32>, &Vec<u8>)>,
        images: &Vec<u8>,
        order: &Vec<u32>,
        clock: &Vec<u32>,
        mode: Binarize,
        seed: u64,
        stream: u32,
        b: usize,
        n0: usize,
    ) {
        let labels = labels.map(|(out, l)| (out.as_mut_slice(), l.as_slice()));
        state::gather_binarize(x, labels, images, order, clock, mode, seed, stream, b, n0);
    }

    fn matmul_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, w: &Vec<f32>, bias: &Vec<f32>, b: usize, k: usize, n: usize) {
        debug_assert_eq!(bias.len(), n);
        for row in out.chunks_mut(n) {
            row.copy_from_slice(bias);
        }
        gemm::matmul_accumulate(out, inp, w, b, k, n);
    }

    fn matmul_backward_weight(&self, dw: &mut Vec<f32>, inp: &Vec<f32>, dout: &Vec<f32>, b: usize, k: usize, n: usize) {
        gemm::matmul_transposed_a(dw, inp, dout, 1.0 / b as f32, b, k, n);
    }

    fn matmul_backward_input(
        &self,
        din: &mut Vec<f32>,
        dout: &Vec<f32>,
        w: &Vec<f32>,
        init: GemmInit<'_, Vec<f32>>,
        b: usize,
        k: usize,
        n: usize,
    ) {
        let keep = match init {
            GemmInit::Zero => false,
            GemmInit::Keep => true,
            GemmInit::Broadcast(bias) => {
                for row in din.chunks_mut(k).take(b) {
                    row.copy_from_slice(&bias[..k]);
                }
                true
            }
        };
        gemm::matmul_transposed_b(din, dout, w, keep, b, k, n);
    }

    fn conv_relu_forward(&self, out: &mut Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, bias: &Vec<f32>, b: usize, g: ConvGeom) {
        conv::conv_relu_forward(out, x, w, bias, b, g);
    }

    fn conv_backward_input(&self, dx: &mut Vec<f32>, dout: &Vec<f32>, w: &Vec<f32>, b: usize, g: ConvGeom) {
        conv::conv_backward_input(dx, dout, w, b, g);
    }

    fn conv_sample_grads(&self, gw: &mut Vec<f32>, gb: &mut Vec<f32>, x: &Vec<f32>, dout: &Vec<f32>, b: usize, g: ConvGeom) {
        conv::conv_sample_grads(gw, gb, x, dout, b, g);
    }

    fn relu_backward(&self, g: &mut Vec<f32>, act: &Vec<f32>, n: usize) {
        conv::relu_backward(&mut g[..n], &act[..n]);
    }

    fn sample_grad_variance(
        &self,
        partials: &mut Vec<f64>,
        first_slot: usize,
        gw: &Vec<f32>,
        gb: &Vec<f32>,
        dw: &Vec<f32>,
        db: &Vec<f32>,
        b: usize,
        nw: usize,
        nb: usize,
    ) {
        conv::sample_grad_variance(partials, first_slot, gw, gb, dw, db, b, nw, nb);
    }

    fn column_mean(&self, out: &mut Vec<f32>, x: &Vec<f32>, b: usize, n: usize) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for row in x.chunks(n).take(b) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        let inv = 1.0 / b as f32;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    fn bernoulli_sample(
        &self,
        z: &mut Vec<f32>,
        anti: Option<&mut Vec<f32>>,
        logits: &Vec<f32>,
        key: RngKey,
        clock: Option<&Vec<u32>>,
        mode: SampleMode,
        b: usize,
        n: usize,
    ) {
        debug_assert_eq!((z.len(), logits.len()), (b * n, b * n));
        let key = clocked(key, clock);
        // Uniform number i of the layer is element i of the (b, n) array, whichever thread draws it.
        let simd = Simd::selected();
        // The whole row inside the instruction-set wrapper (the Philox blocks included, which
        // interleave and vectorise there).
        let draw = |r: usize, z: &mut [f32], anti: &mut [f32]| {
            simd.run(
                #[inline(always)]
                || {
                    let mut u = [0.0f32; 64];
                    for j0 in (0..n).step_by(u.len()) {
                        let len = u.len().min(n - j0);
                        key.fill_uniform((r * n + j0) as u32, &mut u[..len]);
                        let (a, u) = (&logits[r * n + j0..r * n + j0 + len], &u[..len]);
                        let z = &mut z[j0..j0 + len];
                        if anti.is_empty() {
                            z.iter_mut().zip(a).zip(u).for_each(|((z, &a), &u)| *z = (u < clipped_p(a)) as u8 as f32);
                        } else {
                            let anti = &mut anti[j0..j0 + len];
                            for (((z, t), &a), &u) in z.iter_mut().zip(anti.iter_mut()).zip(a).zip(u) {
                                let p = clipped_p(a);
                                *z = (1.0 - u < p) as u8 as f32;
                                *t = (u < p) as u8 as f32;
                            }
                        }
                    }
                },
            )
        };
        match (mode, anti) {
            (SampleMode::Standard, _) => for_each_row(z, n, 4 * n, |r, z| draw(r, z, &mut [])),
            (SampleMode::Antithetic, Some(anti)) => for_each_row_pair(z, anti, n, 4 * n, draw),
            (SampleMode::Antithetic, None) => panic!("antithetic sampling needs an output for the twin"),
        }
    }

    fn log_prob_rows(
        &self,
        terms: &mut Vec<f32>,
        t: usize,
        col: usize,
        logits: &Vec<f32>,
        broadcast: bool,
        targets: &Vec<f32>,
        base: Option<(&Vec<f32>, &Vec<f32>)>,
        b: usize,
        n: usize,
    ) {
        let simd = Simd::selected();
        for_each_row(&mut terms[..b * t], t, n, |r, out| {
            let (a, x) = (row_of(logits, r, n, broadcast), &targets[r * n..(r + 1) * n]);
            out[col] = simd.run(
                #[inline(always)]
                || match base {
                    None => chunked_sum(n, |js, buf| {
                        for ((o, &a), &x) in buf.iter_mut().zip(&a[js.clone()]).zip(&x[js]) {
                            *o = log_prob_of_bit(a, x);
                        }
                    }),
                    Some((a0, x0)) => {
                        let (a0, x0) = (row_of(a0, r, n, broadcast), &x0[r * n..(r + 1) * n]);
                        chunked_sum(n, |js, buf| {
                            let pairs = a[js.clone()].iter().zip(&x[js.clone()]).zip(a0[js.clone()].iter().zip(&x0[js]));
                            for (o, ((&a, &x), (&a0, &x0))) in buf.iter_mut().zip(pairs) {
                                *o = log_prob_of_bit(a, x) - log_prob_of_bit(a0, x0);
                            }
                        })
                    }
                },
            );
        });
    }

    fn entropy_rows(&self, terms: &mut Vec<f32>, t: usize, col: usize, logits: &Vec<f32>, base: Option<&Vec<f32>>, b: usize, n: usize) {
        let simd = Simd::selected();
        for_each_row(&mut terms[..b * t], t, n, |r, out| {
            let a = &logits[r * n..(r + 1) * n];
            out[col] = simd.run(
                #[inline(always)]
                || match base {
                    None => chunked_sum(n, |js, buf| {
                        for (o, &a) in buf.iter_mut().zip(&a[js]) {
                            *o = bernoulli_entropy_from_logit(a);
                        }
                    }),
                    Some(a0) => {
                        let a0 = &a0[r * n..(r + 1) * n];
                        chunked_sum(n, |js, buf| {
                            for ((o, &a), &a0) in buf.iter_mut().zip(&a[js.clone()]).zip(&a0[js]) {
                                *o = bernoulli_entropy_from_logit(a) - bernoulli_entropy_from_logit(a0);
                            }
                        })
                    }
                },
            );
        });
    }

    fn weighted_row_sum(
        &self,
        out: &mut Vec<f32>,
        terms: &Vec<f32>,
        coef: &[f32],
        baseline: Option<(&Vec<f32>, usize)>,
        b: usize,
        t: usize,
    ) {
        for (j, coef) in coef.chunks(t).enumerate() {
            for r in 0..b {
                let row = &terms[r * t..(r + 1) * t];
                let s = row.iter().zip(coef).fold(0.0f32, |s, (x, c)| s + x * c);
                out[j * b + r] = match baseline {
                    Some((baselines, i)) => s - baselines[i],
                    None => s,
                };
            }
        }
    }

    fn term_means(&self, terms: &Vec<f32>, b: usize, t: usize) -> Vec<f64> {
        let mut m = vec![0.0f64; t];
        for row in terms.chunks(t).take(b) {
            for (mi, &x) in m.iter_mut().zip(row) {
                *mi += x as f64;
            }
        }
        m.iter_mut().for_each(|x| *x /= b as f64);
        m
    }

    fn credit_pass(
        &self,
        flip_lp: &mut Vec<f32>,
        flip_ent: Option<&mut Vec<f32>>,
        parent: &Vec<f32>,
        w: &Vec<f32>,
        tables: &mut Vec<f32>,
        child_logits: &Vec<f32>,
        child: &Vec<f32>,
        b: usize,
        p: usize,
        c: usize,
    ) {
        credit::credit_pass(flip_lp, flip_ent.map(|e| e.as_mut_slice()), parent, w, tables, child_logits, child, b, p, c);
    }

    fn hnca_unit_grad(&self, out: &mut Vec<f32>, inp: &HncaInputs<'_, Vec<f32>>, b: usize, p: usize) {
        let t = inp.t;
        let simd = Simd::selected();
        for_each_row(&mut out[..b * p], p, 40 * p, |r, out| {
            let row_term = |col: usize| inp.terms[r * t + col];
            fn rows(v: &[f32], r: usize, p: usize) -> &[f32] {
                &v[r * p..(r + 1) * p]
            }
            let row = UnitRow {
                logits: rows(inp.logits, r, p),
                z: rows(inp.z, r, p),
                flip_dec: rows(inp.flip_dec, r, p),
                gen_logits: if inp.gen_is_prior { &inp.gen_logits[..p] } else { rows(inp.gen_logits, r, p) },
                flip_lp: inp.above.as_ref().map_or(&[][..], |a| rows(a.flip_lp, r, p)),
                flip_ent: inp.above.as_ref().map_or(&[][..], |a| rows(a.flip_ent, r, p)),
                dec_actual: row_term(inp.col_dec),
                gen_total: row_term(inp.col_gen),
                ent_actual: inp.above.as_ref().map_or(0.0, |a| row_term(a.col_ent)),
                reward: inp.reward[inp.reward_offset + r],
                scale: inp.scale,
                accumulate: inp.accumulate,
            };
            // Inlined into Simd::run's target-feature function (a closure this large is not by
            // itself, and would run as SSE).
            simd.run(
                #[inline(always)]
                || match (inp.above.is_some(), inp.all_child) {
                    (true, true) => unit_grad_row::<true, true>(out, &row),
                    (true, false) => unit_grad_row::<true, false>(out, &row),
                    (false, true) => unit_grad_row::<false, true>(out, &row),
                    (false, false) => unit_grad_row::<false, false>(out, &row),
                },
            )
        });
    }

    fn score_unit_grad(
        &self,
        out: &mut Vec<f32>,
        logits: &Vec<f32>,
        z: &Vec<f32>,
        alt: ScoreAlt<'_, Vec<f32>>,
        coef: &Vec<f32>,
        b: usize,
        n: usize,
    ) {
        let simd = Simd::selected();
        for_each_row(&mut out[..b * n], n, 20 * n, |r, out| {
            let row = |v| row_of(v, r, n, false);
            let (a, z, c) = (row(logits), row(z), coef[r]);
            let own_entropy = |a: f32, p: f32| p * (1.0 - p) * clipped_log_odds_against(a);
            // One loop per alternative, each compiled for the selected instruction set.
            simd.run(
                #[inline(always)]
                || match alt {
                    ScoreAlt::Mean => {
                        for ((o, &a), &z) in out.iter_mut().zip(a).zip(z) {
                            let p = clipped_p(a);
                            *o = own_entropy(a, p) + c * (z - p);
                        }
                    }
                    ScoreAlt::Sample(z2) => {
                        for (((o, &a), &z), &z2) in out.iter_mut().zip(a).zip(z).zip(row(z2)) {
                            let p = clipped_p(a);
                            *o = own_entropy(a, p) + c * (z - z2);
                        }
                    }
                    ScoreAlt::Antithetic(zt) => {
                        for (((o, &a), &z), &zt) in out.iter_mut().zip(a).zip(z).zip(row(zt)) {
                            let p = clipped_p(a);
                            *o = own_entropy(a, p) + c * ((z - zt) * p.max(1.0 - p));
                        }
                    }
                },
            );
        });
    }

    fn bernoulli_delta(&self, out: &mut Vec<f32>, logits: &Vec<f32>, broadcast: bool, targets: &Vec<f32>, b: usize, n: usize) {
        let simd = Simd::selected();
        for_each_row(&mut out[..b * n], n, 4 * n, |r, out| {
            let (a, x) = (row_of(logits, r, n, broadcast), &targets[r * n..(r + 1) * n]);
            simd.run(
                #[inline(always)]
                || out.iter_mut().zip(a).zip(x).for_each(|((o, &a), &x)| *o = x - sigmoid(a)),
            );
        });
    }

    fn entropy_grad(&self, out: &mut Vec<f32>, logits: &Vec<f32>, b: usize, n: usize) {
        let simd = Simd::selected();
        for_each_row(&mut out[..b * n], n, 4 * n, |r, out| {
            let a = &logits[r * n..(r + 1) * n];
            simd.run(
                #[inline(always)]
                || out.iter_mut().zip(a).for_each(|(o, &a)| *o = -a * sigmoid(a) * sigmoid(-a)),
            );
        });
    }

    fn arms_sample(&self, zs: &mut [&mut Vec<f32>], logits: &Vec<f32>, key: RngKey, clock: Option<&Vec<u32>>, b: usize, n: usize) {
        ksample::arms_sample(zs, logits, clocked(key, clock), b, n);
    }

    fn k_score_unit_grad(
        &self,
        out: &mut Vec<f32>,
        cv_partials: Option<&mut Vec<f32>>,
        inp: &KScoreInputs<'_, Vec<f32>>,
        b: usize,
        n: usize,
    ) {
        ksample::k_score_unit_grad(out, cv_partials, inp, b, n);
    }

    fn axpy(&self, y: &mut Vec<f32>, a: f32, x: &Vec<f32>, n: usize) {
        for (y, &x) in y[..n].iter_mut().zip(&x[..n]) {
            *y += a * x;
        }
    }

    fn clip_logits(&self, out: &mut Vec<f32>, logits: &Vec<f32>, n: usize) {
        for (o, &a) in out[..n].iter_mut().zip(&logits[..n]) {
            *o = a.clamp(-CLIP_LOGIT, CLIP_LOGIT);
        }
    }

    fn affine(&self, out: &mut Vec<f32>, x: &Vec<f32>, scale: f32, shift: f32, n: usize) {
        for (o, &v) in out[..n].iter_mut().zip(&x[..n]) {
            *o = scale * v + shift;
        }
    }

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
            let act = softmax::sample(&logits[r * a..(r + 1) * a], key.uniform(r as u32));
            action[r] = act as f32;
            reward[r] = (act as f32 == labels[r]) as u8 as f32;
        }
    }

    fn softmax_score(&self, dout: &mut Vec<f32>, logits: &Vec<f32>, action: &Vec<f32>, coef: &Vec<f32>, b: usize, a: usize) {
        for r in 0..b {
            let (z, out) = (&logits[r * a..(r + 1) * a], &mut dout[r * a..(r + 1) * a]);
            let (max, sum) = softmax::max_and_sum(z);
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
        credit::credit_tables(tables, w2, p, a);
        let tables = &*tables;
        let (ap, plane) = (credit::padded(a), p * credit::padded(a));
        for_each_row(&mut flip[..b * p], p, 4 * p * a, |r, out| {
            let z = &logits[r * a..(r + 1) * a];
            let (act, base) = (action[r] as usize, softmax::max_and_sum(z));
            for (i, o) in out.iter_mut().enumerate() {
                let d = 1.0 - 2.0 * parent[r * p + i];
                let w = &w2[i * a..(i + 1) * a];
                *o = if tables[3 * plane + i] > 0.0 {
                    let e = &tables[if d > 0.0 { 0 } else { plane } + i * ap..][..a];
                    softmax::log_prob_change_tabled(z, base, e, d * w[act])
                } else {
                    softmax::log_prob_change(z, base, w, d, act)
                };
            }
        });
    }

    fn bandit_unit_grad(
        &self,
        out: &mut Vec<f32>,
        logits: &Vec<f32>,
        z: &Vec<f32>,
        flip: Option<&Vec<f32>>,
        rho_gradient: bool,
        coef: &Vec<f32>,
        b: usize,
        n: usize,
    ) {
        for_each_row(&mut out[..b * n], n, 20 * n, |r, out| {
            for (j, o) in out.iter_mut().enumerate() {
                let i = r * n + j;
                let p = clipped_p(logits[i]);
                *o = coef[r]
                    * match flip {
                        // δ = log P_0 - log P_1 is ± the change that flipping the unit makes.
                        Some(flip) => {
                            let (rho1, rho0) = hindsight_ratios(p, if z[i] > 0.5 { flip[i] } else { -flip[i] });
                            let g = p * (1.0 - p) * (rho1 - rho0);
                            if rho_gradient {
                                g * rho0
                            } else {
                                g
                            }
                        }
                        None => z[i] - p,
                    };
            }
        });
    }

    fn grad_variance(
        &self,
        partials: &mut Vec<f64>,
        first_slot: usize,
        inp: &Vec<f32>,
        g: &Vec<f32>,
        dw: &Vec<f32>,
        db: &Vec<f32>,
        b: usize,
        k: usize,
        n: usize,
    ) {
        state::grad_variance(partials, first_slot, inp, g, dw, db, b, k, n);
    }

    fn step_stats(
        &self,
        stats: &mut Vec<f64>,
        baselines: &mut Vec<f32>,
        clock: &mut Vec<u32>,
        terms: &Vec<f32>,
        partials: &Vec<f64>,
        plan: &StatsPlan,
        b: usize,
        t: usize,
    ) {
        state::step_stats(stats, baselines, clock, terms, partials, plan, b, t);
    }

    fn epoch_start(&self, stats: &mut Vec<f64>, clock: &mut Vec<u32>, epoch: u64, first_batch: u64, layers: usize) {
        state::epoch_start(stats, clock, epoch, first_batch, layers);
    }

    fn count_non_finite(&self, counts: &mut Vec<u32>, tensors: &[&Vec<f32>]) {
        state::count_non_finite(counts, tensors);
    }

    fn adam(
        &self,
        params: &mut [&mut Vec<f32>],
        grads: &[&Vec<f32>],
        m: &mut [&mut Vec<f32>],
        v: &mut [&mut Vec<f32>],
        clock: &Vec<u32>,
        hp: AdamHyper,
    ) {
        state::adam(params, grads, m, v, clock, hp);
    }
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
