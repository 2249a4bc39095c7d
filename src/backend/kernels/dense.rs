//! The dense operations as kernel launches on a [`Device`] (kernels/dense.cu).

use super::{
    blocks, AffineParams, AxpyParams, ColumnMeanParams, Device, GemmParams, Guards, KernelBackend, ELEMENTWISE, ELEMENTWISE_BLOCK,
};
use crate::backend::{DenseOps, GemmInit};

impl<D: Device> DenseOps for KernelBackend<D> {
    fn matmul_forward(&self, out: &mut D::Buf, inp: &D::Buf, w: &D::Buf, bias: &D::Buf, b: usize, k: usize, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        self.gemm(GemmParams {
            c: keep.ptr_mut(out),
            a: keep.ptr(inp),
            b: keep.ptr(w),
            bias: keep.ptr(bias),
            m: b as i32,
            n: n as i32,
            k: k as i32,
            a_row: k as i32,
            a_col: 1,
            b_row: n as i32,
            b_col: 1,
            alpha: 1.0,
            beta: 0.0,
        });
    }

    fn matmul_backward_weight(&self, dw: &mut D::Buf, inp: &D::Buf, dout: &D::Buf, b: usize, k: usize, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        // dw (k, n) = inpᵀ · dout / b: A = inpᵀ, whose element (i, r) is inp[r·k + i].
        self.gemm(GemmParams {
            c: keep.ptr_mut(dw),
            a: keep.ptr(inp),
            b: keep.ptr(dout),
            bias: 0,
            m: k as i32,
            n: n as i32,
            k: b as i32,
            a_row: 1,
            a_col: k as i32,
            b_row: n as i32,
            b_col: 1,
            alpha: 1.0 / b as f32,
            beta: 0.0,
        });
    }

    fn matmul_backward_input(&self, din: &mut D::Buf, dout: &D::Buf, w: &D::Buf, init: GemmInit<'_, D::Buf>, b: usize, k: usize, n: usize) {
        // din (b, k) = dout (b, n) · wᵀ (+ init): A = dout, B = wᵀ, whose element (l, j) is w[j·n + l].
        let mut keep = Guards::new(&self.device);
        let (bias, beta) = match init {
            GemmInit::Zero => (0, 0.0),
            GemmInit::Keep => (0, 1.0),
            GemmInit::Broadcast(bias) => (keep.ptr(bias), 0.0),
        };
        self.gemm(GemmParams {
            c: keep.ptr_mut(din),
            a: keep.ptr(dout),
            b: keep.ptr(w),
            bias,
            m: b as i32,
            n: k as i32,
            k: n as i32,
            a_row: n as i32,
            a_col: 1,
            b_row: 1,
            b_col: n as i32,
            alpha: 1.0,
            beta,
        });
    }

    fn column_mean(&self, out: &mut D::Buf, x: &D::Buf, b: usize, n: usize) {
        let mut keep = Guards::new(&self.device);
        let p = ColumnMeanParams { out: keep.ptr_mut(out), x: keep.ptr(x), b: b as i32, n: n as i32 };
        self.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn axpy(&self, y: &mut D::Buf, a: f32, x: &D::Buf, n: usize) {
        let mut keep = Guards::new(&self.device);
        let p = AxpyParams { y: keep.ptr_mut(y), x: keep.ptr(x), a, n: n as i32 };
        self.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn affine(&self, out: &mut D::Buf, x: &D::Buf, scale: f32, shift: f32, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = AffineParams { out: keep.ptr_mut(out), x: keep.ptr(x), scale, shift, n: n as i32 };
        self.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }
}
