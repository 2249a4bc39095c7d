//! The bernoulli operations as kernel launches on a [`Device`] (kernels/bernoulli.cu).

use super::{
    blocks, BernoulliDeltaParams, BernoulliSampleParams, ClipLogitsParams, Device, EntropyGradParams, Guards, KernelBackend, RngKeyC,
    RowTermParams, WeightedRowSumParams, ELEMENTWISE, ELEMENTWISE_BLOCK, REDUCE_BLOCK,
};
use crate::backend::DenseOps;
use crate::backend::{BernoulliOps, SampleMode};
use crate::rng::RngKey;

impl<D: Device> BernoulliOps for KernelBackend<D> {
    fn bernoulli_sample(
        &self,
        z: &mut D::Buf,
        anti: Option<&mut D::Buf>,
        logits: &D::Buf,
        key: RngKey,
        clock: Option<&D::Array<u32>>,
        mode: SampleMode,
        b: usize,
        n: usize,
    ) {
        let antithetic = mode == SampleMode::Antithetic;
        assert!(!antithetic || anti.is_some(), "antithetic sampling needs an output for the twin");
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = BernoulliSampleParams {
            z: keep.ptr_mut(z),
            anti: anti.map_or(0, |a| keep.ptr_mut(a)),
            logits: keep.ptr(logits),
            key: RngKeyC::new(key, clock.map_or(0, |c| keep.array(c))),
            b: b as i32,
            n: n as i32,
            antithetic: antithetic as i32,
        };
        self.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn log_prob_rows(
        &self,
        terms: &mut D::Buf,
        t: usize,
        col: usize,
        logits: &D::Buf,
        broadcast: bool,
        targets: &D::Buf,
        base: Option<(&D::Buf, &D::Buf)>,
        b: usize,
        n: usize,
    ) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = RowTermParams {
            terms: keep.ptr_mut(terms),
            logits: keep.ptr(logits),
            targets: keep.ptr(targets),
            base_logits: base.map_or(0, |(l, _)| keep.ptr(l)),
            base_targets: base.map_or(0, |(_, x)| keep.ptr(x)),
            b: b as i32,
            n: n as i32,
            t: t as i32,
            col: col as i32,
            broadcast: broadcast as i32,
            entropy: 0,
        };
        self.launch([b as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn entropy_rows(&self, terms: &mut D::Buf, t: usize, col: usize, logits: &D::Buf, base: Option<&D::Buf>, b: usize, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = RowTermParams {
            terms: keep.ptr_mut(terms),
            logits: keep.ptr(logits),
            targets: 0,
            base_logits: base.map_or(0, |l| keep.ptr(l)),
            base_targets: 0,
            b: b as i32,
            n: n as i32,
            t: t as i32,
            col: col as i32,
            broadcast: 0,
            entropy: 1,
        };
        self.launch([b as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn weighted_row_sum(&self, out: &mut D::Buf, terms: &D::Buf, coef: &[f32], baseline: Option<(&D::Buf, usize)>, b: usize, t: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let m = coef.len() / t.max(1);
        let coef = self.f32_constant(coef);
        let p = WeightedRowSumParams {
            out: keep.ptr_mut(out),
            terms: keep.ptr(terms),
            coef,
            baselines: baseline.map_or(0, |(bl, _)| keep.ptr(bl)),
            baseline: baseline.map_or(0, |(_, i)| i as i32),
            b: b as i32,
            t: t as i32,
            m: m as i32,
        };
        self.launch(blocks(m * b, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn term_means(&self, terms: &D::Buf, b: usize, t: usize) -> Vec<f64> {
        let mut means = self.device.alloc_zeros(t);
        self.column_mean(&mut means, terms, b, t);
        self.device.download(&means).into_iter().map(f64::from).collect()
    }

    fn bernoulli_delta(&self, out: &mut D::Buf, logits: &D::Buf, broadcast: bool, targets: &D::Buf, b: usize, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = BernoulliDeltaParams {
            out: keep.ptr_mut(out),
            logits: keep.ptr(logits),
            targets: keep.ptr(targets),
            b: b as i32,
            n: n as i32,
            broadcast: broadcast as i32,
        };
        self.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn entropy_grad(&self, out: &mut D::Buf, logits: &D::Buf, b: usize, n: usize) {
        let mut keep = Guards::new(&self.device);
        let p = EntropyGradParams { out: keep.ptr_mut(out), logits: keep.ptr(logits), b: b as i32, n: n as i32 };
        self.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn clip_logits(&self, out: &mut D::Buf, logits: &D::Buf, n: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = ClipLogitsParams { out: keep.ptr_mut(out), logits: keep.ptr(logits), n: n as i32 };
        self.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }
}
