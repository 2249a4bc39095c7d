//! The bandit's trainer: parameters, Adam state, baseline and buffers of one run on one backend,
//! its update step and its test accuracy; and the bandit as an [`Experiment`] of the run driver.

use super::agent::{forward, gradients, AgentParams, AgentShape, BanditDraw, BanditWorkspace};
use super::checkpoint::{tensors, BanditRun};
use super::BanditArgs;
use crate::backend::{stats, Backend};
use crate::data::{binarize_batch, Binarize, Split};
use crate::nn::{adam_hyper, EpochSums, TrainData, TrainState};
use crate::rng::{stream, RngKey};
use crate::run::checkpoint::{first_non_finite, non_finite, push_state, take_state, Checkpoint, CheckpointError};
use crate::run::{read_every, Description, Experiment};
use crate::vae::estimator::EstimatorKind;

/// Parameters, optimiser state, the device-side training state and the buffers of one bandit
/// run on one backend.
pub struct BanditTrainer<'a, B: Backend> {
    pub be: &'a B,
    pub shape: AgentShape,
    pub est: EstimatorKind,
    pub params: AgentParams<B::Buf>,
    /// The last step's gradients (ascent directions, batch means), read by tests and the scans.
    pub grads: AgentParams<B::Buf>,
    pub(crate) adam_m: AgentParams<B::Buf>,
    pub(crate) adam_v: AgentParams<B::Buf>,
    pub ws: BanditWorkspace<B>,
    /// The clock, the reward baseline (b̄ at 0) and the statistics, on the device.
    pub state: TrainState<B>,
    /// Updates taken so far (the device's clock holds the same number).
    pub step: u64,
    pub lr: f32,
    pub seed: u64,
    /// HNCA's ablation that differentiates through ρ (`--rho-gradient`; biased).
    pub rho_gradient: bool,
    /// The step as one replayable recording, once made (see the VAE's trainer).
    graph: Option<B::Graph>,
    direct_steps: u64,
}

impl<'a, B: Backend> BanditTrainer<'a, B> {
    pub fn new(be: &'a B, shape: AgentShape, est: EstimatorKind, batch_size: usize, lr: f32, seed: u64) -> Self {
        let host = AgentParams::init(&shape, seed);
        let zeros = |p: &AgentParams<Vec<f32>>| p.map(|t| be.zeros(t.len()));
        let ws = BanditWorkspace::new(be, &shape, batch_size);
        let state = TrainState::new(be, ws.stats_plan(&shape, est), 1, 4 * host.tensors().count(), 1);
        BanditTrainer {
            be,
            params: host.map(|t| be.upload(t)),
            grads: zeros(&host),
            adam_m: zeros(&host),
            adam_v: zeros(&host),
            ws,
            state,
            shape,
            est,
            step: 0,
            lr,
            seed,
            rho_gradient: false,
            graph: None,
            direct_steps: 0,
        }
    }

    /// The reward baseline, on the host (0 for estimators without one).
    pub fn baseline(&self) -> f32 {
        self.be.download(&self.state.baselines)[0]
    }

    /// One update on inputs x (b, n_0) with labels (b), given by the host (tests). Its
    /// statistics stay on the device ([`TrainState`]).
    pub fn train_step(&mut self, x: &[f32], labels: &[f32]) {
        self.be.write(self.ws.input_mut(), x);
        self.be.write(&mut self.ws.labels, labels);
        self.update();
        self.direct_steps += 1;
        self.step += 1;
    }

    /// One update on the epoch's next batch, gathered and binarized on the device from `data`;
    /// recorded and replayed where the backend records (see the VAE's `train_step_on`).
    pub fn train_step_on(&mut self, data: &TrainData<B>) {
        if let Some(graph) = &self.graph {
            self.be.replay(graph);
        } else {
            let recording = self.direct_steps > 0 && self.be.begin_recording();
            let (b, n0) = (self.ws.b, self.shape.pixels());
            let ws = &mut self.ws;
            let x = match &mut ws.conv {
                Some(c) => &mut c.x,
                None => &mut ws.u[0],
            };
            let labels = Some((&mut ws.labels, &data.labels));
            let clock = &self.state.clock;
            self.be.gather_binarize(
                x,
                labels,
                &data.images,
                &data.order,
                clock,
                Binarize::Dynamic,
                self.seed,
                stream::BINARIZE_TRAIN,
                b,
                n0,
            );
            self.update();
            if recording {
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

    /// Everything of a step after its batch is in place.
    fn update(&mut self) {
        let be = self.be;
        let draw = BanditDraw { seed: self.seed, step: 0, eval: false, clock: Some(&self.state.clock) };
        forward(be, &self.params, &mut self.ws, &self.shape, draw);
        gradients(be, &self.params, &mut self.ws, &self.shape, self.est, self.rho_gradient, &self.state.baselines, &mut self.grads);
        let mut params: Vec<&mut B::Buf> = self.params.tensors_mut().collect();
        let grads: Vec<&B::Buf> = self.grads.tensors().collect();
        let mut m: Vec<&mut B::Buf> = self.adam_m.tensors_mut().collect();
        let mut v: Vec<&mut B::Buf> = self.adam_v.tensors_mut().collect();
        be.adam(&mut params, &grads, &mut m, &mut v, &self.state.clock, adam_hyper(self.lr));
        let (b, state) = (self.ws.b, &mut self.state);
        be.step_stats(&mut state.stats, &mut state.baselines, &mut state.clock, &self.ws.reward, &self.ws.partials, &state.plan, b, 1);
    }

    /// Every buffer of the run's state besides its [`TrainState`] (parameters and Adam's
    /// moments), in one fixed order, and that state: a batch moves a run's state through them.
    pub(crate) fn state_parts(&self) -> (Vec<&B::Buf>, &TrainState<B>) {
        (self.params.tensors().chain(self.adam_m.tensors()).chain(self.adam_v.tensors()).collect(), &self.state)
    }

    /// [`BanditTrainer::state_parts`], writable.
    pub(crate) fn state_parts_mut(&mut self) -> (Vec<&mut B::Buf>, &mut TrainState<B>) {
        (self.params.tensors_mut().chain(self.adam_m.tensors_mut()).chain(self.adam_v.tensors_mut()).collect(), &mut self.state)
    }

    /// Forgets the recorded step (a batch whose runs changed); the next step runs as called.
    pub(crate) fn discard_recording(&mut self) {
        self.graph = None;
        self.direct_steps = 0;
    }

    /// What the periodic scan counts NaN and infinity in (the last step's gradients, the
    /// parameters and Adam's moments), and where it counts them.
    pub(crate) fn scan_parts(&mut self) -> (Vec<&B::Buf>, &mut B::Array<u32>) {
        let tensors = self.grads.tensors().chain(self.params.tensors()).chain(self.adam_m.tensors()).chain(self.adam_v.tensors()).collect();
        (tensors, &mut self.state.counts)
    }

    /// The parameters, back on the host.
    pub fn host_params(&self) -> AgentParams<Vec<f32>> {
        self.params.map(|t| self.be.download(t))
    }

    /// The epoch's sums so far and what diverged, from one read (see the VAE's `progress`).
    pub fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        let (sums, s) = self.state.progress(self.be);
        if s[stats::DIVERGED] != 0.0 {
            let what = self.find_non_finite().unwrap_or_else(|| "a gradient's variance is not finite".into());
            return (sums, Some((s[stats::DIVERGED] as u64, what)));
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

/// The labels of `indices` as f32 integers.
pub fn labels(split: &Split, indices: &[u32]) -> Vec<f32> {
    indices.iter().map(|&i| split.labels[i as usize] as f32).collect()
}

/// Test accuracy: the mean reward of sampled actions on the test set, binarized afresh.
pub fn evaluate<B: Backend>(trainer: &BanditTrainer<'_, B>, split: &Split, key: RngKey, eval_index: u64) -> f64 {
    const EVAL_BATCH: usize = 500;
    let be = trainer.be;
    let indices: Vec<u32> = (0..split.n as u32).collect();
    let mut cache: Option<BanditWorkspace<B>> = None;
    let mut correct = 0.0;
    for (batch_no, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
        let b = chunk.len();
        if cache.as_ref().map(|w| w.b) != Some(b) {
            cache = Some(BanditWorkspace::for_evaluation(be, &trainer.shape, b));
        }
        let ws = cache.as_mut().expect("workspace was just created");
        be.write(ws.input_mut(), &binarize_batch(split, chunk, Binarize::Dynamic, key, trainer.shape.pixels()));
        be.write(&mut ws.labels, &labels(split, chunk));
        let draw = BanditDraw { seed: trainer.seed, step: (eval_index << 24) | batch_no as u64, eval: true, clock: None };
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
        ck.push("baseline", vec![self.baseline()]);
        ck
    }

    /// Loads parameters, Adam moments, the baseline and the step from a checkpoint of the same run.
    pub fn restore(&mut self, mut ck: Checkpoint) -> Result<(), CheckpointError> {
        let sets = [self.params.tensors_mut().collect(), self.adam_m.tensors_mut().collect(), self.adam_v.tensors_mut().collect()];
        take_state(&mut ck, self.be, &tensors(&self.shape), sets)?;
        let baseline = ck.take("baseline", 1)?;
        self.be.write(&mut self.state.baselines, &baseline);
        self.step = ck.u64_field("step")?;
        self.state.set_step(self.be, self.step);
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
        first_non_finite(self.be, &tensors(&self.shape), sets).or_else(|| non_finite("the baseline", &[self.baseline()]))
    }
}

/// The bandit as the run driver trains it: a trainer with its run's identity and the training
/// images on the device.
pub struct BanditExperiment<'a, B: Backend> {
    pub trainer: BanditTrainer<'a, B>,
    data: TrainData<B>,
    run: BanditRun,
    args: BanditArgs,
}

impl<'a, B: Backend> BanditExperiment<'a, B> {
    /// The experiment `args` describe on `train`; an error if the convolutions do not fit its images.
    pub fn new(be: &'a B, args: &BanditArgs, train: &Split) -> Result<Self, crate::error::Error> {
        let run = BanditRun::new(args, train)?;
        let mut trainer = BanditTrainer::new(be, run.shape(), args.estimator, args.batch_size, args.lr as f32, args.seed);
        trainer.rho_gradient = args.rho_gradient;
        Ok(BanditExperiment { trainer, data: TrainData::new(be, train), run, args: args.clone() })
    }
}

impl<B: Backend> Experiment for BanditExperiment<'_, B> {
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
        let (be, state) = (self.trainer.be, &mut self.trainer.state);
        self.data.set_order(be, order);
        be.epoch_start(&mut state.stats, &mut state.clock, epoch, first_batch, state.plan.layers());
    }

    fn train_step(&mut self) {
        self.trainer.train_step_on(&self.data);
    }

    fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        self.trainer.progress(full_scan)
    }

    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64 {
        evaluate(&self.trainer, split, binarize, index)
    }

    fn device_error(&self) -> Option<String> {
        self.trainer.be.check().err()
    }

    fn identity(&self) -> Vec<(&'static str, serde_json::Value)> {
        identity(&self.args, &self.run)
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
        let saved = BanditRun::from_checkpoint(&ck)?;
        saved.check_resumable_as(&self.run)?;
        crate::run::files::note_lr_change(super::DESCRIPTION.name, saved.lr, self.run.lr);
        self.trainer.restore(ck)
    }

    fn params_le_bytes(&self) -> Vec<u8> {
        self.trainer.host_params().tensors().flatten().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// The fields that say which run a metrics line belongs to.
pub(crate) fn identity(args: &BanditArgs, run: &BanditRun) -> Vec<(&'static str, serde_json::Value)> {
    let mut id = vec![
        ("estimator", run.estimator_label().into()),
        // One forward pass of the agent per example and step.
        ("evaluations", 1.into()),
        ("seed", args.seed.into()),
        ("layers", args.hidden_layers().into()),
        ("batch_size", args.batch_size.into()),
        ("lr", args.lr.into()),
    ];
    if let Some(c) = &run.conv {
        id.extend([("features", "conv".into()), ("conv_layers", c.layers.into()), ("conv_channels", c.channels.into())]);
    }
    id
}
