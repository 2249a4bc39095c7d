//! The conv operations as kernel launches on a [`Device`] (kernels/conv.cu).

use super::{
    blocks, ConvBackwardInputParams, ConvForwardParams, ConvSampleGradsParams, Device, Guards, KernelBackend, ReluBackwardParams,
    ELEMENTWISE, ELEMENTWISE_BLOCK,
};
use crate::backend::{ConvGeom, ConvOps};

/// The shape fields every convolution kernel takes, as i32.
fn dims(b: usize, g: ConvGeom) -> [i32; 6] {
    [b, g.height, g.width, g.c_in, g.c_out, g.k].map(|v| v as i32)
}

impl<D: Device> ConvOps for KernelBackend<D> {
    fn conv_relu_forward(&self, out: &mut D::Buf, x: &D::Buf, w: &D::Buf, bias: &D::Buf, b: usize, g: ConvGeom) {
        let mut keep = Guards::new(&self.device);
        let [b_, height, width, c_in, c_out, k] = dims(b, g);
        let p = ConvForwardParams {
            out: keep.ptr_mut(out),
            x: keep.ptr(x),
            weights: keep.ptr(w),
            bias: keep.ptr(bias),
            b: b_,
            height,
            width,
            c_in,
            c_out,
            k,
        };
        self.launch(blocks(b * g.out_len(), ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn conv_backward_input(&self, dx: &mut D::Buf, dout: &D::Buf, w: &D::Buf, b: usize, g: ConvGeom) {
        let mut keep = Guards::new(&self.device);
        let [b_, height, width, c_in, c_out, k] = dims(b, g);
        let p = ConvBackwardInputParams {
            dx: keep.ptr_mut(dx),
            dout: keep.ptr(dout),
            weights: keep.ptr(w),
            b: b_,
            height,
            width,
            c_in,
            c_out,
            k,
        };
        self.launch(blocks(b * g.in_len(), ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn conv_sample_grads(&self, gw: &mut D::Buf, gb: &mut D::Buf, x: &D::Buf, dout: &D::Buf, b: usize, g: ConvGeom) {
        let mut keep = Guards::new(&self.device);
        let [b_, height, width, c_in, c_out, k] = dims(b, g);
        let p = ConvSampleGradsParams {
            gw: keep.ptr_mut(gw),
            gb: keep.ptr_mut(gb),
            x: keep.ptr(x),
            dout: keep.ptr(dout),
            b: b_,
            height,
            width,
            c_in,
            c_out,
            k,
        };
        self.launch(blocks(b * (g.weights() + g.c_out), ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn relu_backward(&self, g: &mut D::Buf, act: &D::Buf, n: usize) {
        let mut keep = Guards::new(&self.device);
        let p = ReluBackwardParams { g: keep.ptr_mut(g), act: keep.ptr(act), n: n as i32 };
        self.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }
}
