//! The contextual bandit of HNCA.md §3: an agent of Bernoulli hidden layers and a softmax over
//! the ten digits, rewarded 1 for naming the digit. The output layer learns by REINFORCE; every
//! hidden layer by HNCA (its children are the next layer's units, or for the last hidden layer
//! the softmax unit) or by REINFORCE. Its command line, agent, trainer and checkpoint contents;
//! the generic parts (backend, data, run driver) do not know it.

pub mod agent;
pub mod checkpoint;
pub mod trainer;

use std::path::PathBuf;

pub use agent::{forward, gradients, AgentParams, AgentShape, BanditDraw, BanditEstimator, BanditWorkspace};
pub use trainer::{BanditExperiment, BanditTrainer};

use crate::backend::cpu::Cpu;
use crate::backend::kernels::KernelBackend;
use crate::backend::Backend;
use crate::data::Mnist;
use crate::error::Error;
use crate::run::{drive, Description, EpochRecord, RunOptions};
use crate::setup::{set_up, Setup};

/// The ten digits.
pub const ACTIONS: usize = 10;

pub const DESCRIPTION: Description = Description {
    name: "bandit",
    display: "bandit",
    train_metric: "train_accuracy",
    test_metric: "test_accuracy",
    valid_metric: "valid_accuracy",
    progress_label: "accuracy",
    progress_digits: 4,
    line_digits: 4,
    metric_title: "train accuracy",
    figure_title: "Contextual bandit on MNIST",
};

#[derive(clap::Args, Debug, Clone)]
pub struct BanditArgs {
    /// Widths of the hidden Bernoulli layers, from the pixels upward.
    #[arg(long, value_delimiter = ',', default_value = "200,200,200")]
    pub layers: Vec<usize>,

    /// Gradient estimator for the hidden layers (the softmax output always uses REINFORCE);
    /// the plain names use the 0.99 running-average reward baseline, `-nb` none.
    #[arg(long, value_enum, default_value_t = BanditEstimator::Hnca)]
    pub estimator: BanditEstimator,

    /// Adam learning rate (β1 0.9, β2 0.999, ε 1e-8).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub lr: f64,

    /// Minibatch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Number of passes over the 60,000 training images.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,

    /// Stop after this many updates in total, even mid-epoch.
    #[arg(long)]
    pub steps: Option<u64>,

    /// Seed for initialisation, shuffling, binarization, every sample and every action.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Evaluate the test accuracy every N epochs and at the end; 0 never evaluates.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub test_every: usize,

    /// Write per-epoch metrics as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    #[command(flatten)]
    pub setup: crate::setup::SetupArgs,

    /// At the end, write every parameter as little-endian f32 to this file: per layer from the
    /// pixels up, weights (in, out) then biases.
    #[arg(long, value_name = "PATH")]
    pub save_params: Option<PathBuf>,

    #[command(flatten)]
    pub checkpoints: crate::run::CheckpointArgs,
}

impl BanditArgs {
    /// Checks every value a run could not use.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.layers.is_empty() || self.layers.len() > 16 || self.layers.iter().any(|&w| w == 0 || w > 4096) {
            return bad(format!("--layers must be 1 to 16 layers of 1 to 4096 units, got {:?}", self.layers));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 || self.batch_size > 60_000 {
            return bad(format!("--batch-size must be between 1 and 60000, got {}", self.batch_size));
        }
        if self.epochs == 0 || self.steps == Some(0) {
            return bad("--epochs and --steps must be at least 1".into());
        }
        Ok(())
    }
}

/// `hnca bandit`: validates, sets up, and trains on the GPU or the CPU.
pub fn run(args: &BanditArgs) -> Result<(), Error> {
    args.validate()?;
    let Setup { dir, data, gpu, place } = set_up(&args.setup, "training")?;
    eprintln!(
        "hnca bandit: {} on {place}, hidden layers {:?}, batch {}, lr {:e}, seed {}, {} train / {} test images from {}",
        args.estimator.name(),
        args.layers,
        args.batch_size,
        args.lr,
        args.seed,
        data.train.n,
        data.test.n,
        dir.display()
    );
    match gpu {
        Some(d) => train_bandit(&KernelBackend::new(d), args, &data)?,
        None => train_bandit(&Cpu::new(), args, &data)?,
    };
    Ok(())
}

/// Trains the agent as configured, printing one line per epoch; returns every epoch's metrics.
pub fn train_bandit<B: Backend>(be: &B, args: &BanditArgs, data: &Mnist) -> Result<Vec<EpochRecord>, Error> {
    let mut exp = BanditExperiment::new(be, args, &data.train);
    drive(&mut exp, &args.run_options(), data)
}

impl BanditArgs {
    /// What the run driver needs of it.
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            epochs: self.epochs,
            max_steps: self.steps,
            batch_size: self.batch_size,
            seed: self.seed,
            test_every: self.test_every,
            metrics: self.metrics.clone(),
            save: self.checkpoints.save.clone(),
            save_every: self.checkpoints.save_every,
            resume: self.checkpoints.resume.clone(),
            save_params: self.save_params.clone(),
        }
    }
}
