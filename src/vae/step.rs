//! One training step, written once over [`Backend`]: sample the encoder, score every term,
//! run the estimator's credit computation, and produce gradients for every parameter, all at
//! the pre-update parameters.

use super::estimator::Estimator;
use super::model::{Params, Shape, Terms};
use crate::backend::{credit_tables_len, grad_variance_slots, Backend, HncaAbove, HncaInputs, SampleMode, ScoreAlt, StatsPlan};
use crate::rng::{stream, RngKey};

/// One sampled pass through the encoder and the decoder terms that score it.
/// Vectors are indexed by layer m (entry 0 is unused except `z[0] = x` in the main chain).
pub struct Chain<Buf> {
    /// Encoder logits a_m, (b, n_m).
    pub logits: Vec<Buf>,
    /// Samples z_m, (b, n_m).
    pub z: Vec<Buf>,
    /// Decoder logits of p(z_{m-1} | z_m), (b, n_{m-1}).
    pub dec_logits: Vec<Buf>,
}

impl<Buf> Chain<Buf> {
    fn new<B: Backend<Buf = Buf>>(be: &B, shape: &Shape, b: usize) -> Self {
        let depth = shape.depth();
        Chain {
            logits: (0..=depth).map(|m| be.zeros(if m == 0 { 0 } else { b * shape.width(m) })).collect(),
            z: (0..=depth).map(|m| be.zeros(b * shape.width(m))).collect(),
            dec_logits: (0..=depth).map(|m| be.zeros(if m == 0 { 0 } else { b * shape.width(m - 1) })).collect(),
        }
    }
}

/// Buffers for one step at batch size `b`; public so tests can read every intermediate.
pub struct Workspace<B: Backend> {
    pub b: usize,
    pub shape: Shape,
    pub terms_layout: Terms,
    /// The main sample; `main.z[0]` is the binarized input x, (b, n_0).
    pub main: Chain<B::Buf>,
    /// alt[l]: the alternative chain that starts at layer l (LOO, DisARM); alt[0] is unused.
    pub alt: Vec<Chain<B::Buf>>,
    /// The per-example terms table, (b, terms_layout.width()).
    pub terms: B::Buf,
    /// HNCA's credit-pass outputs for layer l, each (b, n_l): the change in the decoder's and
    /// the next encoder layer's log-likelihood, and in that layer's entropy, when a unit flips.
    pub flip_dec: Vec<B::Buf>,
    pub flip_enc_lp: Vec<B::Buf>,
    pub flip_enc_ent: Vec<B::Buf>,
    /// The credit passes' tables (e^±W of the weights into layer l's children): from the decoder
    /// layer that takes z_l as input, and from encoder layer l+1.
    pub tables_dec: Vec<B::Buf>,
    pub tables_enc: Vec<B::Buf>,
    /// The estimated logit gradient of encoder layer l, (b, n_l): per-example estimates.
    pub unit_grad: Vec<B::Buf>,
    /// Exact logit gradients of the decoder layers, (b, n_{l-1}), and of the prior, (b, n_L).
    pub dec_delta: Vec<B::Buf>,
    pub prior_delta: B::Buf,
    /// Per-row reward or coefficient, (b).
    pub row: B::Buf,
    /// The encoder layers' gradient-variance partial sums (4 f64 per slot), layer l's from slot
    /// `variance_slots[2(l-1)]`, `variance_slots[2(l-1)+1]` of them.
    pub partials: B::Array<f64>,
    pub variance_slots: Vec<u32>,
}

impl<B: Backend> Workspace<B> {
    pub fn new(be: &B, shape: &Shape, est: &Estimator, b: usize) -> Self {
        let depth = shape.depth();
        let alt_chains = if est.alternative().is_some() { depth } else { 0 };
        let terms_layout = Terms { depth, blocks: 1 + alt_chains };
        let per_layer = |f: &dyn Fn(usize) -> usize| (0..=depth).map(|m| be.zeros(f(m))).collect::<Vec<_>>();
        let hnca = est.is_hnca();
        let mut variance_slots = Vec::new();
        for l in 1..=depth {
            let first = variance_slots.iter().skip(1).step_by(2).sum::<u32>();
            variance_slots.extend([first, grad_variance_slots(b, shape.width(l - 1), shape.width(l)) as u32]);
        }
        let total_slots: u32 = variance_slots.iter().skip(1).step_by(2).sum();
        Workspace {
            b,
            shape: shape.clone(),
            terms_layout,
            main: Chain::new(be, shape, b),
            alt: (0..=alt_chains).map(|l| Chain::new(be, shape, if l == 0 { 0 } else { b })).collect(),
            terms: be.zeros(b * terms_layout.width()),
            flip_dec: per_layer(&|m| if hnca && m > 0 { b * shape.width(m) } else { 0 }),
            flip_enc_lp: per_layer(&|m| if hnca && m > 0 && m < depth { b * shape.width(m) } else { 0 }),
            flip_enc_ent: per_layer(&|m| if hnca && m > 0 && m < depth { b * shape.width(m) } else { 0 }),
            tables_dec: per_layer(&|m| if hnca && m > 0 { credit_tables_len(shape.width(m), shape.width(m - 1)) } else { 0 }),
            tables_enc: per_layer(&|m| if hnca && m > 0 && m < depth { credit_tables_len(shape.width(m), shape.width(m + 1)) } else { 0 }),
            unit_grad: per_layer(&|m| if m > 0 { b * shape.width(m) } else { 0 }),
            dec_delta: per_layer(&|m| if m > 0 { b * shape.width(m - 1) } else { 0 }),
            prior_delta: be.zeros(b * shape.width(depth)),
            row: be.zeros(b),
            partials: be.array(&vec![0.0f64; 4 * total_slots as usize]),
            variance_slots,
        }
    }

    /// What the step's statistics combine for estimator `est` (see [`Backend::step_stats`]):
    /// the ELBO of the main chain, each layer's baseline target, the encoder's layers.
    pub fn stats_plan(&self, est: &Estimator) -> StatsPlan {
        let (tl, shape) = (self.terms_layout, &self.shape);
        let mut coef = tl.elbo_coef();
        let baselines = if est.uses_baseline() { shape.depth() } else { 0 };
        for l in 1..=baselines {
            coef.extend(est.baseline_coef(&tl, l));
        }
        StatsPlan {
            coef,
            baselines,
            layer_params: (1..=shape.depth()).map(|l| (shape.width(l - 1) * shape.width(l) + shape.width(l)) as f64).collect(),
            slots: self.variance_slots.clone(),
            decay: crate::nn::BASELINE_DECAY,
        }
    }
}

/// Whose randomness a pass uses: training draws are keyed by the update step, evaluation
/// draws by their own stream family so they never collide with training. With a clock, the
/// clock's step is added to `step` on the device (a training step records `step: 0`).
pub struct Draw<'a, A> {
    pub seed: u64,
    pub step: u64,
    pub eval: bool,
    pub clock: Option<&'a A>,
}

impl<A> Clone for Draw<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for Draw<'_, A> {}

impl<A> Draw<'_, A> {
    /// A draw at a fixed step, without a clock (evaluation, tests).
    pub fn at(seed: u64, step: u64, eval: bool) -> Self {
        Draw { seed, step, eval, clock: None }
    }
    fn encoder(&self, m: usize) -> RngKey {
        let s = if self.eval { stream::eval_encoder(m as u32) } else { stream::encoder(m as u32) };
        RngKey::new(self.seed, self.step, s)
    }
    fn alternate(&self, start: usize, m: usize) -> RngKey {
        RngKey::new(self.seed, self.step, stream::alternate(start as u32, m as u32))
    }
}

/// Logits a_m = z_{m-1} W_m + b_m.
fn encode_layer<B: Backend>(be: &B, params: &Params<B::Buf>, shape: &Shape, m: usize, input: &B::Buf, logits: &mut B::Buf, b: usize) {
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
/// With DisARM, layer m's antithetic twin is written to `ws.alt[m].z[m]`.
pub fn forward_main<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, est: &Estimator, draw: Draw<B::Array<u32>>) {
    let (b, shape, tl) = (ws.b, ws.shape.clone(), ws.terms_layout);
    let t = tl.width();
    let depth = shape.depth();
    for m in 1..=depth {
        let (lo, hi) = ws.main.z.split_at_mut(m);
        encode_layer(be, params, &shape, m, &lo[m - 1], &mut ws.main.logits[m], b);
        let n = shape.width(m);
        match est.alternative() {
            Some(SampleMode::Antithetic) if !draw.eval => be.bernoulli_sample(
                &mut hi[0],
                Some(&mut ws.alt[m].z[m]),
                &ws.main.logits[m],
                draw.encoder(m),
                draw.clock,
                SampleMode::Antithetic,
                b,
                n,
            ),
            _ => be.bernoulli_sample(&mut hi[0], None, &ws.main.logits[m], draw.encoder(m), draw.clock, SampleMode::Standard, b, n),
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

/// The alternative chain that starts at layer l: its layer-l sample (a second draw from the
/// main logits for LOO; DisARM's twin, already drawn by `forward_main`), a fresh sample of
/// every layer above it, and in block l the terms of F_l for that chain, each stored as its
/// difference from the main chain's term (summed element by element, so f2 - f1 never
/// subtracts two f32 totals of hundreds of nats).
fn forward_alternative<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, mode: SampleMode, l: usize, draw: Draw<B::Array<u32>>) {
    let (b, shape, tl) = (ws.b, ws.shape.clone(), ws.terms_layout);
    let t = tl.width();
    let depth = shape.depth();
    let chain = &mut ws.alt[l];
    if mode == SampleMode::Standard {
        be.bernoulli_sample(&mut chain.z[l], None, &ws.main.logits[l], draw.alternate(l, l), draw.clock, SampleMode::Standard, b, shape.width(l));
    }
    for m in (l + 1)..=depth {
        let (lo, hi) = chain.z.split_at_mut(m);
        encode_layer(be, params, &shape, m, &lo[m - 1], &mut chain.logits[m], b);
        be.bernoulli_sample(&mut hi[0], None, &chain.logits[m], draw.alternate(l, m), draw.clock, SampleMode::Standard, b, shape.width(m));
        be.entropy_rows(&mut ws.terms, t, tl.enc_entropy(l, m), &chain.logits[m], Some(&ws.main.logits[m]), b, shape.width(m));
    }
    // log p(z_{l-1} | z'_l) scores the main chain's z_{l-1}; above that, the chain's own samples.
    decode_layer(
        be,
        params,
        &shape,
        l,
        &chain.z[l],
        &ws.main.z[l - 1],
        Some((&ws.main.dec_logits[l], &ws.main.z[l - 1])),
        &mut chain.dec_logits[l],
        &mut ws.terms,
        tl.dec_log_prob(l, l),
        t,
        b,
    );
    for m in (l + 1)..=depth {
        decode_layer(
            be,
            params,
            &shape,
            m,
            &chain.z[m],
            &chain.z[m - 1],
            Some((&ws.main.dec_logits[m], &ws.main.z[m - 1])),
            &mut chain.dec_logits[m],
            &mut ws.terms,
            tl.dec_log_prob(l, m),
            t,
            b,
        );
    }
    be.log_prob_rows(
        &mut ws.terms,
        t,
        tl.prior_log_prob(l),
        &params.prior,
        true,
        &chain.z[depth],
        Some((&params.prior, &ws.main.z[depth])),
        b,
        shape.width(depth),
    );
}

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

    forward_main(be, params, ws, est, draw);
    if let Some(mode) = est.alternative() {
        for l in 1..=depth {
            forward_alternative(be, params, ws, mode, l, draw);
        }
    }

    // Encoder: per-unit logit gradients from the estimator, then weight and bias gradients.
    for l in 1..=depth {
        let n = shape.width(l);
        let baseline = est.uses_baseline().then_some((baselines, l - 1));
        be.weighted_row_sum(&mut ws.row, &ws.terms, &est.reward_coef(&tl, l), baseline, b, t);
        if est.is_hnca() {
            hnca_layer(be, params, ws, est, l);
        } else {
            let alt = match est.alternative() {
                None => ScoreAlt::Mean,
                Some(SampleMode::Standard) => ScoreAlt::Sample(&ws.alt[l].z[l]),
                Some(SampleMode::Antithetic) => ScoreAlt::Antithetic(&ws.alt[l].z[l]),
            };
            be.score_unit_grad(&mut ws.unit_grad[l], &ws.main.logits[l], &ws.main.z[l], alt, &ws.row, b, n);
        }
        let g = &mut grads.enc[l - 1];
        be.matmul_backward_weight(&mut g.w, &ws.main.z[l - 1], &ws.unit_grad[l], b, shape.width(l - 1), n);
        be.column_mean(&mut g.bias, &ws.unit_grad[l], b, n);
        let first = ws.variance_slots[2 * (l - 1)] as usize;
        be.grad_variance(&mut ws.partials, first, &ws.main.z[l - 1], &ws.unit_grad[l], &g.w, &g.bias, b, shape.width(l - 1), n);
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

/// HNCA for encoder layer l: the fused credit passes over its two sets of children (the decoder
/// layer that takes z_l as input, and encoder layer l+1), then the per-unit credit.
/// Expects `ws.row` to hold R_l - b̄_l.
fn hnca_layer<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, est: &Estimator, l: usize) {
    let (b, shape, tl) = (ws.b, &ws.shape, ws.terms_layout);
    let depth = shape.depth();
    let n = shape.width(l);
    be.credit_pass(
        &mut ws.flip_dec[l],
        None,
        &ws.main.z[l],
        &params.dec[l - 1].w,
        &mut ws.tables_dec[l],
        &ws.main.dec_logits[l],
        &ws.main.z[l - 1],
        b,
        n,
        shape.width(l - 1),
    );
    let above = if l < depth {
        be.credit_pass(
            &mut ws.flip_enc_lp[l],
            Some(&mut ws.flip_enc_ent[l]),
            &ws.main.z[l],
            &params.enc[l].w,
            &mut ws.tables_enc[l],
            &ws.main.logits[l + 1],
            &ws.main.z[l + 1],
            b,
            n,
            shape.width(l + 1),
        );
        Some(HncaAbove { flip_lp: &ws.flip_enc_lp[l], flip_ent: &ws.flip_enc_ent[l], col_ent: tl.enc_entropy(0, l + 1) })
    } else {
        None
    };
    let (gen_logits, gen_is_prior, col_gen) = if l < depth {
        (&ws.main.dec_logits[l + 1], false, tl.dec_log_prob(0, l + 1))
    } else {
        (&params.prior, true, tl.prior_log_prob(0))
    };
    let inputs = HncaInputs {
        logits: &ws.main.logits[l],
        z: &ws.main.z[l],
        flip_dec: &ws.flip_dec[l],
        col_dec: tl.dec_log_prob(0, l),
        gen_logits,
        gen_is_prior,
        col_gen,
        above,
        reward: &ws.row,
        terms: &ws.terms,
        t: tl.width(),
        all_child: est.all_child,
    };
    be.hnca_unit_grad(&mut ws.unit_grad[l], &inputs, b, n);
}

/// The batch-mean single-sample ELBO of x (in `ws.main.z[0]`) without computing gradients:
/// the test-set evaluation.
pub fn evaluate_elbo<B: Backend>(be: &B, params: &Params<B::Buf>, ws: &mut Workspace<B>, est: &Estimator, draw: Draw<B::Array<u32>>) -> f64 {
    forward_main(be, params, ws, est, draw);
    let tl = ws.terms_layout;
    let means = be.term_means(&ws.terms, ws.b, tl.width());
    tl.elbo_coef().iter().zip(&means).map(|(&c, &m)| c as f64 * m).sum()
}
