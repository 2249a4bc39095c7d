//! `hnca`: parse the command line, run, and map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = hnca::cli::Cli::parse();
    if let Err(e) = hnca::app::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
