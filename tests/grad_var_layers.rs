//! The per-layer gradient variance (`grad_var_layers`) and the whole network's (`grad_var`),
//! held to their documented definitions rather than to their count.
//!
//! The definition (docs/usage.md, "Metrics"): for every parameter, the variance across the minibatch
//! of the per-example gradient estimates (divisor b), averaged over the layer's parameters (its
//! weights and biases), layer 1 (next to the data) first; `grad_var` the same averaged over all
//! the layers' parameters, so the parameter-count-weighted mean of the layers'; both averaged
//! over the epoch's steps.
//!
//! - In the library (CPU), the statistics a few steps leave are checked against the sum over
//!   those steps of an f64 recomputation from the per-example estimates of tests/common's
//!   reference models (the VAE's encoder, the bandit's layers with its softmax), layer by layer,
//!   on models whose layers have different parameter counts and different variances, so a wrong
//!   divisor or a wrong order of the layers fails.
//! - Through the binary, every metrics line's `grad_var` is the weighted mean of its
//!   `grad_var_layers` with the parameter counts of the documented layers (the conv bandit's
//!   convolutions first), and an epoch's line is the mean of its steps: the same run stopped
//!   after every step and resumed (each part summing its own steps) writes one line per step,
//!   whose mean is the whole epoch's line.

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::bandit_exact::{reference_estimate, Agent, Config, SIZES};
use common::exact::{Chain, Net};
use hnca::backend::cpu::Cpu;
use hnca::bandit::agent::plan;
use hnca::bandit::{AgentShape, BanditTrainer, ESTIMATORS};
use hnca::rng::{stream, RngKey};
use hnca::run::checkpoint::Checkpoint;
use hnca::vae::estimator::{Baseline, Combine, Estimator, EstimatorKind};
use hnca::vae::model::{Params, Shape};
use hnca::vae::trainer::Trainer;
use serde_json::Value;

const STEPS: usize = 3;

/// Σ over parameters of the across-batch variance (divisor b, the batch's own spread) of the
/// per-example estimates `rows` (one row per example, one column per parameter).
fn summed_variance(rows: &[Vec<f64>]) -> f64 {
    let b = rows.len() as f64;
    (0..rows[0].len())
        .map(|i| {
            let mean = rows.iter().map(|r| r[i]).sum::<f64>() / b;
            rows.iter().map(|r| (r[i] - mean).powi(2)).sum::<f64>() / b
        })
        .sum()
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    got.is_finite() && (got - want).abs() <= rel * want.abs().max(1e-12)
}

/// The reference per-layer values, checked to differ from each other, so that swapping or
/// shifting the layers cannot go unnoticed.
fn assert_layers_distinct(what: &str, want: &[f64]) {
    for i in 0..want.len() {
        for j in i + 1..want.len() {
            assert!(
                !close(want[i], want[j], 1e-2),
                "{what}: layers {} and {} have the same variance; the test would be blind",
                i + 1,
                j + 1
            );
        }
    }
}

fn assert_statistics(what: &str, got_layers: &[f64], got_total: f64, want_layers: &[f64], want_total: f64) {
    assert_eq!(got_layers.len(), want_layers.len(), "{what}: one value per layer");
    for (l, (&g, &w)) in got_layers.iter().zip(want_layers).enumerate() {
        assert!(
            close(g, w, 1e-4),
            "{what}: layer {} (from the data): {g}, the reference gives {w}; all layers {got_layers:?} vs {want_layers:?}",
            l + 1
        );
    }
    assert!(close(got_total, want_total, 1e-4), "{what}: grad_var {got_total}, the reference gives {want_total}");
}

fn row(buf: &[f32], r: usize, n: usize) -> Vec<f64> {
    buf[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect()
}

/// A VAE whose encoder layers have 5·3+3 = 18, 3·2+2 = 8 and 2·2+2 = 6 parameters.
const VAE_SIZES: [usize; 4] = [5, 3, 2, 2];

/// Every parameter from U(-1.5, 1.5): no symmetry between units or layers.
fn random_vae_params(shape: &Shape, seed: u64) -> Params<Vec<f32>> {
    let mut p = Params::init(shape, seed);
    for (t, tensor) in p.tensors_mut().into_iter().enumerate() {
        RngKey::new(seed, 1, stream::init(100 + t as u32)).fill_uniform(0, tensor);
        tensor.iter_mut().for_each(|u| *u = 3.0 * *u - 1.5);
    }
    p
}

#[test]
fn vae_statistics_hold_each_encoder_layers_variance_per_parameter_summed_over_steps() {
    let be = Cpu::new();
    let shape = Shape::new(VAE_SIZES[0], &VAE_SIZES[1..]);
    let depth = VAE_SIZES.len() - 1;
    // Parameters per encoder layer, from the widths: weights (in × out) and biases (out).
    let params: Vec<f64> = (1..=depth).map(|l| (VAE_SIZES[l - 1] * VAE_SIZES[l] + VAE_SIZES[l]) as f64).collect();
    let all: f64 = params.iter().sum();
    let b = 16;
    let x: Vec<f32> = (0..b).flat_map(|r| (0..VAE_SIZES[0]).map(move |j| (((r * 7 + 3) >> j) & 1) as f32)).collect();
    for kind in [EstimatorKind::Reinforce, EstimatorKind::Hnca] {
        let est = Estimator::new(kind);
        let what = est.label();
        let mut trainer = Trainer::new(&be, shape.clone(), est.clone(), b, 1e-2, 5);
        trainer.params = random_vae_params(&shape, 13);
        let (mut want_layers, mut want_total) = (vec![0.0f64; depth], 0.0f64);
        let mut first_step = Vec::new();
        for _ in 0..STEPS {
            let net = Net::from_params(&shape, &trainer.params);
            let baselines: Vec<f64> = trainer.state.baselines(&be).iter().map(|&v| v as f64).collect();
            trainer.train_step(&x);
            let mut summed = Vec::new();
            for l in 1..=depth {
                let baseline = if est.plan().baseline == Baseline::Running { baselines[l - 1] } else { 0.0 };
                let rows: Vec<Vec<f64>> = (0..b)
                    .map(|r| {
                        let z: Chain = (0..=depth).map(|m| row(&trainer.model.ws.main.z[m], r, VAE_SIZES[m])).collect();
                        net.layer_params_from_units(l, &z, &net.unit_grads(&est, l, &z, &z, baseline))
                    })
                    .collect();
                assert_eq!(rows[0].len() as f64, params[l - 1], "{what}: the reference's layer {l} has its parameters");
                summed.push(summed_variance(&rows));
            }
            if first_step.is_empty() {
                first_step = summed.iter().zip(&params).map(|(s, p)| s / p).collect();
            }
            for l in 0..depth {
                want_layers[l] += summed[l] / params[l];
            }
            want_total += summed.iter().sum::<f64>() / all;
        }
        assert_layers_distinct(&what, &first_step);
        let sums = trainer.state.sums_of(&trainer.state.read(&be));
        assert_eq!(sums.steps, STEPS as u64, "{what}: steps");
        assert_statistics(&what, &sums.grad_var_layers, sums.grad_var, &want_layers, want_total);
    }
}

#[test]
fn bandit_statistics_hold_each_layers_variance_per_parameter_softmax_last() {
    let be = Cpu::new();
    let shape = AgentShape::new(SIZES[0], &SIZES[1..SIZES.len() - 1], SIZES[SIZES.len() - 1]);
    // Layers 3→2, 2→2 and the softmax 2→3: 8, 6 and 9 parameters.
    let params: Vec<f64> = (1..SIZES.len()).map(|l| (SIZES[l - 1] * SIZES[l] + SIZES[l]) as f64).collect();
    let all: f64 = params.iter().sum();
    let b = 16;
    let inputs: Vec<Vec<f64>> = (0..b).map(|r| (0..3).map(|j| (((r * 5 + 2) >> j) & 1) as f64).collect()).collect();
    let x: Vec<f32> = inputs.iter().flatten().map(|&v| v as f32).collect();
    let labels: Vec<f32> = (0..b).map(|r| ((r * 2 + 1) % 3) as f32).collect();
    for (est, _) in ESTIMATORS {
        let what = est.name();
        let mut trainer = BanditTrainer::new(&be, shape.clone(), est, b, 1e-2, 4);
        trainer.params = Agent::random(6).to_params();
        let (mut want_layers, mut want_total) = (vec![0.0f64; params.len()], 0.0f64);
        let mut first_step = Vec::new();
        for _ in 0..STEPS {
            let agent = Agent::from_params(&trainer.params);
            let baseline = if plan(est).baseline == Baseline::Running { trainer.baseline() as f64 } else { 0.0 };
            trainer.train_step(&x, &labels);
            let ws = &trainer.model.ws;
            // Each example's estimate of every parameter, per layer weights then biases.
            let per_row: Vec<Vec<f64>> = (0..b)
                .map(|r| {
                    let action = ws.action[r] as usize;
                    let reward = (action as f32 == labels[r]) as u8 as f64;
                    let c = Config { h1: row(&ws.z[1], r, SIZES[1]), h2: row(&ws.z[2], r, SIZES[2]), action, prob: 0.0 };
                    reference_estimate(&agent, &inputs[r], &c, reward, baseline, plan(est).combine == Combine::Hnca)
                })
                .collect();
            let mut at = 0;
            let mut summed = Vec::new();
            for &p in &params {
                let layer: Vec<Vec<f64>> = per_row.iter().map(|g| g[at..at + p as usize].to_vec()).collect();
                summed.push(summed_variance(&layer));
                at += p as usize;
            }
            assert_eq!(at, per_row[0].len(), "{what}: the layers cover every parameter");
            if first_step.is_empty() {
                first_step = summed.iter().zip(&params).map(|(s, p)| s / p).collect();
            }
            for (acc, (s, p)) in want_layers.iter_mut().zip(summed.iter().zip(&params)) {
                *acc += s / p;
            }
            want_total += summed.iter().sum::<f64>() / all;
        }
        assert_layers_distinct(what, &first_step);
        let sums = trainer.state.sums_of(&trainer.state.read(&be));
        assert_eq!(sums.steps, STEPS as u64, "{what}: steps");
        assert_statistics(what, &sums.grad_var_layers, sums.grad_var, &want_layers, want_total);
    }
}

// ---- through the binary ----------------------------------------------------------------------

fn hnca() -> Command {
    Command::cargo_bin("hnca").unwrap()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn layers_of(line: &Value) -> Vec<f64> {
    line["grad_var_layers"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// `grad_var` is Σ_l P_l·v_l / Σ_l P_l over the line's per-layer values v_l, with the layers'
/// parameter counts P_l in the documented order; the per-layer values differ, so a permutation
/// of them (with these unequal counts) breaks the identity.
fn assert_weighted_mean(what: &str, line: &Value, params: &[f64]) {
    let v = layers_of(line);
    assert_eq!(v.len(), params.len(), "{what}: one value per layer: {line}");
    assert!(v.iter().all(|&x| x.is_finite() && x > 0.0), "{what}: {v:?}");
    let want = v.iter().zip(params).map(|(v, p)| v * p).sum::<f64>() / params.iter().sum::<f64>();
    let got = line["grad_var"].as_f64().unwrap();
    assert!(close(got, want, 1e-9), "{what}: grad_var {got}, the parameter-weighted mean of {v:?} is {want}");
}

/// The VAE on 60 training images in batches of 20: three steps per epoch.
const VAE: [&str; 14] = [
    "vae",
    "--layers",
    "8,5",
    "--batch-size",
    "20",
    "--train-images",
    "60",
    "--test-every",
    "0",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--seed",
];

/// Takes the statistics of the epoch's earlier steps out of a checkpoint written mid-epoch, so
/// that the run resumed from it sums the rest of the epoch from zero, as a fresh epoch: its
/// line then holds those steps alone. (They are kept under "epoch_stats" so that a resumed run
/// reports the whole epoch; training itself does not read them.)
fn forget_earlier_steps(ck: &Path) {
    let mut c = Checkpoint::load(ck).unwrap();
    assert!(c.header.remove("epoch_stats").is_some(), "a checkpoint written mid-epoch keeps the epoch's statistics");
    c.save(ck).unwrap();
}

#[test]
fn a_vae_line_is_the_mean_of_its_steps_and_grad_var_weights_the_layers_by_their_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.jsonl");
    hnca().args(VAE).args(["3", "--epochs", "1", "--metrics"]).arg(&whole).assert().success();
    // The same run, stopped after each step and resumed with only that step's statistics: one
    // line per step.
    let (split, ck) = (dir.path().join("split.jsonl"), dir.path().join("run.ck"));
    for stop in ["1", "2", "3"] {
        let mut cmd = hnca();
        cmd.args(VAE).args(["3", "--epochs", "1", "--steps", stop, "--save"]).arg(&ck).arg("--metrics").arg(&split);
        if stop != "1" {
            forget_earlier_steps(&ck);
            cmd.arg("--resume").arg(&ck);
        }
        cmd.assert().success();
    }
    let (whole, split) = (read_lines(&whole), read_lines(&split));
    // Encoder layers 784→8 and 8→5.
    let params = [784.0 * 8.0 + 8.0, 8.0 * 5.0 + 5.0];
    for (i, line) in whole.iter().chain(&split).enumerate() {
        assert_weighted_mean(&format!("line {i}"), line, &params);
    }
    let at = |lines: &[Value], key: &str| lines.iter().map(|l| l[key].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!((at(&whole, "step"), at(&whole, "steps_in_epoch")), (vec![3], vec![3]));
    assert_eq!((at(&split, "step"), at(&split, "steps_in_epoch")), (vec![1, 2, 3], vec![1, 1, 1]));
    // Each one-step line holds that step's value; the whole epoch's line is their mean.
    let per_step: Vec<Vec<f64>> = split.iter().map(layers_of).collect();
    let want: Vec<f64> = (0..params.len()).map(|l| per_step.iter().map(|s| s[l]).sum::<f64>() / 3.0).collect();
    let got = layers_of(&whole[0]);
    for l in 0..params.len() {
        assert!(close(got[l], want[l], 1e-9), "layer {}: the epoch's {} vs the mean of its steps {}", l + 1, got[l], want[l]);
    }
    let steps_mean = split.iter().map(|l| l["grad_var"].as_f64().unwrap()).sum::<f64>() / 3.0;
    assert!(close(whole[0]["grad_var"].as_f64().unwrap(), steps_mean, 1e-9), "grad_var {} vs {steps_mean}", whole[0]["grad_var"]);
    assert!(!close(per_step[0][0], per_step[1][0], 1e-6), "the steps' values coincide; the test would be blind");
}

#[test]
fn the_conv_bandit_lists_its_convolutions_first_then_its_dense_layers_and_softmax() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conv.jsonl");
    hnca()
        .args(["bandit", "--features", "conv", "--conv-layers", "2", "--conv-channels", "2", "--layers", "6,4"])
        .args(["--batch-size", "10", "--steps", "3", "--test-every", "0", "--device", "cpu", "--threads", "1", "--metrics"])
        .arg(&path)
        .assert()
        .success();
    // 3×3 convolutions 1→2 and 2→2 channels (28×28 → 26×26 → 24×24), the Bernoulli layer of 6
    // over their 24·24·2 features, the hidden layer of 4, the softmax over 10 digits.
    let params = [9.0 * 2.0 + 2.0, 9.0 * 2.0 * 2.0 + 2.0, 24.0 * 24.0 * 2.0 * 6.0 + 6.0, 6.0 * 4.0 + 4.0, 4.0 * 10.0 + 10.0];
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1);
    assert_weighted_mean("conv bandit", &lines[0], &params);
    // The dense bandit: 784→6, 6→4, the softmax.
    let path = dir.path().join("dense.jsonl");
    hnca()
        .args(["bandit", "--layers", "6,4", "--batch-size", "10", "--steps", "3", "--test-every", "0", "--device", "cpu", "--metrics"])
        .arg(&path)
        .assert()
        .success();
    assert_weighted_mean("bandit", &read_lines(&path)[0], &[784.0 * 6.0 + 6.0, 6.0 * 4.0 + 4.0, 4.0 * 10.0 + 10.0]);
}
