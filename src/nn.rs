//! What both experiments' networks are made of and trained with: dense layers of Bernoulli
//! units, Adam over a list of tensors, and the running-average baseline. Knows no experiment.

use crate::backend::{AdamStep, Backend};

/// A fully connected layer of Bernoulli units: logits (b, n_out) = inp (b, n_in) · w + bias,
/// with w stored (n_in, n_out) so that a parent's outgoing weights are one contiguous row.
pub struct Dense<Buf> {
    pub w: Buf,
    pub bias: Buf,
    pub n_in: usize,
    pub n_out: usize,
}

impl<Buf> Dense<Buf> {
    pub fn map<Out>(&self, mut f: impl FnMut(&Buf) -> Out) -> Dense<Out> {
        Dense { w: f(&self.w), bias: f(&self.bias), n_in: self.n_in, n_out: self.n_out }
    }
}

/// Adam's hyper-parameters besides the learning rate (one state per tensor).
pub const ADAM_BETA1: f32 = 0.9;
pub const ADAM_BETA2: f32 = 0.999;
pub const ADAM_EPS: f32 = 1e-8;

/// Decay of the running-average baselines, b̄ ← γ b̄ + (1-γ) mean(target).
pub const BASELINE_DECAY: f32 = 0.99;

/// One Adam ascent step, number `t` (from 1), on every tensor: params, grads and the two
/// moments are lists in the same order.
pub fn adam_step<'a, B: Backend>(
    be: &B,
    params: impl IntoIterator<Item = &'a mut B::Buf>,
    grads: impl IntoIterator<Item = &'a B::Buf>,
    m: impl IntoIterator<Item = &'a mut B::Buf>,
    v: impl IntoIterator<Item = &'a mut B::Buf>,
    lr: f32,
    t: u64,
) where
    B::Buf: 'a,
{
    let hp = AdamStep { lr, beta1: ADAM_BETA1, beta2: ADAM_BETA2, eps: ADAM_EPS, t };
    for (((p, g), m), v) in params.into_iter().zip(grads).zip(m).zip(v) {
        be.adam(p, g, m, v, hp);
    }
}

/// b̄ ← γ b̄ + (1-γ) target.
pub fn track(baseline: f32, target: f32) -> f32 {
    BASELINE_DECAY * baseline + (1.0 - BASELINE_DECAY) * target
}
