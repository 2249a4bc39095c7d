//! What a run keeps on disk besides its checkpoints: the metrics file, and the durable atomic
//! write every file of the program goes through.

use std::path::{Path, PathBuf};

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
                        v.and_then(|v| v.get("step").and_then(|s| s.as_u64())).is_none_or(|s| s <= step)
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
pub(crate) fn check_writable(path: &Path) -> Result<(), Error> {
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
