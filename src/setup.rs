//! Where a command runs and on what: the thread pool, the MNIST files and the device (the GPU,
//! or the CPU with a one-line note when none is usable). Shared by every command that trains
//! or evaluates; knows no experiment.

use std::path::PathBuf;

use clap::Args;

use crate::backend::cuda::CudaDevice;
use crate::error::Error;

/// Where the training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when the CUDA driver loads and a GPU exists, otherwise the CPU (saying why).
    Auto,
    /// The CPU backend.
    Cpu,
    /// The GPU, or an error if there is none.
    Cuda,
}

/// Where a command finds MNIST and where it runs, shared by `vae`, `bandit` and `eval`.
#[derive(Args, Debug, Clone)]
pub struct SetupArgs {
    /// Directory holding the four MNIST-format IDX .gz files [default: the data/ shipped with hnca].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Worker threads for the CPU backend [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

/// What a training subcommand starts from: the data, where it came from, and the device.
pub struct Setup {
    pub dir: std::path::PathBuf,
    pub data: crate::data::Mnist,
    pub gpu: Option<CudaDevice>,
    /// The device in words, for the run's first line.
    pub place: String,
}

/// Sizes the thread pool, loads MNIST and opens the device, in that order.
/// `activity` ("training", "evaluating") completes the note printed when `auto` finds no GPU.
pub fn set_up(args: &SetupArgs, activity: &str) -> Result<Setup, Error> {
    if args.threads == Some(0) {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| Error::Config(format!("--threads: {e}")))?;
    }
    let dir = args.data_dir.clone().unwrap_or_else(crate::data::default_data_dir);
    let data = crate::data::load_mnist(&dir)?;
    let gpu = open_device(args.device, activity)?;
    let place = gpu.as_ref().map_or("cpu".to_string(), |d| format!("{} with kernels from {}", d.description, d.kernels_from));
    Ok(Setup { dir, data, gpu, place })
}

/// The GPU the user asked for: none for `cpu`, an error without one for `cuda`, and for `auto`
/// the GPU if one is usable, else a one-line note and the CPU.
pub fn open_device(choice: DeviceChoice, activity: &str) -> Result<Option<CudaDevice>, Error> {
    Ok(match choice {
        DeviceChoice::Cpu => None,
        DeviceChoice::Cuda => Some(CudaDevice::open().map_err(Error::Device)?),
        DeviceChoice::Auto => match CudaDevice::open() {
            Ok(d) => Some(d),
            Err(why) => {
                eprintln!("hnca: no usable GPU ({why}); {activity} on the CPU");
                None
            }
        },
    })
}
