//! The VAE as a sweep runs it: its options as one run of the grid, and the evaluation each run
//! ends with (what `hnca eval --seed <the run's seed> --json` prints of its checkpoint).

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::checkpoint::{read_params, VaeRun};
use super::estimator::{Estimator, EstimatorKind};
use super::evaluate::evaluate_bounds;
use super::{TrainConfig, VaeArgs, VaeSettings};
use crate::backend::Backend;
use crate::data::{Mnist, Split};
use crate::error::Error;
use crate::rng::{stream, RngKey};
use crate::run::checkpoint::Checkpoint;
use crate::run::CheckpointArgs;
use crate::setup::SetupArgs;
use crate::sweep::{EvalResult, EvalSettings, FinalEval, SweepExperiment};
use crate::train::RunIdentity;

impl SweepExperiment for VaeArgs {
    type Model = VaeSettings;

    fn estimators() -> Vec<String> {
        EstimatorKind::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|p| p.get_name().to_string()).collect()
    }

    /// A name as the metrics write it: `loo`, `arms-k4`, `hnca+all-child-k2`.
    fn check_estimator(spec: &str) -> Result<(), String> {
        Estimator::parse(spec).map(|_| ()).map_err(|why| {
            let name = spec.split(['+', '-']).next().unwrap_or(spec);
            if Self::estimators().iter().any(|k| spec.starts_with(k.as_str())) || why.contains("samples") {
                why
            } else {
                format!(
                    "choose from {} (with options as the metrics name them: arms-k4, hnca+all-child); \"{name}\" is none",
                    Self::estimators().join(", ")
                )
            }
        })
    }

    fn files_mut(&mut self) -> (&mut u64, &mut Option<PathBuf>, &mut Option<PathBuf>, &mut CheckpointArgs) {
        (&mut self.seed, &mut self.metrics, &mut self.save_params, &mut self.checkpoints)
    }

    fn setup_args(&self) -> &SetupArgs {
        &self.setup
    }

    fn prepare_data(&self, data: &mut Mnist) -> Result<(), Error> {
        super::hold_out(self.train_images, data)
    }

    fn to_config(&self) -> Result<TrainConfig, Error> {
        VaeArgs::to_config(self)
    }

    /// The run's estimator with the options its name carries; a K it does not name is the
    /// sweep's shared --samples (or the estimator's default).
    fn with_estimator(&self, estimator: &str) -> Result<Self, Error> {
        let mut a = self.clone();
        let est = Estimator::parse(estimator).map_err(Error::Config)?;
        a.estimator = est.kind;
        a.all_child = self.all_child || est.all_child;
        a.full_reward = self.full_reward || est.full_reward;
        if est.samples != est.kind.default_samples() {
            a.samples = Some(est.samples);
        }
        Ok(a)
    }

    fn final_eval<B: Backend>(&self, be: &B, checkpoint: &Path, test: &Split, s: &EvalSettings) -> Result<FinalEval, Error> {
        let mut ck = Checkpoint::load(checkpoint)?;
        let as_error = |source| Error::Checkpoint { path: checkpoint.into(), source };
        let run = VaeRun::from_checkpoint(&ck).map_err(as_error)?;
        let step = ck.u64_field("step").map_err(as_error)?;
        let shape = run.shape();
        let host = read_params(&mut ck, &shape).map_err(as_error)?;
        let key = RngKey::new(s.seed, 0, stream::BINARIZE_TEST);
        let bounds = evaluate_bounds(be, &host.to_backend(be), &shape, test, run.binarize, key, s.k, s.seed, |_| {});
        be.check().map_err(Error::Device)?;
        let result = |key: &str, title: String, e: super::evaluate::Estimate| EvalResult {
            key: key.into(),
            title,
            mean: e.mean,
            std_err: e.std_err,
        };
        let mut extra = serde_json::Map::new();
        extra.insert("images".into(), bounds.images.into());
        extra.insert("k".into(), bounds.k.into());
        Ok(FinalEval {
            step,
            results: vec![
                result("test_elbo", "test ELBO".into(), bounds.elbo),
                result("test_bound", format!("test bound, K = {}", bounds.k), bounds.iwae),
            ],
            extra,
        })
    }
}
