//! The estimators' one vocabulary, shared by both experiments: the kinds by name, and the
//! [`Plan`] each experiment's step matches on (how a layer draws, how its samples combine, the
//! baseline, what is learned). The VAE's options become a plan in `vae::estimator`; the bandit
//! takes a subset of the kinds.

use crate::backend::consts::MAX_SAMPLES;
use crate::backend::{KScoreMode, SampleMode};

/// Which estimator trains the encoder. The decoder and prior always get exact gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EstimatorKind {
    /// f-HNCA; with a running-average baseline per layer, or with --samples K, averaged over K
    /// samples per layer with a leave-one-out baseline.
    Hnca,
    /// f-HNCA without a baseline.
    HncaNb,
    /// REINFORCE restricted to the terms that depend on each layer, with a baseline per layer.
    Reinforce,
    /// REINFORCE without a baseline.
    ReinforceNb,
    /// REINFORCE leave-one-out with K samples per layer (--samples, default 2).
    Loo,
    /// DisARM: an antithetic pair per layer.
    Disarm,
    /// ARMS: K antithetic samples per layer from a Dirichlet copula (--samples, default 2).
    Arms,
    /// Double control variates: leave-one-out plus a learned multiple of a Taylor control
    /// variate (--samples, default 2).
    DoubleCv,
    /// RODEO: leave-one-out plus learned multiples of Gibbs-Stein control variates built from a
    /// learned control network (--samples, default 2).
    Rodeo,
}

/// How an estimator draws the K samples of a layer (chain 0, the main sample, and the
/// alternative chains 1..K that start at that layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerDraw {
    /// One sample per layer, no alternative chains.
    Single,
    /// K independent samples.
    Independent,
    /// DisARM's antithetic pair from one uniform.
    Antithetic,
    /// ARMS's K antithetic samples from one Dirichlet draw per unit.
    Arms,
}

impl LayerDraw {
    /// How the alternative chains' first sample is drawn, for the draws that have them (the
    /// main chain's sampler: DisARM's twin is drawn with the main sample).
    pub fn alternative(self) -> Option<SampleMode> {
        match self {
            LayerDraw::Single => None,
            LayerDraw::Antithetic => Some(SampleMode::Antithetic),
            LayerDraw::Independent | LayerDraw::Arms => Some(SampleMode::Standard),
        }
    }
}

/// How the samples of a layer combine into its logit gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// HNCA's credit on the main chain, with the per-row reward.
    Hnca,
    /// HNCA's credit on each of the K chains, each with the mean of the other chains' targets as
    /// its baseline, averaged.
    HncaK,
    /// The score function of the main sample against an alternative
    /// ([`crate::backend::Backend::score_unit_grad`]).
    Score(ScoreWith),
    /// The K-sample score-function combination in this mode
    /// ([`crate::backend::Backend::k_score_unit_grad`]).
    KScore(KScoreMode),
}

/// What the score function of the main sample is taken against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreWith {
    /// REINFORCE: the mean, z - p.
    Mean,
    /// DisARM: the antithetic twin of the layer's alternative chain.
    Antithetic,
}

/// The baseline subtracted from a layer's reward before it multiplies the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// None (with K samples, the other chains' leave-one-out baseline is part of the combination).
    None,
    /// A running average per layer of the reward's target ([`Estimator::baseline_coef`]), kept by
    /// the step's statistics.
    Running,
}

/// How an alternative chain's terms are stored in its block of the terms table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AltTerms {
    /// Each chain's own terms: HNCA with K samples, whose credit needs them.
    Values,
    /// Each term less the main chain's same term: the score-function estimators, whose rewards
    /// are differences of F_l between chains.
    Differences,
}

/// An estimator's plan, computed once from its options ([`Estimator::plan`]): what the step
/// does for every encoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// How the K samples of a layer are drawn.
    pub draw: LayerDraw,
    /// Alternative chains per encoder layer: K - 1.
    pub alternatives: usize,
    /// How a layer's samples combine into its logit gradient.
    pub combine: Combine,
    /// The baseline of the reward.
    pub baseline: Baseline,
    /// How the alternative chains' terms are stored.
    pub alt_terms: AltTerms,
    /// The values each encoder layer learns for its control variates (the Double CV and RODEO
    /// combinations: [`KScoreMode::learned`]); 0 for the others.
    pub learned: usize,
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
            EstimatorKind::Arms => "arms",
            EstimatorKind::DoubleCv => "double-cv",
            EstimatorKind::Rodeo => "rodeo",
        }
    }
    pub const ALL: [EstimatorKind; 9] = [
        EstimatorKind::Hnca,
        EstimatorKind::HncaNb,
        EstimatorKind::Reinforce,
        EstimatorKind::ReinforceNb,
        EstimatorKind::Loo,
        EstimatorKind::Disarm,
        EstimatorKind::Arms,
        EstimatorKind::DoubleCv,
        EstimatorKind::Rodeo,
    ];

    /// Samples per layer without --samples.
    pub fn default_samples(self) -> usize {
        match self {
            EstimatorKind::Hnca | EstimatorKind::HncaNb | EstimatorKind::Reinforce | EstimatorKind::ReinforceNb => 1,
            _ => 2,
        }
    }

    /// Whether --samples K applies.
    pub fn takes_samples(self) -> bool {
        matches!(self, EstimatorKind::Hnca | EstimatorKind::Loo | EstimatorKind::Arms | EstimatorKind::DoubleCv | EstimatorKind::Rodeo)
    }

    pub(crate) fn from_name(name: &str) -> Option<EstimatorKind> {
        EstimatorKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The most samples per layer an estimator may take (the kernels' per-row tables are this long).
pub const MAX_K: usize = MAX_SAMPLES as usize;

/// An estimator with its sample count and ablation flags (the flags are HNCA's only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimator {
    pub kind: EstimatorKind,
    /// Weight the "Φ as input" terms by the hindsight ratios too (the paper's `all_child`).
    pub all_child: bool,
    /// Add the terms upstream of each layer to its reward (the paper's `full_reward`).
    pub full_reward: bool,
    /// K, the samples (chains) per encoder layer: 1 for REINFORCE and plain HNCA.
    pub samples: usize,
}

/// What an estimator is, independently of the experiment it trains (the VAE's rewards and
/// parsing are in `vae::estimator`).
impl Estimator {
    /// The estimator at its default sample count, without flags.
    pub fn new(kind: EstimatorKind) -> Self {
        Estimator { kind, all_child: false, full_reward: false, samples: kind.default_samples() }
    }

    /// The plan of a step with this estimator: how each layer draws (DisARM's antithetic pair,
    /// ARMS's K-tuple, else K independent samples or one), how its samples combine, its
    /// baseline (a running average for HNCA with one sample and for REINFORCE), how its
    /// alternative chains' terms are stored, and what it learns. Every predicate the step asks
    /// of an estimator is a field of the plan, decided here.
    pub fn plan(&self) -> Plan {
        use EstimatorKind as E;
        let multi = self.samples > 1;
        let draw = match self.kind {
            E::Disarm => LayerDraw::Antithetic,
            E::Arms => LayerDraw::Arms,
            _ if multi => LayerDraw::Independent,
            _ => LayerDraw::Single,
        };
        let combine = match self.kind {
            E::Hnca | E::HncaNb if multi => Combine::HncaK,
            E::Hnca | E::HncaNb => Combine::Hnca,
            E::Reinforce | E::ReinforceNb => Combine::Score(ScoreWith::Mean),
            E::Disarm => Combine::Score(ScoreWith::Antithetic),
            E::Loo => Combine::KScore(KScoreMode::Loo),
            E::Arms => Combine::KScore(KScoreMode::Arms),
            E::DoubleCv => Combine::KScore(KScoreMode::DoubleCv),
            E::Rodeo => Combine::KScore(KScoreMode::Rodeo),
        };
        let baseline = match self.kind {
            E::Hnca if !multi => Baseline::Running,
            E::Reinforce => Baseline::Running,
            _ => Baseline::None,
        };
        let (alt_terms, learned) = match combine {
            Combine::Hnca | Combine::HncaK => (AltTerms::Values, 0),
            Combine::Score(_) => (AltTerms::Differences, 0),
            Combine::KScore(mode) => (AltTerms::Differences, mode.learned()),
        };
        Plan { draw, alternatives: self.samples - 1, combine, baseline, alt_terms, learned }
    }
}
