//! Several runs of one shape trained by one step: [`Runs`] wraps a backend so that every buffer
//! holds one slice per run and every operation acts on all of them, each run with its own seed.
//! A run's slices see exactly the operations, in the same order, that the run alone would: on
//! the CPU a batched run is bit-identical to the same run trained alone.
//!
//! On the CPU the runs of an operation go to rayon's threads (threads over runs, and each
//! operation's own threads over rows inside). On a device the runs issue the operation one after
//! another and the device merges their launches ([`Backend::begin_runs`]): each kernel runs once
//! for the whole batch, over a grid dimension of runs, reading its run's parameters from a table
//! (`KERNEL` in kernels/common.cuh). A batched step has the launches of one run's step, and is
//! one graph launch.
//!
//! A run can be set aside ([`Runs::set_active`]): its buffers then keep what they hold while the
//! others go on (a diverged or finished run of a batch). A device's recording holds the runs
//! active when it was made, so the trainer records afresh after a change.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::{Backend, ConvGeom, Elem, GemmInit, HncaAbove, HncaInputs, KScoreInputs, SampleMode, ScoreAlt, StatsPlan};
use crate::data::Binarize;
use crate::rng::RngKey;

/// `inner` holding `seeds.len()` runs; run r draws every sample with `seeds[r]` in place of the
/// seed it is given (a run's keys all carry the run's seed: the batch's trainer is run 0's).
pub struct Runs<'a, B: Backend> {
    pub inner: &'a B,
    seeds: Vec<u64>,
    active: Vec<AtomicBool>,
}

/// Mutable access to distinct elements of a slice from several threads at once.
struct Each<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// Safety: `get` hands out element r to the one call that visits r ([`Runs::each`] visits each
// run once), so no two threads hold the same element.
unsafe impl<T: Send> Send for Each<'_, T> {}
unsafe impl<T: Send> Sync for Each<'_, T> {}

impl<'a, T> Each<'a, T> {
    fn new(v: &'a mut [T]) -> Self {
        Each { ptr: v.as_mut_ptr(), len: v.len(), _borrow: PhantomData }
    }
    /// Element r; each r at most once per [`Runs::each`].
    #[allow(clippy::mut_from_ref)]
    fn get(&self, r: usize) -> &'a mut T {
        assert!(r < self.len);
        // Safety: in bounds, and visited once (see the Sync impl).
        unsafe { &mut *self.ptr.add(r) }
    }
}

impl<'a, B> Runs<'a, B>
where
    B: Backend + Sync,
{
    pub fn new(inner: &'a B, seeds: Vec<u64>) -> Self {
        assert!(!seeds.is_empty(), "a batch holds at least one run");
        let active = seeds.iter().map(|_| AtomicBool::new(true)).collect();
        Runs { inner, seeds, active }
    }

    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    /// Whether run r's slices take part in the operations from now on.
    pub fn set_active(&self, r: usize, active: bool) {
        self.active[r].store(active, Ordering::SeqCst);
    }

    pub fn is_active(&self, r: usize) -> bool {
        self.active[r].load(Ordering::SeqCst)
    }

    /// `f(r)` for every active run: on rayon's threads where host memory is the backend's, else
    /// one after another (a device's stream orders them anyway).
    fn each(&self, f: impl Fn(usize) + Sync + Send) {
        let runs: Vec<usize> = (0..self.seeds.len()).filter(|&r| self.is_active(r)).collect();
        if self.inner.host_reads_are_free() {
            runs.into_par_iter().for_each(f);
        } else {
            // A device merges the runs' launches into one each (Backend::begin_runs).
            self.inner.begin_runs(runs.len());
            for r in runs {
                self.inner.next_run();
                f(r);
            }
            self.inner.end_runs();
        }
    }

    fn key(&self, key: RngKey, r: usize) -> RngKey {
        RngKey { seed: self.seeds[r], ..key }
    }
}

fn opt_each<T>(v: Option<&mut Vec<T>>) -> Option<Each<'_, T>> {
    v.map(|v| Each::new(v.as_mut_slice()))
}

impl<B> Backend for Runs<'_, B>
where
    B: Backend + Sync,
{
    type Buf = Vec<B::Buf>;
    type Array<T: Elem> = Vec<B::Array<T>>;
    type Graph = B::Graph;

    fn zeros(&self, n: usize) -> Self::Buf {
        self.seeds.iter().map(|_| self.inner.zeros(n)).collect()
    }
    fn upload(&self, host: &[f32]) -> Self::Buf {
        self.seeds.iter().map(|_| self.inner.upload(host)).collect()
    }
    fn download(&self, buf: &Self::Buf) -> Vec<f32> {
        buf.iter().flat_map(|b| self.inner.download(b)).collect()
    }
    fn write(&self, dst: &mut Self::Buf, host: &[f32]) {
        dst.iter_mut().for_each(|d| self.inner.write(d, host));
    }
    fn array<T: Elem>(&self, host: &[T]) -> Self::Array<T> {
        self.seeds.iter().map(|_| self.inner.array(host)).collect()
    }
    fn read_array<T: Elem>(&self, a: &Self::Array<T>) -> Vec<T> {
        a.iter().flat_map(|a| self.inner.read_array(a)).collect()
    }
    fn write_array<T: Elem>(&self, a: &mut Self::Array<T>, host: &[T]) {
        a.iter_mut().for_each(|a| self.inner.write_array(a, host));
    }
    fn host_reads_are_free(&self) -> bool {
        self.inner.host_reads_are_free()
    }
    fn runs(&self) -> usize {
        self.seeds.len()
    }
    fn write_run(&self, dst: &mut Self::Buf, r: usize, host: &[f32]) {
        self.inner.write(&mut dst[r], host)
    }
    fn download_run(&self, buf: &Self::Buf, r: usize) -> Vec<f32> {
        self.inner.download(&buf[r])
    }
    fn write_array_run<T: Elem>(&self, a: &mut Self::Array<T>, r: usize, host: &[T]) {
        self.inner.write_array(&mut a[r], host)
    }
    fn read_array_run<T: Elem>(&self, a: &Self::Array<T>, r: usize) -> Vec<T> {
        self.inner.read_array(&a[r])
    }
    fn begin_recording(&self) -> bool {
        self.inner.begin_recording()
    }
    fn end_recording(&self) -> Result<Self::Graph, String> {
        self.inner.end_recording()
    }
    fn replay(&self, graph: &Self::Graph) {
        self.inner.replay(graph)
    }
    fn check(&self) -> Result<(), String> {
        self.inner.check()
    }

    fn gather_binarize(
        &self,
        x: &mut Self::Buf,
        labels: Option<(&mut Self::Buf, &Self::Array<u8>)>,
        images: &Self::Array<u8>,
        order: &Self::Array<u32>,
        clock: &Self::Array<u32>,
        mode: Binarize,
        _seed: u64,
        stream: u32,
        b: usize,
        n0: usize,
    ) {
        let x = Each::new(x);
        let (lab_out, lab) = match labels {
            Some((o, l)) => (Some(Each::new(o)), Some(l)),
            None => (None, None),
        };
        self.each(|r| {
            let labels = lab_out.as_ref().map(|o| (o.get(r), &lab.expect("labels with their buffer")[r]));
            self.inner.gather_binarize(x.get(r), labels, &images[r], &order[r], &clock[r], mode, self.seeds[r], stream, b, n0);
        });
    }

    fn matmul_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, k: usize, n: usize) {
        let out = Each::new(out);
        self.each(|r| self.inner.matmul_forward(out.get(r), &inp[r], &w[r], &bias[r], b, k, n));
    }
    fn matmul_backward_weight(&self, dw: &mut Self::Buf, inp: &Self::Buf, dout: &Self::Buf, b: usize, k: usize, n: usize) {
        let dw = Each::new(dw);
        self.each(|r| self.inner.matmul_backward_weight(dw.get(r), &inp[r], &dout[r], b, k, n));
    }
    fn matmul_backward_input(
        &self,
        din: &mut Self::Buf,
        dout: &Self::Buf,
        w: &Self::Buf,
        init: GemmInit<'_, Self::Buf>,
        b: usize,
        k: usize,
        n: usize,
    ) {
        let din = Each::new(din);
        self.each(|r| {
            let init = match init {
                GemmInit::Zero => GemmInit::Zero,
                GemmInit::Broadcast(row) => GemmInit::Broadcast(&row[r]),
                GemmInit::Keep => GemmInit::Keep,
            };
            self.inner.matmul_backward_input(din.get(r), &dout[r], &w[r], init, b, k, n)
        });
    }
    fn column_mean(&self, out: &mut Self::Buf, x: &Self::Buf, b: usize, n: usize) {
        let out = Each::new(out);
        self.each(|r| self.inner.column_mean(out.get(r), &x[r], b, n));
    }

    fn conv_relu_forward(&self, out: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, g: ConvGeom) {
        let out = Each::new(out);
        self.each(|r| self.inner.conv_relu_forward(out.get(r), &x[r], &w[r], &bias[r], b, g));
    }
    fn conv_backward_input(&self, dx: &mut Self::Buf, dout: &Self::Buf, w: &Self::Buf, b: usize, g: ConvGeom) {
        let dx = Each::new(dx);
        self.each(|r| self.inner.conv_backward_input(dx.get(r), &dout[r], &w[r], b, g));
    }
    fn conv_sample_grads(&self, gw: &mut Self::Buf, gb: &mut Self::Buf, x: &Self::Buf, dout: &Self::Buf, b: usize, g: ConvGeom) {
        let (gw, gb) = (Each::new(gw), Each::new(gb));
        self.each(|r| self.inner.conv_sample_grads(gw.get(r), gb.get(r), &x[r], &dout[r], b, g));
    }
    fn relu_backward(&self, g: &mut Self::Buf, act: &Self::Buf, n: usize) {
        let g = Each::new(g);
        self.each(|r| self.inner.relu_backward(g.get(r), &act[r], n));
    }

    fn bernoulli_sample(
        &self,
        z: &mut Self::Buf,
        anti: Option<&mut Self::Buf>,
        logits: &Self::Buf,
        key: RngKey,
        clock: Option<&Self::Array<u32>>,
        mode: SampleMode,
        b: usize,
        n: usize,
    ) {
        let (z, anti) = (Each::new(z), opt_each(anti));
        self.each(|r| {
            let clock = clock.map(|c| &c[r]);
            self.inner.bernoulli_sample(z.get(r), anti.as_ref().map(|a| a.get(r)), &logits[r], self.key(key, r), clock, mode, b, n)
        });
    }
    fn log_prob_rows(
        &self,
        terms: &mut Self::Buf,
        t: usize,
        col: usize,
        logits: &Self::Buf,
        broadcast: bool,
        targets: &Self::Buf,
        base: Option<(&Self::Buf, &Self::Buf)>,
        b: usize,
        n: usize,
    ) {
        let terms = Each::new(terms);
        self.each(|r| {
            let base = base.map(|(l, z)| (&l[r], &z[r]));
            self.inner.log_prob_rows(terms.get(r), t, col, &logits[r], broadcast, &targets[r], base, b, n)
        });
    }
    fn entropy_rows(&self, terms: &mut Self::Buf, t: usize, col: usize, logits: &Self::Buf, base: Option<&Self::Buf>, b: usize, n: usize) {
        let terms = Each::new(terms);
        self.each(|r| self.inner.entropy_rows(terms.get(r), t, col, &logits[r], base.map(|x| &x[r]), b, n));
    }
    fn weighted_row_sum(
        &self,
        out: &mut Self::Buf,
        terms: &Self::Buf,
        coef: &[f32],
        baseline: Option<(&Self::Buf, usize)>,
        b: usize,
        t: usize,
    ) {
        let out = Each::new(out);
        self.each(|r| self.inner.weighted_row_sum(out.get(r), &terms[r], coef, baseline.map(|(x, i)| (&x[r], i)), b, t));
    }
    fn term_means(&self, terms: &Self::Buf, b: usize, t: usize) -> Vec<f64> {
        terms.iter().flat_map(|x| self.inner.term_means(x, b, t)).collect()
    }

    fn credit_pass(
        &self,
        flip_lp: &mut Self::Buf,
        flip_ent: Option<&mut Self::Buf>,
        parent: &Self::Buf,
        w: &Self::Buf,
        tables: &mut Self::Buf,
        child_logits: &Self::Buf,
        child: &Self::Buf,
        b: usize,
        p: usize,
        c: usize,
    ) {
        let (lp, ent, tables) = (Each::new(flip_lp), opt_each(flip_ent), Each::new(tables));
        self.each(|r| {
            let ent = ent.as_ref().map(|e| e.get(r));
            self.inner.credit_pass(lp.get(r), ent, &parent[r], &w[r], tables.get(r), &child_logits[r], &child[r], b, p, c)
        });
    }

    fn hnca_unit_grad(&self, out: &mut Self::Buf, inp: &HncaInputs<'_, Self::Buf>, b: usize, p: usize) {
        let out = Each::new(out);
        self.each(|r| {
            let one = HncaInputs {
                scale: inp.scale,
                accumulate: inp.accumulate,
                logits: &inp.logits[r],
                z: &inp.z[r],
                flip_dec: &inp.flip_dec[r],
                col_dec: inp.col_dec,
                gen_logits: &inp.gen_logits[r],
                gen_is_prior: inp.gen_is_prior,
                col_gen: inp.col_gen,
                above: inp.above.as_ref().map(|a| HncaAbove { flip_lp: &a.flip_lp[r], flip_ent: &a.flip_ent[r], col_ent: a.col_ent }),
                reward: &inp.reward[r],
                reward_offset: inp.reward_offset,
                terms: &inp.terms[r],
                t: inp.t,
                all_child: inp.all_child,
            };
            self.inner.hnca_unit_grad(out.get(r), &one, b, p)
        });
    }
    fn score_unit_grad(
        &self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        z: &Self::Buf,
        alt: ScoreAlt<'_, Self::Buf>,
        coef: &Self::Buf,
        b: usize,
        n: usize,
    ) {
        let out = Each::new(out);
        self.each(|r| {
            let alt = match alt {
                ScoreAlt::Mean => ScoreAlt::Mean,
                ScoreAlt::Sample(x) => ScoreAlt::Sample(&x[r]),
                ScoreAlt::Antithetic(x) => ScoreAlt::Antithetic(&x[r]),
            };
            self.inner.score_unit_grad(out.get(r), &logits[r], &z[r], alt, &coef[r], b, n)
        });
    }
    fn bernoulli_delta(&self, out: &mut Self::Buf, logits: &Self::Buf, broadcast: bool, targets: &Self::Buf, b: usize, n: usize) {
        let out = Each::new(out);
        self.each(|r| self.inner.bernoulli_delta(out.get(r), &logits[r], broadcast, &targets[r], b, n));
    }
    fn entropy_grad(&self, out: &mut Self::Buf, logits: &Self::Buf, b: usize, n: usize) {
        let out = Each::new(out);
        self.each(|r| self.inner.entropy_grad(out.get(r), &logits[r], b, n));
    }
    fn arms_sample(
        &self,
        zs: &mut [&mut Self::Buf],
        logits: &Self::Buf,
        key: RngKey,
        clock: Option<&Self::Array<u32>>,
        b: usize,
        n: usize,
    ) {
        let zs: Vec<Each<'_, B::Buf>> = zs.iter_mut().map(|z| Each::new(z.as_mut_slice())).collect();
        self.each(|r| {
            let mut mine: Vec<&mut B::Buf> = zs.iter().map(|z| z.get(r)).collect();
            self.inner.arms_sample(&mut mine, &logits[r], self.key(key, r), clock.map(|c| &c[r]), b, n)
        });
    }
    fn k_score_unit_grad(
        &self,
        out: &mut Self::Buf,
        cv_partials: Option<&mut Self::Buf>,
        inp: &KScoreInputs<'_, Self::Buf>,
        b: usize,
        n: usize,
    ) {
        let (out, partials) = (Each::new(out), opt_each(cv_partials));
        self.each(|r| {
            let z: Vec<&B::Buf> = inp.z.iter().map(|z| &z[r]).collect();
            let grad_f: Vec<&B::Buf> = inp.grad_f.iter().map(|g| &g[r]).collect();
            let one = KScoreInputs {
                mode: inp.mode,
                logits: &inp.logits[r],
                z: &z,
                rows: &inp.rows[r],
                grad_f: &grad_f,
                coef: inp.coef.map(|c| &c[r]),
                loss_scale: inp.loss_scale,
            };
            self.inner.k_score_unit_grad(out.get(r), partials.as_ref().map(|p| p.get(r)), &one, b, n)
        });
    }

    fn axpy(&self, y: &mut Self::Buf, a: f32, x: &Self::Buf, n: usize) {
        let y = Each::new(y);
        self.each(|r| self.inner.axpy(y.get(r), a, &x[r], n));
    }
    fn clip_logits(&self, out: &mut Self::Buf, logits: &Self::Buf, n: usize) {
        let out = Each::new(out);
        self.each(|r| self.inner.clip_logits(out.get(r), &logits[r], n));
    }
    fn affine(&self, out: &mut Self::Buf, x: &Self::Buf, scale: f32, shift: f32, n: usize) {
        let out = Each::new(out);
        self.each(|r| self.inner.affine(out.get(r), &x[r], scale, shift, n));
    }
    fn softmax_act(
        &self,
        action: &mut Self::Buf,
        reward: &mut Self::Buf,
        logits: &Self::Buf,
        labels: &Self::Buf,
        key: RngKey,
        clock: Option<&Self::Array<u32>>,
        b: usize,
        a: usize,
    ) {
        let (action, reward) = (Each::new(action), Each::new(reward));
        self.each(|r| {
            self.inner.softmax_act(action.get(r), reward.get(r), &logits[r], &labels[r], self.key(key, r), clock.map(|c| &c[r]), b, a)
        });
    }
    fn softmax_score(&self, dout: &mut Self::Buf, logits: &Self::Buf, action: &Self::Buf, coef: &Self::Buf, b: usize, a: usize) {
        let dout = Each::new(dout);
        self.each(|r| self.inner.softmax_score(dout.get(r), &logits[r], &action[r], &coef[r], b, a));
    }
    fn softmax_credit(
        &self,
        flip: &mut Self::Buf,
        parent: &Self::Buf,
        w2: &Self::Buf,
        tables: &mut Self::Buf,
        logits: &Self::Buf,
        action: &Self::Buf,
        b: usize,
        p: usize,
        a: usize,
    ) {
        let (flip, tables) = (Each::new(flip), Each::new(tables));
        self.each(|r| self.inner.softmax_credit(flip.get(r), &parent[r], &w2[r], tables.get(r), &logits[r], &action[r], b, p, a));
    }
    fn bandit_unit_grad(
        &self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        z: &Self::Buf,
        flip: Option<&Self::Buf>,
        rho_gradient: bool,
        coef: &Self::Buf,
        b: usize,
        n: usize,
    ) {
        let out = Each::new(out);
        self.each(|r| self.inner.bandit_unit_grad(out.get(r), &logits[r], &z[r], flip.map(|f| &f[r]), rho_gradient, &coef[r], b, n));
    }

    fn grad_variance(
        &self,
        partials: &mut Self::Array<f64>,
        first_slot: usize,
        inp: &Self::Buf,
        g: &Self::Buf,
        dw: &Self::Buf,
        db: &Self::Buf,
        b: usize,
        k: usize,
        n: usize,
    ) {
        let partials = Each::new(partials);
        self.each(|r| self.inner.grad_variance(partials.get(r), first_slot, &inp[r], &g[r], &dw[r], &db[r], b, k, n));
    }
    fn sample_grad_variance(
        &self,
        partials: &mut Self::Array<f64>,
        first_slot: usize,
        gw: &Self::Buf,
        gb: &Self::Buf,
        dw: &Self::Buf,
        db: &Self::Buf,
        b: usize,
        nw: usize,
        nb: usize,
    ) {
        let partials = Each::new(partials);
        self.each(|r| self.inner.sample_grad_variance(partials.get(r), first_slot, &gw[r], &gb[r], &dw[r], &db[r], b, nw, nb));
    }
    fn step_stats(
        &self,
        stats: &mut Self::Array<f64>,
        baselines: &mut Self::Buf,
        clock: &mut Self::Array<u32>,
        terms: &Self::Buf,
        partials: &Self::Array<f64>,
        plan: &StatsPlan,
        b: usize,
        t: usize,
    ) {
        let (stats, baselines, clock) = (Each::new(stats), Each::new(baselines), Each::new(clock));
        self.each(|r| self.inner.step_stats(stats.get(r), baselines.get(r), clock.get(r), &terms[r], &partials[r], plan, b, t));
    }
    fn epoch_start(&self, stats: &mut Self::Array<f64>, clock: &mut Self::Array<u32>, epoch: u64, first_batch: u64, layers: usize) {
        let (stats, clock) = (Each::new(stats), Each::new(clock));
        self.each(|r| self.inner.epoch_start(stats.get(r), clock.get(r), epoch, first_batch, layers));
    }
    fn count_non_finite(&self, counts: &mut Self::Array<u32>, tensors: &[&Self::Buf]) {
        let counts = Each::new(counts);
        self.each(|r| {
            let mine: Vec<&B::Buf> = tensors.iter().map(|t| &t[r]).collect();
            self.inner.count_non_finite(counts.get(r), &mine)
        });
    }
    fn adam(
        &self,
        params: &mut [&mut Self::Buf],
        grads: &[&Self::Buf],
        m: &mut [&mut Self::Buf],
        v: &mut [&mut Self::Buf],
        clock: &Self::Array<u32>,
        hp: super::AdamHyper,
    ) {
        let params: Vec<Each<'_, B::Buf>> = params.iter_mut().map(|t| Each::new(t.as_mut_slice())).collect();
        let m: Vec<Each<'_, B::Buf>> = m.iter_mut().map(|t| Each::new(t.as_mut_slice())).collect();
        let v: Vec<Each<'_, B::Buf>> = v.iter_mut().map(|t| Each::new(t.as_mut_slice())).collect();
        self.each(|r| {
            let mut p: Vec<&mut B::Buf> = params.iter().map(|t| t.get(r)).collect();
            let mut mm: Vec<&mut B::Buf> = m.iter().map(|t| t.get(r)).collect();
            let mut vv: Vec<&mut B::Buf> = v.iter().map(|t| t.get(r)).collect();
            let g: Vec<&B::Buf> = grads.iter().map(|g| &g[r]).collect();
            self.inner.adam(&mut p, &g, &mut mm, &mut vv, &clock[r], hp)
        });
    }
}
