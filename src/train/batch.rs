//! Several runs of one experiment, shape and estimator, different only in their seeds (and
//! files), trained by one batched step ([`Runs`]) as a [`Batch`] of the run driver. A run's
//! checkpoint, evaluation and NaN scan go through a trainer of that run alone on the inner
//! backend, filled with the run's slice of every buffer: what it writes and reports is what the
//! run alone would.

use super::experiment::{resume, trainer};
use super::RunIdentity;
use super::{ModelConfig, TrainConfig, Trainer};
use crate::backend::runs::Runs;
use crate::backend::Backend;
use crate::backend::MemoryOps;
use crate::data::Split;
use crate::error::Error;
use crate::nn::{copy_run_in, copy_run_out, run_has_non_finite, run_sums, start_run_epoch, EpochSums, TrainData};
use crate::rng::RngKey;
use crate::run::batch::Batch;
use crate::run::checkpoint::{Checkpoint, CheckpointError};
use crate::run::{read_every, Description};

/// The runs of a batch: one trainer whose buffers hold every run.
pub struct TrainBatch<'a, B: Backend + Sync, S: ModelConfig> {
    trainer: Trainer<'a, Runs<'a, B>, S::Model<Runs<'a, B>>>,
    data: TrainData<Runs<'a, B>>,
    runs: Vec<(S::Run, TrainConfig<S>)>,
    steps: Vec<u64>,
}

/// Why `cfgs` cannot train as one batch, if they cannot: they must differ in their seeds and
/// files only.
pub fn batchable<S: ModelConfig>(cfgs: &[TrainConfig<S>]) -> Result<(), String> {
    let first = cfgs.first().ok_or("a batch holds at least one run")?;
    let same = |c: &TrainConfig<S>| {
        let mut c = c.clone();
        c.seed = first.seed;
        c.metrics.clone_from(&first.metrics);
        c.save.clone_from(&first.save);
        c.resume.clone_from(&first.resume);
        c.save_params.clone_from(&first.save_params);
        format!("{c:?}") == format!("{first:?}")
    };
    match cfgs.iter().position(|c| !same(c)) {
        None => Ok(()),
        Some(i) => Err(format!("run {} differs from run 1 in more than its seed and files", i + 1)),
    }
}

impl<'a, B: Backend + Sync, S: ModelConfig> TrainBatch<'a, B, S> {
    /// The runs `cfgs` ([`batchable`]) on `be`, whose seeds are theirs, at step 0.
    pub fn new(be: &'a Runs<'a, B>, cfgs: &[TrainConfig<S>], train: &Split) -> Result<Self, Error> {
        assert_eq!(be.seeds(), cfgs.iter().map(|c| c.seed).collect::<Vec<_>>(), "a batch's backend holds its runs' seeds");
        let runs = cfgs.iter().map(|c| Ok((S::run(c, train)?, c.clone()))).collect::<Result<Vec<_>, Error>>()?;
        let trainer = trainer(be, &cfgs[0], &runs[0].0);
        let mut batch = TrainBatch { trainer, data: TrainData::new(be, train), steps: vec![0; cfgs.len()], runs };
        // Each run starts where it would alone: its own seed's initial parameters.
        for r in 0..cfgs.len() {
            let alone = batch.alone(r);
            batch.put(r, &alone);
        }
        Ok(batch)
    }

    /// A trainer of run r alone on the inner backend, fresh from its seed.
    fn alone(&self, r: usize) -> Trainer<'a, B, S::Model<B>> {
        let (run, cfg) = &self.runs[r];
        trainer(self.trainer.be.inner, cfg, run)
    }

    /// Run r as a trainer of its own, holding its slice of every buffer.
    fn take(&self, r: usize) -> Trainer<'a, B, S::Model<B>> {
        let mut t = self.alone(r);
        let (from, from_state) = self.trainer.state_parts();
        let (to, to_state) = t.state_parts_mut();
        copy_run_out((self.trainer.be, r), from, from_state, self.trainer.be.inner, to, to_state);
        t.step = self.steps[r];
        t
    }

    /// Puts run r's state back from a trainer of its own.
    fn put(&mut self, r: usize, t: &Trainer<'a, B, S::Model<B>>) {
        let be = self.trainer.be;
        let (from, from_state) = t.state_parts();
        let (to, to_state) = self.trainer.state_parts_mut();
        copy_run_in(be.inner, from, from_state, (be, r), to, to_state);
        self.steps[r] = t.step;
    }
}

impl<B: Backend + Sync, S: ModelConfig> Batch for TrainBatch<'_, B, S> {
    fn description(&self) -> &'static Description {
        S::description()
    }
    fn runs(&self) -> usize {
        self.runs.len()
    }
    fn read_every(&self) -> u64 {
        read_every(self.trainer.be)
    }
    fn train_step(&mut self) {
        self.trainer.train_step_on(&self.data);
        for (r, step) in self.steps.iter_mut().enumerate() {
            if self.trainer.be.is_active(r) {
                *step += 1;
            }
        }
    }
    fn leave(&mut self, r: usize) {
        self.trainer.be.set_active(r, false);
        self.trainer.discard_recording();
    }
    fn step(&self, r: usize) -> u64 {
        self.steps[r]
    }
    fn start_epoch(&mut self, r: usize, epoch: u64, order: &[u32], first_batch: u64) {
        start_run_epoch((self.trainer.be, r), &mut self.trainer.state, &mut self.data, epoch, order, first_batch);
    }
    fn progress(&mut self, r: usize, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        let be = self.trainer.be;
        let (sums, diverged) = run_sums((be, r), &self.trainer.state);
        if diverged {
            // What diverged, in words, as the run alone would say it.
            return self.take(r).progress(false);
        }
        if full_scan {
            let (tensors, counts) = self.trainer.scan_parts();
            if run_has_non_finite((be, r), tensors, counts) {
                let what = self.take(r).find_non_finite().unwrap_or_else(|| "a tensor holds NaN or infinite values".into());
                return (sums, Some((self.steps[r], what)));
            }
        }
        (sums, None)
    }
    fn evaluate(&self, r: usize, split: &Split, binarize: RngKey, index: u64) -> f64 {
        self.take(r).evaluate_on(split, binarize, index)
    }
    fn device_error(&self) -> Option<String> {
        self.trainer.be.check().err()
    }
    fn identity(&self, r: usize) -> Vec<(&'static str, serde_json::Value)> {
        S::identity(&self.runs[r].1, &self.runs[r].0)
    }
    fn epoch_stats(&self, r: usize) -> Vec<f64> {
        self.trainer.be.read_array_run(&self.trainer.state.stats, r)
    }
    fn restore_epoch_stats(&mut self, r: usize, stats: &[f64]) {
        self.trainer.be.write_array_run(&mut self.trainer.state.stats, r, stats);
    }
    fn checkpoint(&self, r: usize, epochs_done: u64) -> Checkpoint {
        self.take(r).checkpoint(S::description(), self.runs[r].0.header(), epochs_done)
    }
    fn resume(&mut self, r: usize, ck: Checkpoint) -> Result<(), CheckpointError> {
        let mut t = self.take(r);
        resume::<B, S>(&mut t, &self.runs[r].0, ck)?;
        self.put(r, &t);
        Ok(())
    }
    fn params_le_bytes(&self, r: usize) -> Vec<u8> {
        self.take(r).params_le_bytes()
    }
}
