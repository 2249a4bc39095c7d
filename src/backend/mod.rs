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

use crate::rng::RngKey;

/// How a Bernoulli layer turns its uniforms `u` into samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleMode {
    /// z = 1[u < p].
    Standard,
    /// DisARM's pair from one uniform: z = 1[1 - u < p] and its antithetic twin 1[u < p].
    Antithetic,
}

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
    /// Per-row reward R_l - b̄_l, (b).
    pub reward: &'a Buf,
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

/// Adam's hyper-parameters for one update (t counts from 1).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub t: u64,
}

pub trait Backend {
    type Buf;

    fn zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, host: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    /// Overwrite `dst` (same length) with host data.
    fn write(&self, dst: &mut Self::Buf, host: &[f32]);

    /// out (b, n) = inp (b, k) · w (k, n) + bias (n).
    fn matmul_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, k: usize, n: usize);
    /// dw (k, n) = inpᵀ (k, b) · dout (b, n) / b: the batch mean of per-example outer products.
    fn matmul_backward_weight(&self, dw: &mut Self::Buf, inp: &Self::Buf, dout: &Self::Buf, b: usize, k: usize, n: usize);
    /// out (n) = mean over rows of x (b, n).
    fn column_mean(&self, out: &mut Self::Buf, x: &Self::Buf, b: usize, n: usize);

    /// Fused Bernoulli layer: z (b, n) from logits (b, n) with u = key.uniform(row·n + j) and
    /// p = clip(σ(logit)). With `SampleMode::Antithetic`, `anti` (b, n) gets DisARM's twin.
    fn bernoulli_sample(
        &self,
        z: &mut Self::Buf,
        anti: Option<&mut Self::Buf>,
        logits: &Self::Buf,
        key: RngKey,
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
    /// out (b) = Σ_c coef[c] · terms[:, c] + offset; `coef` has length t.
    fn weighted_row_sum(&self, out: &mut Self::Buf, terms: &Self::Buf, coef: &[f32], offset: f32, b: usize, t: usize);
    /// The column means of terms (b, t), brought to the host (the per-step metrics).
    fn term_means(&self, terms: &Self::Buf, b: usize, t: usize) -> Vec<f64>;

    /// The fused credit pass. For every row r and parent unit i, with child logits shifted by
    /// flipping parent i (Δ = w[i, c]·(1 - 2·parent[r, i])), the change that flip makes:
    ///   flip_lp[r, i]  = Σ_c [log π(child[r, c] | child_logits[r, c] + Δ) - log π(child[r, c] | child_logits[r, c])]
    ///   flip_ent[r, i] = Σ_c [H(σ(child_logits[r, c] + Δ)) - H(σ(child_logits[r, c]))]   (when requested)
    /// Summing per-child differences keeps HNCA's credit free of cancellation in f32.
    /// parent (b, p), w (p, c), child_logits (b, c), child (b, c); outputs (b, p).
    /// Never materialises the (b, c, p) tensor.
    fn credit_pass(
        &self,
        flip_lp: &mut Self::Buf,
        flip_ent: Option<&mut Self::Buf>,
        parent: &Self::Buf,
        w: &Self::Buf,
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
        b: usize,
        a: usize,
    );
    /// REINFORCE for the softmax output: dout (b, a) = (onehot(action[r]) - softmax(logits[r]))·coef[r].
    fn softmax_score(&self, dout: &mut Self::Buf, logits: &Self::Buf, action: &Self::Buf, coef: &Self::Buf, b: usize, a: usize);
    /// The credit pass into a softmax child: flip (b, p) = log π(action | parent i flipped) -
    /// log π(action), where flipping parent i moves the logits (b, a) by (1 - 2·parent[r, i])·w2[i, :]
    /// (w2 is (p, a): twice the weights for centred parents).
    fn softmax_credit(
        &self,
        flip: &mut Self::Buf,
        parent: &Self::Buf,
        w2: &Self::Buf,
        logits: &Self::Buf,
        action: &Self::Buf,
        b: usize,
        p: usize,
        a: usize,
    );
    /// A hidden bandit unit's logit gradient, out (b, n): HNCA, p(1-p)·(ρ_1 - ρ_0)·coef[r], with the
    /// hindsight ratios from `flip` (the change in the children's log-likelihood when the unit
    /// flips); or REINFORCE, (z - p)·coef[r], without it.
    fn bandit_unit_grad(
        &self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        z: &Self::Buf,
        flip: Option<&Self::Buf>,
        coef: &Self::Buf,
        b: usize,
        n: usize,
    );

    /// Σ over the (k·n + n) parameters of one layer of the across-batch variance of the
    /// per-example gradient estimates (inp[r]ᵀ g[r] for weights, g[r] for biases), given the
    /// batch means dw (k, n) and db (n). Returns (weight sum, bias sum).
    fn grad_variance_sums(
        &self,
        inp: &Self::Buf,
        g: &Self::Buf,
        dw: &Self::Buf,
        db: &Self::Buf,
        b: usize,
        k: usize,
        n: usize,
    ) -> (f64, f64);

    /// Adam ascent step on one tensor: param += lr·m̂/(√v̂ + ε).
    fn adam(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, hp: AdamStep);

    /// The first failure of a device operation since the last check (a GPU backend records
    /// driver errors instead of panicking in the middle of a step).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
