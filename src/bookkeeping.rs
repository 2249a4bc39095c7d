//! What a training run keeps on disk and where it stands: the metrics file, checkpoints (when
//! to write them, and what a diverged run leaves), the epochs and batches still to train after a
//! resume, durable atomic writes, and the progress bar. Shared by `vae` and `bandit`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::Error;

/// Writes the metrics file whole after every epoch (temporary file, then rename), so an
/// interrupted run never leaves a half-written line or loses an earlier one.
pub(crate) struct MetricsFile {
    path: PathBuf,
    lines: Vec<String>,
}

impl MetricsFile {
    /// Checks now, not after the first epoch, that the file can be written.
    pub(crate) fn create(path: &Path) -> Result<Self, Error> {
        check_writable(path)?;
        Ok(MetricsFile { path: path.to_path_buf(), lines: Vec::new() })
    }

    /// For a resumed run: keeps the lines of an existing file up to `step`, so that the file
    /// reads as one run; lines that are not JSON with a "step" are kept as they are.
    pub(crate) fn resume(path: &Path, step: u64) -> Result<Self, Error> {
        let mut file = MetricsFile::create(path)?;
        match std::fs::read_to_string(path) {
            Ok(text) => {
                file.lines = text
                    .lines()
                    .filter(|l| {
                        let v: Option<serde_json::Value> = serde_json::from_str(l).ok();
                        v.and_then(|v| v.get("step").and_then(|s| s.as_u64())).map_or(true, |s| s <= step)
                    })
                    .map(str::to_string)
                    .collect();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { path: path.to_path_buf(), source: e }),
        }
        Ok(file)
    }

    pub(crate) fn push(&mut self, line: String) -> Result<(), Error> {
        self.lines.push(line);
        write_atomically(&self.path, (self.lines.join("\n") + "\n").as_bytes())
    }
}

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
    /// [`Schedule::full_scan_due`] says), writes the checkpoint if `--save-every` asks for one.
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
pub(crate) fn load_for_resume(path: &Path) -> Result<(Checkpoint, impl Fn(crate::checkpoint::CheckpointError) -> Error + '_), Error> {
    let ck = Checkpoint::load(path)?;
    Ok((ck, move |source| Error::Checkpoint { path: path.to_path_buf(), source }))
}

/// Steps between full scans of the parameters and optimiser state for NaNs and infinities.
/// Every step checks the objective, the gradients' variances and the baselines, which a
/// non-finite gradient reaches at once; a full scan downloads every tensor, so it runs only
/// this often and after the last step of every epoch and of the run, which is every state a
/// checkpoint can be written of.
const FULL_CHECK_EVERY: u64 = 100;

/// Which epochs and batches a run, perhaps resumed, still has to train. Epoch e's batches are
/// its shuffle cut into `batch_size` rows; a run resumed mid-epoch redoes that epoch's shuffle
/// and skips the batches already done, so it continues exactly where it stopped.
pub(crate) struct Schedule {
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
        let all = steps_per_epoch * epochs as u64;
        let total_steps = max_steps.map_or(all, |s| s.min(all));
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

    /// The batches of an epoch still to train, from its shuffle `order` (the first epoch's without
    /// those already done).
    pub fn batches<'o>(&mut self, order: &'o [u32], batch_size: usize) -> impl Iterator<Item = &'o [u32]> {
        order.chunks_exact(batch_size).skip(std::mem::take(&mut self.skip))
    }

    /// Whether the state after update `step` gets the full scan for NaNs and infinities.
    pub fn full_scan_due(&self, step: u64) -> bool {
        step % FULL_CHECK_EVERY == 0 || step % self.steps_per_epoch == 0 || step == self.total_steps
    }

    /// The epochs whose every batch is done at `step`.
    pub fn epochs_done(&self, step: u64) -> u64 {
        step / self.steps_per_epoch
    }

    /// `Some(epoch)` when `step` is the last update of `epoch`.
    pub fn epoch_ends_at(&self, step: u64) -> Option<u64> {
        (step > 0 && step % self.steps_per_epoch == 0).then(|| self.epochs_done(step))
    }
}

/// Opens the metrics file of a run: afresh, or for a resumed run keeping the lines up to the step
/// it resumes from.
pub(crate) fn open_metrics(path: Option<&Path>, resumed_from: Option<u64>) -> Result<Option<MetricsFile>, Error> {
    path.map(|p| match resumed_from {
        Some(step) => MetricsFile::resume(p, step),
        None => MetricsFile::create(p),
    })
    .transpose()
}

pub(crate) fn note_lr_change(command: &str, saved: f64, now: f64) {
    if saved != now {
        eprintln!("hnca {command}: note: --lr {now:e} replaces the checkpoint's {saved:e}; the run is no longer a plain continuation");
    }
}

/// `path` with `.tmp` appended: where a file is written before it is renamed into place.
fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Fails now if [`write_atomically`] could not write `path` later: creates and removes its
/// temporary file.
fn check_writable(path: &Path) -> Result<(), Error> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, b"").map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to the disk, then renames it into
/// place and flushes the directory, so that a crash at any moment leaves either the complete
/// old file or the complete new one, never a truncated one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let tmp = tmp_path(path);
    fn io(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: p.to_path_buf(), source }
    }
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself is durable only once the directory is; not every platform can open a
    // directory for this, and the data is already safe, so a failure here is not an error.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub(crate) fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let style =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}").expect("the progress template is valid");
    bar.set_style(style);
    bar
}
