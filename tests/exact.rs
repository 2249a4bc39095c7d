//! Exact-enumeration tests (docs/hnca.md §6) on a tiny VAE: x of 3 bits, latents 2-2-2.
//! 1. The f64 reference of every estimator is unbiased: its exact expectation equals the exact
//!    ELBO gradient for every encoder parameter and every input, to ~1e-9.
//! 2. HNCA's exact variance is at most REINFORCE's, parameter by parameter.
//! 3. The production f32 path gives the same per-sample estimates as the f64 reference for the
//!    same samples, and exact decoder and prior gradients (checked by central differences).

mod common;

use common::exact::{Chain, Net};
use hnca::backend::cpu::Cpu;
use hnca::backend::MemoryOps;
use hnca::rng::{stream, RngKey};
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::{Params, Shape};
use hnca::vae::step::{compute_gradients, Draw, Workspace};

fn tiny_shape() -> Shape {
    Shape::new(3, &[2, 2, 2])
}

/// A tiny network with every weight, bias and prior logit drawn from U(-1.5, 1.5), so that no
/// symmetry or zero makes a wrong formula look right.
fn tiny_params(seed: u64) -> Params<Vec<f32>> {
    let mut p = Params::init(&tiny_shape(), seed);
    for (t, tensor) in p.tensors_mut().into_iter().enumerate() {
        RngKey::new(seed, 1, stream::init(100 + t as u32)).fill_uniform(0, tensor);
        tensor.iter_mut().for_each(|u| *u = 3.0 * *u - 1.5);
    }
    p
}

fn all_inputs() -> Vec<Vec<f64>> {
    (0..8).map(|c| (0..3).map(|j| ((c >> j) & 1) as f64).collect()).collect()
}

fn hnca(all_child: bool, full_reward: bool, baseline: bool) -> Estimator {
    let kind = if baseline { EstimatorKind::Hnca } else { EstimatorKind::HncaNb };
    Estimator { all_child, full_reward, ..Estimator::new(kind) }
}

/// Every estimator configuration the exact tests cover, with the constant baselines it uses.
fn configurations() -> Vec<(Estimator, Vec<f64>)> {
    let constant = vec![0.3, -1.7, 2.5];
    let zero = vec![0.0; 3];
    let mut v = Vec::new();
    for all_child in [false, true] {
        for full_reward in [false, true] {
            v.push((hnca(all_child, full_reward, false), zero.clone()));
            v.push((hnca(all_child, full_reward, true), constant.clone()));
        }
    }
    v.push((Estimator::new(EstimatorKind::ReinforceNb), zero.clone()));
    v.push((Estimator::new(EstimatorKind::Reinforce), constant.clone()));
    v.push((Estimator::new(EstimatorKind::Loo), zero.clone()));
    v.push((Estimator::new(EstimatorKind::Disarm), zero));
    v
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

#[test]
fn ground_truth_gradient_is_stable_under_the_step_size() {
    // Richardson-extrapolated central differences against a plain central difference with a
    // much smaller step: both approximate the same derivative.
    let net = Net::from_params(&tiny_shape(), &tiny_params(11));
    let x = [1.0, 0.0, 1.0];
    let g = net.exact_encoder_grad(&x);
    assert!(g.iter().any(|v| v.abs() > 1e-3), "degenerate test network: {g:?}");
    let eps = 1e-6;
    let mut n2 = net.clone();
    n2.enc_b[0][1] += eps;
    let mut n3 = net.clone();
    n3.enc_b[0][1] -= eps;
    let plain = (n2.elbo_exact(&x) - n3.elbo_exact(&x)) / (2.0 * eps);
    let idx = net.enc_layer_offset(1) + 3 * 2 + 1;
    assert!((plain - g[idx]).abs() < 1e-8, "{plain} vs {}", g[idx]);
}

#[test]
fn every_estimator_is_unbiased_by_exact_enumeration() {
    let net = Net::from_params(&tiny_shape(), &tiny_params(11));
    let mut worst = 0.0f64;
    for x in all_inputs() {
        let exact = net.exact_encoder_grad(&x);
        for (est, baselines) in configurations() {
            let (mean, _) = net.estimator_moments(&est, &x, &baselines);
            for (i, (&m, &e)) in mean.iter().zip(&exact).enumerate() {
                worst = worst.max((m - e).abs() / e.abs().max(1.0));
                assert!(close(m, e, 1e-9), "{} biased at x={x:?} parameter {i}: E[estimate]={m}, gradient={e}", est.label());
            }
        }
    }
    eprintln!("largest relative deviation of any estimator's expectation from the exact gradient: {worst:.2e}");
}

#[test]
fn hnca_variance_is_at_most_reinforce_variance_for_every_parameter() {
    let net = Net::from_params(&tiny_shape(), &tiny_params(11));
    let mut smallest_ratio = f64::INFINITY;
    for x in all_inputs() {
        // Without baselines, and with each method's baseline at the value its running average
        // tracks (the exact mean of its target), both as constants.
        let nb = [(hnca(false, false, false), Estimator::new(EstimatorKind::ReinforceNb), vec![0.0; 3], vec![0.0; 3])];
        for (h, r, bh, br) in nb.into_iter().chain(std::iter::once(with_tracked_baselines(&net, &x))) {
            let (_, var_h) = net.estimator_moments(&h, &x, &bh);
            let (_, var_r) = net.estimator_moments(&r, &x, &br);
            for (i, (&vh, &vr)) in var_h.iter().zip(&var_r).enumerate() {
                assert!(vh <= vr * (1.0 + 1e-9) + 1e-15, "x={x:?} parameter {i}: Var[{}]={vh} > Var[{}]={vr}", h.label(), r.label());
                if vh > 1e-12 {
                    smallest_ratio = smallest_ratio.min(vr / vh);
                }
            }
        }
    }
    eprintln!("smallest Var[REINFORCE]/Var[HNCA] over all parameters and inputs: {smallest_ratio:.2}");
    assert!(smallest_ratio > 1.0);
}

/// HNCA and REINFORCE with baselines fixed at the exact means of what their running averages
/// track (HNCA: R_l + [l<L] log p(z_l|z_{l+1}); REINFORCE: F_l).
fn with_tracked_baselines(net: &Net, x: &[f64]) -> (Estimator, Estimator, Vec<f64>, Vec<f64>) {
    let chains = net.chains_above(&vec![x.to_vec()], 0);
    let depth = net.depth();
    let mean = |f: &dyn Fn(&Chain) -> f64| chains.iter().map(|(z, pr)| pr * f(z)).sum::<f64>();
    let bh = (1..=depth).map(|l| mean(&|z| net.hnca_reward(l, z, false) + if l < depth { net.log_p(l + 1, z) } else { 0.0 })).collect();
    let br = (1..=depth).map(|l| mean(&|z| net.f_reward(l, z))).collect();
    (hnca(false, false, true), Estimator::new(EstimatorKind::Reinforce), bh, br)
}

/// Runs one production step (f32, CPU backend) on a batch of all eight inputs, four times over.
fn production_step(est: &Estimator, params: &Params<Vec<f32>>, baselines: &[f32]) -> (Workspace<Cpu>, Params<Vec<f32>>) {
    let be = Cpu::new();
    let shape = tiny_shape();
    let b = 32;
    let mut ws = Workspace::new(&be, &shape, est, b);
    let x: Vec<f32> = (0..b).flat_map(|r| (0..3).map(move |j| (((r % 8) >> j) & 1) as f32)).collect();
    be.write(&mut ws.main.z[0], &x);
    let mut grads = params.map(|t| vec![0.0f32; t.len()]);
    compute_gradients(&be, params, &mut ws, est, &baselines.to_vec(), Draw::at(5, 3, false), &mut grads);
    (ws, grads)
}

fn row(buf: &[f32], r: usize, n: usize) -> Vec<f64> {
    buf[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect()
}

#[test]
fn production_f32_estimates_match_the_f64_reference_sample_by_sample() {
    let shape = tiny_shape();
    let params = tiny_params(11);
    let net = Net::from_params(&shape, &params);
    let depth = shape.depth();
    for (est, baselines) in configurations() {
        let b32: Vec<f32> = baselines.iter().map(|&v| v as f32).collect();
        let (ws, grads) = production_step(&est, &params, &b32);
        let mut seen = [false; 2];
        let mut worst = 0.0f64;
        for l in 1..=depth {
            let n = shape.width(l);
            let mut mean_ref = vec![0.0f64; shape.width(l - 1) * n + n];
            for r in 0..ws.b {
                let main: Chain = (0..=depth).map(|m| row(&ws.main.z[m], r, shape.width(m))).collect();
                let alt: Chain = match est.plan().draw.alternative() {
                    Some(_) => (0..=depth).map(|m| if m < l { main[m].clone() } else { row(&ws.alt[l].z[m], r, shape.width(m)) }).collect(),
                    None => main.clone(),
                };
                main[l].iter().for_each(|&v| seen[(v > 0.5) as usize] = true);
                let want = net.unit_grads(&est, l, &main, &alt, baselines[l - 1]);
                let got = row(&ws.unit_grad[l], r, n);
                for k in 0..n {
                    worst = worst.max((got[k] - want[k]).abs() / want[k].abs().max(1.0));
                    assert!(close(got[k], want[k], 1e-5), "{} layer {l} row {r} unit {k}: f32 {} vs f64 {}", est.label(), got[k], want[k]);
                }
                for (acc, v) in mean_ref.iter_mut().zip(net.layer_params_from_units(l, &main, &want)) {
                    *acc += v / ws.b as f64;
                }
            }
            let g = &grads.enc[l - 1];
            let got: Vec<f64> = g.w.iter().chain(&g.bias).map(|&v| v as f64).collect();
            for (i, (&a, &e)) in got.iter().zip(&mean_ref).enumerate() {
                assert!(close(a, e, 1e-5), "{} layer {l} batch-mean parameter {i}: {a} vs {e}", est.label());
            }
        }
        assert!(seen[0] && seen[1], "{}: the batch's samples are all equal; the test would be vacuous", est.label());
        eprintln!("{}: largest relative f32/f64 difference per sample {worst:.1e}", est.label());
    }
}

#[test]
fn alternative_chains_are_fresh_draws() {
    // LOO's second sample and DisARM's twin differ from the main sample somewhere, and DisARM's
    // pair has the antithetic structure: where p ≥ ½ no unit is 0 in both, where p < ½ none is 1 in both.
    let params = tiny_params(11);
    let shape = tiny_shape();
    for kind in [EstimatorKind::Loo, EstimatorKind::Disarm] {
        let est = Estimator::new(kind);
        let (ws, _) = production_step(&est, &params, &[0.0; 3]);
        for l in 1..=shape.depth() {
            assert_ne!(ws.main.z[l], ws.alt[l].z[l], "{kind:?} layer {l}");
            if kind == EstimatorKind::Disarm {
                for (i, (&z, &t)) in ws.main.z[l].iter().zip(&ws.alt[l].z[l]).enumerate() {
                    let p = 1.0 / (1.0 + (-ws.main.logits[l][i]).exp());
                    if p >= 0.5 {
                        assert!(z + t >= 1.0, "layer {l} element {i}: p={p} but both samples are 0");
                    } else {
                        assert!(z + t <= 1.0, "layer {l} element {i}: p={p} but both samples are 1");
                    }
                }
            }
        }
    }
}

#[test]
fn decoder_and_prior_gradients_match_central_differences() {
    let shape = tiny_shape();
    let params = tiny_params(11);
    let est = Estimator::new(EstimatorKind::Hnca);
    let (ws, grads) = production_step(&est, &params, &[0.0; 3]);
    let depth = shape.depth();
    let chains: Vec<Chain> = (0..ws.b).map(|r| (0..=depth).map(|m| row(&ws.main.z[m], r, shape.width(m))).collect()).collect();
    // The generative log-likelihood log p(x, z), batch mean, as a function of the decoder.
    let loglik = |net: &Net| {
        chains.iter().map(|z| (1..=depth).map(|m| net.log_p(m, z)).sum::<f64>() + net.log_prior(z)).sum::<f64>() / chains.len() as f64
    };
    let base = Net::from_params(&shape, &params);
    let h = 1e-4;
    let fd = |edit: &dyn Fn(&mut Net, f64)| {
        let mut plus = base.clone();
        edit(&mut plus, h);
        let mut minus = base.clone();
        edit(&mut minus, -h);
        (loglik(&plus) - loglik(&minus)) / (2.0 * h)
    };
    let mut checked = 0;
    for m in 0..depth {
        for i in 0..base.dec_w[m].len() {
            let want = fd(&|n, d| n.dec_w[m][i] += d);
            assert!(close(grads.dec[m].w[i] as f64, want, 1e-5), "decoder {m} weight {i}: {} vs {want}", grads.dec[m].w[i]);
            checked += 1;
        }
        for i in 0..base.dec_b[m].len() {
            let want = fd(&|n, d| n.dec_b[m][i] += d);
            assert!(close(grads.dec[m].bias[i] as f64, want, 1e-5), "decoder {m} bias {i}: {} vs {want}", grads.dec[m].bias[i]);
            checked += 1;
        }
    }
    for i in 0..base.prior.len() {
        let want = fd(&|n, d| n.prior[i] += d);
        assert!(close(grads.prior[i] as f64, want, 1e-5), "prior {i}: {} vs {want}", grads.prior[i]);
        checked += 1;
    }
    assert_eq!(checked, 3 * 2 + 3 + 2 * 2 + 2 + 2 * 2 + 2 + 2);
}
