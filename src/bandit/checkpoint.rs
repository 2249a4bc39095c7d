//! The bandit's checkpoints: which run it is (must match to resume), where it got to, and its
//! state (parameters, Adam moments, the reward baseline) as named tensors.

use super::agent::AgentShape;
use super::conv::conv_geoms;
use super::{BanditConfig, Features, ACTIONS};
use crate::data::Split;
use crate::error::Error;
use crate::run::checkpoint::{check_same, Checkpoint, CheckpointError};
use crate::train::RunIdentity;

/// The convolutional feature network of a `--features conv` run, and the image it sees.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvRun {
    pub rows: usize,
    pub cols: usize,
    pub layers: usize,
    pub channels: usize,
    /// `--rho-gradient`: HNCA differentiated through ρ, as the reference code did.
    pub rho_gradient: bool,
}

/// What must be the same for a resumed bandit run to continue the saved one exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct BanditRun {
    pub data_dim: usize,
    pub train_images: usize,
    pub hidden: Vec<usize>,
    pub estimator: crate::estimator::EstimatorKind,
    pub batch_size: usize,
    pub seed: u64,
    /// Saved for the record; a resume may change it (with a note).
    pub lr: f64,
    /// The feature network (`--features conv`), or none: the Bernoulli layers see the pixels.
    pub conv: Option<ConvRun>,
}

/// The most values one buffer of a step may hold: the kernels index with 32-bit integers.
const MAX_BUFFER: usize = i32::MAX as usize;

impl BanditRun {
    /// The run `cfg` describes on the training images `train`; an error if its convolutions do
    /// not fit the images or its buffers would be too large.
    pub fn new(cfg: &BanditConfig, train: &Split) -> Result<Self, Error> {
        let m = &cfg.model;
        let conv = match m.features {
            Features::Linear => None,
            Features::Conv => Some(ConvRun {
                rows: train.rows,
                cols: train.cols,
                layers: m.conv_layers,
                channels: m.conv_channels,
                rho_gradient: m.rho_gradient,
            }),
        };
        let run = BanditRun {
            data_dim: train.pixels(),
            train_images: train.n,
            hidden: m.hidden.clone(),
            estimator: m.estimator,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            lr: cfg.lr,
            conv,
        };
        run.try_shape().map_err(Error::Config)?;
        Ok(run)
    }

    /// The agent's shape, once [`BanditRun::new`] or [`BanditRun::from_checkpoint`] checked it.
    pub fn shape(&self) -> AgentShape {
        self.try_shape().expect("the run's shape was checked when it was made")
    }

    fn try_shape(&self) -> Result<AgentShape, String> {
        let Some(c) = &self.conv else { return Ok(AgentShape::new(self.data_dim, &self.hidden, ACTIONS)) };
        let geoms = conv_geoms(c.rows, c.cols, c.layers, c.channels)?;
        // The evaluation's batches of 500 and the training batch, each through every layer.
        let b = self.batch_size.max(500);
        let largest = geoms.iter().map(|g| g.in_len().max(g.out_len()).max(g.weights() + g.c_out)).max().unwrap_or(0);
        if b.saturating_mul(largest) > MAX_BUFFER {
            return Err(format!(
                "--batch-size {} with --conv-channels {}: a batch of {b} needs {largest} values per example in one buffer, more than 2^31 in all",
                self.batch_size, c.channels
            ));
        }
        Ok(AgentShape::with_conv(geoms, &self.hidden, ACTIONS))
    }

    /// The estimator as metrics lines name it: with `--rho-gradient`, "hnca+rho-gradient", so
    /// that `plot` draws the ablation as an estimator of its own.
    pub fn estimator_label(&self) -> String {
        match &self.conv {
            Some(c) if c.rho_gradient => format!("{}+rho-gradient", self.estimator.name()),
            _ => self.estimator.name().to_string(),
        }
    }

    pub fn features(&self) -> Features {
        if self.conv.is_some() {
            Features::Conv
        } else {
            Features::Linear
        }
    }
}

impl RunIdentity for BanditRun {
    /// The settings that identify the run, as saved in its checkpoints' headers (a run over the
    /// pixels writes exactly the fields it always did).
    fn header(&self) -> serde_json::Value {
        let mut id = serde_json::json!({
            "data_dim": self.data_dim,
            "train_images": self.train_images,
            "layers": self.hidden,
            "estimator": self.estimator.name(),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "lr": self.lr,
        });
        if let (Some(c), Some(map)) = (&self.conv, id.as_object_mut()) {
            map.insert("features".into(), "conv".into());
            map.insert("image_rows".into(), c.rows.into());
            map.insert("image_cols".into(), c.cols.into());
            map.insert("conv_layers".into(), c.layers.into());
            map.insert("conv_channels".into(), c.channels.into());
            map.insert("rho_gradient".into(), c.rho_gradient.into());
        }
        id
    }

    /// Reads the run's identity from a checkpoint's header.
    fn from_checkpoint(ck: &Checkpoint) -> Result<Self, CheckpointError> {
        ck.expect_experiment(&super::DESCRIPTION)?;
        let name = ck.str_field("estimator")?;
        let estimator = super::agent::estimator(name)
            .ok_or_else(|| CheckpointError::Header(format!("unknown estimator {}", crate::error::quoted(name))))?;
        let features: Features = if ck.header.contains_key("features") { ck.enum_field("features")? } else { Features::Linear };
        let conv = match features {
            Features::Linear => None,
            Features::Conv => Some(ConvRun {
                rows: ck.u64_field("image_rows")? as usize,
                cols: ck.u64_field("image_cols")? as usize,
                layers: ck.u64_field("conv_layers")? as usize,
                channels: ck.u64_field("conv_channels")? as usize,
                rho_gradient: ck.bool_field("rho_gradient")?,
            }),
        };
        let run = BanditRun {
            data_dim: ck.u64_field("data_dim")? as usize,
            train_images: ck.u64_field("train_images")? as usize,
            hidden: ck.widths_field("layers", 4096)?,
            estimator,
            batch_size: ck.u64_field("batch_size")? as usize,
            seed: ck.u64_field("seed")?,
            lr: ck.f64_field("lr")?,
            conv,
        };
        match run.try_shape() {
            Ok(_) => Ok(run),
            Err(e) => Err(CheckpointError::Header(format!("its convolution layers cannot be built: {e}"))),
        }
    }

    /// Every difference that would make a resume inexact.
    fn check_resumable_as(&self, now: &BanditRun) -> Result<(), CheckpointError> {
        let conv = |r: &BanditRun, f: &dyn Fn(&ConvRun) -> String| r.conv.as_ref().map_or("-".to_string(), f);
        check_same(&[
            ("image size", self.data_dim.to_string(), now.data_dim.to_string()),
            ("training images", self.train_images.to_string(), now.train_images.to_string()),
            ("--features", self.features().name().to_string(), now.features().name().to_string()),
            // Convolutions see rows and columns: transposed images of the same size fit every
            // tensor and would resume a different network.
            ("image rows x columns", conv(self, &|c| format!("{}x{}", c.rows, c.cols)), conv(now, &|c| format!("{}x{}", c.rows, c.cols))),
            ("--conv-layers", conv(self, &|c| c.layers.to_string()), conv(now, &|c| c.layers.to_string())),
            ("--conv-channels", conv(self, &|c| c.channels.to_string()), conv(now, &|c| c.channels.to_string())),
            ("--rho-gradient", conv(self, &|c| c.rho_gradient.to_string()), conv(now, &|c| c.rho_gradient.to_string())),
            ("--layers", format!("{:?}", self.hidden), format!("{:?}", now.hidden)),
            ("--estimator", self.estimator.name().to_string(), now.estimator.name().to_string()),
            ("--batch-size", self.batch_size.to_string(), now.batch_size.to_string()),
            ("--seed", self.seed.to_string(), now.seed.to_string()),
        ])
    }

    fn lr(&self) -> f64 {
        self.lr
    }
}

/// Names and lengths of the agent's tensors, in [`super::AgentParams::tensors`] order.
pub fn tensors(shape: &AgentShape) -> Vec<(String, usize)> {
    let conv = shape
        .conv
        .iter()
        .enumerate()
        .flat_map(|(c, g)| [(format!("conv{}.w", c + 1), g.weights()), (format!("conv{}.bias", c + 1), g.c_out)]);
    let dense = (1..shape.sizes.len())
        .flat_map(|l| [(format!("layer{l}.w"), shape.width(l - 1) * shape.width(l)), (format!("layer{l}.bias"), shape.width(l))]);
    conv.chain(dense).collect()
}
