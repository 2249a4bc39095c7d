//! The VAE's trainer: parameters, Adam state, baselines and buffers of one run on one backend,
//! its update step and its test-set evaluation; and the VAE as an [`Experiment`] of the run
//! driver, which owns the epochs, the files and the checks.

use crate::backend::{stats, Backend};
use crate::data::{binarize_batch, Binarize, Split};
use crate::nn::{adam_hyper, EpochSums, TrainData, TrainState};
use crate::rng::{stream, RngKey};
use crate::run::checkpoint::{first_non_finite, non_finite, push_state, take_state, Checkpoint, CheckpointError};
use crate::run::{read_every, Description, Experiment};

use super::checkpoint::{param_tensors, VaeRun};
use super::estimator::Estimator;
use super::model::{Params, Shape};
use super::step::{compute_gradients, evaluate_elbo, Draw, Workspace};
use super::{Optimizers, PriorOptimizer, TrainConfig};

/// Parameters, optimiser state, the device-side training state and the buffers of one run on
/// one backend.
pub struct Trainer<'a, B: Backend> {
    pub be: &'a B,
    pub shape: Shape,
    pub est: Estimator,
    pub params: Params<B::Buf>,
    /// The last step's gradients (ascent directions, batch means), read by tests and the scans.
    pub grads: Params<B::Buf>,
    pub(crate) adam_m: Params<B::Buf>,
    pub(crate) adam_v: Params<B::Buf>,
    /// Adam's moments of the control variates' coefficients (Double CV, RODEO), per encoder
    /// layer; the coefficients themselves are `ws.cv_coef`.
    pub(crate) cv_m: Vec<B::Buf>,
    pub(crate) cv_v: Vec<B::Buf>,
    /// The prior's and the coefficients' optimisers.
    pub optimizers: Optimizers,
    pub ws: Workspace<B>,
    /// The clock, the baselines (b̄_l at l - 1) and the statistics, on the device.
    pub state: TrainState<B>,
    /// Updates taken so far (the device's clock holds the same number).
    pub step: u64,
    pub lr: f32,
    pub seed: u64,
    /// The step as one replayable recording, once made (on a GPU: a CUDA graph).
    graph: Option<B::Graph>,
    /// Steps run as they were called; the first is never recorded (it uploads the constants).
    direct_steps: u64,
}

impl<'a, B: Backend> Trainer<'a, B> {
    pub fn new(be: &'a B, shape: Shape, est: Estimator, batch_size: usize, lr: f32, seed: u64) -> Self {
        let host = Params::init(&shape, seed);
        let zeros = |p: &Params<Vec<f32>>| p.map(|t| be.zeros(t.len()));
        let ws = Workspace::new(be, &shape, &est, batch_size);
        let tensors = 4 * host.tensors().len();
        let state = TrainState::new(be, ws.stats_plan(&est), ws.terms_layout.width(), tensors, shape.depth());
        let mut ws = ws;
        for l in 1..=shape.depth() {
            let init = est.initial_learned(l, seed);
            if !init.is_empty() {
                be.write(&mut ws.cv_coef[l], &init);
            }
        }
        let cv = ws.plan.learned;
        let cv_zeros = || if cv == 0 { Vec::new() } else { ws.cv_coef.iter().skip(1).map(|_| be.zeros(cv)).collect() };
        Trainer {
            be,
            params: host.to_backend(be),
            grads: zeros(&host),
            adam_m: zeros(&host),
            adam_v: zeros(&host),
            cv_m: cv_zeros(),
            cv_v: cv_zeros(),
            optimizers: Optimizers::with_lr(lr as f64),
            ws,
            state,
            shape,
            est,
            step: 0,
            lr,
            seed,
            graph: None,
            direct_steps: 0,
        }
    }

    /// One update on the binarized batch x, (b, n_0), given by the host (tests, benchmarks).
    /// Its statistics stay on the device ([`TrainState`]).
    pub fn train_step(&mut self, x: &[f32]) {
        self.be.write(&mut self.ws.main.z[0], x);
        self.update();
        self.direct_steps += 1;
        self.step += 1;
    }

    /// One update on the epoch's next batch, which the device gathers from `data` and
    /// binarizes (`mode`) itself. Where the backend records (a GPU), the first step runs as
    /// called and the second is recorded as one graph that every later step replays: a step
    /// is then one launch, with nothing read back.
    pub fn train_step_on(&mut self, data: &TrainData<B>, mode: Binarize) {
        if let Some(graph) = &self.graph {
            self.be.replay(graph);
        } else {
            let recording = self.direct_steps > 0 && self.be.begin_recording();
            self.gather(data, mode);
            self.update();
            if recording {
                // A failed recording is recorded as the device's error, which stops the run.
                if let Ok(graph) = self.be.end_recording() {
                    self.be.replay(&graph);
                    self.graph = Some(graph);
                }
            } else {
                self.direct_steps += 1;
            }
        }
        self.step += 1;
    }

    /// Readies epoch `epoch` of `data`: its order of the images (one copy to the device), the
    /// clock at its batch `first_batch`, the epoch's sums at zero.
    pub fn start_epoch(&mut self, data: &mut TrainData<B>, epoch: u64, order: &[u32], first_batch: u64) {
        let (be, state) = (self.be, &mut self.state);
        data.set_order(be, order);
        be.epoch_start(&mut state.stats, &mut state.clock, epoch, first_batch, state.plan.layers());
    }

    /// The batch x into `ws.main.z[0]`, from the device's copy of the training images.
    fn gather(&mut self, data: &TrainData<B>, mode: Binarize) {
        let (b, n0) = (self.ws.b, self.shape.width(0));
        let x = &mut self.ws.main.z[0];
        self.be.gather_binarize(x, None, &data.images, &data.order, &self.state.clock, mode, self.seed, stream::BINARIZE_TRAIN, b, n0);
    }

    /// Everything of a step after its batch is in place: the gradients, Adam, the statistics
    /// (which advance the clock).
    fn update(&mut self) {
        let be = self.be;
        let draw = Draw { seed: self.seed, step: 0, eval: false, clock: Some(&self.state.clock) };
        compute_gradients(be, &self.params, &mut self.ws, &self.est, &self.state.baselines, draw, &mut self.grads);
        let opt = self.optimizers;
        let prior_len = self.shape.width(self.shape.depth());
        // The prior in the same launch as every other tensor when it is trained alike.
        let prior_apart = opt.prior != PriorOptimizer::Adam || opt.prior_lr as f32 != self.lr;
        let mut params = self.params.tensors_mut();
        let mut grads = self.grads.tensors();
        let mut m = self.adam_m.tensors_mut();
        let mut v = self.adam_v.tensors_mut();
        if prior_apart {
            let (p, g, mp, vp) = (params.pop().unwrap(), grads.pop().unwrap(), m.pop().unwrap(), v.pop().unwrap());
            let lr = opt.prior_lr as f32;
            match opt.prior {
                _ if lr == 0.0 => {}
                PriorOptimizer::Sgd => be.axpy(p, lr, g, prior_len),
                PriorOptimizer::Adam => be.adam(&mut [p], &[g], &mut [mp], &mut [vp], &self.state.clock, adam_hyper(lr)),
            }
        }
        be.adam(&mut params, &grads, &mut m, &mut v, &self.state.clock, adam_hyper(self.lr));
        if !self.cv_m.is_empty() {
            // The control variates' coefficients descend the variance of this step's estimate,
            // after it is formed: the next step's estimate is still unbiased.
            let mut coef: Vec<&mut B::Buf> = self.ws.cv_coef.iter_mut().skip(1).collect();
            let grads: Vec<&B::Buf> = self.ws.cv_grad.iter().skip(1).collect();
            let mut m: Vec<&mut B::Buf> = self.cv_m.iter_mut().collect();
            let mut v: Vec<&mut B::Buf> = self.cv_v.iter_mut().collect();
            be.adam(&mut coef, &grads, &mut m, &mut v, &self.state.clock, adam_hyper(opt.cv_lr as f32));
        }
        let (b, t) = (self.ws.b, self.state.t);
        let state = &mut self.state;
        be.step_stats(&mut state.stats, &mut state.baselines, &mut state.clock, &self.ws.terms, &self.ws.partials, &state.plan, b, t);
    }

    /// Mean single-sample ELBO over a whole split, binarized afresh with `binarize_key`.
    pub fn evaluate(&self, split: &Split, binarize: Binarize, binarize_key: RngKey, eval_index: u64) -> f64 {
        const EVAL_BATCH: usize = 500;
        let n0 = self.shape.width(0);
        let mut total = 0.0;
        let mut cache: Option<Workspace<B>> = None;
        let indices: Vec<u32> = (0..split.n as u32).collect();
        for (batch_no, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
            let b = chunk.len();
            if cache.as_ref().map(|w| w.b) != Some(b) {
                cache = Some(Workspace::new(self.be, &self.shape, &self.est, b));
            }
            let ws = cache.as_mut().expect("workspace was just created");
            let x = binarize_batch(split, chunk, binarize, binarize_key, n0);
            self.be.write(&mut ws.main.z[0], &x);
            let draw = Draw::at(self.seed, (eval_index << 24) | batch_no as u64, true);
            total += evaluate_elbo(self.be, &self.params, ws, &self.est, draw) * b as f64;
        }
        total / split.n as f64
    }

    /// What the periodic scan counts NaN and infinity in (the last step's gradients, the
    /// parameters and Adam's moments), and where it counts them.
    pub(crate) fn scan_parts(&mut self) -> (Vec<&B::Buf>, &mut B::Array<u32>) {
        let tensors = [self.grads.tensors(), self.params.tensors(), self.adam_m.tensors(), self.adam_v.tensors()].concat();
        (tensors, &mut self.state.counts)
    }

    /// Every buffer of the run's state besides its [`TrainState`] (parameters, Adam's moments,
    /// the control variates' coefficients and moments), in one fixed order, and that state: a
    /// batch moves a run's state through them.
    pub(crate) fn state_parts(&self) -> (Vec<&B::Buf>, &TrainState<B>) {
        let mut v = [self.params.tensors(), self.adam_m.tensors(), self.adam_v.tensors()].concat();
        v.extend(self.ws.cv_coef.iter().skip(1).chain(&self.cv_m).chain(&self.cv_v));
        (v, &self.state)
    }

    /// [`Trainer::state_parts`], writable.
    pub(crate) fn state_parts_mut(&mut self) -> (Vec<&mut B::Buf>, &mut TrainState<B>) {
        let mut v: Vec<&mut B::Buf> = Vec::new();
        v.extend(self.params.tensors_mut());
        v.extend(self.adam_m.tensors_mut());
        v.extend(self.adam_v.tensors_mut());
        v.extend(self.ws.cv_coef.iter_mut().skip(1).chain(self.cv_m.iter_mut()).chain(self.cv_v.iter_mut()));
        (v, &mut self.state)
    }

    /// Forgets the recorded step (a batch whose runs changed).
    pub(crate) fn discard_recording(&mut self) {
        self.graph = None;
        // The next step runs as called (its batched launches' tables are uploaded then, which a
        // recording may not), and the one after it is recorded.
        self.direct_steps = 0;
    }

    /// The parameters, back on the host.
    pub fn host_params(&self) -> Params<Vec<f32>> {
        self.params.map(|t| self.be.download(t))
    }

    /// The epoch's sums so far, and what diverged (the step and, in words, what), from one read
    /// of the statistics; with `full_scan`, every tensor (gradients, parameters, Adam's moments)
    /// is counted for NaN and infinity on the device too, and only the counts come back.
    pub fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        let (sums, s) = self.state.progress(self.be);
        if s[stats::DIVERGED] != 0.0 {
            let mut what = vec![];
            if s[stats::WHAT] == stats::DIVERGED_OBJECTIVE {
                what.push(format!("the ELBO is {}", s[stats::LAST_OBJECTIVE]));
            }
            what.extend(self.find_non_finite());
            if what.is_empty() {
                what.push("an encoder gradient's variance is not finite".into());
            }
            return (sums, Some((s[stats::DIVERGED] as u64, what.join(", "))));
        }
        if full_scan {
            let be = self.be;
            let (tensors, counts) = self.scan_parts();
            be.count_non_finite(counts, &tensors);
            if self.be.read_array(&self.state.counts).iter().any(|&c| c > 0) {
                let what = self.find_non_finite().unwrap_or_else(|| "a tensor holds NaN or infinite values".into());
                return (sums, Some((self.step, what)));
            }
        }
        (sums, None)
    }
}

impl<B: Backend> Trainer<'_, B> {
    /// The trainer's whole state, on the host, as a checkpoint of `run` after `epoch` epochs.
    pub fn checkpoint(&self, run: &VaeRun, epoch: u64) -> Checkpoint {
        let mut ck = Checkpoint::of_run(super::DESCRIPTION.name, self.step, epoch, run.identity());
        push_state(&mut ck, self.be, &param_tensors(&self.shape), [self.params.tensors(), self.adam_m.tensors(), self.adam_v.tensors()]);
        ck.push("baselines", self.be.download(&self.state.baselines));
        for (l, ((c, m), v)) in self.ws.cv_coef.iter().skip(1).zip(&self.cv_m).zip(&self.cv_v).enumerate() {
            for (set, buf) in [("cv", c), ("cv_adam_m", m), ("cv_adam_v", v)] {
                ck.push(format!("{set}/layer{}", l + 1), self.be.download(buf));
            }
        }
        ck
    }

    /// Loads parameters, Adam moments, baselines and the step from a checkpoint of the same run.
    pub fn restore(&mut self, mut ck: Checkpoint) -> Result<(), CheckpointError> {
        let sets = [self.params.tensors_mut(), self.adam_m.tensors_mut(), self.adam_v.tensors_mut()];
        take_state(&mut ck, self.be, &param_tensors(&self.shape), sets)?;
        let baselines = ck.take("baselines", self.shape.depth())?;
        self.be.write(&mut self.state.baselines, &baselines);
        let per = self.ws.plan.learned;
        for (l, ((c, m), v)) in self.ws.cv_coef.iter_mut().skip(1).zip(&mut self.cv_m).zip(&mut self.cv_v).enumerate() {
            for (set, buf) in [("cv", c), ("cv_adam_m", m), ("cv_adam_v", v)] {
                let values = ck.take(&format!("{set}/layer{}", l + 1), per)?;
                self.be.write(buf, &values);
            }
        }
        self.step = ck.u64_field("step")?;
        self.state.set_step(self.be, self.step);
        Ok(())
    }

    /// The first NaN or infinity in the state or the last step's gradients, in words.
    pub fn find_non_finite(&self) -> Option<String> {
        let sets = [self.grads.tensors(), self.params.tensors(), self.adam_m.tensors(), self.adam_v.tensors()];
        let baselines = self.be.download(&self.state.baselines);
        first_non_finite(self.be, &param_tensors(&self.shape), sets).or_else(|| non_finite("baselines", &baselines))
    }
}

/// The VAE as the run driver trains it: a trainer with its run's identity, its configuration
/// and the training images on the device.
pub struct VaeExperiment<'a, B: Backend> {
    pub trainer: Trainer<'a, B>,
    data: TrainData<B>,
    run: VaeRun,
    cfg: TrainConfig,
}

impl<'a, B: Backend> VaeExperiment<'a, B> {
    pub fn new(be: &'a B, cfg: &TrainConfig, train: &Split) -> Self {
        let run = VaeRun::new(cfg, train.pixels(), train.n);
        let mut trainer = Trainer::new(be, run.shape(), cfg.estimator, cfg.batch_size, cfg.lr as f32, cfg.seed);
        trainer.optimizers = cfg.optimizers;
        VaeExperiment { trainer, data: TrainData::new(be, train), run, cfg: cfg.clone() }
    }
}

impl<B: Backend> Experiment for VaeExperiment<'_, B> {
    fn description(&self) -> &'static Description {
        &super::DESCRIPTION
    }

    fn step(&self) -> u64 {
        self.trainer.step
    }

    fn read_every(&self) -> u64 {
        read_every(self.trainer.be)
    }

    fn start_epoch(&mut self, epoch: u64, order: &[u32], first_batch: u64) {
        self.trainer.start_epoch(&mut self.data, epoch, order, first_batch);
    }

    fn train_step(&mut self) {
        self.trainer.train_step_on(&self.data, self.cfg.binarize);
    }

    fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        self.trainer.progress(full_scan)
    }

    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64 {
        self.trainer.evaluate(split, self.cfg.binarize, binarize, index)
    }

    fn device_error(&self) -> Option<String> {
        self.trainer.be.check().err()
    }

    fn identity(&self) -> Vec<(&'static str, serde_json::Value)> {
        identity(&self.cfg)
    }

    fn epoch_stats(&self) -> Vec<f64> {
        self.trainer.state.read(self.trainer.be)
    }

    fn restore_epoch_stats(&mut self, stats: &[f64]) {
        let (be, state) = (self.trainer.be, &mut self.trainer.state);
        state.write_stats(be, stats);
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

/// The fields that say which run a metrics line belongs to.
pub(crate) fn identity(cfg: &TrainConfig) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("estimator", cfg.estimator.label().into()),
        ("samples", cfg.estimator.samples.into()),
        ("evaluations", cfg.estimator.evaluations(cfg.latent.len()).into()),
        ("seed", cfg.seed.into()),
        ("layers", cfg.latent.clone().into()),
        ("batch_size", cfg.batch_size.into()),
        ("lr", cfg.lr.into()),
    ]
}
