//! The VAE's checkpoints: which run it is (must match to resume), where it got to, and its state
//! (parameters, Adam moments, baselines) as named tensors.

use clap::ValueEnum;

use super::estimator::{Estimator, EstimatorKind};
use super::model::{Params, Shape};
use super::{Optimizers, PriorOptimizer, TrainConfig};
use crate::data::Binarize;
use crate::run::checkpoint::{check_same, Checkpoint, CheckpointError};
use crate::train::RunIdentity;

/// What must be the same for a resumed run to continue the saved one exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeRun {
    pub data_dim: usize,
    pub train_images: usize,
    pub latent: Vec<usize>,
    pub estimator: Estimator,
    pub batch_size: usize,
    pub seed: u64,
    pub binarize: Binarize,
    /// Saved for the record; a resume may change it (with a note).
    pub lr: f64,
    /// The prior's and the control variates' optimisers.
    pub optimizers: Optimizers,
}

fn value_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

impl VaeRun {
    pub fn new(cfg: &TrainConfig, data_dim: usize, train_images: usize) -> Self {
        VaeRun {
            data_dim,
            train_images,
            latent: cfg.model.latent.clone(),
            estimator: cfg.model.estimator,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            binarize: cfg.model.binarize,
            lr: cfg.lr,
            optimizers: cfg.model.optimizers,
        }
    }

    pub fn shape(&self) -> Shape {
        Shape::new(self.data_dim, &self.latent)
    }

    /// The prior's learning rate as a resume compares it: "--lr" when it follows --lr.
    fn prior_lr_shown(&self) -> String {
        if self.optimizers.prior_lr == self.lr {
            "(the --lr)".into()
        } else {
            self.optimizers.prior_lr.to_string()
        }
    }
}

impl RunIdentity for VaeRun {
    /// The settings that identify the run, as saved in its checkpoints' headers.
    fn header(&self) -> serde_json::Value {
        serde_json::json!({
            "data_dim": self.data_dim,
            "train_images": self.train_images,
            "layers": self.latent,
            "estimator": self.estimator.kind.name(),
            "samples": self.estimator.samples,
            "all_child": self.estimator.all_child,
            "full_reward": self.estimator.full_reward,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "binarize": value_name(&self.binarize),
            "lr": self.lr,
            "prior_lr": self.optimizers.prior_lr,
            "prior_optimizer": value_name(&self.optimizers.prior),
            "cv_lr": self.optimizers.cv_lr,
        })
    }

    /// Reads the run's identity from a checkpoint's header.
    fn from_checkpoint(ck: &Checkpoint) -> Result<Self, CheckpointError> {
        ck.expect_experiment(&super::DESCRIPTION)?;
        let kind: EstimatorKind = ck.enum_field("estimator")?;
        let binarize: Binarize = ck.enum_field("binarize")?;
        let data_dim = ck.u64_field("data_dim")?;
        if data_dim == 0 || data_dim > 1 << 24 {
            return Err(CheckpointError::Header(format!("implausible data_dim {data_dim}")));
        }
        // Checkpoints from before K-sample estimators and the prior's options hold none of
        // these fields: their runs used the defaults.
        let present = |key: &str| ck.header.contains_key(key);
        let samples = if present("samples") { Some(ck.u64_field("samples")? as usize) } else { None };
        let samples = samples.filter(|&k| k != kind.default_samples());
        let (all_child, full_reward) = (ck.bool_field("all_child")?, ck.bool_field("full_reward")?);
        let estimator = Estimator::configure(kind, samples, all_child, full_reward).map_err(CheckpointError::Header)?;
        let lr = ck.f64_field("lr")?;
        let defaults = Optimizers::with_lr(lr);
        let optimizers = Optimizers {
            prior_lr: if present("prior_lr") { ck.f64_field("prior_lr")? } else { defaults.prior_lr },
            prior: if present("prior_optimizer") { ck.enum_field::<PriorOptimizer>("prior_optimizer")? } else { defaults.prior },
            cv_lr: if present("cv_lr") { ck.f64_field("cv_lr")? } else { defaults.cv_lr },
        };
        Ok(VaeRun {
            data_dim: data_dim as usize,
            train_images: ck.u64_field("train_images")? as usize,
            latent: ck.widths_field("layers", 4096)?,
            estimator,
            batch_size: ck.u64_field("batch_size")? as usize,
            seed: ck.u64_field("seed")?,
            binarize,
            lr,
            optimizers,
        })
    }

    /// Every difference that would make a resume inexact.
    fn check_resumable_as(&self, now: &VaeRun) -> Result<(), CheckpointError> {
        check_same(&[
            ("image size", self.data_dim.to_string(), now.data_dim.to_string()),
            ("training images", self.train_images.to_string(), now.train_images.to_string()),
            ("--layers", format!("{:?}", self.latent), format!("{:?}", now.latent)),
            ("--estimator", self.estimator.label(), now.estimator.label()),
            ("--batch-size", self.batch_size.to_string(), now.batch_size.to_string()),
            ("--seed", self.seed.to_string(), now.seed.to_string()),
            ("--binarize", value_name(&self.binarize), value_name(&now.binarize)),
            ("--prior-lr", self.prior_lr_shown(), now.prior_lr_shown()),
            ("--prior-optimizer", value_name(&self.optimizers.prior), value_name(&now.optimizers.prior)),
            ("--cv-lr", self.optimizers.cv_lr.to_string(), now.optimizers.cv_lr.to_string()),
        ])
    }

    fn lr(&self) -> f64 {
        self.lr
    }
}

/// Names and lengths of the parameter tensors, in [`Params::tensors`] order.
pub fn param_tensors(shape: &Shape) -> Vec<(String, usize)> {
    let depth = shape.depth();
    let mut tensors = Vec::new();
    let enc = (1..=depth).map(|l| ("enc", l, shape.width(l - 1), shape.width(l)));
    let dec = (1..=depth).map(|l| ("dec", l, shape.width(l), shape.width(l - 1)));
    for (side, l, n_in, n_out) in enc.chain(dec) {
        tensors.push((format!("{side}{l}.w"), n_in * n_out));
        tensors.push((format!("{side}{l}.bias"), n_out));
    }
    tensors.push(("prior".into(), shape.width(depth)));
    tensors
}

/// The parameters stored in a checkpoint of a model of `shape`.
pub fn read_params(ck: &mut Checkpoint, shape: &Shape) -> Result<Params<Vec<f32>>, CheckpointError> {
    let mut params = Params::init(shape, 0);
    for ((name, len), t) in param_tensors(shape).iter().zip(params.tensors_mut()) {
        *t = ck.take(&format!("param/{name}"), *len)?;
    }
    Ok(params)
}
