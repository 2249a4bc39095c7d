//! Credit assignment: HNCA's credit pass and per-unit gradients, and the score-function
//! estimators' per-unit gradients.

use crate::backend::MemoryOps;

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

/// f32s of the scratch a credit pass over weights (p, c) needs for its tables (e^±W, W padded to
/// whole lane groups, and each parent's renormalisation interval).
pub fn credit_tables_len(p: usize, c: usize) -> usize {
    crate::backend::cpu::credit_tables_len(p, c)
}

pub trait CreditOps: MemoryOps {
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
}
