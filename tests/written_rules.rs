//! Three operations checked against their documented rules written out here in f64, on the CPU
//! backend and on the emulated kernels: the SGD prior's update (`axpy` inside a training step),
//! DisARM's antithetic pair from `bernoulli_sample`, and the forward GEMM with its bias.
//!
//! The kernel tests compare the kernels with their CPU twins, so a rule that both get wrong in
//! the same way passes them; the expectations here come from the documentation (docs/usage.md,
//! src/backend/mod.rs, docs/estimators.md) and from the Philox uniforms themselves, not from
//! either backend.

mod common;

use common::exact::{sigmoid, CLIP};
use hnca::backend::cpu::Cpu;
use hnca::backend::emu::emu_backend;
use hnca::backend::kernels::GEMM_TILE;
use hnca::backend::DenseOps;
use hnca::backend::{clock, Backend, SampleMode};
use hnca::rng::{stream, RngKey};
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::Shape;
use hnca::vae::trainer::Trainer;
use hnca::vae::{Optimizers, PriorOptimizer};

/// Deterministic test data in [lo, hi), from a stream that no operation under test uses.
fn data(n: usize, tag: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngKey::new(4242, 0, tag).fill_uniform(0, &mut v);
    v.iter_mut().for_each(|u| *u = lo + (hi - lo) * *u);
    v
}

// ---- the SGD prior -----------------------------------------------------------------------------

/// The learning rate of the encoder and decoder (Adam) and the prior's own (SGD): different, so
/// that an update taken at the wrong rate shows.
const LR: f32 = 1e-3;
const PRIOR_LR: f64 = 0.01;

/// Two training steps with `--prior-optimizer sgd --prior-lr 0.01`; after each, the prior's logits
/// must equal the previous ones plus prior-lr times the prior's gradient, written out from the
/// step's own top-layer samples: the ELBO's log p(z_L) term has the logit gradient z_L - σ(prior)
/// per example, ascended (docs/usage.md: "plain gradient ascent, logits += prior-lr · gradient"), and
/// the step's gradient is its batch mean over the main chain's samples.
fn sgd_prior_follows_the_written_rule<B: Backend<Buf = Vec<f32>>>(be: &B, what: &str) {
    let shape = Shape::new(6, &[5, 4]);
    let (b, depth) = (12, shape.depth());
    let top = shape.width(depth);
    let x: Vec<f32> = data(b * 6, 1, 0.0, 1.0).into_iter().map(|u| (u < 0.5) as u8 as f32).collect();
    for kind in [EstimatorKind::Hnca, EstimatorKind::Disarm] {
        let mut trainer = Trainer::new(be, shape.clone(), Estimator::new(kind), b, LR, 3);
        trainer.model.optimizers = Optimizers { prior_lr: PRIOR_LR, prior: PriorOptimizer::Sgd, ..Optimizers::with_lr(LR as f64) };
        // Prior logits of both signs and sizes, so that σ(prior) is far from ½ somewhere.
        let start = data(top, 2, -2.0, 2.0);
        be.write(&mut trainer.params.prior, &start);
        let mut moved = 0.0f64;
        for step in 1..=2 {
            let before = be.download(&trainer.params.prior);
            trainer.train_step(&x);
            let z_top = be.download(&trainer.model.ws.main.z[depth]);
            let after = be.download(&trainer.params.prior);
            for j in 0..top {
                let p = sigmoid(before[j] as f64);
                let grad = (0..b).map(|r| z_top[r * top + j] as f64 - p).sum::<f64>() / b as f64;
                let want = before[j] as f64 + PRIOR_LR * grad;
                // The update is 1e-2·O(½); f32 storage of a logit below 2 rounds by 1.2e-7, and
                // σ's f32 approximation moves the step by under 1e-8.
                let err = (after[j] as f64 - want).abs();
                assert!(
                    err <= 1e-6,
                    "{what} {kind:?} step {step} prior[{j}]: {} but the written rule gives {want} (from {})",
                    after[j],
                    before[j]
                );
                moved = moved.max((want - before[j] as f64).abs());
            }
        }
        // A step of 0 would make the check vacuous (as an SGD step of 0 would pass it).
        assert!(moved > 1e-3, "{what} {kind:?}: the prior's written step is {moved}: the check is vacuous");
    }
}

#[test]
fn the_sgd_prior_ascends_its_written_gradient_on_the_cpu_and_the_emulated_kernels() {
    sgd_prior_follows_the_written_rule(&Cpu::new(), "cpu");
    sgd_prior_follows_the_written_rule(&emu_backend(), "emulated kernels");
}

#[test]
fn axpy_adds_a_times_x_on_the_cpu_and_the_emulated_kernels() {
    // A length that is no multiple of any block (and longer than one block of 256 threads).
    let n = 1000;
    let (x, y0) = (data(n, 3, -1.0, 1.0), data(n, 4, -2.0, 2.0));
    for a in [0.01f32, -0.37] {
        let (mut yc, mut ye) = (y0.clone(), y0.clone());
        Cpu::new().axpy(&mut yc, a, &x, n);
        emu_backend().axpy(&mut ye, a, &x, n);
        for i in 0..n {
            // One f32 product and one f32 sum: within 2 roundings of values below 2.4.
            let want = y0[i] as f64 + a as f64 * x[i] as f64;
            for (got, side) in [(yc[i], "cpu"), (ye[i], "emulated kernel")] {
                assert!((got as f64 - want).abs() <= 3e-7, "{side} axpy a={a} [{i}]: {got} vs {want}");
            }
        }
    }
}

// ---- DisARM's antithetic pair ------------------------------------------------------------------

/// The layer shape of the sampling tests: no multiple of the 256-thread block nor of the CPU's
/// 64-uniform chunks.
const SAMPLE_B: usize = 13;
const SAMPLE_N: usize = 317;
/// The key's own step and the clock's: the sampler draws at their sum (src/backend/mod.rs).
const KEY_STEP: u64 = 5;
const CLOCK_STEP: u64 = 7;

/// The first seed from 1 whose uniforms at (step KEY_STEP + CLOCK_STEP, encoder stream 1),
/// elements 0..b·n, include one in (0, CLIP) and one above 1 - CLIP (with a margin of 2e-6, far
/// beyond any rounding of σ at ±30): only such uniforms tell a clipped probability from an
/// unclipped one (u = 0 would not: 1 - 0 < σ(30) fails clipped or not). Each seed has both with probability ≈ 0.0017, so the search is short. Returns
/// (seed, index of the low uniform, index of the high one).
fn seed_with_extreme_uniforms() -> (u64, usize, usize) {
    let m = SAMPLE_B * SAMPLE_N;
    for seed in 1..1_000_000u64 {
        let key = RngKey::new(seed, KEY_STEP + CLOCK_STEP, stream::encoder(1));
        let lo = (0..m).find(|&i| (f64::MIN_POSITIVE..CLIP - 2e-6).contains(&(key.uniform(i as u32) as f64)));
        let hi = (0..m).find(|&i| (key.uniform(i as u32) as f64) > 1.0 - CLIP + 2e-6);
        if let (Some(lo), Some(hi)) = (lo, hi) {
            return (seed, lo, hi);
        }
    }
    unreachable!("no seed below 10^6 has both extremes");
}

/// Draws `logits` in `mode` on `be` with the key and the clock of this test.
fn draw<B: Backend<Buf = Vec<f32>>>(be: &B, seed: u64, logits: &[f32], mode: SampleMode) -> (Vec<f32>, Vec<f32>) {
    let m = SAMPLE_B * SAMPLE_N;
    let key = RngKey::new(seed, KEY_STEP, stream::encoder(1));
    let clock = be.array(&clock::at(CLOCK_STEP));
    let logits = be.upload(logits);
    let (mut z, mut anti) = (be.zeros(m), be.zeros(m));
    let twin = if mode == SampleMode::Antithetic { Some(&mut anti) } else { None };
    be.bernoulli_sample(&mut z, twin, &logits, key, Some(&clock), mode, SAMPLE_B, SAMPLE_N);
    (be.download(&z), be.download(&anti))
}

/// The documented rule (src/backend/mod.rs `SampleMode`, kernels/bernoulli.cu): with
/// u = uniform(seed, key step + clock step, stream, row·n + j) and p = σ(logit) clipped to
/// [CLIP, 1 - CLIP], Standard draws z = 1[u < p]; Antithetic draws DisARM's pair from the one
/// uniform, z = 1[1 - u < p] and the twin z̃ = 1[u < p]. An element whose u (or 1 - u) lies
/// within 1e-6 of p in f64 is left out: there the f32 σ may round either way. Returns how many
/// elements were checked.
fn assert_samples_follow_the_rule(what: &str, seed: u64, logits: &[f32], mode: SampleMode, z: &[f32], anti: &[f32]) -> usize {
    let key = RngKey::new(seed, KEY_STEP + CLOCK_STEP, stream::encoder(1));
    let mut checked = 0;
    for (i, &a) in logits.iter().enumerate() {
        let u = key.uniform(i as u32) as f64;
        let p = sigmoid(a as f64).clamp(CLIP, 1.0 - CLIP);
        if (u - p).abs() < 1e-6 || (1.0 - u - p).abs() < 1e-6 {
            continue;
        }
        checked += 1;
        let bit = |c: bool| c as u8 as f32;
        let (row, j) = (i / SAMPLE_N, i % SAMPLE_N);
        match mode {
            SampleMode::Standard => assert_eq!(z[i], bit(u < p), "{what} Standard ({row}, {j}): u {u}, p {p}"),
            SampleMode::Antithetic => {
                assert_eq!(z[i], bit(1.0 - u < p), "{what} Antithetic z ({row}, {j}): u {u}, p {p}");
                assert_eq!(anti[i], bit(u < p), "{what} Antithetic twin ({row}, {j}): u {u}, p {p}");
            }
        }
    }
    checked
}

fn sampler_follows_the_written_rule<B: Backend<Buf = Vec<f32>>>(be: &B, what: &str) {
    let (seed, lo, hi) = seed_with_extreme_uniforms();
    let m = SAMPLE_B * SAMPLE_N;
    let mut logits = data(m, 5, -4.0, 4.0);
    // Saturated logits where the uniform is extreme, both ways round: the first arrangement
    // tells a clipped p from an unclipped one through z (z = 1[1 - u < p]), the second through
    // the twin (z̃ = 1[u < p]). Unclipped, σ(30) rounds to 1 and σ(-30) is 1e-13.
    for (at_lo, at_hi) in [(30.0f32, -30.0f32), (-30.0, 30.0)] {
        logits[lo] = at_lo;
        logits[hi] = at_hi;
        for mode in [SampleMode::Standard, SampleMode::Antithetic] {
            let (z, anti) = draw(be, seed, &logits, mode);
            let checked = assert_samples_follow_the_rule(what, seed, &logits, mode, &z, &anti);
            // Each element is left out with probability below 4e-6: nearly all are checked,
            // and the saturated ones (far from any tie) always are.
            assert!(checked + 5 >= m, "{what}: only {checked} of {m} elements were checked");
            if mode == SampleMode::Antithetic {
                // The pair's structure at the extremes, spelled out: clipping makes the
                // saturated unit's z or twin the improbable value.
                // Clipped, whichever the sign: z = 0 and z̃ = 1 at the low uniform, z = 1 and
                // z̃ = 0 at the high one. Unclipped, the first arrangement flips both z's, the
                // second both twins.
                let want = [(z[lo], 0.0), (anti[lo], 1.0), (z[hi], 1.0), (anti[hi], 0.0)];
                for (k, (got, want)) in want.into_iter().enumerate() {
                    assert_eq!(got, want, "{what}: saturated element {k} (lo {lo}, hi {hi}, logits {at_lo}/{at_hi})");
                }
            }
        }
    }
}

#[test]
fn disarms_pair_and_the_standard_draw_follow_the_written_rule_on_the_cpu_and_the_emulated_kernels() {
    sampler_follows_the_written_rule(&Cpu::new(), "cpu");
    sampler_follows_the_written_rule(&emu_backend(), "emulated kernel");
}

// ---- the forward GEMM --------------------------------------------------------------------------

/// out (b, n) = inp (b, k) · w (k, n) + bias (n), every array row-major (src/backend/mod.rs),
/// against the product summed in f64. An f32 dot product of k terms plus a bias, in any order of
/// summation and with or without fused multiply-adds, is within γ_{k+1} = (k+1)u/(1 - (k+1)u)
/// (u = 2^-24) of Σ|inp·w| + |bias| of the exact value (Higham, Accuracy and Stability of
/// Numerical Algorithms, §3.1), so that is the tolerance: relative to the terms' magnitude, not
/// to the result, which may cancel to near 0. `out` starts full of garbage, which must not
/// survive.
fn forward_gemm_follows_the_written_product<B: Backend<Buf = Vec<f32>>>(be: &B, what: &str) {
    let t = GEMM_TILE as usize;
    // One element; whole tiles; a row, column and depth past a tile; the widths of a real layer.
    for (b, k, n) in [(1, 1, 1), (t, t, t), (t + 1, 2 * t + 1, t - 3), (3, 131, 70), (37, 5, 19)] {
        let (inp, w, bias) = (data(b * k, 6, -1.0, 1.0), data(k * n, 7, -1.0, 1.0), data(n, 8, -1.0, 1.0));
        let mut out = be.upload(&vec![1.0e3; b * n]);
        be.matmul_forward(&mut out, &be.upload(&inp), &be.upload(&w), &be.upload(&bias), b, k, n);
        let out = be.download(&out);
        let m = (k + 1) as f64 * f64::powi(2.0, -24);
        let gamma = m / (1.0 - m);
        for r in 0..b {
            for j in 0..n {
                let terms = (0..k).map(|i| inp[r * k + i] as f64 * w[i * n + j] as f64);
                let exact = bias[j] as f64 + terms.clone().sum::<f64>();
                let scale = bias[j].abs() as f64 + terms.map(f64::abs).sum::<f64>();
                let got = out[r * n + j] as f64;
                assert!(
                    (got - exact).abs() <= gamma * scale,
                    "{what} matmul_forward {:?} ({r}, {j}): {got} vs {exact} (bound {})",
                    (b, k, n),
                    gamma * scale
                );
            }
        }
    }
}

#[test]
fn the_forward_gemm_with_its_bias_is_the_written_product_on_the_cpu_and_the_emulated_kernel() {
    forward_gemm_follows_the_written_product(&Cpu::new(), "cpu");
    forward_gemm_follows_the_written_product(&emu_backend(), "emulated kernel");
}
