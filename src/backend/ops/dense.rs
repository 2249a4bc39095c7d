//! Dense layers: the GEMMs of the forward and backward passes, and elementwise vector ops.

use crate::backend::MemoryOps;

/// What [`Backend::matmul_backward_input`] adds its product to.
#[derive(Debug)]
pub enum GemmInit<'a, Buf> {
    Zero,
    /// A row (k) added to every row.
    Broadcast(&'a Buf),
    /// The output's own values (accumulate).
    Keep,
}

impl<Buf> Clone for GemmInit<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Buf> Copy for GemmInit<'_, Buf> {}

pub trait DenseOps: MemoryOps {
    /// out (b, n) = inp (b, k) · w (k, n) + bias (n).
    fn matmul_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, k: usize, n: usize);

    /// dw (k, n) = inpᵀ (k, b) · dout (b, n) / b: the batch mean of per-example outer products.
    fn matmul_backward_weight(&self, dw: &mut Self::Buf, inp: &Self::Buf, dout: &Self::Buf, b: usize, k: usize, n: usize);

    /// din (b, k) = dout (b, n) · wᵀ, w (k, n), plus `init` ([`GemmInit`]): nothing, a row
    /// (k) broadcast to every row, or what din held.
    fn matmul_backward_input(
        &self,
        din: &mut Self::Buf,
        dout: &Self::Buf,
        w: &Self::Buf,
        init: GemmInit<'_, Self::Buf>,
        b: usize,
        k: usize,
        n: usize,
    );

    /// out (n) = mean over rows of x (b, n).
    fn column_mean(&self, out: &mut Self::Buf, x: &Self::Buf, b: usize, n: usize);

    /// y (n) += a · x: a plain gradient-ascent step (SGD for the prior).
    fn axpy(&self, y: &mut Self::Buf, a: f32, x: &Self::Buf, n: usize);

    /// out (n) = scale·x + shift elementwise: centring bits to ±1 (2z - 1), or doubling the
    /// weights that a centred parent's flip moves its children's logits by (2W).
    fn affine(&self, out: &mut Self::Buf, x: &Self::Buf, scale: f32, shift: f32, n: usize);
}
