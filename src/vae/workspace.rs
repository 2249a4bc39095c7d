//! The buffers of one training step at one batch size, and whose randomness a step draws: the
//! main chain, the alternative chains of the estimators that sample a layer more than once, the
//! terms table, and every intermediate an estimator needs (public, so tests can read them).

use super::estimator::{Baseline, Combine, Estimator, Plan};
use super::model::{Shape, Terms};
use crate::backend::{credit_tables_len, grad_variance_slots, Backend, PerExample, StatsPlan};
use crate::rng::{stream, RngKey};

/// One sampled pass through the encoder and the decoder terms that score it.
/// Vectors are indexed by layer m (entry 0 is unused except `z[0] = x` in the main chain).
pub struct Chain<Buf> {
    /// Encoder logits a_m, (b, n_m).
    pub logits: Vec<Buf>,
    /// Samples z_m, (b, n_m).
    pub z: Vec<Buf>,
    /// Decoder logits of p(z_{m-1} | z_m), (b, n_{m-1}).
    pub dec_logits: Vec<Buf>,
}

impl<Buf> Chain<Buf> {
    fn new<B: Backend<Buf = Buf>>(be: &B, shape: &Shape, b: usize) -> Self {
        let depth = shape.depth();
        Chain {
            logits: (0..=depth).map(|m| be.zeros(if m == 0 { 0 } else { b * shape.width(m) })).collect(),
            z: (0..=depth).map(|m| be.zeros(b * shape.width(m))).collect(),
            dec_logits: (0..=depth).map(|m| be.zeros(if m == 0 { 0 } else { b * shape.width(m - 1) })).collect(),
        }
    }
}

/// Buffers for one step at batch size `b`; public so tests can read every intermediate.
pub struct Workspace<B: Backend> {
    /// The estimator's plan ([`Estimator::plan`]), computed once: what the step does.
    pub plan: Plan,
    pub b: usize,
    pub shape: Shape,
    pub terms_layout: Terms,
    /// The main sample; `main.z[0]` is the binarized input x, (b, n_0).
    pub main: Chain<B::Buf>,
    /// The alternative chains, by their block of the terms table
    /// ([`Estimator::alt_block`]): chain j of layer l shares the main chain's z_0..z_{l-1} and
    /// samples z_l..z_L itself. alt[0] is unused.
    pub alt: Vec<Chain<B::Buf>>,
    /// The per-example terms table, (b, terms_layout.width()).
    pub terms: B::Buf,
    /// HNCA's credit-pass outputs for layer l, each (b, n_l): the change in the decoder's and
    /// the next encoder layer's log-likelihood, and in that layer's entropy, when a unit flips.
    pub flip_dec: Vec<B::Buf>,
    pub flip_enc_lp: Vec<B::Buf>,
    pub flip_enc_ent: Vec<B::Buf>,
    /// The credit passes' tables (e^±W of the weights into layer l's children): from the decoder
    /// layer that takes z_l as input, and from encoder layer l+1.
    pub tables_dec: Vec<B::Buf>,
    pub tables_enc: Vec<B::Buf>,
    /// The estimated logit gradient of encoder layer l, (b, n_l): per-example estimates.
    pub unit_grad: Vec<B::Buf>,
    /// Exact logit gradients of the decoder layers, (b, n_{l-1}), and of the prior, (b, n_L).
    pub dec_delta: Vec<B::Buf>,
    pub prior_delta: B::Buf,
    /// Per-row reward or coefficient, (b).
    pub row: B::Buf,
    /// The K-sample estimators' per-chain rows of the current layer, (K, b)
    /// ([`Estimator::chain_rows_coef`]).
    pub chain_rows: B::Buf,
    /// Double CV and RODEO: ∇_{z_l} F_l of each of layer l's chains, grad_f[l][k] (b, n_l), and
    /// the scratch it is made with, (b, n_{l-1}) and (b, n_{l+1}).
    pub grad_f: Vec<Vec<B::Buf>>,
    pub grad_f_below: Vec<B::Buf>,
    pub grad_f_above: Vec<B::Buf>,
    /// Double CV and RODEO: the learned coefficients of layer l's control variates (α[, β]),
    /// which the trainer keeps and updates; their per-row ascent directions (b, ·); their
    /// ascent directions on the variance loss, the batch mean of those.
    pub cv_coef: Vec<B::Buf>,
    pub cv_partials: Vec<B::Buf>,
    pub cv_grad: Vec<B::Buf>,
    /// The encoder layers' gradient-variance partial sums (4 f64 per slot), layer l's from slot
    /// `variance_slots[2(l-1)]`, `variance_slots[2(l-1)+1]` of them.
    pub partials: B::Array<f64>,
    pub variance_slots: Vec<u32>,
    /// Per layer l (at l - 1), the weights of the terms table that make its reward row, and its
    /// per-chain rows (K, t); computed once.
    pub reward_coef: Vec<Vec<f32>>,
    pub chain_coef: Vec<Vec<f32>>,
}

impl<B: Backend> Workspace<B> {
    pub fn new(be: &B, shape: &Shape, est: &Estimator, b: usize) -> Self {
        let depth = shape.depth();
        let plan = est.plan();
        let k = est.samples;
        let alt_chains = depth * plan.alternatives;
        let terms_layout = Terms { depth, blocks: 1 + alt_chains };
        let per_layer = |f: &dyn Fn(usize) -> usize| (0..=depth).map(|m| be.zeros(f(m))).collect::<Vec<_>>();
        let hnca = matches!(plan.combine, Combine::Hnca | Combine::HncaK);
        let cv = plan.learned;
        let mut variance_slots = Vec::new();
        for l in 1..=depth {
            let first = variance_slots.iter().skip(1).step_by(2).sum::<u32>();
            variance_slots.extend([first, grad_variance_slots(b, shape.width(l - 1), shape.width(l), PerExample::Outer) as u32]);
        }
        let total_slots: u32 = variance_slots.iter().skip(1).step_by(2).sum();
        let width = |m: usize| if m <= depth { shape.width(m) } else { 0 };
        Workspace {
            plan,
            b,
            shape: shape.clone(),
            terms_layout,
            main: Chain::new(be, shape, b),
            alt: (0..=alt_chains).map(|c| Chain::new(be, shape, if c == 0 { 0 } else { b })).collect(),
            terms: be.zeros(b * terms_layout.width()),
            flip_dec: per_layer(&|m| if hnca && m > 0 { b * shape.width(m) } else { 0 }),
            flip_enc_lp: per_layer(&|m| if hnca && m > 0 && m < depth { b * shape.width(m) } else { 0 }),
            flip_enc_ent: per_layer(&|m| if hnca && m > 0 && m < depth { b * shape.width(m) } else { 0 }),
            tables_dec: per_layer(&|m| if hnca && m > 0 { credit_tables_len(shape.width(m), shape.width(m - 1)) } else { 0 }),
            tables_enc: per_layer(&|m| if hnca && m > 0 && m < depth { credit_tables_len(shape.width(m), shape.width(m + 1)) } else { 0 }),
            unit_grad: per_layer(&|m| if m > 0 { b * shape.width(m) } else { 0 }),
            dec_delta: per_layer(&|m| if m > 0 { b * shape.width(m - 1) } else { 0 }),
            prior_delta: be.zeros(b * shape.width(depth)),
            row: be.zeros(b),
            chain_rows: be.zeros(if k > 1 { k * b } else { 0 }),
            grad_f: (0..=depth).map(|m| (0..if cv > 0 && m > 0 { k } else { 0 }).map(|_| be.zeros(b * shape.width(m))).collect()).collect(),
            grad_f_below: per_layer(&|m| if cv > 0 && m > 0 { b * shape.width(m - 1) } else { 0 }),
            grad_f_above: per_layer(&|m| if cv > 0 && m > 0 { b * width(m + 1) } else { 0 }),
            cv_coef: per_layer(&|m| if m > 0 { cv } else { 0 }),
            cv_partials: per_layer(&|m| if m > 0 { b * cv } else { 0 }),
            cv_grad: per_layer(&|m| if m > 0 { cv } else { 0 }),
            partials: be.array(&vec![0.0f64; 4 * total_slots as usize]),
            variance_slots,
            reward_coef: (1..=depth).map(|l| est.reward_coef(&terms_layout, l)).collect(),
            chain_coef: (1..=depth).map(|l| if k > 1 { est.chain_rows_coef(&terms_layout, l) } else { Vec::new() }).collect(),
        }
    }

    /// What the step's statistics combine for estimator `est` (see [`Backend::step_stats`]):
    /// the ELBO of the main chain, each layer's baseline target, the encoder's layers.
    pub fn stats_plan(&self, est: &Estimator) -> StatsPlan {
        let (tl, shape) = (self.terms_layout, &self.shape);
        let mut coef = tl.elbo_coef();
        let baselines = if self.plan.baseline == Baseline::Running { shape.depth() } else { 0 };
        for l in 1..=baselines {
            coef.extend(est.baseline_coef(&tl, l));
        }
        StatsPlan {
            coef,
            baselines,
            layer_params: (1..=shape.depth()).map(|l| (shape.width(l - 1) * shape.width(l) + shape.width(l)) as f64).collect(),
            slots: self.variance_slots.clone(),
            decay: crate::nn::BASELINE_DECAY,
        }
    }
}

/// Whose randomness a pass uses: training draws are keyed by the update step, evaluation
/// draws by their own stream family so they never collide with training. With a clock, the
/// clock's step is added to `step` on the device (a training step records `step: 0`).
pub struct Draw<'a, A> {
    pub seed: u64,
    pub step: u64,
    pub eval: bool,
    pub clock: Option<&'a A>,
}

impl<A> Clone for Draw<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for Draw<'_, A> {}

impl<A> Draw<'_, A> {
    /// A draw at a fixed step, without a clock (evaluation, tests).
    pub fn at(seed: u64, step: u64, eval: bool) -> Self {
        Draw { seed, step, eval, clock: None }
    }
    pub(crate) fn encoder(&self, m: usize) -> RngKey {
        let s = if self.eval { stream::eval_encoder(m as u32) } else { stream::encoder(m as u32) };
        RngKey::new(self.seed, self.step, s)
    }
    /// Layer m of the alternative chain in terms block `block`.
    pub(crate) fn alternate(&self, block: usize, m: usize) -> RngKey {
        RngKey::new(self.seed, self.step, stream::alternate(block as u32, m as u32))
    }
    /// ARMS's K-tuple of layer m.
    pub(crate) fn arms(&self, m: usize) -> RngKey {
        RngKey::new(self.seed, self.step, stream::arms(m as u32))
    }
}
