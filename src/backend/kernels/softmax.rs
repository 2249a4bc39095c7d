//! The softmax operations as kernel launches on a [`Device`] (kernels/softmax.cu).

use super::{
    blocks, CreditTablesParams, Device, Guards, KernelBackend, RngKeyC, SoftmaxActParams, SoftmaxCreditParams, SoftmaxScoreParams,
    ELEMENTWISE, ELEMENTWISE_BLOCK, REDUCE_BLOCK,
};
use crate::backend::SoftmaxOps;
use crate::rng::RngKey;

impl<D: Device> SoftmaxOps for KernelBackend<D> {
    fn softmax_act(
        &self,
        action: &mut D::Buf,
        reward: &mut D::Buf,
        logits: &D::Buf,
        labels: &D::Buf,
        key: RngKey,
        clock: Option<&D::Array<u32>>,
        b: usize,
        a: usize,
    ) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = SoftmaxActParams {
            action: keep.ptr_mut(action),
            reward: keep.ptr_mut(reward),
            logits: keep.ptr(logits),
            labels: keep.ptr(labels),
            key: RngKeyC::new(key, clock.map_or(0, |c| keep.array(c))),
            b: b as i32,
            a: a as i32,
        };
        self.launch(blocks(b, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn softmax_score(&self, dout: &mut D::Buf, logits: &D::Buf, action: &D::Buf, coef: &D::Buf, b: usize, a: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = SoftmaxScoreParams {
            dout: keep.ptr_mut(dout),
            logits: keep.ptr(logits),
            action: keep.ptr(action),
            coef: keep.ptr(coef),
            b: b as i32,
            a: a as i32,
        };
        self.launch(blocks(b, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn softmax_credit(
        &self,
        flip: &mut D::Buf,
        parent: &D::Buf,
        w2: &D::Buf,
        tables: &mut D::Buf,
        logits: &D::Buf,
        action: &D::Buf,
        b: usize,
        p: usize,
        a: usize,
    ) {
        let d = &self.device;
        {
            let mut keep = Guards::new(d);
            let t = CreditTablesParams { tables: keep.ptr_mut(tables), w: keep.ptr(w2), p: p as i32, c: a as i32 };
            self.launch([p as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &t);
        }
        let mut keep = Guards::new(d);
        let params = SoftmaxCreditParams {
            flip: keep.ptr_mut(flip),
            parent: keep.ptr(parent),
            w2: keep.ptr(w2),
            tables: keep.ptr(tables),
            logits: keep.ptr(logits),
            action: keep.ptr(action),
            b: b as i32,
            p: p as i32,
            a: a as i32,
        };
        self.launch(blocks(b * p, ELEMENTWISE_BLOCK), ELEMENTWISE, &params);
    }
}
