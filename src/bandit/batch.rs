//! Several bandit runs of one shape and estimator, different only in their seeds (and files),
//! trained by one batched step ([`Runs`]) as a [`Batch`] of the run driver; the VAE's batch
//! (src/vae/batch.rs) explains the design.

use super::checkpoint::BanditRun;
use super::trainer::{evaluate, identity, BanditTrainer};
use super::BanditArgs;
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

/// The bandit runs of a batch: one trainer whose buffers hold every run.
pub struct BanditBatch<'a, B: Backend + Sync> {
    trainer: BanditTrainer<'a, Runs<'a, B>>,
    data: TrainData<Runs<'a, B>>,
    runs: Vec<(BanditRun, BanditArgs)>,
    steps: Vec<u64>,
}

/// Why `args` cannot train as one batch, if they cannot: they must differ in their seeds and
/// files only.
pub fn batchable(args: &[BanditArgs]) -> Result<(), String> {
    let first = args.first().ok_or("a batch holds at least one run")?;
    let same = |a: &BanditArgs| {
        let mut a = a.clone();
        a.seed = first.seed;
        a.metrics.clone_from(&first.metrics);
        a.save_params.clone_from(&first.save_params);
        a.checkpoints.clone_from(&first.checkpoints);
        format!("{a:?}") == format!("{first:?}")
    };
    match args.iter().position(|a| !same(a)) {
        None => Ok(()),
        Some(i) => Err(format!("run {} differs from run 1 in more than its seed and files", i + 1)),
    }
}

impl<'a, B: Backend + Sync> BanditBatch<'a, B> {
    /// The runs `args` ([`batchable`]) on `be`, whose seeds are theirs, at step 0.
    pub fn new(be: &'a Runs<'a, B>, args: &[BanditArgs], train: &Split) -> Result<Self, Error> {
        assert_eq!(be.seeds(), args.iter().map(|a| a.seed).collect::<Vec<_>>(), "a batch's backend holds its runs' seeds");
        let runs = args.iter().map(|a| Ok((BanditRun::new(a, train)?, a.clone()))).collect::<Result<Vec<_>, Error>>()?;
        let first = &args[0];
        let mut trainer = BanditTrainer::new(be, runs[0].0.shape(), first.estimator, first.batch_size, first.lr as f32, first.seed);
        trainer.rho_gradient = first.rho_gradient;
        let mut batch = BanditBatch { trainer, data: TrainData::new(be, train), steps: vec![0; args.len()], runs };
        // Each run starts where it would alone: its own seed's initial parameters.
        for r in 0..args.len() {
            let alone = batch.alone(r);
            batch.put(r, &alone);
        }
        Ok(batch)
    }

    /// A trainer of run r alone on the inner backend, fresh from its seed.
    fn alone(&self, r: usize) -> BanditTrainer<'a, B> {
        let (run, a) = &self.runs[r];
        let mut t = BanditTrainer::new(self.trainer.be.inner, run.shape(), a.estimator, a.batch_size, a.lr as f32, a.seed);
        t.rho_gradient = a.rho_gradient;
        t
    }

    /// Run r as a trainer of its own, holding its slice of every buffer.
    fn take(&self, r: usize) -> BanditTrainer<'a, B> {
        let mut t = self.alone(r);
        let (from, from_state) = self.trainer.state_parts();
        let (to, to_state) = t.state_parts_mut();
        copy_run_out((self.trainer.be, r), from, from_state, self.trainer.be.inner, to, to_state);
        t.step = self.steps[r];
        t
    }

    /// Puts run r's state back from a trainer of its own.
    fn put(&mut self, r: usize, t: &BanditTrainer<'a, B>) {
        let be = self.trainer.be;
        let (from, from_state) = t.state_parts();
        let (to, to_state) = self.trainer.state_parts_mut();
        copy_run_in(be.inner, from, from_state, (be, r), to, to_state);
        self.steps[r] = t.step;
    }
}

impl<B: Backend + Sync> Batch for BanditBatch<'_, B> {
    fn description(&self) -> &'static Description {
        &super::DESCRIPTION
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
        evaluate(&self.take(r), split, binarize, index)
    }
    fn device_error(&self) -> Option<String> {
        self.trainer.be.check().err()
    }
    fn identity(&self, r: usize) -> Vec<(&'static str, serde_json::Value)> {
        identity(&self.runs[r].1, &self.runs[r].0)
    }
    fn epoch_stats(&self, r: usize) -> Vec<f64> {
        self.trainer.be.read_array_run(&self.trainer.state.stats, r)
    }
    fn restore_epoch_stats(&mut self, r: usize, stats: &[f64]) {
        self.trainer.be.write_array_run(&mut self.trainer.state.stats, r, stats);
    }
    fn checkpoint(&self, r: usize, epochs_done: u64) -> Checkpoint {
        self.take(r).checkpoint(&self.runs[r].0, epochs_done)
    }
    fn resume(&mut self, r: usize, ck: Checkpoint) -> Result<(), CheckpointError> {
        let saved = BanditRun::from_checkpoint(&ck)?;
        saved.check_resumable_as(&self.runs[r].0)?;
        crate::run::files::note_lr_change(super::DESCRIPTION.name, saved.lr, self.runs[r].0.lr);
        let mut t = self.take(r);
        t.restore(ck)?;
        self.put(r, &t);
        Ok(())
    }
    fn params_le_bytes(&self, r: usize) -> Vec<u8> {
        self.take(r).host_params().tensors().flatten().flat_map(|v| v.to_le_bytes()).collect()
    }
}
