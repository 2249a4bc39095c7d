//! What both experiments' networks are made of and trained with: dense layers of Bernoulli
//! units, Adam's hyper-parameters, the running-average baseline, and the state a training run
//! keeps on the device (clock, baselines, statistics, the data). Knows no experiment.

use crate::backend::runs::Runs;
use crate::backend::StateOps;
use crate::backend::{clock, stats, AdamHyper, Backend, StatsPlan};
use crate::data::Split;

/// A fully connected layer of Bernoulli units: logits (b, n_out) = inp (b, n_in) · w + bias,
/// with w stored (n_in, n_out) so that a parent's outgoing weights are one contiguous row.
pub struct Dense<Buf> {
    pub w: Buf,
    pub bias: Buf,
    pub n_in: usize,
    pub n_out: usize,
}

impl<Buf> Dense<Buf> {
    pub fn map<Out>(&self, mut f: impl FnMut(&Buf) -> Out) -> Dense<Out> {
        Dense { w: f(&self.w), bias: f(&self.bias), n_in: self.n_in, n_out: self.n_out }
    }
}

/// Adam's hyper-parameters besides the learning rate (one state per tensor).
pub const ADAM_BETA1: f32 = 0.9;
pub const ADAM_BETA2: f32 = 0.999;
pub const ADAM_EPS: f32 = 1e-8;

/// Decay of the running-average baselines, b̄ ← γ b̄ + (1-γ) mean(target).
pub const BASELINE_DECAY: f32 = 0.99;

/// Adam's hyper-parameters as this program uses them, at learning rate `lr`.
pub fn adam_hyper(lr: f32) -> AdamHyper {
    AdamHyper { lr, beta1: ADAM_BETA1, beta2: ADAM_BETA2, eps: ADAM_EPS }
}

/// b̄ ← γ b̄ + (1-γ) target.
pub fn track(baseline: f32, target: f32) -> f32 {
    BASELINE_DECAY * baseline + (1.0 - BASELINE_DECAY) * target
}

/// What a training run keeps on the device besides its parameters and their optimiser state
/// (kernels/state.cu): the clock, the baselines, the statistics every step adds to, and the
/// counts of the periodic scan for NaN and infinity. A step reads and advances them on the
/// device; the host reads the statistics every few steps.
pub struct TrainState<B: Backend> {
    pub clock: B::Array<u32>,
    /// b̄ for each baseline the estimator keeps (at least one element, unused without any).
    pub baselines: B::Buf,
    pub stats: B::Array<f64>,
    pub counts: B::Array<u32>,
    pub plan: StatsPlan,
    /// Columns of the terms table the statistics average.
    pub t: usize,
}

impl<B: Backend> TrainState<B> {
    /// A state at step 0 for `plan` over a terms table of `t` columns, scanning `tensors`
    /// tensors, with `baseline_slots` baselines (at least the plan's; they start at 0).
    pub fn new(be: &B, plan: StatsPlan, t: usize, tensors: usize, baseline_slots: usize) -> Self {
        TrainState {
            clock: be.array(&clock::at(0)),
            baselines: be.zeros(baseline_slots.max(plan.baselines).max(1)),
            stats: be.array(&vec![0.0f64; plan.stats_len(t)]),
            counts: be.array(&vec![0u32; 2 * tensors]),
            plan,
            t,
        }
    }

    /// Sets the clock to update `step` (a fresh or restored run).
    pub fn set_step(&mut self, be: &B, step: u64) {
        be.write_array(&mut self.clock, &clock::at(step));
    }

    /// The statistics, read once (see [`crate::backend::stats`]).
    pub fn read(&self, be: &B) -> Vec<f64> {
        be.read_array(&self.stats)
    }

    /// Puts back statistics that [`TrainState::read`] returned.
    pub fn write_stats(&mut self, be: &B, stats: &[f64]) {
        be.write_array(&mut self.stats, stats);
    }

    /// The baselines on the host.
    pub fn baselines(&self, be: &B) -> Vec<f32> {
        be.download(&self.baselines)
    }

    /// The epoch's sums so far and the divergence flag, from one read.
    pub fn progress(&self, be: &B) -> (EpochSums, Vec<f64>) {
        let s = self.read(be);
        (self.sums_of(&s), s)
    }

    /// The epoch's sums held by statistics `s` (one run's, as read).
    pub fn sums_of(&self, s: &[f64]) -> EpochSums {
        let layers = self.plan.layers();
        EpochSums {
            steps: s[stats::STEPS] as u64,
            objective: s[stats::OBJECTIVE],
            grad_var: s[stats::GRAD_VAR],
            grad_var_layers: (0..layers).map(|l| s[stats::LAYERS + stats::PER_LAYER * l]).collect(),
        }
    }

    /// The last step's objective and per-layer (weight, bias) gradient-variance sums.
    pub fn last_step(&self, be: &B) -> (f64, Vec<(f64, f64)>) {
        let s = self.read(be);
        let layer = |l: usize| (s[stats::LAYERS + stats::PER_LAYER * l + 1], s[stats::LAYERS + stats::PER_LAYER * l + 2]);
        (s[stats::LAST_OBJECTIVE], (0..self.plan.layers()).map(layer).collect())
    }

    /// The last step's term means.
    pub fn last_term_means(&self, be: &B) -> Vec<f64> {
        let s = self.read(be);
        s[stats::LAYERS + stats::PER_LAYER * self.plan.layers()..].to_vec()
    }
}

/// Run `r` of a batch (`x`, whose buffers hold every run: [`crate::backend::runs::Runs`]) into
/// a trainer of that run alone on `y`: `from`'s slices into `to`, buffer for buffer (the same
/// list of the same trainer's state on both), and the clock, baselines and statistics.
pub fn copy_run_out<X: Backend, Y: Backend>(
    (x, r): (&X, usize),
    from: Vec<&X::Buf>,
    from_state: &TrainState<X>,
    y: &Y,
    to: Vec<&mut Y::Buf>,
    to_state: &mut TrainState<Y>,
) {
    assert_eq!(from.len(), to.len(), "a run's state is the same list of buffers alone and in a batch");
    for (dst, src) in to.into_iter().zip(from) {
        y.write(dst, &x.download_run(src, r));
    }
    y.write(&mut to_state.baselines, &x.download_run(&from_state.baselines, r));
    y.write_array(&mut to_state.clock, &x.read_array_run(&from_state.clock, r));
    y.write_array(&mut to_state.stats, &x.read_array_run(&from_state.stats, r));
}

/// The reverse of [`copy_run_out`]: a trainer's state on `y` into run `r` of the batch on `x`.
pub fn copy_run_in<X: Backend, Y: Backend>(
    y: &Y,
    from: Vec<&Y::Buf>,
    from_state: &TrainState<Y>,
    (x, r): (&X, usize),
    to: Vec<&mut X::Buf>,
    to_state: &mut TrainState<X>,
) {
    assert_eq!(from.len(), to.len(), "a run's state is the same list of buffers alone and in a batch");
    for (dst, src) in to.into_iter().zip(from) {
        x.write_run(dst, r, &y.download(src));
    }
    x.write_run(&mut to_state.baselines, r, &y.download(&from_state.baselines));
    x.write_array_run(&mut to_state.clock, r, &y.read_array(&from_state.clock));
    x.write_array_run(&mut to_state.stats, r, &y.read_array(&from_state.stats));
}

/// Readies epoch `epoch` of run `r` of a batch alone (the runs of a batch may be at different
/// steps): its order of the images, and the reference's epoch start on its statistics and clock.
pub fn start_run_epoch<X: Backend>(
    (x, r): (&X, usize),
    state: &mut TrainState<X>,
    data: &mut TrainData<X>,
    epoch: u64,
    order: &[u32],
    first_batch: u64,
) {
    x.write_array_run(&mut data.order, r, order);
    let (mut s, mut clock) = (x.read_array_run(&state.stats, r), x.read_array_run(&state.clock, r));
    crate::backend::cpu::Cpu.epoch_start(&mut s, &mut clock, epoch, first_batch, state.plan.layers());
    x.write_array_run(&mut state.stats, r, &s);
    x.write_array_run(&mut state.clock, r, &clock);
}

/// Counts NaN and infinity in run `r`'s slices of `tensors` alone, into its slice of `counts`,
/// and whether there are any: one run's scan launches for that run only (the others may be
/// scanning at other steps, or have left the batch).
pub fn run_has_non_finite<B: Backend + Sync>(
    (x, r): (&Runs<'_, B>, usize),
    tensors: Vec<&Vec<B::Buf>>,
    counts: &mut [B::Array<u32>],
) -> bool {
    let mine: Vec<&B::Buf> = tensors.iter().map(|t| &t[r]).collect();
    x.inner.count_non_finite(&mut counts[r], &mine);
    x.inner.read_array(&counts[r]).iter().any(|&c| c > 0)
}

/// Run `r`'s epoch sums from one read of its statistics, and whether it diverged.
pub fn run_sums<X: Backend>((x, r): (&X, usize), state: &TrainState<X>) -> (EpochSums, bool) {
    let s = x.read_array_run(&state.stats, r);
    (state.sums_of(&s), s[stats::DIVERGED] != 0.0)
}

/// The running sums of an epoch's steps, as the step's statistics keep them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochSums {
    pub steps: u64,
    /// Σ of the batch-mean objective.
    pub objective: f64,
    /// Σ of the per-parameter gradient variance, over all layers and per layer.
    pub grad_var: f64,
    pub grad_var_layers: Vec<f64>,
}

/// The training images and labels, uploaded once, and the epoch's order of them (rewritten in
/// place once per epoch), from which the step gathers its batch on the device.
pub struct TrainData<B: Backend> {
    pub images: B::Array<u8>,
    pub labels: B::Array<u8>,
    pub order: B::Array<u32>,
}

impl<B: Backend> TrainData<B> {
    pub fn new(be: &B, split: &Split) -> Self {
        TrainData { images: be.array(&split.images), labels: be.array(&split.labels), order: be.array(&vec![0u32; split.n]) }
    }

    /// The epoch's order of the images (one copy to the device per epoch).
    pub fn set_order(&mut self, be: &B, order: &[u32]) {
        be.write_array(&mut self.order, order);
    }
}
