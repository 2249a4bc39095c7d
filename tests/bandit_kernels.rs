//! The bandit's kernels, compiled as C++ for the CPU (kernels/emu), against the CPU backend:
//! each operation on ragged shapes, sampled actions bit for bit, then whole training steps.

mod common;

use common::compare::assert_close_normwise;
use hnca::backend::cpu::Cpu;
use hnca::backend::emu::emu_backend;
use hnca::backend::{credit_tables_len, Backend};
use hnca::bandit::{AgentShape, BanditEstimator, BanditTrainer};
use hnca::rng::RngKey;

fn data(n: usize, tag: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngKey::new(98, 0, tag).fill_uniform(0, &mut v);
    v.iter_mut().for_each(|u| *u = lo + (hi - lo) * *u);
    v
}

fn bits(n: usize, tag: u32) -> Vec<f32> {
    data(n, tag, 0.0, 1.0).into_iter().map(|u| (u < 0.4) as u8 as f32).collect()
}

#[test]
fn bandit_operations_match_the_cpu_and_actions_are_bit_identical() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    // b above the 256-thread block; p not a multiple of anything.
    let (b, p, a) = (301, 23, 10);
    let x = data(b * p, 1, -2.0, 2.0);
    let (mut oc, mut oe) = (vec![0.0; b * p], vec![0.0; b * p]);
    cpu.affine(&mut oc, &x, 2.0, -1.0, b * p);
    emu.affine(&mut oe, &x, 2.0, -1.0, b * p);
    assert_eq!(oc, oe, "affine");

    let logits = data(b * a, 2, -4.0, 4.0);
    let labels: Vec<f32> = data(b, 3, 0.0, 10.0).iter().map(|v| v.floor()).collect();
    let key = RngKey::new(4, 17, 5);
    let (mut act_c, mut rew_c, mut act_e, mut rew_e) = (vec![0.0; b], vec![0.0; b], vec![0.0; b], vec![0.0; b]);
    cpu.softmax_act(&mut act_c, &mut rew_c, &logits, &labels, key, None, b, a);
    emu.softmax_act(&mut act_e, &mut rew_e, &logits, &labels, key, None, b, a);
    assert_eq!(act_c, act_e, "sampled actions");
    assert_eq!(rew_c, rew_e, "rewards");
    let distinct: std::collections::BTreeSet<u32> = act_c.iter().map(|&v| v as u32).collect();
    assert!(distinct.len() == a && rew_c.contains(&1.0), "the draws cover every action");

    let coef = data(b, 6, -1.0, 1.0);
    let (mut dc, mut de) = (vec![0.0; b * a], vec![0.0; b * a]);
    cpu.softmax_score(&mut dc, &logits, &act_c, &coef, b, a);
    emu.softmax_score(&mut de, &logits, &act_c, &coef, b, a);
    assert_close_normwise("softmax_score", &de, &dc, 1e-6);

    let parent = bits(b * p, 7);
    // Weights in the tables' range (the product form) and beyond it (the per-edge form).
    let mut fc = vec![0.0; b * p];
    for span in [100.0f32, 1.0] {
        let w2 = data(p * a, 8, -span, span);
        let (mut tc, mut te) = (vec![0.0; credit_tables_len(p, a)], vec![0.0; credit_tables_len(p, a)]);
        let mut fe = vec![0.0; b * p];
        cpu.softmax_credit(&mut fc, &parent, &w2, &mut tc, &logits, &act_c, b, p, a);
        emu.softmax_credit(&mut fe, &parent, &w2, &mut te, &logits, &act_c, b, p, a);
        assert_eq!(fe, fc, "softmax_credit, weights to {span}: the kernel's bits are the CPU's");
        // Against log softmax in f64.
        for r in 0..b {
            let z: Vec<f64> = logits[r * a..(r + 1) * a].iter().map(|&v| v as f64).collect();
            let log_softmax = |z: &[f64], j: usize| {
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                z[j] - m - z.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
            };
            let act = act_c[r] as usize;
            for i in 0..p {
                let d = 1.0 - 2.0 * parent[r * p + i] as f64;
                let moved: Vec<f64> = (0..a).map(|j| z[j] + d * w2[i * a + j] as f64).collect();
                let want = log_softmax(&moved, act) - log_softmax(&z, act);
                let got = fc[r * p + i] as f64;
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "softmax_credit ({r}, {i}), weights to {span}: {got} vs {want}");
            }
        }
    }

    let unit_logits = data(b * p, 9, -6.0, 6.0);
    for flip in [None, Some(&fc)] {
        let (mut gc, mut ge) = (vec![0.0; b * p], vec![0.0; b * p]);
        cpu.bandit_unit_grad(&mut gc, &unit_logits, &parent, flip, &coef, b, p);
        emu.bandit_unit_grad(&mut ge, &unit_logits, &parent, flip, &coef, b, p);
        assert_close_normwise(if flip.is_some() { "bandit_unit_grad hnca" } else { "bandit_unit_grad reinforce" }, &ge, &gc, 1e-5);
    }
}

/// Three whole steps of every estimator on both backends: identical actions and samples, every
/// step's gradients within 1e-5 normwise, and the parameters after three steps within `tol`
/// normwise (Adam's update is nearly the sign of the gradient, so it amplifies rounding wherever
/// a gradient nearly cancels, and a bias that starts at zero is made of such updates alone).
fn assert_whole_bandit_steps_match_the_cpu(shape: &AgentShape, b: usize, tol: f32) {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let x = bits(b * shape.width(0), 10);
    let labels: Vec<f32> = data(b, 11, 0.0, 10.0).iter().map(|v| v.floor()).collect();
    for est in BanditEstimator::ALL {
        let mut tc = BanditTrainer::new(&cpu, shape.clone(), est, b, 1e-3, 6);
        let mut te = BanditTrainer::new(&emu, shape.clone(), est, b, 1e-3, 6);
        for step in 0..3 {
            tc.train_step(&x, &labels);
            te.train_step(&x, &labels);
            let (sc, se) = (tc.state.last_step(&cpu), te.state.last_step(&emu));
            for (i, (gc, ge)) in tc.grads.tensors().zip(te.grads.tensors()).enumerate() {
                assert_close_normwise(&format!("{} step {step} gradient tensor {i}", est.name()), ge, gc, 1e-5);
            }
            assert_eq!(cpu.download(&tc.ws.action), emu.download(&te.ws.action), "{}: step {step} actions", est.name());
            for l in 1..=shape.hidden() {
                assert_eq!(cpu.download(&tc.ws.z[l]), emu.download(&te.ws.z[l]), "{}: step {step} samples of layer {l}", est.name());
            }
            assert!((sc.0 - se.0).abs() < 1e-6, "{}: mean reward", est.name());
            for (l, (vc, ve)) in sc.1.iter().zip(&se.1).enumerate() {
                let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
                assert!(
                    rel(vc.0, ve.0) < 1e-4 && rel(vc.1, ve.1) < 1e-4,
                    "{}: layer {} gradient variance {vc:?} vs {ve:?}",
                    est.name(),
                    l + 1
                );
            }
        }
        for (i, (pc, pe)) in tc.host_params().tensors().zip(te.host_params().tensors()).enumerate() {
            assert_close_normwise(&format!("{} parameters, tensor {i}", est.name()), pe, pc, tol);
        }
        assert!((tc.baseline() - te.baseline()).abs() <= 1e-6, "{}: baselines", est.name());
    }
}

#[test]
fn whole_bandit_training_steps_match_the_cpu_for_every_estimator() {
    assert_whole_bandit_steps_match_the_cpu(&AgentShape::new(30, &[13, 9, 7], 10), 40, 1e-5);
}

/// Widths and a batch that cross every launch constant (tests/common/mod.rs, WIDE_*). The
/// parameters' bound is Adam's amplification, not the kernels': with 1030 units of 7 rows, some
/// gradients are sums that cancel to rounding, and there an update is ±lr = 1e-3 whatever the
/// rounding (measured: 1.05e-3 of the largest parameter after three steps, every step's
/// gradients within 1e-5).
#[test]
fn whole_bandit_training_steps_across_the_launch_constants_match_the_cpu() {
    assert_whole_bandit_steps_match_the_cpu(&AgentShape::new(common::WIDE_INPUTS, &common::WIDE_BANDIT_LAYERS, 10), common::WIDE_BATCH, 3e-3);
}
