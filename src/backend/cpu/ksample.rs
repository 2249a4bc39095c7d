//! The CPU twins of kernels/ksample.cu: ARMS's antithetic K-tuples and the K-sample
//! score-function estimators' per-row combination of a layer's chains (leave-one-out, ARMS,
//! Double CV, RODEO with its learned control network; docs/estimators.md), with the ascent
//! directions of what they learn. Row by row, with every per-chain scalar in a fixed-size table
//! on the stack, so a step allocates nothing.

use super::simd::Simd;
use super::{clipped_log_odds_against, clipped_p, clocked, Cpu};
use crate::backend::consts::{RODEO_B2, RODEO_BX, RODEO_BZ, RODEO_HIDDEN, RODEO_W2, RODEO_WX, RODEO_WZ};
use crate::backend::{KSampleOps, KScoreInputs, KScoreMode, MAX_SAMPLES};
use crate::math::powi_f32;
use crate::rng::RngKey;
use rayon::prelude::*;

const MAX_K: usize = MAX_SAMPLES as usize;

/// Rows of work below which a row loop stays on the calling thread.
const PAR_MIN_ROWS: usize = 8;
/// Elements (rows × units × chains) below which the per-row combination stays on the calling
/// thread.
const PAR_MIN_WORK: usize = 1 << 15;

/// One element's K ARMS draws from its K-1 uniforms `u` (sorted here), as kernels/ksample.cu
/// draws them: the spacings d of the sorted uniforms, U_k = (1 - d_k)^{K-1}, z_k = [U_k < p]
/// for p < ½, else [1 - U_k < p].
#[inline(always)]
pub fn arms_draws(p: f32, u: &mut [f32], out: &mut [f32]) {
    let m = u.len();
    for i in 1..m {
        let v = u[i];
        let mut j = i;
        while j > 0 && u[j - 1] > v {
            u[j] = u[j - 1];
            j -= 1;
        }
        u[j] = v;
    }
    let mut prev = 0.0f32;
    for (k, o) in out.iter_mut().enumerate().take(m + 1) {
        let next = if k < m { u[k] } else { 1.0 };
        let d = next - prev;
        prev = next;
        let big_u = powi_f32(1.0 - d, m as u32);
        *o = if p < 0.5 { (big_u < p) as u8 as f32 } else { (1.0 - big_u < p) as u8 as f32 };
    }
}

/// Output addresses that rayon's tasks may share: each task writes its own rows.
#[derive(Clone, Copy)]
struct Outputs<'a>(&'a [*mut f32]);
// SAFETY: tasks write disjoint rows of each output (see arms_sample).
unsafe impl Send for Outputs<'_> {}
unsafe impl Sync for Outputs<'_> {}

impl Outputs<'_> {
    /// Output c (a method, so closures capture the whole `Outputs`).
    fn get(self, c: usize) -> *mut f32 {
        self.0[c]
    }
}

/// See [`crate::backend::Backend::arms_sample`]. Rows in parallel; a row's uniforms are
/// consecutive (element i takes i·(K-1) ..), so they are drawn in blocks.
pub fn arms_sample(zs: &mut [&mut Vec<f32>], logits: &[f32], key: RngKey, b: usize, n: usize) {
    let k = zs.len();
    let m = k - 1;
    assert!((2..=MAX_K).contains(&k) && zs.iter().all(|z| z.len() >= b * n));
    let mut ptrs = [std::ptr::null_mut::<f32>(); MAX_K];
    for (p, z) in ptrs.iter_mut().zip(zs.iter_mut()) {
        *p = z.as_mut_ptr();
    }
    let outputs = Outputs(&ptrs[..k]);
    let simd = Simd::selected();
    // The row's body is inside the instruction-set wrapper's closure (inlined there), so that its
    // loops are compiled for the selected instruction set.
    let row = |r: usize| {
        simd.run(
            #[inline(always)]
            || {
                // Whole elements' uniforms per block: 64 elements of one uniform, or 16 of up to 63.
                const BLOCK: usize = 64;
                let mut u = [0.0f32; BLOCK * (MAX_K - 1)];
                let mut draws = [0.0f32; MAX_K];
                let (mut z0, mut z1) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
                let per_block = if m == 1 { BLOCK } else { BLOCK / 4 };
                for j0 in (0..n).step_by(per_block) {
                    let len = per_block.min(n - j0);
                    let first = r * n + j0;
                    key.fill_uniform((first * m) as u32, &mut u[..len * m]);
                    if m == 1 {
                        // Two draws: the spacings of one uniform, u and 1 - u, written out (the same
                        // operations as the general loop, so the same bits), in a loop that vectorises.
                        // Slices of one length, so the loop has no bounds checks and vectorises.
                        let (a, uu) = (&logits[first..first + len], &u[..len]);
                        for (((&a, &uu), o0), o1) in a.iter().zip(uu).zip(&mut z0[..len]).zip(&mut z1[..len]) {
                            let p = clipped_p(a);
                            let (big0, big1) = (1.0 - uu, 1.0 - (1.0 - uu));
                            let low = p < 0.5;
                            *o0 = if low { (big0 < p) as u8 as f32 } else { (1.0 - big0 < p) as u8 as f32 };
                            *o1 = if low { (big1 < p) as u8 as f32 } else { (1.0 - big1 < p) as u8 as f32 };
                        }
                        // SAFETY: elements first..first+len < b·n lie in both outputs (asserted), and only
                        // the task of row r writes row r.
                        unsafe {
                            std::ptr::copy_nonoverlapping(z0.as_ptr(), outputs.get(0).add(first), len);
                            std::ptr::copy_nonoverlapping(z1.as_ptr(), outputs.get(1).add(first), len);
                        }
                        continue;
                    }
                    for e in 0..len {
                        let i = first + e;
                        arms_draws(clipped_p(logits[i]), &mut u[e * m..(e + 1) * m], &mut draws[..k]);
                        for (c, &d) in draws[..k].iter().enumerate() {
                            // SAFETY: element i < b·n lies in every output (asserted), and only the task
                            // of row r writes row r.
                            unsafe { *outputs.get(c).add(i) = d };
                        }
                    }
                }
            },
        )
    };
    if b >= PAR_MIN_ROWS && b * n * k >= 1 << 14 {
        (0..b).into_par_iter().for_each(row);
    } else {
        (0..b).for_each(row);
    }
}

/// ARMS's debiasing factor p(1-p)/(p - J) with J = P(two of the K draws are both 1):
/// (2p^{1/(K-1)} - 1)_+^{K-1} for p < ½, else 2p - 1 + (2(1-p)^{1/(K-1)} - 1)_+^{K-1}.
/// p - J ≥ min(p, 1-p) · something positive, never 0 for a clipped p.
#[inline(always)]
pub fn arms_debias(p: f32, k: usize) -> f32 {
    if k == 2 {
        // J = (2p - 1)_+: the factor is max(p, 1 - p) = σ(|a|), DisARM's.
        return p.max(1.0 - p);
    }
    let m = (k - 1) as u32;
    let root = |q: f32| if m == 1 { q } else { q.powf(1.0 / m as f32) };
    let biv = |q: f32| powi_f32((2.0 * root(q) - 1.0).max(0.0), m);
    let j = if p < 0.5 { biv(p) } else { 2.0 * p - 1.0 + biv(1.0 - p) };
    p * (1.0 - p) / (p - j)
}

/// Hidden units of RODEO's control network.
const H: usize = RODEO_HIDDEN as usize;

/// The part of RODEO's hidden pre-activations that a chain's points share: (bx + fbar·wz) + bz
/// per hidden unit, fbar being the chain's; a point's pre-activation is lin·wx + this (the
/// kernel's order too).
#[inline(always)]
fn rodeo_shared(nn: &[f32], fbar: f32) -> [f32; H] {
    let (bx, wz, bz) = (&nn[RODEO_BX as usize..][..H], &nn[RODEO_WZ as usize..][..H], &nn[RODEO_BZ as usize..][..H]);
    let mut c = [0.0f32; H];
    for (((c, &bx), &wz), &bz) in c.iter_mut().zip(bx).zip(wz).zip(bz) {
        *c = (bx + fbar * wz) + bz;
    }
    c
}

/// (H_0, H_1) of RODEO's control network `nn` (a layer's learned vector, kernels/ksample.cu's
/// layout) at (lin, fbar), with `shared` = [`rodeo_shared`]`(nn, fbar)`; the hidden units'
/// contributions summed in eight lanes so that it vectorises.
#[inline(always)]
fn rodeo_eval(nn: &[f32], lin: f32, shared: &[f32; H]) -> (f32, f32) {
    let wx = &nn[RODEO_WX as usize..][..H];
    let (w20, w21) = (&nn[RODEO_W2 as usize..][..H], &nn[RODEO_W2 as usize + H..][..H]);
    let (mut o0, mut o1) = ([0.0f32; 8], [0.0f32; 8]);
    let mut add = |h: usize, lane: usize| {
        let pre = lin * wx[h] + shared[h];
        let act = if pre >= 0.0 { pre } else { 0.3 * pre };
        o0[lane] += act * w20[h];
        o1[lane] += act * w21[h];
    };
    for c in 0..H / 8 {
        for lane in 0..8 {
            add(8 * c + lane, lane);
        }
    }
    for h in H / 8 * 8..H {
        add(h, h % 8);
    }
    let b2 = RODEO_B2 as usize;
    (nn[b2] + o0.iter().sum::<f32>(), nn[b2 + 1] + o1.iter().sum::<f32>())
}

/// Lanes of the row's reductions over units: unit d goes to lane d mod LANES and the lanes are
/// added in order at the end, the same order on every instruction set, in loops that vectorise.
const LANES: usize = 16;

/// The lanes' total, in lane order.
#[inline(always)]
fn lanes_total(acc: &[f32; LANES]) -> f32 {
    acc.iter().fold(0.0f32, |t, &v| t + v)
}

/// RODEO's inputs at the flipped neighbours of a chain with samples z and ∇F grad_f, each (n):
/// the control network's first input lin_i = ℓ(z) + ḡ_{-chain,i}(1 - 2 z_i) (ḡ_{-chain} from the
/// total G: (G - ∇F)/(K-1)), and the neighbour's weight p_i(1 - z_i) + (1 - p_i) z_i.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rodeo_neighbours(l0: f32, km1: f32, z: &[f32], grad_f: &[f32], g_total: &[f32], p: &[f32], lin: &mut [f32], weight: &mut [f32]) {
    let inputs = z.iter().zip(grad_f).zip(g_total).zip(p);
    for ((((&zi, &fi), &gi), &pi), (l, w)) in inputs.zip(lin.iter_mut().zip(weight.iter_mut())) {
        *l = l0 + (gi - fi) / km1 * (1.0 - 2.0 * zi);
        *w = pi * (1.0 - zi) + (1.0 - pi) * zi;
    }
}

thread_local! {
    /// A row's per-unit scratch of the control variates, rows of n: the clipped probabilities p,
    /// G = Σ_k ∇F_k, Double CV's Σ_k (a_k/(K-1) - c̄)·z_k, and RODEO's H_1 at every flipped
    /// neighbour of each chain (K rows). Grown once per thread, never shrunk, so a step
    /// allocates nothing.
    static ROW_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Per-chain scalars of one row: the leave-one-out coefficients and the control variates'
/// inner products and sums.
struct RowScalars {
    /// c_k = (F_k - F̄)/(K-1).
    c: [f32; MAX_K],
    /// a_k = Σ_d (G_d - ∇F_k,d)(z_k,d - p_d), G = Σ_k ∇F_k.
    a: [f32; MAX_K],
    /// RODEO: G·z_k and ∇F_k·z_k.
    gz: [f32; MAX_K],
    fz: [f32; MAX_K],
    /// RODEO: over chain k's flipped neighbours, Σ_i w H_0, Σ_i w H_1 and Σ_i w; H at z_k.
    s0: [f32; MAX_K],
    t1: [f32; MAX_K],
    ww: [f32; MAX_K],
    h0z: [f32; MAX_K],
    h1z: [f32; MAX_K],
    /// RODEO: u·(z_k - p), u the loss's ascent weights of the estimate.
    us: [f32; MAX_K],
}

/// One row of [`crate::backend::Backend::k_score_unit_grad`]: out (n), partials (the learned
/// values' ascent directions).
#[inline(always)]
fn k_score_row(r: usize, out: &mut [f32], partials: &mut [f32], inp: &KScoreInputs<'_, Vec<f32>>, b: usize, n: usize) {
    if !matches!(inp.mode, KScoreMode::DoubleCv | KScoreMode::Rodeo) {
        // No control variates, no scratch (an empty Vec allocates nothing).
        return k_score_row_in(r, out, partials, inp, b, n, &mut Vec::new());
    }
    let mut scratch = ROW_SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
    k_score_row_in(r, out, partials, inp, b, n, &mut scratch);
    ROW_SCRATCH.with(|c| *c.borrow_mut() = scratch);
}

/// [`k_score_row`] with the thread's scratch.
#[inline(always)]
fn k_score_row_in(
    r: usize,
    out: &mut [f32],
    partials: &mut [f32],
    inp: &KScoreInputs<'_, Vec<f32>>,
    b: usize,
    n: usize,
    scratch: &mut Vec<f32>,
) {
    let k = inp.z.len();
    let kf = k as f32;
    let km1 = (k - 1) as f32;
    let nf = n as f32;
    let at = r * n;
    let logits = &inp.logits[at..at + n];
    let z = |j: usize, d: usize| inp.z[j][at + d];
    let d_of = |j: usize| if j == 0 { 0.0 } else { inp.rows[j * b + r] };
    let zero = [0.0f32; MAX_K];
    let mut s = RowScalars { c: zero, a: zero, gz: zero, fz: zero, s0: zero, t1: zero, ww: zero, h0z: zero, h1z: zero, us: zero };
    let mut d_sum = 0.0f32;
    for j in 1..k {
        d_sum += d_of(j);
    }
    let d_bar = d_sum / kf;
    for j in 0..k {
        s.c[j] = (d_of(j) - d_bar) / km1;
    }
    let cv = matches!(inp.mode, KScoreMode::DoubleCv | KScoreMode::Rodeo);
    let rodeo = inp.mode == KScoreMode::Rodeo;
    // The control variates read p and G = Σ_k ∇F_k at every unit several times: computed once
    // (G chain after chain, the order of the sum per unit).
    let rows_of = |on: bool, rows: usize| if on { rows * n } else { 0 };
    let need = rows_of(cv, 3) + rows_of(rodeo, k + 2);
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (pv, rest) = scratch.split_at_mut(rows_of(cv, 1));
    let (gt, rest) = rest.split_at_mut(rows_of(cv, 1));
    let (cv_sum, rest) = rest.split_at_mut(rows_of(cv, 1));
    let (h1s, rest) = rest.split_at_mut(rows_of(rodeo, k));
    let (lin_row, rest) = rest.split_at_mut(rows_of(rodeo, 1));
    let w_row = &mut rest[..rows_of(rodeo, 1)];
    if cv {
        pv.iter_mut().zip(logits).for_each(|(pd, &a)| *pd = clipped_p(a));
        gt.iter_mut().for_each(|g| *g = 0.0);
        for j in 0..k {
            gt.iter_mut().zip(&inp.grad_f[j][at..at + n]).for_each(|(g, &v)| *g += v);
        }
    }
    let (pv, gt): (&[f32], &[f32]) = (pv, gt);
    let p = |d: usize| if cv { pv[d] } else { clipped_p(logits[d]) };
    if cv {
        for j in 0..k {
            let (zj, gj) = (&inp.z[j][at..at + n], &inp.grad_f[j][at..at + n]);
            let (mut a, mut gz, mut fz) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
            for d in 0..n {
                let (g, zd, fd) = (gt[d], zj[d], gj[d]);
                a[d % LANES] += (g - fd) * (zd - pv[d]);
                gz[d % LANES] += g * zd;
                fz[d % LANES] += fd * zd;
            }
            s.a[j] = lanes_total(&a);
            s.gz[j] = lanes_total(&gz);
            s.fz[j] = lanes_total(&fz);
        }
    }
    let coef = inp.coef.map(|c| c.as_slice()).unwrap_or(&[]);
    let (alpha, beta) = (coef.first().copied().unwrap_or(0.0), if rodeo { coef[1] } else { 0.0 });
    let cc_bar = (0..k).fold(0.0f32, |acc, j| acc + s.a[j] / km1) / kf;
    let fz_sum = (0..k).fold(0.0f32, |acc, j| acc + s.fz[j]);
    let f0 = inp.rows[r];
    // RODEO: chain j's control function is H(lin, fbar_j), fbar_j the other chains' mean F_l
    // and lin = ℓ_j(z_j) + ḡ_{-j,i}(1 - 2 z_{j,i}) at the neighbour with unit i flipped.
    let fbar = |j: usize| f0 + (d_sum - d_of(j)) / km1;
    let lz = |j: usize| (s.gz[j] - fz_sum) / km1;
    let chain = |j: usize| (&inp.z[j][at..at + n], &inp.grad_f[j][at..at + n]);
    if rodeo {
        for j in 0..k {
            let (fb, l0) = (fbar(j), lz(j));
            let (zj, gj) = chain(j);
            rodeo_neighbours(l0, km1, zj, gj, gt, pv, lin_row, w_row);
            let shared = rodeo_shared(coef, fb);
            let (mut s0, mut t1, mut ww) = (0.0f32, 0.0f32, 0.0f32);
            for i in 0..n {
                let w = w_row[i];
                let (h0, h1) = rodeo_eval(coef, lin_row[i], &shared);
                h1s[j * n + i] = h1;
                s0 += w * h0;
                t1 += w * h1;
                ww += w;
            }
            (s.s0[j], s.t1[j], s.ww[j]) = (s0, t1, ww);
            (s.h0z[j], s.h1z[j]) = rodeo_eval(coef, l0, &shared);
        }
    }
    let dcv = |j: usize| (s.s0[j] - s.ww[j] * s.h0z[j]) / nf;
    let dcv_sum = (0..k).fold(0.0f32, |acc, j| acc + dcv(j));
    // Σ_j c_j z_j into out first, chain after chain (the same order of additions per unit as
    // unit after unit, in loops that vectorise).
    out.iter_mut().for_each(|o| *o = 0.0);
    for j in 0..k {
        let (c, zj) = (s.c[j], &inp.z[j][at..at + n]);
        out.iter_mut().zip(zj).for_each(|(o, &zv)| *o += c * zv);
    }
    if !cv {
        // A loop per case, without a branch inside, so that each vectorises.
        let ent = |a: f32, pd: f32| pd * (1.0 - pd) * clipped_log_odds_against(a);
        match inp.mode {
            KScoreMode::Arms if k == 2 => out.iter_mut().zip(logits).for_each(|(o, &a)| {
                let pd = clipped_p(a);
                *o = ent(a, pd) + arms_debias(pd, 2) * *o;
            }),
            KScoreMode::Arms => out.iter_mut().zip(logits).for_each(|(o, &a)| {
                let pd = clipped_p(a);
                *o = ent(a, pd) + arms_debias(pd, k) * *o;
            }),
            _ => out.iter_mut().zip(logits).for_each(|(o, &a)| *o += ent(a, clipped_p(a))),
        }
        return;
    }
    // Only Double CV and RODEO get here. Each unit's g gains α·B (+ β·C for RODEO), and
    // Σ_d g·B (Σ_d g·C) is the learned coefficients' ascent.
    let (mut gb, mut gc) = ([0.0f32; LANES], [0.0f32; LANES]);
    if !rodeo {
        // B = Σ_k (a_k/(K-1) - c̄)·z_k / (K-1) - G·p(1-p)/K, the sum chain after chain.
        cv_sum.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..k {
            let w = s.a[j] / km1 - cc_bar;
            cv_sum.iter_mut().zip(&inp.z[j][at..at + n]).for_each(|(v, &zv)| *v += w * zv);
        }
        for d in 0..n {
            let pd = pv[d];
            let ent = pd * (1.0 - pd) * clipped_log_odds_against(logits[d]);
            let part_b = cv_sum[d] / km1 - gt[d] / kf * (pd * (1.0 - pd));
            let g = ent + out[d] + alpha * part_b;
            gb[d % LANES] += g * part_b;
            out[d] = g;
        }
    } else {
        for d in 0..n {
            let pd = pv[d];
            let ent = pd * (1.0 - pd) * clipped_log_odds_against(logits[d]);
            let (mut acc_b, mut acc_c) = (0.0f32, 0.0f32);
            for j in 0..k {
                let zj = z(j, d);
                let sj = zj - pd;
                acc_b += (dcv_sum - dcv(j)) / km1 * sj;
                let h1 = h1s[j * n + d];
                let w = pd * (1.0 - zj) + (1.0 - pd) * zj;
                acc_c += (sj * (s.t1[j] - w * h1) + w * h1 * (1.0 - zj - pd) - s.h1z[j] * sj * s.ww[j]) / nf;
            }
            let (part_b, part_c) = (-acc_b / kf, acc_c / kf);
            let g = ent + out[d] + (alpha * part_b + beta * part_c);
            gb[d % LANES] += g * part_b;
            gc[d % LANES] += g * part_c;
            out[d] = g;
        }
    }
    let (gb, gc) = (lanes_total(&gb), lanes_total(&gc));
    if partials.is_empty() {
        return;
    }
    partials[0] = inp.loss_scale * gb;
    if !rodeo {
        return;
    }
    partials[1] = inp.loss_scale * gc;
    // The network's ascent: with u = loss_scale·g, u·s_j per chain, then every evaluation
    // point's upstream weights (on H_0 through the baseline's control variate, on H_1 through
    // the gradient's) backpropagated through the network.
    let u = |d: usize| inp.loss_scale * out[d];
    for j in 0..k {
        s.us[j] = (0..n).fold(0.0f32, |acc, d| acc + u(d) * (z(j, d) - p(d)));
    }
    let us_sum = (0..k).fold(0.0f32, |acc, j| acc + s.us[j]);
    let (head, rest) = partials.split_at_mut(RODEO_BX as usize);
    let d_wx = &mut head[RODEO_WX as usize..];
    let (d_bx, rest) = rest.split_at_mut(H);
    let (d_wz, rest) = rest.split_at_mut(H);
    let (d_bz, rest) = rest.split_at_mut(H);
    let (d_w20, rest) = rest.split_at_mut(H);
    let (d_w21, d_b2) = rest.split_at_mut(H);
    for v in d_wx.iter_mut().chain(d_bx.iter_mut()).chain(d_wz.iter_mut()).chain(d_bz.iter_mut()) {
        *v = 0.0;
    }
    for v in d_w20.iter_mut().chain(d_w21.iter_mut()).chain(d_b2.iter_mut()) {
        *v = 0.0;
    }
    let wx = &coef[RODEO_WX as usize..][..H];
    let (w20, w21) = (&coef[RODEO_W2 as usize..][..H], &coef[RODEO_W2 as usize + H..][..H]);
    for j in 0..k {
        let (fb, l0) = (fbar(j), lz(j));
        let (zj, gj) = chain(j);
        rodeo_neighbours(l0, km1, zj, gj, gt, pv, lin_row, w_row);
        let shared = rodeo_shared(coef, fb);
        // bx and bz take the pre-activation's upstream gradient, wz that times the chain's fbar:
        // summed over the chain's points first.
        let mut d_pre = [0.0f32; H];
        let up_dcv = -alpha / (kf * km1) * (us_sum - s.us[j]);
        for i in 0..=n {
            let (x, up0, up1) = if i < n {
                let w = w_row[i];
                let zi = zj[i];
                (lin_row[i], up_dcv * w / nf, beta * w / (kf * nf) * (s.us[j] + u(i) * (1.0 - 2.0 * zi)))
            } else {
                (l0, -up_dcv * s.ww[j] / nf, -beta * s.ww[j] / (kf * nf) * s.us[j])
            };
            d_b2[0] += up0;
            d_b2[1] += up1;
            for h in 0..H {
                let pre = x * wx[h] + shared[h];
                let (act, slope) = if pre >= 0.0 { (pre, 1.0) } else { (0.3 * pre, 0.3) };
                d_w20[h] += act * up0;
                d_w21[h] += act * up1;
                let dpre = (up0 * w20[h] + up1 * w21[h]) * slope;
                d_wx[h] += dpre * x;
                d_pre[h] += dpre;
            }
        }
        for h in 0..H {
            d_bx[h] += d_pre[h];
            d_wz[h] += d_pre[h] * fb;
            d_bz[h] += d_pre[h];
        }
    }
}

/// [`k_score_row`] compiled for the selected instruction set (it is too large to be inlined
/// into [`Simd::run`]'s closure, so each build of it is a function of its own).
fn k_score_row_for(simd: Simd, r: usize, out: &mut [f32], partials: &mut [f32], inp: &KScoreInputs<'_, Vec<f32>>, b: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512(r: usize, out: &mut [f32], partials: &mut [f32], inp: &KScoreInputs<'_, Vec<f32>>, b: usize, n: usize) {
        k_score_row(r, out, partials, inp, b, n)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(r: usize, out: &mut [f32], partials: &mut [f32], inp: &KScoreInputs<'_, Vec<f32>>, b: usize, n: usize) {
        k_score_row(r, out, partials, inp, b, n)
    }
    match simd {
        // SAFETY: `Simd::selected` only names instruction sets the CPU supports.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { avx512(r, out, partials, inp, b, n) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { avx2(r, out, partials, inp, b, n) },
        _ => k_score_row(r, out, partials, inp, b, n),
    }
}

/// See [`crate::backend::Backend::k_score_unit_grad`].
pub fn k_score_unit_grad(out: &mut [f32], cv_partials: Option<&mut Vec<f32>>, inp: &KScoreInputs<'_, Vec<f32>>, b: usize, n: usize) {
    assert!((2..=MAX_K).contains(&inp.z.len()), "K-sample estimators take 2 to {MAX_K} chains");
    let out = &mut out[..b * n];
    let cv_work = match inp.mode {
        KScoreMode::Rodeo => 16 * H * inp.z.len(),
        KScoreMode::DoubleCv => 4 * inp.z.len(),
        _ => 1,
    };
    let parallel = b >= PAR_MIN_ROWS && b * n * inp.z.len() * cv_work >= PAR_MIN_WORK;
    match cv_partials {
        Some(partials) => {
            let per = partials.len() / b;
            let simd = Simd::selected();
            let run = |(r, (o, pt)): (usize, (&mut [f32], &mut [f32]))| k_score_row_for(simd, r, o, pt, inp, b, n);
            if parallel {
                out.par_chunks_mut(n).zip(partials[..b * per].par_chunks_mut(per)).enumerate().for_each(run);
            } else {
                out.chunks_mut(n).zip(partials[..b * per].chunks_mut(per)).enumerate().for_each(run);
            }
        }
        None => {
            let simd = Simd::selected();
            let run = |(r, o): (usize, &mut [f32])| k_score_row_for(simd, r, o, &mut [], inp, b, n);
            if parallel {
                out.par_chunks_mut(n).enumerate().for_each(run);
            } else {
                out.chunks_mut(n).enumerate().for_each(run);
            }
        }
    }
}

impl KSampleOps for Cpu {
    fn arms_sample(&self, zs: &mut [&mut Vec<f32>], logits: &Vec<f32>, key: RngKey, clock: Option<&Vec<u32>>, b: usize, n: usize) {
        arms_sample(zs, logits, clocked(key, clock), b, n);
    }

    fn k_score_unit_grad(
        &self,
        out: &mut Vec<f32>,
        cv_partials: Option<&mut Vec<f32>>,
        inp: &KScoreInputs<'_, Vec<f32>>,
        b: usize,
        n: usize,
    ) {
        k_score_unit_grad(out, cv_partials, inp, b, n);
    }
}
