//! The command line: parsing with clap, and validation into a [`TrainConfig`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Error;
use crate::estimator::{Estimator, EstimatorKind};
use crate::train::{Binarize, TrainConfig};

/// Train networks of Bernoulli units with Hindsight Network Credit Assignment (HNCA) and the
/// estimators it is compared with.
#[derive(Parser, Debug)]
#[command(name = "hnca", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train the discrete VAE (a sigmoid belief net) on binarized MNIST.
    Vae(VaeArgs),
    /// Train an agent of Bernoulli units to classify MNIST digits from reward alone (the
    /// paper's contextual bandit).
    Bandit(crate::bandit::train::BanditArgs),
    /// Check every GPU kernel against the CPU backend on the real shapes, then time training
    /// steps of the VAE on the GPU.
    Selftest(SelftestArgs),
    /// Evaluate a checkpoint on the test set: the mean single-sample ELBO and the K-sample
    /// importance-weighted bound, each with its standard error.
    Eval(crate::inspect::EvalArgs),
    /// Draw digits from a checkpoint's generative model (or reconstruct test digits) into a PNG.
    Sample(crate::inspect::SampleArgs),
    /// Plot learning curves of one or more runs' metrics files (SVG or PNG).
    Plot(crate::plot::PlotArgs),
    /// Time training steps of the CPU backend for several models and every estimator, with the
    /// cost model: log-sigmoid evaluations per step, ns per evaluation, the credit pass's share.
    Bench(crate::bench::BenchArgs),
}

/// Where the training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when the CUDA driver loads and a GPU exists, otherwise the CPU (saying why).
    Auto,
    /// The CPU backend.
    Cpu,
    /// The GPU, or an error if there is none.
    Cuda,
}

/// Where the self-test runs the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SelftestDevice {
    /// The GPU (an error if there is none).
    Cuda,
    /// The CPU emulation of the kernels (slow; for machines without a GPU).
    Emu,
}

#[derive(Args, Debug, Clone)]
pub struct SelftestArgs {
    /// Where to run the kernels.
    #[arg(long, value_enum, default_value_t = SelftestDevice::Cuda)]
    pub device: SelftestDevice,

    /// Widths of the latent layers of the model checked and timed.
    #[arg(long, value_delimiter = ',', default_value = "200,200,200")]
    pub layers: Vec<usize>,

    /// Batch size of the model checked and timed.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Training steps to time (0: skip the timing).
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
}

#[derive(Args, Debug, Clone)]
pub struct VaeArgs {
    /// Widths of the stochastic latent layers, from the data upward (x → z1 → z2 → …).
    #[arg(long, value_delimiter = ',', default_value = "200,200,200")]
    pub layers: Vec<usize>,

    /// Gradient estimator for the encoder (the decoder and prior always get exact gradients).
    #[arg(long, value_enum, default_value_t = EstimatorKind::Hnca)]
    pub estimator: EstimatorKind,

    /// HNCA ablation: weight the terms that take a unit as input by its hindsight ratios too.
    #[arg(long)]
    pub all_child: bool,

    /// HNCA ablation: add the ELBO terms upstream of each layer to that layer's reward.
    #[arg(long)]
    pub full_reward: bool,

    /// Adam learning rate (β1 0.9, β2 0.999, ε 1e-8).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub lr: f64,

    /// Minibatch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Number of passes over the 60,000 training images.
    #[arg(long, default_value_t = 840)]
    pub epochs: usize,

    /// Stop after this many updates in total, even mid-epoch.
    #[arg(long)]
    pub steps: Option<u64>,

    /// Seed for initialisation, shuffling, binarization and every sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Evaluate the test ELBO (mean single-sample ELBO over the freshly binarized test set)
    /// every N epochs and at the end; 0 never evaluates.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub test_every: usize,

    /// Write per-epoch metrics as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// How pixels become bits: a fresh Bernoulli(pixel/255) draw every epoch, or pixel/255 > 0.5.
    #[arg(long, value_enum, default_value_t = Binarize::Dynamic)]
    pub binarize: Binarize,

    #[command(flatten)]
    pub setup: SetupArgs,

    /// At the end, write every parameter as little-endian f32 to this file, tensor after tensor:
    /// per layer (from the data up) encoder weights (in, out) and biases, then per layer decoder
    /// weights and biases, then the prior logits.
    #[arg(long, value_name = "PATH")]
    pub save_params: Option<PathBuf>,

    #[command(flatten)]
    pub checkpoints: CheckpointArgs,
}

/// Where a command finds MNIST and where it runs, shared by `vae`, `bandit` and `eval`.
#[derive(Args, Debug, Clone)]
pub struct SetupArgs {
    /// Directory holding the four MNIST-format IDX .gz files [default: the data/ shipped with hnca].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Worker threads for the CPU backend [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

/// Checkpointing, shared by `vae` and `bandit`.
#[derive(Args, Debug, Clone)]
pub struct CheckpointArgs {
    /// Write a checkpoint (configuration, parameters, Adam state, baseline(s), step) to this file
    /// every --save-every epochs and at the end; each write replaces the last one atomically.
    #[arg(long, value_name = "PATH")]
    pub save: Option<PathBuf>,

    /// Epochs between checkpoints (0: only at the end).
    #[arg(long, default_value_t = 1, value_name = "N", requires = "save")]
    pub save_every: usize,

    /// Continue the run saved in this checkpoint, exactly as if it had never stopped. Give the
    /// same options it was started with (a different --epochs or --steps extends or shortens it).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
}

impl VaeArgs {
    /// Checks every value a run could not use and builds the configuration.
    pub fn to_config(&self) -> Result<TrainConfig, Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.layers.is_empty() || self.layers.iter().any(|&w| w == 0 || w > 4096) {
            return bad(format!("--layers must be 1 to 4096 units per layer, got {:?}", self.layers));
        }
        if self.layers.len() > 16 {
            return bad(format!("--layers allows at most 16 layers, got {}", self.layers.len()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 || self.batch_size > 60_000 {
            return bad(format!("--batch-size must be between 1 and 60000, got {}", self.batch_size));
        }
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.steps == Some(0) {
            return bad("--steps must be at least 1".into());
        }
        let est = Estimator { kind: self.estimator, all_child: self.all_child, full_reward: self.full_reward };
        if (self.all_child || self.full_reward) && !est.is_hnca() {
            return bad(format!(
                "--all-child and --full-reward are HNCA ablations; they do not apply to --estimator {}",
                self.estimator.name()
            ));
        }
        Ok(TrainConfig {
            latent: self.layers.clone(),
            estimator: est,
            lr: self.lr,
            batch_size: self.batch_size,
            epochs: self.epochs,
            max_steps: self.steps,
            seed: self.seed,
            test_every: self.test_every,
            metrics: self.metrics.clone(),
            save_params: self.save_params.clone(),
            binarize: self.binarize,
            save: self.checkpoints.save.clone(),
            save_every: self.checkpoints.save_every,
            resume: self.checkpoints.resume.clone(),
        })
    }
}
