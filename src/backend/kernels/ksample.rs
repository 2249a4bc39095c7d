//! The operations of the K-sample estimators (kernels/ksample.cu) and their GEMM as kernel
//! launches on a [`Device`]: the part of [`KernelBackend`] that docs/estimators.md added,
//! kept apart so that each file stays readable. Per-chain buffers reach a kernel as a table of
//! their device addresses, uploaded once (the buffers live as long as the step's workspace).

use super::{
    blocks, ArmsSampleParams, AxpyParams, Device, EntropyGradParams, GemmParams, Guards, KScoreParams, KernelBackend, RngKeyC, ELEMENTWISE,
    ELEMENTWISE_BLOCK, REDUCE_BLOCK,
};
use crate::backend::{GemmInit, KScoreInputs};
use crate::rng::RngKey;

impl<D: Device> KernelBackend<D> {
    /// din (b, k) = dout (b, n) · wᵀ (+ init): A = dout, B = wᵀ, whose element (l, j) is w[j·n + l].
    pub(super) fn launch_matmul_backward_input(
        &self,
        din: &mut D::Buf,
        dout: &D::Buf,
        w: &D::Buf,
        init: GemmInit<'_, D::Buf>,
        b: usize,
        k: usize,
        n: usize,
    ) {
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

    pub(super) fn launch_entropy_grad(&self, out: &mut D::Buf, logits: &D::Buf, b: usize, n: usize) {
        let mut keep = Guards::new(&self.device);
        let p = EntropyGradParams { out: keep.ptr_mut(out), logits: keep.ptr(logits), b: b as i32, n: n as i32 };
        self.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    pub(super) fn launch_arms_sample(
        &self,
        zs: &mut [&mut D::Buf],
        logits: &D::Buf,
        key: RngKey,
        clock: Option<&D::Array<u32>>,
        b: usize,
        n: usize,
    ) {
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

    pub(super) fn launch_k_score(
        &self,
        out: &mut D::Buf,
        cv_partials: Option<&mut D::Buf>,
        inp: &KScoreInputs<'_, D::Buf>,
        b: usize,
        n: usize,
    ) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let z: Vec<u64> = inp.z.iter().map(|z| keep.ptr(z)).collect();
        let grad_f: Vec<u64> = inp.grad_f.iter().map(|g| keep.ptr(g)).collect();
        let n_coef = match inp.mode {
            crate::backend::KScoreMode::DoubleCv => 1,
            crate::backend::KScoreMode::Rodeo => super::launch::RODEO_LEARNED as i32,
            _ => 0,
        };
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
            n_coef,
        };
        self.launch([b as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    pub(super) fn launch_axpy(&self, y: &mut D::Buf, a: f32, x: &D::Buf, n: usize) {
        let mut keep = Guards::new(&self.device);
        let p = AxpyParams { y: keep.ptr_mut(y), x: keep.ptr(x), a, n: n as i32 };
        self.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }
}
