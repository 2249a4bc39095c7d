//! What each subcommand does, after parsing: the one place that knows every experiment and
//! command, and hands each its arguments.

use crate::cli::{Cli, Command, SweepOf};
use crate::error::Error;

/// Every experiment, for the generic parts that read their files (checkpoints, `plot`).
pub const EXPERIMENTS: [&crate::run::Description; 2] = [&crate::vae::DESCRIPTION, &crate::bandit::DESCRIPTION];

pub fn run(cli: Cli) -> Result<(), Error> {
    crate::run::register(&EXPERIMENTS);
    match cli.command {
        Command::Vae(args) => crate::vae::run(&args),
        Command::Bandit(args) => crate::bandit::run(&args),
        Command::Selftest(args) => crate::selftest::run(&args),
        Command::Bench(args) => crate::vae::bench::run(&args),
        Command::Eval(args) => crate::vae::inspect::run_eval(&args),
        Command::Sample(args) => crate::vae::inspect::run_sample(&args),
        Command::Plot(args) => crate::plot::run(&args, &EXPERIMENTS),
        Command::Sweep(s) => {
            // Each Slurm array task repeats this command line.
            let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
            match s.of {
                SweepOf::Vae(args) => crate::sweep::run(&args, &argv),
                SweepOf::Bandit(args) => crate::sweep::run(&args, &argv),
            }
        }
        Command::Report(args) => crate::report::run(&args),
    }
}
