//! The bandit as a sweep runs it: its options as one run of the grid, and the evaluation each
//! run ends with: the test accuracy of its checkpoint (the mean reward of sampled actions over
//! the test set, binarized with the run's seed).

use std::path::Path;

use super::agent::{estimator, ESTIMATORS};
use super::batch::{batchable, BanditBatch};
use super::checkpoint::BanditRun;
use super::trainer::{evaluate, BanditExperiment, BanditTrainer};
use super::BanditArgs;
use crate::backend::runs::Runs;
use crate::backend::Backend;
use crate::data::{Mnist, Split};
use crate::error::Error;
use crate::rng::{stream, RngKey};
use crate::run::batch::drive_batch;
use crate::run::checkpoint::Checkpoint;
use crate::run::{drive, Description, RunOptions};
use crate::setup::SetupArgs;
use crate::sweep::grid::RunFiles;
use crate::sweep::{files_given, EvalResult, EvalSettings, FinalEval, SweepExperiment};

impl SweepExperiment for BanditArgs {
    fn description() -> &'static Description {
        &super::DESCRIPTION
    }

    fn estimators() -> Vec<String> {
        ESTIMATORS.iter().map(|(kind, _)| kind.name().to_string()).collect()
    }

    fn own_files_given(&self) -> Vec<&'static str> {
        files_given(self.metrics.is_some(), &self.checkpoints, self.save_params.is_some())
    }

    fn setup_args(&self) -> &SetupArgs {
        &self.setup
    }

    fn validate(&self) -> Result<(), Error> {
        BanditArgs::validate(self)
    }

    fn for_run(&self, estimator: &str, seed: u64, files: &RunFiles, resume: bool) -> Result<Self, Error> {
        let mut a = self.clone();
        a.estimator = self::estimator(estimator).ok_or_else(|| Error::Config(format!("unknown estimator {estimator}")))?;
        a.seed = seed;
        a.metrics = Some(files.metrics.clone());
        a.checkpoints.save = Some(files.checkpoint.clone());
        a.checkpoints.resume = resume.then(|| files.checkpoint.clone());
        a.save_params = None;
        Ok(a)
    }

    fn run_options(&self) -> Result<RunOptions, Error> {
        Ok(BanditArgs::run_options(self))
    }

    fn train<B: Backend>(&self, be: &B, data: &Mnist, label: &str) -> Result<(), Error> {
        let mut exp = BanditExperiment::new(be, self, &data.train)?;
        let mut opts = BanditArgs::run_options(self);
        opts.label = Some(label.to_string());
        drive(&mut exp, &opts, data).map(|_| ())
    }

    fn train_batch<B: Backend + Sync>(runs: &[Self], be: &B, data: &Mnist, labels: &[String]) -> Option<Vec<Result<(), Error>>> {
        let fail = |e: String| Some(runs.iter().map(|_| Err(Error::Config(e.clone()))).collect());
        if let Err(e) = batchable(runs) {
            return fail(e);
        }
        let be = Runs::new(be, runs.iter().map(|a| a.seed).collect());
        let batch = match BanditBatch::new(&be, runs, &data.train) {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        let opts: Vec<RunOptions> =
            runs.iter().zip(labels).map(|(a, label)| RunOptions { label: Some(label.clone()), ..BanditArgs::run_options(a) }).collect();
        Some(drive_batch(batch, &opts, data, |_, result| result.map(|_| ())))
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
