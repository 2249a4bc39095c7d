//! The nonlinear bandit's gradients (`--features conv`), checked in f64:
//! - the convolution layers' backward pass (per-example weight and bias gradients, the
//!   gradient reaching the input through a ReLU and a second layer) against central
//!   differences of an f64 forward pass, on the CPU and on the emulated kernels;
//! - exact enumeration (docs/hnca.md §6) on a tiny instance: a 1-channel 4x4 image, one 2x2
//!   convolution of 2 channels and a ReLU, a linear layer to 3 centred Bernoulli units, a
//!   softmax over 2 actions, a reward table. Every (units, action) configuration is enumerated:
//!   HNCA and REINFORCE, with and without a constant baseline, are unbiased for every parameter
//!   (the convolution's included) to 1e-8; `--rho-gradient` (differentiating through ρ, as the
//!   reference code did) is not, and its bias is reported. The reference estimates are central
//!   differences of each estimator's surrogate with P_0, P_1 held fixed (or, for the ablation,
//!   of the reference code's loss p·(ρ_1 - ρ_0)), independent of the production code, which
//!   must agree with them configuration by configuration.

mod common;

use common::compare::assert_close_normwise;
use hnca::backend::cpu::Cpu;
use hnca::backend::emu::emu_backend;
use hnca::backend::{Backend, ConvGeom};
use hnca::backend::{DenseOps, MemoryOps};
use hnca::bandit::conv::{self, Conv};
use hnca::bandit::{gradients, AgentParams, AgentShape, BanditWorkspace};
use hnca::nn::Dense;
use hnca::rng::RngKey;
use hnca::vae::estimator::EstimatorKind;

fn data(n: usize, tag: u32, lo: f64, hi: f64) -> Vec<f64> {
    let key = RngKey::new(97, 0, tag);
    (0..n).map(|i| lo + (hi - lo) * key.uniform(i as u32) as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// A convolution's output before its ReLU, in f64: out (oh, ow, c_out) for one example.
fn conv_f64(x: &[f64], w: &[f64], bias: &[f64], g: ConvGeom) -> Vec<f64> {
    let (oh, ow) = (g.out_height(), g.out_width());
    let mut out = vec![0.0; g.out_len()];
    for oy in 0..oh {
        for ox in 0..ow {
            for o in 0..g.c_out {
                let mut s = bias[o];
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        for c in 0..g.c_in {
                            s += x[((oy + ky) * g.width + ox + kx) * g.c_in + c] * w[((ky * g.k + kx) * g.c_in + c) * g.c_out + o];
                        }
                    }
                }
                out[(oy * ow + ox) * g.c_out + o] = s;
            }
        }
    }
    out
}

fn relu(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|a| a.max(0.0)).collect()
}

/// ∂f/∂v[i] by Richardson-extrapolated central differences with steps h and h/2, for every i.
fn central_differences_at(h: f64, v: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..v.len())
        .map(|i| {
            let diff = |h: f64| {
                let (mut plus, mut minus) = (v.to_vec(), v.to_vec());
                plus[i] += h;
                minus[i] -= h;
                (f(&plus) - f(&minus)) / (2.0 * h)
            };
            (4.0 * diff(h / 2.0) - diff(h)) / 3.0
        })
        .collect()
}

fn central_differences(v: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    central_differences_at(1e-3, v, f)
}

/// The backward pass's differences step: small enough that no step moves a pre-activation
/// across the ReLU's kink (checked: none is within 50 steps of it), large against f64 rounding.
const STEP: f64 = 2e-5;

/// Two convolutions (a 7x6 image of 2 channels → 3 channels by 3x3 → 4 channels by 2x2), each
/// with its ReLU, and L_r = Σ c·(second layer's output) for each example r of a batch of 2: the
/// backend's per-example gradients of both layers and its gradient of the input, against
/// central differences of L_r in f64.
fn assert_conv_backward_matches_central_differences<B: Backend<Buf = Vec<f32>>>(be: &B, what: &str) {
    let g1 = ConvGeom { height: 7, width: 6, c_in: 2, c_out: 3, k: 3 };
    let g2 = ConvGeom { height: 5, width: 4, c_in: 3, c_out: 4, k: 2 };
    let b = 2;
    let x = data(b * g1.in_len(), 1, -1.0, 1.0);
    let (w1, b1) = (data(g1.weights(), 2, -0.6, 0.6), data(g1.c_out, 3, -0.3, 0.3));
    let (w2, b2) = (data(g2.weights(), 4, -0.6, 0.6), data(g2.c_out, 5, -0.3, 0.3));
    let c = data(b * g2.out_len(), 6, -1.0, 1.0);
    // The loss of example r as a function of (x_r, w1, b1, w2, b2), all in f64.
    let loss = |r: usize, x: &[f64], w1: &[f64], b1: &[f64], w2: &[f64], b2: &[f64]| -> f64 {
        let pre1 = conv_f64(x, w1, b1, g1);
        let pre2 = conv_f64(&relu(pre1.clone()), w2, b2, g2);
        relu(pre2).iter().zip(&c[r * g2.out_len()..]).map(|(a, c)| a * c).sum()
    };
    // No pre-activation within reach of the differences' steps: the ReLUs are smooth there.
    for r in 0..b {
        let xr = &x[r * g1.in_len()..(r + 1) * g1.in_len()];
        let pre1 = conv_f64(xr, &w1, &b1, g1);
        let pre2 = conv_f64(&relu(pre1.clone()), &w2, &b2, g2);
        let nearest = pre1.iter().chain(&pre2).fold(f64::INFINITY, |m, a| m.min(a.abs()));
        assert!(nearest > 50.0 * STEP, "a degenerate test case: a pre-activation at {nearest}");
        assert!(pre1.iter().chain(&pre2).any(|&a| a < 0.0), "the ReLUs cut nothing");
    }

    // The backend: forward, then backward from dL/d(out2) = c.
    let (x32, w1_32, b1_32, w2_32, b2_32) = (f32s(&x), f32s(&w1), f32s(&b1), f32s(&w2), f32s(&b2));
    let (mut a1, mut a2) = (be.zeros(b * g1.out_len()), be.zeros(b * g2.out_len()));
    be.conv_relu_forward(&mut a1, &x32, &w1_32, &b1_32, b, g1);
    be.conv_relu_forward(&mut a2, &a1, &w2_32, &b2_32, b, g2);
    let mut d2 = f32s(&c);
    be.relu_backward(&mut d2, &a2, b * g2.out_len());
    let (mut gw2, mut gb2) = (be.zeros(b * g2.weights()), be.zeros(b * g2.c_out));
    be.conv_sample_grads(&mut gw2, &mut gb2, &a1, &d2, b, g2);
    let mut d1 = be.zeros(b * g1.out_len());
    be.conv_backward_input(&mut d1, &d2, &w2_32, b, g2);
    be.relu_backward(&mut d1, &a1, b * g1.out_len());
    let (mut gw1, mut gb1) = (be.zeros(b * g1.weights()), be.zeros(b * g1.c_out));
    be.conv_sample_grads(&mut gw1, &mut gb1, &x32, &d1, b, g1);
    let mut dx = be.zeros(b * g1.in_len());
    be.conv_backward_input(&mut dx, &d1, &w1_32, b, g1);

    for r in 0..b {
        let xr = x[r * g1.in_len()..(r + 1) * g1.in_len()].to_vec();
        let row = |v: &[f32], n: usize| v[r * n..(r + 1) * n].to_vec();
        let checks: [(&str, Vec<f64>, Vec<f32>); 5] = [
            ("layer 1 weights", central_differences_at(STEP, &w1, |v| loss(r, &xr, v, &b1, &w2, &b2)), row(&gw1, g1.weights())),
            ("layer 1 biases", central_differences_at(STEP, &b1, |v| loss(r, &xr, &w1, v, &w2, &b2)), row(&gb1, g1.c_out)),
            ("layer 2 weights", central_differences_at(STEP, &w2, |v| loss(r, &xr, &w1, &b1, v, &b2)), row(&gw2, g2.weights())),
            ("layer 2 biases", central_differences_at(STEP, &b2, |v| loss(r, &xr, &w1, &b1, &w2, v)), row(&gb2, g2.c_out)),
            ("the input", central_differences_at(STEP, &xr, |v| loss(r, v, &w1, &b1, &w2, &b2)), row(&dx, g1.in_len())),
        ];
        for (name, want, got) in checks {
            assert!(want.iter().any(|v| v.abs() > 1e-3), "{what}: example {r}, {name}: a degenerate gradient");
            assert_close_normwise(&format!("{what}: example {r}, gradient of {name}"), &got, &f32s(&want), 2e-6);
        }
    }
}

#[test]
fn the_convolutions_backward_pass_matches_central_differences_in_f64() {
    assert_conv_backward_matches_central_differences(&Cpu::new(), "cpu");
    assert_conv_backward_matches_central_differences(&emu_backend(), "emulated kernels");
}

// ---- the tiny nonlinear bandit, enumerated ---------------------------------------------------

const GEOM: ConvGeom = ConvGeom { height: 4, width: 4, c_in: 1, c_out: 2, k: 2 };
const FEATURES: usize = 18;
const UNITS: usize = 3;
const ACTIONS: usize = 2;
/// Offsets of each tensor in the flat parameter vector, in production order
/// ([`AgentParams::tensors`]): conv weights (2, 2, 1, 2), conv biases, linear weights (18, 3),
/// linear biases, softmax weights (3, 2), softmax biases.
const CW: usize = 0;
const CB: usize = 8;
const LW: usize = 10;
const LB: usize = LW + FEATURES * UNITS;
const OW: usize = LB + UNITS;
const OB: usize = OW + UNITS * ACTIONS;
const PARAMS: usize = OB + ACTIONS;

fn features(t: &[f64], x: &[f64]) -> Vec<f64> {
    relu(conv_f64(x, &t[CW..CB], &t[CB..LW], GEOM))
}

fn unit_logits(t: &[f64], f: &[f64]) -> Vec<f64> {
    (0..UNITS).map(|k| t[LB + k] + (0..FEATURES).map(|i| f[i] * t[LW + i * UNITS + k]).sum::<f64>()).collect()
}

fn action_logits(t: &[f64], u: &[f64]) -> Vec<f64> {
    (0..ACTIONS).map(|j| t[OB + j] + (0..UNITS).map(|k| u[k] * t[OW + k * ACTIONS + j]).sum::<f64>()).collect()
}

fn sigmoid(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn bits(code: usize, n: usize) -> Vec<f64> {
    (0..n).map(|i| ((code >> i) & 1) as f64).collect()
}

fn centred(z: &[f64]) -> Vec<f64> {
    z.iter().map(|&v| 2.0 * v - 1.0).collect()
}

/// P(z | x) for units z under logits a.
fn bernoulli(z: &[f64], a: &[f64]) -> f64 {
    z.iter().zip(a).map(|(&z, &a)| if z > 0.5 { sigmoid(a) } else { 1.0 - sigmoid(a) }).product()
}

/// Every (units, action) configuration of image x with its probability.
fn configs(t: &[f64], x: &[f64]) -> Vec<(Vec<f64>, usize, f64)> {
    let a = unit_logits(t, &features(t, x));
    let mut out = Vec::new();
    for code in 0..1 << UNITS {
        let z = bits(code, UNITS);
        let pi = softmax(&action_logits(t, &centred(&z)));
        for (act, &p_a) in pi.iter().enumerate() {
            out.push((z.clone(), act, bernoulli(&z, &a) * p_a));
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Hnca,
    Reinforce,
    /// HNCA differentiated through ρ (the reference code's loss).
    RhoGradient,
}

/// The estimate of `method` for one configuration: the gradient, by central differences in f64,
/// of its surrogate with the samples and P_0, P_1 (from the softmax at `t`) held fixed.
fn reference_estimate(t: &[f64], x: &[f64], z: &[f64], act: usize, coef: f64, method: Method) -> Vec<f64> {
    let u = centred(z);
    // P_v of unit k: π(act | u with unit k set to v), at the current parameters.
    let p_given = |k: usize, v: f64| {
        let mut u = u.clone();
        u[k] = 2.0 * v - 1.0;
        softmax(&action_logits(t, &u))[act]
    };
    let held: Vec<(f64, f64)> = (0..UNITS).map(|k| (p_given(k, 0.0), p_given(k, 1.0))).collect();
    let surrogate = |s: &[f64]| -> f64 {
        let a = unit_logits(s, &features(s, x));
        let units: f64 = (0..UNITS)
            .map(|k| {
                let p = sigmoid(a[k]);
                let (p0, p1) = held[k];
                match method {
                    Method::Hnca => (p * p1 + (1.0 - p) * p0).ln(),
                    Method::Reinforce => (if z[k] > 0.5 { p } else { 1.0 - p }).ln(),
                    Method::RhoGradient => {
                        let e = p * p1 + (1.0 - p) * p0;
                        p * (p1 / e - p0 / e)
                    }
                }
            })
            .sum();
        coef * (units + softmax(&action_logits(s, &u))[act].ln())
    };
    central_differences(t, surrogate)
}

/// The production step's estimate (f32, CPU backend, batch of 1) for one configuration.
fn production_estimate(t: &[f64], x: &[f64], z: &[f64], act: usize, r: f64, baseline: f64, method: Method) -> Vec<f64> {
    let be = Cpu::new();
    let shape = AgentShape::with_conv(vec![GEOM], &[UNITS], ACTIONS);
    let dense = |w: usize, b: usize, n_in: usize, n_out: usize| Dense { w: f32s(&t[w..b]), bias: f32s(&t[b..b + n_out]), n_in, n_out };
    let conv = Conv { w: f32s(&t[CW..CB]), bias: f32s(&t[CB..LW]), geom: GEOM };
    let params = AgentParams { layers: vec![dense(LW, LB, FEATURES, UNITS), dense(OW, OB, UNITS, ACTIONS)], conv: vec![conv] };
    let mut grads = params.map(|v| vec![0.0f32; v.len()]);
    let mut ws = BanditWorkspace::new(&be, &shape, 1);
    *ws.input_mut() = f32s(x);
    conv::forward(&be, &params.conv, ws.conv.as_mut().unwrap(), &mut ws.u[0], 1);
    be.matmul_forward(&mut ws.logits[1], &ws.u[0], &params.layers[0].w, &params.layers[0].bias, 1, FEATURES, UNITS);
    ws.z[1] = f32s(z);
    ws.u[1] = f32s(&centred(z));
    be.matmul_forward(&mut ws.logits[2], &ws.u[1], &params.layers[1].w, &params.layers[1].bias, 1, UNITS, ACTIONS);
    ws.action = vec![act as f32];
    ws.reward = vec![r as f32];
    let est = if method == Method::Reinforce { EstimatorKind::Reinforce } else { EstimatorKind::Hnca };
    let baselines = be.upload(&[baseline as f32]);
    gradients(&be, &params, &mut ws, &shape, est, method == Method::RhoGradient, &baselines, &mut grads);
    grads.tensors().flatten().map(|&v| v as f64).collect()
}

/// Exact moments of one method on one image: (mean, variance) of its estimate per parameter,
/// and the largest difference of the production estimate from the reference, relative to the
/// configuration's scale.
fn moments(t: &[f64], x: &[f64], reward: &[f64], baseline: f64, method: Method) -> (Vec<f64>, Vec<f64>, f64) {
    let (mut mean, mut sq, mut worst) = (vec![0.0; PARAMS], vec![0.0; PARAMS], 0.0f64);
    for (z, act, prob) in configs(t, x) {
        let r = reward[act];
        let g = reference_estimate(t, x, &z, act, r - baseline, method);
        let g32 = production_estimate(t, x, &z, act, r, baseline, method);
        let scale = g.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for i in 0..PARAMS {
            mean[i] += prob * g[i];
            sq[i] += prob * g[i] * g[i];
            worst = worst.max((g32[i] - g[i]).abs() / scale);
        }
    }
    let var = (0..PARAMS).map(|i| sq[i] - mean[i] * mean[i]).collect();
    (mean, var, worst)
}

#[test]
fn hnca_backpropagated_into_convolutions_is_unbiased_and_the_gradient_through_rho_is_not() {
    let t = data(PARAMS, 10, -1.2, 1.2);
    let images: Vec<Vec<f64>> =
        [0b1010_0110_1001_0111usize, 0b0000_0110_0110_0000, 0b1111_1001_1001_1111].iter().map(|&c| bits(c, 16)).collect();
    let key = RngKey::new(7, 0, 3);
    let (mut worst_bias, mut worst_f32, mut rho_bias) = (0.0f64, 0.0f64, 0.0f64);
    let (mut least_ratio, mut most_ratio) = (f64::INFINITY, 0.0f64);
    for (n, x) in images.iter().enumerate() {
        let pre = conv_f64(x, &t[CW..CB], &t[CB..LW], GEOM);
        let nearest = pre.iter().fold(f64::INFINITY, |m, a| m.min(a.abs()));
        assert!(nearest > 0.01, "image {n}: a pre-activation at {nearest}, within reach of the differences");
        assert!(pre.iter().any(|&a| a < 0.0) && pre.iter().any(|&a| a > 0.0), "image {n}: the ReLU cuts nothing or everything");
        let reward: Vec<f64> = (0..ACTIONS).map(|a| key.uniform((n * ACTIONS + a) as u32) as f64).collect();
        let expected = |s: &[f64]| configs(s, x).iter().map(|(_, act, p)| p * reward[*act]).sum::<f64>();
        let exact = central_differences(&t, expected);
        let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3 && exact[CW..LW].iter().any(|v| v.abs() > 1e-4 * scale), "image {n}: a degenerate test case");
        for baseline in [0.0, 0.37] {
            let (hnca, var_hnca, w1) = moments(&t, x, &reward, baseline, Method::Hnca);
            let (reinforce, var_reinforce, w2) = moments(&t, x, &reward, baseline, Method::Reinforce);
            let (through_rho, _, w3) = moments(&t, x, &reward, baseline, Method::RhoGradient);
            worst_f32 = worst_f32.max(w1).max(w2).max(w3);
            for (name, mean) in [("hnca", &hnca), ("reinforce", &reinforce)] {
                for i in 0..PARAMS {
                    let bias = (mean[i] - exact[i]).abs() / scale;
                    worst_bias = worst_bias.max(bias);
                    assert!(bias < 1e-8, "{name} image {n} baseline {baseline} parameter {i}: E = {} vs exact {}", mean[i], exact[i]);
                }
            }
            // The ablation's bias, normwise: |E[estimate] - gradient| / |gradient|.
            let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
            let bias = norm(&mut (0..PARAMS).map(|i| through_rho[i] - exact[i])) / norm(&mut exact.iter().copied());
            assert!(bias > 1e-2, "image {n} baseline {baseline}: the gradient through rho should be biased, is within {bias:.1e}");
            eprintln!("image {n} baseline {baseline}: --rho-gradient's expectation is off the gradient by {bias:.3} of its norm");
            rho_bias = rho_bias.max(bias);
            // Each linear weight and bias feeds one unit: there HNCA is REINFORCE Rao-Blackwellised.
            for i in LW..OW {
                assert!(
                    var_hnca[i] <= var_reinforce[i] * (1.0 + 1e-6) + 1e-14,
                    "image {n} parameter {i}: Var HNCA {} > REINFORCE {}",
                    var_hnca[i],
                    var_reinforce[i]
                );
            }
            for i in CW..LW {
                if var_hnca[i] > 1e-14 {
                    least_ratio = least_ratio.min(var_reinforce[i] / var_hnca[i]);
                    most_ratio = most_ratio.max(var_reinforce[i] / var_hnca[i]);
                }
            }
        }
    }
    eprintln!(
        "worst bias of hnca/reinforce {worst_bias:.1e} of the gradient scale; --rho-gradient's bias up to {rho_bias:.3} of its norm; \
         production f32 vs f64 {worst_f32:.1e}; convolution parameters' Var[REINFORCE]/Var[HNCA] from {least_ratio:.2} to {most_ratio:.2}"
    );
    assert!(worst_f32 < 1e-5, "production f32 vs the f64 reference: {worst_f32:.1e}");
}
