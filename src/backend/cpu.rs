//! The CPU backend: the reference for every operation, and the fallback trainer.
//! Row-parallel with rayon; GEMMs through matrixmultiply; the transcendental hot loops use the
//! branch-free approximations of [`crate::math`] so that they vectorise.

use rayon::prelude::*;

use super::{AdamStep, Backend, HncaInputs, SampleMode, ScoreAlt};
use crate::math::{bernoulli_entropy_from_logit, log_sigmoid, log_sigmoid_and_entropy, sigmoid};
use crate::rng::RngKey;

/// Probabilities are clipped to [CLIP, 1 - CLIP] wherever p itself enters a formula
/// (p(1-p), the hindsight ratios, log((1-p)/p)); log-probabilities use raw logits.
pub const CLIP: f32 = 1e-5;

#[inline(always)]
pub fn clipped_p(logit: f32) -> f32 {
    sigmoid(logit).clamp(CLIP, 1.0 - CLIP)
}

/// Wall time spent in the credit pass since the last [`take_credit_nanos`], for `hnca bench`'s
/// cost model (a handful of clock reads per step).
static CREDIT_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Returns and resets the wall time the credit pass has taken, in nanoseconds.
pub fn take_credit_nanos() -> u64 {
    CREDIT_NANOS.swap(0, std::sync::atomic::Ordering::Relaxed)
}

/// Rows below this many elements of work are not worth splitting across threads.
const PAR_MIN_WORK: usize = 1 << 15;

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    pub fn new() -> Self {
        Cpu
    }
}

/// Lanes of the explicit partial sums: an f32 `+=` into one accumulator cannot be vectorised
/// (reordering changes the rounding), eight independent ones can.
const LANES: usize = 8;

/// Σ xs in eight interleaved partial sums, then those in order: a fixed, vectorisable order.
#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += x;
    }
    acc.iter().sum()
}

/// One row of the credit pass: its outputs, its inputs, and two scratch rows.
struct CreditJob<'a> {
    /// Outputs for this row's parents, (p): the change in the children's log-likelihood and,
    /// if wanted, in their entropy when each parent flips.
    flip_lp: &'a mut [f32],
    flip_ent: &'a mut [f32],
    /// This row's parent samples, (p); weights (p, c); the row's children.
    parent: &'a [f32],
    w: &'a [f32],
    row: &'a CreditRow,
    /// Scratch, (c) each.
    lp: &'a mut [f32],
    ent: &'a mut [f32],
}

/// For each parent i, the change in the children's log-likelihood (and, if `ENT`, in their
/// entropy) when parent i is flipped. `sa[c] = s_c·a_c` and `s[c] = 2·child_c - 1`, so the
/// flipped, signed logit is x = sa[c] + d_i·s[c]·w[i, c] with d_i = 1 - 2·parent_i (entropy is
/// symmetric, so the signed logit serves it too); `lp0` and `ent0` hold each child's unflipped
/// terms. Summing per-child differences, rather than subtracting two totals, keeps HNCA's credit
/// free of cancellation in f32. The transcendental part runs as a map into the scratch rows so
/// that it vectorises; the sums come after, in a fixed order.
#[inline(always)]
fn credit_row<const ENT: bool>(job: CreditJob) {
    let r = job.row;
    credit_row_slices::<ENT>(job.flip_lp, job.flip_ent, job.parent, job.w, &r.sa, &r.s, &r.lp0, &r.ent0, job.lp, job.ent)
}

/// The loop itself, every slice its own argument: `&mut` arguments are known not to alias, which
/// is what lets the compiler vectorise the map (fields of a struct would not carry that).
#[inline(always)]
fn credit_row_slices<const ENT: bool>(
    flip_lp: &mut [f32],
    flip_ent: &mut [f32],
    parent: &[f32],
    w: &[f32],
    sa: &[f32],
    s: &[f32],
    lp0: &[f32],
    ent0: &[f32],
    lp: &mut [f32],
    ent: &mut [f32],
) {
    let c = sa.len();
    let (s, lp0, lp) = (&s[..c], &lp0[..c], &mut lp[..c]);
    for (i, &u) in parent.iter().enumerate() {
        let d = 1.0 - 2.0 * u;
        let wi = &w[i * c..(i + 1) * c];
        if ENT {
            let (ent0, ent) = (&ent0[..c], &mut ent[..c]);
            for j in 0..c {
                let (l, h) = log_sigmoid_and_entropy(sa[j] + d * s[j] * wi[j]);
                lp[j] = l - lp0[j];
                ent[j] = h - ent0[j];
            }
            flip_ent[i] = lane_sum(ent);
        } else {
            for j in 0..c {
                lp[j] = log_sigmoid(sa[j] + d * s[j] * wi[j]) - lp0[j];
            }
        }
        flip_lp[i] = lane_sum(lp);
    }
}

/// One row's children as the credit pass reads them: signed logits, signs, and the unflipped
/// log-probability and entropy of each child.
struct CreditRow {
    sa: Vec<f32>,
    s: Vec<f32>,
    lp0: Vec<f32>,
    ent0: Vec<f32>,
}

impl CreditRow {
    fn new(child_logits: &[f32], child: &[f32]) -> Self {
        let s: Vec<f32> = child.iter().map(|&x| 2.0 * x - 1.0).collect();
        let sa: Vec<f32> = child_logits.iter().zip(&s).map(|(a, s)| a * s).collect();
        let (lp0, ent0) = sa.iter().map(|&x| log_sigmoid_and_entropy(x)).unzip();
        CreditRow { sa, s, lp0, ent0 }
    }
}

/// The instruction sets the credit pass is compiled for. Plain `a * b + c` is never contracted
/// into FMA and the sums run in a fixed 8-lane order, so every path gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    Portable,
    Avx2,
    Avx512,
}

impl Simd {
    /// The widest the CPU supports, unless HNCA_CPU_SIMD (portable, avx2, avx512) asks for a
    /// narrower one (for benchmarks and tests); chosen once per process.
    pub fn selected() -> Simd {
        static CHOICE: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| {
            let best = Simd::best_supported();
            match std::env::var("HNCA_CPU_SIMD").as_deref() {
                Ok("portable") => Simd::Portable,
                Ok("avx2") if best != Simd::Portable => Simd::Avx2,
                _ => best,
            }
        })
    }

    pub fn best_supported() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn credit_row_avx2<const ENT: bool>(job: CreditJob) {
    credit_row::<ENT>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn credit_row_avx512<const ENT: bool>(job: CreditJob) {
    credit_row::<ENT>(job)
}

fn credit_row_dispatch<const ENT: bool>(simd: Simd, job: CreditJob) {
    match simd {
        // SAFETY: `Simd::selected` only names instruction sets the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { credit_row_avx512::<ENT>(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { credit_row_avx2::<ENT>(job) },
        _ => credit_row::<ENT>(job),
    }
}

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn write(&self, dst: &mut Vec<f32>, host: &[f32]) {
        dst.copy_from_slice(host);
    }

    fn matmul_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, w: &Vec<f32>, bias: &Vec<f32>, b: usize, k: usize, n: usize) {
        debug_assert_eq!((out.len(), inp.len(), w.len(), bias.len()), (b * n, b * k, k * n, n));
        for row in out.chunks_mut(n) {
            row.copy_from_slice(bias);
        }
        // SAFETY: the slices have exactly the (b,k), (k,n), (b,n) row-major extents used here.
        unsafe {
            matrixmultiply::sgemm(
                b,
                k,
                n,
                1.0,
                inp.as_ptr(),
                k as isize,
                1,
                w.as_ptr(),
                n as isize,
                1,
                1.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }

    fn matmul_backward_weight(&self, dw: &mut Vec<f32>, inp: &Vec<f32>, dout: &Vec<f32>, b: usize, k: usize, n: usize) {
        debug_assert_eq!((dw.len(), inp.len(), dout.len()), (k * n, b * k, b * n));
        // SAFETY: inpᵀ is read as (k, b) with row stride 1 and column stride k.
        unsafe {
            matrixmultiply::sgemm(
                k,
                b,
                n,
                1.0 / b as f32,
                inp.as_ptr(),
                1,
                k as isize,
                dout.as_ptr(),
                n as isize,
                1,
                0.0,
                dw.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }

    fn column_mean(&self, out: &mut Vec<f32>, x: &Vec<f32>, b: usize, n: usize) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for row in x.chunks(n).take(b) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        let inv = 1.0 / b as f32;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    fn bernoulli_sample(
        &self,
        z: &mut Vec<f32>,
        anti: Option<&mut Vec<f32>>,
        logits: &Vec<f32>,
        key: RngKey,
        mode: SampleMode,
        b: usize,
        n: usize,
    ) {
        let mut u = vec![0.0f32; b * n];
        key.fill_uniform(0, &mut u);
        match (mode, anti) {
            (SampleMode::Standard, _) => {
                for ((zi, &a), &ui) in z.iter_mut().zip(logits).zip(&u) {
                    *zi = (ui < clipped_p(a)) as u8 as f32;
                }
            }
            (SampleMode::Antithetic, Some(anti)) => {
                for (((zi, ai), &a), &ui) in z.iter_mut().zip(anti.iter_mut()).zip(logits).zip(&u) {
                    let p = clipped_p(a);
                    *zi = (1.0 - ui < p) as u8 as f32;
                    *ai = (ui < p) as u8 as f32;
                }
            }
            (SampleMode::Antithetic, None) => panic!("antithetic sampling needs an output for the twin"),
        }
    }

    fn log_prob_rows(
        &self,
        terms: &mut Vec<f32>,
        t: usize,
        col: usize,
        logits: &Vec<f32>,
        broadcast: bool,
        targets: &Vec<f32>,
        base: Option<(&Vec<f32>, &Vec<f32>)>,
        b: usize,
        n: usize,
    ) {
        fn row(v: &[f32], r: usize, n: usize, broadcast: bool) -> &[f32] {
            if broadcast {
                &v[..n]
            } else {
                &v[r * n..(r + 1) * n]
            }
        }
        let lp = |a: f32, x: f32| log_sigmoid((2.0 * x - 1.0) * a);
        for r in 0..b {
            let (a, x) = (row(logits, r, n, broadcast), &targets[r * n..(r + 1) * n]);
            let mut s = 0.0f32;
            match base {
                None => (0..n).for_each(|j| s += lp(a[j], x[j])),
                Some((a0, x0)) => {
                    let (a0, x0) = (row(a0, r, n, broadcast), &x0[r * n..(r + 1) * n]);
                    (0..n).for_each(|j| s += lp(a[j], x[j]) - lp(a0[j], x0[j]));
                }
            }
            terms[r * t + col] = s;
        }
    }

    fn entropy_rows(&self, terms: &mut Vec<f32>, t: usize, col: usize, logits: &Vec<f32>, base: Option<&Vec<f32>>, b: usize, n: usize) {
        for r in 0..b {
            let a = &logits[r * n..(r + 1) * n];
            let mut s = 0.0f32;
            match base {
                None => a.iter().for_each(|&x| s += bernoulli_entropy_from_logit(x)),
                Some(a0) => a
                    .iter()
                    .zip(&a0[r * n..(r + 1) * n])
                    .for_each(|(&x, &x0)| s += bernoulli_entropy_from_logit(x) - bernoulli_entropy_from_logit(x0)),
            }
            terms[r * t + col] = s;
        }
    }

    fn weighted_row_sum(&self, out: &mut Vec<f32>, terms: &Vec<f32>, coef: &[f32], offset: f32, b: usize, t: usize) {
        for r in 0..b {
            let row = &terms[r * t..(r + 1) * t];
            out[r] = row.iter().zip(coef).map(|(x, c)| x * c).sum::<f32>() + offset;
        }
    }

    fn term_means(&self, terms: &Vec<f32>, b: usize, t: usize) -> Vec<f64> {
        let mut m = vec![0.0f64; t];
        for row in terms.chunks(t).take(b) {
            for (mi, &x) in m.iter_mut().zip(row) {
                *mi += x as f64;
            }
        }
        m.iter_mut().for_each(|x| *x /= b as f64);
        m
    }

    fn credit_pass(
        &self,
        flip_lp: &mut Vec<f32>,
        flip_ent: Option<&mut Vec<f32>>,
        parent: &Vec<f32>,
        w: &Vec<f32>,
        child_logits: &Vec<f32>,
        child: &Vec<f32>,
        b: usize,
        p: usize,
        c: usize,
    ) {
        debug_assert_eq!((flip_lp.len(), parent.len(), w.len(), child_logits.len(), child.len()), (b * p, b * p, p * c, b * c, b * c));
        let want_ent = flip_ent.is_some();
        let mut no_ent = Vec::new();
        let ent = match flip_ent {
            Some(e) => e,
            None => {
                no_ent.resize(b * p, 0.0);
                &mut no_ent
            }
        };
        let started = std::time::Instant::now();
        let simd = Simd::selected();
        let row = |(r, (flip_lp, flip_ent)): (usize, (&mut [f32], &mut [f32]))| {
            let children = CreditRow::new(&child_logits[r * c..(r + 1) * c], &child[r * c..(r + 1) * c]);
            let (mut lp, mut ent) = (vec![0.0f32; c], vec![0.0f32; if want_ent { c } else { 0 }]);
            let job = CreditJob { flip_lp, flip_ent, parent: &parent[r * p..(r + 1) * p], w, row: &children, lp: &mut lp, ent: &mut ent };
            if want_ent {
                credit_row_dispatch::<true>(simd, job);
            } else {
                credit_row_dispatch::<false>(simd, job);
            }
        };
        if b * p * c >= PAR_MIN_WORK {
            flip_lp.par_chunks_mut(p).zip(ent.par_chunks_mut(p)).enumerate().for_each(row);
        } else {
            flip_lp.chunks_mut(p).zip(ent.chunks_mut(p)).enumerate().for_each(row);
        }
        CREDIT_NANOS.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn hnca_unit_grad(&self, out: &mut Vec<f32>, inp: &HncaInputs<'_, Vec<f32>>, b: usize, p: usize) {
        let t = inp.t;
        for r in 0..b {
            let row_term = |col: usize| inp.terms[r * t + col];
            let dec_actual = row_term(inp.col_dec);
            let gen_total = row_term(inp.col_gen);
            let reward = inp.reward[r];
            let above = inp.above.as_ref().map(|a| (a, row_term(a.col_ent)));
            for k in 0..p {
                let i = r * p + k;
                let pk = clipped_p(inp.logits[i]);
                let on = inp.z[i] > 0.5;
                // A term's value at Φ = 1 and Φ = 0, from its actual value and the change that
                // flipping Φ makes (the credit pass's output).
                let split = |actual: f32, change: f32| if on { (actual, actual + change) } else { (actual + change, actual) };
                let (dec1, dec0) = split(dec_actual, inp.flip_dec[i]);
                let (rho1, rho0, ent1, ent0) = match &above {
                    None => (1.0, 1.0, 0.0, 0.0),
                    Some((a, ent_actual)) => {
                        // δ = log P_0 - log P_1 is ± the change itself: no cancellation.
                        let change = a.flip_lp[i];
                        let (rho1, rho0) = hindsight_ratios(pk, if on { change } else { -change });
                        let (e1, e0) = split(*ent_actual, a.flip_ent[i]);
                        (rho1, rho0, e1, e0)
                    }
                };
                let g = if inp.gen_is_prior { inp.gen_logits[k] } else { inp.gen_logits[i] };
                let (own1, own0) = (log_sigmoid(g), log_sigmoid(-g));
                let siblings = gen_total - if on { own1 } else { own0 };
                let (dec_term, ent_term) =
                    if inp.all_child { (rho1 * dec1 - rho0 * dec0, rho1 * ent1 - rho0 * ent0) } else { (dec1 - dec0, ent1 - ent0) };
                let credit = ((1.0 - pk) / pk).ln() + dec_term + rho1 * own1 - rho0 * own0 + (rho1 - rho0) * (siblings + reward) + ent_term;
                out[i] = pk * (1.0 - pk) * credit;
            }
        }
    }

    fn score_unit_grad(
        &self,
        out: &mut Vec<f32>,
        logits: &Vec<f32>,
        z: &Vec<f32>,
        alt: ScoreAlt<'_, Vec<f32>>,
        coef: &Vec<f32>,
        b: usize,
        n: usize,
    ) {
        for r in 0..b {
            for j in 0..n {
                let i = r * n + j;
                let p = clipped_p(logits[i]);
                let own_entropy = p * (1.0 - p) * ((1.0 - p) / p).ln();
                let score = match alt {
                    ScoreAlt::Mean => z[i] - p,
                    ScoreAlt::Sample(z2) => z[i] - z2[i],
                    ScoreAlt::Antithetic(zt) => (z[i] - zt[i]) * p.max(1.0 - p),
                };
                out[i] = own_entropy + coef[r] * score;
            }
        }
    }

    fn bernoulli_delta(&self, out: &mut Vec<f32>, logits: &Vec<f32>, broadcast: bool, targets: &Vec<f32>, b: usize, n: usize) {
        for r in 0..b {
            for j in 0..n {
                let a = if broadcast { logits[j] } else { logits[r * n + j] };
                out[r * n + j] = targets[r * n + j] - sigmoid(a);
            }
        }
    }

    fn grad_variance_sums(&self, inp: &Vec<f32>, g: &Vec<f32>, dw: &Vec<f32>, db: &Vec<f32>, b: usize, k: usize, n: usize) -> (f64, f64) {
        // var_r(x_r) = mean_r(x_r²) - mean_r(x_r)², summed over parameters. For weights,
        // Σ_{i,j} mean_r (u_ri g_rj)² = mean_r |u_r|²·|g_r|², so no (b, k, n) tensor is needed.
        let mut sq_w = 0.0f64;
        let mut sq_b = 0.0f64;
        for r in 0..b {
            let u2: f64 = inp[r * k..(r + 1) * k].iter().map(|&x| (x as f64) * (x as f64)).sum();
            let g2: f64 = g[r * n..(r + 1) * n].iter().map(|&x| (x as f64) * (x as f64)).sum();
            sq_w += u2 * g2;
            sq_b += g2;
        }
        let mean_sq = |v: &[f32]| v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        (sq_w / b as f64 - mean_sq(dw), sq_b / b as f64 - mean_sq(db))
    }

    fn adam(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, hp: AdamStep) {
        let c1 = 1.0 - hp.beta1.powi(hp.t.min(i32::MAX as u64) as i32);
        let c2 = 1.0 - hp.beta2.powi(hp.t.min(i32::MAX as u64) as i32);
        for i in 0..param.len() {
            let g = grad[i];
            m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
            v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
            param[i] += hp.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + hp.eps);
        }
    }
}

/// HNCA's hindsight ratios ρ_1 = P(Φ=1 | children)/p and ρ_0 = P(Φ=0 | children)/(1-p), from the
/// fire rate p and δ = log P_0 - log P_1, branching on the sign of δ so no exponential overflows.
#[inline(always)]
pub fn hindsight_ratios(p: f32, delta: f32) -> (f32, f32) {
    if delta >= 0.0 {
        let e = (-delta).exp(); // P_1/P_0 ≤ 1
        let den = p * e + (1.0 - p);
        (e / den, 1.0 / den)
    } else {
        let e = delta.exp(); // P_0/P_1 < 1
        let den = p + (1.0 - p) * e;
        (1.0 / den, e / den)
    }
}
