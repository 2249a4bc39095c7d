//! `hnca sweep --executor slurm` against a real Slurm (the one-node cluster `.ci/slurm.sh`
//! starts): the job array trains every run exactly as the local executor does, and a task sent
//! SIGTERM through `scancel --signal=TERM` checkpoints, is requeued and ends identical to an
//! uninterrupted run. Skips (printing why) where no Slurm answers, except under CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A small VAE on the CPU, 600 steps per epoch.
const TINY: [&str; 12] =
    ["--layers", "16,8", "--batch-size", "100", "--test-every", "0", "--device", "cpu", "--eval-k", "5", "--eval-images", "300"];

fn hnca() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("hnca"))
}

/// Why no Slurm cluster can take jobs here, if none can.
fn no_slurm() -> Option<String> {
    match Command::new("sinfo").args(["-h", "-o", "%T"]).output() {
        Err(e) => Some(format!("sinfo cannot be run ({e}); `bash .ci/slurm.sh` starts a one-node cluster")),
        Ok(o) if !o.status.success() => Some(format!("sinfo failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Ok(o) => {
            let states = String::from_utf8_lossy(&o.stdout).to_string();
            let up = states.lines().any(|s| ["idle", "mixed", "allocated"].contains(&s.trim()));
            (!up).then(|| format!("no Slurm node is up (sinfo: {})", states.trim()))
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every task's output so far, for messages.
fn task_output(out: &Path) -> String {
    let mut text = String::new();
    for e in std::fs::read_dir(out).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("slurm-") {
            text += &format!("--- {}\n{}", e.path().display(), std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

/// Waits until Slurm no longer lists job `job`.
fn wait_for(job: &str, out: &Path) {
    let start = Instant::now();
    loop {
        let listed = run(Command::new("squeue").args(["-h", "-j", job, "-o", "%i %T"]));
        if listed.trim().is_empty() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "job {job} still listed after 300 s:\n{listed}\n{}", task_output(out));
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn submit(out: &Path, grid: &[&str]) -> String {
    let stdout = run(hnca().args(["sweep", "vae", "--executor", "slurm", "--out"]).arg(out).args(TINY).args(grid));
    let job = stdout.trim().to_string();
    assert!(!job.is_empty() && job.chars().all(|c| c.is_ascii_digit()), "job id {stdout:?}");
    job
}

fn untimed(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| k != "seconds" && k != "steps_per_second");
            v
        })
        .collect()
}

/// The run `name` of sweep `a` ended exactly as that of sweep `b`.
fn assert_same(a: &Path, b: &Path, name: &str, context: &dyn Fn() -> String) {
    let (ra, rb): (PathBuf, PathBuf) = (a.join(name), b.join(name));
    let ck = |d: &Path| std::fs::read(d.join("checkpoint.ck")).unwrap_or_else(|e| panic!("{}: {e}\n{}", d.display(), context()));
    assert!(ck(&ra) == ck(&rb), "{name}: the checkpoints differ\n{}", context());
    assert_eq!(untimed(&ra.join("metrics.jsonl")), untimed(&rb.join("metrics.jsonl")), "{name}");
    let eval = |d: &Path| -> Value { serde_json::from_slice(&std::fs::read(d.join("eval.json")).unwrap()).unwrap() };
    assert_eq!(eval(&ra)["results"], eval(&rb)["results"], "{name}");
}

#[test]
fn a_slurm_job_array_trains_the_runs_as_the_local_executor_and_a_signalled_task_resumes_exactly() {
    if let Some(why) = no_slurm() {
        common::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // 2 estimators x 2 seeds, two runs per task: a job array of two tasks.
    let grid = ["--estimators", "hnca,reinforce", "--seeds", "0-1", "--steps", "300", "--runs-per-task", "2"];
    let (local, slurm) = (d.join("local"), d.join("slurm"));
    run(hnca().args(["sweep", "vae", "--out"]).arg(&local).args(TINY).args(grid));
    let job = submit(&slurm, &grid);
    wait_for(&job, &slurm);
    let script = std::fs::read_to_string(slurm.join("sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1"), "{script}");
    for name in ["vae-hnca-s0", "vae-hnca-s1", "vae-reinforce-s0", "vae-reinforce-s1"] {
        assert_same(&slurm, &local, name, &|| task_output(&slurm));
    }

    // One longer run; SIGTERM once its first epoch is done.
    let grid = ["--estimators", "loo", "--seeds", "3", "--epochs", "8"];
    let (local, slurm) = (d.join("local-long"), d.join("slurm-long"));
    let job = submit(&slurm, &grid);
    let metrics = slurm.join("vae-loo-s3").join("metrics.jsonl");
    let start = Instant::now();
    while !metrics.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "the run never wrote its first epoch\n{}", task_output(&slurm));
        std::thread::sleep(Duration::from_millis(20));
    }
    run(Command::new("scancel").args(["--signal=TERM", &format!("{job}_0")]));
    // Requeued, the task waits out Slurm's delay before it may start again; start it now.
    let start = Instant::now();
    while !task_output(&slurm).contains("error: stopped by SIGTERM") {
        assert!(start.elapsed() < Duration::from_secs(120), "the task did not stop\n{}", task_output(&slurm));
        std::thread::sleep(Duration::from_millis(100));
    }
    let start = Instant::now();
    loop {
        let ok = Command::new("scontrol").args(["update", &format!("JobId={job}_0"), "StartTime=now"]).output().unwrap();
        let listed = run(Command::new("squeue").args(["-h", "-j", &job, "-o", "%T"]));
        if ok.status.success() || listed.trim().is_empty() || listed.contains("RUNNING") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "cannot release the requeued task: {}", String::from_utf8_lossy(&ok.stderr));
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_for(&job, &slurm);
    run(hnca().args(["sweep", "vae", "--out"]).arg(&local).args(TINY).args(grid));
    let output = task_output(&slurm);
    let stopped = output.lines().find(|l| l.starts_with("error: stopped by SIGTERM")).unwrap();
    assert!(output.contains("vae-loo-s3: continuing from its checkpoint"), "{output}");
    assert!(output.contains("vae-loo-s3: finished at step 4800"), "{output}");
    assert!(output.contains("vae-loo-s3: stopped by SIGTERM after step"), "the run was not stopped mid-training ({stopped}):\n{output}");
    assert_same(&slurm, &local, "vae-loo-s3", &|| output.clone());
}
