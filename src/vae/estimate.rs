//! Each estimator's logit gradients for one encoder layer, over [`Backend`], once the chains
//! are sampled and scored: HNCA's credit on one chain (the main one, or each of K averaged with
//! leave-one-out baselines), the relaxed ∇F_l that Double CV and RODEO build their control
//! variates from, and the K-sample score-function combination (docs/estimators.md).

use super::estimator::{Combine, Estimator};
use super::model::Params;
use super::workspace::Workspace;
use crate::backend::{Backend, GemmInit, HncaAbove, HncaInputs, KScoreInputs, KScoreMode};

/// HNCA's credit for encoder layer l on chain `k` of the layer (0: the main chain; else its
/// alternative chain k): the fused credit passes over the chain's two sets of children (the
/// decoder layer that takes z_l as input, and encoder layer l+1), then the per-unit credit,
/// with the per-row reward at `reward[reward_offset..]`, scaled and added to `ws.unit_grad[l]`
/// or written there.
pub fn hnca_chain<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    ws: &mut Workspace<B>,
    est: &Estimator,
    l: usize,
    k: usize,
    reward_offset: usize,
    scale: f32,
    accumulate: bool,
) {
    let (b, shape, tl) = (ws.b, &ws.shape, ws.terms_layout);
    let depth = shape.depth();
    let n = shape.width(l);
    let block = if k == 0 { 0 } else { est.alt_block(l, k) };
    let chain = if k == 0 { &ws.main } else { &ws.alt[block] };
    let below = &ws.main.z[l - 1];
    be.credit_pass(
        &mut ws.flip_dec[l],
        None,
        &chain.z[l],
        &params.dec[l - 1].w,
        &mut ws.tables_dec[l],
        &chain.dec_logits[l],
        below,
        b,
        n,
        shape.width(l - 1),
    );
    let above = if l < depth {
        be.credit_pass(
            &mut ws.flip_enc_lp[l],
            Some(&mut ws.flip_enc_ent[l]),
            &chain.z[l],
            &params.enc[l].w,
            &mut ws.tables_enc[l],
            &chain.logits[l + 1],
            &chain.z[l + 1],
            b,
            n,
            shape.width(l + 1),
        );
        Some(HncaAbove { flip_lp: &ws.flip_enc_lp[l], flip_ent: &ws.flip_enc_ent[l], col_ent: tl.enc_entropy(block, l + 1) })
    } else {
        None
    };
    let (gen_logits, gen_is_prior, col_gen) = if l < depth {
        (&chain.dec_logits[l + 1], false, tl.dec_log_prob(block, l + 1))
    } else {
        (&params.prior, true, tl.prior_log_prob(block))
    };
    let reward = if ws.plan.combine == Combine::HncaK { &ws.chain_rows } else { &ws.row };
    let inputs = HncaInputs {
        scale,
        accumulate,
        // The encoder logits of layer l are the same for every chain of the layer.
        logits: &ws.main.logits[l],
        z: &chain.z[l],
        flip_dec: &ws.flip_dec[l],
        col_dec: tl.dec_log_prob(block, l),
        gen_logits,
        gen_is_prior,
        col_gen,
        above,
        reward,
        reward_offset,
        terms: &ws.terms,
        t: tl.width(),
        all_child: est.all_child,
    };
    be.hnca_unit_grad(&mut ws.unit_grad[l], &inputs, b, n);
}

/// HNCA with K samples for layer l: each chain's reward less the mean of the other chains'
/// targets (one weighted row sum), then the chains' credit, averaged.
pub fn hnca_k_layer<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, est: &Estimator, l: usize) {
    let (b, t, k) = (ws.b, ws.terms_layout.width(), est.samples);
    be.weighted_row_sum(&mut ws.chain_rows, &ws.terms, &ws.chain_coef[l - 1], None, b, t);
    for c in 0..k {
        hnca_chain(be, params, ws, est, l, c, c * b, 1.0 / k as f32, c > 0);
    }
}

/// ∇_{z_l} F_l of each chain of layer l, with z_l relaxed to real values and the chain's upper
/// layers held (docs/estimators.md §0): the logits of the generative term that scores z_l, plus
/// (z_{l-1} - σ(d)) W_decᵀ from log p(z_{l-1} | z_l), plus, below the top, the derivative of
/// H(q_{l+1} | z_l) through encoder layer l+1's weights.
pub fn relaxed_reward_grads<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, est: &Estimator, l: usize) {
    let (b, shape) = (ws.b, ws.shape.clone());
    let depth = shape.depth();
    let (n, n_below) = (shape.width(l), shape.width(l - 1));
    for c in 0..est.samples {
        let chain = if c == 0 { &ws.main } else { &ws.alt[est.alt_block(l, c)] };
        let out = &mut ws.grad_f[l][c];
        be.bernoulli_delta(&mut ws.grad_f_below[l], &chain.dec_logits[l], false, &ws.main.z[l - 1], b, n_below);
        let init = if l < depth {
            be.affine(out, &chain.dec_logits[l + 1], 1.0, 0.0, b * n);
            GemmInit::Keep
        } else {
            GemmInit::Broadcast(&params.prior)
        };
        be.matmul_backward_input(out, &ws.grad_f_below[l], &params.dec[l - 1].w, init, b, n, n_below);
        if l < depth {
            let n_above = shape.width(l + 1);
            be.entropy_grad(&mut ws.grad_f_above[l], &chain.logits[l + 1], b, n_above);
            be.matmul_backward_input(out, &ws.grad_f_above[l], &params.enc[l].w, GemmInit::Keep, b, n, n_above);
        }
    }
}

/// The K-sample score-function estimators for layer l (leave-one-out, ARMS, Double CV, RODEO):
/// the chains' F_l differences, ∇F_l where the control variates need it, then the per-row
/// combination in `mode`, and the batch mean of the coefficients' ascent directions.
pub fn k_score_layer<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, est: &Estimator, mode: KScoreMode, l: usize) {
    let (b, t, depth) = (ws.b, ws.terms_layout.width(), ws.shape.depth());
    let n = ws.shape.width(l);
    be.weighted_row_sum(&mut ws.chain_rows, &ws.terms, &ws.chain_coef[l - 1], None, b, t);
    let cv = ws.plan.learned;
    if cv > 0 {
        relaxed_reward_grads(be, params, ws, est, l);
    }
    let first = est.alt_block(l, 1);
    let mut z: Vec<&B::Buf> = vec![&ws.main.z[l]];
    z.extend(ws.alt[first..first + ws.plan.alternatives].iter().map(|c| &c.z[l]));
    let grad_f: Vec<&B::Buf> = ws.grad_f[l].iter().collect();
    let inputs = KScoreInputs {
        mode,
        logits: &ws.main.logits[l],
        z: &z,
        rows: &ws.chain_rows,
        grad_f: &grad_f,
        coef: (cv > 0).then_some(&ws.cv_coef[l]),
        // The variance loss is the mean of g² over the batch, the layer's units and the layers.
        loss_scale: -2.0 / (n * depth) as f32,
    };
    be.k_score_unit_grad(&mut ws.unit_grad[l], (cv > 0).then_some(&mut ws.cv_partials[l]), &inputs, b, n);
    if cv > 0 {
        be.column_mean(&mut ws.cv_grad[l], &ws.cv_partials[l], b, cv);
    }
}
