//! Runs trained as one batch (`backend::runs::Runs`, `run::batch`) end exactly as each run
//! trained alone, for every estimator of the VAE and of the bandit (linear and convolutional):
//! the same checkpoint bytes and the same metrics lines (epoch sums, gradient variance, the test
//! metric evaluated through the batch), on the CPU and on the emulated GPU, whose batched step
//! launches each kernel's twin once for all the runs.

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use hnca::backend::cpu::Cpu;
use hnca::backend::emu::emu_backend;
use hnca::backend::runs::Runs;
use hnca::backend::Backend;
use hnca::bandit::batch::BanditBatch;
use hnca::bandit::BanditArgs;
use hnca::data::{Mnist, Split};
use hnca::run::batch::drive_batch;
use hnca::vae::batch::{batchable, VaeBatch};
use hnca::vae::{TrainConfig, VaeArgs};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    vae: VaeArgs,
}

#[derive(Parser)]
struct Bandit {
    #[command(flatten)]
    args: BanditArgs,
}

/// Random bytes as images: 120 training images of 4x4 (12 batches of 10), 30 test images.
fn data() -> Mnist {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let mut split = |n: usize| Split {
        images: (0..n * 16).map(|_| byte()).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        n,
        rows: 4,
        cols: 4,
    };
    Mnist { train: split(120), test: split(30), valid: None }
}

fn config(estimator: &str, seed: u64, dir: &Path) -> TrainConfig {
    let mut argv = vec!["vae", "--layers", "6,4", "--batch-size", "10", "--epochs", "2", "--test-every", "1", "--lr", "3e-3"];
    let (kind, samples) = match estimator.split_once("-k") {
        Some((k, s)) => (k, Some(s)),
        None => (estimator, None),
    };
    argv.extend(["--estimator", kind]);
    if let Some(s) = samples {
        argv.extend(["--samples", s]);
    }
    let mut cfg = Args::try_parse_from(argv).unwrap().vae.to_config().unwrap();
    cfg.seed = seed;
    cfg.save = Some(dir.join(format!("{estimator}-{seed}.ck")));
    cfg.metrics = Some(dir.join(format!("{estimator}-{seed}.jsonl")));
    cfg
}

/// The metrics lines without their timings.
fn untimed(path: &PathBuf) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("steps_per_second");
            v
        })
        .collect()
}

const ESTIMATORS: [&str; 10] =
    ["hnca", "hnca-nb", "reinforce", "reinforce-nb", "loo", "disarm", "arms-k3", "double-cv", "rodeo", "hnca-k2"];

/// Trains `estimator` with seeds 3, 7 and 11 alone and as one batch on `be`, and compares.
fn batch_equals_alone<B: Backend + Sync>(be: &B, estimator: &str, data: &Mnist) {
    let dir = tempfile::tempdir().unwrap();
    let (alone_dir, batch_dir) = (dir.path().join("alone"), dir.path().join("batch"));
    std::fs::create_dir_all(&alone_dir).unwrap();
    std::fs::create_dir_all(&batch_dir).unwrap();
    let seeds = [3u64, 7, 11];
    for &s in &seeds {
        hnca::vae::train(be, &config(estimator, s, &alone_dir), data).unwrap();
    }
    let cfgs: Vec<TrainConfig> = seeds.iter().map(|&s| config(estimator, s, &batch_dir)).collect();
    batchable(&cfgs).unwrap();
    let runs = Runs::new(be, seeds.to_vec());
    let batch = VaeBatch::new(&runs, &cfgs, &data.train);
    let opts: Vec<_> = cfgs.iter().map(|c| c.run_options()).collect();
    for result in drive_batch(batch, &opts, data, |_, r| r) {
        assert_eq!(result.unwrap().len(), 2, "{estimator}: two epochs");
    }
    for &s in &seeds {
        let name = |d: &Path, ext: &str| d.join(format!("{estimator}-{s}.{ext}"));
        let (a, b) = (std::fs::read(name(&alone_dir, "ck")).unwrap(), std::fs::read(name(&batch_dir, "ck")).unwrap());
        assert!(a == b, "{estimator} seed {s}: the batched run's checkpoint differs from the run alone's");
        let (a, b) = (untimed(&name(&alone_dir, "jsonl")), untimed(&name(&batch_dir, "jsonl")));
        assert_eq!(a, b, "{estimator} seed {s}: metrics");
        assert!(a[1]["test_elbo"].as_f64().is_some_and(f64::is_finite), "{estimator} seed {s}: {:?}", a[1]);
    }
}

#[test]
fn batched_runs_equal_runs_alone_on_the_cpu_for_every_estimator() {
    let data = data();
    for est in ESTIMATORS {
        batch_equals_alone(&Cpu::new(), est, &data);
    }
}

#[test]
fn batched_runs_equal_runs_alone_on_the_emulated_gpu_for_every_estimator() {
    let data = data();
    for est in ESTIMATORS {
        batch_equals_alone(&emu_backend(), est, &data);
    }
}

#[test]
fn runs_that_differ_in_more_than_seed_and_files_are_not_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfgs = vec![config("hnca", 1, dir.path()), config("hnca", 2, dir.path())];
    assert!(batchable(&cfgs).is_ok());
    cfgs[1].lr = 1e-2;
    assert_eq!(batchable(&cfgs).unwrap_err(), "run 2 differs from run 1 in more than its seed and files");
    assert!(batchable(&[]).is_err());
}

/// The bandit's options for `estimator` (with " conv", its convolutional features).
fn bandit_args(estimator: &str, seed: u64, dir: &Path) -> BanditArgs {
    let name = estimator.replace(' ', "-");
    let mut argv = vec!["bandit", "--layers", "6,4", "--batch-size", "10", "--epochs", "2", "--test-every", "1", "--lr", "3e-3"];
    let (kind, conv) = estimator.split_once(' ').map_or((estimator, false), |(k, _)| (k, true));
    argv.extend(["--estimator", kind]);
    if conv {
        argv.extend(["--features", "conv", "--conv-layers", "1", "--conv-channels", "2"]);
    }
    let mut a = Bandit::try_parse_from(argv).unwrap().args;
    a.seed = seed;
    a.checkpoints.save = Some(dir.join(format!("{name}-{seed}.ck")));
    a.metrics = Some(dir.join(format!("{name}-{seed}.jsonl")));
    a
}

fn bandit_batch_equals_alone<B: Backend + Sync>(be: &B, estimator: &str, data: &Mnist) {
    let dir = tempfile::tempdir().unwrap();
    let (alone_dir, batch_dir) = (dir.path().join("alone"), dir.path().join("batch"));
    std::fs::create_dir_all(&alone_dir).unwrap();
    std::fs::create_dir_all(&batch_dir).unwrap();
    let seeds = [3u64, 7, 11];
    for &s in &seeds {
        hnca::bandit::train_bandit(be, &bandit_args(estimator, s, &alone_dir), data).unwrap();
    }
    let args: Vec<BanditArgs> = seeds.iter().map(|&s| bandit_args(estimator, s, &batch_dir)).collect();
    hnca::bandit::batch::batchable(&args).unwrap();
    let runs = Runs::new(be, seeds.to_vec());
    let batch = BanditBatch::new(&runs, &args, &data.train).unwrap();
    let opts: Vec<_> = args.iter().map(|a| a.run_options()).collect();
    for result in drive_batch(batch, &opts, data, |_, r| r) {
        assert_eq!(result.unwrap().len(), 2, "{estimator}: two epochs");
    }
    let name = estimator.replace(' ', "-");
    for &s in &seeds {
        let file = |d: &Path, ext: &str| d.join(format!("{name}-{s}.{ext}"));
        let (a, b) = (std::fs::read(file(&alone_dir, "ck")).unwrap(), std::fs::read(file(&batch_dir, "ck")).unwrap());
        assert!(a == b, "bandit {estimator} seed {s}: the batched run's checkpoint differs from the run alone's");
        let (a, b) = (untimed(&file(&alone_dir, "jsonl")), untimed(&file(&batch_dir, "jsonl")));
        assert_eq!(a, b, "bandit {estimator} seed {s}: metrics");
        assert!(a[1]["test_accuracy"].as_f64().is_some(), "bandit {estimator} seed {s}: {:?}", a[1]);
    }
}

const BANDIT: [&str; 6] = ["hnca", "hnca-nb", "reinforce", "reinforce-nb", "hnca conv", "reinforce conv"];

#[test]
fn batched_bandit_runs_equal_runs_alone_on_the_cpu_and_the_emulated_gpu() {
    let data = data();
    for est in BANDIT {
        bandit_batch_equals_alone(&Cpu::new(), est, &data);
        bandit_batch_equals_alone(&emu_backend(), est, &data);
    }
}
