//! The real `hnca` binary, end to end.

mod common;

use assert_cmd::Command;
use hnca::rng::{stream, RngKey};

fn hnca() -> Command {
    Command::cargo_bin("hnca").unwrap()
}

fn read_metrics(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn vae_trains_200_steps_of_the_default_model_and_writes_valid_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let out = hnca().args(["vae", "--steps", "200", "--test-every", "1", "--metrics"]).arg(&path).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.starts_with("epoch 1/840 step 200 train_elbo "), "{stdout}");
    let lines = read_metrics(&path);
    assert_eq!(lines.len(), 1);
    let m = &lines[0];
    assert_eq!(m["epoch"], 1);
    assert_eq!(m["step"], 200);
    assert_eq!(m["steps_in_epoch"], 200);
    assert_eq!(m["estimator"], "hnca");
    assert_eq!(m["seed"], 0);
    assert_eq!(m["lr"], 1e-4);
    let train = m["train_elbo"].as_f64().unwrap();
    let test = m["test_elbo"].as_f64().unwrap();
    // 784 Bernoulli pixels at p = ½ score -543 nats; 200 steps already beat that, and an
    // ELBO is never positive.
    assert!(train < 0.0 && train > -543.5, "train_elbo {train}");
    assert!(test < 0.0 && test > train - 50.0, "test_elbo {test} vs train {train}");
    assert!(m["grad_var"].as_f64().unwrap() > 0.0);
    assert_eq!(m["grad_var_layers"].as_array().unwrap().len(), 3);
    assert!(m["seconds"].as_f64().unwrap() > 0.0);
    assert!(!dir.path().join("m.jsonl.tmp").exists());
}

#[test]
fn every_estimator_trains_end_to_end_and_a_seed_reproduces_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let estimators = [
        ("hnca", None, "hnca", 1),
        ("hnca-nb", None, "hnca-nb", 1),
        ("reinforce", None, "reinforce", 1),
        ("reinforce-nb", None, "reinforce-nb", 1),
        ("loo", None, "loo", 3),
        ("disarm", None, "disarm", 3),
        ("arms", None, "arms", 3),
        ("double-cv", None, "double-cv", 3),
        ("rodeo", None, "rodeo", 3),
        ("loo", Some("3"), "loo-k3", 5),
        ("arms", Some("4"), "arms-k4", 7),
        ("hnca", Some("2"), "hnca-k2", 3),
    ];
    for (est, samples, label, evaluations) in estimators {
        let mut runs = Vec::new();
        for rep in 0..2 {
            let path = dir.path().join(format!("{label}-{rep}.jsonl"));
            hnca()
                .args(["vae", "--layers", "16,8", "--steps", "30", "--test-every", "0", "--seed", "3", "--estimator", est])
                .args(samples.map(|k| ["--samples", k]).iter().flatten())
                .arg("--metrics")
                .arg(&path)
                .assert()
                .success();
            let m = read_metrics(&path).remove(0);
            assert_eq!(m["estimator"], label);
            // Chains per example and step: the main one, and K - 1 per layer of the two.
            assert_eq!(m["evaluations"], evaluations, "{label}");
            assert!(m["test_elbo"].is_null());
            runs.push((m["train_elbo"].as_f64().unwrap(), m["grad_var"].as_f64().unwrap()));
        }
        assert!(runs[0].0.is_finite());
        assert_eq!(runs[0], runs[1], "{label}: the same seed gave different runs");
    }
    // A different seed gives a different run.
    let path = dir.path().join("other-seed.jsonl");
    hnca()
        .args(["vae", "--layers", "16,8", "--steps", "30", "--test-every", "0", "--seed", "4", "--metrics"])
        .arg(&path)
        .assert()
        .success();
    let other = read_metrics(&path).remove(0)["train_elbo"].as_f64().unwrap();
    let first = read_metrics(&dir.path().join("hnca-0.jsonl")).remove(0)["train_elbo"].as_f64().unwrap();
    assert_ne!(other, first);
}

/// The first step's batch, in f64 from the documented protocol: epoch 1's shuffle, its first
/// `b` images, binarized as `mode` says (dynamic: x = 1[u < pixel/255] with u keyed by the image's
/// index; threshold: pixel/255 > 0.5).
fn first_batch(seed: u64, b: usize, threshold: bool) -> Vec<Vec<f64>> {
    let data = hnca::data::load_mnist(&hnca::data::default_data_dir()).unwrap();
    let order = hnca::run::schedule::shuffle(data.train.n, RngKey::new(seed, 1, stream::SHUFFLE));
    let key = RngKey::new(seed, 1, stream::BINARIZE_TRAIN);
    let n0 = data.train.pixels();
    order[..b]
        .iter()
        .map(|&img| {
            let pixels = data.train.image(img as usize);
            (0..n0)
                .map(|j| {
                    let p = pixels[j] as f64 / 255.0;
                    let on = if threshold { p > 0.5 } else { (key.uniform(img * n0 as u32 + j as u32) as f64) < p };
                    on as u8 as f64
                })
                .collect()
        })
        .collect()
}

/// The batch-mean single-sample ELBO of the first training step, from the f64 reference model
/// (tests/common/exact.rs) at the seed's initial parameters, with the encoder sampled from the
/// documented Philox streams (z_m = 1[u < clip(σ(a))], u keyed by (seed, step 0, encoder m)).
fn reference_first_step_elbo(seed: u64, layers: &[usize], b: usize, threshold: bool) -> f64 {
    let shape = hnca::vae::model::Shape::new(784, layers);
    let net = common::exact::Net::from_params(&shape, &hnca::vae::model::Params::init(&shape, seed));
    let batch = first_batch(seed, b, threshold);
    let mut total = 0.0;
    for (r, x) in batch.into_iter().enumerate() {
        let mut chain = vec![x];
        for m in 1..=layers.len() {
            let logits = net.enc_logits(m, &chain[m - 1]);
            let key = RngKey::new(seed, 0, stream::encoder(m as u32));
            let n = logits.len();
            let z = logits
                .iter()
                .enumerate()
                .map(|(j, &a)| ((key.uniform((r * n + j) as u32) as f64) < common::exact::clip(common::exact::sigmoid(a))) as u8 as f64)
                .collect();
            chain.push(z);
        }
        total += net.elbo_sample(&chain);
    }
    total / b as f64
}

/// The bandit's first-step reward rate in f64: hidden units z_l = 1[u < clip(σ(a))] (inputs
/// centred to ±1 above the pixels), the action by inverse CDF of the softmax with u keyed by the
/// row, reward 1 for the label.
fn reference_first_step_accuracy(seed: u64, hidden: &[usize], b: usize) -> f64 {
    let shape = hnca::bandit::AgentShape::new(784, hidden, 10);
    let params = hnca::bandit::AgentParams::init(&shape, seed);
    let data = hnca::data::load_mnist(&hnca::data::default_data_dir()).unwrap();
    let order = hnca::run::schedule::shuffle(data.train.n, RngKey::new(seed, 1, stream::SHUFFLE));
    let top = hidden.len() + 1;
    let mut correct = 0;
    for (r, x) in first_batch(seed, b, false).into_iter().enumerate() {
        let mut u = x;
        for l in 1..=top {
            let d = &params.layers[l - 1];
            let logits: Vec<f64> = (0..d.n_out)
                .map(|k| d.bias[k] as f64 + u.iter().enumerate().map(|(i, &v)| v * d.w[i * d.n_out + k] as f64).sum::<f64>())
                .collect();
            let key = RngKey::new(seed, 0, stream::bandit(l as u32));
            if l < top {
                let n = logits.len();
                u =
                    logits
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| {
                            if (key.uniform((r * n + j) as u32) as f64) < common::exact::clip(common::exact::sigmoid(a)) {
                                1.0
                            } else {
                                -1.0
                            }
                        })
                        .collect();
            } else {
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|a| (a - max).exp()).collect();
                let target = key.uniform(r as u32) as f64 * e.iter().sum::<f64>();
                let (mut acc, mut action) = (0.0, e.len() - 1);
                for (j, v) in e.iter().enumerate() {
                    acc += v;
                    if target < acc {
                        action = j;
                        break;
                    }
                }
                correct += (action == data.train.labels[order[r] as usize] as usize) as usize;
            }
        }
    }
    correct as f64 / b as f64
}

#[test]
fn the_bandits_first_step_reward_equals_the_f64_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.jsonl");
    hnca()
        .args(["bandit", "--layers", "6,4", "--batch-size", "40", "--steps", "1", "--test-every", "0", "--seed", "5", "--metrics"])
        .arg(&path)
        .assert()
        .success();
    let got = read_metrics(&path).remove(0)["train_accuracy"].as_f64().unwrap();
    let want = reference_first_step_accuracy(5, &[6, 4], 40);
    assert!(want > 0.0 && want < 1.0, "a degenerate reference: {want}");
    assert!((got - want).abs() < 1e-9, "train_accuracy {got}, reference {want}");
}

#[test]
fn the_first_steps_elbo_equals_the_f64_reference() {
    let dir = tempfile::tempdir().unwrap();
    for (layers, binarize, extra) in [("5,3", "dynamic", vec![]), ("4", "threshold", vec!["--all-child", "--full-reward"])] {
        let path = dir.path().join(format!("{binarize}.jsonl"));
        hnca()
            .args([
                "vae",
                "--layers",
                layers,
                "--batch-size",
                "6",
                "--steps",
                "1",
                "--test-every",
                "0",
                "--seed",
                "4",
                "--binarize",
                binarize,
            ])
            .args(&extra)
            .arg("--metrics")
            .arg(&path)
            .assert()
            .success();
        let m = read_metrics(&path).remove(0);
        let got = m["train_elbo"].as_f64().unwrap();
        let widths: Vec<usize> = layers.split(',').map(|w| w.parse().unwrap()).collect();
        let want = reference_first_step_elbo(4, &widths, 6, binarize == "threshold");
        assert!((got - want).abs() <= 1e-5 * want.abs(), "--layers {layers} --binarize {binarize}: train_elbo {got}, reference {want}");
        if !extra.is_empty() {
            assert_eq!(m["estimator"], "hnca+all-child+full-reward");
        }
    }
}

/// Runs `args`, expecting failure with exit status `code` and a single `error:` line that
/// contains `needle`, with no panic.
fn assert_user_error(args: &[&str], code: i32, needle: &str) {
    let out = hnca().args(args).assert().failure().code(code);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    assert!(errors[0].contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{args:?}: {stderr}");
}

#[test]
fn impossible_options_are_one_line_errors_with_exit_status_2() {
    assert_user_error(&["vae", "--batch-size", "0"], 2, "--batch-size");
    assert_user_error(&["vae", "--lr", "-1"], 2, "--lr");
    assert_user_error(&["vae", "--lr", "nan"], 2, "--lr");
    assert_user_error(&["vae", "--layers", "200,0"], 2, "--layers");
    assert_user_error(&["vae", "--epochs", "0"], 2, "--epochs");
    assert_user_error(&["vae", "--steps", "0"], 2, "--steps");
    assert_user_error(&["vae", "--estimator", "reinforce", "--all-child"], 2, "HNCA ablations");
    assert_user_error(&["vae", "--estimator", "magic"], 2, "magic");
    // Samples per layer: at least two, at most the kernels' tables, only where they apply.
    assert_user_error(&["vae", "--estimator", "loo", "--samples", "1"], 2, "--samples must be 2 to 64");
    assert_user_error(&["vae", "--estimator", "arms", "--samples", "65"], 2, "--samples must be 2 to 64");
    assert_user_error(&["vae", "--estimator", "disarm", "--samples", "3"], 2, "--samples applies to");
    assert_user_error(&["vae", "--estimator", "reinforce", "--samples", "2"], 2, "not reinforce");
    assert_user_error(&["vae", "--estimator", "arms", "--all-child"], 2, "HNCA ablations");
    assert_user_error(&["vae", "--estimator", "loo", "--cv-lr", "0.01"], 2, "--cv-lr applies to");
    assert_user_error(&["vae", "--estimator", "rodeo", "--cv-lr", "0"], 2, "--cv-lr must be");
    assert_user_error(&["vae", "--prior-lr", "-1"], 2, "--prior-lr");
    assert_user_error(&["vae", "--prior-optimizer", "rmsprop"], 2, "rmsprop");
    assert_user_error(&["vae", "--train-images", "0"], 2, "--train-images");
    assert_user_error(&["vae", "--train-images", "60000"], 2, "--train-images 60000: the training set has 60000 images");
    assert_user_error(&["bench", "--estimators", "loo,arms-k1"], 2, "estimator \"arms-k1\"");
}

#[test]
fn the_literature_protocols_options_run_and_write_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["vae", "--layers", "16,8", "--steps", "20", "--test-every", "1", "--seed", "2"];
    // A fixed prior (learning rate 0) stays at its initial logits, 0; plain gradient ascent moves it.
    let mut priors = Vec::new();
    for (lr, opt) in [("0", "adam"), ("0.5", "sgd"), ("0.5", "adam")] {
        let (metrics, params) = (dir.path().join(format!("{lr}-{opt}.jsonl")), dir.path().join(format!("{lr}-{opt}.f32")));
        hnca()
            .args(base)
            .args(["--train-images", "59000", "--prior-lr", lr, "--prior-optimizer", opt, "--metrics"])
            .arg(&metrics)
            .arg("--save-params")
            .arg(&params)
            .assert()
            .success();
        let m = read_metrics(&metrics).remove(0);
        let (valid, test) = (m["valid_elbo"].as_f64().unwrap(), m["test_elbo"].as_f64().unwrap());
        assert!(valid < 0.0 && (valid - test).abs() < 30.0, "valid_elbo {valid}, test_elbo {test}");
        let values: Vec<f32> = std::fs::read(&params).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        priors.push(values[values.len() - 8..].to_vec());
    }
    assert!(priors[0].iter().all(|&v| v == 0.0), "a fixed prior moved: {:?}", priors[0]);
    assert!(priors[1].iter().all(|&v| v != 0.0) && priors[1] != priors[2], "sgd {:?} vs adam {:?}", priors[1], priors[2]);
    // Without --train-images there is no validation set, and no valid_elbo.
    let plain = dir.path().join("plain.jsonl");
    hnca().args(base).arg("--metrics").arg(&plain).assert().success();
    assert!(read_metrics(&plain)[0].get("valid_elbo").is_none());
}

#[test]
fn bad_data_and_paths_are_one_line_errors_with_exit_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert_user_error(&["vae", "--data-dir", missing.to_str().unwrap()], 1, "data directory");
    // A directory whose training images are not gzip.
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), b"not gzip").unwrap();
    assert_user_error(&["vae", "--data-dir", dir.path().to_str().unwrap()], 1, "not a gzip file");
    let nowhere = missing.join("m.jsonl");
    assert_user_error(&["vae", "--steps", "1", "--metrics", nowhere.to_str().unwrap()], 1, "m.jsonl");
}

#[test]
fn a_diverged_run_stops_with_a_clear_error_and_leaves_the_metrics_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    std::fs::write(&path, "{\"epoch\":1}\n").unwrap();
    // Adam moves every weight by about lr per step: 1e38 overflows the logits at once.
    assert_user_error(
        &["vae", "--layers", "8", "--steps", "50", "--test-every", "0", "--lr", "1e38", "--metrics", path.to_str().unwrap()],
        1,
        "diverged",
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"epoch\":1}\n");
    assert!(!dir.path().join("m.jsonl.tmp").exists());
}

#[test]
fn help_documents_every_option_with_its_default() {
    let out = hnca().args(["vae", "--help"]).assert().success();
    let help = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for opt in [
        "--layers",
        "--estimator",
        "--all-child",
        "--full-reward",
        "--lr",
        "--batch-size",
        "--epochs",
        "--steps",
        "--seed",
        "--test-every",
        "--metrics",
        "--data-dir",
        "--binarize",
        "--threads",
        "--samples",
        "--prior-lr",
        "--prior-optimizer",
        "--cv-lr",
        "--train-images",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}");
    }
    for default in ["200,200,200", "default: hnca", "default: 0.0001", "default: 50", "default: 840", "default: 10", "default: dynamic"] {
        assert!(help.contains(default), "--help lacks {default:?}:\n{help}");
    }
}

/// True when this machine has a usable GPU (then the no-GPU behaviour cannot be observed).
fn gpu_present() -> bool {
    hnca::backend::cuda::CudaDevice::open().is_ok()
}

#[test]
fn without_a_gpu_auto_falls_back_to_the_cpu_and_cuda_is_a_clear_error() {
    if gpu_present() {
        common::skip("a GPU is present, so the no-GPU fallback cannot be observed here");
        return;
    }
    let out = hnca().args(["vae", "--layers", "8", "--steps", "2", "--test-every", "0"]).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let notes: Vec<&str> = stderr.lines().filter(|l| l.contains("training on the CPU")).collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(notes[0].starts_with("hnca: no usable GPU ("), "{stderr}");
    assert_user_error(&["vae", "--device", "cuda", "--steps", "1"], 1, "CUDA:");
    assert_user_error(&["selftest", "--device", "cuda"], 1, "CUDA:");
}

#[test]
fn selftest_on_the_kernel_emulation_checks_every_kernel_and_times_steps() {
    let out = hnca().args(["selftest", "--device", "emu", "--layers", "12,8", "--batch-size", "3", "--steps", "1"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for needle in [
        "matmul_forward",
        "bernoulli_sample",
        "credit_pass",
        "training step gradients, disarm",
        "conv bandit step gradients, reinforce-nb",
        "timing: 1 hnca training steps",
        "all checks passed",
    ] {
        assert!(stdout.contains(needle), "selftest output lacks {needle:?}:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn bench_prints_the_cost_model_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.json");
    let out = hnca()
        .args(["bench", "--models", "8;16,8", "--estimators", "hnca,reinforce", "--seconds", "0.05", "--batch-size", "4", "--json"])
        .arg(&path)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("ns/edge/core"), "{stdout}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(rows.len(), 4);
    // 1x8 with hnca at batch 4: every parent against the 784 pixels of every row; e^{±W} once
    // per weight, an exponential per pixel per row, a logarithm per parent per lane per row.
    assert_eq!(rows[0]["estimator"], "hnca");
    assert_eq!(rows[0]["credit_edges_per_step"], 4 * 8 * 784);
    assert_eq!(rows[0]["credit_transcendentals_per_step"], 2 * 8 * 784 + 4 * 784 + 16 * 4 * 8);
    // 16,8: layer 1 against the pixels and (with entropies) the 8 above; layer 2 against the 16.
    assert_eq!(rows[2]["estimator"], "hnca");
    assert_eq!(rows[2]["credit_edges_per_step"], 4 * 16 * 784 + 4 * 16 * 8 + 4 * 8 * 16);
    assert!(rows[0]["steps_per_second"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["credit_ns_per_edge_per_core"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["credit_ns_per_edge_per_core"].is_null(), "reinforce has no credit pass");
    assert_eq!(rows[3]["model"], serde_json::json!([16, 8]));
    // Estimators by their metrics names: three samples per layer are 1 + 2·2 chains per step.
    let out =
        hnca().args(["bench", "--models", "16,8", "--estimators", "loo-k3", "--seconds", "0.05", "--batch-size", "4"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        stdout.lines().any(|l| l.split_whitespace().take(2).eq(["16,8", "loo-k3"]) && l.split_whitespace().nth(4) == Some("5")),
        "{stdout}"
    );
    assert_user_error(&["bench", "--models", "8;x"], 2, "--models");
    assert_user_error(&["bench", "--seconds", "0"], 2, "positive");
}

#[test]
fn bandit_trains_writes_metrics_and_reproduces_from_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (rep, est) in [(0, "hnca"), (1, "hnca"), (2, "reinforce-nb")] {
        let path = dir.path().join(format!("b{rep}.jsonl"));
        let out = hnca()
            .args(["bandit", "--layers", "16,8", "--steps", "60", "--test-every", "1", "--seed", "2", "--estimator", est, "--metrics"])
            .arg(&path)
            .assert()
            .success();
        let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
        assert!(stdout.starts_with("epoch 1/100 step 60 train_accuracy "), "{stdout}");
        let m = read_metrics(&path).remove(0);
        assert_eq!((m["experiment"].as_str(), m["estimator"].as_str(), m["step"].as_u64()), (Some("bandit"), Some(est), Some(60)));
        for field in ["train_accuracy", "test_accuracy"] {
            let acc = m[field].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{field} {acc}");
        }
        assert!(m["grad_var"].as_f64().unwrap() > 0.0);
        assert_eq!(m["grad_var_layers"].as_array().unwrap().len(), 3, "two hidden layers and the softmax");
        runs.push((m["train_accuracy"].as_f64().unwrap(), m["grad_var"].as_f64().unwrap()));
    }
    assert_eq!(runs[0], runs[1], "the same seed gave different runs");
    assert_ne!(runs[0], runs[2]);
    assert_user_error(&["bandit", "--layers", "0"], 2, "--layers");
    assert_user_error(&["bandit", "--lr", "-1"], 2, "--lr");
    assert_user_error(&["bandit", "--data-dir", "/nonexistent-hnca-dir"], 1, "nonexistent-hnca-dir");
}

/// `--features conv`: the nonlinear bandit trains, logs its feature network and one gradient
/// variance per layer (two convolutions, the Bernoulli layer, the softmax), reproduces from its
/// seed, names `--rho-gradient` in its estimator, and refuses what it cannot run.
#[test]
fn the_conv_bandit_trains_writes_metrics_and_reproduces_from_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (rep, est, extra) in [(0, "hnca", &[][..]), (1, "hnca", &[][..]), (2, "reinforce", &[][..]), (3, "hnca", &["--rho-gradient"][..])] {
        let path = dir.path().join(format!("c{rep}.jsonl"));
        let test_every = if rep == 0 { "1" } else { "0" };
        let out = hnca()
            .args(["bandit", "--features", "conv", "--conv-channels", "4", "--steps", "40", "--seed", "2", "--estimator", est])
            .args(["--test-every", test_every])
            .args(extra)
            .arg("--metrics")
            .arg(&path)
            .assert()
            .success();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("2 conv layers of 4 channels") && stderr.contains("hidden layers [200]"), "{stderr}");
        assert_eq!(stderr.contains("differentiating through rho"), !extra.is_empty(), "{stderr}");
        let m = read_metrics(&path).remove(0);
        let label = if extra.is_empty() { est.to_string() } else { format!("{est}+rho-gradient") };
        assert_eq!(
            (m["experiment"].as_str(), m["estimator"].as_str(), m["step"].as_u64()),
            (Some("bandit"), Some(label.as_str()), Some(40))
        );
        assert_eq!((m["features"].as_str(), m["conv_layers"].as_u64(), m["conv_channels"].as_u64()), (Some("conv"), Some(2), Some(4)));
        assert_eq!(m["layers"], serde_json::json!([200]));
        assert_eq!(m["grad_var_layers"].as_array().unwrap().len(), 4, "two convolutions, the Bernoulli layer and the softmax");
        if rep == 0 {
            let acc = m["test_accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "test accuracy {acc}");
        }
        runs.push((m["train_accuracy"].as_f64().unwrap(), m["grad_var"].as_f64().unwrap()));
    }
    assert_eq!(runs[0], runs[1], "the same seed gave different runs");
    assert_ne!(runs[0], runs[2]);
    assert_ne!(runs[0].1, runs[3].1, "--rho-gradient changed nothing");
    assert_user_error(&["bandit", "--features", "conv", "--conv-layers", "0"], 2, "--conv-layers must be 1 to 16");
    assert_user_error(&["bandit", "--features", "conv", "--conv-channels", "0"], 2, "--conv-channels must be 1 to 256");
    assert_user_error(&["bandit", "--features", "conv", "--conv-layers", "14"], 2, "at most 13 layers fit");
    assert_user_error(&["bandit", "--conv-layers", "2"], 2, "--features conv");
    assert_user_error(&["bandit", "--rho-gradient"], 2, "needs --features conv");
    assert_user_error(
        &["bandit", "--features", "conv", "--rho-gradient", "--estimator", "reinforce"],
        2,
        "does not apply to --estimator reinforce",
    );
    assert_user_error(&["bandit", "--features", "conv", "--conv-channels", "256", "--batch-size", "60000"], 2, "more than 2^31");
}
