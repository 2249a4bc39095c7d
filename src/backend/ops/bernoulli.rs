//! Bernoulli layers: sampling, per-row log-likelihoods and entropies, their logit gradients.

use crate::backend::MemoryOps;
use crate::rng::RngKey;

/// How a Bernoulli layer turns its uniforms `u` into samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleMode {
    /// z = 1[u < p].
    Standard,
    /// DisARM's pair from one uniform: z = 1[1 - u < p] and its antithetic twin 1[u < p].
    Antithetic,
}

pub trait BernoulliOps: MemoryOps {
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

    /// out (b, n) = targets - σ(logits): the exact logit gradient of a Bernoulli log-likelihood.
    /// logits (b, n), or (n) when `broadcast` (the prior).
    fn bernoulli_delta(&self, out: &mut Self::Buf, logits: &Self::Buf, broadcast: bool, targets: &Self::Buf, b: usize, n: usize);

    /// out (b, n) = -a σ(a) σ(-a) for a = logits (b, n): the logit derivative of H(σ(a)).
    fn entropy_grad(&self, out: &mut Self::Buf, logits: &Self::Buf, b: usize, n: usize);

    /// out (n) = logits clamped to ±CLIP_LOGIT, so that σ(out) is the clipped probability that
    /// `bernoulli_sample` draws with: log π(z | out) is z's log-probability under the sampler.
    fn clip_logits(&self, out: &mut Self::Buf, logits: &Self::Buf, n: usize);
}
