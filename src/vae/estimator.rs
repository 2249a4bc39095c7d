//! The encoder gradient estimators (HNCA.md §4) and the rewards each one uses.
//!
//! Every per-example reward is a weighted sum of columns of the terms table
//! ([`crate::model::Terms`]); this module says which columns, so the formulas of §4 live in one
//! place and a backend only needs a weighted row sum.

use crate::backend::SampleMode;
use super::model::Terms;

/// Which estimator trains the encoder. The decoder and prior always get exact gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EstimatorKind {
    /// f-HNCA with a running-average baseline per layer.
    Hnca,
    /// f-HNCA without a baseline.
    HncaNb,
    /// REINFORCE restricted to the terms that depend on each layer, with a baseline per layer.
    Reinforce,
    /// REINFORCE without a baseline.
    ReinforceNb,
    /// REINFORCE leave-one-out with two samples per layer.
    Loo,
    /// DisARM: an antithetic pair per layer.
    Disarm,
}

impl EstimatorKind {
    pub fn name(self) -> &'static str {
        match self {
            EstimatorKind::Hnca => "hnca",
            EstimatorKind::HncaNb => "hnca-nb",
            EstimatorKind::Reinforce => "reinforce",
            EstimatorKind::ReinforceNb => "reinforce-nb",
            EstimatorKind::Loo => "loo",
            EstimatorKind::Disarm => "disarm",
        }
    }
    pub const ALL: [EstimatorKind; 6] = [
        EstimatorKind::Hnca,
        EstimatorKind::HncaNb,
        EstimatorKind::Reinforce,
        EstimatorKind::ReinforceNb,
        EstimatorKind::Loo,
        EstimatorKind::Disarm,
    ];
}

/// An estimator with its ablation flags (meaningful for HNCA only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimator {
    pub kind: EstimatorKind,
    /// Weight the "Φ as input" terms by the hindsight ratios too (the paper's `all_child`).
    pub all_child: bool,
    /// Add the terms upstream of each layer to its reward (the paper's `full_reward`).
    pub full_reward: bool,
}

impl Estimator {
    pub fn new(kind: EstimatorKind) -> Self {
        Estimator { kind, all_child: false, full_reward: false }
    }

    pub fn is_hnca(&self) -> bool {
        matches!(self.kind, EstimatorKind::Hnca | EstimatorKind::HncaNb)
    }

    pub fn uses_baseline(&self) -> bool {
        matches!(self.kind, EstimatorKind::Hnca | EstimatorKind::Reinforce)
    }

    /// How the alternative chains' first sample is drawn, for the estimators that need them.
    pub fn alternative(&self) -> Option<SampleMode> {
        match self.kind {
            EstimatorKind::Loo => Some(SampleMode::Standard),
            EstimatorKind::Disarm => Some(SampleMode::Antithetic),
            _ => None,
        }
    }

    /// The name with its flags, as written to the metrics.
    pub fn label(&self) -> String {
        let mut s = self.kind.name().to_string();
        if self.all_child {
            s.push_str("+all-child");
        }
        if self.full_reward {
            s.push_str("+full-reward");
        }
        s
    }

    /// Coefficients of the per-row reward that multiplies the score of encoder layer l
    /// (before the baseline is subtracted).
    ///
    /// - HNCA: R_l = [l<L] log p(z_L) + Σ_{m=l+2}^{L} [log p(z_{m-1}|z_m) + H(q_m|z_{m-1})],
    ///   plus, with `full_reward`, every term upstream of z_l: H(q_m) for m ≤ l and
    ///   log p(z_{m-1}|z_m) for m < l.
    /// - REINFORCE: F_l = Σ_{m≥l} log p(z_{m-1}|z_m) + log p(z_L) + Σ_{m>l} H(q_m|z_{m-1}).
    /// - LOO and DisARM: ½(F_l(main) - F_l(alternative chain l)) = -½ Σ of block l, whose
    ///   columns hold the alternative chain's terms minus the main chain's.
    pub fn reward_coef(&self, terms: &Terms, l: usize) -> Vec<f32> {
        let depth = terms.depth;
        let mut c = vec![0.0f32; terms.width()];
        match self.kind {
            EstimatorKind::Hnca | EstimatorKind::HncaNb => {
                if l < depth {
                    c[terms.prior_log_prob(0)] = 1.0;
                }
                for m in (l + 2)..=depth {
                    c[terms.dec_log_prob(0, m)] = 1.0;
                    c[terms.enc_entropy(0, m)] = 1.0;
                }
                if self.full_reward {
                    for m in 1..=l {
                        c[terms.enc_entropy(0, m)] = 1.0;
                    }
                    for m in 1..l {
                        c[terms.dec_log_prob(0, m)] = 1.0;
                    }
                }
            }
            EstimatorKind::Reinforce | EstimatorKind::ReinforceNb => add_downstream(&mut c, terms, 0, l, 1.0),
            EstimatorKind::Loo | EstimatorKind::Disarm => add_downstream(&mut c, terms, l, l, -0.5),
        }
        c
    }

    /// Coefficients of the quantity whose batch mean the baseline of layer l tracks.
    /// HNCA: R_l + [l<L] log p(z_l | z_{l+1}), and with `all_child` also the terms that take Φ as
    /// input, H(q_{l+1} | z_l) and log p(z_{l-1} | z_l). REINFORCE: F_l.
    pub fn baseline_coef(&self, terms: &Terms, l: usize) -> Vec<f32> {
        let mut c = self.reward_coef(terms, l);
        if self.is_hnca() && l < terms.depth {
            c[terms.dec_log_prob(0, l + 1)] += 1.0;
            if self.all_child {
                c[terms.enc_entropy(0, l + 1)] += 1.0;
                c[terms.dec_log_prob(0, l)] += 1.0;
            }
        }
        c
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
}
