//! The contextual bandit of docs/hnca.md §3: an agent of Bernoulli hidden layers and a softmax over
//! the ten digits, rewarded 1 for naming the digit. The output layer learns by REINFORCE; every
//! hidden layer by HNCA (its children are the next layer's units, or for the last hidden layer
//! the softmax unit) or by REINFORCE. The Bernoulli layers see the pixels, or (the paper's
//! nonlinear bandit, `--features conv`) the output of convolution layers trained by
//! backpropagating the first Bernoulli layer's gradient. Its command line, agent, trainer and
//! checkpoint contents; the generic parts (backend, data, run driver) do not know it.

pub mod agent;
pub mod checkpoint;
pub mod conv;
pub mod sweep;
pub mod trainer;

use std::path::PathBuf;

pub use agent::{forward, gradients, AgentParams, AgentShape, BanditDraw, BanditWorkspace, ESTIMATORS};
pub use trainer::{Agent, BanditExperiment, BanditTrainer};

use crate::backend::cpu::Cpu;
use crate::backend::kernels::KernelBackend;
use crate::backend::Backend;
use crate::data::Mnist;
use crate::error::Error;
use crate::run::{drive, Description, EpochRecord};
use crate::setup::{set_up, Setup};
use crate::train::config::Given;

/// The ten digits.
pub const ACTIONS: usize = 10;

pub const DESCRIPTION: Description = Description {
    name: "bandit",
    display: "bandit",
    train_metric: "train_accuracy",
    test_metric: "test_accuracy",
    valid_metric: "valid_accuracy",
    progress_label: "accuracy",
    progress_digits: 4,
    line_digits: 4,
    metric_title: "train accuracy",
    figure_title: "Contextual bandit on MNIST",
};

/// What the first Bernoulli layer sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Features {
    /// The pixels: its logits are linear in them (the paper's contextual bandit).
    Linear,
    /// The output of convolution layers (3x3, stride 1, no padding, ReLU; see --conv-layers and
    /// --conv-channels) trained by backpropagating the first Bernoulli layer's gradient (the
    /// paper's nonlinear contextual bandit).
    Conv,
}

impl Features {
    pub fn name(self) -> &'static str {
        match self {
            Features::Linear => "linear",
            Features::Conv => "conv",
        }
    }
}

/// The feature network's defaults (the reference's nonlinear bandit).
pub const DEFAULT_CONV_LAYERS: usize = 2;
pub const DEFAULT_CONV_CHANNELS: usize = 16;

#[derive(clap::Args, Debug, Clone)]
pub struct BanditArgs {
    /// Widths of the hidden Bernoulli layers, from the input upward [default: 200,200,200; with
    /// --features conv, 200].
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,

    /// What the first Bernoulli layer sees: the pixels, or convolutional features learnt by
    /// backpropagation.
    #[arg(long, value_enum, default_value_t = Features::Linear)]
    pub features: Features,

    /// With --features conv: the number of convolution layers (each 3x3, shrinking the image by
    /// 2 pixels) [default: 2].
    #[arg(long, value_name = "N")]
    pub conv_layers: Option<usize>,

    /// With --features conv: the channels of every convolution layer [default: 16].
    #[arg(long, value_name = "N")]
    pub conv_channels: Option<usize>,

    /// With --features conv and an HNCA estimator: differentiate through the hindsight ratios ρ
    /// as well, as the reference code of the nonlinear bandit did. This is biased (HNCA needs ρ
    /// held fixed); an ablation.
    #[arg(long)]
    pub rho_gradient: bool,

    /// Gradient estimator for the hidden layers (the softmax output always uses REINFORCE);
    /// the plain names use the 0.99 running-average reward baseline, `-nb` none.
    #[arg(long, value_parser = agent::estimator_parser(), default_value = "hnca")]
    pub estimator: crate::estimator::EstimatorKind,

    /// Adam learning rate (β1 0.9, β2 0.999, ε 1e-8).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub lr: f64,

    /// Minibatch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Number of passes over the 60,000 training images.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,

    /// Stop after this many updates in total, even mid-epoch.
    #[arg(long)]
    pub steps: Option<u64>,

    /// Seed for initialisation, shuffling, binarization, every sample and every action.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Evaluate the test accuracy every N epochs and at the end; 0 never evaluates.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub test_every: usize,

    /// Write per-epoch metrics as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    #[command(flatten)]
    pub setup: crate::setup::SetupArgs,

    /// At the end, write every parameter as little-endian f32 to this file: per layer from the
    /// pixels up, weights then biases (a convolution's weights (k, k, c_in, c_out), a dense
    /// layer's (in, out)).
    #[arg(long, value_name = "PATH")]
    pub save_params: Option<PathBuf>,

    #[command(flatten)]
    pub checkpoints: crate::run::CheckpointArgs,
}

/// The bandit's own validated options: its agent, estimator and features.
#[derive(Clone, Debug)]
pub struct BanditSettings {
    pub hidden: Vec<usize>,
    pub features: Features,
    pub conv_layers: usize,
    pub conv_channels: usize,
    pub rho_gradient: bool,
    pub estimator: crate::estimator::EstimatorKind,
}

/// A validated bandit training configuration.
pub type BanditConfig = crate::train::TrainConfig<BanditSettings>;

impl BanditArgs {
    /// Checks every value a run could not use and builds the configuration.
    pub fn to_config(&self) -> Result<BanditConfig, Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        let layers = self.hidden_layers();
        if layers.is_empty() || layers.len() > 16 || layers.iter().any(|&w| w == 0 || w > 4096) {
            return bad(format!("--layers must be 1 to 16 layers of 1 to 4096 units, got {layers:?}"));
        }
        if self.features == Features::Linear && (self.conv_layers.is_some() || self.conv_channels.is_some()) {
            return bad("--conv-layers and --conv-channels shape the convolution layers of --features conv".into());
        }
        if self.features == Features::Conv {
            let (l, c) = (self.conv_layers(), self.conv_channels());
            if l == 0 || l > conv::MAX_LAYERS {
                return bad(format!("--conv-layers must be 1 to {}, got {l}", conv::MAX_LAYERS));
            }
            if c == 0 || c > conv::MAX_CHANNELS {
                return bad(format!("--conv-channels must be 1 to {}, got {c}", conv::MAX_CHANNELS));
            }
        }
        if self.rho_gradient && self.features != Features::Conv {
            return bad("--rho-gradient is an ablation of the nonlinear bandit; it needs --features conv".into());
        }
        if self.rho_gradient && agent::plan(self.estimator).combine != crate::estimator::Combine::Hnca {
            return bad(format!("--rho-gradient changes HNCA's gradient; it does not apply to --estimator {}", self.estimator.name()));
        }
        let given = Given {
            lr: self.lr,
            batch_size: self.batch_size,
            epochs: self.epochs,
            steps: self.steps,
            seed: self.seed,
            test_every: self.test_every,
            metrics: &self.metrics,
            save_params: &self.save_params,
            checkpoints: &self.checkpoints,
        };
        given.check_lr_and_batch()?;
        if self.epochs == 0 || self.steps == Some(0) {
            return bad("--epochs and --steps must be at least 1".into());
        }
        self.checkpoints.check()?;
        Ok(given.config(BanditSettings {
            hidden: layers,
            features: self.features,
            conv_layers: self.conv_layers(),
            conv_channels: self.conv_channels(),
            rho_gradient: self.rho_gradient,
            estimator: self.estimator,
        }))
    }
}

impl BanditArgs {
    /// The hidden Bernoulli layers' widths, given or by default.
    pub fn hidden_layers(&self) -> Vec<usize> {
        match (&self.layers, self.features) {
            (Some(l), _) => l.clone(),
            (None, Features::Linear) => vec![200, 200, 200],
            (None, Features::Conv) => vec![200],
        }
    }
    pub fn conv_layers(&self) -> usize {
        self.conv_layers.unwrap_or(DEFAULT_CONV_LAYERS)
    }
    pub fn conv_channels(&self) -> usize {
        self.conv_channels.unwrap_or(DEFAULT_CONV_CHANNELS)
    }
    /// The feature network in words, for the opening line.
    fn features_line(&self) -> String {
        match self.features {
            Features::Linear => String::new(),
            Features::Conv => format!(
                ", {} conv layers of {} channels{}",
                self.conv_layers(),
                self.conv_channels(),
                if self.rho_gradient { ", differentiating through rho" } else { "" }
            ),
        }
    }
}

/// `hnca bandit`: validates, sets up, and trains on the GPU or the CPU.
pub fn run(args: &BanditArgs) -> Result<(), Error> {
    let cfg = args.to_config()?;
    let Setup { dir, data, gpu, place } = set_up(&args.setup, "training")?;
    // The convolutions' fit to the images, before anything is allocated.
    checkpoint::BanditRun::new(&cfg, &data.train)?;
    eprintln!(
        "hnca bandit: {} on {place}{}, hidden layers {:?}, batch {}, lr {:e}, seed {}, {} train / {} test images from {}",
        args.estimator.name(),
        args.features_line(),
        cfg.model.hidden,
        cfg.batch_size,
        cfg.lr,
        cfg.seed,
        data.train.n,
        data.test.n,
        dir.display()
    );
    match gpu {
        Some(d) => train_bandit(&KernelBackend::new(d), &cfg, &data)?,
        None => train_bandit(&Cpu::new(), &cfg, &data)?,
    };
    Ok(())
}

/// Trains the agent as configured, printing one line per epoch; returns every epoch's metrics.
pub fn train_bandit<B: Backend>(be: &B, cfg: &BanditConfig, data: &Mnist) -> Result<Vec<EpochRecord>, Error> {
    let mut exp = BanditExperiment::new(be, cfg, &data.train)?;
    drive(&mut exp, &cfg.run_options(), data)
}
