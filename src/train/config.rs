//! The validated options of a training run, whatever the experiment: the experiment's own
//! (its model, estimator and data) and those every run has, side by side in one flat struct.

use std::path::PathBuf;

use crate::error::Error;
use crate::run::{CheckpointArgs, RunOptions};

/// A validated training configuration: `model` holds what is the experiment's own.
#[derive(Clone, Debug)]
pub struct TrainConfig<M> {
    pub model: M,
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub max_steps: Option<u64>,
    pub seed: u64,
    /// Evaluate the test metric every this many epochs (0: never).
    pub test_every: usize,
    pub metrics: Option<PathBuf>,
    pub save_params: Option<PathBuf>,
    /// Write a checkpoint here every `save_every` epochs and at the end.
    pub save: Option<PathBuf>,
    pub save_every: usize,
    /// Continue the run saved in this checkpoint.
    pub resume: Option<PathBuf>,
}

/// The options every experiment's command line has, as given (before validation).
pub struct Given<'a> {
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub steps: Option<u64>,
    pub seed: u64,
    pub test_every: usize,
    pub metrics: &'a Option<PathBuf>,
    pub save_params: &'a Option<PathBuf>,
    pub checkpoints: &'a CheckpointArgs,
}

impl Given<'_> {
    /// `--lr` and `--batch-size`, checked alike by every experiment.
    pub fn check_lr_and_batch(&self) -> Result<(), Error> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("--lr must be a positive number, got {}", self.lr)));
        }
        if self.batch_size == 0 || self.batch_size > 60_000 {
            return Err(Error::Config(format!("--batch-size must be between 1 and 60000, got {}", self.batch_size)));
        }
        Ok(())
    }

    /// The configuration of these options and the experiment's own, `model`, once each is
    /// checked.
    pub fn config<M>(&self, model: M) -> TrainConfig<M> {
        TrainConfig {
            model,
            lr: self.lr,
            batch_size: self.batch_size,
            epochs: self.epochs,
            max_steps: self.steps,
            seed: self.seed,
            test_every: self.test_every,
            metrics: self.metrics.clone(),
            save_params: self.save_params.clone(),
            save: self.checkpoints.save.clone(),
            save_every: self.checkpoints.save_every(),
            resume: self.checkpoints.resume.clone(),
        }
    }
}

impl<M> TrainConfig<M> {
    /// What the run driver needs of it.
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            epochs: self.epochs,
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            seed: self.seed,
            test_every: self.test_every,
            metrics: self.metrics.clone(),
            save: self.save.clone(),
            save_every: self.save_every,
            resume: self.resume.clone(),
            save_params: self.save_params.clone(),
            label: None,
        }
    }

    /// [`TrainConfig::run_options`], its epoch lines labelled `label` (a sweep's run).
    pub fn labelled(&self, label: &str) -> RunOptions {
        RunOptions { label: Some(label.to_string()), ..self.run_options() }
    }
}
