//! The importance-weighted bound on a tiny VAE whose exact log-likelihood is computable by
//! enumeration: the bound is below log p(x), grows with K and approaches log p(x); the
//! single-sample ELBO agrees with the exact ELBO. One encoder unit is saturated, where the
//! sampler's clipping matters.

mod common;

use common::exact::Net;
use hnca::backend::cpu::Cpu;
use hnca::data::Binarize;
use hnca::data::Split;
use hnca::rng::{stream, RngKey};
use hnca::vae::evaluate::evaluate_bounds;
use hnca::vae::model::{Params, Shape};

/// x of 4 pixels (a 2x2 image), latents 3 and 2.
fn tiny() -> (Shape, Params<Vec<f32>>) {
    let shape = Shape::new(4, &[3, 2]);
    let mut p = Params::init(&shape, 5);
    for (t, tensor) in p.tensors_mut().into_iter().enumerate() {
        RngKey::new(5, 1, stream::init(100 + t as u32)).fill_uniform(0, tensor);
        tensor.iter_mut().for_each(|u| *u = 2.0 * *u - 1.0);
    }
    // A saturated unit: q says it fires with probability e^-30, the sampler (which clips p to
    // [1e-5, 1 - 1e-5]) fires it once in 10^5 draws. The bound must score samples under the
    // sampler's distribution, or those draws push it far above log p(x).
    // Its generative model gives it e^-8 or so, so the posterior puts little mass, but far
    // more than e^-30, where q and the sampler differ.
    p.enc[0].bias[0] = -30.0;
    p.dec[1].bias[0] = -8.0;
    (shape, p)
}

/// `copies` copies of the binary image `x`, as 0/255 pixels (binarized exactly by thresholding).
fn copies(x: &[f64], copies: usize) -> Split {
    let images = (0..copies).flat_map(|_| x.iter().map(|&b| if b > 0.5 { 255u8 } else { 0 })).collect();
    Split { images, labels: vec![0; copies], n: copies, rows: 2, cols: 2 }
}

/// log p(x) = log Σ_z p(x, z), over every joint configuration of the latents.
fn exact_log_likelihood(net: &Net, x: &[f64]) -> f64 {
    let joints: Vec<f64> = net
        .chains_above(&vec![x.to_vec()], 0)
        .iter()
        .map(|(z, _)| (1..=net.depth()).map(|m| net.log_p(m, z)).sum::<f64>() + net.log_prior(z))
        .collect();
    let max = joints.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + joints.iter().map(|j| (j - max).exp()).sum::<f64>().ln()
}

#[test]
fn the_bound_is_below_log_likelihood_and_approaches_it_as_k_grows() {
    let (shape, host) = tiny();
    let net = Net::from_params(&shape, &host);
    let cpu = Cpu::new();
    let params = host.to_backend(&cpu);
    for x in [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]] {
        let log_px = exact_log_likelihood(&net, &x);
        let elbo = net.elbo_exact(&x);
        assert!(elbo < log_px - 0.05, "a loose-enough model for the test to mean something: ELBO {elbo}, log p(x) {log_px}");
        let split = copies(&x, 1000);
        let key = RngKey::new(0, 0, stream::BINARIZE_TEST);
        let mut previous = f64::NEG_INFINITY;
        let mut gaps = Vec::new();
        for k in [1, 8, 64, 512, 4096] {
            let b = evaluate_bounds(&cpu, &params, &shape, &split, Binarize::Threshold, key, k, 7, |_| {});
            let (mean, se) = (b.iwae.mean, b.iwae.std_err);
            // Below the log-likelihood (allowing sampling noise), and growing with K.
            assert!(mean < log_px + 4.0 * se + 1e-4, "K {k}: bound {mean} ± {se} above log p(x) {log_px}");
            assert!(mean > previous, "K {k}: bound {mean} did not grow from {previous}");
            previous = mean;
            gaps.push(log_px - mean);
            // The single-sample ELBO is an unbiased estimate of the exact ELBO.
            assert!((b.elbo.mean - elbo).abs() < 4.0 * b.elbo.std_err + 1e-4, "ELBO {} ± {} vs exact {elbo}", b.elbo.mean, b.elbo.std_err);
        }
        // K = 1 is an estimate of the ELBO (with log q sampled, not analytic entropies).
        assert!((log_px - gaps[0] - elbo).abs() < 0.05, "K = 1 bound {} vs exact ELBO {elbo}", log_px - gaps[0]);
        println!("x {x:?}: log p(x) {log_px:.4}, exact ELBO {elbo:.4}, gap of the bound at K = 1, 8, 64, 512, 4096: {gaps:.4?}");
        // By K = 4096 nearly all of the gap has closed.
        let last = gaps[gaps.len() - 1];
        assert!(last < 0.02 * gaps[0] && last < 0.01, "gaps by K: {gaps:?}");
    }
}
