//! The training state: the batch gathered and binarized on the device, gradient-variance
//! partial sums, a step's statistics, the epoch's start, the NaN scan and Adam.

use crate::backend::MemoryOps;
use crate::data::Binarize;

/// The training clock's words (see kernels/common.cuh): the update step, the batch within the
/// epoch, the epoch. The step advances it, so nothing per step comes from the host.
pub mod clock {
    pub use crate::backend::consts::{CLOCK_BATCH as BATCH, CLOCK_EPOCH as EPOCH, CLOCK_WORDS as WORDS};

    /// The update step held by `words`.
    pub fn step(words: &[u32]) -> u64 {
        ((words[crate::backend::consts::CLOCK_STEP_HI as usize] as u64) << 32)
            | words[crate::backend::consts::CLOCK_STEP_LO as usize] as u64
    }

    /// A clock at update `step`, epoch 0, batch 0.
    pub fn at(step: u64) -> Vec<u32> {
        let mut w = vec![0u32; WORDS as usize];
        w[crate::backend::consts::CLOCK_STEP_LO as usize] = step as u32;
        w[crate::backend::consts::CLOCK_STEP_HI as usize] = (step >> 32) as u32;
        w
    }
}

/// Adam's hyper-parameters; the step t (from 1) is the clock's step plus one.
#[derive(Clone, Copy, Debug)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

/// What [`Backend::step_stats`] combines after a step: the coefficients of the objective and
/// of each baseline's target over the terms table's columns, each layer's parameter count, and
/// where each layer's gradient-variance partial sums are ([`grad_variance_slots`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StatsPlan {
    /// (1 + baselines, t): the objective's row, then one row per baseline.
    pub coef: Vec<f32>,
    pub baselines: usize,
    pub layer_params: Vec<f64>,
    /// (layers, 2): each layer's first slot and number of slots in the partials array.
    pub slots: Vec<u32>,
    /// The baselines' decay, b̄ ← γ b̄ + (1-γ) target.
    pub decay: f32,
}

impl StatsPlan {
    pub fn layers(&self) -> usize {
        self.layer_params.len()
    }
    /// f64 values of the statistics array for this plan and a terms table of `t` columns.
    pub fn stats_len(&self, t: usize) -> usize {
        stats::LAYERS + stats::PER_LAYER * self.layers() + t
    }
}

/// The statistics array that [`Backend::step_stats`] writes (see kernels/state.cu): the epoch's
/// sums, the divergence flag and the last step's values, at these offsets.
pub mod stats {
    use crate::backend::consts as k;
    pub const STEPS: usize = k::STATS_STEPS as usize;
    pub const OBJECTIVE: usize = k::STATS_OBJECTIVE as usize;
    pub const GRAD_VAR: usize = k::STATS_GRAD_VAR as usize;
    /// The step (counted from 1) at which something first stopped being finite, 0 if nothing did.
    pub const DIVERGED: usize = k::STATS_DIVERGED as usize;
    /// What: [`DIVERGED_OBJECTIVE`], [`DIVERGED_GRAD_VAR`] (of layer WHICH) or
    /// [`DIVERGED_BASELINE`] (number WHICH).
    pub const WHAT: usize = k::STATS_WHAT as usize;
    pub const WHICH: usize = k::STATS_WHICH as usize;
    pub const LAST_OBJECTIVE: usize = k::STATS_LAST_OBJECTIVE as usize;
    /// Then per layer: the epoch's Σ of its per-parameter variance, the last step's weight and
    /// bias variance sums; then the last step's term means.
    pub const LAYERS: usize = k::STATS_LAYERS as usize;
    pub const PER_LAYER: usize = k::STATS_PER_LAYER as usize;
    pub const DIVERGED_OBJECTIVE: f64 = k::DIVERGED_OBJECTIVE as f64;
    pub const DIVERGED_GRAD_VAR: f64 = k::DIVERGED_GRAD_VAR as f64;
    pub const DIVERGED_BASELINE: f64 = k::DIVERGED_BASELINE as f64;
}

/// How a layer's per-example gradients reach [`StateOps::grad_variance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerExample {
    /// A dense layer's: the weights' gradient of row r is the outer product x[r]ᵀ g[r] (k·n
    /// values) and the biases' is g[r] (n), from the layer's input x (b, k) and its logit
    /// gradient g (b, n).
    Outer,
    /// Given whole: the weights' gradients x (b, k) and the biases' g (b, n).
    Whole,
}

/// Slots of gradient-variance partial sums (4 f64 each) that one layer's
/// [`StateOps::grad_variance`] writes: one per row, then one per chunk of its weights and biases.
pub fn grad_variance_slots(b: usize, k: usize, n: usize, form: PerExample) -> usize {
    let weights = match form {
        PerExample::Outer => k * n,
        PerExample::Whole => k,
    };
    b + (weights + n).div_ceil(crate::backend::consts::GV_CHUNK as usize)
}

pub trait StateOps: MemoryOps {
    /// x (b, n0): the images `order[clock.batch · b ..][..b]` of `images` (count, n0), as bits
    /// (`data::binarize_batch`'s rule, keyed by (seed, clock.epoch, stream)); with `labels`,
    /// their labels into `labels_out` (b) as f32 integers.
    fn gather_binarize(
        &self,
        x: &mut Self::Buf,
        labels: Option<(&mut Self::Buf, &Self::Array<u8>)>,
        images: &Self::Array<u8>,
        order: &Self::Array<u32>,
        clock: &Self::Array<u32>,
        mode: Binarize,
        seed: u64,
        stream: u32,
        b: usize,
        n0: usize,
    );

    /// The partial sums from which [`StateOps::step_stats`] finishes one layer's gradient
    /// variance (Σ over its parameters of the across-batch variance of the per-example
    /// gradients given by x (b, k) and g (b, n) as `form` says, whose batch means are dw and
    /// db (n)), into [`grad_variance_slots`]`(b, k, n, form)` slots of `partials` from
    /// `first_slot`: Σ_r |weights_r|², Σ_r |g_r|², |dw|², |db|², in any split over the slots.
    /// For [`PerExample::Outer`], |weights_r|² = |x_r|²·|g_r|²: no (b, k, n) tensor is formed.
    fn grad_variance(
        &self,
        partials: &mut Self::Array<f64>,
        first_slot: usize,
        x: &Self::Buf,
        g: &Self::Buf,
        dw: &Self::Buf,
        db: &Self::Buf,
        b: usize,
        k: usize,
        n: usize,
        form: PerExample,
    );

    /// After a step: the term means of terms (b, t), the objective, the baselines' running
    /// averages, each layer's gradient variance, the epoch's sums, the divergence flag (the
    /// [`stats`] layout), and the clock advanced by one step and one batch.
    fn step_stats(
        &self,
        stats: &mut Self::Array<f64>,
        baselines: &mut Self::Buf,
        clock: &mut Self::Array<u32>,
        terms: &Self::Buf,
        partials: &Self::Array<f64>,
        plan: &StatsPlan,
        b: usize,
        t: usize,
    );

    /// At an epoch's start: the epoch's sums to zero, the clock at `epoch` and its batch
    /// `first_batch`.
    fn epoch_start(&self, stats: &mut Self::Array<f64>, clock: &mut Self::Array<u32>, epoch: u64, first_batch: u64, layers: usize);

    /// The number of NaNs and of infinities in each tensor: counts (2·tensors.len()).
    fn count_non_finite(&self, counts: &mut Self::Array<u32>, tensors: &[&Self::Buf]);

    /// Adam ascent step t = clock.step + 1 on every tensor at once: param += lr·m̂/(√v̂ + ε).
    fn adam(
        &self,
        params: &mut [&mut Self::Buf],
        grads: &[&Self::Buf],
        m: &mut [&mut Self::Buf],
        v: &mut [&mut Self::Buf],
        clock: &Self::Array<u32>,
        hp: AdamHyper,
    );
}
