//! The training loop: epochs of shuffled, binarized minibatches, Adam on every tensor, the
//! running baselines, periodic test-set evaluation, per-epoch metrics and progress.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::{AdamStep, Backend};
use crate::bookkeeping::{load_for_resume, note_lr_change, open_metrics, progress_bar, write_atomically, Saver, Schedule};
use crate::checkpoint::vae::VaeRun;
use crate::data::{Mnist, Split};
use crate::error::Error;
use crate::estimator::{Estimator, BASELINE_DECAY};
use crate::model::{Params, Shape};
use crate::rng::{stream, RngKey};
use crate::step::{compute_gradients, evaluate_elbo, Draw, StepStats, Workspace};

/// How grey MNIST pixels become bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Binarize {
    /// A fresh Bernoulli(pixel/255) draw for every image every epoch (the paper's protocol).
    Dynamic,
    /// A fixed threshold, pixel/255 > 0.5.
    Threshold,
}

/// A validated training configuration.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub latent: Vec<usize>,
    pub estimator: Estimator,
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub max_steps: Option<u64>,
    pub seed: u64,
    /// Evaluate the test ELBO every this many epochs (0: never).
    pub test_every: usize,
    pub metrics: Option<PathBuf>,
    pub save_params: Option<PathBuf>,
    pub binarize: Binarize,
    /// Write a checkpoint here every `save_every` epochs and at the end.
    pub save: Option<PathBuf>,
    pub save_every: usize,
    /// Continue the run saved in this checkpoint.
    pub resume: Option<PathBuf>,
}

pub const ADAM_BETA1: f32 = 0.9;
pub const ADAM_BETA2: f32 = 0.999;
pub const ADAM_EPS: f32 = 1e-8;

/// Parameters, optimiser state, baselines and buffers of one training run on one backend.
pub struct Trainer<'a, B: Backend> {
    pub be: &'a B,
    pub shape: Shape,
    pub est: Estimator,
    pub params: Params<B::Buf>,
    /// The last step's gradients (ascent directions, batch means), read by tests and the scans.
    pub grads: Params<B::Buf>,
    pub(crate) adam_m: Params<B::Buf>,
    pub(crate) adam_v: Params<B::Buf>,
    pub ws: Workspace<B::Buf>,
    /// b̄_l for l = 1..=L (index l-1).
    pub baselines: Vec<f32>,
    pub step: u64,
    pub lr: f32,
    pub seed: u64,
}

impl<'a, B: Backend> Trainer<'a, B> {
    pub fn new(be: &'a B, shape: Shape, est: Estimator, batch_size: usize, lr: f32, seed: u64) -> Self {
        let host = Params::init(&shape, seed);
        let zeros = |p: &Params<Vec<f32>>| p.map(|t| be.zeros(t.len()));
        Trainer {
            be,
            params: host.to_backend(be),
            grads: zeros(&host),
            adam_m: zeros(&host),
            adam_v: zeros(&host),
            ws: Workspace::new(be, &shape, &est, batch_size),
            baselines: vec![0.0; shape.depth()],
            shape,
            est,
            step: 0,
            lr,
            seed,
        }
    }

    /// One update on the binarized batch x, (b, n_0); returns the pre-update statistics.
    pub fn train_step(&mut self, x: &[f32]) -> StepStats {
        let be = self.be;
        be.write(&mut self.ws.main.z[0], x);
        let draw = Draw { seed: self.seed, step: self.step, eval: false };
        let stats = compute_gradients(be, &self.params, &mut self.ws, &self.est, &self.baselines, draw, &mut self.grads);
        self.step += 1;
        let hp = AdamStep { lr: self.lr, beta1: ADAM_BETA1, beta2: ADAM_BETA2, eps: ADAM_EPS, t: self.step };
        let tensors =
            self.params.tensors_mut().into_iter().zip(self.grads.tensors()).zip(self.adam_m.tensors_mut()).zip(self.adam_v.tensors_mut());
        for (((p, g), m), v) in tensors {
            be.adam(p, g, m, v, hp);
        }
        if self.est.uses_baseline() {
            let tl = self.ws.terms_layout;
            for (l, b) in (1..=self.shape.depth()).zip(self.baselines.iter_mut()) {
                let target: f64 = self.est.baseline_coef(&tl, l).iter().zip(&stats.term_means).map(|(&c, &m)| c as f64 * m).sum();
                *b = BASELINE_DECAY * *b + (1.0 - BASELINE_DECAY) * target as f32;
            }
        }
        stats
    }

    /// Mean single-sample ELBO over a whole split, binarized afresh with `binarize_key`.
    pub fn evaluate(&self, split: &Split, binarize: Binarize, binarize_key: RngKey, eval_index: u64) -> f64 {
        const EVAL_BATCH: usize = 500;
        let n0 = self.shape.width(0);
        let mut total = 0.0;
        let mut cache: Option<Workspace<B::Buf>> = None;
        let indices: Vec<u32> = (0..split.n as u32).collect();
        for (batch_no, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
            let b = chunk.len();
            if cache.as_ref().map(|w| w.b) != Some(b) {
                cache = Some(Workspace::new(self.be, &self.shape, &self.est, b));
            }
            let ws = cache.as_mut().expect("workspace was just created");
            let x = binarize_batch(split, chunk, binarize, binarize_key, n0);
            self.be.write(&mut ws.main.z[0], &x);
            let draw = Draw { seed: self.seed, step: (eval_index << 24) | batch_no as u64, eval: true };
            total += evaluate_elbo(self.be, &self.params, ws, &self.est, draw) * b as f64;
        }
        total / split.n as f64
    }

    /// The parameters, back on the host.
    pub fn host_params(&self) -> Params<Vec<f32>> {
        self.params.map(|t| self.be.download(t))
    }
}

/// Rows `indices` of the split as bits, (indices.len(), n0). Dynamic draws are keyed by image
/// index, so an image's bits in an epoch do not depend on where the shuffle put it.
pub fn binarize_batch(split: &Split, indices: &[u32], mode: Binarize, key: RngKey, n0: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; indices.len() * n0];
    let mut u = vec![0.0f32; n0];
    for (row, &img) in x.chunks_mut(n0).zip(indices) {
        let pixels = split.image(img as usize);
        match mode {
            Binarize::Dynamic => {
                key.fill_uniform(img.wrapping_mul(n0 as u32), &mut u);
                for ((xi, &px), &ui) in row.iter_mut().zip(pixels).zip(&u) {
                    *xi = (ui < px as f32 / 255.0) as u8 as f32;
                }
            }
            Binarize::Threshold => {
                for (xi, &px) in row.iter_mut().zip(pixels) {
                    *xi = (px as f32 / 255.0 > 0.5) as u8 as f32;
                }
            }
        }
    }
    x
}

/// A permutation of 0..n by Fisher-Yates, drawn from `key`.
pub fn shuffle(n: usize, key: RngKey) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = key.below(i as u32, i as u32 + 1) as usize;
        idx.swap(i, j);
    }
    idx
}

/// One line of the metrics file.
#[derive(Clone, Debug)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub steps_in_epoch: u64,
    pub train_elbo: f64,
    pub test_elbo: Option<f64>,
    /// Mean over all encoder parameters of the across-batch variance of their estimates,
    /// averaged over the epoch's steps; and the same per layer (layer 1 first).
    pub grad_var: f64,
    pub grad_var_layers: Vec<f64>,
    pub seconds: f64,
    pub steps_per_second: f64,
}

impl EpochMetrics {
    pub fn to_json(&self, cfg: &TrainConfig) -> serde_json::Value {
        serde_json::json!({
            "experiment": "vae",
            "epoch": self.epoch,
            "step": self.step,
            "steps_in_epoch": self.steps_in_epoch,
            "train_elbo": self.train_elbo,
            "test_elbo": self.test_elbo,
            "grad_var": self.grad_var,
            "grad_var_layers": self.grad_var_layers,
            "seconds": self.seconds,
            "steps_per_second": self.steps_per_second,
            "estimator": cfg.estimator.label(),
            "seed": cfg.seed,
            "layers": cfg.latent,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
        })
    }

    pub fn line(&self, cfg: &TrainConfig) -> String {
        let test = self.test_elbo.map(|t| format!(" test_elbo {t:.3}")).unwrap_or_default();
        format!(
            "epoch {}/{} step {} train_elbo {:.3}{} grad_var {:.4e} {:.1} steps/s {:.1}s",
            self.epoch, cfg.epochs, self.step, self.train_elbo, test, self.grad_var, self.steps_per_second, self.seconds
        )
    }
}

/// What diverged in the step just taken, if anything did; with `full_scan`, every tensor is
/// looked at, not only the step's statistics.
fn divergence<B: Backend>(trainer: &Trainer<'_, B>, stats: &StepStats, full_scan: bool) -> Option<String> {
    let var_ok = stats.grad_var.iter().all(|(w, b)| w.is_finite() && b.is_finite());
    let base_ok = trainer.baselines.iter().all(|b| b.is_finite());
    if stats.elbo.is_finite() && var_ok && base_ok {
        return if full_scan { trainer.find_non_finite() } else { None };
    }
    let mut what = vec![];
    if !stats.elbo.is_finite() {
        what.push(format!("the ELBO is {}", stats.elbo));
    }
    what.extend(trainer.find_non_finite());
    if what.is_empty() {
        what.push("an encoder gradient's variance is not finite".into());
    }
    Some(what.join(", "))
}

/// Trains the VAE on `data` as configured (from scratch or from `cfg.resume`), printing one line
/// per epoch; returns the metrics of the epochs it ran.
pub fn train<B: Backend>(be: &B, cfg: &TrainConfig, data: &Mnist) -> Result<Vec<EpochMetrics>, Error> {
    let shape = Shape::new(data.train.pixels(), &cfg.latent);
    let run = VaeRun::new(cfg, data.train.pixels(), data.train.n);
    let mut trainer = Trainer::new(be, shape.clone(), cfg.estimator, cfg.batch_size, cfg.lr as f32, cfg.seed);
    if let Some(path) = &cfg.resume {
        resume(&mut trainer, &run, path)?;
    }
    let resumed_at = trainer.step;
    let mut metrics = open_metrics(cfg.metrics.as_deref(), cfg.resume.is_some().then_some(resumed_at))?;
    let mut saver = Saver::new(cfg.save.clone(), cfg.save_every)?;
    let mut schedule = Schedule::new("vae", resumed_at, data.train.n, cfg.batch_size, cfg.epochs, cfg.max_steps);
    let total_steps = schedule.total_steps;
    let bar = progress_bar(total_steps);
    bar.set_position(resumed_at.min(total_steps));
    let enc_params = shape.encoder_params() as f64;
    let layer_params: Vec<f64> = (1..=shape.depth()).map(|l| (shape.width(l - 1) * shape.width(l) + shape.width(l)) as f64).collect();
    let mut history = Vec::new();

    for epoch in schedule.first_epoch..=cfg.epochs {
        if trainer.step >= total_steps {
            break;
        }
        let started = Instant::now();
        let e = epoch as u64;
        let order = shuffle(data.train.n, RngKey::new(cfg.seed, e, stream::SHUFFLE));
        let bin_key = RngKey::new(cfg.seed, e, stream::BINARIZE_TRAIN);
        let (mut elbo_sum, mut var_sum, mut steps) = (0.0f64, 0.0f64, 0u64);
        let mut var_layers = vec![0.0f64; shape.depth()];
        for batch in schedule.batches(&order, cfg.batch_size) {
            if trainer.step >= total_steps {
                break;
            }
            let x = binarize_batch(&data.train, batch, cfg.binarize, bin_key, shape.width(0));
            let stats = trainer.train_step(&x);
            be.check().map_err(Error::Device)?;
            if let Some(what) = divergence(&trainer, &stats, schedule.full_scan_due(trainer.step)) {
                bar.abandon();
                return Err(Error::Diverged { step: trainer.step, what, kept: saver.kept() });
            }
            elbo_sum += stats.elbo;
            let (mut w_sum, mut layer_sums) = (0.0, Vec::with_capacity(shape.depth()));
            for (l, &(vw, vb)) in stats.grad_var.iter().enumerate() {
                w_sum += vw + vb;
                layer_sums.push((vw + vb) / layer_params[l]);
            }
            var_sum += w_sum / enc_params;
            for (acc, v) in var_layers.iter_mut().zip(layer_sums) {
                *acc += v;
            }
            steps += 1;
            let rate = steps as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("epoch {epoch}  elbo {:.2}  {rate:.1} steps/s", elbo_sum / steps as f64));
            bar.inc(1);
        }
        let test_due = cfg.test_every > 0 && (epoch % cfg.test_every == 0 || epoch == cfg.epochs || trainer.step >= total_steps);
        let test_elbo = test_due.then(|| trainer.evaluate(&data.test, cfg.binarize, RngKey::new(cfg.seed, e, stream::BINARIZE_TEST), e));
        be.check().map_err(Error::Device)?;
        let seconds = started.elapsed().as_secs_f64();
        let m = EpochMetrics {
            epoch,
            step: trainer.step,
            steps_in_epoch: steps,
            train_elbo: elbo_sum / steps.max(1) as f64,
            test_elbo,
            grad_var: var_sum / steps.max(1) as f64,
            grad_var_layers: var_layers.iter().map(|v| v / steps.max(1) as f64).collect(),
            seconds,
            steps_per_second: steps as f64 / seconds.max(1e-9),
        };
        if bar.is_hidden() {
            println!("{}", m.line(cfg));
        } else {
            bar.println(m.line(cfg));
        }
        if let Some(file) = &mut metrics {
            file.push(m.to_json(cfg).to_string())?;
        }
        history.push(m);
        if let Some(done) = schedule.epoch_ends_at(trainer.step) {
            saver.at_epoch_end(done, trainer.step, || trainer.checkpoint(&run, done))?;
        }
    }
    bar.finish_and_clear();
    saver.at_run_end(trainer.step, || trainer.checkpoint(&run, schedule.epochs_done(trainer.step)))?;
    if let Some(path) = &cfg.save_params {
        let bytes: Vec<u8> = trainer.host_params().tensors().into_iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        write_atomically(path, &bytes)?;
    }
    Ok(history)
}

/// Loads `path` into `trainer` after checking it is a checkpoint of this same run.
fn resume<B: Backend>(trainer: &mut Trainer<'_, B>, run: &VaeRun, path: &Path) -> Result<(), Error> {
    let (ck, as_error) = load_for_resume(path)?;
    let saved = VaeRun::from_checkpoint(&ck).map_err(&as_error)?;
    saved.check_resumable_as(run).map_err(&as_error)?;
    note_lr_change("vae", saved.lr, run.lr);
    trainer.restore(ck).map_err(&as_error)?;
    eprintln!("hnca vae: resuming from {} at step {}", path.display(), trainer.step);
    Ok(())
}
