//! The discrete VAE of docs/hnca.md §4: a sigmoid belief net encoder q(z1|x) q(z2|z1) … q(zL|zL-1)
//! and decoder p(zL) p(zL-1|zL) … p(x|z1), every layer a layer of Bernoulli units.

use crate::backend::Backend;
use crate::nn::Dense;
use crate::rng::{stream, RngKey};

/// Layer widths: `sizes[0]` is the data dimension, `sizes[l]` the width of latent layer z_l.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub sizes: Vec<usize>,
}

impl Shape {
    pub fn new(data_dim: usize, latent: &[usize]) -> Self {
        let mut sizes = vec![data_dim];
        sizes.extend_from_slice(latent);
        Shape { sizes }
    }
    /// Number of stochastic latent layers L.
    pub fn depth(&self) -> usize {
        self.sizes.len() - 1
    }
    pub fn width(&self, l: usize) -> usize {
        self.sizes[l]
    }
    /// Encoder parameter count (weights and biases), the denominator of the mean gradient variance.
    pub fn encoder_params(&self) -> usize {
        (1..=self.depth()).map(|l| self.sizes[l - 1] * self.sizes[l] + self.sizes[l]).sum()
    }
}

/// All parameters, or anything shaped like them (gradients, Adam moments).
pub struct Params<Buf> {
    /// enc[l-1]: z_{l-1} → z_l, for l = 1..=L (z_0 = x).
    pub enc: Vec<Dense<Buf>>,
    /// dec[l-1]: z_l → z_{l-1}, for l = 1..=L.
    pub dec: Vec<Dense<Buf>>,
    /// Logits of the factorised prior p(z_L), (n_L).
    pub prior: Buf,
}

impl<Buf> Params<Buf> {
    /// Every tensor, in a fixed order (enc w, enc bias per layer, dec w, dec bias, prior).
    pub fn tensors(&self) -> Vec<&Buf> {
        let mut v = Vec::new();
        for d in self.enc.iter().chain(&self.dec) {
            v.push(&d.w);
            v.push(&d.bias);
        }
        v.push(&self.prior);
        v
    }
    pub fn tensors_mut(&mut self) -> Vec<&mut Buf> {
        let mut v = Vec::new();
        for d in self.enc.iter_mut().chain(self.dec.iter_mut()) {
            v.push(&mut d.w);
            v.push(&mut d.bias);
        }
        v.push(&mut self.prior);
        v
    }
}

impl Params<Vec<f32>> {
    /// Glorot-uniform weights, U(±√(6/(fan_in+fan_out))), zero biases, zero prior logits, drawn
    /// from Philox so that the same seed gives the same network on every backend.
    pub fn init(shape: &Shape, seed: u64) -> Self {
        let glorot = |n_in: usize, n_out: usize, tensor: u32| {
            let r = (6.0 / (n_in + n_out) as f64).sqrt() as f32;
            let mut w = vec![0.0f32; n_in * n_out];
            RngKey::new(seed, 0, stream::init(tensor)).fill_uniform(0, &mut w);
            w.iter_mut().for_each(|u| *u = (2.0 * *u - 1.0) * r);
            w
        };
        let l_max = shape.depth();
        let enc = (1..=l_max)
            .map(|l| {
                let (n_in, n_out) = (shape.sizes[l - 1], shape.sizes[l]);
                Dense { w: glorot(n_in, n_out, 2 * l as u32), bias: vec![0.0; n_out], n_in, n_out }
            })
            .collect();
        let dec = (1..=l_max)
            .map(|l| {
                let (n_in, n_out) = (shape.sizes[l], shape.sizes[l - 1]);
                Dense { w: glorot(n_in, n_out, 2 * l as u32 + 1), bias: vec![0.0; n_out], n_in, n_out }
            })
            .collect();
        Params { enc, dec, prior: vec![0.0; shape.sizes[l_max]] }
    }

    /// Moves host parameters onto a backend.
    pub fn to_backend<B: Backend>(&self, be: &B) -> Params<B::Buf> {
        self.map(|t| be.upload(t))
    }
}

impl<Buf> Params<Buf> {
    pub fn map<Out>(&self, mut f: impl FnMut(&Buf) -> Out) -> Params<Out> {
        let dense = |d: &Dense<Buf>, f: &mut dyn FnMut(&Buf) -> Out| Dense { w: f(&d.w), bias: f(&d.bias), n_in: d.n_in, n_out: d.n_out };
        Params {
            enc: self.enc.iter().map(|d| dense(d, &mut f)).collect(),
            dec: self.dec.iter().map(|d| dense(d, &mut f)).collect(),
            prior: f(&self.prior),
        }
    }
}

/// Column layout of the per-example terms table (b, t). One block of `2L + 1` columns per
/// chain: block 0 is the main sample; block l (LOO, DisARM) is the alternative chain that
/// starts at layer l, each of its terms stored as the difference from the main chain's same
/// term (only the terms of F_l are filled). Within a block: H(q_m | z_{m-1}) and
/// log p(z_{m-1} | z_m) for m = 1..=L, then log p(z_L).
#[derive(Clone, Copy, Debug)]
pub struct Terms {
    pub depth: usize,
    pub blocks: usize,
}

impl Terms {
    pub fn block_width(&self) -> usize {
        2 * self.depth + 1
    }
    pub fn width(&self) -> usize {
        self.block_width() * self.blocks
    }
    /// H(q_m | z_{m-1}), m in 1..=L.
    pub fn enc_entropy(&self, block: usize, m: usize) -> usize {
        block * self.block_width() + m - 1
    }
    /// log p(z_{m-1} | z_m) (m = 1: log p(x | z1)).
    pub fn dec_log_prob(&self, block: usize, m: usize) -> usize {
        block * self.block_width() + self.depth + m - 1
    }
    /// log p(z_L).
    pub fn prior_log_prob(&self, block: usize) -> usize {
        block * self.block_width() + 2 * self.depth
    }
    /// Coefficients whose weighted row sum is the single-sample ELBO of block 0:
    /// Σ_m [H(q_m) + log p(z_{m-1}|z_m)] + log p(z_L).
    pub fn elbo_coef(&self) -> Vec<f32> {
        let mut c = vec![0.0; self.width()];
        for m in 1..=self.depth {
            c[self.enc_entropy(0, m)] = 1.0;
            c[self.dec_log_prob(0, m)] = 1.0;
        }
        c[self.prior_log_prob(0)] = 1.0;
        c
    }
}
