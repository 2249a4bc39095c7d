//! The bandit's trainer: parameters, Adam state, baseline and buffers of one run on one backend,
//! its update step and its test accuracy; and the bandit as an [`Experiment`] of the run driver.

use super::agent::{forward, gradients, AgentParams, AgentShape, BanditDraw, BanditEstimator, BanditStats, BanditWorkspace};
use super::checkpoint::{tensors, BanditRun};
use super::BanditArgs;
use crate::backend::Backend;
use crate::data::{binarize_batch, Binarize, Split};
use crate::nn::{adam_step, track};
use crate::rng::RngKey;
use crate::run::checkpoint::{first_non_finite, non_finite, push_state, take_state, Checkpoint, CheckpointError};
use crate::run::{Description, Experiment, StepReport};

/// Parameters, optimiser state, baseline and buffers of one bandit run on one backend.
pub struct BanditTrainer<'a, B: Backend> {
    pub be: &'a B,
    pub shape: AgentShape,
    pub est: BanditEstimator,
    pub params: AgentParams<B::Buf>,
    /// The last step's gradients (ascent directions, batch means), read by tests and the scans.
    pub grads: AgentParams<B::Buf>,
    pub(crate) adam_m: AgentParams<B::Buf>,
    pub(crate) adam_v: AgentParams<B::Buf>,
    pub ws: BanditWorkspace<B::Buf>,
    pub baseline: f32,
    pub step: u64,
    pub lr: f32,
    pub seed: u64,
}

impl<'a, B: Backend> BanditTrainer<'a, B> {
    pub fn new(be: &'a B, shape: AgentShape, est: BanditEstimator, batch_size: usize, lr: f32, seed: u64) -> Self {
        let host = AgentParams::init(&shape, seed);
        let zeros = |p: &AgentParams<Vec<f32>>| p.map(|t| be.zeros(t.len()));
        BanditTrainer {
            be,
            params: host.map(|t| be.upload(t)),
            grads: zeros(&host),
            adam_m: zeros(&host),
            adam_v: zeros(&host),
            ws: BanditWorkspace::new(be, &shape, batch_size),
            baseline: 0.0,
            shape,
            est,
            step: 0,
            lr,
            seed,
        }
    }

    /// One update on inputs x (b, n_0) with labels (b); returns the pre-update statistics.
    pub fn train_step(&mut self, x: &[f32], labels: &[f32]) -> BanditStats {
        let be = self.be;
        be.write(&mut self.ws.u[0], x);
        be.write(&mut self.ws.labels, labels);
        let draw = BanditDraw { seed: self.seed, step: self.step, eval: false };
        forward(be, &self.params, &mut self.ws, &self.shape, draw);
        let baseline = if self.est.uses_baseline() { self.baseline } else { 0.0 };
        let stats = gradients(be, &self.params, &mut self.ws, &self.shape, self.est, baseline, &mut self.grads);
        self.step += 1;
        let (params, grads, m, v) = (self.params.tensors_mut(), self.grads.tensors(), self.adam_m.tensors_mut(), self.adam_v.tensors_mut());
        adam_step(be, params, grads, m, v, self.lr, self.step);
        if self.est.uses_baseline() {
            self.baseline = track(self.baseline, stats.mean_reward as f32);
        }
        stats
    }

    /// The parameters, back on the host.
    pub fn host_params(&self) -> AgentParams<Vec<f32>> {
        self.params.map(|t| self.be.download(t))
    }
}

/// The labels of `indices` as f32 integers.
pub fn labels(split: &Split, indices: &[u32]) -> Vec<f32> {
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

impl<B: Backend> BanditTrainer<'_, B> {
    /// The trainer's whole state, on the host, as a checkpoint of `run` after `epoch` epochs.
    pub fn checkpoint(&self, run: &BanditRun, epoch: u64) -> Checkpoint {
        let mut ck = Checkpoint::of_run(super::DESCRIPTION.name, self.step, epoch, run.identity());
        let sets = [self.params.tensors().collect(), self.adam_m.tensors().collect(), self.adam_v.tensors().collect()];
        push_state(&mut ck, self.be, &tensors(&self.shape), sets);
        ck.push("baseline", vec![self.baseline]);
        ck
    }

    /// Loads parameters, Adam moments, the baseline and the step from a checkpoint of the same run.
    pub fn restore(&mut self, mut ck: Checkpoint) -> Result<(), CheckpointError> {
        let sets = [self.params.tensors_mut().collect(), self.adam_m.tensors_mut().collect(), self.adam_v.tensors_mut().collect()];
        take_state(&mut ck, self.be, &tensors(&self.shape), sets)?;
        self.baseline = ck.take("baseline", 1)?[0];
        self.step = ck.u64_field("step")?;
        Ok(())
    }

    /// The first NaN or infinity in the state or the last step's gradients, in words.
    pub fn find_non_finite(&self) -> Option<String> {
        let sets = [
            self.grads.tensors().collect(),
            self.params.tensors().collect(),
            self.adam_m.tensors().collect(),
            self.adam_v.tensors().collect(),
        ];
        first_non_finite(self.be, &tensors(&self.shape), sets).or_else(|| non_finite("the baseline", &[self.baseline]))
    }
}

/// The bandit as the run driver trains it: a trainer with its run's identity.
pub struct BanditExperiment<'a, B: Backend> {
    pub trainer: BanditTrainer<'a, B>,
    run: BanditRun,
    args: BanditArgs,
}

impl<'a, B: Backend> BanditExperiment<'a, B> {
    pub fn new(be: &'a B, args: &BanditArgs, data_dim: usize, train_images: usize) -> Self {
        let run = BanditRun::new(args, data_dim, train_images);
        let trainer = BanditTrainer::new(be, run.shape(), args.estimator, args.batch_size, args.lr as f32, args.seed);
        BanditExperiment { trainer, run, args: args.clone() }
    }
}

impl<B: Backend> Experiment for BanditExperiment<'_, B> {
    fn description(&self) -> &'static Description {
        &super::DESCRIPTION
    }

    fn step(&self) -> u64 {
        self.trainer.step
    }

    /// Every layer, the softmax's included.
    fn layer_params(&self) -> Vec<f64> {
        let shape = &self.trainer.shape;
        (1..shape.sizes.len()).map(|l| shape.layer_params(l) as f64).collect()
    }

    fn train_step(&mut self, split: &Split, batch: &[u32], binarize: RngKey) -> StepReport {
        let x = binarize_batch(split, batch, Binarize::Dynamic, binarize, self.trainer.shape.width(0));
        let stats = self.trainer.train_step(&x, &labels(split, batch));
        StepReport { objective: stats.mean_reward, grad_var: stats.grad_var }
    }

    fn divergence(&self, report: &StepReport, full_scan: bool) -> Option<String> {
        let total: f64 = report.grad_var.iter().map(|(w, b)| w + b).sum();
        let finite = total.is_finite() && self.trainer.baseline.is_finite();
        if finite && !full_scan {
            return None;
        }
        let found = self.trainer.find_non_finite();
        if found.is_none() && finite {
            return None;
        }
        Some(found.unwrap_or_else(|| "a gradient's variance is not finite".into()))
    }

    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64 {
        evaluate(&self.trainer, split, binarize, index)
    }

    fn device_error(&self) -> Option<String> {
        self.trainer.be.check().err()
    }

    fn identity(&self) -> Vec<(&'static str, serde_json::Value)> {
        let args = &self.args;
        vec![
            ("estimator", args.estimator.name().into()),
            ("seed", args.seed.into()),
            ("layers", args.layers.clone().into()),
            ("batch_size", args.batch_size.into()),
            ("lr", args.lr.into()),
        ]
    }

    fn checkpoint(&self, epochs_done: u64) -> Checkpoint {
        self.trainer.checkpoint(&self.run, epochs_done)
    }

    fn resume(&mut self, ck: Checkpoint) -> Result<(), CheckpointError> {
        let saved = BanditRun::from_checkpoint(&ck)?;
        saved.check_resumable_as(&self.run)?;
        crate::run::files::note_lr_change(super::DESCRIPTION.name, saved.lr, self.run.lr);
        self.trainer.restore(ck)
    }

    fn params_le_bytes(&self) -> Vec<u8> {
        self.trainer.host_params().tensors().flatten().flat_map(|v| v.to_le_bytes()).collect()
    }
}
