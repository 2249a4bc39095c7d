//! Everything that can stop a run, each with a one-line message naming what failed.

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
    Checkpoint { path: PathBuf, source: crate::checkpoint::CheckpointError },
    /// A NaN or infinity in the objective, a gradient, a parameter or the optimiser state.
    /// `kept` says what survives: the last good checkpoint, if the run saves any.
    #[error("training diverged at step {step}: {what}; {kept}try a smaller --lr")]
    Diverged { step: u64, what: String, kept: String },
}

impl Error {
    /// Exit status: 2 for a usage mistake (as clap uses), 1 for anything that failed while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}
