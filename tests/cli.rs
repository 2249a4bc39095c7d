//! The real `hnca` binary, end to end.

mod common;

use assert_cmd::Command;

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
    for est in ["hnca", "hnca-nb", "reinforce", "reinforce-nb", "loo", "disarm"] {
        let mut runs = Vec::new();
        for rep in 0..2 {
            let path = dir.path().join(format!("{est}-{rep}.jsonl"));
            hnca()
                .args(["vae", "--layers", "16,8", "--steps", "30", "--test-every", "0", "--seed", "3", "--estimator", est, "--metrics"])
                .arg(&path)
                .assert()
                .success();
            let m = read_metrics(&path).remove(0);
            assert_eq!(m["estimator"], est);
            assert!(m["test_elbo"].is_null());
            runs.push((m["train_elbo"].as_f64().unwrap(), m["grad_var"].as_f64().unwrap()));
        }
        assert!(runs[0].0.is_finite());
        assert_eq!(runs[0], runs[1], "{est}: the same seed gave different runs");
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

#[test]
fn ablation_flags_and_threshold_binarization_run() {
    hnca()
        .args(["vae", "--layers", "8,8", "--steps", "5", "--test-every", "0", "--all-child", "--full-reward", "--binarize", "threshold"])
        .assert()
        .success();
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
    assert!(stdout.contains("ns/eval/core"), "{stdout}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(rows.len(), 4);
    // 1x8 with hnca at batch 4: every parent against the 784 pixels, plus each pixel once.
    assert_eq!(rows[0]["estimator"], "hnca");
    assert_eq!(rows[0]["credit_pass_evaluations_per_step"], 4 * 8 * 784 + 4 * 784);
    assert!(rows[0]["steps_per_second"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["credit_ns_per_evaluation_per_core"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["credit_ns_per_evaluation_per_core"].is_null(), "reinforce has no credit pass");
    assert_eq!(rows[3]["model"], serde_json::json!([16, 8]));
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
