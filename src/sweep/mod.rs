//! `hnca sweep`: a grid of runs of one experiment (every estimator of `--estimators` with every
//! seed of `--seeds`, the rest of the options shared), each writing what a single run writes
//! into its own directory and an evaluation at its end; trained here ([`local`]) or submitted to
//! Slurm as a job array ([`slurm`]). Knows no experiment: each implements [`SweepExperiment`]
//! over its own argument struct, which the sweep's command line flattens, so that every option
//! and estimator of a single run is one of the sweep's too.

pub mod grid;
pub mod local;
pub mod slurm;

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, FromArgMatches};

use crate::backend::runs::Runs;
use crate::backend::Backend;
use crate::data::{Mnist, Split};
use crate::error::Error;
use crate::run::batch::drive_batch;
use crate::run::{drive, CheckpointArgs, Description, RunOptions};
use crate::setup::SetupArgs;
use crate::train::{batchable, ModelConfig, TrainBatch, TrainConfig, TrainRun};
use grid::{RunFiles, RunSpec};

/// What the sweep needs of an experiment's argument struct (`VaeArgs`, `BanditArgs`).
pub trait SweepExperiment: Args + Clone + std::fmt::Debug + Send + Sync {
    /// The experiment's own part of its validated configuration.
    type Model: ModelConfig;
    fn description() -> &'static Description {
        Self::Model::description()
    }
    /// Every name `--estimator` accepts, as the help lists them.
    fn estimators() -> Vec<String>;
    /// Whether `spec` names a run of the grid: by default one of [`Self::estimators`]; an
    /// experiment whose metrics name estimators with their options (the VAE's `arms-k4`,
    /// `hnca+all-child`) accepts those too. The error says why not.
    fn check_estimator(spec: &str) -> Result<(), String> {
        let known = Self::estimators();
        if known.iter().any(|k| k == spec) {
            Ok(())
        } else {
            Err(format!("choose from {}", known.join(", ")))
        }
    }
    /// The run's seed and its file options (`--metrics`, `--save-params`, and `--save` and
    /// `--resume`), which a sweep sets per run.
    fn files_mut(&mut self) -> (&mut u64, &mut Option<PathBuf>, &mut Option<PathBuf>, &mut CheckpointArgs);
    /// The per-run file options (`--metrics`, `--save`, `--resume`, `--save-params`) that are
    /// set: a sweep names each run's files itself.
    fn own_files_given(&self) -> Vec<&'static str> {
        let mut a = self.clone();
        let (_, metrics, save_params, checkpoints) = a.files_mut();
        let given = [
            ("--metrics", metrics.is_some()),
            ("--save", checkpoints.save.is_some()),
            ("--resume", checkpoints.resume.is_some()),
            ("--save-params", save_params.is_some()),
        ];
        given.into_iter().filter(|g| g.1).map(|g| g.0).collect()
    }
    fn setup_args(&self) -> &SetupArgs;
    /// Readies the loaded data as the single-run command does (the VAE's `--train-images` holds
    /// the rest of the training images out for validation); by default the data as loaded.
    fn prepare_data(&self, data: &mut Mnist) -> Result<(), Error> {
        let _ = data;
        Ok(())
    }
    /// Checks the options as the single-run command does and builds the configuration.
    fn to_config(&self) -> Result<TrainConfig<Self::Model>, Error>;
    /// These options with the run's estimator (one of [`Self::estimators`]) set.
    fn with_estimator(&self, estimator: &str) -> Result<Self, Error>;
    /// These options as one run of the grid: its estimator and seed, writing its metrics and
    /// checkpoints to `files`, continuing from its checkpoint if `resume`.
    fn for_run(&self, estimator: &str, seed: u64, files: &RunFiles, resume: bool) -> Result<Self, Error> {
        let mut a = self.with_estimator(estimator)?;
        let (s, metrics, save_params, checkpoints) = a.files_mut();
        *s = seed;
        *metrics = Some(files.metrics.clone());
        checkpoints.save = Some(files.checkpoint.clone());
        checkpoints.resume = resume.then(|| files.checkpoint.clone());
        *save_params = None;
        Ok(a)
    }
    /// Trains as configured on `be`, its epoch lines labelled `label`.
    fn train<B: Backend>(&self, be: &B, data: &Mnist, label: &str) -> Result<(), Error> {
        let cfg = self.to_config()?;
        let mut exp = TrainRun::new(be, &cfg, &data.train)?;
        drive(&mut exp, &cfg.labelled(label), data).map(|_| ())
    }
    /// Trains `runs` (each [`Self::for_run`]'s options, different in their seeds and files
    /// only) as one batch on `be` ([`crate::run::batch`]), run r's lines labelled `labels[r]`.
    fn train_batch<B: Backend + Sync>(runs: &[Self], be: &B, data: &Mnist, labels: &[String]) -> Vec<Result<(), Error>> {
        let fail = |e: String| runs.iter().map(|_| Err(Error::Config(e.clone()))).collect();
        let cfgs = match runs.iter().map(|a| a.to_config()).collect::<Result<Vec<_>, Error>>() {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        };
        if let Err(e) = batchable(&cfgs) {
            return fail(e);
        }
        let be = Runs::new(be, cfgs.iter().map(|c| c.seed).collect());
        let batch = match TrainBatch::new(&be, &cfgs, &data.train) {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        let opts: Vec<RunOptions> = cfgs.iter().zip(labels).map(|(c, label)| c.labelled(label)).collect();
        drive_batch(batch, &opts, data, |_, result| result.map(|_| ()))
    }
    /// Evaluates the model in `checkpoint` on `test` at the run's end.
    fn final_eval<B: Backend>(&self, be: &B, checkpoint: &Path, test: &Split, settings: &EvalSettings) -> Result<FinalEval, Error>;
}

/// How each run is evaluated at its end.
#[derive(Clone, Copy, Debug)]
pub struct EvalSettings {
    /// Samples per image of an importance-weighted bound.
    pub k: usize,
    /// Seed of the test set's binarization and the samples: the run's.
    pub seed: u64,
}

/// One number of a final evaluation: a mean over test images and its standard error.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// The field in eval.json and `report --json`, e.g. "test_elbo".
    pub key: String,
    /// The column title, e.g. "test bound, K = 100".
    pub title: String,
    pub mean: f64,
    pub std_err: f64,
}

/// A run's final evaluation, as eval.json holds it.
#[derive(Clone, Debug)]
pub struct FinalEval {
    /// The step of the checkpoint evaluated.
    pub step: u64,
    pub results: Vec<EvalResult>,
    /// Anything else worth keeping (images, K).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Where the runs are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    /// In this process, several runs at once on the CPU (see --parallel), one after another on
    /// a GPU.
    Local,
    /// A Slurm job array: writes OUT/sweep.sbatch and submits it with sbatch.
    Slurm,
}

/// The sweep's own options.
#[derive(Args, Debug, Clone)]
pub struct GridOptions {
    /// Estimators to run, comma-separated (the experiment's --estimator values; the help lists them).
    #[arg(long, value_delimiter = ',', required = true, value_name = "LIST")]
    pub estimators: Vec<String>,

    /// Seeds to run with each estimator: numbers and ranges, comma-separated, e.g. 0-4 or 0,3,7-9.
    #[arg(long, default_value = "0", value_name = "LIST")]
    pub seeds: String,

    /// Directory of the runs: each writes OUT/<experiment>-<estimator>-s<seed>/ (metrics.jsonl,
    /// checkpoint.ck and at its end eval.json). Running the same sweep again continues every
    /// unfinished run from its checkpoint and skips finished ones.
    #[arg(long, default_value = "runs", value_name = "DIR")]
    pub out: PathBuf,

    /// Samples per image of the importance-weighted bound each VAE run is evaluated with at its
    /// end (as `hnca eval --k`).
    #[arg(long, default_value_t = 100, value_name = "K")]
    pub eval_k: usize,

    /// Evaluate each run at its end on the first N test images only [default: all].
    #[arg(long, value_name = "N")]
    pub eval_images: Option<usize>,

    /// Where the runs are trained.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,

    /// Runs trained at once by the local executor on the CPU, sharing its threads [default: one
    /// per thread].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,

    /// Runs of one estimator trained together, by one batched step whose buffers hold every
    /// run (on a GPU one graph launch steps them all), at most N in a batch [default: all of an
    /// estimator's runs here]; 1 trains each run by itself. A batched run ends exactly as it
    /// would alone.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch: Option<u64>,

    /// Train only task N of the grid here: its runs N·r to N·r + r - 1, r being --runs-per-task
    /// (what each Slurm array task runs).
    #[arg(long, value_name = "N")]
    pub task: Option<usize>,

    #[command(flatten)]
    pub slurm: slurm::SlurmOptions,
}

/// `hnca sweep <experiment>`: the experiment's options (`A`, flattened) and the sweep's.
#[derive(Debug, Clone)]
pub struct SweepArgs<A> {
    pub experiment: A,
    pub grid: GridOptions,
}

/// The options of a single run that the sweep sets per run: hidden from its help, and refused
/// when given ([`check`], [`refuse_singular`]).
const PER_RUN: [&str; 6] = ["estimator", "seed", "metrics", "save", "resume", "save_params"];

fn augment<A: SweepExperiment>(cmd: clap::Command, update: bool) -> clap::Command {
    let cmd = if update { A::augment_args_for_update(cmd) } else { A::augment_args(cmd) };
    let cmd = if update { GridOptions::augment_args_for_update(cmd) } else { GridOptions::augment_args(cmd) };
    let names = A::estimators().join(", ");
    let mut cmd = cmd.mut_arg("estimators", |a| a.help(format!("Estimators to run, comma-separated, of: {names}")));
    for id in PER_RUN {
        if cmd.get_arguments().any(|a| a.get_id() == id) {
            cmd = cmd.mut_arg(id, |a| a.hide(true));
        }
    }
    cmd
}

impl<A: SweepExperiment> Args for SweepArgs<A> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        augment::<A>(cmd, false)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        augment::<A>(cmd, true)
    }
}

impl<A: SweepExperiment> FromArgMatches for SweepArgs<A> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(SweepArgs { experiment: A::from_arg_matches(m)?, grid: GridOptions::from_arg_matches(m)? })
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.experiment.update_from_arg_matches(m)?;
        self.grid.update_from_arg_matches(m)
    }
}

/// A checked sweep: its grid and the runs this process is to train.
pub struct Plan<A> {
    pub base: A,
    pub all: Vec<RunSpec>,
    pub tasks: usize,
}

/// Checks everything a run of the grid could refuse, before anything is trained or submitted.
pub fn check<A: SweepExperiment>(args: &SweepArgs<A>) -> Result<Plan<A>, Error> {
    let (base, g) = (&args.experiment, &args.grid);
    let d = A::description();
    if let Some(opt) = base.own_files_given().first() {
        return Err(Error::Config(format!("{opt} is not an option of a sweep: each run writes its files into its directory under --out")));
    }
    grid::check_estimators(d.name, &g.estimators, A::check_estimator)?;
    let seeds = grid::parse_seeds(&g.seeds)?;
    if g.eval_k == 0 || g.eval_k > 100_000 {
        return Err(Error::Config(format!("--eval-k must be between 1 and 100000, got {}", g.eval_k)));
    }
    if g.eval_images == Some(0) || g.parallel == Some(0) || g.slurm.runs_per_task == 0 {
        return Err(Error::Config("--eval-images, --parallel and --runs-per-task must be at least 1".into()));
    }
    if g.out.exists() && !g.out.is_dir() {
        return Err(Error::Config(format!("--out {}: not a directory", g.out.display())));
    }
    let all = grid::runs(d.name, &g.estimators, &seeds);
    // Each estimator's run, as the single-run command would check it (an HNCA ablation flag
    // with another estimator, say).
    for est in &g.estimators {
        let files = RunFiles::new(&g.out, "check");
        base.for_run(est, seeds[0], &files, false)?.to_config()?;
    }
    let tasks = grid::task_count(all.len(), g.slurm.runs_per_task);
    if let Some(t) = g.task {
        grid::task_runs(&all, g.slurm.runs_per_task, t)?;
    }
    slurm::check(&g.slurm)?;
    Ok(Plan { base: base.clone(), all, tasks })
}

/// `hnca sweep <experiment> ...`: with `--executor slurm` (and no `--task`) writes and submits
/// the job array; otherwise trains the runs (those of `--task`, or all) here. `argv` is the
/// program's command line, which each array task repeats with `--task` added.
pub fn run<A: SweepExperiment>(args: &SweepArgs<A>, argv: &[std::ffi::OsString]) -> Result<(), Error> {
    refuse_singular(argv)?;
    let plan = check(args)?;
    let g = &args.grid;
    if g.task.is_none() {
        std::fs::create_dir_all(&g.out).map_err(|source| Error::Io { path: g.out.clone(), source })?;
        grid::record_estimators(&g.out, A::description().name, &g.estimators)?;
    }
    if g.executor == Executor::Slurm && g.task.is_none() {
        let data_dir = args.experiment.setup_args().data_dir.clone().unwrap_or_else(crate::data::default_data_dir);
        args.experiment.prepare_data(&mut crate::data::load_mnist(&data_dir)?)?;
        return slurm::submit(A::description(), &plan, g, argv);
    }
    let runs = match g.task {
        Some(t) => grid::task_runs(&plan.all, g.slurm.runs_per_task, t)?.to_vec(),
        None => plan.all.clone(),
    };
    local::run(&plan.base, &runs, g)
}

/// `--estimator` and `--seed` choose a single run's; given to a sweep (whose options include a
/// single run's) they would be overridden without a word.
fn refuse_singular(argv: &[std::ffi::OsString]) -> Result<(), Error> {
    for (one, many) in [("--estimator", "--estimators"), ("--seed", "--seeds")] {
        let given = argv.iter().filter_map(|a| a.to_str()).any(|a| a == one || a.starts_with(&format!("{one}=")));
        if given {
            return Err(Error::Config(format!("{one} is not an option of a sweep: give the list with {many}")));
        }
    }
    Ok(())
}
