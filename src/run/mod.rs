//! The run driver: epochs of shuffled minibatches, resume, checkpoints, divergence handling, the
//! metrics file and the progress bar, written once for every experiment. It trains an
//! [`Experiment`]: a training step, an evaluation, what identifies its runs, and what its
//! checkpoints hold (every experiment's is [`crate::train::TrainRun`]). This module knows no
//! experiment; it must not import one.

pub mod batch;
pub mod checkpoint;
pub mod describe;
pub mod files;
pub mod interrupt;
pub mod saver;
pub mod schedule;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use checkpoint::{Checkpoint, CheckpointError};
pub use describe::{display_name, known, register, Description};
use files::{open_metrics, write_atomically};
use saver::{load_for_resume, PartialEpoch, Saver};
use schedule::{shuffle, Schedule};

use crate::data::{Mnist, Split};
use crate::error::Error;
pub use crate::nn::EpochSums;
use crate::rng::{stream, RngKey};

/// Steps between the host's reads of a device's statistics: each read waits for the device, so
/// a GPU is read every 100 steps (and at every epoch's end), when the progress bar moves and the
/// scan for NaN and infinity is due anyway; the CPU, where a read is free, after every step.
pub const DEVICE_READ_EVERY: u64 = 100;

/// How often a run on `be` reads its statistics.
pub fn read_every<B: crate::backend::Backend>(be: &B) -> u64 {
    if be.host_reads_are_free() {
        1
    } else {
        DEVICE_READ_EVERY
    }
}

/// One training run of an experiment on one backend, as the driver sees it.
pub trait Experiment {
    fn description(&self) -> &'static Description;
    /// Updates taken so far.
    fn step(&self) -> u64;
    /// Steps between reads of the statistics ([`read_every`]).
    fn read_every(&self) -> u64;
    /// Readies epoch `epoch`: its order of the training images, starting at batch `first_batch`
    /// (a run resumed mid-epoch skips the batches already done); the epoch's sums restart.
    fn start_epoch(&mut self, epoch: u64, order: &[u32], first_batch: u64);
    /// One update on the epoch's next batch. Nothing comes back to the host.
    fn train_step(&mut self);
    /// The epoch's sums so far and, if something stopped being finite, at which step and what,
    /// from one read of the statistics; with `full_scan`, every tensor of the state is checked
    /// for NaN and infinity as well.
    fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>);
    /// The test metric on `split`, binarized afresh with `binarize`; `index` keys its samples.
    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64;
    /// The first failure of a device operation since the last call.
    fn device_error(&self) -> Option<String>;
    /// The fields that say which run a metrics line belongs to, in order (estimator, seed,
    /// layers, batch size, learning rate).
    fn identity(&self) -> Vec<(&'static str, serde_json::Value)>;
    /// The statistics of the epoch so far (its sums and the last step's values), from one read.
    fn epoch_stats(&self) -> Vec<f64>;
    /// Puts back statistics that [`Experiment::epoch_stats`] read, after `start_epoch` zeroed
    /// them: a run resumed mid-epoch then reports that epoch whole.
    fn restore_epoch_stats(&mut self, stats: &[f64]);
    /// The whole state after `epochs_done` complete epochs.
    fn checkpoint(&self, epochs_done: u64) -> Checkpoint;
    /// Continues from `ck` after checking that it is a checkpoint of this same run.
    fn resume(&mut self, ck: Checkpoint) -> Result<(), CheckpointError>;
    /// Every parameter as little-endian f32, tensor after tensor (`--save-params`).
    fn params_le_bytes(&self) -> Vec<u8>;
}

/// Checkpointing, shared by `vae` and `bandit`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckpointArgs {
    /// Write a checkpoint (configuration, parameters, Adam state, baseline(s), step) to this file
    /// every --save-every epochs and at the end; each write replaces the last one atomically.
    #[arg(long, value_name = "PATH")]
    pub save: Option<PathBuf>,

    /// Epochs between checkpoints (0: only at the end) [default: 1].
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,

    /// Continue the run saved in this checkpoint, exactly as if it had never stopped. Give the
    /// same options it was started with (a different --epochs or --steps extends or shortens it).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
}

impl CheckpointArgs {
    /// Epochs between checkpoints.
    pub fn save_every(&self) -> usize {
        self.save_every.unwrap_or(1)
    }

    /// --save-every says how often --save writes; alone it would be ignored.
    pub fn check(&self) -> Result<(), Error> {
        if self.save_every.is_some() && self.save.is_none() {
            return Err(Error::Config("--save-every needs --save".into()));
        }
        Ok(())
    }
}

/// What the driver needs of the command line, whatever the experiment.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub epochs: usize,
    pub max_steps: Option<u64>,
    pub batch_size: usize,
    pub seed: u64,
    /// Evaluate every this many epochs and at the end (0: never).
    pub test_every: usize,
    pub metrics: Option<PathBuf>,
    pub save: Option<PathBuf>,
    pub save_every: usize,
    pub resume: Option<PathBuf>,
    pub save_params: Option<PathBuf>,
    /// Where runs share the terminal (a sweep): each epoch line starts with this and "run: ",
    /// and there is no progress bar.
    pub label: Option<String>,
}

/// One line of the metrics file.
#[derive(Clone, Debug)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: u64,
    pub steps_in_epoch: u64,
    /// Mean over the epoch's steps of the training objective.
    pub train: f64,
    /// The test metric, in epochs that evaluate it.
    pub test: Option<f64>,
    /// The same on the validation images, when the run holds some out (`validates`).
    pub valid: Option<f64>,
    pub validates: bool,
    /// Mean over all parameters of the across-batch variance of their estimates, averaged over
    /// the epoch's steps; and the same per layer (layer 1 first).
    pub grad_var: f64,
    pub grad_var_layers: Vec<f64>,
    pub seconds: f64,
    pub steps_per_second: f64,
}

impl EpochRecord {
    pub fn to_json(&self, d: &Description, identity: &[(&'static str, serde_json::Value)]) -> serde_json::Value {
        let mut line = serde_json::Map::new();
        line.insert("experiment".into(), d.name.into());
        line.insert("epoch".into(), self.epoch.into());
        line.insert("step".into(), self.step.into());
        line.insert("steps_in_epoch".into(), self.steps_in_epoch.into());
        line.insert(d.train_metric.into(), self.train.into());
        line.insert(d.test_metric.into(), self.test.into());
        if self.validates {
            line.insert(d.valid_metric.into(), self.valid.into());
        }
        line.insert("grad_var".into(), self.grad_var.into());
        line.insert("grad_var_layers".into(), self.grad_var_layers.clone().into());
        line.insert("seconds".into(), self.seconds.into());
        line.insert("steps_per_second".into(), self.steps_per_second.into());
        for (k, v) in identity {
            line.insert((*k).into(), v.clone());
        }
        line.into()
    }

    pub fn line(&self, d: &Description, epochs: usize) -> String {
        let digits = d.line_digits;
        let test = self.test.map(|t| format!(" {} {t:.digits$}", d.test_metric)).unwrap_or_default();
        let valid = self.valid.map(|t| format!(" {} {t:.digits$}", d.valid_metric)).unwrap_or_default();
        format!(
            "epoch {}/{} step {} {} {:.digits$}{}{} grad_var {:.4e} {:.1} steps/s {:.1}s",
            self.epoch, epochs, self.step, d.train_metric, self.train, valid, test, self.grad_var, self.steps_per_second, self.seconds
        )
    }
}

/// Trains `exp` on `data` as `opts` say (from scratch, or from `opts.resume`), printing one line
/// per epoch; returns the metrics of the epochs it ran. A signal ([`interrupt`]) stops it at the
/// next step boundary with a checkpoint of that step and [`Error::Interrupted`].
pub fn drive<E: Experiment>(exp: &mut E, opts: &RunOptions, data: &Mnist) -> Result<Vec<EpochRecord>, Error> {
    interrupt::install();
    let d = exp.description();
    let mut partial = None;
    if let Some(path) = &opts.resume {
        let (ck, as_error) = load_for_resume(path)?;
        partial = PartialEpoch::of(&ck).map_err(&as_error)?;
        exp.resume(ck).map_err(&as_error)?;
        if let Some(p) = &partial {
            p.check_len(exp.epoch_stats().len()).map_err(&as_error)?;
        }
        eprintln!("hnca {}: resuming from {} at step {}", d.name, path.display(), exp.step());
    }
    let resumed_at = exp.step();
    let mut metrics = open_metrics(opts.metrics.as_deref(), opts.resume.is_some().then_some(resumed_at))?;
    let mut saver = Saver::new(opts.save.clone(), opts.save_every)?;
    let mut schedule = Schedule::new(d.name, resumed_at, data.train.n, opts.batch_size, opts.epochs, opts.max_steps);
    // Only a checkpoint written mid-epoch carries a part of an epoch.
    let mut partial = partial.filter(|_| !resumed_at.is_multiple_of(schedule.steps_per_epoch));
    let total_steps = schedule.total_steps;
    let bar = if opts.label.is_some() { indicatif::ProgressBar::hidden() } else { progress_bar(total_steps) };
    bar.set_position(resumed_at.min(total_steps));
    let prefix = opts.label.as_ref().map_or(String::new(), |l| format!("{l}: "));
    let identity = exp.identity();
    let read_every = exp.read_every();
    let device = |exp: &E| exp.device_error().map_or(Ok(()), |e| Err(Error::Device(e)));
    let mut history = Vec::new();

    for epoch in schedule.first_epoch..=opts.epochs {
        if exp.step() >= total_steps {
            break;
        }
        let started = Instant::now();
        let e = epoch as u64;
        let order = shuffle(data.train.n, RngKey::new(opts.seed, e, stream::SHUFFLE));
        let first_batch = schedule.start_epoch();
        exp.start_epoch(e, &order, first_batch);
        let mut earlier_seconds = 0.0;
        if let Some(p) = partial.take() {
            exp.restore_epoch_stats(&p.stats);
            earlier_seconds = p.seconds.unwrap_or(0.0);
        }
        let elapsed = |started: Instant| earlier_seconds + started.elapsed().as_secs_f64();
        let batches = (schedule.steps_per_epoch - first_batch).min(total_steps - exp.step());
        let mut sums = EpochSums::default();
        for i in 0..batches {
            exp.train_step();
            device(exp)?;
            let step = exp.step();
            // A signal ends the run here unless this was the epoch's last batch: then the epoch
            // ends as usual first (metrics line, evaluation), and the run stops after it.
            let stop = interrupt::requested() && i + 1 < batches;
            if step.is_multiple_of(read_every) || i + 1 == batches || stop {
                let (read, diverged) = exp.progress(schedule.full_scan_due(step) || stop);
                device(exp)?;
                if let Some((at, what)) = diverged {
                    bar.abandon();
                    return Err(Error::Diverged { step: at, what, kept: saver.kept() });
                }
                sums = read;
                let rate = sums.steps as f64 / elapsed(started).max(1e-9);
                let digits = d.progress_digits;
                bar.set_message(format!(
                    "epoch {epoch}  {} {:.digits$}  {rate:.1} steps/s",
                    d.progress_label,
                    sums.objective / sums.steps.max(1) as f64
                ));
                bar.set_position(step.min(total_steps));
            }
            if stop {
                bar.abandon();
                let seconds = Some(elapsed(started));
                let done = schedule.epochs_done(step);
                let kept = saver.at_interrupt(step, || mid_epoch(exp.checkpoint(done), exp.epoch_stats(), seconds))?;
                return Err(interrupted(step, &kept));
            }
        }
        let test_due = opts.test_every > 0 && (epoch % opts.test_every == 0 || epoch == opts.epochs || exp.step() >= total_steps);
        let test = test_due.then(|| exp.evaluate(&data.test, RngKey::new(opts.seed, e, stream::BINARIZE_TEST), e));
        // The validation images draw their encoder samples from evaluations of their own.
        let valid = data
            .valid
            .as_ref()
            .filter(|_| test_due)
            .map(|v| exp.evaluate(v, RngKey::new(opts.seed, e, stream::BINARIZE_VALID), e | 1 << 32));
        device(exp)?;
        let seconds = elapsed(started);
        let n = sums.steps.max(1) as f64;
        let record = EpochRecord {
            epoch,
            step: exp.step(),
            steps_in_epoch: sums.steps,
            train: sums.objective / n,
            test,
            valid,
            validates: data.valid.is_some(),
            grad_var: sums.grad_var / n,
            grad_var_layers: sums.grad_var_layers.iter().map(|v| v / n).collect(),
            seconds,
            steps_per_second: sums.steps as f64 / seconds.max(1e-9),
        };
        let line = format!("{prefix}{}", record.line(d, opts.epochs));
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
        if let Some(file) = &mut metrics {
            file.push(record.to_json(d, &identity).to_string())?;
        }
        history.push(record);
        if let Some(done) = schedule.epoch_ends_at(exp.step()) {
            saver.at_epoch_end(done, exp.step(), || exp.checkpoint(done))?;
        }
        let step = exp.step();
        if interrupt::requested() && step < total_steps {
            bar.abandon();
            let done = schedule.epochs_done(step);
            let kept = saver.at_interrupt(step, || exp.checkpoint(done))?;
            return Err(interrupted(step, &kept));
        }
    }
    bar.finish_and_clear();
    let step = exp.step();
    // A resumed run with nothing left to train leaves its checkpoint as it is.
    let trained = opts.resume.is_none() || step != resumed_at;
    saver.at_run_end(step, trained, || {
        let ck = exp.checkpoint(schedule.epochs_done(step));
        if step.is_multiple_of(schedule.steps_per_epoch) {
            ck
        } else {
            mid_epoch(ck, exp.epoch_stats(), None)
        }
    })?;
    if let Some(path) = &opts.save_params {
        write_atomically(path, &exp.params_le_bytes())?;
    }
    Ok(history)
}

/// A checkpoint written mid-epoch, with that epoch's statistics (and seconds, if stopped by a
/// signal).
fn mid_epoch(mut ck: Checkpoint, stats: Vec<f64>, seconds: Option<f64>) -> Checkpoint {
    PartialEpoch { stats, seconds }.add_to(&mut ck);
    ck
}

fn interrupted(step: u64, kept: &str) -> Error {
    Error::Interrupted(format!("stopped by {} after step {step}; {kept}", interrupt::signal_name()))
}

/// A progress bar on a terminal, nothing elsewhere.
pub(crate) fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let style =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}").expect("the progress template is valid");
    bar.set_style(style);
    bar
}
