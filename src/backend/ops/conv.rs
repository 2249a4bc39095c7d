//! Convolutions (the nonlinear bandit's features) and the ReLU.

use crate::backend::MemoryOps;

/// One convolution's shape: inputs (b, height, width, c_in) in channels-last order, `c_out`
/// filters of k×k, stride 1 and no padding ("VALID"), so outputs are (b, height - k + 1,
/// width - k + 1, c_out). Weights are (k, k, c_in, c_out): one tap's weights to every output
/// channel are contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub height: usize,
    pub width: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
}

impl ConvGeom {
    pub fn out_height(&self) -> usize {
        self.height + 1 - self.k
    }
    pub fn out_width(&self) -> usize {
        self.width + 1 - self.k
    }
    /// Values of one example's input.
    pub fn in_len(&self) -> usize {
        self.height * self.width * self.c_in
    }
    /// Values of one example's output.
    pub fn out_len(&self) -> usize {
        self.out_height() * self.out_width() * self.c_out
    }
    /// Values of one filter tap's patch, k·k·c_in: a row of im2col.
    pub fn patch(&self) -> usize {
        self.k * self.k * self.c_in
    }
    pub fn weights(&self) -> usize {
        self.patch() * self.c_out
    }
}

pub trait ConvOps: MemoryOps {
    /// out (b, oh, ow, c_out) = max(0, x ⊛ w + bias): a convolution of `g`'s shape and a ReLU.
    /// x (b, height, width, c_in), w (k, k, c_in, c_out), bias (c_out).
    fn conv_relu_forward(&self, out: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, g: ConvGeom);

    /// dx (b, height, width, c_in): the gradient that reaches a convolution's input from the
    /// gradient dout (b, oh, ow, c_out) of its output (before the ReLU). w (k, k, c_in, c_out).
    fn conv_backward_input(&self, dx: &mut Self::Buf, dout: &Self::Buf, w: &Self::Buf, b: usize, g: ConvGeom);

    /// A convolution's per-example gradients from dout (b, oh, ow, c_out), the gradient of its
    /// output before the ReLU: gw (b, k·k·c_in·c_out), row r = Σ over output positions of x's
    /// patch there times dout[r, position, :]; gb (b, c_out) = Σ over positions of dout[r].
    /// x (b, height, width, c_in). Their column means are the batch's gradients.
    fn conv_sample_grads(&self, gw: &mut Self::Buf, gb: &mut Self::Buf, x: &Self::Buf, dout: &Self::Buf, b: usize, g: ConvGeom);

    /// g (n) = 0 wherever act (n), a ReLU's output, is not positive: the gradient through it.
    fn relu_backward(&self, g: &mut Self::Buf, act: &Self::Buf, n: usize);
}
