//! The VAE as a sweep runs it: its options as one run of the grid, and the evaluation each run
//! ends with (what `hnca eval --seed <the run's seed> --json` prints of its checkpoint).

use std::path::Path;

use clap::ValueEnum;

use super::batch::{batchable, VaeBatch};
use super::checkpoint::{read_params, VaeRun};
use super::estimator::{Estimator, EstimatorKind};
use super::evaluate::evaluate_bounds;
use super::trainer::VaeExperiment;
use super::VaeArgs;
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

impl SweepExperiment for VaeArgs {
    fn description() -> &'static Description {
        &super::DESCRIPTION
    }

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

    fn own_files_given(&self) -> Vec<&'static str> {
        files_given(self.metrics.is_some(), &self.checkpoints, self.save_params.is_some())
    }

    fn setup_args(&self) -> &SetupArgs {
        &self.setup
    }

    fn prepare_data(&self, data: &mut Mnist) -> Result<(), Error> {
        super::hold_out(self.train_images, data)
    }

    fn validate(&self) -> Result<(), Error> {
        self.to_config().map(|_| ())
    }

    fn for_run(&self, estimator: &str, seed: u64, files: &RunFiles, resume: bool) -> Result<Self, Error> {
        let mut a = self.clone();
        // The run's estimator with the options its name carries; a K it does not name is the
        // sweep's shared --samples (or the estimator's default).
        let est = Estimator::parse(estimator).map_err(Error::Config)?;
        a.estimator = est.kind;
        a.all_child = self.all_child || est.all_child;
        a.full_reward = self.full_reward || est.full_reward;
        if est.samples != est.kind.default_samples() {
            a.samples = Some(est.samples);
        }
        a.seed = seed;
        a.metrics = Some(files.metrics.clone());
        a.checkpoints.save = Some(files.checkpoint.clone());
        a.checkpoints.resume = resume.then(|| files.checkpoint.clone());
        a.save_params = None;
        Ok(a)
    }

    fn run_options(&self) -> Result<RunOptions, Error> {
        Ok(self.to_config()?.run_options())
    }

    fn train<B: Backend>(&self, be: &B, data: &Mnist, label: &str) -> Result<(), Error> {
        let cfg = self.to_config()?;
        let mut exp = VaeExperiment::new(be, &cfg, &data.train);
        let mut opts = cfg.run_options();
        opts.label = Some(label.to_string());
        drive(&mut exp, &opts, data).map(|_| ())
    }

    fn train_batch<B: Backend + Sync>(runs: &[Self], be: &B, data: &Mnist, labels: &[String]) -> Option<Vec<Result<(), Error>>> {
        let cfgs: Result<Vec<_>, Error> = runs.iter().map(|a| a.to_config()).collect();
        let cfgs = match cfgs.and_then(|c| batchable(&c).map(|()| c).map_err(Error::Config)) {
            Ok(c) => c,
            Err(e) => return Some(runs.iter().map(|_| Err(Error::Config(e.to_string()))).collect()),
        };
        let be = Runs::new(be, cfgs.iter().map(|c| c.seed).collect());
        let batch = VaeBatch::new(&be, &cfgs, &data.train);
        let opts: Vec<RunOptions> =
            cfgs.iter().zip(labels).map(|(c, label)| RunOptions { label: Some(label.clone()), ..c.run_options() }).collect();
        Some(drive_batch(batch, &opts, data, |_, result| result.map(|_| ())))
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
