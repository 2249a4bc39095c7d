//! The launches that backpropagate through deterministic layers, which [`super::KernelBackend`]'s
//! operations call: kernels/conv.cu's convolutions, the ReLU's gradient and the gradient
//! variance of per-example gradients (a dense layer's input gradient is a GEMM, in
//! ksample.rs).

use super::{
    blocks, ConvBackwardInputParams, ConvForwardParams, ConvSampleGradsParams, Device, Guards, KernelBackend, ReluBackwardParams,
    SampleGradVarParams,
};
use super::{ELEMENTWISE, ELEMENTWISE_BLOCK, REDUCE_BLOCK};
use crate::backend::{sample_grad_variance_slots, ConvGeom};

/// The shape fields every convolution kernel takes, as i32.
fn dims(b: usize, g: ConvGeom) -> [i32; 6] {
    [b, g.height, g.width, g.c_in, g.c_out, g.k].map(|v| v as i32)
}

impl<D: Device> KernelBackend<D> {
    pub(super) fn launch_conv_relu_forward(&self, out: &mut D::Buf, x: &D::Buf, w: &D::Buf, bias: &D::Buf, b: usize, g: ConvGeom) {
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

    pub(super) fn launch_conv_backward_input(&self, dx: &mut D::Buf, dout: &D::Buf, w: &D::Buf, b: usize, g: ConvGeom) {
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

    pub(super) fn launch_conv_sample_grads(&self, gw: &mut D::Buf, gb: &mut D::Buf, x: &D::Buf, dout: &D::Buf, b: usize, g: ConvGeom) {
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

    pub(super) fn launch_relu_backward(&self, g: &mut D::Buf, act: &D::Buf, n: usize) {
        let mut keep = Guards::new(&self.device);
        let p = ReluBackwardParams { g: keep.ptr_mut(g), act: keep.ptr(act), n: n as i32 };
        self.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_sample_grad_variance(
        &self,
        partials: &mut D::Array<f64>,
        first_slot: usize,
        gw: &D::Buf,
        gb: &D::Buf,
        dw: &D::Buf,
        db: &D::Buf,
        b: usize,
        nw: usize,
        nb: usize,
    ) {
        let mut keep = Guards::new(&self.device);
        let p = SampleGradVarParams {
            partials: keep.array_mut(partials),
            gw: keep.ptr(gw),
            gb: keep.ptr(gb),
            dw: keep.ptr(dw),
            db: keep.ptr(db),
            first_slot: first_slot as i32,
            b: b as i32,
            nw: nw as i32,
            nb: nb as i32,
        };
        self.launch([sample_grad_variance_slots(b, nw, nb) as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }
}
