//! The bandit's kernels, compiled as C++ for the CPU (kernels/emu), against the CPU backend:
//! each operation on ragged shapes (the convolutions of the nonlinear bandit among them),
//! sampled actions bit for bit, then whole training steps over pixels and over convolutions.

mod common;

use common::compare::assert_close_normwise;
use hnca::backend::cpu::Cpu;
use hnca::backend::emu::emu_backend;
use hnca::backend::{credit_tables_len, grad_variance_slots, ConvGeom, PerExample};
use hnca::backend::{ConvOps, CreditOps, DenseOps, MemoryOps, SoftmaxOps, StateOps};
use hnca::bandit::conv::conv_geoms;
use hnca::bandit::{AgentShape, BanditTrainer, ESTIMATORS};
use hnca::rng::RngKey;
use hnca::vae::estimator::EstimatorKind;

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
    for (flip, rho_gradient, what) in [(None, false, "reinforce"), (Some(&fc), false, "hnca"), (Some(&fc), true, "hnca through rho")] {
        let (mut gc, mut ge) = (vec![0.0; b * p], vec![0.0; b * p]);
        cpu.bandit_unit_grad(&mut gc, &unit_logits, &parent, flip, rho_gradient, &coef, b, p);
        emu.bandit_unit_grad(&mut ge, &unit_logits, &parent, flip, rho_gradient, &coef, b, p);
        assert_close_normwise(&format!("bandit_unit_grad {what}"), &ge, &gc, 1e-5);
    }
}

/// The convolutions, the ReLU's gradient and the per-example gradient variance on shapes that
/// are multiples of nothing (and one whose filter covers the whole image), and a batch whose
/// outputs span several 256-thread blocks.
#[test]
fn convolution_operations_match_the_cpu() {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let shapes = [
        (3, ConvGeom { height: 11, width: 9, c_in: 1, c_out: 5, k: 3 }),
        (2, ConvGeom { height: 6, width: 7, c_in: 3, c_out: 4, k: 2 }),
        (4, ConvGeom { height: 4, width: 4, c_in: 2, c_out: 1, k: 4 }),
    ];
    for (b, g) in shapes {
        let what = |op: &str| format!("{op} {g:?} batch {b}");
        let x = data(b * g.in_len(), 20, -1.0, 1.0);
        let w = data(g.weights(), 21, -1.0, 1.0);
        let bias = data(g.c_out, 22, -0.5, 0.5);
        let (mut oc, mut oe) = (vec![0.0; b * g.out_len()], vec![0.0; b * g.out_len()]);
        cpu.conv_relu_forward(&mut oc, &x, &w, &bias, b, g);
        emu.conv_relu_forward(&mut oe, &x, &w, &bias, b, g);
        assert_close_normwise(&what("conv_relu_forward"), &oe, &oc, 1e-6);
        assert!(oc.contains(&0.0) && oc.iter().any(|&v| v > 0.0), "{}: the ReLU both cuts and passes", what("conv_relu_forward"));

        let dout = data(b * g.out_len(), 23, -1.0, 1.0);
        let (mut dc, mut de) = (vec![0.0; b * g.in_len()], vec![0.0; b * g.in_len()]);
        cpu.conv_backward_input(&mut dc, &dout, &w, b, g);
        emu.conv_backward_input(&mut de, &dout, &w, b, g);
        assert_close_normwise(&what("conv_backward_input"), &de, &dc, 1e-6);

        let (mut gwc, mut gbc) = (vec![0.0; b * g.weights()], vec![0.0; b * g.c_out]);
        let (mut gwe, mut gbe) = (vec![0.0; b * g.weights()], vec![0.0; b * g.c_out]);
        cpu.conv_sample_grads(&mut gwc, &mut gbc, &x, &dout, b, g);
        emu.conv_sample_grads(&mut gwe, &mut gbe, &x, &dout, b, g);
        assert_close_normwise(&what("conv_sample_grads weights"), &gwe, &gwc, 1e-6);
        assert_close_normwise(&what("conv_sample_grads biases"), &gbe, &gbc, 1e-6);

        let (mut rc, mut re) = (dout.clone(), dout.clone());
        cpu.relu_backward(&mut rc, &oc, b * g.out_len());
        emu.relu_backward(&mut re, &oc, b * g.out_len());
        assert_eq!(rc, re, "{}", what("relu_backward"));

        let (dw, db) = (data(g.weights(), 24, -0.3, 0.3), data(g.c_out, 25, -0.3, 0.3));
        let slots = grad_variance_slots(b, g.weights(), g.c_out, PerExample::Whole);
        let (mut pc, mut pe) = (vec![f64::NAN; 4 * (slots + 2)], vec![f64::NAN; 4 * (slots + 2)]);
        cpu.grad_variance(&mut pc, 1, &gwc, &gbc, &dw, &db, b, g.weights(), g.c_out, PerExample::Whole);
        emu.grad_variance(&mut pe, 1, &gwc, &gbc, &dw, &db, b, g.weights(), g.c_out, PerExample::Whole);
        let total = |p: &[f64], i: usize| p[4..4 * (slots + 1)].chunks(4).map(|s| s[i]).sum::<f64>();
        for i in 0..4 {
            let (c, e) = (total(&pc, i), total(&pe, i));
            assert!((c - e).abs() <= 1e-5 * c.abs() && c > 0.0, "{}: sum {i}: {e} vs {c}", what("grad_variance (whole)"));
        }
        assert!(pc[..4].iter().chain(&pe[..4]).all(|v| v.is_nan()), "wrote before its first slot");
        assert!(pc[4 * (slots + 1)..].iter().chain(&pe[4 * (slots + 1)..]).all(|v| v.is_nan()), "wrote past its slots");
    }
}

/// Three whole steps of every estimator on both backends: identical actions and samples, every
/// step's gradients within 1e-5 normwise, and the parameters after three steps within `tol`
/// normwise (Adam's update is nearly the sign of the gradient, so it amplifies rounding wherever
/// a gradient nearly cancels, and a bias that starts at zero is made of such updates alone).
fn assert_whole_bandit_steps_match_the_cpu(shape: &AgentShape, b: usize, tol: f32) {
    let (cpu, emu) = (Cpu::new(), emu_backend());
    let x = bits(b * shape.pixels(), 10);
    let labels: Vec<f32> = data(b, 11, 0.0, 10.0).iter().map(|v| v.floor()).collect();
    // With convolutions, HNCA differentiated through ρ too (--rho-gradient).
    let through_rho = (!shape.conv.is_empty()).then_some((EstimatorKind::Hnca, true));
    for (est, rho_gradient) in ESTIMATORS.into_iter().map(|(e, _)| (e, false)).chain(through_rho) {
        let mut tc = BanditTrainer::new(&cpu, shape.clone(), est, b, 1e-3, 6);
        let mut te = BanditTrainer::new(&emu, shape.clone(), est, b, 1e-3, 6);
        tc.model.rho_gradient = rho_gradient;
        te.model.rho_gradient = rho_gradient;
        for step in 0..3 {
            tc.train_step(&x, &labels);
            te.train_step(&x, &labels);
            let (sc, se) = (tc.state.last_step(&cpu), te.state.last_step(&emu));
            for (i, (gc, ge)) in tc.grads.tensors().zip(te.grads.tensors()).enumerate() {
                assert_close_normwise(&format!("{} step {step} gradient tensor {i}", est.name()), ge, gc, 1e-5);
            }
            assert_eq!(cpu.download(&tc.model.ws.action), emu.download(&te.model.ws.action), "{}: step {step} actions", est.name());
            for l in 1..=shape.hidden() {
                assert_eq!(
                    cpu.download(&tc.model.ws.z[l]),
                    emu.download(&te.model.ws.z[l]),
                    "{}: step {step} samples of layer {l}",
                    est.name()
                );
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

/// The nonlinear bandit: two convolutions over a 12x10 image, Bernoulli layers above them.
#[test]
fn whole_conv_bandit_training_steps_match_the_cpu_for_every_estimator() {
    let shape = AgentShape::with_conv(conv_geoms(12, 10, 2, 3).unwrap(), &[9, 7], 10);
    assert_whole_bandit_steps_match_the_cpu(&shape, 6, 1e-5);
}

/// Widths and a batch that cross every launch constant (tests/common/mod.rs, WIDE_*). The
/// parameters' bound is Adam's amplification, not the kernels': with 1030 units of 7 rows, some
/// gradients are sums that cancel to rounding, and there an update is ±lr = 1e-3 whatever the
/// rounding (measured: 1.05e-3 of the largest parameter after three steps, every step's
/// gradients within 1e-5).
#[test]
fn whole_bandit_training_steps_across_the_launch_constants_match_the_cpu() {
    assert_whole_bandit_steps_match_the_cpu(
        &AgentShape::new(common::WIDE_INPUTS, &common::WIDE_BANDIT_LAYERS, 10),
        common::WIDE_BATCH,
        3e-3,
    );
}
