//! Runs trained as one batch (`backend::runs::Runs`, `run::batch`) end exactly as each run
//! trained alone, for every estimator of the VAE and of the bandit (linear and convolutional),
//! and for every model shape that calls a batched operation (or a branch of one) the others do
//! not (one VAE layer, the prior on SGD or on an Adam of its own, threshold binarization, a
//! validation set; two and three convolution layers, one hidden layer, `--rho-gradient`): the
//! same checkpoint bytes and the same metrics lines (epoch sums, gradient variance, the test
//! and validation metrics evaluated through the batch), on the CPU and on the emulated GPU,
//! whose batched step launches each kernel's twin once for all the runs.

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use hnca::backend::cpu::Cpu;
use hnca::backend::emu::emu_backend;
use hnca::backend::runs::Runs;
use hnca::backend::Backend;
use hnca::bandit::BanditArgs;
use hnca::data::{Mnist, Split};
use hnca::error::Error;
use hnca::run::batch::drive_batch;
use hnca::run::EpochRecord;
use hnca::train::{batchable, TrainBatch};
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
    data_of(4, 4, 120)
}

/// Random bytes as images of `rows` x `cols`: `train` training images, 30 test images.
fn data_of(rows: usize, cols: usize, train: usize) -> Mnist {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let mut split = |n: usize| Split {
        images: (0..n * rows * cols).map(|_| byte()).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        n,
        rows,
        cols,
    };
    Mnist { train: split(train), test: split(30), valid: None }
}

fn config(estimator: &str, seed: u64, dir: &Path) -> TrainConfig {
    config_with(estimator, estimator, &[], seed, dir)
}

/// The VAE's options for `estimator` with the options `extra` (which may replace `--layers`),
/// its files named `name`.
fn config_with(name: &str, estimator: &str, extra: &[&str], seed: u64, dir: &Path) -> TrainConfig {
    let mut argv = vec!["vae", "--batch-size", "10", "--epochs", "2", "--test-every", "1", "--lr", "3e-3"];
    if !extra.contains(&"--layers") {
        argv.extend(["--layers", "6,4"]);
    }
    argv.extend(extra);
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
    cfg.save = Some(dir.join(format!("{name}-{seed}.ck")));
    cfg.metrics = Some(dir.join(format!("{name}-{seed}.jsonl")));
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

/// The seeds every comparison trains alone and as one batch.
const SEEDS: [u64; 3] = [3, 7, 11];

/// A fresh directory holding `alone/` and `batch/`.
fn alone_and_batch_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (alone, batch) = (dir.path().join("alone"), dir.path().join("batch"));
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::create_dir_all(&batch).unwrap();
    (dir, alone, batch)
}

/// Every run of the batch trained its two epochs; each seed's checkpoint `name-seed.ck` in
/// `batch` equals the one in `alone` byte for byte, its metrics lines (untimed) are equal, and
/// the last epoch's `metrics` are finite numbers.
fn assert_batch_equals_alone(
    what: &str,
    name: &str,
    results: Vec<Result<Vec<EpochRecord>, Error>>,
    alone: &Path,
    batch: &Path,
    metrics: &[&str],
) {
    for result in results {
        assert_eq!(result.unwrap().len(), 2, "{what}: two epochs");
    }
    for s in SEEDS {
        let file = |d: &Path, ext: &str| d.join(format!("{name}-{s}.{ext}"));
        let (a, b) = (std::fs::read(file(alone, "ck")).unwrap(), std::fs::read(file(batch, "ck")).unwrap());
        assert!(a == b, "{what} seed {s}: the batched run's checkpoint differs from the run alone's");
        let (a, b) = (untimed(&file(alone, "jsonl")), untimed(&file(batch, "jsonl")));
        assert_eq!(a, b, "{what} seed {s}: metrics");
        for metric in metrics {
            assert!(a[1][metric].as_f64().is_some_and(f64::is_finite), "{what} seed {s}: {metric}: {:?}", a[1]);
        }
    }
}

/// Trains `estimator` with each of [`SEEDS`] alone and as one batch on `be`, and compares.
fn batch_equals_alone<B: Backend + Sync>(be: &B, estimator: &str, data: &Mnist) {
    batch_equals_alone_with(be, estimator, estimator, &[], data, &["test_elbo"]);
}

/// [`batch_equals_alone`] with the options `extra`, the files named `name`, and `metrics` the
/// metrics that must be finite.
fn batch_equals_alone_with<B: Backend + Sync>(be: &B, name: &str, estimator: &str, extra: &[&str], data: &Mnist, metrics: &[&str]) {
    let (_dir, alone_dir, batch_dir) = alone_and_batch_dirs();
    for s in SEEDS {
        hnca::vae::train(be, &config_with(name, estimator, extra, s, &alone_dir), data).unwrap();
    }
    let cfgs: Vec<TrainConfig> = SEEDS.iter().map(|&s| config_with(name, estimator, extra, s, &batch_dir)).collect();
    batchable(&cfgs).unwrap();
    let runs = Runs::new(be, SEEDS.to_vec());
    let batch = TrainBatch::new(&runs, &cfgs, &data.train).unwrap();
    let opts: Vec<_> = cfgs.iter().map(|c| c.run_options()).collect();
    let results = drive_batch(batch, &opts, data, |_, r| r);
    assert_batch_equals_alone(name, name, results, &alone_dir, &batch_dir, metrics);
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
    assert!(batchable(&[] as &[TrainConfig]).is_err());
}

/// The bandit's options for `estimator` (with " conv", its convolutional features).
fn bandit_args(estimator: &str, seed: u64, dir: &Path) -> BanditArgs {
    let (kind, conv) = estimator.split_once(' ').map_or((estimator, false), |(k, _)| (k, true));
    let extra: &[&str] = if conv { &["--features", "conv", "--conv-layers", "1", "--conv-channels", "2"] } else { &[] };
    bandit_args_with(&estimator.replace(' ', "-"), kind, extra, seed, dir)
}

/// The bandit's options for `estimator` with the options `extra` (which may replace
/// `--layers`), its files named `name`.
fn bandit_args_with(name: &str, estimator: &str, extra: &[&str], seed: u64, dir: &Path) -> BanditArgs {
    let mut argv = vec!["bandit", "--batch-size", "10", "--epochs", "2", "--test-every", "1", "--lr", "3e-3", "--estimator", estimator];
    if !extra.contains(&"--layers") {
        argv.extend(["--layers", "6,4"]);
    }
    argv.extend(extra);
    let mut a = Bandit::try_parse_from(argv).unwrap().args;
    a.seed = seed;
    a.checkpoints.save = Some(dir.join(format!("{name}-{seed}.ck")));
    a.metrics = Some(dir.join(format!("{name}-{seed}.jsonl")));
    a
}

/// Trains the bandit's `estimator` with each of [`SEEDS`] alone and as one batch on `be`, and
/// compares.
fn bandit_batch_equals_alone<B: Backend + Sync>(be: &B, estimator: &str, data: &Mnist) {
    let args = |s, dir: &Path| bandit_args(estimator, s, dir);
    bandit_runs_equal_alone(be, &format!("bandit {estimator}"), &estimator.replace(' ', "-"), args, data);
}

/// Trains the bandit runs `args(seed, dir)` for each of [`SEEDS`] alone and as one batch on
/// `be`, and compares (their files are named `name`).
fn bandit_runs_equal_alone<B: Backend + Sync>(be: &B, what: &str, name: &str, args: impl Fn(u64, &Path) -> BanditArgs, data: &Mnist) {
    let (_dir, alone_dir, batch_dir) = alone_and_batch_dirs();
    for s in SEEDS {
        hnca::bandit::train_bandit(be, &args(s, &alone_dir).to_config().unwrap(), data).unwrap();
    }
    let cfgs: Vec<_> = SEEDS.iter().map(|&s| args(s, &batch_dir).to_config().unwrap()).collect();
    batchable(&cfgs).unwrap();
    let runs = Runs::new(be, SEEDS.to_vec());
    let batch = TrainBatch::new(&runs, &cfgs, &data.train).unwrap();
    let opts: Vec<_> = cfgs.iter().map(|c| c.run_options()).collect();
    let results = drive_batch(batch, &opts, data, |_, r| r);
    assert_batch_equals_alone(what, name, results, &alone_dir, &batch_dir, &["test_accuracy"]);
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

/// VAE shapes the estimators above (two layers, dynamic binarization, the prior on the Adam of
/// the other tensors, no validation set) leave out, each reaching batched operations, or
/// branches of them, that those do not: one layer (the credit pass with no encoder layer above,
/// the prior as the generative term of the only layer; the relaxed reward gradient of the top
/// layer only) with the prior on an Adam launch of its own (`--prior-lr` apart from `--lr`);
/// the prior on SGD (`axpy`) with threshold binarization (`gather_binarize`'s other mode), a
/// validation set evaluated each epoch (`--train-images`), and HNCA's ablations
/// (`hnca_unit_grad`'s all-child branch). (name, estimator, options).
const VAE_SHAPES: [(&str, &str, &[&str]); 3] = [
    ("one-layer-hnca", "hnca", &["--layers", "5"]),
    ("one-layer-double-cv-prior-apart", "double-cv", &["--layers", "5", "--prior-lr", "1e-2"]),
    (
        "ablations-prior-sgd-threshold-validation",
        "hnca",
        &[
            "--all-child",
            "--full-reward",
            "--prior-optimizer",
            "sgd",
            "--prior-lr",
            "1e-2",
            "--binarize",
            "threshold",
            "--train-images",
            "40",
        ],
    ),
];

#[test]
fn batched_runs_of_every_other_vae_shape_equal_runs_alone_on_the_cpu_and_the_emulated_gpu() {
    // Six batches of 10 an epoch; with --train-images 40, four, and 20 validation images.
    let all = data_of(4, 4, 60);
    let mut held_out = all.clone();
    held_out.hold_out(40).unwrap();
    for (name, estimator, extra) in VAE_SHAPES {
        let validates = extra.contains(&"--train-images");
        let (data, metrics): (&Mnist, &[&str]) = if validates { (&held_out, &["test_elbo", "valid_elbo"]) } else { (&all, &["test_elbo"]) };
        batch_equals_alone_with(&Cpu::new(), name, estimator, extra, data, metrics);
        batch_equals_alone_with(&emu_backend(), name, estimator, extra, data, metrics);
    }
}

/// Bandit shapes the cases above (one convolution layer) leave out: two and three convolution
/// layers (`conv_backward_input` into the layers below the top one, `relu_backward` and
/// `conv_sample_grads` of a layer fed by another), under two hidden layers (the credit pass
/// between them) and under one (the softmax's credit pass straight from the first), the second
/// with HNCA through ρ (`bandit_unit_grad`'s `--rho-gradient` branch). On 8x8 images:
/// 8 -> 6 -> 4 -> 2 pixels a side. (name, estimator, options).
const BANDIT_SHAPES: [(&str, &str, &[&str]); 2] = [
    ("hnca-conv2", "hnca", &["--features", "conv", "--conv-layers", "2", "--conv-channels", "2"]),
    (
        "hnca-nb-conv3-rho",
        "hnca-nb",
        &["--features", "conv", "--conv-layers", "3", "--conv-channels", "2", "--layers", "6", "--rho-gradient"],
    ),
];

#[test]
fn batched_bandit_runs_of_every_other_shape_equal_runs_alone_on_the_cpu_and_the_emulated_gpu() {
    // Six batches of 10 an epoch.
    let data = data_of(8, 8, 60);
    for (name, estimator, extra) in BANDIT_SHAPES {
        let args = |s, dir: &Path| bandit_args_with(name, estimator, extra, s, dir);
        let what = format!("bandit {name}");
        bandit_runs_equal_alone(&Cpu::new(), &what, name, args, &data);
        bandit_runs_equal_alone(&emu_backend(), &what, name, args, &data);
    }
}
