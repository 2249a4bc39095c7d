//! Runs trained together by one batched step ([`crate::backend::runs::Runs`]), each still
//! driven by [`drive`] as if alone: its own epochs, metrics file, checkpoints, evaluation,
//! divergence and signal handling. Each run's driver is a thread holding a view of the batch
//! ([`RunView`], an [`Experiment`]); a view's `train_step` waits until every run still in the
//! batch has asked for its step, and then one batched step takes all of them. A run that ends
//! (finished, diverged, stopped or failed) leaves the batch; the others go on without waiting
//! for it, and its buffers are no longer stepped.
//!
//! Every run keeps its own step counter and clock, so runs resumed from checkpoints of
//! different steps train together too.

use std::sync::{Condvar, Mutex, MutexGuard};

use super::checkpoint::{Checkpoint, CheckpointError};
use super::{drive, Description, EpochRecord, EpochSums, Experiment, RunOptions};
use crate::data::{Mnist, Split};
use crate::error::Error;
use crate::rng::RngKey;

/// R runs of one experiment whose steps are taken together; run r of each method is the
/// [`Experiment`] method of that run.
pub trait Batch: Send {
    fn description(&self) -> &'static Description;
    fn runs(&self) -> usize;
    fn read_every(&self) -> u64;
    /// One step of every run still in the batch.
    fn train_step(&mut self);
    /// Run r takes no more steps; the others go on.
    fn leave(&mut self, r: usize);
    fn step(&self, r: usize) -> u64;
    fn start_epoch(&mut self, r: usize, epoch: u64, order: &[u32], first_batch: u64);
    fn progress(&mut self, r: usize, full_scan: bool) -> (EpochSums, Option<(u64, String)>);
    fn evaluate(&self, r: usize, split: &Split, binarize: RngKey, index: u64) -> f64;
    fn device_error(&self) -> Option<String>;
    fn identity(&self, r: usize) -> Vec<(&'static str, serde_json::Value)>;
    fn epoch_stats(&self, r: usize) -> Vec<f64>;
    fn restore_epoch_stats(&mut self, r: usize, stats: &[f64]);
    fn checkpoint(&self, r: usize, epochs_done: u64) -> Checkpoint;
    fn resume(&mut self, r: usize, ck: Checkpoint) -> Result<(), CheckpointError>;
    fn params_le_bytes(&self, r: usize) -> Vec<u8>;
}

struct Barrier<X> {
    batch: X,
    /// Runs still in the batch, and those among them waiting for the next step.
    in_batch: Vec<bool>,
    waiting: Vec<bool>,
    /// Batched steps taken.
    steps: u64,
}

impl<X: Batch> Barrier<X> {
    /// Takes the step if every run in the batch is waiting for it.
    fn step_if_all_wait(&mut self) -> bool {
        let all = self.in_batch.iter().zip(&self.waiting).all(|(&i, &w)| !i || w);
        if all && self.waiting.iter().any(|&w| w) {
            self.batch.train_step();
            self.waiting.iter_mut().for_each(|w| *w = false);
            self.steps += 1;
            return true;
        }
        false
    }
}

/// The batch and the barrier its runs' drivers meet at.
pub struct Lockstep<X> {
    inner: Mutex<Barrier<X>>,
    stepped: Condvar,
}

impl<X: Batch> Lockstep<X> {
    pub fn new(batch: X) -> Self {
        let runs = batch.runs();
        Lockstep {
            inner: Mutex::new(Barrier { batch, in_batch: vec![true; runs], waiting: vec![false; runs], steps: 0 }),
            stepped: Condvar::new(),
        }
    }

    /// The batch; a run that panicked holding it left it as it was between operations of the
    /// batch's own (the others then stop on their own errors or go on).
    fn lock(&self) -> MutexGuard<'_, Barrier<X>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run r's view, for its driver.
    pub fn view(&self, r: usize) -> RunView<'_, X> {
        RunView { shared: self, r }
    }

    fn train_step(&self, r: usize) {
        let mut g = self.lock();
        g.waiting[r] = true;
        if g.step_if_all_wait() {
            self.stepped.notify_all();
            return;
        }
        let at = g.steps;
        while g.steps == at {
            g = self.stepped.wait(g).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn leave(&self, r: usize) {
        let mut g = self.lock();
        if !g.in_batch[r] {
            return;
        }
        g.in_batch[r] = false;
        g.waiting[r] = false;
        g.batch.leave(r);
        // The others may have been waiting for this run alone.
        if g.step_if_all_wait() {
            self.stepped.notify_all();
        }
    }
}

/// One run of a batch as the run driver sees it.
pub struct RunView<'a, X: Batch> {
    shared: &'a Lockstep<X>,
    r: usize,
}

impl<X: Batch> Drop for RunView<'_, X> {
    /// A view is dropped when its driver returns, however it ended (a panic too): the run
    /// leaves the batch, so that the others do not wait for it.
    fn drop(&mut self) {
        self.shared.leave(self.r);
    }
}

impl<X: Batch> Experiment for RunView<'_, X> {
    fn description(&self) -> &'static Description {
        self.shared.lock().batch.description()
    }
    fn step(&self) -> u64 {
        self.shared.lock().batch.step(self.r)
    }
    fn read_every(&self) -> u64 {
        self.shared.lock().batch.read_every()
    }
    fn start_epoch(&mut self, epoch: u64, order: &[u32], first_batch: u64) {
        self.shared.lock().batch.start_epoch(self.r, epoch, order, first_batch)
    }
    fn train_step(&mut self) {
        self.shared.train_step(self.r)
    }
    fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        self.shared.lock().batch.progress(self.r, full_scan)
    }
    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64 {
        self.shared.lock().batch.evaluate(self.r, split, binarize, index)
    }
    fn device_error(&self) -> Option<String> {
        self.shared.lock().batch.device_error()
    }
    fn identity(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.shared.lock().batch.identity(self.r)
    }
    fn epoch_stats(&self) -> Vec<f64> {
        self.shared.lock().batch.epoch_stats(self.r)
    }
    fn restore_epoch_stats(&mut self, stats: &[f64]) {
        self.shared.lock().batch.restore_epoch_stats(self.r, stats)
    }
    fn checkpoint(&self, epochs_done: u64) -> Checkpoint {
        self.shared.lock().batch.checkpoint(self.r, epochs_done)
    }
    fn resume(&mut self, ck: Checkpoint) -> Result<(), CheckpointError> {
        self.shared.lock().batch.resume(self.r, ck)
    }
    fn params_le_bytes(&self) -> Vec<u8> {
        self.shared.lock().batch.params_le_bytes(self.r)
    }
}

/// Drives every run of `batch` (run r with `opts[r]`) on a thread of its own, each as [`drive`]
/// alone would; `after(r, result)` runs on run r's thread once it has left the batch (a sweep
/// evaluates it there). Returns each run's result.
pub fn drive_batch<X: Batch, T: Send>(
    batch: X,
    opts: &[RunOptions],
    data: &Mnist,
    after: impl Fn(usize, Result<Vec<EpochRecord>, Error>) -> T + Sync,
) -> Vec<T> {
    assert_eq!(batch.runs(), opts.len());
    let shared = Lockstep::new(batch);
    std::thread::scope(|s| {
        let handles: Vec<_> = opts
            .iter()
            .enumerate()
            .map(|(r, o)| {
                let (shared, after) = (&shared, &after);
                s.spawn(move || {
                    let result = drive(&mut shared.view(r), o, data);
                    after(r, result)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a run of the batch panicked")).collect()
    })
}
