//! The sampled passes of a step, written once over [`Backend`]: the main chain (encoder
//! samples, then every term of the ELBO into block 0 of the terms table), and the alternative
//! chains of the estimators that sample a layer K times, each starting at its layer and scored
//! into its own block.

use super::estimator::{AltTerms, Estimator, LayerDraw};
use super::model::{Params, Shape};
use super::workspace::{Draw, Workspace};
use crate::backend::{Backend, SampleMode};

/// Logits a_m = z_{m-1} W_m + b_m.
pub(crate) fn encode_layer<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    shape: &Shape,
    m: usize,
    input: &B::Buf,
    logits: &mut B::Buf,
    b: usize,
) {
    let d = &params.enc[m - 1];
    be.matmul_forward(logits, input, &d.w, &d.bias, b, shape.width(m - 1), shape.width(m));
}

/// log p(z_{m-1} | z_m) of a chain into its block of the terms table; with `base`, relative to
/// the main chain's (decoder logits, targets) of the same layer.
fn decode_layer<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    shape: &Shape,
    m: usize,
    z_m: &B::Buf,
    target: &B::Buf,
    base: Option<(&B::Buf, &B::Buf)>,
    dec_logits: &mut B::Buf,
    terms: &mut B::Buf,
    col: usize,
    t: usize,
    b: usize,
) {
    let d = &params.dec[m - 1];
    be.matmul_forward(dec_logits, z_m, &d.w, &d.bias, b, shape.width(m), shape.width(m - 1));
    be.log_prob_rows(terms, t, col, dec_logits, false, target, base, b, shape.width(m - 1));
}

/// Samples the main chain from x (already in `ws.main.z[0]`) and fills block 0 of the terms.
/// DisARM's twin and ARMS's other K - 1 draws of layer m are drawn with it, into the
/// alternative chains of layer m.
pub fn forward_main<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, est: &Estimator, draw: Draw<B::Array<u32>>) {
    let (b, shape, tl) = (ws.b, ws.shape.clone(), ws.terms_layout);
    let t = tl.width();
    let depth = shape.depth();
    for m in 1..=depth {
        let (lo, hi) = ws.main.z.split_at_mut(m);
        encode_layer(be, params, &shape, m, &lo[m - 1], &mut ws.main.logits[m], b);
        let n = shape.width(m);
        let logits = &ws.main.logits[m];
        match ws.plan.draw {
            LayerDraw::Antithetic if !draw.eval => {
                let twin = &mut ws.alt[est.alt_block(m, 1)].z[m];
                be.bernoulli_sample(&mut hi[0], Some(twin), logits, draw.encoder(m), draw.clock, SampleMode::Antithetic, b, n);
            }
            LayerDraw::Arms if !draw.eval => {
                let first = est.alt_block(m, 1);
                let mut zs: Vec<&mut B::Buf> = vec![&mut hi[0]];
                zs.extend(ws.alt[first..first + ws.plan.alternatives].iter_mut().map(|c| &mut c.z[m]));
                be.arms_sample(&mut zs, logits, draw.arms(m), draw.clock, b, n);
            }
            _ => be.bernoulli_sample(&mut hi[0], None, logits, draw.encoder(m), draw.clock, SampleMode::Standard, b, n),
        }
        be.entropy_rows(&mut ws.terms, t, tl.enc_entropy(0, m), &ws.main.logits[m], None, b, n);
    }
    for m in 1..=depth {
        decode_layer(
            be,
            params,
            &shape,
            m,
            &ws.main.z[m],
            &ws.main.z[m - 1],
            None,
            &mut ws.main.dec_logits[m],
            &mut ws.terms,
            tl.dec_log_prob(0, m),
            t,
            b,
        );
    }
    be.log_prob_rows(&mut ws.terms, t, tl.prior_log_prob(0), &params.prior, true, &ws.main.z[depth], None, b, shape.width(depth));
}

/// Alternative chain j of layer l: its layer-l sample (drawn here from the main logits for the
/// independent estimators; DisARM's and ARMS's were drawn by [`forward_main`]), a fresh sample
/// of every layer above it, and in its block the terms of F_l for that chain (and those HNCA's
/// credit reads). The score-function estimators store each term as its difference from the
/// main chain's same term (summed element by element, so F_l(chain) - F_l(main) never
/// subtracts two f32 totals of hundreds of nats); HNCA with K samples stores the values.
pub fn forward_alternative<B: Backend>(
    be: &B,
    params: &Params<B::Buf>,
    ws: &mut Workspace<B>,
    est: &Estimator,
    l: usize,
    j: usize,
    draw: Draw<B::Array<u32>>,
) {
    let (b, shape, tl) = (ws.b, ws.shape.clone(), ws.terms_layout);
    let t = tl.width();
    let depth = shape.depth();
    let block = est.alt_block(l, j);
    let plan = ws.plan;
    let relative = plan.alt_terms == AltTerms::Differences;
    let chain = &mut ws.alt[block];
    let main = &ws.main;
    if plan.draw == LayerDraw::Independent {
        be.bernoulli_sample(
            &mut chain.z[l],
            None,
            &main.logits[l],
            draw.alternate(block, l),
            draw.clock,
            SampleMode::Standard,
            b,
            shape.width(l),
        );
    }
    for m in (l + 1)..=depth {
        let (lo, hi) = chain.z.split_at_mut(m);
        encode_layer(be, params, &shape, m, &lo[m - 1], &mut chain.logits[m], b);
        be.bernoulli_sample(
            &mut hi[0],
            None,
            &chain.logits[m],
            draw.alternate(block, m),
            draw.clock,
            SampleMode::Standard,
            b,
            shape.width(m),
        );
        let base = relative.then_some(&main.logits[m]);
        be.entropy_rows(&mut ws.terms, t, tl.enc_entropy(block, m), &chain.logits[m], base, b, shape.width(m));
    }
    // log p(z_{l-1} | z'_l) scores the main chain's z_{l-1}; above that, the chain's own samples.
    for m in l..=depth {
        let target = if m == l { &main.z[l - 1] } else { &chain.z[m - 1] };
        let base = relative.then_some((&main.dec_logits[m], &main.z[m - 1]));
        let (z_m, dec) = (&chain.z[m], &mut chain.dec_logits[m]);
        decode_layer(be, params, &shape, m, z_m, target, base, dec, &mut ws.terms, tl.dec_log_prob(block, m), t, b);
    }
    let base = relative.then_some((&params.prior, &main.z[depth]));
    be.log_prob_rows(&mut ws.terms, t, tl.prior_log_prob(block), &params.prior, true, &chain.z[depth], base, b, shape.width(depth));
}
