//! The state operations as kernel launches on a [`Device`] (kernels/state.cu).

use super::{
    blocks, AdamParams, CountNonFiniteParams, Device, EpochStartParams, GatherParams, GradVarParams, Guards, KernelBackend,
    StepStatsParams, ELEMENTWISE, ELEMENTWISE_BLOCK, REDUCE_BLOCK,
};
use crate::backend::{grad_variance_slots, AdamHyper, PerExample, StateOps, StatsPlan};
use crate::data::Binarize;

impl<D: Device> StateOps for KernelBackend<D> {
    fn gather_binarize(
        &self,
        x: &mut D::Buf,
        labels: Option<(&mut D::Buf, &D::Array<u8>)>,
        images: &D::Array<u8>,
        order: &D::Array<u32>,
        clock: &D::Array<u32>,
        mode: Binarize,
        seed: u64,
        stream: u32,
        b: usize,
        n0: usize,
    ) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let (labels_out, labels) = match labels {
            Some((out, l)) => (keep.ptr_mut(out), keep.array(l)),
            None => (0, 0),
        };
        let p = GatherParams {
            x: keep.ptr_mut(x),
            labels_out,
            images: keep.array(images),
            labels,
            order: keep.array(order),
            clock: keep.array(clock),
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            stream,
            b: b as i32,
            n0: n0 as i32,
            threshold: (mode == Binarize::Threshold) as i32,
        };
        self.launch([b as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn grad_variance(
        &self,
        partials: &mut D::Array<f64>,
        first_slot: usize,
        x: &D::Buf,
        g: &D::Buf,
        dw: &D::Buf,
        db: &D::Buf,
        b: usize,
        k: usize,
        n: usize,
        form: PerExample,
    ) {
        let mut keep = Guards::new(&self.device);
        let p = GradVarParams {
            partials: keep.array_mut(partials),
            x: keep.ptr(x),
            g: keep.ptr(g),
            dw: keep.ptr(dw),
            db: keep.ptr(db),
            first_slot: first_slot as i32,
            b: b as i32,
            k: k as i32,
            n: n as i32,
            whole: (form == PerExample::Whole) as i32,
        };
        self.launch([grad_variance_slots(b, k, n, form) as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn step_stats(
        &self,
        stats: &mut D::Array<f64>,
        baselines: &mut D::Buf,
        clock: &mut D::Array<u32>,
        terms: &D::Buf,
        partials: &D::Array<f64>,
        plan: &StatsPlan,
        b: usize,
        t: usize,
    ) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = StepStatsParams {
            stats: keep.array_mut(stats),
            baselines: keep.ptr_mut(baselines),
            clock: keep.array_mut(clock),
            terms: keep.ptr(terms),
            partials: keep.array(partials),
            coef: self.f32_constant(&plan.coef),
            layer_params: self.f64_constant(&plan.layer_params),
            slots: self.u32_constant(&plan.slots),
            b: b as i32,
            t: t as i32,
            layers: plan.layers() as i32,
            n_baselines: plan.baselines as i32,
            decay: plan.decay,
        };
        self.launch([1, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn epoch_start(&self, stats: &mut D::Array<f64>, clock: &mut D::Array<u32>, epoch: u64, first_batch: u64, layers: usize) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let p = EpochStartParams {
            stats: keep.array_mut(stats),
            clock: keep.array_mut(clock),
            epoch: epoch as u32,
            first_batch: first_batch as u32,
            layers: layers as i32,
        };
        self.launch([1, 1, 1], [1, 1, 1], &p);
    }

    fn count_non_finite(&self, counts: &mut D::Array<u32>, tensors: &[&D::Buf]) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let table: Vec<u64> = tensors.iter().flat_map(|t| [keep.ptr(t), d.len(t) as u64]).collect();
        let p = CountNonFiniteParams { counts: keep.array_mut(counts), table: self.u64_constant(&table), count: tensors.len() as i32 };
        self.launch([1, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn adam(
        &self,
        params: &mut [&mut D::Buf],
        grads: &[&D::Buf],
        m: &mut [&mut D::Buf],
        v: &mut [&mut D::Buf],
        clock: &D::Array<u32>,
        hp: AdamHyper,
    ) {
        let d = &self.device;
        let mut keep = Guards::new(d);
        let count = params.len();
        let mut table = Vec::with_capacity(6 * count);
        let mut total = 0u64;
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
            let n = d.len(g) as u64;
            table.extend([keep.ptr_mut(p), keep.ptr(g), keep.ptr_mut(m), keep.ptr_mut(v), n, total]);
            total += n;
        }
        let p = AdamParams {
            table: self.u64_constant(&table),
            clock: keep.array(clock),
            count: count as i32,
            total: total as i64,
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.eps,
        };
        self.launch(blocks(total as usize, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }
}
