//! An independent f64 model of the tiny contextual bandit (3 binary inputs → 2 → 2 centred
//! Bernoulli units → softmax over 3 actions) and of its estimators, recomputing every
//! counterfactual from scratch by Bayes' rule; and the production step on one configuration.
#![allow(dead_code)]

use hnca::backend::cpu::Cpu;
use hnca::backend::{DenseOps, MemoryOps};
use hnca::bandit::{gradients, AgentParams, AgentShape, BanditWorkspace};
use hnca::nn::Dense;
use hnca::rng::RngKey;
use hnca::vae::estimator::EstimatorKind;

pub const SIZES: [usize; 4] = [3, 2, 2, 3];

/// Weights w[l][i][k] (input i of layer l+1 to its unit k) and biases b[l][k], l = 0..3.
#[derive(Clone)]
pub struct Agent {
    pub w: Vec<Vec<Vec<f64>>>,
    pub b: Vec<Vec<f64>>,
}

impl Agent {
    pub fn random(seed: u64) -> Self {
        let key = RngKey::new(seed, 0, 77);
        let mut n = 0u32;
        let mut next = || {
            n += 1;
            3.0 * key.uniform(n) as f64 - 1.5
        };
        let w = (1..4).map(|l| (0..SIZES[l - 1]).map(|_| (0..SIZES[l]).map(|_| next()).collect()).collect()).collect();
        let b = (1..4).map(|l| (0..SIZES[l]).map(|_| next()).collect()).collect();
        Agent { w, b }
    }

    /// The agent of production parameters of the shape [`SIZES`].
    pub fn from_params(p: &AgentParams<Vec<f32>>) -> Self {
        let w = p.layers.iter().map(|d| d.w.chunks(d.n_out).map(|row| row.iter().map(|&v| v as f64).collect()).collect()).collect();
        let b = p.layers.iter().map(|d| d.bias.iter().map(|&v| v as f64).collect()).collect();
        Agent { w, b }
    }

    /// The same agent as production parameters (f32).
    pub fn to_params(&self) -> AgentParams<Vec<f32>> {
        let layers = (0..3)
            .map(|l| Dense {
                w: self.w[l].iter().flatten().map(|&v| v as f32).collect(),
                bias: self.b[l].iter().map(|&v| v as f32).collect(),
                n_in: SIZES[l],
                n_out: SIZES[l + 1],
            })
            .collect();
        AgentParams { layers, conv: Vec::new() }
    }

    /// Number of parameters, and a mutable view by flat index: per layer, weights (i, k) then biases.
    pub fn param_count() -> usize {
        (1..4).map(|l| SIZES[l - 1] * SIZES[l] + SIZES[l]).sum()
    }
    pub fn param_mut(&mut self, mut idx: usize) -> &mut f64 {
        for l in 0..3 {
            let (n_in, n) = (SIZES[l], SIZES[l + 1]);
            if idx < n_in * n {
                return &mut self.w[l][idx / n][idx % n];
            }
            idx -= n_in * n;
            if idx < n {
                return &mut self.b[l][idx];
            }
            idx -= n;
        }
        unreachable!()
    }

    pub fn logits(&self, l: usize, input: &[f64]) -> Vec<f64> {
        (0..SIZES[l + 1]).map(|k| self.b[l][k] + input.iter().enumerate().map(|(i, &u)| u * self.w[l][i][k]).sum::<f64>()).collect()
    }
}

pub fn sigmoid(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

pub fn bernoulli(bits: &[f64], logits: &[f64]) -> f64 {
    bits.iter().zip(logits).map(|(&h, &a)| if h > 0.5 { sigmoid(a) } else { 1.0 - sigmoid(a) }).product()
}

pub fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

pub fn bits(code: usize, n: usize) -> Vec<f64> {
    (0..n).map(|i| ((code >> i) & 1) as f64).collect()
}

pub fn centred(h: &[f64]) -> Vec<f64> {
    h.iter().map(|&v| 2.0 * v - 1.0).collect()
}

/// One configuration of an input's episode and its probability.
pub struct Config {
    pub h1: Vec<f64>,
    pub h2: Vec<f64>,
    pub action: usize,
    pub prob: f64,
}

pub fn configs(agent: &Agent, x: &[f64]) -> Vec<Config> {
    let mut out = Vec::new();
    let a1 = agent.logits(0, x);
    for c1 in 0..4 {
        let h1 = bits(c1, 2);
        let a2 = agent.logits(1, &centred(&h1));
        for c2 in 0..4 {
            let h2 = bits(c2, 2);
            let pi = softmax(&agent.logits(2, &centred(&h2)));
            for (action, &p_a) in pi.iter().enumerate() {
                out.push(Config { h1: h1.clone(), h2: h2.clone(), action, prob: bernoulli(&h1, &a1) * bernoulli(&h2, &a2) * p_a });
            }
        }
    }
    out
}

/// Expected reward for input x under reward table `reward` (3 actions).
pub fn expected_reward(agent: &Agent, x: &[f64], reward: &[f64]) -> f64 {
    configs(agent, x).iter().map(|c| c.prob * reward[c.action]).sum()
}

/// The exact gradient by Richardson-extrapolated central differences.
pub fn exact_gradient(agent: &Agent, x: &[f64], reward: &[f64]) -> Vec<f64> {
    (0..Agent::param_count())
        .map(|i| {
            let diff = |h: f64| {
                let (mut plus, mut minus) = (agent.clone(), agent.clone());
                *plus.param_mut(i) += h;
                *minus.param_mut(i) -= h;
                (expected_reward(&plus, x, reward) - expected_reward(&minus, x, reward)) / (2.0 * h)
            };
            (4.0 * diff(5e-4) - diff(1e-3)) / 3.0
        })
        .collect()
}

/// The reference estimate for one configuration, flat like `param_mut`.
pub fn reference_estimate(agent: &Agent, x: &[f64], c: &Config, r: f64, baseline: f64, hnca: bool) -> Vec<f64> {
    let coef = r - baseline;
    let inputs = [x.to_vec(), centred(&c.h1), centred(&c.h2)];
    let samples = [&c.h1, &c.h2];
    // P(children as observed | unit k of hidden layer l set to v), recomputed from scratch.
    let children_prob = |l: usize, k: usize, v: f64| -> f64 {
        let mut u = inputs[l + 1].clone();
        u[k] = 2.0 * v - 1.0;
        if l == 0 {
            bernoulli(&c.h2, &agent.logits(1, &u))
        } else {
            softmax(&agent.logits(2, &u))[c.action]
        }
    };
    let mut logit_grads: Vec<Vec<f64>> = Vec::new();
    for l in 0..2 {
        let a = agent.logits(l, &inputs[l]);
        logit_grads.push(
            (0..2)
                .map(|k| {
                    let p = sigmoid(a[k]);
                    if hnca {
                        let (p1, p0) = (children_prob(l, k, 1.0), children_prob(l, k, 0.0));
                        let evidence = p * p1 + (1.0 - p) * p0;
                        let (rho1, rho0) = (p1 / evidence, p0 / evidence); // posterior / prior
                        p * (1.0 - p) * (rho1 - rho0) * coef
                    } else {
                        (samples[l][k] - p) * coef
                    }
                })
                .collect(),
        );
    }
    let pi = softmax(&agent.logits(2, &inputs[2]));
    logit_grads.push((0..3).map(|j| ((j == c.action) as u8 as f64 - pi[j]) * coef).collect());
    let mut flat = Vec::new();
    for l in 0..3 {
        for &u in &inputs[l] {
            flat.extend(logit_grads[l].iter().map(|g| u * g));
        }
        flat.extend(&logit_grads[l]);
    }
    flat
}

/// The production step's estimate for one configuration (batch of 1, f32, CPU backend).
pub fn production_estimate(agent: &Agent, x: &[f64], c: &Config, r: f64, baseline: f64, est: EstimatorKind) -> Vec<f64> {
    let be = Cpu::new();
    let shape = AgentShape::new(SIZES[0], &SIZES[1..SIZES.len() - 1], SIZES[SIZES.len() - 1]);
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let params = agent.to_params();
    let mut grads = params.map(|t| vec![0.0f32; t.len()]);
    let mut ws = BanditWorkspace::new(&be, &shape, 1);
    ws.u[0] = f32s(x);
    for (l, h) in [(1, &c.h1), (2, &c.h2)] {
        ws.z[l] = f32s(h);
        ws.u[l] = f32s(&centred(h));
    }
    for l in 1..=3 {
        let layer = &params.layers[l - 1];
        be.matmul_forward(&mut ws.logits[l], &ws.u[l - 1], &layer.w, &layer.bias, 1, SIZES[l - 1], SIZES[l]);
    }
    ws.action = vec![c.action as f32];
    ws.reward = vec![r as f32];
    let baselines = be.upload(&[baseline as f32]);
    gradients(&be, &params, &mut ws, &shape, est, false, &baselines, &mut grads);
    grads.tensors().flatten().map(|&v| v as f64).collect()
}
