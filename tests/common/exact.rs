//! An independent f64 implementation of the VAE and of every estimator, written straight from
//! docs/hnca.md §4-§5 by full recomputation (flipping a unit re-evaluates every affected term from
//! scratch), and exact enumeration over all joint configurations of a tiny network.
//! The production code is tested against this; this is tested against central differences.
#![allow(dead_code, clippy::needless_range_loop)]

use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::{Params, Shape};

pub const CLIP: f64 = 1e-5;

pub fn log_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
pub fn clip(p: f64) -> f64 {
    p.clamp(CLIP, 1.0 - CLIP)
}
/// Σ_j log π(z_j | logit_j).
pub fn log_bern(z: &[f64], logits: &[f64]) -> f64 {
    z.iter().zip(logits).map(|(&z, &a)| log_sigmoid((2.0 * z - 1.0) * a)).sum()
}
/// Σ_j H(Bernoulli(σ(logit_j))).
pub fn entropy(logits: &[f64]) -> f64 {
    logits.iter().map(|&a| -(sigmoid(a) * log_sigmoid(a) + sigmoid(-a) * log_sigmoid(-a))).sum()
}
/// Every binary vector of length n with its probability under independent logits.
pub fn enumerate(logits: &[f64]) -> Vec<(Vec<f64>, f64)> {
    let n = logits.len();
    (0..1usize << n)
        .map(|code| {
            let z: Vec<f64> = (0..n).map(|j| ((code >> j) & 1) as f64).collect();
            let pr = log_bern(&z, logits).exp();
            (z, pr)
        })
        .collect()
}

/// The tiny VAE in f64. Weight matrices are (n_in, n_out) row-major as in production.
#[derive(Clone)]
pub struct Net {
    pub sizes: Vec<usize>,
    pub enc_w: Vec<Vec<f64>>,
    pub enc_b: Vec<Vec<f64>>,
    pub dec_w: Vec<Vec<f64>>,
    pub dec_b: Vec<Vec<f64>>,
    pub prior: Vec<f64>,
}

fn affine(w: &[f64], b: &[f64], input: &[f64]) -> Vec<f64> {
    let n_out = b.len();
    (0..n_out).map(|k| b[k] + input.iter().enumerate().map(|(i, &u)| u * w[i * n_out + k]).sum::<f64>()).collect()
}

/// One sampled chain z[0..=L] (z[0] = x).
pub type Chain = Vec<Vec<f64>>;

impl Net {
    pub fn from_params(shape: &Shape, p: &Params<Vec<f32>>) -> Net {
        let f = |v: &Vec<f32>| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        Net {
            sizes: shape.sizes.clone(),
            enc_w: p.enc.iter().map(|d| f(&d.w)).collect(),
            enc_b: p.enc.iter().map(|d| f(&d.bias)).collect(),
            dec_w: p.dec.iter().map(|d| f(&d.w)).collect(),
            dec_b: p.dec.iter().map(|d| f(&d.bias)).collect(),
            prior: f(&p.prior),
        }
    }
    pub fn depth(&self) -> usize {
        self.sizes.len() - 1
    }
    /// a_l = z_{l-1} W_l + b_l.
    pub fn enc_logits(&self, l: usize, input: &[f64]) -> Vec<f64> {
        affine(&self.enc_w[l - 1], &self.enc_b[l - 1], input)
    }
    /// Logits of p(z_{l-1} | z_l).
    pub fn dec_logits(&self, l: usize, z_l: &[f64]) -> Vec<f64> {
        affine(&self.dec_w[l - 1], &self.dec_b[l - 1], z_l)
    }
    pub fn log_q(&self, l: usize, z: &Chain) -> f64 {
        log_bern(&z[l], &self.enc_logits(l, &z[l - 1]))
    }
    pub fn ent_q(&self, l: usize, z: &Chain) -> f64 {
        entropy(&self.enc_logits(l, &z[l - 1]))
    }
    /// log p(z_{l-1} | z_l).
    pub fn log_p(&self, l: usize, z: &Chain) -> f64 {
        log_bern(&z[l - 1], &self.dec_logits(l, &z[l]))
    }
    pub fn log_prior(&self, z: &Chain) -> f64 {
        log_bern(&z[self.depth()], &self.prior)
    }
    /// Logits of the generative term that scores z_l: p(z_l | z_{l+1}) or the prior.
    pub fn gen_logits(&self, l: usize, z: &Chain) -> Vec<f64> {
        if l == self.depth() {
            self.prior.clone()
        } else {
            self.dec_logits(l + 1, &z[l + 1])
        }
    }
    pub fn log_gen(&self, l: usize, z: &Chain) -> f64 {
        log_bern(&z[l], &self.gen_logits(l, z))
    }

    /// Single-sample ELBO with analytic encoder entropies.
    pub fn elbo_sample(&self, z: &Chain) -> f64 {
        let l_max = self.depth();
        (1..=l_max).map(|m| self.ent_q(m, z) + self.log_p(m, z)).sum::<f64>() + self.log_prior(z)
    }

    /// Every chain above layer `from` (layers from+1..=L), given z[..=from], with probability.
    pub fn chains_above(&self, z: &Chain, from: usize) -> Vec<(Chain, f64)> {
        self.chains(z, from, self.depth())
    }

    /// Every assignment of layers from+1..=to given z[..=from], with its probability under q.
    pub fn chains(&self, z: &Chain, from: usize, to: usize) -> Vec<(Chain, f64)> {
        if from == to {
            return vec![(z[..=from].to_vec(), 1.0)];
        }
        let mut out = Vec::new();
        for (zl, pr) in enumerate(&self.enc_logits(from + 1, &z[from])) {
            let mut c = z[..=from].to_vec();
            c.push(zl);
            for (full, pr2) in self.chains(&c, from + 1, to) {
                out.push((full, pr * pr2));
            }
        }
        out
    }

    /// The exact ELBO of x: Σ_z q(z|x) · elbo_sample(z).
    pub fn elbo_exact(&self, x: &[f64]) -> f64 {
        self.chains_above(&vec![x.to_vec()], 0).iter().map(|(z, pr)| pr * self.elbo_sample(z)).sum()
    }

    /// Encoder parameters flattened: per layer, W (n_{l-1}, n_l) then b (n_l).
    pub fn enc_param_count(&self) -> usize {
        (1..=self.depth()).map(|l| self.sizes[l - 1] * self.sizes[l] + self.sizes[l]).sum()
    }
    fn enc_param_mut(&mut self, mut idx: usize) -> &mut f64 {
        for l in 1..=self.depth() {
            let nw = self.sizes[l - 1] * self.sizes[l];
            if idx < nw {
                return &mut self.enc_w[l - 1][idx];
            }
            idx -= nw;
            if idx < self.sizes[l] {
                return &mut self.enc_b[l - 1][idx];
            }
            idx -= self.sizes[l];
        }
        panic!("encoder parameter index out of range")
    }
    /// The offset of layer l's parameters in the flat encoder vector.
    pub fn enc_layer_offset(&self, l: usize) -> usize {
        (1..l).map(|m| self.sizes[m - 1] * self.sizes[m] + self.sizes[m]).sum()
    }

    /// d ELBO(x) / d θ_enc by central differences with one Richardson extrapolation
    /// (error O(h⁴)): the ground truth the estimators are held to.
    pub fn exact_encoder_grad(&self, x: &[f64]) -> Vec<f64> {
        let h = 1e-3;
        (0..self.enc_param_count())
            .map(|i| {
                let central = |h: f64| {
                    let mut plus = self.clone();
                    *plus.enc_param_mut(i) += h;
                    let mut minus = self.clone();
                    *minus.enc_param_mut(i) -= h;
                    (plus.elbo_exact(x) - minus.elbo_exact(x)) / (2.0 * h)
                };
                (4.0 * central(h / 2.0) - central(h)) / 3.0
            })
            .collect()
    }

    /// The terms an estimator's rewards are made of, written out from the spec for chain z.
    /// F_l: log p(z_{l-1}|z_l), every generative term from z_l upward, encoder entropies above l.
    pub fn f_reward(&self, l: usize, z: &Chain) -> f64 {
        let l_max = self.depth();
        let mut f = self.log_p(l, z);
        for m in l..l_max {
            f += self.log_p(m + 1, z); // log p(z_m | z_{m+1})
        }
        f += self.log_prior(z);
        for m in (l + 1)..=l_max {
            f += self.ent_q(m, z);
        }
        f
    }
    /// HNCA's R_l (and its `full_reward` extension).
    pub fn hnca_reward(&self, l: usize, z: &Chain, full: bool) -> f64 {
        let l_max = self.depth();
        let mut r = 0.0;
        if l < l_max {
            r += self.log_prior(z);
            for m in (l + 1)..l_max {
                r += self.log_p(m + 1, z); // log p(z_m | z_{m+1})
            }
            for m in (l + 2)..=l_max {
                r += self.ent_q(m, z);
            }
        }
        if full {
            for m in 1..=l {
                r += self.ent_q(m, z);
            }
            for m in 1..l {
                r += self.log_p(m, z);
            }
        }
        r
    }

    fn with_unit(z: &Chain, l: usize, k: usize, v: f64) -> Chain {
        let mut c = z.clone();
        c[l][k] = v;
        c
    }

    /// f-HNCA's logit gradient p(1-p)·G for every unit of layer l, from the spec's formula,
    /// recomputing each counterfactual term from scratch.
    pub fn hnca_unit_grads(&self, est: &Estimator, l: usize, z: &Chain, baseline: f64) -> Vec<f64> {
        let l_max = self.depth();
        let logits = self.enc_logits(l, &z[l - 1]);
        let reward = self.hnca_reward(l, z, est.full_reward) - baseline;
        (0..self.sizes[l])
            .map(|k| {
                let p = clip(sigmoid(logits[k]));
                let z1 = Self::with_unit(z, l, k, 1.0);
                let z0 = Self::with_unit(z, l, k, 0.0);
                let (rho1, rho0) = if l < l_max {
                    let (lp1, lp0) = (self.log_q(l + 1, &z1), self.log_q(l + 1, &z0));
                    // ρ_v = P(Φ = v | children) / π(v), by Bayes' rule.
                    let (w1, w0) = (p * lp1.exp(), (1.0 - p) * lp0.exp());
                    let post1 = w1 / (w1 + w0);
                    (post1 / p, (1.0 - post1) / (1.0 - p))
                } else {
                    (1.0, 1.0)
                };
                let (dec1, dec0) = (self.log_p(l, &z1), self.log_p(l, &z0));
                let (ent1, ent0) = if l < l_max { (self.ent_q(l + 1, &z1), self.ent_q(l + 1, &z0)) } else { (0.0, 0.0) };
                let g = self.gen_logits(l, z)[k];
                let own_actual = log_sigmoid((2.0 * z[l][k] - 1.0) * g);
                let siblings = self.log_gen(l, z) - own_actual;
                let (a, b) =
                    if est.all_child { (rho1 * dec1 - rho0 * dec0, rho1 * ent1 - rho0 * ent0) } else { (dec1 - dec0, ent1 - ent0) };
                let credit =
                    ((1.0 - p) / p).ln() + a + rho1 * log_sigmoid(g) - rho0 * log_sigmoid(-g) + (rho1 - rho0) * (siblings + reward) + b;
                p * (1.0 - p) * credit
            })
            .collect()
    }

    /// REINFORCE: G = log((1-p)/p) + (F_l - b̄)(2z-1)/π(z).
    pub fn reinforce_unit_grads(&self, l: usize, z: &Chain, baseline: f64) -> Vec<f64> {
        let logits = self.enc_logits(l, &z[l - 1]);
        let f = self.f_reward(l, z) - baseline;
        (0..self.sizes[l])
            .map(|k| {
                let p = clip(sigmoid(logits[k]));
                let pi = if z[l][k] > 0.5 { p } else { 1.0 - p };
                p * (1.0 - p) * (((1.0 - p) / p).ln() + f * (2.0 * z[l][k] - 1.0) / pi)
            })
            .collect()
    }

    /// Leave-one-out with the alternative chain `alt` (its layers l..=L; below l it equals z).
    pub fn loo_unit_grads(&self, l: usize, z: &Chain, alt: &Chain) -> Vec<f64> {
        let logits = self.enc_logits(l, &z[l - 1]);
        let (f1, f2) = (self.f_reward(l, z), self.f_reward(l, alt));
        (0..self.sizes[l])
            .map(|k| {
                let p = clip(sigmoid(logits[k]));
                let score = |v: f64| (2.0 * v - 1.0) / if v > 0.5 { p } else { 1.0 - p };
                p * (1.0 - p) * (((1.0 - p) / p).ln() + 0.5 * ((f1 - f2) * score(z[l][k]) + (f2 - f1) * score(alt[l][k])))
            })
            .collect()
    }

    /// DisARM: ½(f(b) - f(b̃))(b - b̃)σ(|a|) plus the exact entropy gradient.
    pub fn disarm_unit_grads(&self, l: usize, z: &Chain, anti: &Chain) -> Vec<f64> {
        let logits = self.enc_logits(l, &z[l - 1]);
        let (f1, f2) = (self.f_reward(l, z), self.f_reward(l, anti));
        (0..self.sizes[l])
            .map(|k| {
                let p = clip(sigmoid(logits[k]));
                p * (1.0 - p) * ((1.0 - p) / p).ln() + 0.5 * (f1 - f2) * (z[l][k] - anti[l][k]) * sigmoid(logits[k].abs())
            })
            .collect()
    }

    /// Per-example estimate of layer l's parameters (W then b) from its logit gradients.
    pub fn layer_params_from_units(&self, l: usize, z: &Chain, g: &[f64]) -> Vec<f64> {
        let mut out = Vec::new();
        for &u in &z[l - 1] {
            for &gk in g {
                out.push(u * gk);
            }
        }
        out.extend_from_slice(g);
        out
    }

    /// The estimator's per-sample estimate for layer l, given the main chain and the
    /// alternative chain (LOO's second sample or DisARM's twin; ignored otherwise), for the
    /// estimators with at most two samples per layer and no learned coefficients. The K-sample
    /// estimators are in tests/common/exact_k.rs (`Net::estimate` takes every estimator).
    pub fn unit_grads(&self, est: &Estimator, l: usize, z: &Chain, alt: &Chain, baseline: f64) -> Vec<f64> {
        match est.kind {
            EstimatorKind::Hnca | EstimatorKind::HncaNb if est.samples == 1 => self.hnca_unit_grads(est, l, z, baseline),
            EstimatorKind::Reinforce | EstimatorKind::ReinforceNb => self.reinforce_unit_grads(l, z, baseline),
            EstimatorKind::Loo if est.samples == 2 => self.loo_unit_grads(l, z, alt),
            EstimatorKind::Disarm => self.disarm_unit_grads(l, z, alt),
            _ => panic!("{}: a K-sample estimator; use Net::estimate", est.label()),
        }
    }

    /// The weighted joint configurations that layer l's estimate depends on: (main, alt, prob).
    fn configurations(&self, est: &Estimator, x: &[f64], l: usize) -> Vec<(Chain, Chain, f64)> {
        let root = vec![x.to_vec()];
        let mut out = Vec::new();
        for (below, pr_below) in self.chains(&root, 0, l - 1) {
            let logits = self.enc_logits(l, &below[l - 1]);
            match est.kind {
                EstimatorKind::Disarm => {
                    // Per unit, the pair (b, b̃) = (1[1-u<p], 1[u<p]) from one uniform u.
                    let n = logits.len();
                    for code in 0..1usize << (2 * n) {
                        let mut zb = Vec::new();
                        let mut za = Vec::new();
                        let mut pr = 1.0;
                        for j in 0..n {
                            let (b, a) = (((code >> (2 * j)) & 1) as f64, ((code >> (2 * j + 1)) & 1) as f64);
                            let p = clip(sigmoid(logits[j]));
                            pr *= match (b > 0.5, a > 0.5) {
                                (true, true) => (2.0 * p - 1.0).max(0.0),
                                (false, false) => (1.0 - 2.0 * p).max(0.0),
                                _ => p.min(1.0 - p),
                            };
                            zb.push(b);
                            za.push(a);
                        }
                        if pr == 0.0 {
                            continue;
                        }
                        let mut cb = below.clone();
                        cb.push(zb);
                        let mut ca = below.clone();
                        ca.push(za);
                        for (main, p1) in self.chains_above(&cb, l) {
                            for (alt, p2) in self.chains_above(&ca, l) {
                                out.push((main.clone(), alt, pr_below * pr * p1 * p2));
                            }
                        }
                    }
                }
                _ => {
                    for (zl, pr) in enumerate(&logits) {
                        let mut c = below.clone();
                        c.push(zl);
                        for (main, p1) in self.chains_above(&c, l) {
                            if est.kind == EstimatorKind::Loo {
                                for (alt, p2) in self.chains_above(&below, l - 1) {
                                    out.push((main.clone(), alt, pr_below * pr * p1 * p2));
                                }
                            } else {
                                out.push((main.clone(), main, pr_below * pr * p1));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The exact mean and variance (over the sampling) of the estimate of every encoder
    /// parameter, for input x and fixed baselines (index l-1 for layer l).
    pub fn estimator_moments(&self, est: &Estimator, x: &[f64], baselines: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut mean = Vec::new();
        let mut var = Vec::new();
        for l in 1..=self.depth() {
            let configs = self.configurations(est, x, l);
            let total: f64 = configs.iter().map(|c| c.2).sum();
            assert!((total - 1.0).abs() < 1e-12, "configuration probabilities sum to {total}");
            let n = self.sizes[l - 1] * self.sizes[l] + self.sizes[l];
            let mut m1 = vec![0.0; n];
            let mut m2 = vec![0.0; n];
            for (main, alt, pr) in &configs {
                let g = self.unit_grads(est, l, main, alt, baselines[l - 1]);
                for (i, v) in self.layer_params_from_units(l, main, &g).into_iter().enumerate() {
                    m1[i] += pr * v;
                    m2[i] += pr * v * v;
                }
            }
            var.extend(m1.iter().zip(&m2).map(|(a, b)| b - a * a));
            mean.extend(m1);
        }
        (mean, var)
    }
}
