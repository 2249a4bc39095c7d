//! The discrete VAE of docs/hnca.md §4 (a sigmoid belief net on binarized MNIST): its command line,
//! model, estimators, training step, trainer, evaluation, checkpoint contents and the `eval`,
//! `sample` and `bench` commands. It uses the generic parts (backend, data, run driver); they
//! do not know it.

pub mod bench;
pub mod checkpoint;
pub mod estimate;
pub mod estimator;
pub mod evaluate;
pub mod forward;
pub mod inspect;
pub mod model;
pub mod step;
pub mod sweep;
pub mod trainer;
pub mod workspace;

use std::path::PathBuf;

use crate::backend::cpu::Cpu;
use crate::backend::kernels::KernelBackend;
use crate::backend::Backend;
use crate::data::{Binarize, Mnist};
use crate::error::Error;
use crate::run::{drive, Description, EpochRecord};
use crate::setup::{set_up, Setup};
use crate::train::config::Given;
use estimator::{Estimator, EstimatorKind};
use trainer::VaeExperiment;

pub const DESCRIPTION: Description = Description {
    name: "vae",
    display: "VAE",
    train_metric: "train_elbo",
    test_metric: "test_elbo",
    valid_metric: "valid_elbo",
    progress_label: "elbo",
    progress_digits: 2,
    line_digits: 3,
    metric_title: "train ELBO (nats)",
    figure_title: "Discrete VAE on binarized MNIST",
};

#[derive(clap::Args, Debug, Clone)]
pub struct VaeArgs {
    /// Widths of the stochastic latent layers, from the data upward (x → z1 → z2 → …).
    #[arg(long, value_delimiter = ',', default_value = "200,200,200")]
    pub layers: Vec<usize>,

    /// Gradient estimator for the encoder (the decoder and prior always get exact gradients);
    /// see docs/estimators.md for the K-sample estimators.
    #[arg(long, value_enum, default_value_t = EstimatorKind::Hnca)]
    pub estimator: EstimatorKind,

    /// Samples per encoder layer, K >= 2, for hnca (then averaged over K samples with a
    /// leave-one-out baseline instead of the running one), loo, arms, double-cv and rodeo
    /// [default: 1 for hnca, 2 for the others].
    #[arg(long, value_name = "K")]
    pub samples: Option<usize>,

    /// HNCA ablation: weight the terms that take a unit as input by its hindsight ratios too.
    #[arg(long)]
    pub all_child: bool,

    /// HNCA ablation: add the ELBO terms upstream of each layer to that layer's reward.
    #[arg(long)]
    pub full_reward: bool,

    /// Adam learning rate (β1 0.9, β2 0.999, ε 1e-8).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub lr: f64,

    /// Learning rate of the prior's logits; 0 keeps the prior fixed [default: --lr].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub prior_lr: Option<f64>,

    /// Optimiser of the prior's logits: Adam (as every other tensor) or plain gradient ascent.
    #[arg(long, value_enum, default_value_t = PriorOptimizer::Adam)]
    pub prior_optimizer: PriorOptimizer,

    /// Adam learning rate of what double-cv and rodeo learn for their control variates (α; for
    /// rodeo α, β and its control network), trained online to minimise the mean square of the
    /// logit-gradient estimates [default: 1e-3].
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub cv_lr: Option<f64>,

    /// Train on the first N training images and evaluate the rest as a validation set with the
    /// test set (`valid_elbo` in the metrics; DisARM's protocol is 50000) [default: all].
    #[arg(long, value_name = "N")]
    pub train_images: Option<usize>,

    /// Minibatch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Number of passes over the 60,000 training images.
    #[arg(long, default_value_t = 840)]
    pub epochs: usize,

    /// Stop after this many updates in total, even mid-epoch.
    #[arg(long)]
    pub steps: Option<u64>,

    /// Seed for initialisation, shuffling, binarization and every sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Evaluate the test ELBO (mean single-sample ELBO over the freshly binarized test set)
    /// every N epochs and at the end; 0 never evaluates.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub test_every: usize,

    /// Write per-epoch metrics as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    /// How pixels become bits: a fresh Bernoulli(pixel/255) draw every epoch, or pixel/255 > 0.5.
    #[arg(long, value_enum, default_value_t = Binarize::Dynamic)]
    pub binarize: Binarize,

    #[command(flatten)]
    pub setup: crate::setup::SetupArgs,

    /// At the end, write every parameter as little-endian f32 to this file, tensor after tensor:
    /// per layer (from the data up) encoder weights (in, out) and biases, then per layer decoder
    /// weights and biases, then the prior logits.
    #[arg(long, value_name = "PATH")]
    pub save_params: Option<PathBuf>,

    #[command(flatten)]
    pub checkpoints: crate::run::CheckpointArgs,
}

/// How the prior's logits are updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PriorOptimizer {
    /// Adam (β1 0.9, β2 0.999, ε 1e-8), at --prior-lr.
    Adam,
    /// Plain gradient ascent, logits += prior-lr · gradient.
    Sgd,
}

/// The optimisers of the tensors that may differ from the rest: the prior, and the learned
/// coefficients of the control variates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizers {
    pub prior_lr: f64,
    pub prior: PriorOptimizer,
    pub cv_lr: f64,
}

impl Optimizers {
    /// The defaults for encoder and decoder learning rate `lr`: the prior trained with them.
    pub fn with_lr(lr: f64) -> Self {
        Optimizers { prior_lr: lr, prior: PriorOptimizer::Adam, cv_lr: 1e-3 }
    }
}

/// The VAE's own validated options: its model, estimator, optimisers and data.
#[derive(Clone, Debug)]
pub struct VaeSettings {
    pub latent: Vec<usize>,
    pub estimator: Estimator,
    pub optimizers: Optimizers,
    /// Train on this many of the training images; the rest are the validation set.
    pub train_images: Option<usize>,
    pub binarize: Binarize,
}

/// A validated VAE training configuration.
pub type TrainConfig = crate::train::TrainConfig<VaeSettings>;

impl VaeArgs {
    /// The options every experiment has, as given.
    fn given(&self) -> Given<'_> {
        Given {
            lr: self.lr,
            batch_size: self.batch_size,
            epochs: self.epochs,
            steps: self.steps,
            seed: self.seed,
            test_every: self.test_every,
            metrics: &self.metrics,
            save_params: &self.save_params,
            checkpoints: &self.checkpoints,
        }
    }

    /// Checks every value a run could not use and builds the configuration.
    pub fn to_config(&self) -> Result<TrainConfig, Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.layers.is_empty() || self.layers.iter().any(|&w| w == 0 || w > 4096) {
            return bad(format!("--layers must be 1 to 4096 units per layer, got {:?}", self.layers));
        }
        if self.layers.len() > 16 {
            return bad(format!("--layers allows at most 16 layers, got {}", self.layers.len()));
        }
        let given = self.given();
        given.check_lr_and_batch()?;
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.steps == Some(0) {
            return bad("--steps must be at least 1".into());
        }
        self.checkpoints.check()?;
        let est = Estimator::configure(self.estimator, self.samples, self.all_child, self.full_reward).map_err(Error::Config)?;
        let prior_lr = self.prior_lr.unwrap_or(self.lr);
        if !(prior_lr.is_finite() && prior_lr >= 0.0) {
            return bad(format!("--prior-lr must be 0 (a fixed prior) or a positive number, got {prior_lr}"));
        }
        let cv_lr = self.cv_lr.unwrap_or(Optimizers::with_lr(self.lr).cv_lr);
        if !(cv_lr.is_finite() && cv_lr > 0.0) {
            return bad(format!("--cv-lr must be a positive number, got {cv_lr}"));
        }
        if self.cv_lr.is_some() && est.plan().learned == 0 {
            return bad(format!("--cv-lr applies to --estimator double-cv and rodeo, not {}", est.kind.name()));
        }
        if self.train_images == Some(0) {
            return bad("--train-images must be at least 1".into());
        }
        Ok(given.config(VaeSettings {
            latent: self.layers.clone(),
            estimator: est,
            optimizers: Optimizers { prior_lr, prior: self.prior_optimizer, cv_lr },
            train_images: self.train_images,
            binarize: self.binarize,
        }))
    }
}

/// `hnca vae`: validates, sets up, and trains on the GPU or the CPU.
pub fn run(args: &VaeArgs) -> Result<(), Error> {
    let cfg = args.to_config()?;
    let Setup { dir, mut data, gpu, place } = set_up(&args.setup, "training")?;
    hold_out(cfg.model.train_images, &mut data)?;
    eprintln!(
        "hnca vae: {} on {place}, layers {:?}, batch {}, lr {:e}, seed {}, {} train{} / {} test images from {}",
        cfg.model.estimator.label(),
        cfg.model.latent,
        cfg.batch_size,
        cfg.lr,
        cfg.seed,
        data.train.n,
        data.valid.as_ref().map_or(String::new(), |v| format!(" / {} validation", v.n)),
        data.test.n,
        dir.display()
    );
    match gpu {
        Some(d) => train(&KernelBackend::new(d), &cfg, &data)?,
        None => Cpu::on_pool(|| train(&Cpu::new(), &cfg, &data))?,
    };
    Ok(())
}

/// `--train-images N`: the first N training images train, the rest validate.
pub(crate) fn hold_out(train_images: Option<usize>, data: &mut Mnist) -> Result<(), Error> {
    match train_images {
        Some(n) => data.hold_out(n).map_err(Error::Config),
        None => Ok(()),
    }
}

/// Trains the VAE on `data` as configured (from scratch or from `cfg.resume`), printing one line
/// per epoch; returns the metrics of the epochs it ran.
pub fn train<B: Backend>(be: &B, cfg: &TrainConfig, data: &Mnist) -> Result<Vec<EpochRecord>, Error> {
    let mut exp = VaeExperiment::new(be, cfg, &data.train)?;
    drive(&mut exp, &cfg.run_options(), data)
}
