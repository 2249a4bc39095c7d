//! The convolutions on the CPU, the twins of kernels/conv.cu: one example per rayon task, each
//! through im2col (a per-thread scratch matrix of the example's patches, (oh·ow, k·k·c_in)) and
//! one matrixmultiply product. The kernels sum in a different order; tests compare them normwise.

use super::dense::sgemm_strided;
use super::Cpu;
use crate::backend::{ConvGeom, ConvOps};
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// The example's patches (im2col), or their gradient; grown once per thread and reused.
    static PATCHES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's patch scratch, at least `len` long.
fn with_patches<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    PATCHES.with(|cell| {
        let mut v = cell.borrow_mut();
        if v.len() < len {
            v.resize(len, 0.0);
        }
        f(&mut v[..len])
    })
}

/// cols (oh·ow, k·k·c_in): row (oy, ox) holds x's patch at (oy, ox) in (ky, kx, c) order, the
/// order of the weights' rows. x is one example (height, width, c_in).
fn im2col(cols: &mut [f32], x: &[f32], g: ConvGeom) {
    let (ow, patch, run) = (g.out_width(), g.patch(), g.k * g.c_in);
    for (q, row) in cols.chunks_exact_mut(patch).enumerate() {
        let (oy, ox) = (q / ow, q % ow);
        for ky in 0..g.k {
            let at = ((oy + ky) * g.width + ox) * g.c_in;
            row[ky * run..(ky + 1) * run].copy_from_slice(&x[at..at + run]);
        }
    }
}

/// The transpose of im2col: dx (height, width, c_in) = the sum of every patch's gradient in
/// dcols (oh·ow, k·k·c_in) at the pixels it came from.
fn col2im(dx: &mut [f32], dcols: &[f32], g: ConvGeom) {
    dx.iter_mut().for_each(|v| *v = 0.0);
    let (ow, patch, run) = (g.out_width(), g.patch(), g.k * g.c_in);
    for (q, row) in dcols.chunks_exact(patch).enumerate() {
        let (oy, ox) = (q / ow, q % ow);
        for ky in 0..g.k {
            let at = ((oy + ky) * g.width + ox) * g.c_in;
            for (d, &v) in dx[at..at + run].iter_mut().zip(&row[ky * run..(ky + 1) * run]) {
                *d += v;
            }
        }
    }
}

/// Runs `f(r, out_row)` for every example's output row (`per_row` values) in parallel.
fn per_example(out: &mut [f32], per_row: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    out.par_chunks_mut(per_row).enumerate().for_each(|(r, row)| f(r, row));
}

/// See [`crate::backend::Backend::conv_relu_forward`].
pub fn conv_relu_forward(out: &mut [f32], x: &[f32], w: &[f32], bias: &[f32], b: usize, g: ConvGeom) {
    assert_eq!((out.len(), x.len(), w.len(), bias.len()), (b * g.out_len(), b * g.in_len(), g.weights(), g.c_out));
    let positions = g.out_height() * g.out_width();
    per_example(out, g.out_len(), |r, out| {
        for row in out.chunks_exact_mut(g.c_out) {
            row.copy_from_slice(bias);
        }
        with_patches(positions * g.patch(), |cols| {
            im2col(cols, &x[r * g.in_len()..(r + 1) * g.in_len()], g);
            let patch = g.patch() as isize;
            sgemm_strided(positions, g.patch(), g.c_out, 1.0, (cols, patch, 1), (w, g.c_out as isize, 1), 1.0, out);
        });
        out.iter_mut().for_each(|v| *v = v.max(0.0));
    });
}

/// See [`crate::backend::Backend::conv_backward_input`].
pub fn conv_backward_input(dx: &mut [f32], dout: &[f32], w: &[f32], b: usize, g: ConvGeom) {
    assert_eq!((dx.len(), dout.len(), w.len()), (b * g.in_len(), b * g.out_len(), g.weights()));
    let positions = g.out_height() * g.out_width();
    per_example(dx, g.in_len(), |r, dx| {
        with_patches(positions * g.patch(), |dcols| {
            // dcols (positions, patch) = dout_r (positions, c_out) · wᵀ (c_out, patch).
            let d = &dout[r * g.out_len()..(r + 1) * g.out_len()];
            sgemm_strided(positions, g.c_out, g.patch(), 1.0, (d, g.c_out as isize, 1), (w, 1, g.c_out as isize), 0.0, dcols);
            col2im(dx, dcols, g);
        });
    });
}

/// See [`crate::backend::Backend::conv_sample_grads`].
pub fn conv_sample_grads(gw: &mut [f32], gb: &mut [f32], x: &[f32], dout: &[f32], b: usize, g: ConvGeom) {
    assert_eq!((gw.len(), gb.len(), x.len(), dout.len()), (b * g.weights(), b * g.c_out, b * g.in_len(), b * g.out_len()));
    let positions = g.out_height() * g.out_width();
    per_example(gw, g.weights(), |r, gw| {
        let d = &dout[r * g.out_len()..(r + 1) * g.out_len()];
        with_patches(positions * g.patch(), |cols| {
            im2col(cols, &x[r * g.in_len()..(r + 1) * g.in_len()], g);
            // gw_r (patch, c_out) = colsᵀ (patch, positions) · dout_r (positions, c_out).
            let patch = g.patch() as isize;
            sgemm_strided(g.patch(), positions, g.c_out, 1.0, (cols, 1, patch), (d, g.c_out as isize, 1), 0.0, gw);
        });
    });
    for (r, gb) in gb.chunks_exact_mut(g.c_out).enumerate() {
        gb.iter_mut().for_each(|v| *v = 0.0);
        for row in dout[r * g.out_len()..(r + 1) * g.out_len()].chunks_exact(g.c_out) {
            for (s, &v) in gb.iter_mut().zip(row) {
                *s += v;
            }
        }
    }
}

/// See [`crate::backend::Backend::relu_backward`].
pub fn relu_backward(g: &mut [f32], act: &[f32]) {
    // `!(a > 0)`, not `a <= 0`: a NaN activation passes no gradient either.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    for (v, &a) in g.iter_mut().zip(act) {
        if !(a > 0.0) {
            *v = 0.0;
        }
    }
}

impl ConvOps for Cpu {
    fn conv_relu_forward(&self, out: &mut Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, bias: &Vec<f32>, b: usize, g: ConvGeom) {
        conv_relu_forward(out, x, w, bias, b, g);
    }

    fn conv_backward_input(&self, dx: &mut Vec<f32>, dout: &Vec<f32>, w: &Vec<f32>, b: usize, g: ConvGeom) {
        conv_backward_input(dx, dout, w, b, g);
    }

    fn conv_sample_grads(&self, gw: &mut Vec<f32>, gb: &mut Vec<f32>, x: &Vec<f32>, dout: &Vec<f32>, b: usize, g: ConvGeom) {
        conv_sample_grads(gw, gb, x, dout, b, g);
    }

    fn relu_backward(&self, g: &mut Vec<f32>, act: &Vec<f32>, n: usize) {
        relu_backward(&mut g[..n], &act[..n]);
    }
}
