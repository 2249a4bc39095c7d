//! The kernels of the K-sample estimators (kernels/ksample.cu, and the operations they changed:
//! the transposed GEMM, multi-row weighted sums, HNCA's credit with scale, accumulation and a
//! reward offset), compiled as C++ for the CPU (kernels/emu), against their CPU twins: on
//! shapes that are not multiples of any block size, for K = 2 to 6. ARMS's draws are compared
//! bit for bit; everything else within 1e-5.

mod common;

use common::compare::{assert_close, assert_close_normwise};
use hnca::backend::cpu::Cpu;
use hnca::backend::emu::emu_backend;
use hnca::backend::{clock, GemmInit, HncaAbove, HncaInputs, KScoreInputs, KScoreMode};
use hnca::backend::{BernoulliOps, CreditOps, DenseOps, KSampleOps, MemoryOps};
use hnca::rng::{stream, RngKey};
use hnca::vae::estimator::{Estimator, EstimatorKind};

/// Deterministic test data in [lo, hi).
fn data(n: usize, tag: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngKey::new(77, 0, tag).fill_uniform(0, &mut v);
    v.iter_mut().for_each(|u| *u = lo + (hi - lo) * *u);
    v
}

fn bits(n: usize, tag: u32, p: f32) -> Vec<f32> {
    data(n, tag, 0.0, 1.0).into_iter().map(|u| (u < p) as u8 as f32).collect()
}

#[test]
fn the_transposed_gemm_matches_the_cpu_for_every_start() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    for (b, k, n) in [(4, 16, 16), (5, 37, 19), (7, 1, 5), (3, 131, 1031)] {
        let dout = data(b * n, 1, -1.0, 1.0);
        let w = data(k * n, 2, -1.0, 1.0);
        let bias = data(k, 3, -1.0, 1.0);
        let start = data(b * k, 4, -1.0, 1.0);
        for init in ["zero", "broadcast", "keep"] {
            let (mut c, mut e) = (start.clone(), start.clone());
            let pick = |init: &str| match init {
                "zero" => GemmInit::Zero,
                "broadcast" => GemmInit::Broadcast(&bias),
                _ => GemmInit::Keep,
            };
            cpu.matmul_backward_input(&mut c, &dout, &w, pick(init), b, k, n);
            emu.matmul_backward_input(&mut e, &dout, &w, pick(init), b, k, n);
            assert_close_normwise(&format!("matmul_backward_input {init} {:?}", (b, k, n)), &e, &c, 1e-5);
            // And the product itself, written out.
            for r in 0..b {
                for j in 0..k {
                    let dot: f32 = (0..n).map(|l| dout[r * n + l] * w[j * n + l]).sum();
                    let base = match init {
                        "zero" => 0.0,
                        "broadcast" => bias[j],
                        _ => start[r * k + j],
                    };
                    assert!((c[r * k + j] - dot - base).abs() <= 1e-4 * (1.0 + dot.abs()), "{init} {:?} ({r}, {j})", (b, k, n));
                }
            }
        }
    }
}

#[test]
fn entropy_gradients_axpy_and_multi_row_sums_match_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let (b, n) = (6, 333);
    let logits = data(b * n, 5, -30.0, 30.0);
    let (mut c, mut e) = (vec![0.0; b * n], vec![0.0; b * n]);
    cpu.entropy_grad(&mut c, &logits, b, n);
    emu.entropy_grad(&mut e, &logits, b, n);
    assert_close("entropy_grad", &e, &c, 1e-5);
    // d/da H(σ(a)) by central differences of the entropy in f64.
    let h = |a: f64| {
        let s = 1.0 / (1.0 + (-a).exp());
        -(s * s.ln() + (1.0 - s) * (1.0 - s).ln())
    };
    for (&a, &g) in logits.iter().zip(&c).filter(|(a, _)| a.abs() < 15.0) {
        let fd = (h(a as f64 + 1e-4) - h(a as f64 - 1e-4)) / 2e-4;
        assert!((g as f64 - fd).abs() < 1e-4, "entropy_grad at {a}: {g} vs {fd}");
    }
    let x = data(n, 6, -1.0, 1.0);
    let (mut yc, mut ye) = (data(n, 7, -1.0, 1.0), data(n, 7, -1.0, 1.0));
    cpu.axpy(&mut yc, 0.37, &x, n);
    emu.axpy(&mut ye, 0.37, &x, n);
    assert_eq!(yc, ye);
    let t = 11;
    let terms = data(b * t, 8, -50.0, 50.0);
    let coef = data(4 * t, 9, -1.0, 1.0);
    let (mut rc, mut re) = (vec![0.0; 4 * b], vec![0.0; 4 * b]);
    cpu.weighted_row_sum(&mut rc, &terms, &coef, None, b, t);
    emu.weighted_row_sum(&mut re, &terms, &coef, None, b, t);
    assert_close("weighted_row_sum, 4 rows", &re, &rc, 1e-5);
    for j in 0..4 {
        for r in 0..b {
            let want: f32 = (0..t).map(|c| coef[j * t + c] * terms[r * t + c]).sum();
            assert!((rc[j * b + r] - want).abs() <= 1e-4 * want.abs().max(1.0), "row {j} example {r}");
        }
    }
}

#[test]
fn arms_draws_are_bit_identical_to_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let (b, n) = (5, 77);
    let logits = data(b * n, 10, -5.0, 5.0);
    let at = 123_456u64;
    let (clock_c, clock_e) = (cpu.array(&clock::at(at)), emu.array(&clock::at(at)));
    for k in 2..=6 {
        let key = RngKey::new(0xfeed, 3, stream::arms(2));
        let run = |be: &dyn Fn(&mut [&mut Vec<f32>])| {
            let mut zs: Vec<Vec<f32>> = (0..k).map(|_| vec![9.0; b * n]).collect();
            let mut refs: Vec<&mut Vec<f32>> = zs.iter_mut().collect();
            be(&mut refs);
            zs
        };
        let zc = run(&|zs| cpu.arms_sample(zs, &logits, key, Some(&clock_c), b, n));
        let ze = run(&|zs| emu.arms_sample(zs, &logits, key, Some(&clock_e), b, n));
        assert_eq!(zc, ze, "K={k}");
        assert!(zc.iter().flatten().all(|&z| z == 0.0 || z == 1.0), "K={k}: every element written with a bit");
        // The antithetic structure: for p < ½ (logit < 0) at most ... never all K draws 1 when
        // p^{1/(K-1)} < ½, and the draws are not all equal everywhere.
        let differing = (0..b * n).filter(|&i| zc.iter().any(|z| z[i] != zc[0][i])).count();
        assert!(differing > b * n / 10, "K={k}: only {differing} elements with differing draws");
        // The clock's step is added to the key's.
        let later = RngKey::new(key.seed, key.step + at, key.stream);
        let plain = run(&|zs| cpu.arms_sample(zs, &logits, later, None, b, n));
        assert_eq!(plain, zc, "K={k}: the clock's step");
    }
}

/// One backend's `k_score_unit_grad` at fixed shapes: (out, cv_partials, inputs).
type KScoreOp<'a> = dyn Fn(&mut Vec<f32>, Option<&mut Vec<f32>>, &KScoreInputs<'_, Vec<f32>>) + 'a;

#[test]
fn the_k_sample_combination_matches_the_cpu_in_every_mode() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let (b, n) = (5, 333);
    let logits = data(b * n, 20, -4.0, 4.0);
    for k in [2usize, 3, 5] {
        let z: Vec<Vec<f32>> = (0..k).map(|c| bits(b * n, 30 + c as u32, 0.45)).collect();
        let grad_f: Vec<Vec<f32>> = (0..k).map(|c| data(b * n, 40 + c as u32, -3.0, 3.0)).collect();
        let mut rows = data(k * b, 50, -20.0, 20.0);
        rows[..b].iter_mut().for_each(|f| *f -= 300.0);
        // RODEO's learned vector: α, β, and its control network as initialised, biases drawn too.
        let mut rodeo = Estimator::new(EstimatorKind::Rodeo).initial_learned(1, 5);
        rodeo[..2].copy_from_slice(&[-0.4, 0.9]);
        let noise = data(rodeo.len(), 55, -0.1, 0.1);
        rodeo[2..].iter_mut().zip(&noise).for_each(|(v, u)| *v += u);
        for (mode, coef) in
            [(KScoreMode::Loo, vec![]), (KScoreMode::Arms, vec![]), (KScoreMode::DoubleCv, vec![0.6]), (KScoreMode::Rodeo, rodeo)]
        {
            let p = coef.len();
            let run = |be: &KScoreOp| {
                let zr: Vec<&Vec<f32>> = z.iter().collect();
                let gr: Vec<&Vec<f32>> = if p > 0 { grad_f.iter().collect() } else { vec![] };
                let inp = KScoreInputs {
                    mode,
                    logits: &logits,
                    z: &zr,
                    rows: &rows,
                    grad_f: &gr,
                    coef: (p > 0).then_some(&coef),
                    loss_scale: -0.01,
                };
                let mut out = vec![f32::NAN; b * n];
                let mut partials = vec![f32::NAN; b * p];
                be(&mut out, (p > 0).then_some(&mut partials), &inp);
                (out, partials)
            };
            let (oc, pc) = run(&|o, pt, inp| cpu.k_score_unit_grad(o, pt, inp, b, n));
            let (oe, pe) = run(&|o, pt, inp| emu.k_score_unit_grad(o, pt, inp, b, n));
            assert_close_normwise(&format!("{mode:?} K={k} logit gradients"), &oe, &oc, 1e-5);
            // The network's ascent sums cancelling terms over every neighbour: 1e-4 normwise.
            assert_close_normwise(&format!("{mode:?} K={k} learned values' ascent"), &pe, &pc, if p > 2 { 1e-4 } else { 1e-5 });
            assert!(oc.iter().any(|&g| g.abs() > 1e-3), "{mode:?} K={k}: all gradients near zero");
        }
    }
}

#[test]
fn hnca_credit_with_a_scale_an_offset_and_accumulation_matches_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let (b, p, t) = (6, 70, 9);
    let logits = data(b * p, 60, -4.0, 4.0);
    let z = bits(b * p, 61, 0.5);
    let flip_dec = data(b * p, 62, -3.0, 3.0);
    let gen = data(b * p, 63, -3.0, 3.0);
    let flip_lp = data(b * p, 64, -3.0, 3.0);
    let flip_ent = data(b * p, 65, -1.0, 1.0);
    let reward = data(3 * b, 66, -10.0, 10.0);
    let terms = data(b * t, 67, -40.0, 0.0);
    let start = data(b * p, 68, -1.0, 1.0);
    for (scale, accumulate, offset) in [(1.0f32, false, 0usize), (0.5, true, b), (1.0 / 3.0, true, 2 * b)] {
        let inp = HncaInputs {
            scale,
            accumulate,
            logits: &logits,
            z: &z,
            flip_dec: &flip_dec,
            col_dec: 2,
            gen_logits: &gen,
            gen_is_prior: false,
            col_gen: 5,
            above: Some(HncaAbove { flip_lp: &flip_lp, flip_ent: &flip_ent, col_ent: 7 }),
            reward: &reward,
            reward_offset: offset,
            terms: &terms,
            t,
            all_child: false,
        };
        let (mut c, mut e) = (start.clone(), start.clone());
        cpu.hnca_unit_grad(&mut c, &inp, b, p);
        emu.hnca_unit_grad(&mut e, &inp, b, p);
        assert_close(&format!("hnca_unit_grad scale {scale} accumulate {accumulate} offset {offset}"), &e, &c, 1e-5);
        // Accumulation adds to what was there; the scale multiplies the credit.
        let mut fresh = start.clone();
        let plain = HncaInputs { scale: 1.0, accumulate: false, ..inp };
        cpu.hnca_unit_grad(&mut fresh, &plain, b, p);
        for i in 0..b * p {
            let want = if accumulate { start[i] } else { 0.0 } + scale * fresh[i];
            assert!((c[i] - want).abs() <= 1e-5 * want.abs().max(1.0), "element {i}: {} vs {want}", c[i]);
        }
    }
}
