//! How an experiment describes itself to the generic parts (metrics lines, checkpoint headers,
//! messages, figures), and the list of experiments the program registers at start-up.

use std::sync::OnceLock;

/// How an experiment names itself and its objective: in metrics lines, checkpoint headers,
/// messages and figures.
#[derive(Debug)]
pub struct Description {
    /// The subcommand and the "experiment" field of its files, e.g. "vae".
    pub name: &'static str,
    /// In words, e.g. "VAE".
    pub display: &'static str,
    /// The metrics fields of the training objective and of its evaluation on the test set.
    pub train_metric: &'static str,
    pub test_metric: &'static str,
    /// The metrics field of the evaluation on held-out training images, when a run has them.
    pub valid_metric: &'static str,
    /// What the progress bar calls the running objective, and its decimals there.
    pub progress_label: &'static str,
    pub progress_digits: usize,
    /// Decimals of the objective in the epoch line.
    pub line_digits: usize,
    /// The objective's axis title and the default figure title of `hnca plot`.
    pub metric_title: &'static str,
    pub figure_title: &'static str,
}

static KNOWN: OnceLock<Vec<&'static Description>> = OnceLock::new();

/// Tells the generic parts (checkpoint messages, `plot`) which experiments exist; the program
/// does this once at start-up, before any command runs.
pub fn register(experiments: &[&'static Description]) {
    let _ = KNOWN.set(experiments.to_vec());
}

/// The registered experiments.
pub fn known() -> &'static [&'static Description] {
    KNOWN.get().map_or(&[], |v| v.as_slice())
}

/// An experiment's name in words, or the name quoted where no registered experiment has it.
pub fn display_name(name: &str) -> String {
    known().iter().find(|d| d.name == name).map_or_else(|| crate::error::quoted(name), |d| d.display.to_string())
}
