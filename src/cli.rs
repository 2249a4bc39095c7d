//! The command line: the subcommands and, for each, its arguments, which live with the module
//! that runs it (clap derive; the doc comments are the help text).

use clap::{Parser, Subcommand};

/// Train networks of Bernoulli units with Hindsight Network Credit Assignment (HNCA) and the
/// estimators it is compared with.
#[derive(Parser, Debug)]
#[command(name = "hnca", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One command is parsed per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train the discrete VAE (a sigmoid belief net) on binarized MNIST.
    Vae(crate::vae::VaeArgs),
    /// Train an agent of Bernoulli units to classify MNIST digits from reward alone (the
    /// paper's contextual bandit; with --features conv, its nonlinear bandit).
    Bandit(crate::bandit::BanditArgs),
    /// Check every GPU kernel against the CPU backend on the real shapes, then time training
    /// steps of the VAE on the GPU.
    Selftest(crate::selftest::SelftestArgs),
    /// Evaluate a checkpoint on the test set: the mean single-sample ELBO and the K-sample
    /// importance-weighted bound, each with its standard error.
    Eval(crate::vae::inspect::EvalArgs),
    /// Draw digits from a checkpoint's generative model (or reconstruct test digits) into a PNG.
    Sample(crate::vae::inspect::SampleArgs),
    /// Plot learning curves of one or more runs' metrics files (SVG or PNG).
    Plot(crate::plot::PlotArgs),
    /// Train a grid of runs (every estimator of --estimators with every seed of --seeds, the other
    /// options shared) in this process or as a Slurm job array; each run writes its metrics,
    /// checkpoint and final evaluation into its own directory under --out.
    Sweep(SweepCommand),
    /// Summarise a sweep's runs as a table per estimator (Markdown, or --json), and draw its
    /// figures (--figures).
    Report(crate::report::ReportArgs),
    /// Time training steps of the CPU backend for several models and every estimator, with the
    /// cost model: log-sigmoid evaluations per step, ns per evaluation, the credit pass's share.
    Bench(crate::vae::bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct SweepCommand {
    #[command(subcommand)]
    pub of: SweepOf,
}

/// The experiment a sweep runs; every option of its own command applies to each run.
#[derive(Subcommand, Debug)]
pub enum SweepOf {
    /// A grid of `hnca vae` runs.
    Vae(crate::sweep::SweepArgs<crate::vae::VaeArgs>),
    /// A grid of `hnca bandit` runs.
    Bandit(crate::sweep::SweepArgs<crate::bandit::BanditArgs>),
}
