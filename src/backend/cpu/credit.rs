//! The CPU credit pass: for every row and every parent unit, the change in its children's
//! log-likelihood (and entropy) when that parent flips, fused over (batch, parent, child) with
//! no (b, p, c) tensor. This is where f-HNCA spends most of a step, so the inner loop is written
//! to vectorise: the transcendental part is a map into scratch rows, sums run in eight explicit
//! lanes, and a copy of the loop compiled for AVX2+FMA or AVX-512 is chosen at run time.

use std::cell::RefCell;

use rayon::prelude::*;

use super::simd::{lane_sum, Simd};
use crate::math::{log_sigmoid, log_sigmoid_and_entropy};

/// Rows below this many elements of work are not worth splitting across threads.
const PAR_MIN_WORK: usize = 1 << 15;

/// Wall time spent in the credit pass since the last [`take_credit_nanos`], for `hnca bench`'s
/// cost model (two clock reads per call).
static CREDIT_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Returns and resets the wall time the credit pass has taken, in nanoseconds.
pub fn take_credit_nanos() -> u64 {
    CREDIT_NANOS.swap(0, std::sync::atomic::Ordering::Relaxed)
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
    row: &'a CreditRow<'a>,
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
    credit_row_slices::<ENT>(job.flip_lp, job.flip_ent, job.parent, job.w, r.sa, r.s, r.lp0, r.ent0, job.lp, job.ent)
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
/// log-probability and entropy of each child; rows of a per-thread scratch buffer.
struct CreditRow<'a> {
    sa: &'a [f32],
    s: &'a [f32],
    lp0: &'a [f32],
    ent0: &'a [f32],
}

impl<'a> CreditRow<'a> {
    /// Fills `scratch`, (4, c), from the row's child logits and samples, (c) each.
    fn fill(scratch: &'a mut [f32], child_logits: &[f32], child: &[f32]) -> Self {
        let c = child.len();
        let (sa, rest) = scratch.split_at_mut(c);
        let (s, rest) = rest.split_at_mut(c);
        let (lp0, ent0) = rest.split_at_mut(c);
        for j in 0..c {
            s[j] = 2.0 * child[j] - 1.0;
            sa[j] = child_logits[j] * s[j];
            (lp0[j], ent0[j]) = log_sigmoid_and_entropy(sa[j]);
        }
        CreditRow { sa, s, lp0, ent0 }
    }
}

thread_local! {
    /// Per-thread scratch for the credit pass, (6, c): grown once, then reused by every step.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The credit pass over a batch: `flip_lp` is (b, p), `flip_ent` (b, p) or absent, `parent`
/// (b, p), `w` (p, c), `child_logits` and `child` (b, c). Rows are independent, so the result
/// does not depend on how rayon spreads them over threads.
pub fn credit_pass(
    flip_lp: &mut [f32],
    flip_ent: Option<&mut [f32]>,
    parent: &[f32],
    w: &[f32],
    child_logits: &[f32],
    child: &[f32],
    b: usize,
    p: usize,
    c: usize,
) {
    debug_assert_eq!((flip_lp.len(), parent.len(), w.len(), child_logits.len(), child.len()), (b * p, b * p, p * c, b * c, b * c));
    let started = std::time::Instant::now();
    let simd = Simd::selected();
    let row = |r: usize, flip_lp: &mut [f32], flip_ent: &mut [f32]| {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < 6 * c {
                scratch.resize(6 * c, 0.0);
            }
            let (children, out) = scratch.split_at_mut(4 * c);
            let (lp, ent) = out.split_at_mut(c);
            let children = CreditRow::fill(children, &child_logits[r * c..(r + 1) * c], &child[r * c..(r + 1) * c]);
            let job = CreditJob { flip_lp, flip_ent, parent: &parent[r * p..(r + 1) * p], w, row: &children, lp, ent: &mut ent[..c] };
            if job.flip_ent.is_empty() {
                credit_row_dispatch::<false>(simd, job);
            } else {
                credit_row_dispatch::<true>(simd, job);
            }
        })
    };
    let parallel = b * p * c >= PAR_MIN_WORK;
    match flip_ent {
        Some(ent) if parallel => flip_lp.par_chunks_mut(p).zip(ent.par_chunks_mut(p)).enumerate().for_each(|(r, (l, e))| row(r, l, e)),
        Some(ent) => flip_lp.chunks_mut(p).zip(ent.chunks_mut(p)).enumerate().for_each(|(r, (l, e))| row(r, l, e)),
        None if parallel => flip_lp.par_chunks_mut(p).enumerate().for_each(|(r, l)| row(r, l, &mut [])),
        None => flip_lp.chunks_mut(p).enumerate().for_each(|(r, l)| row(r, l, &mut [])),
    }
    CREDIT_NANOS.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
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

fn credit_row_dispatch<const ENT: bool>(simd: Simd, job: CreditJob<'_>) {
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
