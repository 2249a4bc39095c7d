//! `hnca`: parse the command line, validate it, run, and map errors to exit codes.

use clap::Parser;

use hnca::backend::cpu::Cpu;
use hnca::cli::{Cli, Command, VaeArgs};
use hnca::error::Error;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Vae(args) => run_vae(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run_vae(args: &VaeArgs) -> Result<(), Error> {
    let cfg = args.to_config()?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| Error::Config(format!("--threads: {e}")))?;
    }
    let dir = args.data_dir.clone().unwrap_or_else(hnca::data::default_data_dir);
    let data = hnca::data::load_mnist(&dir)?;
    eprintln!(
        "hnca vae: {} on cpu, layers {:?}, batch {}, lr {:e}, seed {}, {} train / {} test images from {}",
        cfg.estimator.label(),
        cfg.latent,
        cfg.batch_size,
        cfg.lr,
        cfg.seed,
        data.train.n,
        data.test.n,
        dir.display()
    );
    hnca::train::train(&Cpu::new(), &cfg, &data)?;
    Ok(())
}
