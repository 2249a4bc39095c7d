//! Everything that can stop a command, each with a one-line message naming what failed. Owns
//! the error types only: it imports no module that could return them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// An impossible combination of options, found while validating the configuration.
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// `--device cuda` without a usable GPU, or a driver error while running.
    #[error("CUDA: {0}")]
    Device(String),
    #[error("{}: {source}", path.display())]
    Checkpoint { path: PathBuf, source: CheckpointError },
    /// A NaN or infinity in the objective, a gradient, a parameter or the optimiser state.
    /// `kept` says what survives: the last good checkpoint, if the run saves any.
    #[error("training diverged at step {step}: {what}; {kept}try a smaller --lr")]
    Diverged { step: u64, what: String, kept: String },
    /// SIGTERM or SIGINT stopped training at a step boundary; the message says what was saved
    /// and how to continue. Exits with [`EXIT_INTERRUPTED`].
    #[error("{0}")]
    Interrupted(String),
    /// Runs of a sweep that failed (each named, with why).
    #[error("{0}")]
    Sweep(String),
}

/// The exit status of a run stopped by a signal after checkpointing (75, sysexits' EX_TEMPFAIL:
/// "try again later"): distinct from success (0), failure (1) and a usage mistake (2), so that a
/// batch script knows to requeue.
pub const EXIT_INTERRUPTED: i32 = 75;

impl Error {
    /// Exit status: 2 for a usage mistake (as clap uses), [`EXIT_INTERRUPTED`] for a run stopped
    /// by a signal, 1 for anything that failed while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Interrupted(_) => EXIT_INTERRUPTED,
            _ => 1,
        }
    }
}

/// Why a file is not a checkpoint this build can use, or not one of this run. Every message is
/// one line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("not an hnca checkpoint (it does not start with the magic bytes \"HNCACKPT\")")]
    Foreign,
    #[error("checkpoint format version {found}, this build reads version {supported}")]
    Version { found: u32, supported: u32 },
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("corrupt: the checksum does not match the contents (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("corrupt header: {0}")]
    Header(String),
    #[error("does not match this run: {0}")]
    Mismatch(String),
    /// Both in words: the experiments' display names ("VAE", "bandit"), or the header's quoted.
    #[error("a checkpoint of the {found}, not of the {wanted}")]
    WrongExperiment { found: String, wanted: String },
}

/// A string from a file, fit for a one-line message: escaped, and cut at 40 characters.
pub fn quoted(s: &str) -> String {
    let mut q: String = s.escape_debug().take(40).collect();
    if s.escape_debug().nth(40).is_some() {
        q.push('…');
    }
    format!("\"{q}\"")
}
