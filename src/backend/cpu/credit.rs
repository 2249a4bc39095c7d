//! The CPU credit pass: for every row and every parent unit, the change in its children's
//! log-likelihood (and entropy) when that parent flips, fused over (batch, parent, child) with
//! no (b, p, c) tensor. `kernels/credit.cu` is its twin, operation for operation, so the two give
//! the same bits.
//!
//! The product form. For a child with logit a and sample y, let p_obs = π(y | a) and p_oth =
//! 1 - p_obs. A flip of parent i moves the logit by Δ = W[i, c]·(1 - 2u_i), and
//!
//!     log π(y | a + Δ) - log π(y | a) = -log x,   x = p_obs + p_oth·e^{(1 - 2y)Δ},
//!
//! so a parent's change is -log Π_c x_c: one multiply-add and one multiply per edge, with the
//! exponentials e^{±W} computed once per step per weight ([`credit_tables`]) instead of once per
//! row. x lies between 1 and e^{±|W|}, so the running product is renormalised (its exponent
//! taken out as an integer) often enough that it can neither overflow nor underflow: every
//! R = ⌊80 / max|W[i, ·]|⌋ children of a lane. A parent whose weights exceed 80 in magnitude
//! falls back to the per-edge form. The entropy change that f-HNCA needs for encoder children is
//! log x' + (e'·(A·Δ + B) - B) / x' per edge, where x' and e' are x and e written for the
//! child's more probable value z instead of y (so that neither part is large where the change is
//! small: written for y, the two would cancel), with per-child constants A = sgn·π(1-z | a) and
//! B = sgn·σ(a)σ(-a)·a, sgn = 2z - 1: a second product and a quotient per edge.
//!
//! Children are split into [`LANES`] interleaved lanes (child c in lane c mod 16), each with its
//! own product, exponent and sum; the lanes are combined as a tree at the end. The same lanes
//! give the same bits on every instruction set here and on the GPU, where a lane is a thread.

use super::simd::{lane_sum, Simd};
use super::{clipped_log_odds_against, clipped_p, for_each_row, hindsight_ratios, row_of, unit_grad_row, Cpu, UnitRow};
use crate::backend::consts::{CREDIT_LANES, CREDIT_RENORM_RANGE};
use crate::backend::{CreditOps, HncaInputs, ScoreAlt};
use crate::math::{exp_f32, exp_neg, log1p_unit, log_sigmoid_and_entropy};
use rayon::prelude::*;
use std::cell::RefCell;

/// Interleaved lanes of the products (kernels/credit.cu, CREDIT_LANES).
pub const LANES: usize = CREDIT_LANES as usize;
/// The largest Σ|log x| between two renormalisations: e^±80 stays well inside f32.
const RENORM_RANGE: f32 = CREDIT_RENORM_RANGE as f32;
const LN2: f32 = std::f32::consts::LN_2;

/// Rows below this many elements of work are not worth splitting across threads.
const PAR_MIN_WORK: usize = 1 << 15;

/// Wall time spent in the credit pass since the last [`take_credit_nanos`], for `hnca bench`'s
/// cost model (two clock reads per call).
static CREDIT_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Returns and resets the wall time the credit pass has taken, in nanoseconds.
pub fn take_credit_nanos() -> u64 {
    CREDIT_NANOS.swap(0, std::sync::atomic::Ordering::Relaxed)
}

/// Children per row padded to whole groups of lanes.
pub fn padded(c: usize) -> usize {
    c.div_ceil(LANES) * LANES
}

/// The f32s of the tables for weights (p, c): see [`credit_tables`].
pub fn tables_len(p: usize, c: usize) -> usize {
    3 * p * padded(c) + p
}

/// The weights' tables, each row padded to whole lane groups: E+ = e^W, E- = e^-W, W itself
/// (padding: e^0 = 1 and 0, which leave the products and sums unchanged), then each parent's
/// renormalisation interval R (as f32; 0: the per-edge fallback). w is (p, c).
pub fn credit_tables(tables: &mut [f32], w: &[f32], p: usize, c: usize) {
    let simd = Simd::selected();
    let cp = padded(c);
    let (plus, rest) = tables.split_at_mut(p * cp);
    let (minus, rest) = rest.split_at_mut(p * cp);
    let (wt, interval) = rest.split_at_mut(p * cp);
    let rows = plus.par_chunks_mut(cp).zip(minus.par_chunks_mut(cp)).zip(wt.par_chunks_mut(cp)).zip(interval.par_iter_mut());
    rows.enumerate().with_min_len(16).for_each(|(i, (((ep, em), wi), r))| {
        *r = simd.run(
            #[inline(always)]
            || table_row(ep, em, wi, &w[i * c..(i + 1) * c]),
        );
    });
}

/// One parent's row of the tables, (cp) each, from its weights (c); returns its interval.
#[inline(always)]
fn table_row(ep: &mut [f32], em: &mut [f32], wi: &mut [f32], src: &[f32]) -> f32 {
    let c = src.len();
    // Plain maps that vectorise; the largest |w| in lanes, then across them.
    for j in 0..c {
        let v = src[j];
        ep[j] = exp_f32(v);
        em[j] = exp_f32(-v);
        wi[j] = v;
    }
    for j in c..ep.len() {
        (ep[j], em[j], wi[j]) = (1.0, 1.0, 0.0);
    }
    let mut max = [0.0f32; LANES];
    for chunk in wi.chunks_exact(LANES) {
        for l in 0..LANES {
            max[l] = max[l].max(chunk[l].abs());
        }
    }
    renorm_interval(max.iter().fold(0.0f32, |a, &b| a.max(b)))
}

/// Children per lane between renormalisations for a parent whose largest |W| is `max`: each
/// factor's |log| is at most `max`; 0 when even one factor could leave the safe range.
#[inline]
pub fn renorm_interval(max: f32) -> f32 {
    if max > RENORM_RANGE {
        0.0
    } else if max * 1048576.0 < RENORM_RANGE {
        1048576.0
    } else {
        (RENORM_RANGE / max).floor()
    }
}

/// m = mant·2^e with mant in [1, 2), for a positive normal m.
#[inline(always)]
fn split_exponent(m: f32) -> (f32, i32) {
    let bits = m.to_bits();
    (f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000), ((bits >> 23) & 0xff) as i32 - 127)
}

/// One row's children as the credit pass reads them, padded to whole lane groups: the
/// probability of the observed value y and of the other, a mask of y (all ones where y = 1);
/// the same for the more probable value z, and the entropy constants A and B; and (for the
/// per-edge fallback) the signed logit and each child's unflipped terms.
struct CreditRow<'a> {
    obs: &'a [f32],
    oth: &'a [f32],
    ymask: &'a [u32],
    maj: &'a [f32],
    min: &'a [f32],
    zmask: &'a [u32],
    a: &'a [f32],
    b: &'a [f32],
    sa: &'a [f32],
    sign: &'a [f32],
    lp0: &'a [f32],
    ent0: &'a [f32],
}

/// f32 and u32 scratch rows of one row's children ([`CreditRow`]).
const ROW_F32S: usize = 10;
const ROW_U32S: usize = 2;

impl<'a> CreditRow<'a> {
    /// Fills `f` (ROW_F32S, cp) and `u` (ROW_U32S, cp) from the row's child logits and samples;
    /// the per-edge form's fields only with `per_edge` (some parent needs it).
    fn fill(f: &'a mut [f32], u: &'a mut [u32], child_logits: &[f32], child: &[f32], per_edge: bool) -> Self {
        let (c, cp) = (child.len(), padded(child.len()));
        let mut parts = f[..ROW_F32S * cp].chunks_mut(cp);
        let mut next = || parts.next().expect("ten scratch rows");
        let (obs, oth, maj, min, a) = (next(), next(), next(), next(), next());
        let (b, sa, sign, lp0, ent0) = (next(), next(), next(), next(), next());
        let (ymask, zmask) = u[..ROW_U32S * cp].split_at_mut(cp);
        // A plain map over the children, with selects rather than branches, so that it vectorises.
        for j in 0..c {
            let (logit, y) = (child_logits[j], child[j]);
            let sgn = 2.0 * y - 1.0;
            let signed = sgn * logit;
            // π(y | a) = σ(signed) and its complement, each from one exponential, neither from 1 - ·.
            let e = exp_neg(-signed.abs());
            let inv = 1.0 / (1.0 + e);
            let up = signed >= 0.0;
            let (po, pt) = (if up { inv } else { e * inv }, if up { e * inv } else { inv });
            let is_one = y > 0.5;
            let (s, q) = (if is_one { po } else { pt }, if is_one { pt } else { po });
            // The more probable value z (1 where a ≥ 0), and its probability and the other's.
            let z = logit >= 0.0;
            let (pz, pnz) = (if z { s } else { q }, if z { q } else { s });
            let sgn_z = if z { 1.0 } else { -1.0 };
            obs[j] = po;
            oth[j] = pt;
            ymask[j] = if is_one { u32::MAX } else { 0 };
            maj[j] = pz;
            min[j] = pnz;
            zmask[j] = if z { u32::MAX } else { 0 };
            a[j] = sgn_z * pnz;
            b[j] = sgn_z * (s * q) * logit;
            sa[j] = signed;
            sign[j] = sgn;
        }
        if per_edge {
            for j in 0..c {
                (lp0[j], ent0[j]) = log_sigmoid_and_entropy(sa[j]);
            }
        }
        // Padding: x = 1 and no entropy term; in the per-edge form, flipped = unflipped.
        let (l0, h0) = log_sigmoid_and_entropy(0.0);
        for j in c..cp {
            (obs[j], oth[j], ymask[j], maj[j], min[j], zmask[j]) = (1.0, 0.0, 0, 1.0, 0.0, 0);
            (a[j], b[j], sa[j], sign[j], lp0[j], ent0[j]) = (0.0, 0.0, 0.0, 1.0, l0, h0);
        }
        CreditRow { obs, oth, ymask, maj, min, zmask, a, b, sa, sign, lp0, ent0 }
    }
}

/// log Π_l m_l·2^{e_l} over the lanes of one parent's product: each lane's exponent taken out
/// (so every factor is a mantissa in [1, 2)), the mantissas multiplied as a tree (lane l by lane
/// l + h for h = 8, 4, 2, 1: below 2^16, so nothing can overflow), and one logarithm. The GPU's
/// threads combine their lanes in the same tree in shared memory.
#[inline(always)]
fn log_product(m: &[f32; LANES], e: &[i32; LANES]) -> f32 {
    let mut v = [0.0f32; LANES];
    let mut exp_sum = 0i32;
    for l in 0..LANES {
        let (mant, ex) = split_exponent(m[l]);
        v[l] = mant;
        exp_sum += e[l] + ex;
    }
    let mut h = LANES / 2;
    while h > 0 {
        for l in 0..h {
            v[l] *= v[l + h];
        }
        h /= 2;
    }
    let (mant, ex) = split_exponent(v[0]);
    log1p_unit(mant - 1.0) + (exp_sum + ex) as f32 * LN2
}

/// Σ_l num_l / den_l over the lanes as one fraction: each lane scaled by a power of two (exact)
/// so that its denominator is in [1, 2), then added as a tree (a/b + c/d = (a·d + c·b)/(b·d), lane
/// l with lane l + h for h = 8, 4, 2, 1; denominators below 2^16), and one division.
#[inline(always)]
fn lane_fraction_sum(num: &[f32; LANES], den: &[f32; LANES]) -> f32 {
    let (mut a, mut b) = ([0.0f32; LANES], [0.0f32; LANES]);
    for l in 0..LANES {
        let (mant, ex) = split_exponent(den[l]);
        a[l] = num[l] * pow2(-ex);
        b[l] = mant;
    }
    let mut h = LANES / 2;
    while h > 0 {
        for l in 0..h {
            a[l] = a[l] * b[l + h] + a[l + h] * b[l];
            b[l] *= b[l + h];
        }
        h /= 2;
    }
    a[0] / b[0]
}

/// e^{(1-2y)Δ} for parent bit u (as a mask, all ones for u = 1): the table of e^{+W} where y = u,
/// of e^{-W} where not, chosen by bits so that the loop stays a plain vector blend.
#[inline(always)]
fn choose(plus: f32, minus: f32, ymask: u32, umask: u32) -> f32 {
    let same = !(ymask ^ umask);
    f32::from_bits((plus.to_bits() & same) | (minus.to_bits() & !same))
}

/// Parents the CPU takes together for one row: independent products that keep the multiplier
/// busy while each waits on its own latency (the GPU runs them as separate threads).
const PARENTS_TOGETHER: usize = 4;
/// The same with entropies: three running values per parent and lane.
const PARENTS_TOGETHER_ENT: usize = 1;

/// The credit pass of one row over all parents, in product form; parents whose interval is 0
/// take the per-edge form. `flip_lp` (and `flip_ent`, empty without `ENT`) are (p). Parents go
/// in groups renormalised at the group's smallest interval: taking out powers of two more often
/// changes no bits.
#[inline(always)]
fn credit_row<const ENT: bool>(
    flip_lp: &mut [f32],
    flip_ent: &mut [f32],
    parent: &[f32],
    tables: &[f32],
    row: &CreditRow,
    p: usize,
    lp: &mut [f32],
    ent: &mut [f32],
) {
    let cp = row.obs.len();
    let n = cp / LANES;
    let (plus, rest) = tables.split_at(p * cp);
    let (minus, rest) = rest.split_at(p * cp);
    let (wt, interval) = rest.split_at(p * cp);
    let r = Groups::of(row, n);
    fn table(t: &[f32], i: usize, cp: usize) -> &[[f32; LANES]] {
        groups_of(&t[i * cp..(i + 1) * cp], cp / LANES)
    }
    let umask = |i: usize| if parent[i] > 0.5 { u32::MAX } else { 0 };
    let d = |i: usize| 1.0 - 2.0 * parent[i];
    let together = if ENT { PARENTS_TOGETHER_ENT } else { PARENTS_TOGETHER };
    let mut i = 0;
    while i < p {
        let group = &interval[i..(i + together).min(p)];
        if group.len() == together && group.iter().all(|&e| e > 0.0) {
            let every = group.iter().fold(f32::INFINITY, |a, &b| a.min(b)) as usize;
            if ENT {
                let out = products_with_entropy::<PARENTS_TOGETHER_ENT>(
                    &r,
                    std::array::from_fn(|k| (table(plus, i + k, cp), table(minus, i + k, cp), table(wt, i + k, cp))),
                    std::array::from_fn(|k| umask(i + k)),
                    std::array::from_fn(|k| d(i + k)),
                    every,
                );
                for (k, (l, e)) in out.into_iter().enumerate() {
                    (flip_lp[i + k], flip_ent[i + k]) = (l, e);
                }
            } else {
                let out = products::<PARENTS_TOGETHER>(
                    &r,
                    std::array::from_fn(|k| (table(plus, i + k, cp), table(minus, i + k, cp))),
                    std::array::from_fn(|k| umask(i + k)),
                    every,
                );
                flip_lp[i..i + PARENTS_TOGETHER].copy_from_slice(&out);
            }
            i += together;
            continue;
        }
        let every = interval[i] as usize;
        if every == 0 {
            per_edge::<ENT>(&mut flip_lp[i], flip_ent.get_mut(i), d(i), &wt[i * cp..(i + 1) * cp], row, lp, ent);
        } else if ENT {
            let [(l, e)] =
                products_with_entropy::<1>(&r, [(table(plus, i, cp), table(minus, i, cp), table(wt, i, cp))], [umask(i)], [d(i)], every);
            (flip_lp[i], flip_ent[i]) = (l, e);
        } else {
            flip_lp[i] = products::<1>(&r, [(table(plus, i, cp), table(minus, i, cp))], [umask(i)], every)[0];
        }
        i += 1;
    }
}

/// A row's arrays (or a parent's table rows) as whole groups of lanes, each exactly `groups`
/// long, so that indexing them by group needs no bounds check in the loops.
#[derive(Clone, Copy)]
struct Groups<'a> {
    obs: &'a [[f32; LANES]],
    oth: &'a [[f32; LANES]],
    ym: &'a [[u32; LANES]],
    maj: &'a [[f32; LANES]],
    min: &'a [[f32; LANES]],
    zm: &'a [[u32; LANES]],
    a: &'a [[f32; LANES]],
    b: &'a [[f32; LANES]],
}

/// A table's groups of lanes (children LANES at a time).
type Lanes<'a> = &'a [[f32; LANES]];

fn groups_of<T>(s: &[T], n: usize) -> &[[T; LANES]] {
    &s.as_chunks::<LANES>().0[..n]
}

impl<'a> Groups<'a> {
    fn of(row: &'a CreditRow, n: usize) -> Self {
        Groups {
            obs: groups_of(row.obs, n),
            oth: groups_of(row.oth, n),
            ym: groups_of(row.ymask, n),
            maj: groups_of(row.maj, n),
            min: groups_of(row.min, n),
            zm: groups_of(row.zmask, n),
            a: groups_of(row.a, n),
            b: groups_of(row.b, n),
        }
    }

    /// Groups `start..end` of every array: sliced the same way, so that the loops over them
    /// index without bounds checks.
    #[inline(always)]
    fn window(&self, start: usize, end: usize) -> Self {
        Groups {
            obs: &self.obs[start..end],
            oth: &self.oth[start..end],
            ym: &self.ym[start..end],
            maj: &self.maj[start..end],
            min: &self.min[start..end],
            zm: &self.zm[start..end],
            a: &self.a[start..end],
            b: &self.b[start..end],
        }
    }
}

/// One group of lanes of one row's product: m ·= obs + oth·e^{(1-2y)Δ}.
#[inline(always)]
fn step(m: &mut [f32; LANES], obs: &[f32; LANES], oth: &[f32; LANES], ym: &[u32; LANES], pl: &[f32; LANES], mi: &[f32; LANES], umask: u32) {
    for l in 0..LANES {
        let e = choose(pl[l], mi[l], ym[l], umask);
        m[l] *= obs[l] + oth[l] * e;
    }
}

/// One group of lanes of one row's two products and entropy fraction (see
/// [`products_with_entropy`]).
#[inline(always)]
fn step_with_entropy(
    s: &mut ([f32; LANES], [f32; LANES], [f32; LANES]),
    r: &Groups,
    g: usize,
    pl: &[f32; LANES],
    mi: &[f32; LANES],
    w: &[f32; LANES],
    umask: u32,
    d: f32,
) {
    let (m, mz, num) = s;
    let (obs, oth, ym, maj, min, zm, a, b) = (&r.obs[g], &r.oth[g], &r.ym[g], &r.maj[g], &r.min[g], &r.zm[g], &r.a[g], &r.b[g]);
    for l in 0..LANES {
        let e = choose(pl[l], mi[l], ym[l], umask);
        m[l] *= obs[l] + oth[l] * e;
        let ez = choose(pl[l], mi[l], zm[l], umask);
        let xz = maj[l] + min[l] * ez;
        let delta = d * w[l];
        let t1 = a[l] * delta + b[l];
        let n = ez * t1 - b[l];
        num[l] = num[l] * xz + n * mz[l];
        mz[l] *= xz;
    }
}

/// Takes the exponent out of a product into `ex` (exact: no later rounding changes); returns it.
#[inline(always)]
fn renormalise(m: &mut [f32; LANES], ex: &mut [i32; LANES]) -> [i32; LANES] {
    let mut out = [0i32; LANES];
    for l in 0..LANES {
        let (mant, e) = split_exponent(m[l]);
        m[l] = mant;
        ex[l] += e;
        out[l] = e;
    }
    out
}

/// -log Π_c x for one row and PT parents (each parent's tables e^{+W} and e^{-W} as groups of
/// lanes, its bit as a mask), the products renormalised after every `every` groups.
#[inline(always)]
fn products<const PT: usize>(r: &Groups, tables: [(Lanes, Lanes); PT], umask: [u32; PT], every: usize) -> [f32; PT] {
    let n = r.obs.len();
    let mut m = [[1.0f32; LANES]; PT];
    let mut ex = [[0i32; LANES]; PT];
    for start in (0..n).step_by(every) {
        let end = (start + every).min(n);
        let w = r.window(start, end);
        let t: [(Lanes, Lanes); PT] = tables.map(|(pl, mi)| (&pl[start..end], &mi[start..end]));
        for g in 0..end - start {
            for k in 0..PT {
                step(&mut m[k], &w.obs[g], &w.oth[g], &w.ym[g], &t[k].0[g], &t[k].1[g], umask[k]);
            }
        }
        for k in 0..PT {
            renormalise(&mut m[k], &mut ex[k]);
        }
    }
    // Plain loops rather than array::from_fn, whose closure would be compiled without the
    // caller's instruction set.
    let mut out = [0.0f32; PT];
    for k in 0..PT {
        out[k] = -log_product(&m[k], &ex[k]);
    }
    out
}

/// The log-likelihood changes (as [`products`]) and the entropy changes, for one row and PT
/// parents (tables e^{+W}, e^{-W} and W). The entropy terms n/x' are summed as one fraction per
/// lane, S/D with D = Π x' (a second product) and S ← S·x' + n·D, so that an edge costs no
/// division; taking a power of two out of D takes it out of S too.
#[inline(always)]
fn products_with_entropy<const PT: usize>(
    r: &Groups,
    tables: [(Lanes, Lanes, Lanes); PT],
    umask: [u32; PT],
    d: [f32; PT],
    every: usize,
) -> [(f32, f32); PT] {
    let n = r.obs.len();
    let mut s = [([1.0f32; LANES], [1.0f32; LANES], [0.0f32; LANES]); PT];
    let (mut ex, mut exz) = ([[0i32; LANES]; PT], [[0i32; LANES]; PT]);
    for start in (0..n).step_by(every) {
        let end = (start + every).min(n);
        let w = r.window(start, end);
        let t: [(Lanes, Lanes, Lanes); PT] = tables.map(|(pl, mi, wi)| (&pl[start..end], &mi[start..end], &wi[start..end]));
        for g in 0..end - start {
            for k in 0..PT {
                let (pl, mi, wi) = t[k];
                step_with_entropy(&mut s[k], &w, g, &pl[g], &mi[g], &wi[g], umask[k], d[k]);
            }
        }
        for k in 0..PT {
            renormalise(&mut s[k].0, &mut ex[k]);
            let taken = renormalise(&mut s[k].1, &mut exz[k]);
            for l in 0..LANES {
                s[k].2[l] *= pow2(-taken[l]);
            }
        }
    }
    let mut out = [(0.0f32, 0.0f32); PT];
    for k in 0..PT {
        out[k] = (-log_product(&s[k].0, &ex[k]), log_product(&s[k].1, &exz[k]) + lane_fraction_sum(&s[k].2, &s[k].1));
    }
    out
}

/// 2^e for e in [-126, 127], exactly.
#[inline(always)]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// The per-edge form for one parent (weights too large for the products): Σ_c of each child's
/// log-likelihood (and entropy) with the flip minus without, on the signed logits.
#[inline(always)]
fn per_edge<const ENT: bool>(
    flip_lp: &mut f32,
    flip_ent: Option<&mut f32>,
    d: f32,
    w: &[f32],
    row: &CreditRow,
    lp: &mut [f32],
    ent: &mut [f32],
) {
    let cp = row.sa.len();
    let (sa, sign, lp0, ent0) = (row.sa, row.sign, row.lp0, row.ent0);
    let (lp, ent) = (&mut lp[..cp], &mut ent[..cp]);
    for j in 0..cp {
        let (l, h) = log_sigmoid_and_entropy(sa[j] + d * sign[j] * w[j]);
        lp[j] = l - lp0[j];
        if ENT {
            ent[j] = h - ent0[j];
        }
    }
    *flip_lp = lane_sum(lp);
    if let Some(fe) = flip_ent {
        *fe = lane_sum(ent);
    }
}

/// Per-thread scratch for the credit pass: a row's [`CreditRow`] and two rows for the per-edge
/// form; grown once, then reused by every step.
struct Scratch {
    f: Vec<f32>,
    u: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { f: Vec::new(), u: Vec::new() }) };
}

/// The widest padded row every rayon worker's scratch already holds.
static SCRATCH_READY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Scratch {
    fn grow(&mut self, cp: usize) {
        if self.f.len() < (ROW_F32S + 2) * cp {
            self.f.resize((ROW_F32S + 2) * cp, 0.0);
            self.u.resize(ROW_U32S * cp, 0);
        }
    }
}

/// Grows every rayon worker's scratch (and the caller's) to rows of `cp` at once, the first time
/// a row that wide comes, so that no later step allocates, whichever worker runs which row.
fn scratch_for(cp: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    if SCRATCH_READY.load(Relaxed) >= cp {
        return;
    }
    rayon::broadcast(|_| SCRATCH.with_borrow_mut(|s| s.grow(cp)));
    SCRATCH.with_borrow_mut(|s| s.grow(cp));
    SCRATCH_READY.fetch_max(cp, Relaxed);
}

/// The credit pass over a batch: `flip_lp` is (b, p), `flip_ent` (b, p) or absent, `parent`
/// (b, p), `w` (p, c), `tables` ([`tables_len`]) scratch for its tables, `child_logits` and
/// `child` (b, c). Rows are independent, so the result does not depend on how rayon spreads them.
pub fn credit_pass(
    flip_lp: &mut [f32],
    flip_ent: Option<&mut [f32]>,
    parent: &[f32],
    w: &[f32],
    tables: &mut [f32],
    child_logits: &[f32],
    child: &[f32],
    b: usize,
    p: usize,
    c: usize,
) {
    debug_assert_eq!((flip_lp.len(), parent.len(), w.len(), child_logits.len(), child.len()), (b * p, b * p, p * c, b * c, b * c));
    let started = std::time::Instant::now();
    let simd = Simd::selected();
    credit_tables(tables, w, p, c);
    let tables = &*tables;
    let cp = padded(c);
    let ent_wanted = flip_ent.is_some();
    let any_per_edge = tables[3 * p * cp..3 * p * cp + p].contains(&0.0);
    scratch_for(cp);
    let row = |r: usize, lp_out: &mut [f32], ent_out: &mut [f32]| {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.grow(cp); // a thread outside the pool
            let (f, work) = scratch.f.split_at_mut(ROW_F32S * cp);
            let (lp, ent) = work.split_at_mut(cp);
            let (logits, bits) = (&child_logits[r * c..(r + 1) * c], &child[r * c..(r + 1) * c]);
            let credit_row = simd.run(
                #[inline(always)]
                || CreditRow::fill(f, &mut scratch.u, logits, bits, any_per_edge),
            );
            let parent = &parent[r * p..(r + 1) * p];
            dispatch(simd, ent_wanted, lp_out, ent_out, parent, tables, &credit_row, p, lp, &mut ent[..cp]);
        })
    };
    let parallel = b * p * c >= PAR_MIN_WORK;
    match flip_ent {
        Some(flip_ent) => {
            let pairs = flip_lp.par_chunks_mut(p).zip(flip_ent.par_chunks_mut(p)).enumerate();
            if parallel {
                pairs.for_each(|(r, (l, e))| row(r, l, e));
            } else {
                flip_lp.chunks_mut(p).zip(flip_ent.chunks_mut(p)).enumerate().for_each(|(r, (l, e))| row(r, l, e));
            }
        }
        None if parallel => flip_lp.par_chunks_mut(p).enumerate().for_each(|(r, l)| row(r, l, &mut [])),
        None => flip_lp.chunks_mut(p).enumerate().for_each(|(r, l)| row(r, l, &mut [])),
    }
    CREDIT_NANOS.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// [`credit_row`] with or without entropies, compiled for `simd`.
fn dispatch(
    simd: Simd,
    ent: bool,
    l: &mut [f32],
    e: &mut [f32],
    pa: &[f32],
    tables: &[f32],
    row: &CreditRow,
    p: usize,
    lp: &mut [f32],
    es: &mut [f32],
) {
    match (simd, ent) {
        // SAFETY: `Simd::selected` only names instruction sets the CPU supports.
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, true) => unsafe { row_avx512::<true>(l, e, pa, tables, row, p, lp, es) },
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, false) => unsafe { row_avx512::<false>(l, e, pa, tables, row, p, lp, es) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, true) => unsafe { row_avx2::<true>(l, e, pa, tables, row, p, lp, es) },
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, false) => unsafe { row_avx2::<false>(l, e, pa, tables, row, p, lp, es) },
        (_, true) => credit_row::<true>(l, e, pa, tables, row, p, lp, es),
        (_, false) => credit_row::<false>(l, e, pa, tables, row, p, lp, es),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2<const ENT: bool>(
    l: &mut [f32],
    e: &mut [f32],
    pa: &[f32],
    tables: &[f32],
    row: &CreditRow,
    p: usize,
    lp: &mut [f32],
    es: &mut [f32],
) {
    credit_row::<ENT>(l, e, pa, tables, row, p, lp, es)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn row_avx512<const ENT: bool>(
    l: &mut [f32],
    e: &mut [f32],
    pa: &[f32],
    tables: &[f32],
    row: &CreditRow,
    p: usize,
    lp: &mut [f32],
    es: &mut [f32],
) {
    credit_row::<ENT>(l, e, pa, tables, row, p, lp, es)
}

impl CreditOps for Cpu {
    fn credit_pass(
        &self,
        flip_lp: &mut Vec<f32>,
        flip_ent: Option<&mut Vec<f32>>,
        parent: &Vec<f32>,
        w: &Vec<f32>,
        tables: &mut Vec<f32>,
        child_logits: &Vec<f32>,
        child: &Vec<f32>,
        b: usize,
        p: usize,
        c: usize,
    ) {
        credit_pass(flip_lp, flip_ent.map(|e| e.as_mut_slice()), parent, w, tables, child_logits, child, b, p, c);
    }

    fn hnca_unit_grad(&self, out: &mut Vec<f32>, inp: &HncaInputs<'_, Vec<f32>>, b: usize, p: usize) {
        let t = inp.t;
        let simd = Simd::selected();
        for_each_row(&mut out[..b * p], p, 40 * p, |r, out| {
            let row_term = |col: usize| inp.terms[r * t + col];
            fn rows(v: &[f32], r: usize, p: usize) -> &[f32] {
                &v[r * p..(r + 1) * p]
            }
            let row = UnitRow {
                logits: rows(inp.logits, r, p),
                z: rows(inp.z, r, p),
                flip_dec: rows(inp.flip_dec, r, p),
                gen_logits: if inp.gen_is_prior { &inp.gen_logits[..p] } else { rows(inp.gen_logits, r, p) },
                flip_lp: inp.above.as_ref().map_or(&[][..], |a| rows(a.flip_lp, r, p)),
                flip_ent: inp.above.as_ref().map_or(&[][..], |a| rows(a.flip_ent, r, p)),
                dec_actual: row_term(inp.col_dec),
                gen_total: row_term(inp.col_gen),
                ent_actual: inp.above.as_ref().map_or(0.0, |a| row_term(a.col_ent)),
                reward: inp.reward[inp.reward_offset + r],
                scale: inp.scale,
                accumulate: inp.accumulate,
            };
            // Inlined into Simd::run's target-feature function (a closure this large is not by
            // itself, and would run as SSE).
            simd.run(
                #[inline(always)]
                || match (inp.above.is_some(), inp.all_child) {
                    (true, true) => unit_grad_row::<true, true>(out, &row),
                    (true, false) => unit_grad_row::<true, false>(out, &row),
                    (false, true) => unit_grad_row::<false, true>(out, &row),
                    (false, false) => unit_grad_row::<false, false>(out, &row),
                },
            )
        });
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
        let simd = Simd::selected();
        for_each_row(&mut out[..b * n], n, 20 * n, |r, out| {
            let row = |v| row_of(v, r, n, false);
            let (a, z, c) = (row(logits), row(z), coef[r]);
            let own_entropy = |a: f32, p: f32| p * (1.0 - p) * clipped_log_odds_against(a);
            // One loop per alternative, each compiled for the selected instruction set.
            simd.run(
                #[inline(always)]
                || match alt {
                    ScoreAlt::Mean => {
                        for ((o, &a), &z) in out.iter_mut().zip(a).zip(z) {
                            let p = clipped_p(a);
                            *o = own_entropy(a, p) + c * (z - p);
                        }
                    }
                    ScoreAlt::Sample(z2) => {
                        for (((o, &a), &z), &z2) in out.iter_mut().zip(a).zip(z).zip(row(z2)) {
                            let p = clipped_p(a);
                            *o = own_entropy(a, p) + c * (z - z2);
                        }
                    }
                    ScoreAlt::Antithetic(zt) => {
                        for (((o, &a), &z), &zt) in out.iter_mut().zip(a).zip(z).zip(row(zt)) {
                            let p = clipped_p(a);
                            *o = own_entropy(a, p) + c * ((z - zt) * p.max(1.0 - p));
                        }
                    }
                },
            );
        });
    }

    fn bandit_unit_grad(
        &self,
        out: &mut Vec<f32>,
        logits: &Vec<f32>,
        z: &Vec<f32>,
        flip: Option<&Vec<f32>>,
        rho_gradient: bool,
        coef: &Vec<f32>,
        b: usize,
        n: usize,
    ) {
        for_each_row(&mut out[..b * n], n, 20 * n, |r, out| {
            for (j, o) in out.iter_mut().enumerate() {
                let i = r * n + j;
                let p = clipped_p(logits[i]);
                *o = coef[r]
                    * match flip {
                        // δ = log P_0 - log P_1 is ± the change that flipping the unit makes.
                        Some(flip) => {
                            let (rho1, rho0) = hindsight_ratios(p, if z[i] > 0.5 { flip[i] } else { -flip[i] });
                            let g = p * (1.0 - p) * (rho1 - rho0);
                            if rho_gradient {
                                g * rho0
                            } else {
                                g
                            }
                        }
                        None => z[i] - p,
                    };
            }
        });
    }
}
