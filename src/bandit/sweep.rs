//! The bandit as a sweep runs it: its options as one run of the grid, and the evaluation each
//! run ends with: the test accuracy of its checkpoint (the mean reward of sampled actions over
//! the test set, binarized with the run's seed).

use std::path::{Path, PathBuf};

use super::agent::ESTIMATORS;
use super::checkpoint::BanditRun;
use super::trainer::{evaluate, BanditTrainer};
use super::{BanditArgs, BanditConfig, BanditSettings};
use crate::backend::Backend;
use crate::data::Split;
use crate::error::Error;
use crate::rng::{stream, RngKey};
use crate::run::checkpoint::Checkpoint;
use crate::run::CheckpointArgs;
use crate::setup::SetupArgs;
use crate::sweep::{EvalResult, EvalSettings, FinalEval, SweepExperiment};
use crate::train::RunIdentity;

impl SweepExperiment for BanditArgs {
    type Model = BanditSettings;

    fn estimators() -> Vec<String> {
        ESTIMATORS.iter().map(|(kind, _)| kind.name().to_string()).collect()
    }

    fn files_mut(&mut self) -> (&mut u64, &mut Option<PathBuf>, &mut Option<PathBuf>, &mut CheckpointArgs) {
        (&mut self.seed, &mut self.metrics, &mut self.save_params, &mut self.checkpoints)
    }

    fn setup_args(&self) -> &SetupArgs {
        &self.setup
    }

    fn to_config(&self) -> Result<BanditConfig, Error> {
        BanditArgs::to_config(self)
    }

    fn with_estimator(&self, estimator: &str) -> Result<Self, Error> {
        let mut a = self.clone();
        a.estimator = super::agent::estimator(estimator).ok_or_else(|| Error::Config(format!("unknown estimator {estimator}")))?;
        Ok(a)
    }

    fn final_eval<B: Backend>(&self, be: &B, checkpoint: &Path, test: &Split, s: &EvalSettings) -> Result<FinalEval, Error> {
        let ck = Checkpoint::load(checkpoint)?;
        let as_error = |source| Error::Checkpoint { path: checkpoint.into(), source };
        let run = BanditRun::from_checkpoint(&ck).map_err(as_error)?;
        let step = ck.u64_field("step").map_err(as_error)?;
        let mut trainer = BanditTrainer::new(be, run.shape(), run.estimator, run.batch_size, run.lr as f32, run.seed);
        trainer.restore(ck).map_err(as_error)?;
        let accuracy = evaluate(&trainer, test, RngKey::new(s.seed, 0, stream::BINARIZE_TEST), 0);
        be.check().map_err(Error::Device)?;
        // Each image's reward is 0 or 1: their standard error is √(a(1-a)/(n-1)).
        let n = test.n as f64;
        let std_err = (accuracy * (1.0 - accuracy) * n / (n - 1.0).max(1.0) / n).sqrt();
        let mut extra = serde_json::Map::new();
        extra.insert("images".into(), test.n.into());
        Ok(FinalEval {
            step,
            results: vec![EvalResult { key: "test_accuracy".into(), title: "test accuracy".into(), mean: accuracy, std_err }],
            extra,
        })
    }
}
