//! The bandit's agent: Bernoulli hidden layers (outputs centred to ±1 before the next layer;
//! pixels stay 0/1) and a softmax over the actions, over the pixels or over a convolutional
//! feature network's output ([`super::conv`]); its estimators (a subset of the VAE's
//! [`EstimatorKind`], whose [`Plan`] the step matches on), shapes, parameters and buffers, and
//! one step (sampling, then gradients) written once over the backend operations.

use super::conv::{self, Conv, ConvWorkspace};
use crate::backend::{credit_tables_len, grad_variance_slots, Backend, ConvGeom, GemmInit, PerExample, SampleMode, StatsPlan};
use crate::estimator::{Baseline, Combine, Estimator, EstimatorKind, Plan, ScoreWith};
use crate::nn::Dense;
use crate::rng::{stream, RngKey};

/// The bandit's estimators for the hidden layers, with their `--estimator` help: HNCA or
/// REINFORCE for every hidden layer, with the 0.99 running-average reward baseline, or (`-nb`)
/// without. The other kinds are the VAE's only.
pub const ESTIMATORS: [(EstimatorKind, &str); 4] = [
    (EstimatorKind::Hnca, "HNCA for every hidden layer, with the 0.99 running-average reward baseline"),
    (EstimatorKind::HncaNb, "HNCA without a baseline"),
    (EstimatorKind::Reinforce, "REINFORCE for every hidden layer, with the baseline"),
    (EstimatorKind::ReinforceNb, "REINFORCE without a baseline"),
];

/// The bandit's estimator of this name, if the bandit has it.
pub fn estimator(name: &str) -> Option<EstimatorKind> {
    ESTIMATORS.iter().map(|&(kind, _)| kind).find(|kind| kind.name() == name)
}

/// `--estimator`'s parser: the names of [`ESTIMATORS`], each with its help.
pub fn estimator_parser() -> impl clap::builder::TypedValueParser<Value = EstimatorKind> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(ESTIMATORS.map(|(kind, help)| PossibleValue::new(kind.name()).help(help)))
        .map(|name| estimator(&name).expect("the parser accepts only the bandit's estimators"))
}

/// The plan of the bandit's step with estimator `kind` (one sample per layer): HNCA's credit
/// or REINFORCE's score against the mean, with or without the running baseline.
pub fn plan(kind: EstimatorKind) -> Plan {
    Estimator::new(kind).plan()
}

/// Layer widths: `sizes[0]` the input, then the hidden layers, then the number of actions; and
/// the convolution layers below the input, if any (then `sizes[0]` is their flattened output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentShape {
    pub sizes: Vec<usize>,
    pub conv: Vec<ConvGeom>,
}

impl AgentShape {
    pub fn new(inputs: usize, hidden: &[usize], actions: usize) -> Self {
        let mut sizes = vec![inputs];
        sizes.extend_from_slice(hidden);
        sizes.push(actions);
        AgentShape { sizes, conv: Vec::new() }
    }
    /// The agent over the features of convolution layers `conv` (at least one).
    pub fn with_conv(conv: Vec<ConvGeom>, hidden: &[usize], actions: usize) -> Self {
        let features = conv.last().expect("at least one convolution layer").out_len();
        AgentShape { conv, ..Self::new(features, hidden, actions) }
    }
    /// Values of one example's input image.
    pub fn pixels(&self) -> usize {
        self.conv.first().map_or(self.sizes[0], |g| g.in_len())
    }
    /// Parameters of every layer the gradient variance reports, from the bottom: the
    /// convolutions, then the dense layers.
    pub fn variance_layer_params(&self) -> Vec<f64> {
        let conv = self.conv.iter().map(|g| (g.weights() + g.c_out) as f64);
        conv.chain((1..self.sizes.len()).map(|l| self.layer_params(l) as f64)).collect()
    }
    /// Number of hidden layers H; layer H + 1 is the softmax.
    pub fn hidden(&self) -> usize {
        self.sizes.len() - 2
    }
    pub fn width(&self, l: usize) -> usize {
        self.sizes[l]
    }
    pub fn actions(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }
    /// Parameters of layer l (1-based, the softmax included).
    pub fn layer_params(&self, l: usize) -> usize {
        self.sizes[l - 1] * self.sizes[l] + self.sizes[l]
    }
}

/// layers[l-1] maps layer l-1's output to layer l's logits, for l = 1..=H+1; conv[c] is
/// convolution layer c + 1 below them (none over the pixels).
pub struct AgentParams<Buf> {
    pub layers: Vec<Dense<Buf>>,
    pub conv: Vec<Conv<Buf>>,
}

impl AgentParams<Vec<f32>> {
    /// Zero biases; Glorot-uniform weights over the pixels (docs/hnca.md §3.1), and over convolutional
    /// features uniform weights of variance 1/fan_in everywhere ([`conv::init`]), the scale of
    /// the reference's initialisers for that network.
    pub fn init(shape: &AgentShape, seed: u64) -> Self {
        let layers = (1..shape.sizes.len())
            .map(|l| {
                let (n_in, n_out) = (shape.sizes[l - 1], shape.sizes[l]);
                let mut w = vec![0.0f32; n_in * n_out];
                let key = RngKey::new(seed, 0, stream::bandit_init(l as u32));
                if shape.conv.is_empty() {
                    let r = (6.0 / (n_in + n_out) as f64).sqrt() as f32;
                    key.fill_uniform(0, &mut w);
                    w.iter_mut().for_each(|u| *u = (2.0 * *u - 1.0) * r);
                } else {
                    conv::fill_fan_in_uniform(&mut w, n_in, key);
                }
                Dense { w, bias: vec![0.0; n_out], n_in, n_out }
            })
            .collect();
        AgentParams { layers, conv: conv::init(&shape.conv, seed) }
    }
}

impl<Buf> AgentParams<Buf> {
    pub fn map<Out>(&self, mut f: impl FnMut(&Buf) -> Out) -> AgentParams<Out> {
        let conv = self.conv.iter().map(|c| c.map(&mut f)).collect();
        let layers = self.layers.iter().map(|d| Dense { w: f(&d.w), bias: f(&d.bias), n_in: d.n_in, n_out: d.n_out }).collect();
        AgentParams { layers, conv }
    }
    /// Every tensor in order, from the pixels up: per convolution layer, weights (k, k, c_in,
    /// c_out) then biases; per dense layer, weights (in, out) then biases.
    pub fn tensors(&self) -> impl Iterator<Item = &Buf> {
        self.conv.iter().flat_map(|c| [&c.w, &c.bias]).chain(self.layers.iter().flat_map(|d| [&d.w, &d.bias]))
    }
    pub fn tensors_mut(&mut self) -> impl Iterator<Item = &mut Buf> {
        self.conv.iter_mut().flat_map(|c| [&mut c.w, &mut c.bias]).chain(self.layers.iter_mut().flat_map(|d| [&mut d.w, &mut d.bias]))
    }
}

/// Buffers of one step for batch size b. Entries are indexed by layer l (0 = the input).
pub struct BanditWorkspace<B: Backend> {
    pub b: usize,
    /// Logits (b, n_l) for l = 1..=H+1 (entry 0 unused).
    pub logits: Vec<B::Buf>,
    /// Sampled bits z_l (b, n_l), l = 1..=H (entry 0 unused).
    pub z: Vec<B::Buf>,
    /// Layer inputs: u_0 = x (b, n_0) and u_l = 2 z_l - 1 (b, n_l).
    pub u: Vec<B::Buf>,
    /// Actions and labels as f32 integers, rewards, and R - b̄, (b) each.
    pub action: B::Buf,
    pub labels: B::Buf,
    pub reward: B::Buf,
    pub coef: B::Buf,
    /// Per-example logit gradients (b, n_l) for l = 1..=H+1, and the children's log-likelihood
    /// change when each unit flips (b, n_l) for l = 1..=H.
    pub grad: Vec<B::Buf>,
    pub flip: Vec<B::Buf>,
    /// 2·W of the layer above (n_l, n_{l+1}), for l = 1..=H: a centred unit's flip moves its
    /// children's logits by ±2 of its weights.
    pub w2: Vec<B::Buf>,
    /// The credit pass's tables for hidden layer l's children (e^±2W): Bernoulli units, or the
    /// softmax for the last hidden layer.
    pub tables: Vec<B::Buf>,
    /// Every layer's gradient-variance partial sums (4 f64 per slot), from the bottom (the
    /// convolution layers first, C of them): dense layer l's from slot `variance_slots[2(C+l-1)]`,
    /// `variance_slots[2(C+l-1)+1]` of them.
    pub partials: B::Array<f64>,
    pub variance_slots: Vec<u32>,
    /// The convolutional feature network's buffers, if the agent has one; its top layer's
    /// output is u[0].
    pub conv: Option<ConvWorkspace<B>>,
}

impl<B: Backend> BanditWorkspace<B> {
    /// The buffers of a training step.
    pub fn new(be: &B, shape: &AgentShape, b: usize) -> Self {
        Self::with_gradients(be, shape, b, true)
    }

    /// The buffers of forward passes only (the convolutions' gradients are not allocated).
    pub fn for_evaluation(be: &B, shape: &AgentShape, b: usize) -> Self {
        Self::with_gradients(be, shape, b, false)
    }

    fn with_gradients(be: &B, shape: &AgentShape, b: usize, training: bool) -> Self {
        let top = shape.sizes.len() - 1;
        let mut variance_slots = Vec::new();
        let conv_slots = conv::variance_slots(&shape.conv, b);
        let dense_slots = (1..=top).map(|l| grad_variance_slots(b, shape.width(l - 1), shape.width(l), PerExample::Outer));
        for slots in conv_slots.into_iter().chain(dense_slots) {
            let first = variance_slots.iter().skip(1).step_by(2).sum::<u32>();
            variance_slots.extend([first, slots as u32]);
        }
        let total_slots: u32 = variance_slots.iter().skip(1).step_by(2).sum();
        let per_layer = |f: &dyn Fn(usize) -> usize| (0..=top).map(|l| be.zeros(f(l))).collect::<Vec<_>>();
        let hidden = |l: usize| l >= 1 && l < top;
        BanditWorkspace {
            b,
            logits: per_layer(&|l| if l == 0 { 0 } else { b * shape.width(l) }),
            z: per_layer(&|l| if hidden(l) { b * shape.width(l) } else { 0 }),
            u: per_layer(&|l| if l < top { b * shape.width(l) } else { 0 }),
            action: be.zeros(b),
            labels: be.zeros(b),
            reward: be.zeros(b),
            coef: be.zeros(b),
            grad: per_layer(&|l| if l == 0 { 0 } else { b * shape.width(l) }),
            flip: per_layer(&|l| if hidden(l) { b * shape.width(l) } else { 0 }),
            w2: per_layer(&|l| if hidden(l) { shape.width(l) * shape.width(l + 1) } else { 0 }),
            tables: per_layer(&|l| if hidden(l) { credit_tables_len(shape.width(l), shape.width(l + 1)) } else { 0 }),
            partials: be.array(&vec![0.0f64; 4 * total_slots as usize]),
            variance_slots,
            conv: (!shape.conv.is_empty()).then(|| ConvWorkspace::new(be, &shape.conv, b, training)),
        }
    }

    /// Where a batch's pixels go, (b, pixels): u[0], or the feature network's input.
    pub fn input_mut(&mut self) -> &mut B::Buf {
        match &mut self.conv {
            Some(c) => &mut c.x,
            None => &mut self.u[0],
        }
    }

    /// What the step's statistics combine (see [`Backend::step_stats`]): the mean reward, its
    /// running average as the baseline where the estimator keeps one, every layer.
    pub fn stats_plan(&self, shape: &AgentShape, est: EstimatorKind) -> StatsPlan {
        let baselines = (plan(est).baseline == Baseline::Running) as usize;
        StatsPlan {
            coef: vec![1.0; 1 + baselines],
            baselines,
            layer_params: shape.variance_layer_params(),
            slots: self.variance_slots.clone(),
            decay: crate::nn::BASELINE_DECAY,
        }
    }
}

/// Which samples a forward pass draws: training step `step` (plus the clock's, with one), or
/// evaluation batch `step`.
pub struct BanditDraw<'a, A> {
    pub seed: u64,
    pub step: u64,
    pub eval: bool,
    pub clock: Option<&'a A>,
}

impl<A> Clone for BanditDraw<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for BanditDraw<'_, A> {}

impl<A> BanditDraw<'_, A> {
    fn key(&self, layer: u32) -> RngKey {
        let s = if self.eval { stream::bandit_eval(layer) } else { stream::bandit(layer) };
        RngKey::new(self.seed, self.step, s)
    }
}

/// Samples every hidden layer and the action for the input (ws.u[0], or the feature network's
/// input when there is one, [`BanditWorkspace::input_mut`]) and labels ws.labels, and scores
/// the actions (ws.reward). Returns nothing; everything is in the workspace.
pub fn forward<B: Backend>(
    be: &B,
    params: &AgentParams<B::Buf>,
    ws: &mut BanditWorkspace<B>,
    shape: &AgentShape,
    draw: BanditDraw<B::Array<u32>>,
) {
    let (b, top) = (ws.b, shape.sizes.len() - 1);
    if let Some(c) = &mut ws.conv {
        conv::forward(be, &params.conv, c, &mut ws.u[0], b);
    }
    for l in 1..=top {
        let (n_in, n) = (shape.width(l - 1), shape.width(l));
        let layer = &params.layers[l - 1];
        be.matmul_forward(&mut ws.logits[l], &ws.u[l - 1], &layer.w, &layer.bias, b, n_in, n);
        if l < top {
            be.bernoulli_sample(&mut ws.z[l], None, &ws.logits[l], draw.key(l as u32), draw.clock, SampleMode::Standard, b, n);
            be.affine(&mut ws.u[l], &ws.z[l], 2.0, -1.0, b * n);
        }
    }
    be.softmax_act(&mut ws.action, &mut ws.reward, &ws.logits[top], &ws.labels, draw.key(top as u32), draw.clock, b, shape.actions());
}

/// Gradients (ascent directions, batch means) of every layer from the samples in the
/// workspace, with the baseline b̄ = `baselines[0]` where the estimator keeps one, and every
/// layer's gradient-variance partial sums into `ws.partials`. The first hidden layer's logit
/// gradient is backpropagated into the feature network, if there is one. With `rho_gradient`
/// (HNCA only), the hidden units' gradients differentiate through ρ as the reference code of
/// the nonlinear bandit did (biased; see [`Backend::bandit_unit_grad`]).
pub fn gradients<B: Backend>(
    be: &B,
    params: &AgentParams<B::Buf>,
    ws: &mut BanditWorkspace<B>,
    shape: &AgentShape,
    est: EstimatorKind,
    rho_gradient: bool,
    baselines: &B::Buf,
    grads: &mut AgentParams<B::Buf>,
) {
    let (b, top, below) = (ws.b, shape.sizes.len() - 1, shape.conv.len());
    let plan = plan(est);
    be.weighted_row_sum(&mut ws.coef, &ws.reward, &[1.0], (plan.baseline == Baseline::Running).then_some((baselines, 0)), b, 1);
    be.softmax_score(&mut ws.grad[top], &ws.logits[top], &ws.action, &ws.coef, b, shape.actions());
    for l in 1..top {
        let n = shape.width(l);
        match plan.combine {
            Combine::Hnca => {
                let above = &params.layers[l];
                be.affine(&mut ws.w2[l], &above.w, 2.0, 0.0, n * shape.width(l + 1));
                let (c, tables) = (shape.width(l + 1), &mut ws.tables[l]);
                if l + 1 < top {
                    be.credit_pass(&mut ws.flip[l], None, &ws.z[l], &ws.w2[l], tables, &ws.logits[l + 1], &ws.z[l + 1], b, n, c);
                } else {
                    be.softmax_credit(&mut ws.flip[l], &ws.z[l], &ws.w2[l], tables, &ws.logits[top], &ws.action, b, n, c);
                }
                be.bandit_unit_grad(&mut ws.grad[l], &ws.logits[l], &ws.z[l], Some(&ws.flip[l]), rho_gradient, &ws.coef, b, n);
            }
            Combine::Score(ScoreWith::Mean) => be.bandit_unit_grad(&mut ws.grad[l], &ws.logits[l], &ws.z[l], None, false, &ws.coef, b, n),
            other => unreachable!("the bandit has no {other:?} estimator"),
        }
    }
    for l in 1..=top {
        let (n_in, n) = (shape.width(l - 1), shape.width(l));
        let g = &mut grads.layers[l - 1];
        be.matmul_backward_weight(&mut g.w, &ws.u[l - 1], &ws.grad[l], b, n_in, n);
        be.column_mean(&mut g.bias, &ws.grad[l], b, n);
        let first = ws.variance_slots[2 * (below + l - 1)] as usize;
        be.grad_variance(&mut ws.partials, first, &ws.u[l - 1], &ws.grad[l], &g.w, &g.bias, b, n_in, n, PerExample::Outer);
    }
    if let Some(c) = &mut ws.conv {
        let top_conv = c.grads.as_mut().expect("a training workspace").dout.last_mut().expect("at least one convolution layer");
        be.matmul_backward_input(top_conv, &ws.grad[1], &params.layers[0].w, GemmInit::Zero, b, shape.width(0), shape.width(1));
        let first_slots: Vec<usize> = (0..below).map(|i| ws.variance_slots[2 * i] as usize).collect();
        conv::backward(be, &params.conv, c, &ws.u[0], &mut grads.conv, &mut ws.partials, &first_slots, b);
    }
}
