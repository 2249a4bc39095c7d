//! The operations the estimators are written over. A backend owns its buffers (`Buf`, a flat
//! array of f32 in row-major order) and runs each operation where they live; the CPU backend is
//! the reference, and a GPU backend implements the same list with the same argument order.
//!
//! Shapes follow llm.c's convention: `b` is the batch size, and every buffer's shape is written
//! next to it, e.g. "out is (b, n)".

pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod kernels;
pub mod nvrtc;
pub mod runs;

use crate::data::Binarize;
use crate::rng::RngKey;

/// The most samples per layer the K-sample operations take (their per-row tables' length).
pub use kernels::launch::MAX_SAMPLES;

/// Element types of the arrays besides f32 buffers: image bytes, words (an epoch's image order,
/// the training clock, counts, tables of device addresses) and f64 sums.
pub trait Elem:
    Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + Unpin + 'static + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}
impl Elem for u8 {}
impl Elem for u32 {}
impl Elem for u64 {}
impl Elem for f64 {}

/// The training clock's words (see kernels/common.cuh): the update step, the batch within the
/// epoch, the epoch. The step advances it, so nothing per step comes from the host.
pub mod clock {
    pub use super::kernels::launch::{CLOCK_BATCH as BATCH, CLOCK_EPOCH as EPOCH, CLOCK_WORDS as WORDS};

    /// The update step held by `words`.
    pub fn step(words: &[u32]) -> u64 {
        ((words[super::kernels::launch::CLOCK_STEP_HI as usize] as u64) << 32)
            | words[super::kernels::launch::CLOCK_STEP_LO as usize] as u64
    }

    /// A clock at update `step`, epoch 0, batch 0.
    pub fn at(step: u64) -> Vec<u32> {
        let mut w = vec![0u32; WORDS as usize];
        w[super::kernels::launch::CLOCK_STEP_LO as usize] = step as u32;
        w[super::kernels::launch::CLOCK_STEP_HI as usize] = (step >> 32) as u32;
        w
    }
}

/// How a Bernoulli layer turns its uniforms `u` into samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleMode {
    /// z = 1[u < p].
    Standard,
    /// DisARM's pair from one uniform: z = 1[1 - u < p] and its antithetic twin 1[u < p].
    Antithetic,
}

/// What [`Backend::matmul_backward_input`] adds its product to.
#[derive(Debug)]
pub enum GemmInit<'a, Buf> {
    Zero,
    /// A row (k) added to every row.
    Broadcast(&'a Buf),
    /// The output's own values (accumulate).
    Keep,
}

impl<Buf> Clone for GemmInit<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Buf> Copy for GemmInit<'_, Buf> {}

/// What the score-function estimators multiply the per-row coefficient by, per unit.
#[derive(Clone, Copy, Debug)]
pub enum ScoreAlt<'a, Buf> {
    /// REINFORCE: (z - p), i.e. the score (2z-1)/π(z) times p(1-p).
    Mean,
    /// Leave-one-out with a second sample z': (z - z').
    Sample(&'a Buf),
    /// DisARM with the antithetic sample z̃: (z - z̃)·σ(|a|).
    Antithetic(&'a Buf),
}

/// The hindsight inputs for HNCA's per-unit credit of encoder layer `l` (parent units Φ).
/// Row totals are read from the terms table (`terms` is (b, t)) at the given columns.
pub struct HncaInputs<'a, Buf> {
    /// out = (accumulate ? out : 0) + scale·p(1-p)·G: HNCA with K samples averages its chains.
    pub scale: f32,
    pub accumulate: bool,
    /// Encoder logits of layer l, (b, p).
    pub logits: &'a Buf,
    /// Sampled z_l, (b, p).
    pub z: &'a Buf,
    /// Change in log p(z_{l-1} | z_l) when unit k is flipped, (b, p); actual: terms[:, col_dec].
    pub flip_dec: &'a Buf,
    pub col_dec: usize,
    /// Logits of the generative term that scores z_l: p(z_l | z_{l+1}) as (b, p), or the prior
    /// as (p) when `gen_is_prior`. Its row total log p(z_l | ·) is terms[:, col_gen].
    pub gen_logits: &'a Buf,
    pub gen_is_prior: bool,
    pub col_gen: usize,
    /// Encoder layer l+1 (the stochastic children), absent for the top layer.
    pub above: Option<HncaAbove<'a, Buf>>,
    /// Per-row reward R_l - b̄_l, (b) from element `reward_offset` of `reward`.
    pub reward: &'a Buf,
    pub reward_offset: usize,
    pub terms: &'a Buf,
    pub t: usize,
    pub all_child: bool,
}

pub struct HncaAbove<'a, Buf> {
    /// Change in log q(z_{l+1} | z_l) when unit k is flipped, (b, p): ± log P_0 - log P_1.
    pub flip_lp: &'a Buf,
    /// Change in H(q_{l+1} | z_l) when unit k is flipped, (b, p); actual: terms[:, col_ent].
    pub flip_ent: &'a Buf,
    pub col_ent: usize,
}

/// How [`Backend::k_score_unit_grad`] combines a layer's K chains (docs/estimators.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KScoreMode {
    /// REINFORCE with the leave-one-out baseline: ent + (1/(K-1)) Σ_k (F_k - F̄) z_k.
    Loo = 0,
    /// ARMS: the leave-one-out term times p(1-p)/(p - J(p)), J the pairwise joint of two draws.
    Arms = 1,
    /// Double control variates: plus α·[(1/(K-1)) Σ_k (c_k - c̄) z_k - (Σ_k ∇F_k / K)·p(1-p)],
    /// c_k = ḡ_{-k}·(z_k - p).
    DoubleCv = 2,
    /// RODEO: plus α·B + β·C, the Gibbs-Stein control variates of the baseline and of the
    /// gradient, built from a learned control network (kernels/ksample.cu).
    Rodeo = 3,
}

/// The inputs of [`Backend::k_score_unit_grad`] for one encoder layer of width n.
pub struct KScoreInputs<'a, Buf> {
    pub mode: KScoreMode,
    /// Encoder logits of the layer (shared by its chains), (b, n).
    pub logits: &'a Buf,
    /// The K chains' samples of the layer, each (b, n); chain 0 is the main sample.
    pub z: &'a [&'a Buf],
    /// (K, b): row 0 F_l of the main chain (used by RODEO), row j F_l(chain j) - F_l(main).
    pub rows: &'a Buf,
    /// Double CV and RODEO: ∇_{z_l} F_l of each chain, each (b, n); empty otherwise.
    pub grad_f: &'a [&'a Buf],
    /// Double CV and RODEO: the layer's learned values (α; RODEO: α, β and its control network);
    /// absent otherwise.
    pub coef: Option<&'a Buf>,
    /// Double CV and RODEO: the factor that turns Σ_d g_d·∂g_d/∂value into the ascent direction
    /// of a learned value on the variance loss (-2/(n·L): the loss is the mean of g² over units
    /// and layers).
    pub loss_scale: f32,
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
    use super::kernels::launch as k;
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

/// f32s of the scratch a credit pass over weights (p, c) needs for its tables (e^±W, W padded to
/// whole lane groups, and each parent's renormalisation interval).
pub fn credit_tables_len(p: usize, c: usize) -> usize {
    cpu::credit_tables_len(p, c)
}

/// Slots of gradient-variance partial sums (4 f64 each) that one layer's
/// [`Backend::grad_variance`] writes: one per row, then one per chunk of its weights and biases.
pub fn grad_variance_slots(b: usize, k: usize, n: usize) -> usize {
    b + (k * n + n).div_ceil(kernels::launch::GV_CHUNK as usize)
}

/// Slots of gradient-variance partial sums that [`Backend::sample_grad_variance`] writes for a
/// layer of `nw` weights and `nb` biases: one per row, then one per chunk of its parameters.
pub fn sample_grad_variance_slots(b: usize, nw: usize, nb: usize) -> usize {
    b + (nw + nb).div_ceil(kernels::launch::GV_CHUNK as usize)
}

/// One convolution's shape: inputs (b, height, width, c_in) in channels-last order, `c_out`
/// filters of k×k, stride 1 and no padding ("VALID"), so outputs are (b, height - k + 1,
/// width - k + 1, c_out). Weights are (k, k, c_in, c_out): one tap's weights to every output
/// channel are contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub height: usize,
    pub width: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
}

impl ConvGeom {
    pub fn out_height(&self) -> usize {
        self.height + 1 - self.k
    }
    pub fn out_width(&self) -> usize {
        self.width + 1 - self.k
    }
    /// Values of one example's input.
    pub fn in_len(&self) -> usize {
        self.height * self.width * self.c_in
    }
    /// Values of one example's output.
    pub fn out_len(&self) -> usize {
        self.out_height() * self.out_width() * self.c_out
    }
    /// Values of one filter tap's patch, k·k·c_in: a row of im2col.
    pub fn patch(&self) -> usize {
        self.k * self.k * self.c_in
    }
    pub fn weights(&self) -> usize {
        self.patch() * self.c_out
    }
}

pub trait Backend {
    /// Buffers are Send and Sync so that a batch of runs ([`runs::Runs`]) can hand each run's
    /// slices to a thread of its own.
    type Buf: Send + Sync;
    /// Arrays of the other element types.
    type Array<T: Elem>: Send + Sync;
    /// A recorded step (a CUDA graph), replayed by [`Backend::replay`].
    type Graph: Send;

    fn zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, host: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// Overwrite `dst` (same length) with host data.
    fn write(&self, dst: &mut Self::Buf, host: &[f32]);
    fn array<T: Elem>(&self, host: &[T]) -> Self::Array<T>;
    fn read_array<T: Elem>(&self, a: &Self::Array<T>) -> Vec<T>;
    fn write_array<T: Elem>(&self, a: &mut Self::Array<T>, host: &[T]);

    /// Whether reading from the backend's memory is free (the CPU), or waits for a device.
    fn host_reads_are_free(&self) -> bool {
        true
    }

    /// How many runs every buffer holds ([`runs::Runs`]): each operation then acts on every
    /// run's own slice of its buffers, with the shapes it is given being one run's. `zeros`,
    /// `upload`, `write`, `array` and `write_array` give every run the same values; `download`,
    /// `read_array` and `term_means` return the runs' values one run after another.
    fn runs(&self) -> usize {
        1
    }
    /// Brackets one operation of a batch of `runs` runs ([`runs::Runs`]): between `begin_runs`
    /// and `end_runs` the runs issue the operation one after another, each after `next_run`, and
    /// a device may hold their launches back and merge the i-th launch of every run into one
    /// launch over a grid dimension of runs. Nothing is read back in between.
    fn begin_runs(&self, runs: usize) {
        let _ = runs;
    }
    fn next_run(&self) {}
    fn end_runs(&self) {}
    /// Overwrites run `r`'s slice of `dst` with host data (one run's length).
    fn write_run(&self, dst: &mut Self::Buf, r: usize, host: &[f32]) {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.write(dst, host)
    }
    /// Run `r`'s slice of `buf`.
    fn download_run(&self, buf: &Self::Buf, r: usize) -> Vec<f32> {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.download(buf)
    }
    fn write_array_run<T: Elem>(&self, a: &mut Self::Array<T>, r: usize, host: &[T]) {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.write_array(a, host)
    }
    fn read_array_run<T: Elem>(&self, a: &Self::Array<T>, r: usize) -> Vec<T> {
        assert_eq!(r, 0, "a backend of one run has only run 0");
        self.read_array(a)
    }

    /// Starts recording the operations that follow instead of running them (stream capture);
    /// false where the backend does not record, and then they run as they are called.
    fn begin_recording(&self) -> bool {
        false
    }
    /// Ends a recording begun by `begin_recording` and makes it replayable.
    fn end_recording(&self) -> Result<Self::Graph, String>;
    /// Runs a recorded sequence again.
    fn replay(&self, graph: &Self::Graph);

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

    /// out (b, n) = inp (b, k) · w (k, n) + bias (n).
    fn matmul_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, k: usize, n: usize);
    /// dw (k, n) = inpᵀ (k, b) · dout (b, n) / b: the batch mean of per-example outer products.
    fn matmul_backward_weight(&self, dw: &mut Self::Buf, inp: &Self::Buf, dout: &Self::Buf, b: usize, k: usize, n: usize);
    /// din (b, k) = dout (b, n) · wᵀ, w (k, n), plus `init` ([`GemmInit`]): nothing, a row
    /// (k) broadcast to every row, or what din held.
    fn matmul_backward_input(
        &self,
        din: &mut Self::Buf,
        dout: &Self::Buf,
        w: &Self::Buf,
        init: GemmInit<'_, Self::Buf>,
        b: usize,
        k: usize,
        n: usize,
    );
    /// out (n) = mean over rows of x (b, n).
    fn column_mean(&self, out: &mut Self::Buf, x: &Self::Buf, b: usize, n: usize);

    /// out (b, oh, ow, c_out) = max(0, x ⊛ w + bias): a convolution of `g`'s shape and a ReLU.
    /// x (b, height, width, c_in), w (k, k, c_in, c_out), bias (c_out).
    fn conv_relu_forward(&self, out: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, g: ConvGeom);
    /// dx (b, height, width, c_in): the gradient that reaches a convolution's input from the
    /// gradient dout (b, oh, ow, c_out) of its output (before the ReLU). w (k, k, c_in, c_out).
    fn conv_backward_input(&self, dx: &mut Self::Buf, dout: &Self::Buf, w: &Self::Buf, b: usize, g: ConvGeom);
    /// A convolution's per-example gradients from dout (b, oh, ow, c_out), the gradient of its
    /// output before the ReLU: gw (b, k·k·c_in·c_out), row r = Σ over output positions of x's
    /// patch there times dout[r, position, :]; gb (b, c_out) = Σ over positions of dout[r].
    /// x (b, height, width, c_in). Their column means are the batch's gradients.
    fn conv_sample_grads(&self, gw: &mut Self::Buf, gb: &mut Self::Buf, x: &Self::Buf, dout: &Self::Buf, b: usize, g: ConvGeom);
    /// g (n) = 0 wherever act (n), a ReLU's output, is not positive: the gradient through it.
    fn relu_backward(&self, g: &mut Self::Buf, act: &Self::Buf, n: usize);

    /// Fused Bernoulli layer: z (b, n) from logits (b, n) with u = key.uniform(row·n + j) and
    /// p = clip(σ(logit)), the key's step advanced by the clock's when there is one. With
    /// `SampleMode::Antithetic`, `anti` (b, n) gets DisARM's twin.
    fn bernoulli_sample(
        &self,
        z: &mut Self::Buf,
        anti: Option<&mut Self::Buf>,
        logits: &Self::Buf,
        key: RngKey,
        clock: Option<&Self::Array<u32>>,
        mode: SampleMode,
        b: usize,
        n: usize,
    );
    /// terms[r, col] = Σ_j log π(targets[r, j] | logits[r, j]), logits (b, n) or (n) when
    /// `broadcast`; targets (b, n) in {0, 1}; terms is (b, t). With `base = Some((logits0,
    /// targets0))` (shaped alike), the sum of per-element differences from that pair instead:
    /// Σ_j [log π(targets | logits) - log π(targets0 | logits0)], so that two chains' terms are
    /// compared without subtracting two large f32 totals.
    fn log_prob_rows(
        &self,
        terms: &mut Self::Buf,
        t: usize,
        col: usize,
        logits: &Self::Buf,
        broadcast: bool,
        targets: &Self::Buf,
        base: Option<(&Self::Buf, &Self::Buf)>,
        b: usize,
        n: usize,
    );
    /// terms[r, col] = Σ_j H(Bernoulli(σ(logits[r, j]))), logits (b, n); with `base`, the sum of
    /// per-element differences Σ_j [H(σ(logits)) - H(σ(base))].
    fn entropy_rows(&self, terms: &mut Self::Buf, t: usize, col: usize, logits: &Self::Buf, base: Option<&Self::Buf>, b: usize, n: usize);
    /// out (m, b) = Σ_c coef[j, c] · terms[:, c] for each row j of coef (m, t), less
    /// `baselines[i]` with `baseline = Some((baselines, i))`; `coef` is a constant (a device
    /// uploads each distinct one once) of m·t values.
    fn weighted_row_sum(
        &self,
        out: &mut Self::Buf,
        terms: &Self::Buf,
        coef: &[f32],
        baseline: Option<(&Self::Buf, usize)>,
        b: usize,
        t: usize,
    );
    /// The column means of terms (b, t), brought to the host (evaluation; a training step keeps
    /// them on the device, [`Backend::step_stats`]).
    fn term_means(&self, terms: &Self::Buf, b: usize, t: usize) -> Vec<f64>;

    /// The fused credit pass. For every row r and parent unit i, with child logits shifted by
    /// flipping parent i (Δ = w[i, c]·(1 - 2·parent[r, i])), the change that flip makes:
    ///   flip_lp[r, i]  = Σ_c [log π(child[r, c] | child_logits[r, c] + Δ) - log π(child[r, c] | child_logits[r, c])]
    ///   flip_ent[r, i] = Σ_c [H(σ(child_logits[r, c] + Δ)) - H(σ(child_logits[r, c]))]   (when requested)
    /// Computed in product form (see src/backend/cpu/credit.rs): -log Π_c of one multiply-add
    /// per edge, with e^±W once per call into `tables` ([`credit_tables_len`] f32s of scratch).
    /// parent (b, p), w (p, c), child_logits (b, c), child (b, c); outputs (b, p).
    /// Never materialises the (b, c, p) tensor.
    fn credit_pass(
        &self,
        flip_lp: &mut Self::Buf,
        flip_ent: Option<&mut Self::Buf>,
        parent: &Self::Buf,
        w: &Self::Buf,
        tables: &mut Self::Buf,
        child_logits: &Self::Buf,
        child: &Self::Buf,
        b: usize,
        p: usize,
        c: usize,
    );

    /// HNCA's logit gradient for every unit of one encoder layer: out (b, p) = p(1-p)·G.
    fn hnca_unit_grad(&self, out: &mut Self::Buf, inp: &HncaInputs<'_, Self::Buf>, b: usize, p: usize);
    /// Score-function logit gradient, out (b, n) = p(1-p)·log((1-p)/p) + coef[r]·(z - alt)·scale,
    /// for REINFORCE, leave-one-out and DisARM (see [`ScoreAlt`]); coef is (b).
    fn score_unit_grad(
        &self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        z: &Self::Buf,
        alt: ScoreAlt<'_, Self::Buf>,
        coef: &Self::Buf,
        b: usize,
        n: usize,
    );
    /// out (b, n) = targets - σ(logits): the exact logit gradient of a Bernoulli log-likelihood.
    /// logits (b, n), or (n) when `broadcast` (the prior).
    fn bernoulli_delta(&self, out: &mut Self::Buf, logits: &Self::Buf, broadcast: bool, targets: &Self::Buf, b: usize, n: usize);

    /// out (b, n) = -a σ(a) σ(-a) for a = logits (b, n): the logit derivative of H(σ(a)).
    fn entropy_grad(&self, out: &mut Self::Buf, logits: &Self::Buf, b: usize, n: usize);

    /// ARMS's K antithetic samples of a layer (Dimitriev & Zhou 2021): for each element, the
    /// spacings d of K-1 sorted uniforms `key.uniform(i·(K-1) + s)` (a Dirichlet(1,…,1) draw),
    /// U_k = (1 - d_k)^{K-1} (each uniform), and z_k = [U_k < p] for p = clip(σ(logit)) < ½,
    /// else [1 - U_k < p]. zs holds K outputs (b, n); logits (b, n).
    fn arms_sample(&self, zs: &mut [&mut Self::Buf], logits: &Self::Buf, key: RngKey, clock: Option<&Self::Array<u32>>, b: usize, n: usize);

    /// The logit gradient of a K-sample score-function estimator (see [`KScoreMode`]), out (b, n),
    /// and for the estimators that learn their control variates the per-row ascent directions of
    /// the learned values, `cv_partials` (b, values): loss_scale · Σ_d g_d · ∂g_d/∂value.
    fn k_score_unit_grad(
        &self,
        out: &mut Self::Buf,
        cv_partials: Option<&mut Self::Buf>,
        inp: &KScoreInputs<'_, Self::Buf>,
        b: usize,
        n: usize,
    );

    /// y (n) += a · x: a plain gradient-ascent step (SGD for the prior).
    fn axpy(&self, y: &mut Self::Buf, a: f32, x: &Self::Buf, n: usize);

    /// out (n) = logits clamped to ±CLIP_LOGIT, so that σ(out) is the clipped probability that
    /// `bernoulli_sample` draws with: log π(z | out) is z's log-probability under the sampler.
    fn clip_logits(&self, out: &mut Self::Buf, logits: &Self::Buf, n: usize);

    /// out (n) = scale·x + shift elementwise: centring bits to ±1 (2z - 1), or doubling the
    /// weights that a centred parent's flip moves its children's logits by (2W).
    fn affine(&self, out: &mut Self::Buf, x: &Self::Buf, scale: f32, shift: f32, n: usize);
    /// The bandit's action and reward: for each row r, action[r] drawn from softmax(logits[r])
    /// by inverse CDF with uniform r of `key`, and reward[r] = 1 if action[r] == labels[r] else 0.
    /// action, reward and labels are (b) (actions and labels as f32 integers); logits (b, a).
    fn softmax_act(
        &self,
        action: &mut Self::Buf,
        reward: &mut Self::Buf,
        logits: &Self::Buf,
        labels: &Self::Buf,
        key: RngKey,
        clock: Option<&Self::Array<u32>>,
        b: usize,
        a: usize,
    );
    /// REINFORCE for the softmax output: dout (b, a) = (onehot(action[r]) - softmax(logits[r]))·coef[r].
    fn softmax_score(&self, dout: &mut Self::Buf, logits: &Self::Buf, action: &Self::Buf, coef: &Self::Buf, b: usize, a: usize);
    /// The credit pass into a softmax child: flip (b, p) = log π(action | parent i flipped) -
    /// log π(action), where flipping parent i moves the logits (b, a) by (1 - 2·parent[r, i])·w2[i, :]
    /// (w2 is (p, a): twice the weights for centred parents). In product form, as the Bernoulli
    /// children's: d·w2[i, action] - log Σ_j π_j·e^{d·w2[i, j]}, with e^{±w2} tabled once per call
    /// into `tables` ([`credit_tables_len`]`(p, a)` f32s of scratch).
    fn softmax_credit(
        &self,
        flip: &mut Self::Buf,
        parent: &Self::Buf,
        w2: &Self::Buf,
        tables: &mut Self::Buf,
        logits: &Self::Buf,
        action: &Self::Buf,
        b: usize,
        p: usize,
        a: usize,
    );
    /// A hidden bandit unit's logit gradient, out (b, n): HNCA, p(1-p)·(ρ_1 - ρ_0)·coef[r], with the
    /// hindsight ratios from `flip` (the change in the children's log-likelihood when the unit
    /// flips); or REINFORCE, (z - p)·coef[r], without it. With `rho_gradient` (HNCA only), the
    /// biased variant that also differentiates ρ with respect to p: p(1-p)·(ρ_1 - ρ_0)·ρ_0·coef[r]
    /// (d/dp of p·(ρ_1 - ρ_0) with P_0, P_1 fixed is (ρ_1 - ρ_0)·ρ_0).
    fn bandit_unit_grad(
        &self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        z: &Self::Buf,
        flip: Option<&Self::Buf>,
        rho_gradient: bool,
        coef: &Self::Buf,
        b: usize,
        n: usize,
    );

    /// The partial sums from which [`Backend::step_stats`] finishes one layer's gradient
    /// variance (Σ over its k·n + n parameters of the across-batch variance of the per-example
    /// estimates inp[r]ᵀ g[r] and g[r], given the batch means dw (k, n) and db (n)), into
    /// `grad_variance_slots(b, k, n)` slots of `partials` from `first_slot`: Σ_r |inp_r|²|g_r|²,
    /// Σ_r |g_r|², |dw|², |db|², in any split over the slots. inp (b, k), g (b, n).
    fn grad_variance(
        &self,
        partials: &mut Self::Array<f64>,
        first_slot: usize,
        inp: &Self::Buf,
        g: &Self::Buf,
        dw: &Self::Buf,
        db: &Self::Buf,
        b: usize,
        k: usize,
        n: usize,
    );

    /// The same partial sums for a layer whose per-example gradients are given whole: gw (b, nw)
    /// and gb (b, nb), with their batch means dw (nw) and db (nb); Σ_r |gw_r|², Σ_r |gb_r|²,
    /// |dw|², |db|² into [`sample_grad_variance_slots`]`(b, nw, nb)` slots from `first_slot`.
    fn sample_grad_variance(
        &self,
        partials: &mut Self::Array<f64>,
        first_slot: usize,
        gw: &Self::Buf,
        gb: &Self::Buf,
        dw: &Self::Buf,
        db: &Self::Buf,
        b: usize,
        nw: usize,
        nb: usize,
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

    /// The first failure of a device operation since the last check (a GPU backend records
    /// driver errors instead of panicking in the middle of a step).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
