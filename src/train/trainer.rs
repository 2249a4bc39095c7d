//! The trainer of one run on one backend, whatever the model: its parameters, their gradients
//! and Adam's moments, the device-side [`TrainState`], the update (Adam after the model's
//! gradients), the step recorded once and replayed, the NaN scan, and the state's checkpoint
//! tensors. The model ([`Model`]) brings its shapes, its gradients and evaluation, and any state
//! of its own (the VAE's control-variate coefficients).

use crate::backend::{stats, Backend};
use crate::data::Split;
use crate::nn::{adam_hyper, EpochSums, TrainData, TrainState};
use crate::rng::RngKey;
use crate::run::checkpoint::{first_non_finite, non_finite, push_state, take_state, Checkpoint, CheckpointError};
use crate::run::Description;

/// How the last parameter tensor (the VAE's prior) is updated where it is not trained with the
/// rest by Adam at the trainer's learning rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LastTensor {
    /// Left as it is.
    Fixed,
    /// Plain gradient ascent at `lr` over its `len` values.
    Sgd { lr: f32, len: usize },
    /// Adam at a learning rate of its own.
    Adam { lr: f32 },
}

/// What a model brings to the [`Trainer`] on backend `B`: its parameters' shapes and initial
/// values, the gradients of a step whose batch is in place, its evaluation, and its own state.
pub trait Model<B: Backend>: Sized {
    /// The parameters (and every set of tensors shaped like them: gradients, Adam's moments).
    type Params: Send;

    /// The initial parameters from `seed`, and three sets of zeros shaped like them (the
    /// gradients and Adam's two moments).
    fn init(&self, be: &B, seed: u64) -> [Self::Params; 4];
    /// The tensors of a set, in one fixed order (the order of [`Model::tensor_names`]).
    fn tensors(p: &Self::Params) -> Vec<&B::Buf>;
    fn tensors_mut(p: &mut Self::Params) -> Vec<&mut B::Buf>;
    /// Names and lengths of the parameter tensors, as checkpoints and messages name them.
    fn tensor_names(&self) -> Vec<(String, usize)>;
    /// The device-side state of a run at step 0, scanning `tensors` tensors for NaN and infinity.
    fn train_state(&self, be: &B, tensors: usize) -> TrainState<B>;
    /// The baselines a checkpoint keeps: how many, their tensor's name, and their name in words.
    fn baselines(&self) -> (usize, &'static str, &'static str);

    /// Gathers the epoch's next batch from the device's copy of the training images (`clock`
    /// says which), binarized as the model trains.
    fn gather(&mut self, be: &B, data: &TrainData<B>, clock: &B::Array<u32>, seed: u64);
    /// The gradients (ascent directions, batch means) of a step whose batch is in place.
    fn gradients(&mut self, be: &B, params: &Self::Params, state: &TrainState<B>, seed: u64, grads: &mut Self::Params);
    /// How the last tensor is updated, if not with the rest by Adam at `lr`.
    fn last_tensor(&self, lr: f32) -> Option<LastTensor> {
        let _ = lr;
        None
    }
    /// Updates the model's own state after the parameters' (the control variates' coefficients).
    fn update_own(&mut self, be: &B, clock: &B::Array<u32>) {
        let _ = (be, clock);
    }
    /// Adds the step's statistics (which advances the clock).
    fn step_stats(&self, be: &B, state: &mut TrainState<B>);

    /// The test metric of `params` over a whole split, binarized afresh with `key`; `index`
    /// keys its samples.
    fn evaluate(&self, be: &B, params: &Self::Params, seed: u64, split: &Split, key: RngKey, index: u64) -> f64;

    /// The model's own state, in one fixed order (none by default).
    fn own_state(&self) -> Vec<&B::Buf> {
        Vec::new()
    }
    fn own_state_mut(&mut self) -> Vec<&mut B::Buf> {
        Vec::new()
    }
    /// Adds the model's own state to a checkpoint, and takes it back.
    fn save_own(&self, be: &B, ck: &mut Checkpoint) {
        let _ = (be, ck);
    }
    fn restore_own(&mut self, be: &B, ck: &mut Checkpoint) -> Result<(), CheckpointError> {
        let _ = (be, ck);
        Ok(())
    }

    /// What diverged, in words, when the objective did (its last value `value`), if the model
    /// says so.
    fn objective_diverged(&self, value: f64) -> Option<String> {
        let _ = value;
        None
    }
    /// What diverged, in words, when the scan finds nothing else: a gradient's variance.
    fn variance_diverged(&self) -> &'static str;
}

/// Parameters, Adam's moments, the device-side training state and the model of one run on one
/// backend.
pub struct Trainer<'a, B: Backend, M: Model<B>> {
    pub be: &'a B,
    pub model: M,
    pub params: M::Params,
    /// The last step's gradients (ascent directions, batch means), read by tests and the scans.
    pub grads: M::Params,
    pub(crate) adam_m: M::Params,
    pub(crate) adam_v: M::Params,
    /// The clock, the baselines and the statistics, on the device.
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

impl<'a, B: Backend, M: Model<B>> Trainer<'a, B, M> {
    /// A trainer of `model` at step 0, its parameters initialised from `seed`.
    pub fn with_model(be: &'a B, model: M, lr: f32, seed: u64) -> Self {
        let [params, grads, adam_m, adam_v] = model.init(be, seed);
        let state = model.train_state(be, 4 * M::tensors(&params).len());
        Trainer { be, model, params, grads, adam_m, adam_v, state, step: 0, lr, seed, graph: None, direct_steps: 0 }
    }

    /// One update on a batch the host puts in place with `put` (tests, benchmarks). Its
    /// statistics stay on the device ([`TrainState`]).
    pub fn step_with(&mut self, put: impl FnOnce(&B, &mut M)) {
        put(self.be, &mut self.model);
        self.update();
        self.direct_steps += 1;
        self.step += 1;
    }

    /// One update on the epoch's next batch, which the device gathers from `data` and
    /// binarizes itself. Where the backend records (a GPU), the first step runs as called and
    /// the second is recorded as one graph that every later step replays: a step is then one
    /// launch, with nothing read back.
    pub fn train_step_on(&mut self, data: &TrainData<B>) {
        if let Some(graph) = &self.graph {
            self.be.replay(graph);
        } else {
            let recording = self.direct_steps > 0 && self.be.begin_recording();
            self.model.gather(self.be, data, &self.state.clock, self.seed);
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

    /// Everything of a step after its batch is in place: the gradients, Adam, the model's own
    /// update, the statistics (which advance the clock).
    fn update(&mut self) {
        let be = self.be;
        self.model.gradients(be, &self.params, &self.state, self.seed, &mut self.grads);
        let mut params = M::tensors_mut(&mut self.params);
        let mut grads = M::tensors(&self.grads);
        let mut m = M::tensors_mut(&mut self.adam_m);
        let mut v = M::tensors_mut(&mut self.adam_v);
        if let Some(last) = self.model.last_tensor(self.lr) {
            let (p, g, mp, vp) = (params.pop().unwrap(), grads.pop().unwrap(), m.pop().unwrap(), v.pop().unwrap());
            match last {
                LastTensor::Fixed => {}
                LastTensor::Sgd { lr, len } => be.axpy(p, lr, g, len),
                LastTensor::Adam { lr } => be.adam(&mut [p], &[g], &mut [mp], &mut [vp], &self.state.clock, adam_hyper(lr)),
            }
        }
        be.adam(&mut params, &grads, &mut m, &mut v, &self.state.clock, adam_hyper(self.lr));
        self.model.update_own(be, &self.state.clock);
        self.model.step_stats(be, &mut self.state);
    }

    /// The test metric over a whole split, binarized afresh with `key`; `index` keys its samples.
    pub fn evaluate_on(&self, split: &Split, key: RngKey, index: u64) -> f64 {
        self.model.evaluate(self.be, &self.params, self.seed, split, key, index)
    }

    /// What the periodic scan counts NaN and infinity in (the last step's gradients, the
    /// parameters and Adam's moments), and where it counts them.
    pub(crate) fn scan_parts(&mut self) -> (Vec<&B::Buf>, &mut B::Array<u32>) {
        let sets = [&self.grads, &self.params, &self.adam_m, &self.adam_v];
        (sets.into_iter().flat_map(M::tensors).collect(), &mut self.state.counts)
    }

    /// Every buffer of the run's state besides its [`TrainState`] (parameters, Adam's moments,
    /// the model's own state), in one fixed order, and that state: a batch moves a run's state
    /// through them.
    pub(crate) fn state_parts(&self) -> (Vec<&B::Buf>, &TrainState<B>) {
        let mut v = [M::tensors(&self.params), M::tensors(&self.adam_m), M::tensors(&self.adam_v)].concat();
        v.extend(self.model.own_state());
        (v, &self.state)
    }

    /// [`Trainer::state_parts`], writable.
    pub(crate) fn state_parts_mut(&mut self) -> (Vec<&mut B::Buf>, &mut TrainState<B>) {
        let mut v = M::tensors_mut(&mut self.params);
        v.extend(M::tensors_mut(&mut self.adam_m));
        v.extend(M::tensors_mut(&mut self.adam_v));
        v.extend(self.model.own_state_mut());
        (v, &mut self.state)
    }

    /// Forgets the recorded step (a batch whose runs changed).
    pub(crate) fn discard_recording(&mut self) {
        self.graph = None;
        // The next step runs as called (its batched launches' tables are uploaded then, which a
        // recording may not), and the one after it is recorded.
        self.direct_steps = 0;
    }

    /// Every parameter as little-endian f32, tensor after tensor.
    pub fn params_le_bytes(&self) -> Vec<u8> {
        M::tensors(&self.params).into_iter().flat_map(|t| self.be.download(t)).flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The epoch's sums so far, and what diverged (the step and, in words, what), from one read
    /// of the statistics; with `full_scan`, every tensor (gradients, parameters, Adam's moments)
    /// is counted for NaN and infinity on the device too, and only the counts come back.
    pub fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        let (sums, s) = self.state.progress(self.be);
        if s[stats::DIVERGED] != 0.0 {
            let mut what = vec![];
            if s[stats::WHAT] == stats::DIVERGED_OBJECTIVE {
                what.extend(self.model.objective_diverged(s[stats::LAST_OBJECTIVE]));
            }
            what.extend(self.find_non_finite());
            if what.is_empty() {
                what.push(self.model.variance_diverged().into());
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

    /// The trainer's whole state, on the host, as a checkpoint of the run `identity` names of
    /// experiment `d`, after `epoch` epochs.
    pub fn checkpoint(&self, d: &Description, identity: serde_json::Value, epoch: u64) -> Checkpoint {
        let mut ck = Checkpoint::of_run(d.name, self.step, epoch, identity);
        let sets = [M::tensors(&self.params), M::tensors(&self.adam_m), M::tensors(&self.adam_v)];
        push_state(&mut ck, self.be, &self.model.tensor_names(), sets);
        let (_, name, _) = self.model.baselines();
        ck.push(name, self.be.download(&self.state.baselines));
        self.model.save_own(self.be, &mut ck);
        ck
    }

    /// Loads parameters, Adam moments, baselines, the model's own state and the step from a
    /// checkpoint of the same run.
    pub fn restore(&mut self, mut ck: Checkpoint) -> Result<(), CheckpointError> {
        let names = self.model.tensor_names();
        let sets = [M::tensors_mut(&mut self.params), M::tensors_mut(&mut self.adam_m), M::tensors_mut(&mut self.adam_v)];
        take_state(&mut ck, self.be, &names, sets)?;
        let (slots, name, _) = self.model.baselines();
        let baselines = ck.take(name, slots)?;
        self.be.write(&mut self.state.baselines, &baselines);
        self.model.restore_own(self.be, &mut ck)?;
        self.step = ck.u64_field("step")?;
        self.state.set_step(self.be, self.step);
        Ok(())
    }

    /// The first NaN or infinity in the state or the last step's gradients, in words.
    pub fn find_non_finite(&self) -> Option<String> {
        let sets = [M::tensors(&self.grads), M::tensors(&self.params), M::tensors(&self.adam_m), M::tensors(&self.adam_v)];
        let (_, _, words) = self.model.baselines();
        let baselines = self.be.download(&self.state.baselines);
        first_non_finite(self.be, &self.model.tensor_names(), sets).or_else(|| non_finite(words, &baselines))
    }
}
