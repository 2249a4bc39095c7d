//! Several runs of one shape trained by one step: [`Runs`] wraps a backend so that every buffer
//! holds one slice per run and every operation acts on all of them, each run with its own seed.
//! A run's slices see exactly the operations, in the same order, that the run alone would: on
//! the CPU a batched run is bit-identical to the same run trained alone.
//!
//! On the CPU the runs of an operation go to rayon's threads (threads over runs, and each
//! operation's own threads over rows inside). On a device the runs issue the operation one after
//! another and the device merges their launches ([`crate::backend::LaunchMerging`]): each kernel runs once
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

use super::{
    AdamHyper, Backend, BernoulliOps, ConvGeom, ConvOps, CreditOps, DenseOps, Elem, GemmInit, HncaAbove, HncaInputs, KSampleOps,
    KScoreInputs, MemoryOps, PerExample, SampleMode, ScoreAlt, SoftmaxOps, StateOps, StatsPlan,
};
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

    /// `f(r)` for every active run: where the inner backend merges launches, one run after
    /// another between its brackets; else on rayon's threads.
    fn each(&self, f: impl Fn(usize) + Sync + Send) {
        let runs: Vec<usize> = (0..self.seeds.len()).filter(|&r| self.is_active(r)).collect();
        match self.inner.launch_merging() {
            Some(device) => {
                device.begin_runs(runs.len());
                for r in runs {
                    device.next_run();
                    f(r);
                }
                device.end_runs();
            }
            None => runs.into_par_iter().for_each(f),
        }
    }

    fn key(&self, key: RngKey, r: usize) -> RngKey {
        RngKey { seed: self.seeds[r], ..key }
    }
}

/// Each buffer of a list of outputs, ready to hand out run by run.
fn each_of<'a, T>(list: &'a mut [&mut Vec<T>]) -> Vec<Each<'a, T>> {
    list.iter_mut().map(|t| Each::new(t.as_mut_slice())).collect()
}

/// Run r's slice of each buffer of a list of outputs.
fn run_of<'a, T>(list: &[Each<'a, T>], r: usize) -> Vec<&'a mut T> {
    list.iter().map(|t| t.get(r)).collect()
}

/// An argument of a batched operation, made ready to hand each run its own part
/// ([`ForRun`]): an output becomes one exclusive slice per run, anything else stays as it is.
trait IntoRuns {
    type Runs: ForRun;
    fn into_runs(self) -> Self::Runs;
}

/// Run r's part of an argument of a batched operation.
trait ForRun: Sync {
    type One;
    fn for_run(&self, r: usize, seeds: &[u64]) -> Self::One;
}

impl<'a, T: Send + 'a> IntoRuns for &'a mut Vec<T> {
    type Runs = Each<'a, T>;
    fn into_runs(self) -> Each<'a, T> {
        Each::new(self.as_mut_slice())
    }
}
impl<'a, T: Send + 'a> ForRun for Each<'a, T> {
    type One = &'a mut T;
    fn for_run(&self, r: usize, _: &[u64]) -> &'a mut T {
        self.get(r)
    }
}
impl<'a, T: Sync> ForRun for &'a Vec<T> {
    type One = &'a T;
    fn for_run(&self, r: usize, _: &[u64]) -> &'a T {
        let v: &'a Vec<T> = *self;
        &v[r]
    }
}
impl<X: ForRun> ForRun for Option<X> {
    type One = Option<X::One>;
    fn for_run(&self, r: usize, seeds: &[u64]) -> Self::One {
        self.as_ref().map(|x| x.for_run(r, seeds))
    }
}
impl<X: IntoRuns> IntoRuns for Option<X> {
    type Runs = Option<X::Runs>;
    fn into_runs(self) -> Self::Runs {
        self.map(X::into_runs)
    }
}
impl<X: ForRun, Y: ForRun> ForRun for (X, Y) {
    type One = (X::One, Y::One);
    fn for_run(&self, r: usize, seeds: &[u64]) -> Self::One {
        (self.0.for_run(r, seeds), self.1.for_run(r, seeds))
    }
}
impl<X: IntoRuns, Y: IntoRuns> IntoRuns for (X, Y) {
    type Runs = (X::Runs, Y::Runs);
    fn into_runs(self) -> Self::Runs {
        (self.0.into_runs(), self.1.into_runs())
    }
}
/// Every run draws with its own seed.
impl ForRun for RngKey {
    type One = RngKey;
    fn for_run(&self, r: usize, seeds: &[u64]) -> RngKey {
        RngKey { seed: seeds[r], ..*self }
    }
}
impl<'a, T: Sync> ForRun for GemmInit<'a, Vec<T>> {
    type One = GemmInit<'a, T>;
    fn for_run(&self, r: usize, _: &[u64]) -> GemmInit<'a, T> {
        match *self {
            GemmInit::Zero => GemmInit::Zero,
            GemmInit::Broadcast(row) => GemmInit::Broadcast(&row[r]),
            GemmInit::Keep => GemmInit::Keep,
        }
    }
}
impl<'a, T: Sync> ForRun for ScoreAlt<'a, Vec<T>> {
    type One = ScoreAlt<'a, T>;
    fn for_run(&self, r: usize, _: &[u64]) -> ScoreAlt<'a, T> {
        match *self {
            ScoreAlt::Mean => ScoreAlt::Mean,
            ScoreAlt::Sample(x) => ScoreAlt::Sample(&x[r]),
            ScoreAlt::Antithetic(x) => ScoreAlt::Antithetic(&x[r]),
        }
    }
}
/// Arguments every run takes as they are: sizes, flags, modes, constants.
macro_rules! same_for_every_run {
    ($($t:ty),*) => {$(
        impl ForRun for $t {
            type One = $t;
            fn for_run(&self, _: usize, _: &[u64]) -> $t {
                *self
            }
        }
    )*};
}
same_for_every_run!(usize, u64, f32, bool, ConvGeom, SampleMode, PerExample);
impl<'a> ForRun for &'a [f32] {
    type One = &'a [f32];
    fn for_run(&self, _: usize, _: &[u64]) -> &'a [f32] {
        self
    }
}
impl<'a> ForRun for &'a StatsPlan {
    type One = &'a StatsPlan;
    fn for_run(&self, _: usize, _: &[u64]) -> &'a StatsPlan {
        self
    }
}
macro_rules! into_runs_as_is {
    ($($t:ty),*) => {$( impl IntoRuns for $t { type Runs = $t; fn into_runs(self) -> $t { self } } )*};
}
into_runs_as_is!(usize, u64, f32, bool, ConvGeom, SampleMode, PerExample, RngKey);
impl<'a> IntoRuns for &'a [f32] {
    type Runs = Self;
    fn into_runs(self) -> Self {
        self
    }
}
impl<'a> IntoRuns for &'a StatsPlan {
    type Runs = Self;
    fn into_runs(self) -> Self {
        self
    }
}
impl<'a, T: Sync> IntoRuns for &'a Vec<T> {
    type Runs = &'a Vec<T>;
    fn into_runs(self) -> Self {
        self
    }
}
impl<'a, T: Sync> IntoRuns for GemmInit<'a, Vec<T>> {
    type Runs = Self;
    fn into_runs(self) -> Self {
        self
    }
}
impl<'a, T: Sync> IntoRuns for ScoreAlt<'a, Vec<T>> {
    type Runs = Self;
    fn into_runs(self) -> Self {
        self
    }
}

/// The operations of topic traits on a batch of runs, from one list: each issues the operation
/// for every active run, handing run r its part of every argument ([`ForRun`]).
macro_rules! for_every_run {
    ($($topic:ident { $(fn $op:ident($($arg:ident: $ty:ty),* $(,)?);)* } $({ $($by_hand:tt)* })?)*) => {$(
        impl<B: Backend + Sync> $topic for Runs<'_, B> {
            $(fn $op(&self, $($arg: $ty),*) {
                $(let $arg = IntoRuns::into_runs($arg);)*
                self.each(|r| self.inner.$op($(ForRun::for_run(&$arg, r, &self.seeds)),*));
            })*
            $($($by_hand)*)?
        }
    )*};
}

impl<B> MemoryOps for Runs<'_, B>
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
}

for_every_run! {
    DenseOps {
        fn matmul_forward(out: &mut Self::Buf, inp: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, k: usize, n: usize);
        fn matmul_backward_weight(dw: &mut Self::Buf, inp: &Self::Buf, dout: &Self::Buf, b: usize, k: usize, n: usize);
        fn matmul_backward_input(din: &mut Self::Buf, dout: &Self::Buf, w: &Self::Buf, init: GemmInit<'_, Self::Buf>, b: usize, k: usize, n: usize);
        fn column_mean(out: &mut Self::Buf, x: &Self::Buf, b: usize, n: usize);
        fn axpy(y: &mut Self::Buf, a: f32, x: &Self::Buf, n: usize);
        fn affine(out: &mut Self::Buf, x: &Self::Buf, scale: f32, shift: f32, n: usize);
    }
    BernoulliOps {
        fn bernoulli_sample(z: &mut Self::Buf, anti: Option<&mut Self::Buf>, logits: &Self::Buf, key: RngKey, clock: Option<&Self::Array<u32>>, mode: SampleMode, b: usize, n: usize);
        fn clip_logits(out: &mut Self::Buf, logits: &Self::Buf, n: usize);
        fn log_prob_rows(terms: &mut Self::Buf, t: usize, col: usize, logits: &Self::Buf, broadcast: bool, targets: &Self::Buf, base: Option<(&Self::Buf, &Self::Buf)>, b: usize, n: usize);
        fn entropy_rows(terms: &mut Self::Buf, t: usize, col: usize, logits: &Self::Buf, base: Option<&Self::Buf>, b: usize, n: usize);
        fn weighted_row_sum(out: &mut Self::Buf, terms: &Self::Buf, coef: &[f32], baseline: Option<(&Self::Buf, usize)>, b: usize, t: usize);
        fn bernoulli_delta(out: &mut Self::Buf, logits: &Self::Buf, broadcast: bool, targets: &Self::Buf, b: usize, n: usize);
        fn entropy_grad(out: &mut Self::Buf, logits: &Self::Buf, b: usize, n: usize);
    } {
        fn term_means(&self, terms: &Self::Buf, b: usize, t: usize) -> Vec<f64> {
            terms.iter().flat_map(|x| self.inner.term_means(x, b, t)).collect()
        }
    }
    CreditOps {
        fn credit_pass(flip_lp: &mut Self::Buf, flip_ent: Option<&mut Self::Buf>, parent: &Self::Buf, w: &Self::Buf, tables: &mut Self::Buf, child_logits: &Self::Buf, child: &Self::Buf, b: usize, p: usize, c: usize);
        fn score_unit_grad(out: &mut Self::Buf, logits: &Self::Buf, z: &Self::Buf, alt: ScoreAlt<'_, Self::Buf>, coef: &Self::Buf, b: usize, n: usize);
        fn bandit_unit_grad(out: &mut Self::Buf, logits: &Self::Buf, z: &Self::Buf, flip: Option<&Self::Buf>, rho_gradient: bool, coef: &Self::Buf, b: usize, n: usize);
    } {
        fn hnca_unit_grad(&self, out: &mut Self::Buf, inp: &HncaInputs<'_, Self::Buf>, b: usize, p: usize) {
            let out = Each::new(out);
            self.each(|r| self.inner.hnca_unit_grad(out.get(r), &inp.run(r), b, p));
        }
    }
    KSampleOps {} {
        fn arms_sample(&self, zs: &mut [&mut Self::Buf], logits: &Self::Buf, key: RngKey, clock: Option<&Self::Array<u32>>, b: usize, n: usize) {
            let zs = each_of(zs);
            self.each(|r| self.inner.arms_sample(&mut run_of(&zs, r), &logits[r], self.key(key, r), clock.map(|c| &c[r]), b, n));
        }
        fn k_score_unit_grad(&self, out: &mut Self::Buf, cv_partials: Option<&mut Self::Buf>, inp: &KScoreInputs<'_, Self::Buf>, b: usize, n: usize) {
            let (out, partials) = (Each::new(out), cv_partials.into_runs());
            self.each(|r| {
                let z: Vec<&B::Buf> = inp.z.iter().map(|z| &z[r]).collect();
                let grad_f: Vec<&B::Buf> = inp.grad_f.iter().map(|g| &g[r]).collect();
                let one = KScoreInputs { z: &z, grad_f: &grad_f, ..inp.run(r) };
                self.inner.k_score_unit_grad(out.get(r), partials.for_run(r, &self.seeds), &one, b, n)
            });
        }
    }
    ConvOps {
        fn conv_relu_forward(out: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, b: usize, g: ConvGeom);
        fn conv_backward_input(dx: &mut Self::Buf, dout: &Self::Buf, w: &Self::Buf, b: usize, g: ConvGeom);
        fn conv_sample_grads(gw: &mut Self::Buf, gb: &mut Self::Buf, x: &Self::Buf, dout: &Self::Buf, b: usize, g: ConvGeom);
        fn relu_backward(g: &mut Self::Buf, act: &Self::Buf, n: usize);
    }
    SoftmaxOps {
        fn softmax_act(action: &mut Self::Buf, reward: &mut Self::Buf, logits: &Self::Buf, labels: &Self::Buf, key: RngKey, clock: Option<&Self::Array<u32>>, b: usize, a: usize);
        fn softmax_score(dout: &mut Self::Buf, logits: &Self::Buf, action: &Self::Buf, coef: &Self::Buf, b: usize, a: usize);
        fn softmax_credit(flip: &mut Self::Buf, parent: &Self::Buf, w2: &Self::Buf, tables: &mut Self::Buf, logits: &Self::Buf, action: &Self::Buf, b: usize, p: usize, a: usize);
    }
    StateOps {
        fn grad_variance(partials: &mut Self::Array<f64>, first_slot: usize, x: &Self::Buf, g: &Self::Buf, dw: &Self::Buf, db: &Self::Buf, b: usize, k: usize, n: usize, form: PerExample);
        fn step_stats(stats: &mut Self::Array<f64>, baselines: &mut Self::Buf, clock: &mut Self::Array<u32>, terms: &Self::Buf, partials: &Self::Array<f64>, plan: &StatsPlan, b: usize, t: usize);
        fn epoch_start(stats: &mut Self::Array<f64>, clock: &mut Self::Array<u32>, epoch: u64, first_batch: u64, layers: usize);
    } {
        /// Each run binarizes with its own seed.
        fn gather_binarize(&self, x: &mut Self::Buf, labels: Option<(&mut Self::Buf, &Self::Array<u8>)>, images: &Self::Array<u8>, order: &Self::Array<u32>, clock: &Self::Array<u32>, mode: Binarize, _seed: u64, stream: u32, b: usize, n0: usize) {
            let (x, labels) = (Each::new(x), labels.into_runs());
            self.each(|r| {
                let labels = labels.for_run(r, &self.seeds);
                self.inner.gather_binarize(x.get(r), labels, &images[r], &order[r], &clock[r], mode, self.seeds[r], stream, b, n0);
            });
        }
        fn count_non_finite(&self, counts: &mut Self::Array<u32>, tensors: &[&Self::Buf]) {
            let counts = Each::new(counts);
            self.each(|r| {
                let mine: Vec<&B::Buf> = tensors.iter().map(|t| &t[r]).collect();
                self.inner.count_non_finite(counts.get(r), &mine)
            });
        }
        fn adam(&self, params: &mut [&mut Self::Buf], grads: &[&Self::Buf], m: &mut [&mut Self::Buf], v: &mut [&mut Self::Buf], clock: &Self::Array<u32>, hp: AdamHyper) {
            let (params, m, v) = (each_of(params), each_of(m), each_of(v));
            self.each(|r| {
                let g: Vec<&B::Buf> = grads.iter().map(|g| &g[r]).collect();
                self.inner.adam(&mut run_of(&params, r), &g, &mut run_of(&m, r), &mut run_of(&v, r), &clock[r], hp)
            });
        }
    }
}

impl<'a, T> HncaInputs<'a, Vec<T>> {
    /// Run r's inputs.
    fn run(&self, r: usize) -> HncaInputs<'a, T> {
        HncaInputs {
            scale: self.scale,
            accumulate: self.accumulate,
            logits: &self.logits[r],
            z: &self.z[r],
            flip_dec: &self.flip_dec[r],
            col_dec: self.col_dec,
            gen_logits: &self.gen_logits[r],
            gen_is_prior: self.gen_is_prior,
            col_gen: self.col_gen,
            above: self.above.as_ref().map(|a| HncaAbove { flip_lp: &a.flip_lp[r], flip_ent: &a.flip_ent[r], col_ent: a.col_ent }),
            reward: &self.reward[r],
            reward_offset: self.reward_offset,
            terms: &self.terms[r],
            t: self.t,
            all_child: self.all_child,
        }
    }
}

impl<'a, T> KScoreInputs<'a, Vec<T>> {
    /// Run r's inputs, but for the chains' buffers (`z`, `grad_f`), which the caller gathers.
    fn run(&self, r: usize) -> KScoreInputs<'a, T> {
        KScoreInputs {
            mode: self.mode,
            logits: &self.logits[r],
            z: &[],
            rows: &self.rows[r],
            grad_f: &[],
            coef: self.coef.map(|c| &c[r]),
            loss_scale: self.loss_scale,
        }
    }
}
