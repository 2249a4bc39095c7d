//! `hnca sweep` and `hnca report` through the real binary: every run of a sweep ends exactly as
//! the same run alone (R = 1, 3 and 7 runs trained at once), a run made to diverge stops while
//! the others go on, SIGTERM stops runs at a step with a checkpoint and the continued runs end
//! identical, `--task` trains its group only, the Slurm script says what it should, mistakes are
//! one-line errors, and the report's numbers are the runs' own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use hnca::run::checkpoint::Checkpoint;
use serde_json::Value;

/// The options every run here shares: a small VAE on the CPU, 600 steps per epoch.
const TINY: [&str; 14] = [
    "--layers",
    "16,8",
    "--batch-size",
    "100",
    "--test-every",
    "0",
    "--device",
    "cpu",
    "--threads",
    "2",
    "--lr",
    "1e-3",
    "--binarize",
    "dynamic",
];

fn hnca() -> Command {
    Command::cargo_bin("hnca").unwrap()
}

fn sweep(out: &Path, extra: &[&str]) -> Command {
    let mut c = hnca();
    c.args(["sweep", "vae", "--eval-k", "5", "--eval-images", "300", "--out"]).arg(out).args(TINY).args(extra);
    c
}

fn alone(dir: &Path, seed: u64, estimator: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (ck, metrics) = (dir.join(format!("alone-{estimator}-{seed}.ck")), dir.join(format!("alone-{estimator}-{seed}.jsonl")));
    hnca()
        .args(["vae", "--estimator", estimator, "--seed", &seed.to_string()])
        .args(TINY)
        .args(extra)
        .arg("--save")
        .arg(&ck)
        .arg("--metrics")
        .arg(&metrics)
        .assert()
        .success();
    (ck, metrics)
}

/// The metrics lines without their timings.
fn untimed(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds").unwrap();
            o.remove("steps_per_second").unwrap();
            v
        })
        .collect()
}

fn run_dir(out: &Path, estimator: &str, seed: u64) -> PathBuf {
    out.join(format!("vae-{estimator}-s{seed}"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Checks that the sweep's run equals the run alone: checkpoint bytes and the last metrics line.
fn assert_same_run(run: &Path, alone: &(PathBuf, PathBuf)) {
    let (a, b) = (std::fs::read(run.join("checkpoint.ck")).unwrap(), std::fs::read(&alone.0).unwrap());
    assert!(a == b, "{}: the checkpoint differs from the same run's alone", run.display());
    let (m, n) = (untimed(&run.join("metrics.jsonl")), untimed(&alone.1));
    assert_eq!(m.last(), n.last(), "{}", run.display());
}

#[test]
fn every_run_of_a_sweep_equals_the_same_run_alone_with_1_3_and_7_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alone: Vec<_> = (0..7).map(|s| alone(d, s, "hnca", &["--steps", "200"])).collect();
    // Batched (one step for every run, their buffers side by side), and for R = 3 also as
    // separate trainers on threads of their own (--batch 1).
    for (r, seeds, batch) in [(1, "5", None), (3, "0-2", None), (7, "0-6", None), (3, "0-2", Some("1"))] {
        let out = d.join(format!("r{r}-{}", batch.unwrap_or("all")));
        let mut args = vec!["--estimators", "hnca", "--seeds", seeds, "--steps", "200"];
        if let Some(b) = batch {
            args.extend(["--batch", b, "--parallel", "3"]);
        }
        let res = sweep(&out, &args).assert().success();
        let stderr = String::from_utf8_lossy(&res.get_output().stderr).to_string();
        let how = match (r, batch) {
            (1, _) => "1 of 1 runs to train on cpu\n".to_string(),
            (_, None) => format!("{r} of {r} runs to train as one batch on cpu\n"),
            (_, Some(_)) => format!("{r} of {r} runs to train on cpu, {r} at once"),
        };
        assert!(stderr.contains(&how), "{stderr}");
        assert_eq!(stderr.contains("trained as one batch"), r > 1 && batch.is_none(), "{stderr}");
        let seeds: Vec<u64> = if r == 1 { vec![5] } else { (0..r).collect() };
        for s in seeds {
            let run = run_dir(&out, "hnca", s);
            assert_same_run(&run, &alone[s as usize]);
            let eval = read_json(&run.join("eval.json"));
            assert_eq!(eval["step"], 200);
            assert_eq!(eval["seed"], s);
            assert_eq!(eval["k"], 5);
            // The evaluation is `hnca eval` of the checkpoint with the run's seed.
            let printed = hnca()
                .args(["eval", "--k", "5", "--images", "300", "--device", "cpu", "--json", "--seed", &s.to_string(), "--checkpoint"])
                .arg(run.join("checkpoint.ck"))
                .output()
                .unwrap();
            let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
            assert_eq!(eval["results"][0]["mean"], printed["elbo"]);
            assert_eq!(eval["results"][1]["mean"], printed["iwae"]);
            assert_eq!(eval["results"][1]["std_err"], printed["iwae_std_err"]);
        }
    }
    // Started again, a finished sweep trains nothing.
    let res = sweep(&d.join("r3-all"), &["--estimators", "hnca", "--seeds", "0-2", "--steps", "200"]).assert().success();
    let stderr = String::from_utf8_lossy(&res.get_output().stderr).to_string();
    assert!(stderr.contains("all 3 runs are done") && !stderr.contains("starting"), "{stderr}");
}

#[test]
fn a_run_made_to_diverge_stops_with_its_checkpoint_kept_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("runs");
    sweep(&out, &["--estimators", "reinforce", "--seeds", "0-2", "--steps", "100"]).assert().success();
    // Seed 1's saved Adam second moments made negative: its next update's square root is NaN.
    let poisoned = run_dir(&out, "reinforce", 1).join("checkpoint.ck");
    let mut ck = Checkpoint::load(&poisoned).unwrap();
    let v = ck.tensors.iter_mut().find(|(n, _)| n == "adam_v/enc1.w").unwrap();
    v.1.iter_mut().for_each(|x| *x = -1.0);
    ck.save(&poisoned).unwrap();
    let poisoned_bytes = std::fs::read(&poisoned).unwrap();

    let res = sweep(&out, &["--estimators", "reinforce", "--seeds", "0-2", "--steps", "200"]).assert().success();
    let stderr = String::from_utf8_lossy(&res.get_output().stderr).to_string();
    assert!(stderr.contains("vae-reinforce-s1: diverged at step") && stderr.contains("2 finished, 1 diverged"), "{stderr}");
    let diverged = read_json(&run_dir(&out, "reinforce", 1).join("diverged.json"));
    let step = diverged["step"].as_u64().unwrap();
    assert!((101..=200).contains(&step), "{diverged}");
    assert!(diverged["kept"].as_str().unwrap().contains("left as it was"), "{diverged}");
    assert!(std::fs::read(&poisoned).unwrap() == poisoned_bytes, "the diverged run's last checkpoint was overwritten");
    assert!(!run_dir(&out, "reinforce", 1).join("eval.json").exists());
    for s in [0, 2] {
        assert_same_run(&run_dir(&out, "reinforce", s), &alone(d, s, "reinforce", &["--steps", "200"]));
    }
    // Started again, the sweep leaves the diverged run be, and the report counts it.
    let res = sweep(&out, &["--estimators", "reinforce", "--seeds", "0-2", "--steps", "200"]).assert().success();
    let stderr = String::from_utf8_lossy(&res.get_output().stderr).to_string();
    assert!(stderr.contains("vae-reinforce-s1: diverged at step") && stderr.contains("all 3 runs are done"), "{stderr}");
    let table = hnca().arg("report").arg(&out).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("| reinforce | 2 of 3 (1 diverged) |"), "{table}");
}

/// Starts `args` with its output captured, waits until `ready` exists, and sends it SIGTERM;
/// returns its exit status and standard error.
fn terminate_when(mut cmd: std::process::Command, ready: &Path) -> (Option<i32>, String) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "{} never appeared", ready.display());
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {} appeared", ready.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn sigterm_stops_a_run_at_a_step_with_a_checkpoint_and_the_continued_run_ends_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let straight = alone(d, 0, "hnca", &["--epochs", "6"]);
    let (ck, metrics) = (d.join("a.ck"), d.join("a.jsonl"));
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("hnca"));
    cmd.args(["vae", "--epochs", "6"]).args(TINY).arg("--save").arg(&ck).arg("--metrics").arg(&metrics);
    // The metrics file appears after the first epoch: the signal lands in a later one.
    let (code, stderr) = terminate_when(cmd, &metrics);
    assert_eq!(code, Some(75), "{stderr}");
    let line: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(line.len(), 1, "{stderr}");
    assert!(line[0].starts_with("error: stopped by SIGTERM after step ") && line[0].contains("continue with --resume"), "{stderr}");
    let step = Checkpoint::load(&ck).unwrap().u64_field("step").unwrap();
    assert!((600..3600).contains(&step), "stopped at step {step}");
    assert!(line[0].contains(&format!("after step {step};")), "{stderr}");
    hnca()
        .args(["vae", "--epochs", "6"])
        .args(TINY)
        .arg("--save")
        .arg(&ck)
        .arg("--metrics")
        .arg(&metrics)
        .arg("--resume")
        .arg(&ck)
        .assert()
        .success();
    assert!(std::fs::read(&ck).unwrap() == std::fs::read(&straight.0).unwrap(), "stopped at {step}: the continued run differs");
    // Every epoch's line as if it had never stopped, the interrupted epoch's included.
    assert_eq!(untimed(&metrics), untimed(&straight.1), "stopped at {step}");
}

#[test]
fn sigterm_stops_a_sweep_and_the_same_command_continues_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = ["--estimators", "hnca,loo", "--seeds", "0", "--epochs", "5", "--parallel", "2"];
    sweep(&d.join("straight"), &args).assert().success();
    let out = d.join("stopped");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("hnca"));
    cmd.args(["sweep", "vae", "--eval-k", "5", "--eval-images", "300", "--out"]).arg(&out).args(TINY).args(args);
    let (code, stderr) = terminate_when(cmd, &run_dir(&out, "hnca", 0).join("metrics.jsonl"));
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("error: stopped by SIGTERM: 2 runs saved a checkpoint"), "{stderr}");
    for est in ["hnca", "loo"] {
        assert!(!run_dir(&out, est, 0).join("eval.json").exists(), "{est} finished before the signal: {stderr}");
    }
    let res = sweep(&out, &args).assert().success();
    let stderr = String::from_utf8_lossy(&res.get_output().stderr).to_string();
    assert!(stderr.contains("continuing from its checkpoint"), "{stderr}");
    for est in ["hnca", "loo"] {
        let (a, b) = (run_dir(&out, est, 0), run_dir(&d.join("straight"), est, 0));
        assert!(std::fs::read(a.join("checkpoint.ck")).unwrap() == std::fs::read(b.join("checkpoint.ck")).unwrap(), "{est}");
        assert_eq!(untimed(&a.join("metrics.jsonl")), untimed(&b.join("metrics.jsonl")), "{est}");
        let (ea, eb) = (read_json(&a.join("eval.json")), read_json(&b.join("eval.json")));
        assert_eq!(ea["results"], eb["results"], "{est}");
    }
}

#[test]
fn a_task_trains_its_group_of_runs_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let grid = ["--estimators", "hnca,reinforce", "--seeds", "3-4", "--steps", "50", "--runs-per-task", "3"];
    sweep(&out, &grid).arg("--task").arg("1").assert().success();
    let trained: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(trained, vec!["vae-reinforce-s4".to_string()]);
    assert!(out.join("vae-reinforce-s4/eval.json").exists());
}

/// A name with options (issue 16's K, an HNCA ablation) is the run `hnca vae` trains with those
/// options: byte for byte the same checkpoint.
#[test]
fn estimator_names_with_options_train_the_runs_their_options_give() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let steps = ["--steps", "30"];
    sweep(&out, &[&["--estimators", "arms-k3,hnca+all-child", "--seeds", "2"][..], &steps[..]].concat()).assert().success();
    let arms = alone(dir.path(), 2, "arms", &[&["--samples", "3"][..], &steps[..]].concat());
    assert_same_run(&run_dir(&out, "arms-k3", 2), &arms);
    let ablation = alone(dir.path(), 2, "hnca", &[&["--all-child"][..], &steps[..]].concat());
    assert_same_run(&run_dir(&out, "hnca+all-child", 2), &ablation);
}

#[test]
fn the_slurm_script_is_a_job_array_of_this_command_with_task_added() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("my runs");
    let res = sweep(&out, &["--estimators", "hnca,loo", "--seeds", "0-1", "--steps", "50", "--executor", "slurm", "--runs-per-task", "3"])
        .args(["--partition", "gpu", "--time", "1:00:00", "--gres", "gpu:1", "--sbatch-arg=--cpus-per-task=4", "--dry-run"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&res.get_output().stderr).to_string();
    assert!(stderr.contains("2 tasks of up to 3 runs (4 runs)"), "{stderr}");
    let script = std::fs::read_to_string(out.join("sweep.sbatch")).unwrap();
    for line in [
        "#SBATCH --array=0-1",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=1:00:00",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --requeue",
        "#SBATCH --signal=TERM@120",
        "#SBATCH --open-mode=append",
        "if [ \"$status\" -eq 75 ]; then",
        "    scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"",
    ] {
        assert!(script.lines().any(|l| l == line), "no line {line:?} in\n{script}");
    }
    let srun = script.lines().find(|l| l.starts_with("srun --ntasks=1 ")).unwrap();
    assert!(srun.contains("'sweep' 'vae' ") && srun.ends_with(" --task \"$SLURM_ARRAY_TASK_ID\""), "{srun}");
    assert!(srun.contains("my runs'") && !srun.contains("--dry-run"), "{srun}");
    assert!(!out.join("vae-hnca-s0").exists(), "a dry run trained");
    // The script's command, run as task 1, is accepted (the last run only: loo, seed 1).
    let words: Vec<String> = shell_words(srun.trim_start_matches("srun --ntasks=1 ").trim_end_matches(" --task \"$SLURM_ARRAY_TASK_ID\""));
    assert!(words[0].ends_with("hnca"));
    hnca().args(&words[1..]).args(["--task", "1"]).assert().success();
    assert!(out.join("vae-loo-s1/eval.json").exists() && !out.join("vae-loo-s0").exists());
}

/// Splits a line of single-quoted words (as the script writes them).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while let Some(start) = rest.strip_prefix('\'') {
        let end = start.find('\'').unwrap();
        words.push(start[..end].to_string());
        rest = start[end + 1..].trim_start();
    }
    assert!(rest.is_empty(), "unquoted: {rest}");
    words
}

/// Runs `args` after `sweep vae`, expecting exit status `code` and one `error:` line containing
/// `needle`.
fn assert_sweep_error(args: &[&str], code: i32, needle: &str) {
    let out = hnca().args(["sweep", "vae"]).args(args).env("PATH", "/nonexistent").assert().failure().code(code);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    assert!(errors[0].contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn mistakes_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    let o = out.to_str().unwrap();
    assert_sweep_error(&["--estimators", "hnca", "--seeds", "4-0", "--out", o], 2, "--seeds \"4-0\": the range 4-0 runs backwards");
    assert_sweep_error(&["--estimators", "hnca", "--seeds", "x", "--out", o], 2, "not a seed");
    assert_sweep_error(&["--estimators", "hnca,magic", "--out", o], 2, "unknown estimator \"magic\" for vae; choose from hnca, hnca-nb");
    // Names as the metrics write them carry options, and are checked as the options are.
    assert_sweep_error(&["--estimators", "loo-k1", "--out", o], 2, "--samples must be 2 to 64");
    assert_sweep_error(&["--estimators", "reinforce+all-child", "--out", o], 2, "HNCA ablations");
    assert_sweep_error(
        &["--estimators", "hnca", "--seeds", "0-3", "--task", "4", "--out", o],
        2,
        "--task 4: this sweep has 4 tasks (0 to 3)",
    );
    assert_sweep_error(&["--estimators", "hnca", "--batch", "0", "--out", o], 2, "'--batch <N>': 0 is not in 1..=1024");
    assert_sweep_error(&["--estimators", "hnca", "--metrics", "m.jsonl", "--out", o], 2, "--metrics is not an option of a sweep");
    assert_sweep_error(&["--estimators", "hnca", "--seed", "3", "--out", o], 2, "--seed");
    assert_sweep_error(&["--estimators", "hnca,reinforce", "--all-child", "--out", o], 2, "HNCA ablations");
    assert_sweep_error(&["--estimators", "hnca", "--save-every", "0", "--batch-size", "0", "--out", o], 2, "--batch-size");
    assert_sweep_error(
        &["--estimators", "hnca", "--executor", "slurm", "--time", "1 h", "--out", o],
        2,
        "--time \"1 h\": must be one word",
    );
    assert_sweep_error(&["--estimators", "hnca", "--executor", "slurm", "--out", o], 1, "sbatch could not be run");
    assert!(out.join("sweep.sbatch").exists(), "the script is written before sbatch is tried");
    let missing = dir.path().join("nothing");
    let report = hnca().arg("report").arg(&missing).assert().failure().code(1);
    assert!(String::from_utf8_lossy(&report.get_output().stderr).starts_with("error: "));
}

#[test]
fn the_report_is_the_mean_and_standard_error_of_the_runs_own_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    sweep(&out, &["--estimators", "reinforce,hnca", "--seeds", "0-2", "--steps", "60"]).assert().success();
    let res = hnca().arg("report").arg(&out).arg("--json").arg("--figures").arg(dir.path().join("figs")).assert().success();
    let report: Value = serde_json::from_slice(&res.get_output().stdout).unwrap();
    let ests = report["experiments"][0]["estimators"].as_array().unwrap();
    // In the order of --estimators.
    let names: Vec<&str> = ests.iter().map(|e| e["estimator"].as_str().unwrap()).collect();
    assert_eq!(names, ["reinforce", "hnca"]);
    for e in ests {
        let name = e["estimator"].as_str().unwrap();
        assert_eq!((e["runs"].as_u64(), e["finished"].as_u64()), (Some(3), Some(3)), "{e}");
        let evals: Vec<Value> = (0..3).map(|s| read_json(&run_dir(&out, name, s).join("eval.json"))).collect();
        let bound: Vec<f64> = evals.iter().map(|v| v["results"][1]["mean"].as_f64().unwrap()).collect();
        let train: Vec<f64> = (0..3)
            .map(|s| untimed(&run_dir(&out, name, s).join("metrics.jsonl")).last().unwrap()["train_elbo"].as_f64().unwrap())
            .collect();
        for (key, xs) in [("test_bound", &bound), ("train_elbo", &train)] {
            let mean = xs.iter().sum::<f64>() / 3.0;
            let se = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0 / 3.0).sqrt();
            assert!((e[key]["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{name} {key}: {e}");
            assert!((e[key]["std_err"].as_f64().unwrap() - se).abs() < 1e-9, "{name} {key}: {e}");
        }
        assert!(e["steps_per_second"]["mean"].as_f64().unwrap() > 0.0 && e["wall_seconds"]["mean"].as_f64().unwrap() > 0.0);
    }
    let table = hnca().arg("report").arg(&out).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table
            .contains("| estimator | runs | train ELBO (nats) | test ELBO | test bound, K = 5 | gradient variance | steps/s | wall time |"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("| hnca | 3 | -")), "{table}");
    // The title names the setup the runs share, as the figures do.
    assert_eq!(table.lines().next(), Some("## Discrete VAE on binarized MNIST (layers 16,8, batch 100)"), "{table}");
    for f in ["vae.svg", "vae.png"] {
        assert!(std::fs::metadata(dir.path().join("figs").join(f)).unwrap().len() > 1000, "{f}");
    }
}

#[test]
fn a_bandit_sweep_runs_each_estimator_as_hnca_bandit_does_and_evaluates_its_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let (d, out) = (dir.path(), dir.path().join("runs"));
    let opts = ["--layers", "16", "--batch-size", "100", "--test-every", "0", "--device", "cpu", "--steps", "150"];
    hnca()
        .args(["sweep", "bandit", "--estimators", "hnca,reinforce-nb", "--seeds", "2", "--eval-images", "500", "--out"])
        .arg(&out)
        .args(opts)
        .assert()
        .success();
    for est in ["hnca", "reinforce-nb"] {
        let ck = d.join(format!("{est}.ck"));
        hnca().args(["bandit", "--estimator", est, "--seed", "2"]).args(opts).arg("--save").arg(&ck).assert().success();
        let run = out.join(format!("bandit-{est}-s2"));
        assert!(std::fs::read(run.join("checkpoint.ck")).unwrap() == std::fs::read(&ck).unwrap(), "{est}");
        let eval = read_json(&run.join("eval.json"));
        let acc = &eval["results"][0];
        assert_eq!((acc["key"].as_str(), eval["images"].as_u64(), eval["step"].as_u64()), (Some("test_accuracy"), Some(500), Some(150)));
        let a = acc["mean"].as_f64().unwrap();
        // A mean of 500 rewards of 0 or 1, with its standard error.
        assert!((a * 500.0 - (a * 500.0).round()).abs() < 1e-9 && a > 0.0, "{eval}");
        assert!((acc["std_err"].as_f64().unwrap() - (a * (1.0 - a) / 499.0).sqrt()).abs() < 1e-12, "{eval}");
    }
    let table = hnca().arg("report").arg(&out).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("| estimator | runs | train accuracy | test accuracy | gradient variance | steps/s | wall time |"), "{table}");
}

#[test]
fn a_sweep_on_the_emulated_gpu_trains_each_run_as_alone_and_as_the_cpu_does() {
    if common::fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let opts = ["--layers", "8,5", "--batch-size", "20", "--test-every", "0", "--steps", "30"];
    let on = |device: &str, out: &Path| {
        let res = hnca()
            .env("LD_LIBRARY_PATH", common::fake_cuda::library_path())
            .args([
                "sweep",
                "vae",
                "--estimators",
                "hnca,disarm",
                "--seeds",
                "0-1",
                "--eval-k",
                "3",
                "--eval-images",
                "60",
                "--device",
                device,
            ])
            .args(opts)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
        String::from_utf8_lossy(&res.get_output().stderr).to_string()
    };
    let (gpu, cpu) = (d.join("gpu"), d.join("cpu"));
    let stderr = on("cuda", &gpu);
    // Each estimator's two seeds as one batch: one launch of each kernel for both.
    assert!(stderr.contains("4 of 4 runs to train in 2 batches on hnca emulated GPU") && stderr.contains("one after another"), "{stderr}");
    on("cpu", &cpu);
    for est in ["hnca", "disarm"] {
        for s in [0, 1] {
            let ck = d.join(format!("{est}-{s}.ck"));
            hnca()
                .env("LD_LIBRARY_PATH", common::fake_cuda::library_path())
                .args(["vae", "--device", "cuda", "--estimator", est, "--seed", &s.to_string()])
                .args(opts)
                .arg("--save")
                .arg(&ck)
                .assert()
                .success();
            let (g, c) = (run_dir(&gpu, est, s), run_dir(&cpu, est, s));
            assert!(
                std::fs::read(g.join("checkpoint.ck")).unwrap() == std::fs::read(&ck).unwrap(),
                "{est} s{s}: the sweep's run differs from the run alone"
            );
            let close = |a: &Value, b: &Value, what: &str| {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{est} s{s} {what}: gpu {a} vs cpu {b}");
            };
            let (mg, mc) = (untimed(&g.join("metrics.jsonl")), untimed(&c.join("metrics.jsonl")));
            for field in ["train_elbo", "grad_var"] {
                close(&mg[0][field], &mc[0][field], field);
            }
            let (eg, ec) = (read_json(&g.join("eval.json")), read_json(&c.join("eval.json")));
            for i in 0..2 {
                close(&eg["results"][i]["mean"], &ec["results"][i]["mean"], "evaluation");
            }
        }
    }
}
