//! Which epochs and batches a run, perhaps resumed, still has to train, in which order, and
//! when its state gets the full scan for NaNs and infinities.

use crate::rng::RngKey;

/// A permutation of 0..n by Fisher-Yates, drawn from `key`: an epoch's order of the training
/// images.
pub fn shuffle(n: usize, key: RngKey) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = key.below(i as u32, i as u32 + 1) as usize;
        idx.swap(i, j);
    }
    idx
}

/// Steps between full scans of the parameters and optimiser state for NaNs and infinities.
/// Every step checks the objective, the gradients' variances and the baselines, which a
/// non-finite gradient reaches at once; a full scan downloads every tensor, so it runs only
/// this often and after the last step of every epoch and of the run, which is every state a
/// checkpoint can be written of.
const FULL_CHECK_EVERY: u64 = 100;

/// Updates at which a run ends: `epochs` epochs of whole batches, or `max_steps` if that comes
/// first.
pub fn total_steps(train_images: usize, batch_size: usize, epochs: usize, max_steps: Option<u64>) -> u64 {
    let all = (train_images / batch_size) as u64 * epochs as u64;
    max_steps.map_or(all, |s| s.min(all))
}

/// Which epochs and batches a run, perhaps resumed, still has to train. Epoch e's batches are
/// its shuffle cut into `batch_size` rows; a run resumed mid-epoch redoes that epoch's shuffle
/// and skips the batches already done, so it continues exactly where it stopped.
pub struct Schedule {
    pub steps_per_epoch: u64,
    /// Updates at which the run ends (`--epochs`, or `--steps` if that comes first).
    pub total_steps: u64,
    pub first_epoch: usize,
    /// Batches of `first_epoch` already done.
    skip: usize,
}

impl Schedule {
    pub fn new(command: &str, resumed_at: u64, train_images: usize, batch_size: usize, epochs: usize, max_steps: Option<u64>) -> Self {
        let steps_per_epoch = (train_images / batch_size) as u64;
        let total_steps = total_steps(train_images, batch_size, epochs, max_steps);
        if resumed_at >= total_steps {
            eprintln!("hnca {command}: the checkpoint is already at step {resumed_at}, the end of this run ({total_steps} steps); nothing to train");
        }
        Schedule {
            steps_per_epoch,
            total_steps,
            first_epoch: (resumed_at / steps_per_epoch) as usize + 1,
            skip: (resumed_at % steps_per_epoch) as usize,
        }
    }

    /// The batch an epoch starts at: the first epoch of a resumed run skips those already done,
    /// every later one starts at 0.
    pub fn start_epoch(&mut self) -> u64 {
        std::mem::take(&mut self.skip) as u64
    }

    /// Whether the state after update `step` gets the full scan for NaNs and infinities.
    pub fn full_scan_due(&self, step: u64) -> bool {
        step.is_multiple_of(FULL_CHECK_EVERY) || step.is_multiple_of(self.steps_per_epoch) || step == self.total_steps
    }

    /// The epochs whose every batch is done at `step`.
    pub fn epochs_done(&self, step: u64) -> u64 {
        step / self.steps_per_epoch
    }

    /// `Some(epoch)` when `step` is the last update of `epoch`.
    pub fn epoch_ends_at(&self, step: u64) -> Option<u64> {
        (step > 0 && step.is_multiple_of(self.steps_per_epoch)).then(|| self.epochs_done(step))
    }
}
