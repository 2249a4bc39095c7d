//! The bandit's checkpoints: which run it is (must match to resume), where it got to, and its
//! state (parameters, Adam moments, the reward baseline) as named tensors.

use super::agent::{AgentShape, BanditEstimator};
use super::{BanditArgs, ACTIONS};
use crate::run::checkpoint::{check_same, Checkpoint, CheckpointError};

/// What must be the same for a resumed bandit run to continue the saved one exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct BanditRun {
    pub data_dim: usize,
    pub train_images: usize,
    pub hidden: Vec<usize>,
    pub estimator: BanditEstimator,
    pub batch_size: usize,
    pub seed: u64,
    /// Saved for the record; a resume may change it (with a note).
    pub lr: f64,
}

impl BanditRun {
    pub fn new(args: &BanditArgs, data_dim: usize, train_images: usize) -> Self {
        BanditRun {
            data_dim,
            train_images,
            hidden: args.layers.clone(),
            estimator: args.estimator,
            batch_size: args.batch_size,
            seed: args.seed,
            lr: args.lr,
        }
    }

    pub fn shape(&self) -> AgentShape {
        AgentShape::new(self.data_dim, &self.hidden, ACTIONS)
    }

    /// The settings that identify the run, as saved in its checkpoints' headers.
    pub(crate) fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "data_dim": self.data_dim,
            "train_images": self.train_images,
            "layers": self.hidden,
            "estimator": self.estimator.name(),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "lr": self.lr,
        })
    }

    /// Reads the run's identity from a checkpoint's header.
    pub fn from_checkpoint(ck: &Checkpoint) -> Result<Self, CheckpointError> {
        ck.expect_experiment(&super::DESCRIPTION)?;
        let estimator: BanditEstimator = ck.enum_field("estimator")?;
        Ok(BanditRun {
            data_dim: ck.u64_field("data_dim")? as usize,
            train_images: ck.u64_field("train_images")? as usize,
            hidden: ck.widths_field("layers", 4096)?,
            estimator,
            batch_size: ck.u64_field("batch_size")? as usize,
            seed: ck.u64_field("seed")?,
            lr: ck.f64_field("lr")?,
        })
    }

    /// Every difference that would make a resume inexact.
    pub fn check_resumable_as(&self, now: &BanditRun) -> Result<(), CheckpointError> {
        check_same(&[
            ("image size", self.data_dim.to_string(), now.data_dim.to_string()),
            ("training images", self.train_images.to_string(), now.train_images.to_string()),
            ("--layers", format!("{:?}", self.hidden), format!("{:?}", now.hidden)),
            ("--estimator", self.estimator.name().to_string(), now.estimator.name().to_string()),
            ("--batch-size", self.batch_size.to_string(), now.batch_size.to_string()),
            ("--seed", self.seed.to_string(), now.seed.to_string()),
        ])
    }
}

/// Names and lengths of the agent's tensors, in [`super::AgentParams::tensors`] order.
pub fn tensors(shape: &AgentShape) -> Vec<(String, usize)> {
    (1..shape.sizes.len())
        .flat_map(|l| [(format!("layer{l}.w"), shape.width(l - 1) * shape.width(l)), (format!("layer{l}.bias"), shape.width(l))])
        .collect()
}
