//! The CPU twins of kernels/state.cu: the training state that a GPU keeps on the device (the
//! batch gathered from the images, the step's statistics, the clock, Adam over every tensor).
//! The same quantities in the same order, so that the two backends agree; the gradient
//! variance keeps the f64 sums the CPU always computed.

use super::simd::Simd;
use super::Cpu;
use crate::backend::{clock, stats, AdamHyper, PerExample, StateOps, StatsPlan};
use crate::data::{binarize_rows, Binarize};
use crate::math::powi_f32;
use crate::rng::RngKey;
use rayon::prelude::*;

/// See [`crate::backend::Backend::gather_binarize`].
pub fn gather_binarize(
    x: &mut [f32],
    labels: Option<(&mut [f32], &[u8])>,
    images: &[u8],
    order: &[u32],
    clock_words: &[u32],
    mode: Binarize,
    seed: u64,
    stream: u32,
    b: usize,
    n0: usize,
) {
    let first = clock_words[clock::BATCH as usize] as usize * b;
    let rows = &order[first..first + b];
    let key = RngKey::new(seed, clock_words[clock::EPOCH as usize] as u64, stream);
    binarize_rows(x, images, n0, rows, mode, key);
    if let Some((out, labels)) = labels {
        for (o, &img) in out.iter_mut().zip(rows) {
            *o = labels[img as usize] as f32;
        }
    }
}

/// See [`crate::backend::StateOps::grad_variance`]: the whole sums in the first slot, in f64
/// (Σ x² in eight lanes), the others zero.
pub fn grad_variance(
    partials: &mut [f64],
    first_slot: usize,
    x: &[f32],
    g: &[f32],
    dw: &[f32],
    db: &[f32],
    b: usize,
    k: usize,
    n: usize,
    form: PerExample,
) {
    let sums = match form {
        // var_r(x_r) = mean_r(x_r²) - mean_r(x_r)², summed over parameters. For weights,
        // Σ_{i,j} mean_r (u_ri g_rj)² = mean_r |u_r|²·|g_r|², so no (b, k, n) tensor is needed.
        PerExample::Outer => Simd::selected().run(
            #[inline(always)]
            || {
                let mut sq_w = 0.0f64;
                let mut sq_b = 0.0f64;
                for r in 0..b {
                    let u2 = sum_of_squares(&x[r * k..(r + 1) * k]);
                    let g2 = sum_of_squares(&g[r * n..(r + 1) * n]);
                    sq_w += u2 * g2;
                    sq_b += g2;
                }
                [sq_w, sq_b, sum_of_squares(dw), sum_of_squares(db)]
            },
        ),
        PerExample::Whole => [sum_of_squares(&x[..b * k]), sum_of_squares(&g[..b * n]), sum_of_squares(dw), sum_of_squares(db)],
    };
    let slots = crate::backend::grad_variance_slots(b, k, n, form);
    let region = &mut partials[first_slot * 4..(first_slot + slots) * 4];
    region.iter_mut().for_each(|v| *v = 0.0);
    region[..4].copy_from_slice(&sums);
}

/// Σ x² in f64, in eight lanes so that it vectorises.
#[inline(always)]
pub fn sum_of_squares(xs: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            acc[j] += c[j] as f64 * c[j] as f64;
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += x as f64 * x as f64;
    }
    acc.iter().sum()
}

/// See [`crate::backend::Backend::step_stats`]; kernels/state.cu's `step_stats`, line for line.
pub fn step_stats(
    out: &mut [f64],
    baselines: &mut [f32],
    clock_words: &mut [u32],
    terms: &[f32],
    partials: &[f64],
    plan: &StatsPlan,
    b: usize,
    t: usize,
) {
    let layers = plan.layers();
    let means_at = stats::LAYERS + stats::PER_LAYER * layers;
    for c in 0..t {
        let mut m = 0.0f64;
        for r in 0..b {
            m += terms[r * t + c] as f64;
        }
        out[means_at + c] = m / b as f64;
    }
    let means = out[means_at..means_at + t].to_vec();
    let step = clock::step(clock_words) + 1;
    let (mut what, mut which) = (0.0, 0usize);
    let objective = plan.coef[..t].iter().zip(&means).fold(-0.0f64, |s, (&c, &m)| s + c as f64 * m);
    if !objective.is_finite() {
        what = stats::DIVERGED_OBJECTIVE;
    }
    let all_params: f64 = plan.layer_params.iter().fold(0.0, |s, &p| s + p);
    let mut total = 0.0f64;
    for l in 0..layers {
        let (first, count) = (plan.slots[2 * l] as usize, plan.slots[2 * l + 1] as usize);
        let (mut rw, mut rb, mut sw, mut sb) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for s in partials[first * 4..(first + count) * 4].chunks_exact(4) {
            rw += s[0];
            rb += s[1];
            sw += s[2];
            sb += s[3];
        }
        let (w, bv) = (rw / b as f64 - sw, rb / b as f64 - sb);
        let layer = &mut out[stats::LAYERS + stats::PER_LAYER * l..][..stats::PER_LAYER];
        layer[0] += (w + bv) / plan.layer_params[l];
        layer[1] = w;
        layer[2] = bv;
        total += w + bv;
        if what == 0.0 && !(w.is_finite() && bv.is_finite()) {
            what = stats::DIVERGED_GRAD_VAR;
            which = l;
        }
    }
    for (i, baseline) in baselines.iter_mut().enumerate().take(plan.baselines) {
        let row = &plan.coef[(i + 1) * t..(i + 2) * t];
        let target = row.iter().zip(&means).fold(-0.0f64, |s, (&c, &m)| s + c as f64 * m);
        *baseline = plan.decay * *baseline + (1.0 - plan.decay) * target as f32;
        if what == 0.0 && !baseline.is_finite() {
            what = stats::DIVERGED_BASELINE;
            which = i;
        }
    }
    out[stats::STEPS] += 1.0;
    out[stats::OBJECTIVE] += objective;
    out[stats::GRAD_VAR] += total / all_params;
    out[stats::LAST_OBJECTIVE] = objective;
    if what != 0.0 && out[stats::DIVERGED] == 0.0 {
        out[stats::DIVERGED] = step as f64;
        out[stats::WHAT] = what;
        out[stats::WHICH] = which as f64;
    }
    let next = clock::at(step);
    clock_words[..2].copy_from_slice(&next[..2]);
    clock_words[clock::BATCH as usize] += 1;
}

/// See [`crate::backend::Backend::epoch_start`].
pub fn epoch_start(out: &mut [f64], clock_words: &mut [u32], epoch: u64, first_batch: u64, layers: usize) {
    out[stats::STEPS] = 0.0;
    out[stats::OBJECTIVE] = 0.0;
    out[stats::GRAD_VAR] = 0.0;
    for l in 0..layers {
        out[stats::LAYERS + stats::PER_LAYER * l] = 0.0;
    }
    clock_words[clock::EPOCH as usize] = epoch as u32;
    clock_words[clock::BATCH as usize] = first_batch as u32;
}

/// See [`crate::backend::Backend::count_non_finite`].
pub fn count_non_finite(counts: &mut [u32], tensors: &[&Vec<f32>]) {
    for (i, t) in tensors.iter().enumerate() {
        counts[2 * i] = t.iter().filter(|x| x.is_nan()).count() as u32;
        counts[2 * i + 1] = t.iter().filter(|x| x.is_infinite()).count() as u32;
    }
}

/// See [`crate::backend::Backend::adam`].
pub fn adam(
    params: &mut [&mut Vec<f32>],
    grads: &[&Vec<f32>],
    m: &mut [&mut Vec<f32>],
    v: &mut [&mut Vec<f32>],
    clock_words: &[u32],
    hp: AdamHyper,
) {
    let t = (clock::step(clock_words) + 1) as u32;
    let (c1, c2) = (1.0 - powi_f32(hp.beta1, t), 1.0 - powi_f32(hp.beta2, t));
    let simd = super::Simd::selected();
    for (((param, grad), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
        // Inlined into Simd::run's target-feature function (left to itself the closure would be
        // compiled for SSE only).
        let update = |chunk: AdamChunk<'_>| {
            simd.run(
                #[inline(always)]
                || adam_chunk(chunk, hp, c1, c2),
            )
        };
        const CHUNK: usize = 8192;
        if param.len() >= 4 * CHUNK {
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                .for_each(update);
        } else {
            update(((&mut param[..], &grad[..]), (&mut m[..], &mut v[..])));
        }
    }
}

/// Parameters and gradient, then Adam's two moments, of one chunk.
type AdamChunk<'a> = ((&'a mut [f32], &'a [f32]), (&'a mut [f32], &'a mut [f32]));

/// One chunk of Adam's update; elementwise, so every instruction set gives the same bits.
#[inline(always)]
fn adam_chunk(((param, grad), (m, v)): AdamChunk<'_>, hp: AdamHyper, c1: f32, c2: f32) {
    let n = param.len();
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let g = grad[i];
        m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
        v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
        param[i] += hp.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + hp.eps);
    }
}

impl StateOps for Cpu {
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
        gather_binarize(x, labels, images, order, clock, mode, seed, stream, b, n0);
    }

    fn grad_variance(
        &self,
        partials: &mut Vec<f64>,
        first_slot: usize,
        x: &Vec<f32>,
        g: &Vec<f32>,
        dw: &Vec<f32>,
        db: &Vec<f32>,
        b: usize,
        k: usize,
        n: usize,
        form: PerExample,
    ) {
        grad_variance(partials, first_slot, x, g, dw, db, b, k, n, form);
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
        step_stats(stats, baselines, clock, terms, partials, plan, b, t);
    }

    fn epoch_start(&self, stats: &mut Vec<f64>, clock: &mut Vec<u32>, epoch: u64, first_batch: u64, layers: usize) {
        epoch_start(stats, clock, epoch, first_batch, layers);
    }

    fn count_non_finite(&self, counts: &mut Vec<u32>, tensors: &[&Vec<f32>]) {
        count_non_finite(counts, tensors);
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
        adam(params, grads, m, v, clock, hp);
    }
}
