//! The CUDA kernels, compiled as C++ for the CPU (kernels/emu), against the CPU backend:
//! each operation on small shapes and on shapes that are not multiples of the block sizes,
//! then whole training steps of every estimator.

mod common;

use common::compare::{assert_close, assert_close_normwise, assert_finite};
use common::{bits32, bits64, under_every_schedule};
use hnca::backend::cpu::Cpu;
use hnca::backend::cuda::ColumnMajorGemm;
use hnca::backend::emu::{emu_backend, param_size, EmuBackend};
use hnca::backend::kernels::{Device, GemmParams, KernelBackend, KernelParams, KERNELS};
use hnca::backend::{
    clock, credit_tables_len, grad_variance_slots, stats, AdamHyper, Backend, Elem, GemmInit, PerExample, SampleMode, StatsPlan,
};
use hnca::backend::{BernoulliOps, CreditOps, DenseOps, MemoryOps, StateOps};
use hnca::data::Binarize;
use hnca::rng::{stream, RngKey};
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::{Params, Shape};
use hnca::vae::step::{compute_gradients, Draw, Workspace};
use hnca::vae::trainer::Trainer;

/// Deterministic test data in [lo, hi).
fn data(n: usize, tag: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngKey::new(99, 0, tag).fill_uniform(0, &mut v);
    v.iter_mut().for_each(|u| *u = lo + (hi - lo) * *u);
    v
}

fn bits(n: usize, tag: u32) -> Vec<f32> {
    data(n, tag, 0.0, 1.0).into_iter().map(|u| (u < 0.4) as u8 as f32).collect()
}

#[test]
fn parameter_structs_have_the_layout_the_kernels_expect() {
    for (name, rust_size) in KERNELS {
        assert_eq!(param_size(name), rust_size, "{name}: C++ and Rust disagree on the parameter struct's size");
    }
    assert_eq!(param_size("no_such_kernel"), 0);
}

/// The forward GEMM (with bias) and the weight-gradient GEMM of `be` against the CPU backend.
/// Returns `be`'s outputs.
fn assert_gemms_match_the_cpu<B: Backend<Buf = Vec<f32>>>(be: &B, what: &str, shapes: &[(usize, usize, usize)]) -> Vec<f32> {
    let cpu = Cpu::new();
    let mut outputs = Vec::new();
    for &(b, k, n) in shapes {
        let inp = data(b * k, 1, -1.0, 1.0);
        let w = data(k * n, 2, -1.0, 1.0);
        let bias = data(n, 3, -1.0, 1.0);
        let (mut out_c, mut out_e) = (vec![0.0; b * n], vec![0.0; b * n]);
        cpu.matmul_forward(&mut out_c, &inp, &w, &bias, b, k, n);
        be.matmul_forward(&mut out_e, &inp, &w, &bias, b, k, n);
        assert_close(&format!("{what} matmul_forward {:?}", (b, k, n)), &out_e, &out_c, 1e-5);
        let dout = data(b * n, 4, -1.0, 1.0);
        let (mut dw_c, mut dw_e) = (vec![0.0; k * n], vec![0.0; k * n]);
        cpu.matmul_backward_weight(&mut dw_c, &inp, &dout, b, k, n);
        be.matmul_backward_weight(&mut dw_e, &inp, &dout, b, k, n);
        assert_close(&format!("{what} matmul_backward_weight {:?}", (b, k, n)), &dw_e, &dw_c, 1e-5);
        // din (b, k) = dout · wᵀ, fresh and accumulated (the bias-free forms a BLAS runs).
        for init in [GemmInit::Zero, GemmInit::Keep] {
            let (mut din_c, mut din_e) = (inp.clone(), inp.clone());
            cpu.matmul_backward_input(&mut din_c, &dout, &w, init, b, k, n);
            be.matmul_backward_input(&mut din_e, &dout, &w, init, b, k, n);
            assert_close(&format!("{what} matmul_backward_input {init:?} {:?}", (b, k, n)), &din_e, &din_c, 1e-5);
            outputs.extend(&din_e);
        }
        outputs.extend(out_e.iter().chain(&dw_e));
    }
    outputs
}

#[test]
fn gemm_forward_and_weight_gradient_match_the_cpu() {
    under_every_schedule("tiled GEMM", || {
        bits32(&assert_gemms_match_the_cpu(&emu_backend(), "tiled kernel", &[(4, 16, 16), (5, 37, 19), (50, 33, 1)]))
    });
}

#[test]
fn bernoulli_samples_are_bit_identical_to_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let (b, n) = (7, 300);
    let logits = data(b * n, 5, -4.0, 4.0);
    let key = RngKey::new(0xdead_beef_1234, 77, stream::encoder(2));
    let (mut zc, mut ze) = (vec![0.0; b * n], vec![0.0; b * n]);
    cpu.bernoulli_sample(&mut zc, None, &logits, key, None, SampleMode::Standard, b, n);
    emu.bernoulli_sample(&mut ze, None, &logits, key, None, SampleMode::Standard, b, n);
    assert_eq!(zc, ze);
    // With a clock, the clock's step is added to the key's: the same bits as the key at that step.
    let at = 1_000_000_007u64;
    let (clock_c, clock_e) = (cpu.array(&clock::at(at)), emu.array(&clock::at(at)));
    let later = RngKey::new(key.seed, key.step + at, key.stream);
    let (mut want, mut zk, mut zke) = (vec![0.0; b * n], vec![0.0; b * n], vec![0.0; b * n]);
    cpu.bernoulli_sample(&mut want, None, &logits, later, None, SampleMode::Standard, b, n);
    cpu.bernoulli_sample(&mut zk, None, &logits, key, Some(&clock_c), SampleMode::Standard, b, n);
    emu.bernoulli_sample(&mut zke, None, &logits, key, Some(&clock_e), SampleMode::Standard, b, n);
    assert_eq!(zk, want, "cpu: the clock's step is added to the key's");
    assert_eq!(zke, want, "emulated kernel: the clock's step is added to the key's");
    assert_ne!(zk, zc);
    assert!(zc.contains(&0.0) && zc.contains(&1.0));
    let (mut ac, mut ae) = (vec![0.0; b * n], vec![0.0; b * n]);
    cpu.bernoulli_sample(&mut zc, Some(&mut ac), &logits, key, None, SampleMode::Antithetic, b, n);
    emu.bernoulli_sample(&mut ze, Some(&mut ae), &logits, key, None, SampleMode::Antithetic, b, n);
    assert_eq!((zc, ac), (ze, ae));
}

#[test]
fn clipped_logits_match_the_cpu_and_the_samplers_probabilities() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let n = 1000;
    let logits = data(n, 6, -40.0, 40.0);
    let (mut oc, mut oe) = (vec![0.0; n], vec![0.0; n]);
    cpu.clip_logits(&mut oc, &logits, n);
    emu.clip_logits(&mut oe, &logits, n);
    assert_eq!(oc, oe);
    use hnca::backend::cpu::{CLIP, CLIP_LOGIT};
    // σ(±CLIP_LOGIT) are the sampler's clipped probabilities CLIP and 1 - CLIP.
    let tail = 1.0 / (1.0 + (CLIP_LOGIT as f64).exp());
    assert!((tail / CLIP as f64 - 1.0).abs() < 1e-5, "σ(-CLIP_LOGIT) = {tail}");
    for (&a, &c) in logits.iter().zip(&oc) {
        let want = if a.abs() < CLIP_LOGIT { a } else { CLIP_LOGIT.copysign(a) };
        assert_eq!(c, want, "logit {a}");
    }
    assert!(oc.contains(&CLIP_LOGIT) && oc.contains(&-CLIP_LOGIT) && oc.iter().any(|c| c.abs() < CLIP_LOGIT));
}

#[test]
fn row_terms_means_and_deltas_match_the_cpu() {
    under_every_schedule("row terms, means and deltas", row_terms_means_and_deltas);
}

/// Returns the emulation's outputs.
fn row_terms_means_and_deltas() -> Vec<u64> {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let mut outputs = Vec::new();
    let (b, n, t) = (6, 333, 5);
    let logits = data(b * n, 6, -6.0, 6.0);
    let prior = data(n, 7, -3.0, 3.0);
    let targets = bits(b * n, 8);
    let (mut tc, mut te) = (data(b * t, 9, -1.0, 1.0), data(b * t, 9, -1.0, 1.0));
    cpu.log_prob_rows(&mut tc, t, 1, &logits, false, &targets, None, b, n);
    emu.log_prob_rows(&mut te, t, 1, &logits, false, &targets, None, b, n);
    cpu.log_prob_rows(&mut tc, t, 2, &prior, true, &targets, None, b, n);
    emu.log_prob_rows(&mut te, t, 2, &prior, true, &targets, None, b, n);
    cpu.entropy_rows(&mut tc, t, 4, &logits, None, b, n);
    emu.entropy_rows(&mut te, t, 4, &logits, None, b, n);
    assert_close("terms", &te, &tc, 1e-5);
    let coef = [0.5, -1.0, 2.0, 0.0, 1.0];
    let (mut rc, mut re) = (vec![0.0; b], vec![0.0; b]);
    let baselines = vec![3.0f32, -0.25];
    cpu.weighted_row_sum(&mut rc, &tc, &coef, Some((&baselines, 1)), b, t);
    emu.weighted_row_sum(&mut re, &tc, &coef, Some((&baselines, 1)), b, t);
    assert_close("weighted_row_sum", &re, &rc, 1e-6);
    let mut plain = vec![0.0; b];
    cpu.weighted_row_sum(&mut plain, &tc, &coef, None, b, t);
    for (with, without) in rc.iter().zip(&plain) {
        assert_eq!(*with, without + 0.25, "the baseline is subtracted");
    }
    let (mc, me) = (cpu.term_means(&tc, b, t), emu.term_means(&tc, b, t));
    for (x, y) in mc.iter().zip(&me) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "term_means {x} vs {y}");
    }
    outputs.extend(bits32(&te).into_iter().chain(bits32(&re)).chain(bits64(&me)));
    for broadcast in [false, true] {
        let l = if broadcast { &prior } else { &logits };
        let (mut dc, mut de) = (vec![0.0; b * n], vec![0.0; b * n]);
        cpu.bernoulli_delta(&mut dc, l, broadcast, &targets, b, n);
        emu.bernoulli_delta(&mut de, l, broadcast, &targets, b, n);
        assert_close("bernoulli_delta", &de, &dc, 1e-6);
        let (mut cc, mut ce) = (vec![0.0; n], vec![0.0; n]);
        cpu.column_mean(&mut cc, &dc, b, n);
        emu.column_mean(&mut ce, &dc, b, n);
        assert_close("column_mean", &ce, &cc, 1e-5);
        outputs.extend(bits32(&de).into_iter().chain(bits32(&ce)));
    }
    outputs
}

/// The credit pass in product form, bit for bit the CPU's: p not a multiple of the 8 parents per
/// block, c not a multiple of the 16 lanes and above the shared-memory chunk; weights small,
/// large (renormalised every few children) and beyond the range of the products for some
/// parents (the per-edge form).
#[test]
fn credit_pass_matches_the_cpu_on_ragged_shapes() {
    under_every_schedule("credit pass", credit_pass_on_ragged_shapes);
}

/// Returns the emulation's outputs.
fn credit_pass_on_ragged_shapes() -> Vec<u64> {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let mut outputs = Vec::new();
    for (b, p, c, span) in [(2, 8, 16, 0.5), (3, 21, 1100, 0.5), (2, 11, 77, 25.0), (2, 9, 600, 200.0)] {
        let parent = bits(b * p, 10);
        let w = data(p * c, 11, -span, span);
        let child_logits = data(b * c, 12, -5.0, 5.0);
        let child = bits(b * c, 13);
        for entropy in [false, true] {
            let (mut lc, mut le) = (vec![0.0; b * p], vec![0.0; b * p]);
            let (mut ec, mut ee) = (vec![0.0; b * p], vec![0.0; b * p]);
            let (mut tc, mut te) = (vec![0.0; credit_tables_len(p, c)], vec![0.0; credit_tables_len(p, c)]);
            cpu.credit_pass(&mut lc, entropy.then_some(&mut ec), &parent, &w, &mut tc, &child_logits, &child, b, p, c);
            emu.credit_pass(&mut le, entropy.then_some(&mut ee), &parent, &w, &mut te, &child_logits, &child, b, p, c);
            // The same operations in the same order: the same bits.
            assert_eq!(te, tc, "credit tables ({b}, {p}, {c}, weights to {span})");
            assert_eq!(le, lc, "credit log-probs ({b}, {p}, {c}, weights to {span})");
            assert_eq!(ee, ec, "credit entropies ({b}, {p}, {c}, weights to {span})");
            assert_finite("credit log-probs", "cpu", &lc);
            outputs.extend(bits32(&te).into_iter().chain(bits32(&le)).chain(bits32(&ee)));
        }
    }
    outputs
}

/// Adam over several tensors in one launch, its step from the clock, against the CPU.
#[test]
fn adam_over_every_tensor_matches_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let sizes = [517, 3, 1000];
    let init = |tag: u32| sizes.iter().enumerate().map(|(i, &n)| data(n, tag + i as u32, -1.0, 1.0)).collect::<Vec<_>>();
    let (mut pc, mut pe) = (init(14), init(14));
    let zeros = || sizes.iter().map(|&n| vec![0.0f32; n]).collect::<Vec<_>>();
    let (mut mc, mut me, mut vc, mut ve) = (zeros(), zeros(), zeros(), zeros());
    let hp = AdamHyper { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    for t in 0..3u64 {
        let g = init(30 + 5 * t as u32);
        let (clock_c, clock_e) = (cpu.array(&clock::at(t)), emu.array(&clock::at(t)));
        fn refs(v: &mut [Vec<f32>]) -> Vec<&mut Vec<f32>> {
            v.iter_mut().collect()
        }
        let gr: Vec<&Vec<f32>> = g.iter().collect();
        cpu.adam(&mut refs(&mut pc), &gr, &mut refs(&mut mc), &mut refs(&mut vc), &clock_c, hp);
        emu.adam(&mut refs(&mut pe), &gr, &mut refs(&mut me), &mut refs(&mut ve), &clock_e, hp);
    }
    for i in 0..sizes.len() {
        assert_close(&format!("adam params, tensor {i}"), &pe[i], &pc[i], 1e-6);
        assert_close(&format!("adam moments, tensor {i}"), &ve[i], &vc[i], 1e-6);
    }
}

/// The batch gathered through the epoch's order and binarized on the device: bit-identical to the
/// CPU (both rules, labels too), and to `data::binarize_batch`.
#[test]
fn gather_binarize_matches_the_cpu_and_the_host_rule() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let (count, n0, b) = (37, 29, 5);
    let images: Vec<u8> = data(count * n0, 40, 0.0, 256.0).iter().map(|&v| v as u8).collect();
    let labels: Vec<u8> = (0..count).map(|i| (i * 7 % 10) as u8).collect();
    let order: Vec<u32> = (0..count as u32).rev().collect();
    let split = hnca::data::Split { images: images.clone(), labels: labels.clone(), n: count, rows: 1, cols: n0 };
    for mode in [Binarize::Dynamic, Binarize::Threshold] {
        let mut words = clock::at(12);
        words[clock::BATCH as usize] = 3;
        words[clock::EPOCH as usize] = 4;
        let (ic, ie) = (cpu.array(&images), emu.array(&images));
        let (lc, le) = (cpu.array(&labels), emu.array(&labels));
        let (oc, oe) = (cpu.array(&order), emu.array(&order));
        let (kc, ke) = (cpu.array(&words), emu.array(&words));
        let (mut xc, mut xe, mut yc, mut ye) = (vec![0.0; b * n0], vec![0.0; b * n0], vec![0.0; b], vec![0.0; b]);
        cpu.gather_binarize(&mut xc, Some((&mut yc, &lc)), &ic, &oc, &kc, mode, 9, 77, b, n0);
        emu.gather_binarize(&mut xe, Some((&mut ye, &le)), &ie, &oe, &ke, mode, 9, 77, b, n0);
        assert_eq!(xc, xe, "{mode:?}: bits");
        assert_eq!(yc, ye, "{mode:?}: labels");
        let rows = &order[3 * b..4 * b];
        assert_eq!(xc, hnca::data::binarize_batch(&split, rows, mode, RngKey::new(9, 4, 77), n0), "{mode:?}: the host's rule");
        assert_eq!(yc, rows.iter().map(|&i| labels[i as usize] as f32).collect::<Vec<_>>());
        assert!(xc.contains(&0.0) && xc.contains(&1.0));
    }
}

/// Two layers' gradient-variance partial sums, then the step's statistics (term means,
/// objective, baselines, epoch sums, flag, clock), on both backends.
#[test]
fn step_statistics_match_the_cpu() {
    under_every_schedule("gradient variance and step statistics", step_statistics);
}

/// Returns the emulation's outputs.
fn step_statistics() -> Vec<u64> {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    // One layer wider than a GV_CHUNK of weights, one narrow; a batch of 9.
    let b = 9;
    let layers = [(70, 80), (80, 3)];
    let slots: Vec<u32> = {
        let mut v = Vec::new();
        for &(k, n) in &layers {
            let first = v.iter().skip(1).step_by(2).sum::<u32>();
            v.extend([first, grad_variance_slots(b, k, n, PerExample::Outer) as u32]);
        }
        v
    };
    let total: u32 = slots.iter().skip(1).step_by(2).sum();
    let (mut pc, mut pe) = (cpu.array(&vec![0.0f64; 4 * total as usize]), emu.array(&vec![0.0f64; 4 * total as usize]));
    for (l, &(k, n)) in layers.iter().enumerate() {
        let inp = bits(b * k, 50 + l as u32);
        let g = data(b * n, 60 + l as u32, -1.0, 1.0);
        let (mut dw, mut db) = (vec![0.0; k * n], vec![0.0; n]);
        cpu.matmul_backward_weight(&mut dw, &inp, &g, b, k, n);
        cpu.column_mean(&mut db, &g, b, n);
        cpu.grad_variance(&mut pc, slots[2 * l] as usize, &inp, &g, &dw, &db, b, k, n, PerExample::Outer);
        emu.grad_variance(&mut pe, slots[2 * l] as usize, &inp, &g, &dw, &db, b, k, n, PerExample::Outer);
    }
    let t = 4;
    let terms = data(b * t, 70, -5.0, 1.0);
    let plan = StatsPlan {
        coef: vec![1.0, 0.5, 0.0, -1.0, 0.0, 1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 1.0],
        baselines: 2,
        layer_params: layers.iter().map(|&(k, n)| (k * n + n) as f64).collect(),
        slots,
        decay: 0.99,
    };
    let len = plan.stats_len(t);
    let (mut sc, mut se) = (cpu.array(&vec![0.0f64; len]), emu.array(&vec![0.0f64; len]));
    let (mut bc, mut be) = (vec![0.5f32, -2.0], vec![0.5f32, -2.0]);
    let (mut cc, mut ce) = (cpu.array(&clock::at(41)), emu.array(&clock::at(41)));
    for _ in 0..2 {
        cpu.step_stats(&mut sc, &mut bc, &mut cc, &terms, &pc, &plan, b, t);
        emu.step_stats(&mut se, &mut be, &mut ce, &terms, &pe, &plan, b, t);
    }
    assert_eq!(cc, ce, "clocks");
    assert_eq!(clock::step(&cc), 43);
    assert_eq!(cc[clock::BATCH as usize], 2);
    assert_close("baselines", &be, &bc, 1e-6);
    assert_eq!(sc[stats::STEPS], 2.0);
    assert_eq!(sc[stats::DIVERGED], 0.0);
    for (i, (x, y)) in sc.iter().zip(&se).enumerate() {
        assert!(x.is_finite() && (x - y).abs() <= 1e-5 * x.abs().max(1e-6), "statistic {i}: cpu {x} vs kernel {y}");
    }
    // A NaN among the terms raises the flag at the step it happened, once.
    let mut bad = terms.clone();
    bad[5] = f32::NAN;
    for (be_stats, be_base, be_clock, backend) in [(&mut sc, &mut bc, &mut cc, 0), (&mut se, &mut be, &mut ce, 1)] {
        if backend == 0 {
            cpu.step_stats(be_stats, be_base, be_clock, &bad, &pc, &plan, b, t);
            cpu.step_stats(be_stats, be_base, be_clock, &bad, &pc, &plan, b, t);
        } else {
            emu.step_stats(be_stats, be_base, be_clock, &bad, &pe, &plan, b, t);
            emu.step_stats(be_stats, be_base, be_clock, &bad, &pe, &plan, b, t);
        }
        assert_eq!(be_stats[stats::DIVERGED], 44.0, "backend {backend}: the first bad step");
        assert_eq!(be_stats[stats::WHAT], stats::DIVERGED_OBJECTIVE);
    }
    // The epoch's start zeroes the sums and sets the clock's epoch and batch, keeping its step.
    cpu.epoch_start(&mut sc, &mut cc, 7, 5, 2);
    emu.epoch_start(&mut se, &mut ce, 7, 5, 2);
    assert_eq!(cc, ce);
    assert_eq!((clock::step(&cc), cc[clock::EPOCH as usize], cc[clock::BATCH as usize]), (45, 7, 5));
    assert_eq!((sc[stats::STEPS], sc[stats::OBJECTIVE], sc[stats::LAYERS]), (0.0, 0.0, 0.0));
    assert_eq!((se[stats::STEPS], se[stats::OBJECTIVE], se[stats::LAYERS]), (0.0, 0.0, 0.0));
    bits64(&pe).into_iter().chain(bits64(&se)).chain(bits32(&be)).collect()
}

/// The scan for NaN and infinity counts each tensor's, exactly, on both backends.
#[test]
fn non_finite_counts_match_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let mut a = data(3000, 80, -1.0, 1.0);
    let mut b = data(7, 81, -1.0, 1.0);
    let c = data(129, 82, -1.0, 1.0);
    for i in [0, 1000, 2999] {
        a[i] = f32::NAN;
    }
    a[5] = f32::INFINITY;
    b[6] = f32::NEG_INFINITY;
    let mut kc = cpu.array(&[9u32; 6]);
    cpu.count_non_finite(&mut kc, &[&a, &b, &c]);
    assert_eq!(kc, vec![3, 1, 0, 1, 0, 0]);
    under_every_schedule("count_non_finite", || {
        let mut ke = emu.array(&[9u32; 6]);
        emu.count_non_finite(&mut ke, &[&a, &b, &c]);
        assert_eq!(ke, kc);
        ke.iter().map(|&k| k as u64).collect()
    });
}

/// One whole step of every estimator on both backends: identical samples, and every parameter's
/// gradient within 1e-5 normwise (1e-4 for HNCA's all-child + full-reward ablation, whose
/// upstream rewards of hundreds of nats multiply the small difference ρ1 - ρ0 and so amplify f32
/// rounding).
fn assert_whole_steps_match_the_cpu(shape: &Shape, b: usize) {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    // Not the forward order the single-kernel tests start from (and compare the others with).
    hnca::backend::emu::set_schedule(hnca::backend::emu::Schedule::Shuffle(11));
    let host = Params::init(shape, 4);
    let x = bits(b * shape.width(0), 30);
    let baselines = [0.5f32, -1.0, 2.0];
    let ablation = Estimator { all_child: true, full_reward: true, ..Estimator::new(EstimatorKind::Hnca) };
    // And every K-sample estimator at K = 3 (ARMS at 4): more chains than the defaults' two.
    let more = [
        (EstimatorKind::Loo, 3),
        (EstimatorKind::Arms, 4),
        (EstimatorKind::DoubleCv, 3),
        (EstimatorKind::Rodeo, 3),
        (EstimatorKind::Hnca, 3),
    ]
    .map(|(kind, k)| (Estimator::configure(kind, Some(k), false, false).unwrap(), 1e-5));
    let configs = EstimatorKind::ALL.into_iter().map(|k| (Estimator::new(k), 1e-5)).chain([(ablation, 1e-4)]).chain(more);
    for (est, tol) in configs {
        let (zc, gc) = cpu.step(shape, &est, &host, &x, &baselines, b);
        let (ze, ge) = emu.step(shape, &est, &host, &x, &baselines, b);
        assert_eq!(zc, ze, "{} {:?}: samples differ", est.label(), shape.sizes);
        for (i, (a, c)) in ge.iter().zip(&gc).enumerate() {
            assert_close_normwise(&format!("{} {:?} gradient tensor {i}", est.label(), shape.sizes), a, c, tol);
        }
    }
}

/// Widths that are not multiples of any block size, all within one block.
#[test]
fn whole_training_steps_match_the_cpu_for_every_estimator() {
    assert_whole_steps_match_the_cpu(&Shape::new(30, &[13, 9, 7]), 6);
}

/// Widths and a batch that cross every launch constant (tests/common/mod.rs, WIDE_*).
#[test]
fn whole_training_steps_across_the_launch_constants_match_the_cpu() {
    assert_whole_steps_match_the_cpu(&Shape::new(common::WIDE_INPUTS, &common::WIDE_LAYERS), common::WIDE_BATCH);
}

/// One training step through the trainer (gradients, Adam, baselines) moves every parameter by
/// the same amount on both backends, to 1e-5 normwise. (One step: Adam's update is nearly the
/// sign of the gradient, so later steps amplify differences wherever gradients nearly cancel;
/// the gradients themselves are compared in the test above.)
#[test]
fn whole_training_step_parameter_updates_match_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let shape = Shape::new(30, &[13, 9, 7]);
    let b = 6;
    let x = bits(b * 30, 31);
    for kind in EstimatorKind::ALL {
        let mut tc = Trainer::new(&cpu, shape.clone(), Estimator::new(kind), b, 1e-3, 6);
        let mut te = Trainer::new(&emu, shape.clone(), Estimator::new(kind), b, 1e-3, 6);
        let before = tc.host_params();
        tc.train_step(&x);
        te.train_step(&x);
        let (after_c, after_e) = (tc.host_params(), te.host_params());
        for (i, ((p0, pc), pe)) in before.tensors().iter().zip(after_c.tensors()).zip(after_e.tensors()).enumerate() {
            let dc: Vec<f32> = pc.iter().zip(p0.iter()).map(|(a, b)| a - b).collect();
            let de: Vec<f32> = pe.iter().zip(p0.iter()).map(|(a, b)| a - b).collect();
            assert_close_normwise(&format!("{} update of tensor {i}", kind.name()), &de, &dc, 1e-5);
        }
        assert_close(&format!("{} baselines", kind.name()), &te.state.baselines(&emu), &tc.state.baselines(&cpu), 1e-5);
    }
}

/// Runs compute_gradients on a backend and returns (every sample, every gradient tensor).
trait StepRunner {
    fn step(
        &self,
        shape: &Shape,
        est: &Estimator,
        host: &Params<Vec<f32>>,
        x: &[f32],
        baselines: &[f32],
        b: usize,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>);
}

fn run_step<B: Backend<Buf = Vec<f32>>>(
    be: &B,
    shape: &Shape,
    est: &Estimator,
    host: &Params<Vec<f32>>,
    x: &[f32],
    baselines: &[f32],
    b: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let params = host.to_backend(be);
    let mut grads = host.map(|t| be.zeros(t.len()));
    let mut ws = Workspace::new(be, shape, est, b);
    be.write(&mut ws.main.z[0], x);
    let baselines = be.upload(baselines);
    compute_gradients(be, &params, &mut ws, est, &baselines, Draw::at(8, 2, false), &mut grads);
    let mut samples: Vec<Vec<f32>> = ws.main.z.clone();
    for chain in &ws.alt {
        samples.extend(chain.z.iter().cloned());
    }
    (samples, grads.tensors().into_iter().cloned().collect())
}

impl StepRunner for Cpu {
    fn step(
        &self,
        shape: &Shape,
        est: &Estimator,
        host: &Params<Vec<f32>>,
        x: &[f32],
        baselines: &[f32],
        b: usize,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        run_step(self, shape, est, host, x, baselines, b)
    }
}

impl StepRunner for EmuBackend {
    fn step(
        &self,
        shape: &Shape,
        est: &Estimator,
        host: &Params<Vec<f32>>,
        x: &[f32],
        baselines: &[f32],
        b: usize,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        run_step(self, shape, est, host, x, baselines, b)
    }
}

/// The emulated device plus a stand-in for cuBLAS: a reference column-major SGEMM with BLAS
/// semantics, called with the arguments the CUDA device would pass to cuBLAS.
struct ReferenceBlas(hnca::backend::emu::EmuDevice);

impl Device for ReferenceBlas {
    type Buf = Vec<f32>;
    type Array<T: Elem> = Vec<T>;
    type Graph = ();
    type Guard<'a> = ();
    fn array<T: Elem>(&self, host: &[T]) -> Vec<T> {
        self.0.array(host)
    }
    fn read_array<T: Elem>(&self, a: &Vec<T>) -> Vec<T> {
        self.0.read_array(a)
    }
    fn write_array<T: Elem>(&self, a: &mut Vec<T>, host: &[T]) {
        self.0.write_array(a, host)
    }
    fn array_ptr<'a, T: Elem>(&'a self, a: &'a Vec<T>) -> (u64, ()) {
        self.0.array_ptr(a)
    }
    fn array_ptr_mut<'a, T: Elem>(&'a self, a: &'a mut Vec<T>) -> (u64, ()) {
        self.0.array_ptr_mut(a)
    }
    fn end_recording(&self) -> Result<(), String> {
        Ok(())
    }
    fn replay(&self, _graph: &()) {}
    fn alloc_zeros(&self, n: usize) -> Vec<f32> {
        self.0.alloc_zeros(n)
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        self.0.upload(host)
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        self.0.download(buf)
    }
    fn write(&self, dst: &mut Vec<f32>, host: &[f32]) {
        self.0.write(dst, host)
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn ptr<'a>(&'a self, buf: &'a Vec<f32>) -> (u64, ()) {
        self.0.ptr(buf)
    }
    fn ptr_mut<'a>(&'a self, buf: &'a mut Vec<f32>) -> (u64, ()) {
        self.0.ptr_mut(buf)
    }
    fn launch<P: KernelParams>(&self, grid: [u32; 3], block: [u32; 3], params: &P) {
        self.0.launch(grid, block, params)
    }
    fn launch_runs(&self, name: &'static str, grid: [u32; 3], block: [u32; 3], table: u64) {
        self.0.launch_runs(name, grid, block, table)
    }
    fn has_vendor_gemm(&self, p: &GemmParams) -> bool {
        p.bias == 0 && ColumnMajorGemm::of(p).is_some()
    }
    fn vendor_gemm(&self, p: &GemmParams) {
        let c = ColumnMajorGemm::of(p).expect("has_vendor_gemm said yes");
        // cuBLAS's argument checks (CUBLAS_STATUS_INVALID_VALUE): sizes at least 0, and every
        // leading dimension at least max(1, the rows of its matrix as stored).
        let rows = |trans: bool, not_t: i32, t: i32| if trans { t } else { not_t };
        assert!(c.m >= 0 && c.n >= 0 && c.k >= 0, "cuBLAS refuses negative sizes: {c:?}");
        assert!(c.ld_first >= rows(c.trans_first, c.m, c.k).max(1), "cuBLAS refuses lda {} for {c:?}", c.ld_first);
        assert!(c.ld_second >= rows(c.trans_second, c.k, c.n).max(1), "cuBLAS refuses ldb {} for {c:?}", c.ld_second);
        assert!(c.ldc >= c.m.max(1), "cuBLAS refuses ldc {} for {c:?}", c.ldc);
        // C (m, n), column-major with leading dimension ldc: C = alpha·op(X1)·op(X2) + beta·C,
        // where op(X)[i, l] = X[i + l·ld] (N) or X[l + i·ld] (T).
        let at = |ptr: u64, trans: bool, ld: i32, i: i32, l: i32| {
            let idx = if trans { l + i * ld } else { i + l * ld } as usize;
            // SAFETY: test buffers sized for these GEMMs; read-only.
            unsafe { *(ptr as *const f32).add(idx) }
        };
        for j in 0..c.n {
            for i in 0..c.m {
                let mut acc = 0.0f32;
                for l in 0..c.k {
                    acc += at(c.first, c.trans_first, c.ld_first, i, l) * at(c.second, c.trans_second, c.ld_second, l, j);
                }
                // SAFETY: as above; c is the output buffer.
                unsafe {
                    let out = (p.c as *mut f32).add((i + j * c.ldc) as usize);
                    *out = p.alpha * acc + p.beta * *out;
                }
            }
        }
    }
}

#[test]
fn the_cublas_argument_mapping_and_bias_path_compute_the_same_gemms() {
    let blas = KernelBackend::new(ReferenceBlas(hnca::backend::emu::EmuDevice));
    // Width-1 layers make k = 1 or n = 1 GEMMs, where a stride says nothing and cuBLAS's rules on
    // leading dimensions decide; and a batch of one.
    let _ = assert_gemms_match_the_cpu(&blas, "reference BLAS", &[(5, 37, 19), (3, 8, 16), (7, 1, 5), (7, 5, 1), (1, 4, 3), (6, 1, 1)]);
}
