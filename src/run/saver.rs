//! A run's checkpoints: when they are written, what a diverged or interrupted run leaves behind,
//! the part of an epoch a checkpoint written mid-epoch carries, and reading the one a run
//! resumes from.

use std::path::{Path, PathBuf};

use super::checkpoint::Checkpoint;
use super::files::check_writable;
use crate::error::Error;

/// Where a run's checkpoints go, and the last one written (named when a run diverges).
pub(crate) struct Saver {
    path: Option<PathBuf>,
    every: usize,
    last: Option<u64>,
}

impl Saver {
    /// Checks now, not after the first epoch, that the checkpoint can be written.
    pub fn new(path: Option<PathBuf>, every: usize) -> Result<Self, Error> {
        if let Some(p) = &path {
            check_writable(p)?;
        }
        Ok(Saver { path, every, last: None })
    }

    /// What a diverged run leaves behind, for its error message.
    pub fn kept(&self) -> String {
        match (&self.path, self.last) {
            (Some(p), Some(step)) => format!("the last good checkpoint, {} (step {step}), is kept; ", p.display()),
            (Some(p), None) if p.exists() => format!("{} is left as it was; ", p.display()),
            (Some(p), None) => format!("no checkpoint was written to {}; ", p.display()),
            _ => String::new(),
        }
    }

    /// At the end of epoch `epoch` (every batch done, the state at `step` scanned by the loop as
    /// [`super::schedule::Schedule::full_scan_due`] says), writes the checkpoint if `--save-every`
    /// asks for one.
    pub fn at_epoch_end(&mut self, epoch: u64, step: u64, checkpoint: impl FnOnce() -> Checkpoint) -> Result<(), Error> {
        if self.every > 0 && epoch.is_multiple_of(self.every as u64) {
            self.write(step, checkpoint)?;
        }
        Ok(())
    }

    /// When a signal stops the run after update `step` (its state scanned), writes the checkpoint
    /// unless the last one already holds `step`; says what is kept and how to continue.
    pub fn at_interrupt(&mut self, step: u64, checkpoint: impl FnOnce() -> Checkpoint) -> Result<String, Error> {
        match &self.path {
            Some(p) => {
                let p = p.clone();
                if self.last != Some(step) {
                    self.write(step, checkpoint)?;
                }
                Ok(format!("the checkpoint {} holds it: continue with --resume {}", p.display(), p.display()))
            }
            None => Ok("nothing was saved (no --save)".into()),
        }
    }

    /// At the end of the run, writes the checkpoint unless the last epoch's already holds `step`
    /// or nothing was `trained` since the one resumed from.
    pub fn at_run_end(&mut self, step: u64, trained: bool, checkpoint: impl FnOnce() -> Checkpoint) -> Result<(), Error> {
        if trained && self.last != Some(step) {
            self.write(step, checkpoint)?;
        }
        Ok(())
    }

    fn write(&mut self, step: u64, checkpoint: impl FnOnce() -> Checkpoint) -> Result<(), Error> {
        let Some(path) = &self.path else { return Ok(()) };
        checkpoint().save(path)?;
        self.last = Some(step);
        Ok(())
    }
}

/// Reads the checkpoint named by --resume; returns it with a map from its problems to errors
/// that name the file.
pub(crate) fn load_for_resume(path: &Path) -> Result<(Checkpoint, impl Fn(crate::error::CheckpointError) -> Error + '_), Error> {
    let ck = Checkpoint::load(path)?;
    Ok((ck, move |source| Error::Checkpoint { path: path.to_path_buf(), source }))
}

/// Where a checkpoint written mid-epoch keeps that epoch's statistics (each f64 as its bit
/// pattern, so that they come back exactly) and, when a signal stopped the run, the seconds the
/// epoch had run: a run resumed from it reports the epoch as if it had never stopped.
const EPOCH_STATS: &str = "epoch_stats";
const EPOCH_SECONDS: &str = "epoch_seconds";

/// The part of an epoch done before a checkpoint written mid-epoch.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PartialEpoch {
    pub stats: Vec<f64>,
    pub seconds: Option<f64>,
}

impl PartialEpoch {
    pub fn add_to(&self, ck: &mut Checkpoint) {
        let bits: Vec<serde_json::Value> = self.stats.iter().map(|v| v.to_bits().into()).collect();
        ck.header.insert(EPOCH_STATS.into(), bits.into());
        if let Some(s) = self.seconds {
            ck.header.insert(EPOCH_SECONDS.into(), s.into());
        }
    }

    /// What `ck` carries of a partial epoch, if anything.
    pub fn of(ck: &Checkpoint) -> Result<Option<Self>, crate::error::CheckpointError> {
        use crate::error::CheckpointError;
        let Some(list) = ck.header.get(EPOCH_STATS) else { return Ok(None) };
        let bad = || CheckpointError::Header(format!("\"{EPOCH_STATS}\" is not a list of 64-bit patterns"));
        let list = list.as_array().ok_or_else(bad)?;
        let stats = list.iter().map(|v| v.as_u64().map(f64::from_bits).ok_or_else(bad)).collect::<Result<_, _>>()?;
        let seconds = ck.header.get(EPOCH_SECONDS).and_then(|v| v.as_f64()).filter(|s| s.is_finite() && *s >= 0.0);
        Ok(Some(PartialEpoch { stats, seconds }))
    }

    /// Checks that the statistics fit a run whose statistics hold `len` values.
    pub fn check_len(&self, len: usize) -> Result<(), crate::error::CheckpointError> {
        if self.stats.len() != len {
            let found = self.stats.len();
            return Err(crate::error::CheckpointError::Mismatch(format!("its epoch statistics hold {found} values, this run's {len}")));
        }
        Ok(())
    }
}
