//! Any experiment as a run of the run driver: a [`Trainer`] of its model, with its run's
//! identity, its configuration and the training images on the device.

use super::{Model, TrainConfig, Trainer};
use crate::backend::Backend;
use crate::data::Split;
use crate::error::Error;
use crate::nn::{EpochSums, TrainData};
use crate::rng::RngKey;
use crate::run::checkpoint::{Checkpoint, CheckpointError};
use crate::run::{read_every, Description, Experiment};

/// What must be the same for a resumed run to continue a saved one exactly, as its
/// checkpoints' headers hold it.
pub trait RunIdentity: Sized {
    /// The settings that identify the run, as saved in its checkpoints' headers.
    fn header(&self) -> serde_json::Value;
    /// Reads the run's identity from a checkpoint's header.
    fn from_checkpoint(ck: &Checkpoint) -> Result<Self, CheckpointError>;
    /// Every difference that would make a resume inexact.
    fn check_resumable_as(&self, now: &Self) -> Result<(), CheckpointError>;
    /// The learning rate, saved for the record (a resume may change it, with a note).
    fn lr(&self) -> f64;
}

/// An experiment's own validated options (the `model` of its [`TrainConfig`]): what its runs
/// are, and the model it trains on any backend.
pub trait ModelConfig: Clone + std::fmt::Debug + Send + Sync {
    type Run: RunIdentity + Send;
    type Model<B: Backend>: Model<B> + Send;
    fn description() -> &'static Description;
    /// The run `cfg` describes on the training images `train`; an error if the model cannot
    /// be built on them.
    fn run(cfg: &TrainConfig<Self>, train: &Split) -> Result<Self::Run, Error>;
    /// The model of run `run` (configured by `cfg`) on `be`.
    fn model<B: Backend>(be: &B, cfg: &TrainConfig<Self>, run: &Self::Run) -> Self::Model<B>;
    /// The fields that say which run a metrics line belongs to, in order.
    fn identity(cfg: &TrainConfig<Self>, run: &Self::Run) -> Vec<(&'static str, serde_json::Value)>;
}

/// A trainer of run `run` of `cfg` on `be`, fresh from the run's seed.
pub(crate) fn trainer<'a, B: Backend, S: ModelConfig>(be: &'a B, cfg: &TrainConfig<S>, run: &S::Run) -> Trainer<'a, B, S::Model<B>> {
    Trainer::with_model(be, S::model(be, cfg, run), cfg.lr as f32, cfg.seed)
}

/// Continues `trainer` from `ck` after checking that it is a checkpoint of `run`.
pub(crate) fn resume<B: Backend, S: ModelConfig>(
    trainer: &mut Trainer<'_, B, S::Model<B>>,
    run: &S::Run,
    ck: Checkpoint,
) -> Result<(), CheckpointError> {
    let saved = S::Run::from_checkpoint(&ck)?;
    saved.check_resumable_as(run)?;
    crate::run::files::note_lr_change(S::description().name, saved.lr(), run.lr());
    trainer.restore(ck)
}

/// One run of an experiment as the run driver trains it.
pub struct TrainRun<'a, B: Backend, S: ModelConfig> {
    pub trainer: Trainer<'a, B, S::Model<B>>,
    data: TrainData<B>,
    run: S::Run,
    cfg: TrainConfig<S>,
}

impl<'a, B: Backend, S: ModelConfig> TrainRun<'a, B, S> {
    /// The run `cfg` describes on `train`; an error if its model cannot be built on them.
    pub fn new(be: &'a B, cfg: &TrainConfig<S>, train: &Split) -> Result<Self, Error> {
        let run = S::run(cfg, train)?;
        Ok(TrainRun { trainer: trainer(be, cfg, &run), data: TrainData::new(be, train), run, cfg: cfg.clone() })
    }
}

impl<B: Backend, S: ModelConfig> Experiment for TrainRun<'_, B, S> {
    fn description(&self) -> &'static Description {
        S::description()
    }

    fn step(&self) -> u64 {
        self.trainer.step
    }

    fn read_every(&self) -> u64 {
        read_every(self.trainer.be)
    }

    fn start_epoch(&mut self, epoch: u64, order: &[u32], first_batch: u64) {
        self.trainer.start_epoch(&mut self.data, epoch, order, first_batch);
    }

    fn train_step(&mut self) {
        self.trainer.train_step_on(&self.data);
    }

    fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        self.trainer.progress(full_scan)
    }

    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64 {
        self.trainer.evaluate_on(split, binarize, index)
    }

    fn device_error(&self) -> Option<String> {
        self.trainer.be.check().err()
    }

    fn identity(&self) -> Vec<(&'static str, serde_json::Value)> {
        S::identity(&self.cfg, &self.run)
    }

    fn epoch_stats(&self) -> Vec<f64> {
        self.trainer.state.read(self.trainer.be)
    }

    fn restore_epoch_stats(&mut self, stats: &[f64]) {
        let (be, state) = (self.trainer.be, &mut self.trainer.state);
        state.write_stats(be, stats);
    }

    fn checkpoint(&self, epochs_done: u64) -> Checkpoint {
        self.trainer.checkpoint(S::description(), self.run.header(), epochs_done)
    }

    fn resume(&mut self, ck: Checkpoint) -> Result<(), CheckpointError> {
        resume::<B, S>(&mut self.trainer, &self.run, ck)
    }

    fn params_le_bytes(&self) -> Vec<u8> {
        self.trainer.params_le_bytes()
    }
}
