//! The epoch order, held to expectations computed here rather than by the code under test:
//! `shuffle` is a permutation of 0..n, is the documented Fisher-Yates (written out below from
//! the raw Philox words and the documented multiply-shift), and draws every permutation with
//! equal probability (a chi-square test with a stated failure probability, which the test
//! shows rejects Sattolo's algorithm, a loop that never swaps index 1, and the naive "swap with
//! any j" shuffle); the run driver gives epoch e of seed s the order keyed (s, e, SHUFFLE) and a
//! run resumed mid-epoch the rest of that epoch; and the VAE and bandit trainers train on batch
//! i of an epoch as images order[i·B..(i+1)·B], binarized by the documented rule. A held-out
//! run's epochs range over its first N images only.
//!
//! Why: a wrong order (the same every epoch, biased, or skipping or repeating batches on
//! resume) trains without error and with plausible metrics; only a test that knows which images
//! each step must see can tell.

use hnca::backend::MemoryOps;
use std::collections::HashSet;
use std::path::Path;

use clap::Parser;
use hnca::backend::cpu::Cpu;
use hnca::bandit::trainer::BanditExperiment;
use hnca::bandit::BanditArgs;
use hnca::data::{Mnist, Split};
use hnca::rng::{stream, RngKey};
use hnca::run::checkpoint::{Checkpoint, CheckpointError};
use hnca::run::schedule::shuffle;
use hnca::run::{drive, Description, EpochSums, Experiment, RunOptions};
use hnca::vae::trainer::VaeExperiment;
use hnca::vae::VaeArgs;

#[derive(Parser)]
struct Vae {
    #[command(flatten)]
    args: VaeArgs,
}

#[derive(Parser)]
struct Bandit {
    #[command(flatten)]
    args: BanditArgs,
}

/// Fisher-Yates as documented: for i from n-1 down to 1, swap i with j = below(i, i+1), where
/// element i's draw is Philox word i and below(i, m) = (word · m) >> 32 (the multiply-shift of
/// rng.rs), written out from the raw word so that it does not share `below` with the code.
fn fisher_yates(n: usize, key: RngKey) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let mut i = n;
    while i > 1 {
        i -= 1;
        let j = ((key.word(i as u32) as u64 * (i as u64 + 1)) >> 32) as usize;
        idx.swap(i, j);
    }
    idx
}

fn is_permutation_of_0_to(order: &[u32], n: usize) -> bool {
    let set: HashSet<u32> = order.iter().copied().collect();
    order.len() == n && set.len() == n && order.iter().all(|&i| (i as usize) < n)
}

#[test]
fn shuffle_is_a_permutation_and_the_documented_fisher_yates() {
    for n in [0usize, 1, 2, 3, 7, 100, 1000, 60_000] {
        for (seed, epoch) in [(0u64, 1u64), (5, 2), (u64::MAX, 839)] {
            let key = RngKey::new(seed, epoch, stream::SHUFFLE);
            let order = shuffle(n, key);
            assert!(is_permutation_of_0_to(&order, n), "n {n}, seed {seed}, epoch {epoch}: not a permutation");
            assert_eq!(order, fisher_yates(n, key), "n {n}, seed {seed}, epoch {epoch}");
        }
    }
    // n = 2 must swap in about half of the keys (j = 0 when word(1) < 2^31): a loop that never
    // reaches index 1 would always give the identity. Over 200 keys, all-or-none swapping by a
    // correct shuffle has probability 2·2^-200.
    let swapped = (1..=200u64).filter(|&e| shuffle(2, RngKey::new(9, e, stream::SHUFFLE)) == [1, 0]).count();
    assert!(swapped > 0 && swapped < 200, "{swapped} of 200 two-element shuffles swapped");
}

/// P(X ≥ x) for X chi-square with `df` degrees of freedom: 1 minus the regularised lower
/// incomplete gamma P(df/2, x/2), from its power series (converges for every x; exact enough
/// for the tail probabilities used here).
fn chi_square_tail(x: f64, df: usize) -> f64 {
    let (a, z) = (df as f64 / 2.0, x / 2.0);
    let (mut term, mut sum, mut k) = (1.0 / a, 1.0 / a, 0.0);
    while term > 1e-17 * sum {
        k += 1.0;
        term *= z / (a + k);
        sum += term;
    }
    let ln_gamma_a = ln_gamma(a);
    (1.0 - (-z + a * z.ln() - ln_gamma_a).exp() * sum).max(0.0)
}

/// ln Γ(a) for a half-integer or integer a ≥ 1/2, by the recurrence Γ(a+1) = aΓ(a) from Γ(1) =
/// 1 and Γ(1/2) = √π.
fn ln_gamma(a: f64) -> f64 {
    let (mut x, mut acc) = (if a.fract() == 0.0 { 1.0 } else { 0.5 }, 0.0);
    if x == 0.5 {
        acc = std::f64::consts::PI.sqrt().ln();
    }
    while x < a - 1e-9 {
        acc += x.ln();
        x += 1.0;
    }
    acc
}

/// The Pearson chi-square statistic of how `draw(key)` distributes over the 24 permutations of
/// 4, over `draws` keys (seed 2024, step = 1..=draws, the shuffle's stream: the keys of
/// consecutive epochs), against the uniform distribution; and its tail probability (23 degrees
/// of freedom).
fn uniformity(draws: u64, draw: impl Fn(RngKey) -> Vec<u32>) -> (f64, f64) {
    let mut counts = std::collections::HashMap::<Vec<u32>, u64>::new();
    for e in 1..=draws {
        let p = draw(RngKey::new(2024, e, stream::SHUFFLE));
        assert!(is_permutation_of_0_to(&p, 4), "{p:?}");
        *counts.entry(p).or_default() += 1;
    }
    let expected = draws as f64 / 24.0;
    let observed: Vec<u64> = (0..24).map(|c| counts.get(&nth_permutation(c)).copied().unwrap_or(0)).collect();
    assert_eq!(observed.iter().sum::<u64>(), draws, "a draw outside the 24 permutations of 4");
    let stat = observed.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    (stat, chi_square_tail(stat, 23))
}

/// The c-th permutation of 0..4 in lexicographic order (the Lehmer code), for the table's cells.
fn nth_permutation(mut c: usize) -> Vec<u32> {
    let mut left: Vec<u32> = (0..4).collect();
    let mut out = Vec::new();
    for k in (0..4).rev() {
        let f = (1..=k).product::<usize>();
        out.push(left.remove(c / f));
        c %= f;
    }
    out
}

#[test]
fn shuffle_draws_every_permutation_of_four_with_equal_probability() {
    // 24,000 shuffles of 4 (1,000 expected per permutation). Under a uniform shuffle the
    // statistic exceeds the threshold with probability 1e-6 (the chi-square approximation is
    // accurate at 1,000 per cell), so this test fails spuriously about once in a million seeds;
    // the seed is fixed, so it either always passes or always fails.
    const DRAWS: u64 = 24_000;
    const ALPHA: f64 = 1e-6;
    assert!((chi_square_tail(70.55, 23) - 1e-6).abs() < 2e-8, "the tail function is wrong: {}", chi_square_tail(70.55, 23));
    let (stat, p) = uniformity(DRAWS, |k| shuffle(4, k));
    assert!(p > ALPHA, "shuffle is not uniform over the permutations of 4: chi-square {stat:.1}, p = {p:.2e}");

    // The test has power against the plausible wrong shuffles, with the same draws:
    // Sattolo's algorithm (j below i: only the 6 cyclic permutations), the loop stopping at 2
    // (index 1 never swapped: 12 permutations), and "swap i with any j" (256 equally likely
    // paths onto 24 permutations: probabilities 8/256 to 15/256, a noncentrality of about 715).
    let sattolo = |k: RngKey| {
        let mut v: Vec<u32> = (0..4).collect();
        for i in (1..4).rev() {
            v.swap(i, k.below(i as u32, i as u32) as usize);
        }
        v
    };
    let stops_at_two = |k: RngKey| {
        let mut v: Vec<u32> = (0..4).collect();
        for i in (2..4).rev() {
            v.swap(i, k.below(i as u32, i as u32 + 1) as usize);
        }
        v
    };
    let naive = |k: RngKey| {
        let mut v: Vec<u32> = (0..4).collect();
        for i in 0..4 {
            v.swap(i, k.below(i as u32, 4) as usize);
        }
        v
    };
    for (name, p) in [
        ("Sattolo", uniformity(DRAWS, sattolo).1),
        ("stops at 2", uniformity(DRAWS, stops_at_two).1),
        ("naive", uniformity(DRAWS, naive).1),
    ] {
        assert!(p < ALPHA, "the uniformity test does not reject the {name} shuffle (p = {p:.2e})");
    }
}

/// Random bytes as 4x4 images, labels 0..9: `n` training images (47: not a multiple of the
/// batch of 10, so 4 batches an epoch and 7 images unused) and 10 test images.
fn data(n: usize) -> Mnist {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut byte = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let mut split = |n: usize| Split {
        images: (0..n * 16).map(|_| byte()).collect(),
        labels: (0..n).map(|i| (i * 7 % 10) as u8).collect(),
        n,
        rows: 4,
        cols: 4,
    };
    Mnist { train: split(n), test: split(10), valid: None }
}

const B: usize = 10;
const SEED: u64 = 11;

/// Batch i of epoch e as the documented protocol makes it from `raw` (the images as written,
/// not as the code split them): images order[i·B..(i+1)·B], pixel j of image m set when
/// uniform(m·pixels + j) of key (seed, e, BINARIZE_TRAIN) is below pixel/255; and their labels.
fn expected_batch(raw: &Split, order: &[u32], i: usize, epoch: u64) -> (Vec<f32>, Vec<f32>) {
    let key = RngKey::new(SEED, epoch, stream::BINARIZE_TRAIN);
    let n0 = raw.rows * raw.cols;
    let rows = &order[i * B..(i + 1) * B];
    let x = rows
        .iter()
        .flat_map(|&m| {
            (0..n0).map(move |j| (key.uniform(m * n0 as u32 + j as u32) < raw.images[m as usize * n0 + j] as f32 / 255.0) as u8 as f32)
        })
        .collect();
    (x, rows.iter().map(|&m| raw.labels[m as usize] as f32).collect())
}

/// What a trainer's step trained on: the batch's bits and, for the bandit, its labels.
type Batch = (Vec<f32>, Vec<f32>);

/// An experiment as the driver runs it, recording each `start_epoch` (epoch, order, first
/// batch) and, after each step, the batch the trainer holds.
struct Recorder<E> {
    inner: E,
    peek: fn(&E) -> Batch,
    epochs: Vec<(u64, Vec<u32>, u64)>,
    batches: Vec<Batch>,
}

impl<E: Experiment> Experiment for Recorder<E> {
    fn description(&self) -> &'static Description {
        self.inner.description()
    }
    fn step(&self) -> u64 {
        self.inner.step()
    }
    fn read_every(&self) -> u64 {
        self.inner.read_every()
    }
    fn start_epoch(&mut self, epoch: u64, order: &[u32], first_batch: u64) {
        self.epochs.push((epoch, order.to_vec(), first_batch));
        self.inner.start_epoch(epoch, order, first_batch)
    }
    fn train_step(&mut self) {
        self.inner.train_step();
        self.batches.push((self.peek)(&self.inner));
    }
    fn progress(&mut self, full_scan: bool) -> (EpochSums, Option<(u64, String)>) {
        self.inner.progress(full_scan)
    }
    fn evaluate(&self, split: &Split, binarize: RngKey, index: u64) -> f64 {
        self.inner.evaluate(split, binarize, index)
    }
    fn device_error(&self) -> Option<String> {
        self.inner.device_error()
    }
    fn identity(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.inner.identity()
    }
    fn epoch_stats(&self) -> Vec<f64> {
        self.inner.epoch_stats()
    }
    fn restore_epoch_stats(&mut self, stats: &[f64]) {
        self.inner.restore_epoch_stats(stats)
    }
    fn checkpoint(&self, epochs_done: u64) -> Checkpoint {
        self.inner.checkpoint(epochs_done)
    }
    fn resume(&mut self, ck: Checkpoint) -> Result<(), CheckpointError> {
        self.inner.resume(ck)
    }
    fn params_le_bytes(&self) -> Vec<u8> {
        self.inner.params_le_bytes()
    }
}

fn options(epochs: usize, max_steps: Option<u64>, save: Option<&Path>, resume: Option<&Path>) -> RunOptions {
    RunOptions {
        epochs,
        max_steps,
        batch_size: B,
        seed: SEED,
        test_every: 0,
        metrics: None,
        save: save.map(Path::to_path_buf),
        save_every: 1,
        resume: resume.map(Path::to_path_buf),
        save_params: None,
        label: None,
    }
}

/// Drives a fresh experiment from `make` with `opts` and returns what it recorded.
fn record<E: Experiment>(make: &dyn Fn() -> E, peek: fn(&E) -> Batch, opts: &RunOptions, data: &Mnist) -> Recorder<E> {
    let mut rec = Recorder { inner: make(), peek, epochs: Vec::new(), batches: Vec::new() };
    drive(&mut rec, opts, data).unwrap();
    rec
}

/// Checks a recording against the documented schedule: `epochs` as (epoch, first batch), each
/// with the order Fisher-Yates draws from (SEED, epoch, SHUFFLE) over `n` images, and the
/// trainer's batches, in order, those of the epochs from their first batch to the last whole
/// one (`last` steps at most in all).
fn check_recording<E>(rec: &Recorder<E>, raw: &Split, n: usize, epochs: &[(u64, u64)], last: usize, labelled: bool, what: &str) {
    let got: Vec<(u64, u64)> = rec.epochs.iter().map(|(e, _, f)| (*e, *f)).collect();
    assert_eq!(got, epochs, "{what}: the epochs started and their first batches");
    let mut want = Vec::new();
    for (e, order, _) in &rec.epochs {
        assert!(is_permutation_of_0_to(order, n), "{what}: epoch {e}'s order is not a permutation of 0..{n}");
        assert_eq!(
            *order,
            fisher_yates(n, RngKey::new(SEED, *e, stream::SHUFFLE)),
            "{what}: epoch {e}'s order is not keyed (seed, {e}, SHUFFLE)"
        );
    }
    for &(e, first) in epochs {
        let order = fisher_yates(n, RngKey::new(SEED, e, stream::SHUFFLE));
        for i in first as usize..n / B {
            want.push((e, i, expected_batch(raw, &order, i, e)));
        }
    }
    want.truncate(last);
    assert_eq!(rec.batches.len(), want.len(), "{what}: steps trained");
    for ((e, i, (x, labels)), (got_x, got_labels)) in want.iter().zip(&rec.batches) {
        assert!(got_x == x, "{what}: the step on batch {i} of epoch {e} trained on other bits");
        if labelled {
            assert!(got_labels == labels, "{what}: the step on batch {i} of epoch {e} trained on other labels");
        }
    }
}

/// A straight run of three epochs, one stopped mid-epoch 2 (step 6 of 4 an epoch) and resumed,
/// and one stopped at the end of epoch 1 and resumed: each epoch has its own documented order,
/// the resumed runs start with the batch after the last one done, and every later epoch starts
/// at batch 0.
fn check_epochs_and_resume<E: Experiment>(make: &dyn Fn() -> E, peek: fn(&E) -> Batch, labelled: bool, what: &str) {
    let data = data(47);
    let n = data.train.n;
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.ck");

    let straight = record(make, peek, &options(3, None, None, None), &data);
    check_recording(&straight, &data.train, n, &[(1, 0), (2, 0), (3, 0)], 12, labelled, &format!("{what}, straight"));
    // Different epochs draw different orders (all three equal to each other by chance: far
    // below 1/47!; any two: 3/47!).
    let orders: HashSet<&Vec<u32>> = straight.epochs.iter().map(|(_, o, _)| o).collect();
    assert_eq!(orders.len(), 3, "{what}: epochs share an order");

    let first = record(make, peek, &options(3, Some(6), Some(&ck), None), &data);
    check_recording(&first, &data.train, n, &[(1, 0), (2, 0)], 6, labelled, &format!("{what}, stopped at step 6"));
    let rest = record(make, peek, &options(3, None, Some(&ck), Some(&ck)), &data);
    check_recording(&rest, &data.train, n, &[(2, 2), (3, 0)], 6, labelled, &format!("{what}, resumed at step 6"));

    record(make, peek, &options(1, None, Some(&ck), None), &data);
    let rest = record(make, peek, &options(3, None, Some(&ck), Some(&ck)), &data);
    check_recording(&rest, &data.train, n, &[(2, 0), (3, 0)], 8, labelled, &format!("{what}, resumed at step 4"));
}

fn vae_args(extra: &[&str]) -> VaeArgs {
    let mut argv = vec!["vae", "--layers", "6,4", "--batch-size", "10", "--seed", "11", "--test-every", "0"];
    argv.extend(extra);
    Vae::try_parse_from(argv).unwrap().args
}

fn vae_batch(e: &VaeExperiment<'_, Cpu>) -> Batch {
    (e.trainer.be.download(&e.trainer.model.ws.main.z[0]), Vec::new())
}

#[test]
fn the_vae_trains_each_epoch_on_its_documented_order_also_when_resumed() {
    let be = Cpu::new();
    let train = data(47).train;
    let cfg = vae_args(&[]).to_config().unwrap();
    check_epochs_and_resume(&|| VaeExperiment::new(&be, &cfg, &train).unwrap(), vae_batch, false, "vae");
}

#[test]
fn the_bandit_trains_each_epoch_on_its_documented_order_and_labels_also_when_resumed() {
    let be = Cpu::new();
    let train = data(47).train;
    let argv = ["bandit", "--layers", "6,4", "--batch-size", "10", "--seed", "11", "--test-every", "0"];
    let args = Bandit::try_parse_from(argv).unwrap().args.to_config().unwrap();
    let peek = |e: &BanditExperiment<'_, Cpu>| {
        (e.trainer.be.download(&e.trainer.model.ws.u[0]), e.trainer.be.download(&e.trainer.model.ws.labels))
    };
    check_epochs_and_resume(&|| BanditExperiment::new(&be, &args, &train).unwrap(), peek, true, "bandit");
}

#[test]
fn seeds_draw_different_orders() {
    // The seed is part of the shuffle's key: two seeds' first epochs over 47 images coincide
    // with probability 1/47! for a correct key.
    let data = data(47);
    let be = Cpu::new();
    let mut orders = Vec::new();
    for seed in [SEED, SEED + 1] {
        let mut cfg = vae_args(&[]).to_config().unwrap();
        cfg.seed = seed;
        let mut opts = options(1, Some(1), None, None);
        opts.seed = seed;
        let mut rec = Recorder {
            inner: VaeExperiment::new(&be, &cfg, &data.train).unwrap(),
            peek: vae_batch,
            epochs: Vec::new(),
            batches: Vec::new(),
        };
        drive(&mut rec, &opts, &data).unwrap();
        assert_eq!(rec.epochs[0].1, fisher_yates(47, RngKey::new(seed, 1, stream::SHUFFLE)), "seed {seed}");
        orders.push(rec.epochs.remove(0).1);
    }
    assert_ne!(orders[0], orders[1]);
}

#[test]
fn a_held_out_runs_epochs_range_over_its_first_n_images_only() {
    // 47 images, the first 33 kept for training (3 batches an epoch), 14 held out.
    let raw = data(47);
    let mut held = raw.clone();
    held.hold_out(33).unwrap();
    let be = Cpu::new();
    let cfg = vae_args(&["--train-images", "33"]).to_config().unwrap();
    let rec = record(&|| VaeExperiment::new(&be, &cfg, &held.train).unwrap(), vae_batch, &options(2, None, None, None), &held);
    // The expected batches come from the images as written (`raw`): only images 0..33 may be
    // drawn, and image m of the order is written image m.
    check_recording(&rec, &raw.train, 33, &[(1, 0), (2, 0)], 6, false, "held out");
}
