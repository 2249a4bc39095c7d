//! One trainer for every experiment. An experiment says what its model is ([`Model`]: shapes,
//! gradients, evaluation, its own state) and what identifies its runs ([`ModelConfig`],
//! [`RunIdentity`]); the trainer ([`Trainer`]) owns the parameters, Adam, the training state,
//! the recorded step, the NaN scan and the checkpoint tensors, and one [`TrainRun`] and one
//! [`TrainBatch`] make any such experiment a run (or a batch of runs) of the run driver. The
//! options every experiment trains with are one validated [`TrainConfig`].

pub mod batch;
pub mod config;
pub mod experiment;
pub mod trainer;

pub use batch::{batchable, TrainBatch};
pub use config::TrainConfig;
pub use experiment::{ModelConfig, RunIdentity, TrainRun};
pub use trainer::{LastTensor, Model, Trainer};
