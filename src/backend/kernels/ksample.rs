//! The ksample operations as kernel launches on a [`Device`] (kernels/ksample.cu).

use super::{blocks, ArmsSampleParams, Device, Guards, KScoreParams, KernelBackend, RngKeyC, ELEMENTWISE, ELEMENTWISE_BLOCK, REDUCE_BLOCK};
use crate::backend::{KSampleOps, KScoreInputs};
use crate::rng::RngKey;

impl<D: Device> KSampleOps for KernelBackend<D> {
    fn arms_sample(&self, zs: &mut [&mut D::Buf], logits: &D::Buf, key: RngKey, clock: Option<&D::Array<u32>>, b: usize, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let k = zs.len();
        let table: Vec<u64> = zs.iter_mut().map(|z| keep.ptr_mut(z)).collect();
        let p = ArmsSampleParams {
            zs: self.u64_constant(&table),
            logits: keep.ptr(logits),
            key: RngKeyC::new(key, clock.map_or(0, |c| keep.array(c))),
            b: b as i32,
            n: n as i32,
            k: k as i32,
        };
        self.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn k_score_unit_grad(&self, out: &mut D::Buf, cv_partials: Option<&mut D::Buf>, inp: &KScoreInputs<'_, D::Buf>, b: usize, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let z: Vec<u64> = inp.z.iter().map(|z| keep.ptr(z)).collect();
        let grad_f: Vec<u64> = inp.grad_f.iter().map(|g| keep.ptr(g)).collect();
        let p = KScoreParams {
            out: keep.ptr_mut(out),
            cv_partials: cv_partials.map_or(0, |c| keep.ptr_mut(c)),
            logits: keep.ptr(inp.logits),
            z: self.u64_constant(&z),
            grad_f: if grad_f.is_empty() { 0 } else { self.u64_constant(&grad_f) },
            rows: keep.ptr(inp.rows),
            coef: inp.coef.map_or(0, |c| keep.ptr(c)),
            loss_scale: inp.loss_scale,
            b: b as i32,
            n: n as i32,
            k: inp.z.len() as i32,
            mode: inp.mode as i32,
            n_coef: inp.mode.learned() as i32,
        };
        self.launch([b as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }
}
