//! The VAE's trainer: parameters, Adam state, baselines and buffers of one run on one backend,
//! its update step and its test-set evaluation; and the VAE as an [`Experiment`] of the run
//! driver, which owns the epochs, the files and the checks.

use crate::backend::Backend;
use crate::data::{binarize_batch, Binarize, Split};
use crate::nn::{adam_step, track};
use crate::rng::RngKey;
use crate::run::checkpoint::{first_non_finite, non_finite, push_state, take_state, Checkpoint, CheckpointError};
use crate::run::{Description, Experiment, StepReport};

use super::checkpoint::{param_tensors, VaeRun};
use super::estimator::Estimator;
use super::model::{Params, Shape};
use super::step::{compute_gradients, evaluate_elbo, Draw, StepStats, Workspace};
use super::TrainConfig;

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
        let (params, grads, m, v) = (self.params.tensors_mut(), self.grads.tensors(), self.adam_m.tensors_mut(), self.adam_v.tensors_mut());
        adam_step(be, params, grads, m, v, self.lr, self.step);
        if self.est.uses_baseline() {
            let tl = self.ws.terms_layout;
            for (l, b) in (1..=self.shape.depth()).zip(self.baselines.iter_mut()) {
                let target: f64 = self.est.baseline_coef(&tl, l).iter().zip(&stats.term_means).map(|(&c, &m)| c as f64 * m).sum();
                *b = track(*b, target as f32);
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


impl<B: Backend> Trainer<'_, B> {
    /// The trainer's whole state, on the host, as a checkpoint of `run` after `epoch` epochs.
    pub fn checkpoint(&self, run: &VaeRun, epoch: u64) -> Checkpoint {
        let mut ck = Checkpoint::of_run(super::DESCRIPTION.name, self.step, epoch, run.identity());
        push_state(&mut ck, self.be, &param_tensors(&self.shape), [self.params.tensors(), self.adam_m.tensors(), self.adam_v.tensors()]);
        ck.push("baselines", self.baselines.clone());
        ck
    }

    /// Loads parameters, Adam moments, baselines and the step from a checkpoint of the same run.
    pub fn restore(&mut self, mut ck: Checkpoint) -> Result<(), CheckpointError> {
        let sets = [self.params.tensors_mut(), self.adam_m.tensors_mut(), self.adam_v.tensors_mut()];
        take_state(&mut ck, self.be, &param_tensors(&self.shape), sets)?;
        self.baselines = ck.take("baselines", self.baselines.len())?;
        self.step = ck.u64_field("step")?;
        Ok(())
    }

    /// The first NaN or infinity in the state or the last step's gradients, in words.
    pub fn find_non_finite(&self) -> Option<String> {
        let sets = [self.grads.tensors(), self.params.tensors(), self.adam_m.tensors(), self.adam_v.tensors()];
        first_non_finite(self.be, &param_tensors(&self.shape), sets).or_else(|| non_finite("baselines", &self.baselines))
    }
}

/// The VAE as the run driver trains it: a trainer with its run's identity, its binarization,
/// and the last step's statistics (for the divergence checks).
pub struct VaeExperiment<'a, B: Backend> {
    pub trainer: Trainer<'a, B>,
    run: VaeRun,
    cfg: TrainConfig,
    last: StepStats,
}

impl<'a, B: Backend> VaeExperiment<'a, B> {
    pub fn new(be: &'a B, cfg: &TrainConfig, data_dim: usize, train_images: usize) -> Self {
        let run = VaeRun::new(cfg, data_dim, train_images);
        let trainer = Trainer::new(be, run.shape(), cfg.estimator, cfg.batch_size, cfg.lr as f32, cfg.seed);
        VaeExperiment { trainer, run, cfg: cfg.clone(), last: StepStats::default() }
    }
}

impl<B: Backend> Experiment for VaeExperiment<'_, B> {
    fn description(&self) -> &'static Description {
        &super::DESCRIPTION
    }

    fn step(&self) -> u64 {
        self.trainer.step
    }

    /// The encoder's layers: only their gradients are estimated.
    fn layer_params(&self) -> Vec<f64> {
        let shape = &self.trainer.shape;
        (1..=shape.depth()).map(|l| (shape.width(l - 1) * shape.width(l) + shape.width(l)) as f64).collect()
    }

    fn train_step(&mut self, split: &Split, batch: &[u32], binarize: RngKey) -> StepReport {
        let x = binarize_batch(split, batch, self.cfg.binarize, binarize, self.trainer.shape.width(0));
        self.last = self.trainer.train_step(&x);
        StepReport { objective: self.last.elbo, grad_var: self.last.grad_var.clone() }
    }

    fn divergence(&self, _report: &StepReport, full_scan: bool) -> Option<String> {
        divergence(&self.trainer, &self.last, full_scan)
    }

    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64 {
        self.trainer.evaluate(split, self.cfg.binarize, binarize, index)
    }

    fn device_error(&self) -> Option<String> {
        self.trainer.be.check().err()
    }

    fn identity(&self) -> Vec<(&'static str, serde_json::Value)> {
        let cfg = &self.cfg;
        vec![
            ("estimator", cfg.estimator.label().into()),
            ("seed", cfg.seed.into()),
            ("layers", cfg.latent.clone().into()),
            ("batch_size", cfg.batch_size.into()),
            ("lr", cfg.lr.into()),
        ]
    }

    fn checkpoint(&self, epochs_done: u64) -> Checkpoint {
        self.trainer.checkpoint(&self.run, epochs_done)
    }

    fn resume(&mut self, ck: Checkpoint) -> Result<(), CheckpointError> {
        let saved = VaeRun::from_checkpoint(&ck)?;
        saved.check_resumable_as(&self.run)?;
        crate::run::files::note_lr_change(super::DESCRIPTION.name, saved.lr, self.run.lr);
        self.trainer.restore(ck)
    }

    fn params_le_bytes(&self) -> Vec<u8> {
        self.trainer.host_params().tensors().into_iter().flatten().flat_map(|v| v.to_le_bytes()).collect()
    }
}
