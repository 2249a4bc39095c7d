//! A run's checkpoints: when they are written, what a diverged run leaves behind, and reading
//! the one a run resumes from.

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
        if self.every > 0 && epoch % self.every as u64 == 0 {
            self.write(step, checkpoint)?;
        }
        Ok(())
    }

    /// At the end of the run, writes the checkpoint unless the last epoch's already holds `step`.
    pub fn at_run_end(&mut self, step: u64, checkpoint: impl FnOnce() -> Checkpoint) -> Result<(), Error> {
        if self.last != Some(step) {
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

