//! `hnca bandit`: the training loop, its command line and its per-epoch metrics.

use std::path::PathBuf;
use std::time::Instant;

use super::{forward, AgentShape, BanditDraw, BanditEstimator, BanditTrainer, BanditWorkspace};
use crate::backend::Backend;
use crate::bookkeeping::{load_for_resume, note_lr_change, open_metrics, progress_bar, write_atomically, Saver, Schedule};
use crate::checkpoint::bandit::BanditRun;
use crate::data::{Mnist, Split};
use crate::error::Error;
use crate::rng::{stream, RngKey};
use crate::train::{binarize_batch, shuffle, Binarize};

/// The ten digits.
pub const ACTIONS: usize = 10;

#[derive(clap::Args, Debug, Clone)]
pub struct BanditArgs {
    /// Widths of the hidden Bernoulli layers, from the pixels upward.
    #[arg(long, value_delimiter = ',', default_value = "200,200,200")]
    pub layers: Vec<usize>,

    /// Gradient estimator for the hidden layers (the softmax output always uses REINFORCE);
    /// the plain names use the 0.99 running-average reward baseline, `-nb` none.
    #[arg(long, value_enum, default_value_t = BanditEstimator::Hnca)]
    pub estimator: BanditEstimator,

    /// Adam learning rate (β1 0.9, β2 0.999, ε 1e-8).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub lr: f64,

    /// Minibatch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Number of passes over the 60,000 training images.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,

    /// Stop after this many updates in total, even mid-epoch.
    #[arg(long)]
    pub steps: Option<u64>,

    /// Seed for initialisation, shuffling, binarization, every sample and every action.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Evaluate the test accuracy every N epochs and at the end; 0 never evaluates.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub test_every: usize,

    /// Write per-epoch metrics as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,

    #[command(flatten)]
    pub setup: crate::cli::SetupArgs,

    /// At the end, write every parameter as little-endian f32 to this file: per layer from the
    /// pixels up, weights (in, out) then biases.
    #[arg(long, value_name = "PATH")]
    pub save_params: Option<PathBuf>,

    #[command(flatten)]
    pub checkpoints: crate::cli::CheckpointArgs,
}

impl BanditArgs {
    /// Checks every value a run could not use.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.layers.is_empty() || self.layers.len() > 16 || self.layers.iter().any(|&w| w == 0 || w > 4096) {
            return bad(format!("--layers must be 1 to 16 layers of 1 to 4096 units, got {:?}", self.layers));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 || self.batch_size > 60_000 {
            return bad(format!("--batch-size must be between 1 and 60000, got {}", self.batch_size));
        }
        if self.epochs == 0 || self.steps == Some(0) {
            return bad("--epochs and --steps must be at least 1".into());
        }
        Ok(())
    }
}

/// One line of the bandit's metrics file.
#[derive(Clone, Debug)]
pub struct BanditEpoch {
    pub epoch: usize,
    pub step: u64,
    pub steps_in_epoch: u64,
    /// Mean online reward over the epoch's steps.
    pub train_accuracy: f64,
    pub test_accuracy: Option<f64>,
    /// Per parameter, the variance across the batch of the per-example estimates, averaged over
    /// all parameters (the softmax layer's included) and over the epoch's steps; and per layer.
    pub grad_var: f64,
    pub grad_var_layers: Vec<f64>,
    pub seconds: f64,
    pub steps_per_second: f64,
}

impl BanditEpoch {
    fn to_json(&self, args: &BanditArgs) -> serde_json::Value {
        serde_json::json!({
            "experiment": "bandit",
            "epoch": self.epoch,
            "step": self.step,
            "steps_in_epoch": self.steps_in_epoch,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "grad_var": self.grad_var,
            "grad_var_layers": self.grad_var_layers,
            "seconds": self.seconds,
            "steps_per_second": self.steps_per_second,
            "estimator": args.estimator.name(),
            "seed": args.seed,
            "layers": args.layers,
            "batch_size": args.batch_size,
            "lr": args.lr,
        })
    }

    fn line(&self, args: &BanditArgs) -> String {
        let test = self.test_accuracy.map(|t| format!(" test_accuracy {t:.4}")).unwrap_or_default();
        format!(
            "epoch {}/{} step {} train_accuracy {:.4}{} grad_var {:.4e} {:.1} steps/s {:.1}s",
            self.epoch, args.epochs, self.step, self.train_accuracy, test, self.grad_var, self.steps_per_second, self.seconds
        )
    }
}

/// The labels of `indices` as f32 integers.
fn labels(split: &Split, indices: &[u32]) -> Vec<f32> {
    indices.iter().map(|&i| split.labels[i as usize] as f32).collect()
}

/// Test accuracy: the mean reward of sampled actions on the test set, binarized afresh.
pub fn evaluate<B: Backend>(trainer: &BanditTrainer<'_, B>, split: &Split, key: RngKey, eval_index: u64) -> f64 {
    const EVAL_BATCH: usize = 500;
    let be = trainer.be;
    let indices: Vec<u32> = (0..split.n as u32).collect();
    let mut cache: Option<BanditWorkspace<B::Buf>> = None;
    let mut correct = 0.0;
    for (batch_no, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
        let b = chunk.len();
        if cache.as_ref().map(|w| w.b) != Some(b) {
            cache = Some(BanditWorkspace::new(be, &trainer.shape, b));
        }
        let ws = cache.as_mut().expect("workspace was just created");
        be.write(&mut ws.u[0], &binarize_batch(split, chunk, Binarize::Dynamic, key, trainer.shape.width(0)));
        be.write(&mut ws.labels, &labels(split, chunk));
        let draw = BanditDraw { seed: trainer.seed, step: (eval_index << 24) | batch_no as u64, eval: true };
        forward(be, &trainer.params, ws, &trainer.shape, draw);
        correct += be.term_means(&ws.reward, b, 1)[0] * b as f64;
    }
    correct / split.n as f64
}

/// Trains the agent as configured, printing one line per epoch; returns every epoch's metrics.
pub fn train_bandit<B: Backend>(be: &B, args: &BanditArgs, data: &Mnist) -> Result<Vec<BanditEpoch>, Error> {
    let shape = AgentShape::new(data.train.pixels(), &args.layers, ACTIONS);
    let run = BanditRun::new(args, data.train.pixels(), data.train.n);
    let mut trainer = BanditTrainer::new(be, shape.clone(), args.estimator, args.batch_size, args.lr as f32, args.seed);
    if let Some(path) = &args.checkpoints.resume {
        let (ck, as_error) = load_for_resume(path)?;
        let saved = BanditRun::from_checkpoint(&ck).map_err(&as_error)?;
        saved.check_resumable_as(&run).map_err(&as_error)?;
        note_lr_change("bandit", saved.lr, run.lr);
        trainer.restore(ck).map_err(&as_error)?;
        eprintln!("hnca bandit: resuming from {} at step {}", path.display(), trainer.step);
    }
    let resumed_at = trainer.step;
    let mut metrics = open_metrics(args.metrics.as_deref(), args.checkpoints.resume.is_some().then_some(resumed_at))?;
    let mut saver = Saver::new(args.checkpoints.save.clone(), args.checkpoints.save_every)?;
    let mut schedule = Schedule::new("bandit", resumed_at, data.train.n, args.batch_size, args.epochs, args.steps);
    let total_steps = schedule.total_steps;
    let bar = progress_bar(total_steps);
    bar.set_position(resumed_at.min(total_steps));
    let layers = shape.sizes.len() - 1;
    let layer_params: Vec<f64> = (1..=layers).map(|l| shape.layer_params(l) as f64).collect();
    let all_params: f64 = layer_params.iter().sum();
    let mut history = Vec::new();
    for epoch in schedule.first_epoch..=args.epochs {
        if trainer.step >= total_steps {
            break;
        }
        let started = Instant::now();
        let e = epoch as u64;
        let order = shuffle(data.train.n, RngKey::new(args.seed, e, stream::SHUFFLE));
        let bin_key = RngKey::new(args.seed, e, stream::BINARIZE_TRAIN);
        let (mut reward_sum, mut var_sum, mut steps) = (0.0f64, 0.0f64, 0u64);
        let mut var_layers = vec![0.0f64; layers];
        for batch in schedule.batches(&order, args.batch_size) {
            if trainer.step >= total_steps {
                break;
            }
            let x = binarize_batch(&data.train, batch, Binarize::Dynamic, bin_key, shape.width(0));
            let stats = trainer.train_step(&x, &labels(&data.train, batch));
            be.check().map_err(Error::Device)?;
            let total: f64 = stats.grad_var.iter().map(|(w, b)| w + b).sum();
            let finite = total.is_finite() && trainer.baseline.is_finite();
            if !finite || schedule.full_scan_due(trainer.step) {
                let found = trainer.find_non_finite();
                if found.is_some() || !finite {
                    bar.abandon();
                    let what = found.unwrap_or_else(|| "a gradient's variance is not finite".into());
                    return Err(Error::Diverged { step: trainer.step, what, kept: saver.kept() });
                }
            }
            reward_sum += stats.mean_reward;
            var_sum += total / all_params;
            for ((acc, (w, b)), n) in var_layers.iter_mut().zip(&stats.grad_var).zip(&layer_params) {
                *acc += (w + b) / n;
            }
            steps += 1;
            let rate = steps as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("epoch {epoch}  accuracy {:.4}  {rate:.1} steps/s", reward_sum / steps as f64));
            bar.inc(1);
        }
        let test_due = args.test_every > 0 && (epoch % args.test_every == 0 || epoch == args.epochs || trainer.step >= total_steps);
        let test_accuracy = test_due.then(|| evaluate(&trainer, &data.test, RngKey::new(args.seed, e, stream::BINARIZE_TEST), e));
        be.check().map_err(Error::Device)?;
        let seconds = started.elapsed().as_secs_f64();
        let n = steps.max(1) as f64;
        let m = BanditEpoch {
            epoch,
            step: trainer.step,
            steps_in_epoch: steps,
            train_accuracy: reward_sum / n,
            test_accuracy,
            grad_var: var_sum / n,
            grad_var_layers: var_layers.iter().map(|v| v / n).collect(),
            seconds,
            steps_per_second: steps as f64 / seconds.max(1e-9),
        };
        if bar.is_hidden() {
            println!("{}", m.line(args));
        } else {
            bar.println(m.line(args));
        }
        if let Some(file) = &mut metrics {
            file.push(m.to_json(args).to_string())?;
        }
        history.push(m);
        if let Some(done) = schedule.epoch_ends_at(trainer.step) {
            saver.at_epoch_end(done, trainer.step, || trainer.checkpoint(&run, done))?;
        }
    }
    bar.finish_and_clear();
    saver.at_run_end(trainer.step, || trainer.checkpoint(&run, schedule.epochs_done(trainer.step)))?;
    if let Some(path) = &args.save_params {
        let bytes: Vec<u8> = trainer.host_params().tensors().flatten().flat_map(|v| v.to_le_bytes()).collect();
        write_atomically(path, &bytes)?;
    }
    Ok(history)
}
