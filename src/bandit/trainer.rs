//! The bandit's agent as a [`Model`] of the generic trainer: its shape, estimator and buffers on
//! one backend, the gradients of a step and its test accuracy; and the bandit's validated
//! options as a [`ModelConfig`].

use super::agent::{forward, gradients, AgentParams, AgentShape, BanditDraw, BanditWorkspace};
use super::checkpoint::{tensors, BanditRun};
use super::{BanditConfig, BanditSettings};
use crate::backend::Backend;
use crate::data::{binarize_batch, Binarize, Split};
use crate::error::Error;
use crate::estimator::EstimatorKind;
use crate::nn::{TrainData, TrainState};
use crate::rng::{stream, RngKey};
use crate::run::Description;
use crate::train::{Model, ModelConfig, TrainRun};

/// The bandit's trainer: parameters, Adam state, baseline and buffers of one run on one backend.
pub type BanditTrainer<'a, B> = crate::train::Trainer<'a, B, Agent<B>>;

/// The bandit as the run driver trains it.
pub type BanditExperiment<'a, B> = TrainRun<'a, B, BanditSettings>;

/// The agent of one bandit run on one backend: its shape, estimator and buffers.
pub struct Agent<B: Backend> {
    pub shape: AgentShape,
    pub est: EstimatorKind,
    pub ws: BanditWorkspace<B>,
    /// HNCA's ablation that differentiates through ρ (`--rho-gradient`; biased).
    pub rho_gradient: bool,
}

impl<B: Backend> Model<B> for Agent<B> {
    type Params = AgentParams<B::Buf>;

    fn init(&self, be: &B, seed: u64) -> [Self::Params; 4] {
        let host = AgentParams::init(&self.shape, seed);
        let zeros = || host.map(|t| be.zeros(t.len()));
        [host.map(|t| be.upload(t)), zeros(), zeros(), zeros()]
    }
    fn tensors(p: &Self::Params) -> Vec<&B::Buf> {
        p.tensors().collect()
    }
    fn tensors_mut(p: &mut Self::Params) -> Vec<&mut B::Buf> {
        p.tensors_mut().collect()
    }
    fn tensor_names(&self) -> Vec<(String, usize)> {
        tensors(&self.shape)
    }
    fn train_state(&self, be: &B, tensors: usize) -> TrainState<B> {
        TrainState::new(be, self.ws.stats_plan(&self.shape, self.est), 1, tensors, 1)
    }
    fn baselines(&self) -> (usize, &'static str, &'static str) {
        (1, "baseline", "the baseline")
    }

    /// The inputs and their labels, binarized afresh every epoch.
    fn gather(&mut self, be: &B, data: &TrainData<B>, clock: &B::Array<u32>, seed: u64) {
        let (b, n0) = (self.ws.b, self.shape.pixels());
        let ws = &mut self.ws;
        let x = match &mut ws.conv {
            Some(c) => &mut c.x,
            None => &mut ws.u[0],
        };
        let labels = Some((&mut ws.labels, &data.labels));
        be.gather_binarize(x, labels, &data.images, &data.order, clock, Binarize::Dynamic, seed, stream::BINARIZE_TRAIN, b, n0);
    }
    fn gradients(&mut self, be: &B, params: &Self::Params, state: &TrainState<B>, seed: u64, grads: &mut Self::Params) {
        let draw = BanditDraw { seed, step: 0, eval: false, clock: Some(&state.clock) };
        forward(be, params, &mut self.ws, &self.shape, draw);
        gradients(be, params, &mut self.ws, &self.shape, self.est, self.rho_gradient, &state.baselines, grads);
    }
    fn step_stats(&self, be: &B, state: &mut TrainState<B>) {
        let b = self.ws.b;
        be.step_stats(&mut state.stats, &mut state.baselines, &mut state.clock, &self.ws.reward, &self.ws.partials, &state.plan, b, 1);
    }

    /// Test accuracy: the mean reward of sampled actions over a split, binarized afresh.
    fn evaluate(&self, be: &B, params: &Self::Params, seed: u64, split: &Split, key: RngKey, index: u64) -> f64 {
        const EVAL_BATCH: usize = 500;
        let indices: Vec<u32> = (0..split.n as u32).collect();
        let mut cache: Option<BanditWorkspace<B>> = None;
        let mut correct = 0.0;
        for (batch_no, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
            let b = chunk.len();
            if cache.as_ref().map(|w| w.b) != Some(b) {
                cache = Some(BanditWorkspace::for_evaluation(be, &self.shape, b));
            }
            let ws = cache.as_mut().expect("workspace was just created");
            be.write(ws.input_mut(), &binarize_batch(split, chunk, Binarize::Dynamic, key, self.shape.pixels()));
            be.write(&mut ws.labels, &labels(split, chunk));
            let draw = BanditDraw { seed, step: (index << 24) | batch_no as u64, eval: true, clock: None };
            forward(be, params, ws, &self.shape, draw);
            correct += be.term_means(&ws.reward, b, 1)[0] * b as f64;
        }
        correct / split.n as f64
    }

    fn variance_diverged(&self) -> &'static str {
        "a gradient's variance is not finite"
    }
}

impl<'a, B: Backend> BanditTrainer<'a, B> {
    /// A trainer of an agent of `shape`, trained by `est` on batches of `batch_size` at `lr`,
    /// initialised from `seed`.
    pub fn new(be: &'a B, shape: AgentShape, est: EstimatorKind, batch_size: usize, lr: f32, seed: u64) -> Self {
        let ws = BanditWorkspace::new(be, &shape, batch_size);
        Self::with_model(be, Agent { shape, est, ws, rho_gradient: false }, lr, seed)
    }

    /// The reward baseline, on the host (0 for estimators without one).
    pub fn baseline(&self) -> f32 {
        self.be.download(&self.state.baselines)[0]
    }

    /// One update on inputs x (b, n_0) with labels (b), given by the host (tests).
    pub fn train_step(&mut self, x: &[f32], labels: &[f32]) {
        self.step_with(|be, m| {
            be.write(m.ws.input_mut(), x);
            be.write(&mut m.ws.labels, labels);
        });
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
    trainer.evaluate_on(split, key, eval_index)
}

impl ModelConfig for BanditSettings {
    type Run = BanditRun;
    type Model<B: Backend> = Agent<B>;

    fn description() -> &'static Description {
        &super::DESCRIPTION
    }
    fn run(cfg: &BanditConfig, train: &Split) -> Result<BanditRun, Error> {
        BanditRun::new(cfg, train)
    }
    fn model<B: Backend>(be: &B, cfg: &BanditConfig, run: &BanditRun) -> Agent<B> {
        let shape = run.shape();
        let ws = BanditWorkspace::new(be, &shape, cfg.batch_size);
        Agent { shape, est: cfg.model.estimator, ws, rho_gradient: cfg.model.rho_gradient }
    }
    fn identity(cfg: &BanditConfig, run: &BanditRun) -> Vec<(&'static str, serde_json::Value)> {
        let mut id = vec![
            ("estimator", run.estimator_label().into()),
            // One forward pass of the agent per example and step.
            ("evaluations", 1.into()),
            ("seed", cfg.seed.into()),
            ("layers", cfg.model.hidden.clone().into()),
            ("batch_size", cfg.batch_size.into()),
            ("lr", cfg.lr.into()),
        ];
        if let Some(c) = &run.conv {
            id.extend([("features", "conv".into()), ("conv_layers", c.layers.into()), ("conv_channels", c.channels.into())]);
        }
        id
    }
}
