//! One training step, written once over [`Backend`]: sample the encoder (and the alternative
//! chains of the estimators that sample a layer K times), score every term, run the estimator's
//! credit computation, and produce gradients for every parameter, all at the pre-update
//! parameters. The stages live in [`super::forward`] (sampling and scoring) and
//! [`super::estimate`] (each estimator's logit gradients); the buffers in [`super::workspace`].

use super::estimate::{hnca_chain, hnca_k_layer, k_score_layer};
use super::estimator::{Baseline, Combine, Estimator, ScoreWith};
use super::forward::forward_alternative;
use super::forward::forward_main;
use super::model::Params;
pub use super::workspace::{Chain, Draw, Workspace};
use crate::backend::{Backend, PerExample, ScoreAlt};

/// Samples everything the estimator needs for input x (in `ws.main.z[0]`) and writes the
/// gradient of every parameter (ascent direction, batch mean) into `grads`, and each encoder
/// layer's gradient-variance partial sums into `ws.partials`. `baselines` (L) holds b̄_l at
/// l - 1 (ignored by estimators without one). Nothing comes back to the host.
pub fn compute_gradients<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    ws: &mut Workspace<B>,
    est: &Estimator,
    baselines: &B::Buf,
    draw: Draw<B::Array<u32>>,
    grads: &mut Params<B::Buf>,
) {
    let (b, shape, tl) = (ws.b, ws.shape.clone(), ws.terms_layout);
    let t = tl.width();
    let depth = shape.depth();
    let plan = ws.plan;

    forward_main(be, params, ws, est, draw);
    for l in 1..=depth {
        for j in 1..=plan.alternatives {
            forward_alternative(be, params, ws, est, l, j, draw);
        }
    }

    // Encoder: per-unit logit gradients from the estimator, then weight and bias gradients.
    for l in 1..=depth {
        let n = shape.width(l);
        let baseline = (plan.baseline == Baseline::Running).then_some((baselines, l - 1));
        match plan.combine {
            Combine::HncaK => hnca_k_layer(be, params, ws, est, l),
            Combine::KScore(mode) => k_score_layer(be, params, ws, est, mode, l),
            Combine::Hnca => {
                be.weighted_row_sum(&mut ws.row, &ws.terms, &ws.reward_coef[l - 1], baseline, b, t);
                hnca_chain(be, params, ws, est, l, 0, 0, 1.0, false);
            }
            Combine::Score(with) => {
                be.weighted_row_sum(&mut ws.row, &ws.terms, &ws.reward_coef[l - 1], baseline, b, t);
                let alt = match with {
                    ScoreWith::Antithetic => ScoreAlt::Antithetic(&ws.alt[est.alt_block(l, 1)].z[l]),
                    ScoreWith::Mean => ScoreAlt::Mean,
                };
                be.score_unit_grad(&mut ws.unit_grad[l], &ws.main.logits[l], &ws.main.z[l], alt, &ws.row, b, n);
            }
        }
        let g = &mut grads.enc[l - 1];
        be.matmul_backward_weight(&mut g.w, &ws.main.z[l - 1], &ws.unit_grad[l], b, shape.width(l - 1), n);
        be.column_mean(&mut g.bias, &ws.unit_grad[l], b, n);
        let first = ws.variance_slots[2 * (l - 1)] as usize;
        be.grad_variance(
            &mut ws.partials,
            first,
            &ws.main.z[l - 1],
            &ws.unit_grad[l],
            &g.w,
            &g.bias,
            b,
            shape.width(l - 1),
            n,
            PerExample::Outer,
        );
    }

    // Decoder and prior: exact gradients of their log-likelihood terms, (target - p) ⊗ input.
    for m in 1..=depth {
        let n_out = shape.width(m - 1);
        be.bernoulli_delta(&mut ws.dec_delta[m], &ws.main.dec_logits[m], false, &ws.main.z[m - 1], b, n_out);
        let g = &mut grads.dec[m - 1];
        be.matmul_backward_weight(&mut g.w, &ws.main.z[m], &ws.dec_delta[m], b, shape.width(m), n_out);
        be.column_mean(&mut g.bias, &ws.dec_delta[m], b, n_out);
    }
    be.bernoulli_delta(&mut ws.prior_delta, &params.prior, true, &ws.main.z[depth], b, shape.width(depth));
    be.column_mean(&mut grads.prior, &ws.prior_delta, b, shape.width(depth));
}

/// The batch-mean single-sample ELBO of x (in `ws.main.z[0]`) without computing gradients:
/// the test-set evaluation.
pub fn evaluate_elbo<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    ws: &mut Workspace<B>,
    est: &Estimator,
    draw: Draw<B::Array<u32>>,
) -> f64 {
    forward_main(be, params, ws, est, draw);
    let tl = ws.terms_layout;
    let means = be.term_means(&ws.terms, ws.b, tl.width());
    tl.elbo_coef().iter().zip(&means).map(|(&c, &m)| c as f64 * m).sum()
}
