//! Checkpoints through the real binary: an interrupted and resumed run ends bit-identical to one
//! that ran straight through; bad checkpoints are one-line errors; a diverged run keeps the last
//! good checkpoint; eval and sample read checkpoints.

use std::path::Path;

use assert_cmd::Command;
use hnca::run::checkpoint::Checkpoint;

/// A small, fast VAE run on the CPU (600 steps per epoch).
fn vae(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("hnca").unwrap();
    cmd.current_dir(dir).args(["vae", "--layers", "16,8", "--batch-size", "100", "--test-every", "0", "--device", "cpu", "--threads", "2"]);
    cmd
}

fn stderr_of(cmd: &mut Command) -> String {
    let out = cmd.assert().failure().code(1);
    String::from_utf8_lossy(&out.get_output().stderr).to_string()
}

/// The one line of an error, after the run's opening line.
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0]
}

#[test]
fn an_interrupted_and_resumed_run_ends_with_exactly_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Double CV with three samples carries its learned coefficients and their Adam moments.
    for (est, samples) in [("hnca", None), ("disarm", None), ("double-cv", Some("3"))] {
        let run = |d: &Path| {
            let mut cmd = vae(d);
            cmd.args(["--estimator", est]);
            if let Some(k) = samples {
                cmd.args(["--samples", k]);
            }
            cmd
        };
        run(d).args(["--epochs", "3", "--save", "straight.ck"]).assert().success();
        // Stopped mid-epoch 2, resumed; stopped again at the end of epoch 2, resumed.
        run(d).args(["--epochs", "3", "--steps", "950", "--save", "a.ck", "--metrics", "a.jsonl"]).assert().success();
        run(d).args(["--epochs", "2", "--resume", "a.ck", "--save", "a.ck", "--metrics", "a.jsonl"]).assert().success();
        let mid = Checkpoint::load(&d.join("a.ck")).unwrap();
        assert_eq!(mid.u64_field("step").unwrap(), 1200);
        assert_eq!(mid.u64_field("epoch").unwrap(), 2);
        run(d).args(["--epochs", "3", "--resume", "a.ck", "--save", "a.ck", "--metrics", "a.jsonl"]).assert().success();
        let straight = std::fs::read(d.join("straight.ck")).unwrap();
        let resumed = std::fs::read(d.join("a.ck")).unwrap();
        assert!(straight == resumed, "{est}: the resumed run's checkpoint differs from the straight run's");
        let ck = Checkpoint::from_bytes(&straight).unwrap();
        assert_eq!(ck.u64_field("step").unwrap(), 1800);
        assert_eq!(ck.str_field("estimator").unwrap(), est);
        assert_eq!(ck.u64_field("samples").unwrap(), samples.map_or(if est == "hnca" { 1 } else { 2 }, |k| k.parse().unwrap()));
        if est == "double-cv" {
            assert!(ck.tensors.iter().any(|(name, v)| name == "cv/layer1" && v.len() == 1 && v[0] != 0.0), "no learned coefficient saved");
            // Another K is another run.
            let mut other = vae(d);
            other.args(["--estimator", est, "--samples", "4", "--epochs", "3", "--resume", "straight.ck"]);
            let line = error_line(&stderr_of(&mut other)).to_string();
            assert!(line.contains("--estimator double-cv-k3 (checkpoint) vs double-cv-k4"), "{line}");
        }
        // The metrics file reads as one run: the epochs' steps in order, nothing lost.
        let steps: Vec<u64> = std::fs::read_to_string(d.join("a.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![600, 950, 1200, 1800], "{est}");
        assert!(!d.join("a.ck.tmp").exists());
    }
}

#[test]
fn bad_checkpoints_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vae(d).args(["--epochs", "1", "--steps", "10", "--save", "good.ck"]).assert().success();
    let good = std::fs::read(d.join("good.ck")).unwrap();
    std::fs::write(d.join("truncated.ck"), &good[..good.len() / 2]).unwrap();
    let mut flipped = good.clone();
    let i = good.len() - 100;
    flipped[i] ^= 1;
    std::fs::write(d.join("flipped.ck"), &flipped).unwrap();
    std::fs::write(d.join("foreign.ck"), b"P5\n28 28\n255\n").unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--resume", "truncated.ck"], "truncated.ck: truncated"),
        (&["--resume", "flipped.ck"], "flipped.ck: corrupt: the checksum does not match"),
        (&["--resume", "foreign.ck"], "foreign.ck: not an hnca checkpoint"),
        (&["--resume", "missing.ck"], "missing.ck: No such file"),
        (&["--resume", "good.ck", "--seed", "4"], "good.ck: does not match this run: --seed 0 (checkpoint) vs 4"),
        (&["--resume", "good.ck", "--estimator", "loo"], "does not match this run: --estimator hnca (checkpoint) vs loo"),
    ];
    for (args, want) in cases {
        let stderr = stderr_of(vae(d).args(["--epochs", "2"]).args(args));
        let line = error_line(&stderr);
        assert!(line.contains(want), "{args:?}: {line}");
    }
    for (file, want) in [("truncated.ck", "truncated"), ("foreign.ck", "not an hnca checkpoint")] {
        let mut eval = Command::cargo_bin("hnca").unwrap();
        let stderr = stderr_of(eval.current_dir(d).args(["eval", "--device", "cpu", "--checkpoint", file]));
        assert!(error_line(&stderr).contains(want), "{stderr}");
    }
    // Nothing was written over the good checkpoint.
    assert_eq!(std::fs::read(d.join("good.ck")).unwrap(), good);
}

#[test]
fn a_diverged_run_names_the_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One update per epoch and an absurd learning rate: a checkpoint after step 1, then the
    // parameters overflow in step 2.
    let mut cmd = Command::cargo_bin("hnca").unwrap();
    cmd.current_dir(d).args(["vae", "--layers", "16,8", "--batch-size", "60000", "--lr", "1e25", "--epochs", "5"]);
    let stderr = stderr_of(cmd.args(["--test-every", "0", "--device", "cpu", "--save", "run.ck", "--metrics", "m.jsonl"]));
    let line = error_line(&stderr);
    assert!(line.starts_with("error: training diverged at step 2: "), "{line}");
    assert!(line.contains("NaN") && line.contains("enc1.w"), "{line}");
    assert!(line.contains("the last good checkpoint, run.ck (step 1), is kept"), "{line}");
    let ck = Checkpoint::load(&d.join("run.ck")).unwrap();
    assert_eq!(ck.u64_field("step").unwrap(), 1);
    assert!(ck.tensors.iter().all(|(_, v)| v.iter().all(|x| x.is_finite())));
    let lines = std::fs::read_to_string(d.join("m.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
}

#[test]
fn eval_and_sample_read_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vae(d).args(["--epochs", "1", "--save", "m.ck"]).assert().success();
    let mut eval = Command::cargo_bin("hnca").unwrap();
    let out = eval.current_dir(d).args(["eval", "--checkpoint", "m.ck", "--k", "5", "--device", "cpu", "--json"]).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["images"], 10000);
    assert_eq!(v["k"], 5);
    let (elbo, iwae) = (v["elbo"].as_f64().unwrap(), v["iwae"].as_f64().unwrap());
    assert!(elbo < 0.0 && elbo > -543.5, "{v}");
    assert!(iwae > elbo && iwae < 0.0, "{v}");
    assert!(v["elbo_std_err"].as_f64().unwrap() > 0.0 && v["elbo_std_err"].as_f64().unwrap() < 2.0, "{v}");
    for extra in [&[][..], &["--reconstruct"][..]] {
        let mut sample = Command::cargo_bin("hnca").unwrap();
        sample
            .current_dir(d)
            .args(["sample", "--checkpoint", "m.ck", "--out", "s.png", "--rows", "3", "--cols", "5"])
            .args(extra)
            .assert()
            .success();
        let png = std::fs::read(d.join("s.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h) = (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        // 28x28 digits drawn 2x with 2-pixel margins; with --reconstruct, pairs of digits with
        // 8-pixel margins between the pairs.
        let width = if extra.is_empty() { 5 * 58 + 2 } else { 10 * 58 + 2 + 4 * 6 };
        assert_eq!((w, h), (width, 3 * 58 + 2), "{extra:?}");
    }
}

#[test]
fn the_bandit_resumes_exactly_and_its_checkpoints_are_not_the_vaes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bandit = || {
        let mut cmd = Command::cargo_bin("hnca").unwrap();
        cmd.current_dir(d).args([
            "bandit",
            "--layers",
            "16,8",
            "--batch-size",
            "100",
            "--test-every",
            "0",
            "--device",
            "cpu",
            "--epochs",
            "2",
        ]);
        cmd
    };
    bandit().args(["--save", "straight.ck"]).assert().success();
    bandit().args(["--steps", "700", "--save", "a.ck"]).assert().success();
    bandit().args(["--resume", "a.ck", "--save", "a.ck"]).assert().success();
    assert!(std::fs::read(d.join("straight.ck")).unwrap() == std::fs::read(d.join("a.ck")).unwrap(), "resumed bandit differs");
    let stderr = stderr_of(vae(d).args(["--resume", "a.ck"]));
    assert!(error_line(&stderr).contains("a.ck: a checkpoint of the bandit, not of the VAE"), "{stderr}");
    let stderr = stderr_of(bandit().args(["--resume", "a.ck", "--estimator", "reinforce"]));
    assert!(error_line(&stderr).contains("a.ck: does not match this run: --estimator hnca (checkpoint) vs reinforce"), "{stderr}");
}

/// The nonlinear bandit (`--features conv`, through ρ as well) resumed mid-epoch ends
/// byte-identical to a straight run; its checkpoint refuses a different feature network.
#[test]
fn the_conv_bandit_resumes_exactly_and_refuses_another_feature_network() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conv_bandit = |channels: &str| {
        let mut cmd = Command::cargo_bin("hnca").unwrap();
        cmd.current_dir(d).args(["bandit", "--features", "conv", "--conv-channels", channels, "--layers", "16", "--batch-size", "100"]);
        cmd.args(["--test-every", "0", "--device", "cpu", "--rho-gradient"]);
        cmd
    };
    let bandit = || conv_bandit("2");
    bandit().args(["--steps", "90", "--save", "straight.ck"]).assert().success();
    bandit().args(["--steps", "40", "--save", "a.ck"]).assert().success();
    bandit().args(["--steps", "90", "--resume", "a.ck", "--save", "a.ck"]).assert().success();
    assert!(std::fs::read(d.join("straight.ck")).unwrap() == std::fs::read(d.join("a.ck")).unwrap(), "resumed conv bandit differs");
    let ck = Checkpoint::load(&d.join("a.ck")).unwrap();
    assert_eq!((ck.str_field("features").unwrap(), ck.u64_field("conv_channels").unwrap()), ("conv", 2));
    assert!(ck.bool_field("rho_gradient").unwrap());
    assert!(ck.tensors.iter().any(|(name, v)| name == "param/conv2.w" && v.len() == 3 * 3 * 2 * 2));
    let stderr = stderr_of(conv_bandit("3").args(["--resume", "a.ck"]));
    assert!(error_line(&stderr).contains("--conv-channels 2 (checkpoint) vs 3"), "{stderr}");
    let mut linear = Command::cargo_bin("hnca").unwrap();
    linear.current_dir(d).args(["bandit", "--layers", "16", "--batch-size", "100", "--device", "cpu", "--resume", "a.ck"]);
    let stderr = stderr_of(&mut linear);
    assert!(error_line(&stderr).contains("--features conv (checkpoint) vs linear"), "{stderr}");
}
