//! The VAE as a [`Model`] of the generic trainer: its parameters, workspace and estimator on one
//! backend, the gradients of a step, the prior's own optimiser, the control variates'
//! coefficients (state of its own, with their Adam moments) and its test-set evaluation; and
//! the VAE's validated options as a [`ModelConfig`].

use crate::backend::Backend;
use crate::data::{binarize_batch, Binarize, Split};
use crate::error::Error;
use crate::nn::{adam_hyper, TrainData, TrainState};
use crate::rng::{stream, RngKey};
use crate::run::checkpoint::{Checkpoint, CheckpointError};
use crate::run::Description;
use crate::train::{LastTensor, Model, ModelConfig, TrainRun};

use super::checkpoint::{param_tensors, VaeRun};
use super::estimator::Estimator;
use super::model::{Params, Shape};
use super::step::{compute_gradients, evaluate_elbo, Draw, Workspace};
use super::{Optimizers, PriorOptimizer, TrainConfig, VaeSettings};

/// The VAE's trainer: parameters, Adam state, baselines and buffers of one run on one backend.
pub type Trainer<'a, B> = crate::train::Trainer<'a, B, Vae<B>>;

/// The VAE as the run driver trains it.
pub type VaeExperiment<'a, B> = TrainRun<'a, B, VaeSettings>;

/// The model of one VAE run on one backend: its shape, estimator and buffers, and what it
/// trains besides its parameters.
pub struct Vae<B: Backend> {
    pub shape: Shape,
    pub est: Estimator,
    pub ws: Workspace<B>,
    /// Adam's moments of the control variates' coefficients (Double CV, RODEO), per encoder
    /// layer; the coefficients themselves are `ws.cv_coef`.
    pub(crate) cv_m: Vec<B::Buf>,
    pub(crate) cv_v: Vec<B::Buf>,
    /// The prior's and the coefficients' optimisers.
    pub optimizers: Optimizers,
    /// How the training images become bits.
    pub binarize: Binarize,
}

impl<B: Backend> Vae<B> {
    /// The model of `shape` trained by `est` on batches of `batch_size`, its coefficients
    /// initialised from `seed`, every tensor optimised at `lr`.
    pub fn new(be: &B, shape: Shape, est: Estimator, batch_size: usize, lr: f64, seed: u64) -> Self {
        let mut ws = Workspace::new(be, &shape, &est, batch_size);
        for l in 1..=shape.depth() {
            let init = est.initial_learned(l, seed);
            if !init.is_empty() {
                be.write(&mut ws.cv_coef[l], &init);
            }
        }
        let cv = ws.plan.learned;
        let cv_zeros = || if cv == 0 { Vec::new() } else { ws.cv_coef.iter().skip(1).map(|_| be.zeros(cv)).collect() };
        let (cv_m, cv_v) = (cv_zeros(), cv_zeros());
        Vae { shape, est, ws, cv_m, cv_v, optimizers: Optimizers::with_lr(lr), binarize: Binarize::Dynamic }
    }

    /// Mean single-sample ELBO of `params` over a whole split, binarized (`binarize`) afresh
    /// with `key`.
    pub fn evaluate_binarized(
        &self,
        be: &B,
        params: &Params<B::Buf>,
        seed: u64,
        split: &Split,
        binarize: Binarize,
        key: RngKey,
        index: u64,
    ) -> f64 {
        const EVAL_BATCH: usize = 500;
        let n0 = self.shape.width(0);
        let mut total = 0.0;
        let mut cache: Option<Workspace<B>> = None;
        let indices: Vec<u32> = (0..split.n as u32).collect();
        for (batch_no, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
            let b = chunk.len();
            if cache.as_ref().map(|w| w.b) != Some(b) {
                cache = Some(Workspace::new(be, &self.shape, &self.est, b));
            }
            let ws = cache.as_mut().expect("workspace was just created");
            let x = binarize_batch(split, chunk, binarize, key, n0);
            be.write(&mut ws.main.z[0], &x);
            let draw = Draw::at(seed, (index << 24) | batch_no as u64, true);
            total += evaluate_elbo(be, params, ws, &self.est, draw) * b as f64;
        }
        total / split.n as f64
    }

    /// The control variates' coefficients and their Adam moments, per encoder layer, by the
    /// names checkpoints give them.
    fn own_named(&self) -> impl Iterator<Item = (String, &B::Buf)> {
        let layers = self.ws.cv_coef.iter().skip(1).zip(&self.cv_m).zip(&self.cv_v).enumerate();
        layers.flat_map(|(l, ((c, m), v))| {
            [("cv", c), ("cv_adam_m", m), ("cv_adam_v", v)].map(|(set, b)| (format!("{set}/layer{}", l + 1), b))
        })
    }
}

impl<B: Backend> Model<B> for Vae<B> {
    type Params = Params<B::Buf>;

    fn init(&self, be: &B, seed: u64) -> [Self::Params; 4] {
        let host = Params::init(&self.shape, seed);
        let zeros = || host.map(|t| be.zeros(t.len()));
        [host.to_backend(be), zeros(), zeros(), zeros()]
    }
    fn tensors(p: &Self::Params) -> Vec<&B::Buf> {
        p.tensors()
    }
    fn tensors_mut(p: &mut Self::Params) -> Vec<&mut B::Buf> {
        p.tensors_mut()
    }
    fn tensor_names(&self) -> Vec<(String, usize)> {
        param_tensors(&self.shape)
    }
    fn train_state(&self, be: &B, tensors: usize) -> TrainState<B> {
        TrainState::new(be, self.ws.stats_plan(&self.est), self.ws.terms_layout.width(), tensors, self.shape.depth())
    }
    fn baselines(&self) -> (usize, &'static str, &'static str) {
        (self.shape.depth(), "baselines", "baselines")
    }

    /// The batch x into `ws.main.z[0]`.
    fn gather(&mut self, be: &B, data: &TrainData<B>, clock: &B::Array<u32>, seed: u64) {
        let (b, n0) = (self.ws.b, self.shape.width(0));
        let x = &mut self.ws.main.z[0];
        be.gather_binarize(x, None, &data.images, &data.order, clock, self.binarize, seed, stream::BINARIZE_TRAIN, b, n0);
    }
    fn gradients(&mut self, be: &B, params: &Self::Params, state: &TrainState<B>, seed: u64, grads: &mut Self::Params) {
        let draw = Draw { seed, step: 0, eval: false, clock: Some(&state.clock) };
        compute_gradients(be, params, &mut self.ws, &self.est, &state.baselines, draw, grads);
    }
    /// The prior, in the same launch as every other tensor when it is trained alike.
    fn last_tensor(&self, lr: f32) -> Option<LastTensor> {
        let opt = self.optimizers;
        if opt.prior == PriorOptimizer::Adam && opt.prior_lr as f32 == lr {
            return None;
        }
        let lr = opt.prior_lr as f32;
        Some(match opt.prior {
            _ if lr == 0.0 => LastTensor::Fixed,
            PriorOptimizer::Sgd => LastTensor::Sgd { lr, len: self.shape.width(self.shape.depth()) },
            PriorOptimizer::Adam => LastTensor::Adam { lr },
        })
    }
    /// The control variates' coefficients descend the variance of this step's estimate, after
    /// it is formed: the next step's estimate is still unbiased.
    fn update_own(&mut self, be: &B, clock: &B::Array<u32>) {
        if self.cv_m.is_empty() {
            return;
        }
        let mut coef: Vec<&mut B::Buf> = self.ws.cv_coef.iter_mut().skip(1).collect();
        let grads: Vec<&B::Buf> = self.ws.cv_grad.iter().skip(1).collect();
        let mut m: Vec<&mut B::Buf> = self.cv_m.iter_mut().collect();
        let mut v: Vec<&mut B::Buf> = self.cv_v.iter_mut().collect();
        be.adam(&mut coef, &grads, &mut m, &mut v, clock, adam_hyper(self.optimizers.cv_lr as f32));
    }
    fn step_stats(&self, be: &B, state: &mut TrainState<B>) {
        let (b, t) = (self.ws.b, state.t);
        be.step_stats(&mut state.stats, &mut state.baselines, &mut state.clock, &self.ws.terms, &self.ws.partials, &state.plan, b, t);
    }

    fn evaluate(&self, be: &B, params: &Self::Params, seed: u64, split: &Split, key: RngKey, index: u64) -> f64 {
        self.evaluate_binarized(be, params, seed, split, self.binarize, key, index)
    }

    fn own_state(&self) -> Vec<&B::Buf> {
        self.ws.cv_coef.iter().skip(1).chain(&self.cv_m).chain(&self.cv_v).collect()
    }
    fn own_state_mut(&mut self) -> Vec<&mut B::Buf> {
        self.ws.cv_coef.iter_mut().skip(1).chain(self.cv_m.iter_mut()).chain(self.cv_v.iter_mut()).collect()
    }
    fn save_own(&self, be: &B, ck: &mut Checkpoint) {
        for (name, buf) in self.own_named() {
            ck.push(name, be.download(buf));
        }
    }
    fn restore_own(&mut self, be: &B, ck: &mut Checkpoint) -> Result<(), CheckpointError> {
        let per = self.est.plan().learned;
        let names: Vec<String> = self.own_named().map(|(name, _)| name).collect();
        let bufs = self.ws.cv_coef.iter_mut().skip(1).zip(&mut self.cv_m).zip(&mut self.cv_v).flat_map(|((c, m), v)| [c, m, v]);
        for (name, buf) in names.iter().zip(bufs) {
            be.write(buf, &ck.take(name, per)?);
        }
        Ok(())
    }

    fn objective_diverged(&self, value: f64) -> Option<String> {
        Some(format!("the ELBO is {value}"))
    }
    fn variance_diverged(&self) -> &'static str {
        "an encoder gradient's variance is not finite"
    }
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// A trainer of a VAE of `shape`, trained by `est` on batches of `batch_size` at `lr`, with
    /// everything initialised from `seed`.
    pub fn new(be: &'a B, shape: Shape, est: Estimator, batch_size: usize, lr: f32, seed: u64) -> Self {
        Self::with_model(be, Vae::new(be, shape, est, batch_size, lr as f64, seed), lr, seed)
    }

    /// One update on the binarized batch x, (b, n_0), given by the host (tests, benchmarks).
    pub fn train_step(&mut self, x: &[f32]) {
        self.step_with(|be, m| be.write(&mut m.ws.main.z[0], x));
    }

    /// Mean single-sample ELBO over a whole split, binarized (`binarize`) afresh with `key`.
    pub fn evaluate(&self, split: &Split, binarize: Binarize, key: RngKey, eval_index: u64) -> f64 {
        self.model.evaluate_binarized(self.be, &self.params, self.seed, split, binarize, key, eval_index)
    }

    /// The parameters, back on the host.
    pub fn host_params(&self) -> Params<Vec<f32>> {
        self.params.map(|t| self.be.download(t))
    }
}

impl ModelConfig for VaeSettings {
    type Run = VaeRun;
    type Model<B: Backend> = Vae<B>;

    fn description() -> &'static Description {
        &super::DESCRIPTION
    }
    fn run(cfg: &TrainConfig, train: &Split) -> Result<VaeRun, Error> {
        Ok(VaeRun::new(cfg, train.pixels(), train.n))
    }
    fn model<B: Backend>(be: &B, cfg: &TrainConfig, run: &VaeRun) -> Vae<B> {
        let mut vae = Vae::new(be, run.shape(), cfg.model.estimator, cfg.batch_size, cfg.lr as f32 as f64, cfg.seed);
        vae.optimizers = cfg.model.optimizers;
        vae.binarize = cfg.model.binarize;
        vae
    }
    fn identity(cfg: &TrainConfig, _: &VaeRun) -> Vec<(&'static str, serde_json::Value)> {
        let m = &cfg.model;
        vec![
            ("estimator", m.estimator.label().into()),
            ("samples", m.estimator.samples.into()),
            ("evaluations", m.estimator.evaluations(m.latent.len()).into()),
            ("seed", cfg.seed.into()),
            ("layers", m.latent.clone().into()),
            ("batch_size", cfg.batch_size.into()),
            ("lr", cfg.lr.into()),
        ]
    }
}
