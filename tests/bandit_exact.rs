//! Exact enumeration (docs/hnca.md §6) for the contextual bandit: a tiny agent (3 binary inputs →
//! 2 → 2 centred Bernoulli units → softmax over 3 actions, an arbitrary reward table). For each
//! input, every joint configuration of the hidden units and the action is enumerated in f64:
//! the exact expectation of each estimator must equal the exact gradient of the expected reward
//! (central differences) for every weight and bias of every layer, with and without a constant
//! baseline; HNCA's exact variance must not exceed REINFORCE's for any hidden-layer parameter.
//! The production step (f32, CPU backend) must agree with the f64 reference configuration by
//! configuration. The reference recomputes every counterfactual from scratch by Bayes' rule.

mod common;

use common::bandit_exact::{bits, configs, exact_gradient, production_estimate, reference_estimate, Agent, SIZES};
use hnca::bandit::agent::plan;
use hnca::rng::RngKey;
use hnca::vae::estimator::{Combine, EstimatorKind};

#[test]
fn every_bandit_estimator_is_unbiased_and_hnca_has_lower_variance_than_reinforce() {
    let agent = Agent::random(3);
    let key = RngKey::new(5, 0, 1);
    let rewards: Vec<Vec<f64>> = (0..8).map(|x| (0..3).map(|a| key.uniform(x * 3 + a) as f64).collect()).collect();
    let n = Agent::param_count();
    let hidden_params = (SIZES[0] + 1) * SIZES[1] + (SIZES[1] + 1) * SIZES[2];
    let (mut worst_bias, mut worst_f32, mut smallest_ratio) = (0.0f64, 0.0f64, f64::INFINITY);
    for (code, reward) in rewards.iter().enumerate() {
        let x = bits(code, 3);
        let exact = exact_gradient(&agent, &x, reward);
        let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "a degenerate test case");
        for baseline in [0.0, 0.37] {
            let mut variances = Vec::new();
            for est in [EstimatorKind::Hnca, EstimatorKind::Reinforce] {
                let hnca = plan(est).combine == Combine::Hnca;
                let (mut mean, mut sq, mut mean_f32) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                for c in configs(&agent, &x) {
                    let r = reward[c.action];
                    let g = reference_estimate(&agent, &x, &c, r, baseline, hnca);
                    let g32 = production_estimate(&agent, &x, &c, r, baseline, est);
                    let g_scale = g.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
                    for i in 0..n {
                        mean[i] += c.prob * g[i];
                        sq[i] += c.prob * g[i] * g[i];
                        mean_f32[i] += c.prob * g32[i];
                        worst_f32 = worst_f32.max((g32[i] - g[i]).abs() / g_scale);
                    }
                }
                for i in 0..n {
                    let bias = (mean[i] - exact[i]).abs() / scale;
                    worst_bias = worst_bias.max(bias);
                    assert!(
                        bias < 1e-9,
                        "{} baseline {baseline} x {code}: parameter {i}: E = {} vs exact {}",
                        est.name(),
                        mean[i],
                        exact[i]
                    );
                    assert!(
                        (mean_f32[i] - exact[i]).abs() < 1e-5 * scale,
                        "production {} parameter {i}: {} vs {}",
                        est.name(),
                        mean_f32[i],
                        exact[i]
                    );
                }
                variances.push((0..n).map(|i| sq[i] - mean[i] * mean[i]).collect::<Vec<f64>>());
            }
            let (hnca, reinforce) = (&variances[0], &variances[1]);
            for i in 0..hidden_params {
                assert!(
                    hnca[i] <= reinforce[i] * (1.0 + 1e-9) + 1e-15,
                    "x {code} baseline {baseline} parameter {i}: Var HNCA {} > Var REINFORCE {}",
                    hnca[i],
                    reinforce[i]
                );
                if hnca[i] > 1e-12 {
                    smallest_ratio = smallest_ratio.min(reinforce[i] / hnca[i]);
                }
            }
            for i in hidden_params..n {
                assert!((hnca[i] - reinforce[i]).abs() <= 1e-12, "the output layer's estimator is REINFORCE under both");
            }
        }
    }
    eprintln!("worst bias {worst_bias:.1e} of the gradient scale; production f32 vs f64 {worst_f32:.1e}; smallest Var[REINFORCE]/Var[HNCA] {smallest_ratio:.2}");
    assert!(worst_f32 < 1e-5, "production f32 vs the f64 reference: {worst_f32:.1e}");
}
