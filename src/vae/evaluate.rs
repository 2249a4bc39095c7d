//! Evaluating a trained VAE the way the literature reports it: the mean single-sample ELBO and
//! the K-sample importance-weighted bound (Burda et al. 2016) on the test set, each with its
//! standard error over images.
//!
//! For K samples z_k ~ q(z | x), log p(x) ≥ E[log (1/K) Σ_k p(x, z_k) / q(z_k | x)], and the
//! bound tightens towards log p(x) as K grows. The encoder is sampled with `Draw { eval: true }`
//! keyed by (batch, k), so an evaluation is reproducible from its seed on every backend.
//!
//! q must be the distribution the samples are actually drawn from: the sampler fires a unit with
//! the clipped probability clip(σ(a), 1e-5, 1 - 1e-5) (docs/hnca.md §1), so log q(z | x) is computed
//! from clipped logits. With raw logits, a saturated unit (a = -40, say) that fires — one draw in
//! 10^5 — would be scored log σ(-40) = -40 instead of log 1e-5 = -11.5, inflating that sample's
//! weight by e^28.5 and the bound far above log p(x).

use super::estimator::{Estimator, EstimatorKind};
use super::forward::forward_main;
use super::model::{Params, Shape};
use super::step::{Draw, Workspace};
use crate::backend::Backend;
use crate::data::{binarize_batch, Binarize, Split};
use crate::rng::RngKey;

/// A mean over images with its standard error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub std_err: f64,
}

impl Estimate {
    pub fn of(values: &[f64]) -> Estimate {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Estimate { mean, std_err: (var / n).sqrt() }
    }
}

#[derive(Clone, Debug)]
pub struct Bounds {
    pub images: usize,
    pub k: usize,
    /// Single-sample ELBO with analytic encoder entropies, as trained.
    pub elbo: Estimate,
    /// log (1/K) Σ_k p(x, z_k) / q(z_k | x).
    pub iwae: Estimate,
    /// Per image, in split order.
    pub elbo_per_image: Vec<f64>,
    pub iwae_per_image: Vec<f64>,
}

/// Images per forward pass.
pub const EVAL_BATCH: usize = 500;

/// Both bounds for every image of `split`, binarized once with `binarize_key`; `progress` is
/// called with the number of images finished.
pub fn evaluate_bounds<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    shape: &Shape,
    split: &Split,
    binarize: Binarize,
    binarize_key: RngKey,
    k: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Bounds {
    // An estimator without alternative chains or credit buffers: only the forward pass is used.
    let est = Estimator::new(EstimatorKind::ReinforceNb);
    let depth = shape.depth();
    let mut elbo = Vec::with_capacity(split.n);
    let mut iwae = Vec::with_capacity(split.n);
    let indices: Vec<u32> = (0..split.n as u32).collect();
    let mut cache: Option<Workspace<B>> = None;
    // Per layer m (index m-1), the clipped encoder logits, (b, n_m).
    let mut clipped: Option<(usize, Vec<B::Buf>)> = None;
    for (batch_no, chunk) in indices.chunks(EVAL_BATCH).enumerate() {
        let b = chunk.len();
        if cache.as_ref().map(|w| w.b) != Some(b) {
            cache = Some(Workspace::new(be, shape, &est, b));
        }
        let ws = cache.as_mut().expect("workspace was just created");
        if clipped.as_ref().map(|c| c.0) != Some(b) {
            clipped = Some((b, (1..=depth).map(|m| be.zeros(b * shape.width(m))).collect()));
        }
        let clipped_logits = &mut clipped.as_mut().expect("buffers were just created").1;
        let tl = ws.terms_layout;
        let t = tl.width();
        let elbo_coef = tl.elbo_coef();
        // log w = Σ log p - Σ log q, with log q(z_m | z_{m-1}) written over the entropy columns.
        let mut log_w_coef = elbo_coef.clone();
        for m in 1..=depth {
            log_w_coef[tl.enc_entropy(0, m)] = -1.0;
        }
        let x = binarize_batch(split, chunk, binarize, binarize_key, shape.width(0));
        be.write(&mut ws.main.z[0], &x);
        let (mut max, mut sum) = (vec![f64::NEG_INFINITY; b], vec![0.0f64; b]);
        for sample in 0..k {
            // Distinct from the training loop's evaluation draws, which use steps below 2^40.
            let draw = Draw::at(seed, (1 << 48) | ((batch_no as u64) << 24) | sample as u64, true);
            forward_main(be, params, ws, &est, draw);
            if sample == 0 {
                be.weighted_row_sum(&mut ws.row, &ws.terms, &elbo_coef, None, b, t);
                elbo.extend(be.download(&ws.row).iter().map(|&v| v as f64));
            }
            for m in 1..=depth {
                let (n, a) = (shape.width(m), &mut clipped_logits[m - 1]);
                be.clip_logits(a, &ws.main.logits[m], b * n);
                be.log_prob_rows(&mut ws.terms, t, tl.enc_entropy(0, m), a, false, &ws.main.z[m], None, b, n);
            }
            be.weighted_row_sum(&mut ws.row, &ws.terms, &log_w_coef, None, b, t);
            for ((mx, s), &lw) in max.iter_mut().zip(sum.iter_mut()).zip(&be.download(&ws.row)) {
                let lw = lw as f64;
                if lw > *mx {
                    *s = *s * (*mx - lw).exp() + 1.0;
                    *mx = lw;
                } else {
                    *s += (lw - *mx).exp();
                }
            }
        }
        iwae.extend(max.iter().zip(&sum).map(|(&mx, &s)| mx + s.ln() - (k as f64).ln()));
        progress(elbo.len());
    }
    Bounds { images: split.n, k, elbo: Estimate::of(&elbo), iwae: Estimate::of(&iwae), elbo_per_image: elbo, iwae_per_image: iwae }
}
