//! The encoder gradient estimators (docs/hnca.md §5, docs/estimators.md), their sample counts, and
//! the rewards each one uses.
//!
//! Every per-example reward is a weighted sum of columns of the terms table
//! ([`crate::model::Terms`]); this module says which columns, so the formulas live in one place
//! and a backend only needs a weighted row sum. It also owns the one parser of estimator names
//! (`loo`, `arms-k4`, `hnca+all-child-k2`, …) that the command line and the benchmarks share,
//! and the one place the options become a [`Plan`]: how each layer draws, how its samples
//! combine, the baseline and what is learned, which the step matches on. The bandit names its
//! estimators with the same [`EstimatorKind`] (a subset of it).

use super::model::Terms;
use crate::backend::consts::{RODEO_B2, RODEO_BX, RODEO_HIDDEN, RODEO_W2, RODEO_WX, RODEO_WZ};
use crate::rng::{stream, RngKey};

pub use crate::estimator::{AltTerms, Baseline, Combine, Estimator, EstimatorKind, LayerDraw, Plan, ScoreWith, MAX_K};

impl Estimator {
    /// The estimator with `samples` (None: the default) and flags, or a one-line reason why
    /// the combination is not an estimator.
    pub fn configure(kind: EstimatorKind, samples: Option<usize>, all_child: bool, full_reward: bool) -> Result<Self, String> {
        let mut est = Estimator { all_child, full_reward, ..Estimator::new(kind) };
        if (all_child || full_reward) && !matches!(kind, EstimatorKind::Hnca | EstimatorKind::HncaNb) {
            return Err(format!("--all-child and --full-reward are HNCA ablations; they do not apply to --estimator {}", kind.name()));
        }
        if let Some(k) = samples {
            if !kind.takes_samples() {
                return Err(format!(
                    "--samples applies to --estimator hnca, loo, arms, double-cv and rodeo, not {} (it uses {} sample{} per layer)",
                    kind.name(),
                    kind.default_samples(),
                    if kind.default_samples() == 1 { "" } else { "s" }
                ));
            }
            if !(2..=MAX_K).contains(&k) {
                return Err(format!("--samples must be 2 to {MAX_K} (samples per layer), got {k}"));
            }
            est.samples = k;
        }
        Ok(est)
    }

    /// Reads an estimator as [`Estimator::label`] writes it: a name, then `+all-child` and
    /// `+full-reward` for HNCA's ablations, then `-kK` for K samples per layer (`loo`,
    /// `arms-k4`, `hnca+all-child-k2`; `loo-k2` is `loo`). The one parser of estimator names,
    /// for the command line, the benchmarks and anything that reads metrics.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad = |why: String| format!("estimator \"{spec}\": {why}");
        let (rest, samples) = match spec.rsplit_once("-k") {
            Some((head, k)) if !k.is_empty() && k.bytes().all(|c| c.is_ascii_digit()) => {
                (head, Some(k.parse::<usize>().map_err(|_| bad(format!("{k} samples is too many")))?))
            }
            _ => (spec, None),
        };
        let mut parts = rest.split('+');
        let name = parts.next().unwrap_or_default();
        let kind = EstimatorKind::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = EstimatorKind::ALL.iter().map(|k| k.name()).collect();
            bad(format!("unknown name \"{name}\" (expected one of {})", names.join(", ")))
        })?;
        let (mut all_child, mut full_reward) = (false, false);
        for flag in parts {
            match flag {
                "all-child" => all_child = true,
                "full-reward" => full_reward = true,
                _ => return Err(bad(format!("unknown flag \"+{flag}\" (expected +all-child or +full-reward)"))),
            }
        }
        let samples = samples.filter(|&k| !(k == kind.default_samples() && kind != EstimatorKind::Hnca));
        Estimator::configure(kind, samples, all_child, full_reward).map_err(bad)
    }

    /// The block of the terms table (and the index of `Workspace::alt`) of alternative chain j
    /// (1 ≤ j < K) of layer l: 1 + (l-1)(K-1) + (j-1). With two samples, block l.
    pub fn alt_block(&self, l: usize, j: usize) -> usize {
        1 + (l - 1) * (self.samples - 1) + (j - 1)
    }

    /// ELBO evaluations per training example in one step, counting every chain sampled: the
    /// main chain, plus K - 1 alternative chains per layer (DisARM's one). The cost measure of
    /// equal-cost comparisons (a single-layer DisARM step is 2).
    pub fn evaluations(&self, depth: usize) -> u64 {
        1 + ((self.samples - 1) * depth) as u64
    }

    /// The name with its flags and sample count, as written to the metrics; [`Estimator::parse`]
    /// reads it back. The count is shown where it is not the estimator's default.
    pub fn label(&self) -> String {
        let mut s = self.kind.name().to_string();
        if self.all_child {
            s.push_str("+all-child");
        }
        if self.full_reward {
            s.push_str("+full-reward");
        }
        if self.samples != self.kind.default_samples() {
            s.push_str(&format!("-k{}", self.samples));
        }
        s
    }

    /// Coefficients of the per-row reward that multiplies the score of encoder layer l
    /// (before the baseline is subtracted), for the estimators with one sample and DisARM.
    ///
    /// - HNCA: R_l = [l<L] log p(z_L) + Σ_{m=l+2}^{L} [log p(z_{m-1}|z_m) + H(q_m|z_{m-1})],
    ///   plus, with `full_reward`, every term upstream of z_l: H(q_m) for m ≤ l and
    ///   log p(z_{m-1}|z_m) for m < l.
    /// - REINFORCE: F_l = Σ_{m≥l} log p(z_{m-1}|z_m) + log p(z_L) + Σ_{m>l} H(q_m|z_{m-1}).
    /// - DisARM: ½(F_l(main) - F_l(alternative chain l)) = -½ Σ of block l, whose columns hold
    ///   the alternative chain's terms minus the main chain's.
    pub fn reward_coef(&self, terms: &Terms, l: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; terms.width()];
        match self.kind {
            EstimatorKind::Hnca | EstimatorKind::HncaNb => add_hnca_reward(&mut c, terms, 0, l, self.full_reward),
            EstimatorKind::Reinforce | EstimatorKind::ReinforceNb => add_downstream(&mut c, terms, 0, l, 1.0),
            _ => add_downstream(&mut c, terms, self.alt_block(l, 1), l, -0.5),
        }
        c
    }

    /// Coefficients of the quantity whose batch mean the baseline of layer l tracks.
    /// HNCA: R_l + [l<L] log p(z_l | z_{l+1}), and with `all_child` also the terms that take Φ as
    /// input, H(q_{l+1} | z_l) and log p(z_{l-1} | z_l). REINFORCE: F_l.
    pub fn baseline_coef(&self, terms: &Terms, l: usize) -> Vec<f32> {
        let mut c = self.reward_coef(terms, l);
        if matches!(self.kind, EstimatorKind::Hnca | EstimatorKind::HncaNb) {
            add_hnca_target_extra(&mut c, terms, 0, l, self.all_child);
        }
        c
    }

    /// The initial learned values of encoder layer l ([`Plan::learned`] of them): α = β = 0,
    /// and RODEO's network as Keras initialises the official one (Glorot-uniform kernels,
    /// U(±√(6/(fan_in + fan_out))), zero biases), drawn from Philox so every backend starts alike.
    pub fn initial_learned(&self, l: usize, seed: u64) -> Vec<f32> {
        let mut v = vec![0.0f32; self.plan().learned];
        if self.kind == EstimatorKind::Rodeo {
            let h = RODEO_HIDDEN as usize;
            let key = RngKey::new(seed, 0, stream::rodeo_init(l as u32));
            key.fill_uniform(0, &mut v[RODEO_WX as usize..RODEO_BX as usize]);
            key.fill_uniform(h as u32, &mut v[RODEO_WZ as usize..RODEO_WZ as usize + h]);
            key.fill_uniform(2 * h as u32, &mut v[RODEO_W2 as usize..RODEO_B2 as usize]);
            let (first, second) = ((6.0f32 / (1 + h) as f32).sqrt(), (6.0f32 / (h + 2) as f32).sqrt());
            let scale = |v: &mut [f32], r: f32| v.iter_mut().for_each(|u| *u = (2.0 * *u - 1.0) * r);
            scale(&mut v[RODEO_WX as usize..RODEO_BX as usize], first);
            scale(&mut v[RODEO_WZ as usize..RODEO_WZ as usize + h], first);
            scale(&mut v[RODEO_W2 as usize..RODEO_B2 as usize], second);
        }
        v
    }

    /// The per-chain rows of layer l for the K-sample estimators, (K, t) row-major: the weights
    /// whose row sums [`crate::backend::Backend::weighted_row_sum`] turns into (K, b).
    ///
    /// - Score-function estimators (alternative blocks hold differences): row 0 is F_l of the
    ///   main chain (RODEO's control function needs its value; zero otherwise), row j ≥ 1 is
    ///   F_l(chain j) - F_l(main).
    /// - HNCA with K samples (blocks hold values): row k is chain k's reward less its
    ///   leave-one-out baseline, R_l(k) - mean_{j≠k} T_l(j), with T_l the target the running
    ///   baseline would track ([`Estimator::baseline_coef`]). The terms `full_reward` adds are
    ///   upstream of layer l, shared by every chain, and cancel here exactly.
    pub fn chain_rows_coef(&self, terms: &Terms, l: usize) -> Vec<f32> {
        let (k, t) = (self.samples, terms.width());
        let block = |j: usize| if j == 0 { 0 } else { self.alt_block(l, j) };
        let mut c = vec![0.0f32; k * t];
        if matches!(self.kind, EstimatorKind::Hnca | EstimatorKind::HncaNb) {
            let inv = 1.0 / (k - 1) as f32;
            for (row, out) in c.chunks_mut(t).enumerate() {
                add_hnca_reward(out, terms, block(row), l, false);
                for j in (0..k).filter(|&j| j != row) {
                    let mut target = vec![0.0f32; t];
                    add_hnca_reward(&mut target, terms, block(j), l, false);
                    add_hnca_target_extra(&mut target, terms, block(j), l, self.all_child);
                    out.iter_mut().zip(&target).for_each(|(o, x)| *o -= inv * x);
                }
            }
        } else {
            for (row, out) in c.chunks_mut(t).enumerate() {
                if row > 0 || self.kind == EstimatorKind::Rodeo {
                    add_downstream(out, terms, block(row), l, 1.0);
                }
            }
        }
        c
    }
}

/// HNCA's R_l of the chain in `block`; with `full_reward`, plus the terms upstream of z_l.
fn add_hnca_reward(c: &mut [f32], terms: &Terms, block: usize, l: usize, full_reward: bool) {
    let depth = terms.depth;
    if l < depth {
        c[terms.prior_log_prob(block)] += 1.0;
    }
    for m in (l + 2)..=depth {
        c[terms.dec_log_prob(block, m)] += 1.0;
        c[terms.enc_entropy(block, m)] += 1.0;
    }
    if full_reward {
        for m in 1..=l {
            c[terms.enc_entropy(block, m)] += 1.0;
        }
        for m in 1..l {
            c[terms.dec_log_prob(block, m)] += 1.0;
        }
    }
}

/// What HNCA's baseline tracks beyond R_l: [l<L] log p(z_l | z_{l+1}), and with `all_child`
/// H(q_{l+1} | z_l) and log p(z_{l-1} | z_l).
fn add_hnca_target_extra(c: &mut [f32], terms: &Terms, block: usize, l: usize, all_child: bool) {
    if l < terms.depth {
        c[terms.dec_log_prob(block, l + 1)] += 1.0;
        if all_child {
            c[terms.enc_entropy(block, l + 1)] += 1.0;
            c[terms.dec_log_prob(block, l)] += 1.0;
        }
    }
}

/// F_l of one chain (block): log p(z_{l-1}|z_l) and everything from z_l upward, including the
/// encoder entropies above layer l.
fn add_downstream(c: &mut [f32], terms: &Terms, block: usize, l: usize, scale: f32) {
    for m in l..=terms.depth {
        c[terms.dec_log_prob(block, m)] += scale;
        if m > l {
            c[terms.enc_entropy(block, m)] += scale;
        }
    }
    c[terms.prior_log_prob(block)] += scale;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[f32]) -> Vec<(usize, f32)> {
        c.iter().enumerate().filter(|(_, &v)| v != 0.0).map(|(i, &v)| (i, v)).collect()
    }

    #[test]
    fn hnca_rewards_for_three_layers_match_the_spec() {
        let t = Terms { depth: 3, blocks: 1 };
        let e = Estimator::new(EstimatorKind::Hnca);
        // R_3 = 0, R_2 = log p(z3), R_1 = log p(z3) + log p(z2|z3) + H(q3|z2).
        assert!(cols(&e.reward_coef(&t, 3)).is_empty());
        assert_eq!(cols(&e.reward_coef(&t, 2)), vec![(t.prior_log_prob(0), 1.0)]);
        let mut want = vec![(t.enc_entropy(0, 3), 1.0), (t.dec_log_prob(0, 3), 1.0), (t.prior_log_prob(0), 1.0)];
        want.sort_by_key(|x| x.0);
        assert_eq!(cols(&e.reward_coef(&t, 1)), want);
    }

    #[test]
    fn reinforce_rewards_for_three_layers_match_the_spec() {
        let t = Terms { depth: 3, blocks: 1 };
        let e = Estimator::new(EstimatorKind::Reinforce);
        // F_3 = log p(z2|z3) + log p(z3); F_1 = ELBO - H(q1|x).
        assert_eq!(cols(&e.reward_coef(&t, 3)), vec![(t.dec_log_prob(0, 3), 1.0), (t.prior_log_prob(0), 1.0)]);
        let mut elbo_minus_h1 = t.elbo_coef();
        elbo_minus_h1[t.enc_entropy(0, 1)] = 0.0;
        assert_eq!(e.reward_coef(&t, 1), elbo_minus_h1);
    }

    #[test]
    fn full_reward_adds_exactly_the_upstream_terms() {
        let t = Terms { depth: 3, blocks: 1 };
        let plain = Estimator::new(EstimatorKind::Hnca);
        let full = Estimator { full_reward: true, ..plain };
        for l in 1..=3 {
            let diff: Vec<f32> = full.reward_coef(&t, l).iter().zip(plain.reward_coef(&t, l)).map(|(a, b)| a - b).collect();
            let mut want = vec![0.0; t.width()];
            for m in 1..=l {
                want[t.enc_entropy(0, m)] = 1.0;
            }
            for m in 1..l {
                want[t.dec_log_prob(0, m)] = 1.0;
            }
            assert_eq!(diff, want, "layer {l}");
        }
    }

    #[test]
    fn labels_and_the_parser_agree() {
        for kind in EstimatorKind::ALL {
            let ks: Vec<Option<usize>> = if kind.takes_samples() { vec![None, Some(2), Some(3), Some(MAX_K)] } else { vec![None] };
            for k in ks {
                for (all_child, full_reward) in [(false, false), (true, false), (true, true)] {
                    let Ok(est) = Estimator::configure(kind, k, all_child, full_reward) else { continue };
                    assert_eq!(Estimator::parse(&est.label()), Ok(est), "{}", est.label());
                }
            }
        }
        assert_eq!(Estimator::parse("loo-k2"), Ok(Estimator::new(EstimatorKind::Loo)));
        assert_eq!(Estimator::new(EstimatorKind::Loo).label(), "loo");
        assert_eq!(Estimator::parse("arms-k4").unwrap().samples, 4);
        assert_eq!(Estimator::parse("hnca-k2").unwrap().label(), "hnca-k2");
        assert_eq!(
            Estimator::parse("hnca+all-child-k3").unwrap(),
            Estimator { all_child: true, samples: 3, ..Estimator::new(EstimatorKind::Hnca) }
        );
        for bad in ["nope", "loo-k1", "disarm-k4", "reinforce-k2", "loo+all-child", "hnca+fast", "loo-k99999999999999999999", "hnca-nb-k2"]
        {
            let e = Estimator::parse(bad).unwrap_err();
            assert!(e.starts_with(&format!("estimator \"{bad}\": ")) && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn alternative_blocks_and_evaluations() {
        let loo4 = Estimator::configure(EstimatorKind::Loo, Some(4), false, false).unwrap();
        assert_eq!(
            (1..=3).flat_map(|l| (1..4).map(move |j| (l, j))).map(|(l, j)| loo4.alt_block(l, j)).collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
        assert_eq!(Estimator::new(EstimatorKind::Disarm).alt_block(2, 1), 2);
        assert_eq!(loo4.evaluations(3), 10);
        assert_eq!(Estimator::new(EstimatorKind::Disarm).evaluations(1), 2);
        assert_eq!(Estimator::new(EstimatorKind::Hnca).evaluations(3), 1);
    }

    #[test]
    fn hnca_k_rows_are_rewards_less_the_other_chains_mean_target() {
        let est = Estimator::configure(EstimatorKind::Hnca, Some(3), false, true).unwrap();
        let t = Terms { depth: 3, blocks: 1 + 3 * 2 };
        let w = t.width();
        let rows = est.chain_rows_coef(&t, 1);
        // Row 1 (chain 1, block 1): its R_1 minus half of chains 0's and 2's T_1.
        let r = &rows[w..2 * w];
        for (block, want) in [(1, 1.0), (0, -0.5), (2, -0.5)] {
            assert_eq!(r[t.prior_log_prob(block)], want, "prior of block {block}");
        }
        assert_eq!(r[t.dec_log_prob(1, 2)], 0.0, "T_1 of chain 1 is not subtracted from its own reward");
        assert_eq!(r[t.dec_log_prob(0, 2)], -0.5);
        // full_reward's upstream terms cancel: nothing on H(q_1).
        assert!(rows.chunks(w).all(|row| (0..t.blocks).all(|b| row[t.enc_entropy(b, 1)] == 0.0)));
    }
}
