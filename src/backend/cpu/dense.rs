//! The CPU backend's matrix products: matrixmultiply's packed kernels, split into fixed blocks
//! of output that rayon runs in parallel. Each output element is summed by one kernel call over
//! the whole inner dimension, so the bits do not depend on the blocking or the thread count.

use super::Cpu;
use crate::backend::{DenseOps, GemmInit};
use rayon::prelude::*;

/// Output columns (forward) or rows (weight gradient) per parallel task: a multiple of every
/// matrixmultiply microkernel's width, and small enough to give two cores work at width 200.
const BLOCK: usize = 64;
/// Products below this many multiply-adds run on the calling thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// matrixmultiply calls made so far. Each allocates its packing buffer, the only allocation of a
/// CPU training step (tests/no_alloc.rs holds the step to that).
static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The number of matrixmultiply calls made by this process so far.
pub fn sgemm_calls() -> usize {
    CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A raw pointer that may cross to rayon's threads; each task touches a disjoint block.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint column or row blocks of the output (see the callers).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The element `offset` past the pointer (a method, so closures capture the whole `SendPtr`).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

fn for_blocks(total: usize, macs: usize, f: impl Fn(usize, usize) + Sync + Send) {
    let blocks = total.div_ceil(BLOCK);
    let run = |i: usize| {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f(i * BLOCK, BLOCK.min(total - i * BLOCK))
    };
    if macs >= PAR_MIN_MACS && blocks > 1 {
        (0..blocks).into_par_iter().for_each(run);
    } else {
        (0..blocks).for_each(run);
    }
}

/// out += inp·w: out is (b, n), inp (b, k), w (k, n), all row-major.
pub fn matmul_accumulate(out: &mut [f32], inp: &[f32], w: &[f32], b: usize, k: usize, n: usize) {
    assert_eq!((out.len(), inp.len(), w.len()), (b * n, b * k, k * n));
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_blocks(n, b * k * n, |j0, nb| {
        // SAFETY: columns j0..j0+nb of the (b, n) output and of the (k, n) weights lie inside the
        // asserted extents; blocks are disjoint, so no two tasks write the same element.
        unsafe {
            matrixmultiply::sgemm(
                b,
                k,
                nb,
                1.0,
                inp.as_ptr(),
                k as isize,
                1,
                w.as_ptr().add(j0),
                n as isize,
                1,
                1.0,
                out_ptr.at(j0),
                n as isize,
                1,
            );
        }
    });
}

/// dw = scale·inpᵀ·dout: dw is (k, n), inp (b, k), dout (b, n).
pub fn matmul_transposed_a(dw: &mut [f32], inp: &[f32], dout: &[f32], scale: f32, b: usize, k: usize, n: usize) {
    assert_eq!((dw.len(), inp.len(), dout.len()), (k * n, b * k, b * n));
    let dw_ptr = SendPtr(dw.as_mut_ptr());
    for_blocks(k, b * k * n, |i0, kb| {
        // SAFETY: rows i0..i0+kb of dw, read as columns i0.. of inp (inpᵀ has row stride 1 and
        // column stride k), lie inside the asserted extents; blocks of dw are disjoint.
        unsafe {
            matrixmultiply::sgemm(
                kb,
                b,
                n,
                scale,
                inp.as_ptr().add(i0),
                1,
                k as isize,
                dout.as_ptr(),
                n as isize,
                1,
                0.0,
                dw_ptr.at(i0 * n),
                n as isize,
                1,
            );
        }
    });
}

/// din = dout·wᵀ (+ din with `keep`): din is (b, k), dout (b, n), w (k, n).
pub fn matmul_transposed_b(din: &mut [f32], dout: &[f32], w: &[f32], keep: bool, b: usize, k: usize, n: usize) {
    assert_eq!((din.len(), dout.len(), w.len()), (b * k, b * n, k * n));
    let din_ptr = SendPtr(din.as_mut_ptr());
    for_blocks(k, b * k * n, |j0, kb| {
        // SAFETY: columns j0..j0+kb of the (b, k) output, read from rows j0.. of w (wᵀ has row
        // stride 1 and column stride n), lie inside the asserted extents; blocks are disjoint.
        unsafe {
            matrixmultiply::sgemm(
                b,
                n,
                kb,
                1.0,
                dout.as_ptr(),
                n as isize,
                1,
                w.as_ptr().add(j0 * n),
                1,
                n as isize,
                if keep { 1.0 } else { 0.0 },
                din_ptr.at(j0),
                k as isize,
                1,
            );
        }
    });
}

/// One matrixmultiply call on the calling thread, c (m, n) = alpha·a·b + beta·c with a (m, k)
/// and b (k, n) given by (row, column) strides and c row-major; for the per-example products
/// of the convolutions, which are already spread over threads by example.
pub fn sgemm_strided(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: (&[f32], isize, isize),
    b: (&[f32], isize, isize),
    beta: f32,
    c: &mut [f32],
) {
    let extent = |rows: usize, cols: usize, rs: isize, cs: isize| (rows.max(1) - 1) * rs as usize + (cols.max(1) - 1) * cs as usize + 1;
    assert!(a.0.len() >= extent(m, k, a.1, a.2) && b.0.len() >= extent(k, n, b.1, b.2) && c.len() >= m * n);
    CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the asserted lengths cover every element the strides reach.
    unsafe { matrixmultiply::sgemm(m, k, n, alpha, a.0.as_ptr(), a.1, a.2, b.0.as_ptr(), b.1, b.2, beta, c.as_mut_ptr(), n as isize, 1) }
}

impl DenseOps for Cpu {
    fn matmul_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, w: &Vec<f32>, bias: &Vec<f32>, b: usize, k: usize, n: usize) {
        debug_assert_eq!(bias.len(), n);
        for row in out.chunks_mut(n) {
            row.copy_from_slice(bias);
        }
        matmul_accumulate(out, inp, w, b, k, n);
    }

    fn matmul_backward_weight(&self, dw: &mut Vec<f32>, inp: &Vec<f32>, dout: &Vec<f32>, b: usize, k: usize, n: usize) {
        matmul_transposed_a(dw, inp, dout, 1.0 / b as f32, b, k, n);
    }

    fn matmul_backward_input(
        &self,
        din: &mut Vec<f32>,
        dout: &Vec<f32>,
        w: &Vec<f32>,
        init: GemmInit<'_, Vec<f32>>,
        b: usize,
        k: usize,
        n: usize,
    ) {
        let keep = match init {
            GemmInit::Zero => false,
            GemmInit::Keep => true,
            GemmInit::Broadcast(bias) => {
                for row in din.chunks_mut(k).take(b) {
                    row.copy_from_slice(&bias[..k]);
                }
                true
            }
        };
        matmul_transposed_b(din, dout, w, keep, b, k, n);
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

    fn axpy(&self, y: &mut Vec<f32>, a: f32, x: &Vec<f32>, n: usize) {
        for (y, &x) in y[..n].iter_mut().zip(&x[..n]) {
            *y += a * x;
        }
    }

    fn affine(&self, out: &mut Vec<f32>, x: &Vec<f32>, scale: f32, shift: f32, n: usize) {
        for (o, &v) in out[..n].iter_mut().zip(&x[..n]) {
            *o = scale * v + shift;
        }
    }
}
