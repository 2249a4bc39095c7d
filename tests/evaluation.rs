//! The evaluation loops against independent computations, on splits whose sizes are not
//! multiples of the evaluation batch (500 images): `evaluate_bounds` (the single-sample ELBO and
//! the K-sample importance-weighted bound that `hnca eval` prints), the test and validation ELBO
//! a training run writes (`Trainer::evaluate`), and the bandit's test accuracy (its evaluation
//! alone, in a batch of runs, and in a sweep's eval.json).
//!
//! Every expectation is an f64 enumeration of a tiny model's latent (or hidden) states from its
//! parameters (those a run saved, where the binary trained them): a sampled mean must lie within
//! a stated CLT bound of it, every image must count once and in its own batch (the last, partial
//! batch included), and each evaluation batch must draw its samples afresh. A `finite` result
//! proves nothing; each check here fails for the evaluation bugs it names. Images are 0/255
//! pixels, so that both binarizations are exact and the expectations need no pixel noise.

mod common;

use hnca::backend::MemoryOps;
use std::io::Write;
use std::path::Path;

use assert_cmd::Command;
use common::exact::{clip, sigmoid, Net};
use hnca::backend::cpu::Cpu;
use hnca::bandit::{AgentParams, AgentShape, BanditTrainer};
use hnca::data::{Binarize, Split};
use hnca::rng::{stream, RngKey};
use hnca::run::checkpoint::Checkpoint;
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::evaluate::{evaluate_bounds, EVAL_BATCH};
use hnca::vae::model::{Params, Shape};
use hnca::vae::trainer::Trainer;
use serde_json::Value;

/// Every sampled mean must lie within Z of its standard deviations of the exact expectation:
/// for a (CLT-)normal mean, a false failure has probability 5.7e-7 per check.
const Z: f64 = 5.0;

/// A split size that crosses two batch boundaries and ends in a partial batch of 234.
const CROSSING: usize = 2 * EVAL_BATCH + 234;

fn hnca() -> Command {
    Command::cargo_bin("hnca").unwrap()
}

// ---------------------------------------------------------------- images and data directories

/// Side of the binary run's 4x4 images; a pattern's bit j is pixel j.
const SIDE: usize = 4;
/// Patterns the runs train on, and patterns they never see.
const SEEN: [u16; 4] = [0x0F0F, 0x3C3C, 0xF00F, 0x00FF];
const UNSEEN: [u16; 2] = [0xA5C3, 0x5A3C];

fn bits(pattern: u16) -> Vec<f64> {
    (0..SIDE * SIDE).map(|j| ((pattern >> j) & 1) as f64).collect()
}

/// A split of images given as bits, each with its label.
fn split_of(images: &[(Vec<f64>, u8)], rows: usize, cols: usize) -> Split {
    let pixels = images.iter().flat_map(|(x, _)| x.iter().map(|&b| if b > 0.5 { 255u8 } else { 0 })).collect();
    Split { images: pixels, labels: images.iter().map(|i| i.1).collect(), n: images.len(), rows, cols }
}

fn idx_gz(magic: u32, dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut raw = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|&d| raw.extend((d as u32).to_be_bytes()));
    raw.extend_from_slice(data);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap()
}

/// The four MNIST-format files of 4x4 images `train` and `test` (pattern, label) in `dir`.
fn write_data_dir(dir: &Path, train: &[(u16, u8)], test: &[(u16, u8)]) {
    use hnca::data::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
    std::fs::create_dir_all(dir).unwrap();
    for (images, labels, set) in [(TRAIN_IMAGES, TRAIN_LABELS, train), (TEST_IMAGES, TEST_LABELS, test)] {
        let pixels: Vec<u8> = set.iter().flat_map(|&(p, _)| bits(p).into_iter().map(|b| (b * 255.0) as u8)).collect();
        let l: Vec<u8> = set.iter().map(|s| s.1).collect();
        std::fs::write(dir.join(images), idx_gz(0x803, &[set.len(), SIDE, SIDE], &pixels)).unwrap();
        std::fs::write(dir.join(labels), idx_gz(0x801, &[set.len()], &l)).unwrap();
    }
}

/// A file of little-endian f32 tensors (`--save-params`), cut into tensors of `lens`.
fn read_tensors(path: &Path, lens: &[usize]) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values.len(), lens.iter().sum::<usize>(), "{}: parameters of the model's shape", path.display());
    let mut at = 0;
    lens.iter()
        .map(|&n| {
            at += n;
            values[at - n..at].to_vec()
        })
        .collect()
}

fn last_metrics_line(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().last().expect("a metrics line")).unwrap()
}

// ---------------------------------------------------------------- the VAE, exactly

/// An image's evaluation, exactly: every latent chain drawn from the sampler's encoder (each
/// unit's probability clipped to [1e-5, 1 - 1e-5], as the sampler fires it).
struct ExactVae {
    /// The single-sample ELBO (analytic entropies) of each chain, with the chain's probability.
    elbo: Vec<(f64, f64)>,
    /// The K = 1 and K = 2 importance-weighted bounds' means and variances, from every chain and
    /// every pair of chains: log w and log ((w_1 + w_2) / 2), w = p(x, z) / q(z | x).
    iwae1: (f64, f64),
    iwae2: (f64, f64),
}

impl ExactVae {
    fn of(net: &Net, x: &[f64]) -> Self {
        let mut elbo = Vec::new();
        let mut log_w = Vec::new();
        for (z, _) in net.chains_above(&vec![x.to_vec()], 0) {
            let mut log_q = 0.0;
            for m in 1..=net.depth() {
                for (&bit, &a) in z[m].iter().zip(&net.enc_logits(m, &z[m - 1])) {
                    let p = clip(sigmoid(a));
                    log_q += if bit > 0.5 { p.ln() } else { (1.0 - p).ln() };
                }
            }
            let log_joint = (1..=net.depth()).map(|m| net.log_p(m, &z)).sum::<f64>() + net.log_prior(&z);
            let q = log_q.exp();
            elbo.push((net.elbo_sample(&z), q));
            log_w.push((log_joint - log_q, q));
        }
        let iwae1 = moments(log_w.iter().copied());
        let pairs = log_w
            .iter()
            .flat_map(|&(a, pa)| log_w.iter().map(move |&(b, pb)| (a.max(b) + (-(a - b).abs()).exp().ln_1p() - 2f64.ln(), pa * pb)));
        ExactVae { iwae2: moments(pairs), iwae1, elbo }
    }
    fn elbo_moments(&self) -> (f64, f64) {
        moments(self.elbo.iter().copied())
    }
}

/// Mean and variance of a distribution given as (value, probability).
fn moments(values: impl Iterator<Item = (f64, f64)> + Clone) -> (f64, f64) {
    let mean: f64 = values.clone().map(|(v, p)| v * p).sum();
    (mean, values.map(|(v, p)| p * (v - mean).powi(2)).sum())
}

/// The exact mean over images of their expectations, and the standard deviation of the sampled
/// mean (independent draws per image): (Σ E_i / n, √(Σ V_i) / n).
fn mean_and_sd(per_image: &[(f64, f64)]) -> (f64, f64) {
    let n = per_image.len() as f64;
    (per_image.iter().map(|m| m.0).sum::<f64>() / n, per_image.iter().map(|m| m.1).sum::<f64>().sqrt() / n)
}

/// x of 4 pixels, latents 3 and 2; weights and biases uniform in ±1.5: no unit near saturation,
/// and a posterior far enough from the encoder that K = 2 gains measurably over K = 1.
fn tiny_vae() -> (Shape, Params<Vec<f32>>) {
    let shape = Shape::new(4, &[3, 2]);
    let mut p = Params::init(&shape, 0);
    for (t, tensor) in p.tensors_mut().into_iter().enumerate() {
        RngKey::new(11, 1, stream::init(200 + t as u32)).fill_uniform(0, tensor);
        tensor.iter_mut().for_each(|u| *u = 3.0 * *u - 1.5);
    }
    (shape, p)
}

const XA: [f64; 4] = [0.0, 0.0, 0.0, 1.0];
const XB: [f64; 4] = [1.0, 0.0, 1.0, 0.0];

/// The probability that two independent draws give ELBO values within `tol` of each other: an
/// upper bound on two images' values coinciding when their draws are independent.
fn coincidence(dist: &[(f64, f64)], tol: f64) -> f64 {
    dist.iter().flat_map(|&(a, pa)| dist.iter().filter(move |(b, _)| (a - b).abs() < tol).map(move |&(_, pb)| pa * pb)).sum()
}

#[test]
fn bounds_over_a_split_crossing_batches_count_each_image_once_draw_afresh_and_match_enumeration() {
    let (shape, host) = tiny_vae();
    let net = Net::from_params(&shape, &host);
    let (ea, eb) = (ExactVae::of(&net, &XA), ExactVae::of(&net, &XB));
    // Two full batches of XA, then a partial batch of 234 copies of XB.
    let na = 2 * EVAL_BATCH;
    let images: Vec<(Vec<f64>, u8)> = (0..CROSSING).map(|i| (if i < na { XA.to_vec() } else { XB.to_vec() }, 0)).collect();
    let split = split_of(&images, 2, 2);
    let cpu = Cpu::new();
    let key = RngKey::new(0, 0, stream::BINARIZE_TEST);
    let b = evaluate_bounds(&cpu, &host.to_backend(&cpu), &shape, &split, Binarize::Threshold, key, 2, 9, |_| {});

    // Every image once: n values each, and the reported means and standard errors are theirs.
    assert_eq!((b.images, b.k, b.elbo_per_image.len(), b.iwae_per_image.len()), (CROSSING, 2, CROSSING, CROSSING));
    for (what, est, values) in [("ELBO", b.elbo, &b.elbo_per_image), ("bound", b.iwae, &b.iwae_per_image)] {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let se = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
        assert!((est.mean - mean).abs() < 1e-9 && (est.std_err - se).abs() < 1e-9, "{what}: {est:?}, recomputed {mean} ± {se}");
    }
    // Each image's ELBO is the value of one of its own chains, in split order: the partial batch
    // is evaluated on its own images. (Most of each image's probability lies on values the other
    // image's chains never give, so an image evaluated in the other's place shows.)
    let tol = 1e-4;
    let apart = |e: &ExactVae, other: &ExactVae| -> f64 {
        e.elbo.iter().filter(|(v, _)| other.elbo.iter().all(|(w, _)| (v - w).abs() > 2.0 * tol)).map(|c| c.1).sum()
    };
    assert!(apart(&ea, &eb) > 0.5 && apart(&eb, &ea) > 0.5, "the images' ELBO values overlap: {} {}", apart(&ea, &eb), apart(&eb, &ea));
    for (i, v) in b.elbo_per_image.iter().enumerate() {
        let own = if i < na { &ea } else { &eb };
        assert!(own.elbo.iter().any(|(c, _)| (c - v).abs() < tol), "image {i}: ELBO {v} is none of its own chains' values");
    }
    // Fresh draws per batch: image i of batch 0 and image i of batch 1 (both XA) coincide only by
    // chance, with probability p < 0.3 each, independently. The count of coincidences is then
    // Binomial(500, p): reaching 250 has probability below exp(-500 KL(0.5 ‖ 0.3)) = e^-43.6
    // (Chernoff). Batches that reuse batch 0's draws coincide at all 500.
    let p = coincidence(&ea.elbo, tol);
    assert!(p < 0.3, "a model with too few likely chains for the test to mean something: p = {p}");
    let same = (0..EVAL_BATCH).filter(|&i| b.elbo_per_image[i] == b.elbo_per_image[i + EVAL_BATCH]).count();
    assert!(same < EVAL_BATCH / 2, "{same} of {EVAL_BATCH} images of batch 1 repeat batch 0's values (expected about {:.0})", p * 500.0);

    // The means against enumeration, within Z standard deviations of the sampled means.
    let per_image =
        |f: &dyn Fn(&ExactVae) -> (f64, f64)| -> Vec<(f64, f64)> { (0..CROSSING).map(|i| f(if i < na { &ea } else { &eb })).collect() };
    let (elbo, elbo_sd) = mean_and_sd(&per_image(&|e| e.elbo_moments()));
    let (bound, bound_sd) = mean_and_sd(&per_image(&|e| e.iwae2));
    let (bound1, _) = mean_and_sd(&per_image(&|e| e.iwae1));
    println!(
        "ELBO {} vs exact {elbo} ± {elbo_sd}; K = 2 bound {} vs exact {bound} ± {bound_sd} (K = 1: {bound1})",
        b.elbo.mean, b.iwae.mean
    );
    assert!((b.elbo.mean - elbo).abs() < Z * elbo_sd + 1e-4, "ELBO {} vs exact {elbo} ± {elbo_sd}", b.elbo.mean);
    assert!((b.iwae.mean - bound).abs() < Z * bound_sd + 1e-4, "K = 2 bound {} vs exact {bound} ± {bound_sd}", b.iwae.mean);
    // What the bound's check tells apart: its two samples drawn alike (the K = 1 bound) and the
    // log-mean-exp without log K (ln 2 higher), each more than 2Z standard deviations away.
    assert!(
        bound - bound1 > 2.0 * Z * bound_sd && 2f64.ln() > 2.0 * Z * bound_sd,
        "K = 2 gains {} over K = 1, sd {bound_sd}",
        bound - bound1
    );
    // The partial batch's images move the means by more than 2Z standard deviations.
    let (elbo_a, _) = ea.elbo_moments();
    assert!((elbo - elbo_a).abs() > 2.0 * Z * elbo_sd, "the partial batch's images differ too little: {elbo} vs {elbo_a}");
}

#[test]
fn the_training_evaluation_draws_afresh_in_every_batch_and_evaluation() {
    let (shape, host) = tiny_vae();
    let net = Net::from_params(&shape, &host);
    let (elbo, var) = ExactVae::of(&net, &XA).elbo_moments();
    let split = split_of(&vec![(XA.to_vec(), 0); CROSSING], 2, 2);
    let cpu = Cpu::new();
    let mut trainer = Trainer::new(&cpu, shape, Estimator::new(EstimatorKind::Reinforce), 20, 1e-3, 4);
    trainer.params = host.to_backend(&cpu);
    let r = 200;
    let means: Vec<f64> =
        (0..r).map(|e| trainer.evaluate(&split, Binarize::Threshold, RngKey::new(4, e, stream::BINARIZE_TEST), e)).collect();
    check_replicates("test ELBO", &means, elbo, var / CROSSING as f64);
}

/// R evaluations of a split of one image repeated, each an independent mean of n draws of
/// exact mean `mean` and variance `v0`: their mean within Z standard deviations of `mean`, and
/// their sample variance S² near `v0`. (R - 1) S² / v0 is χ² with R - 1 = 199 degrees of
/// freedom: by Wilson–Hilferty, S² / v0 exceeds 1.6 with probability 2e-7 and falls below 0.6
/// with probability 2e-6. Batches that reuse batch 0's draws (rows 0-233 then count three times,
/// rows 234-499 twice) make the variance (234·9 + 266·4) / 1234 = 2.57 times v0; evaluations
/// that reuse each other's draws make it 0.
fn check_replicates(what: &str, means: &[f64], mean: f64, v0: f64) {
    let r = means.len() as f64;
    let grand = means.iter().sum::<f64>() / r;
    let s2 = means.iter().map(|m| (m - grand).powi(2)).sum::<f64>() / (r - 1.0);
    println!("{what}: mean of {r} evaluations {grand} vs exact {mean}; variance {s2:.3e} vs exact {v0:.3e}");
    assert!((grand - mean).abs() < Z * (v0 / r).sqrt() + 1e-5, "{what}: mean {grand} vs exact {mean} ± {}", (v0 / r).sqrt());
    assert!((0.6..1.6).contains(&(s2 / v0)), "{what}: the evaluations' variance is {:.3} times a fresh draw per image's", s2 / v0);
}

#[test]
fn a_training_run_reports_test_and_validation_elbo_over_every_image_and_eval_the_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 100 training images of the seen patterns, then 1,234 held out (1,000 seen, 234 unseen) for
    // validation; 1,300 test images (1,000 seen, 300 unseen): each split's partial batch holds
    // the images the model finds unlikely.
    let seen = |i: usize| (SEEN[i % 4], (i % 4) as u8);
    let unseen = |i: usize| (UNSEEN[i % 2], 9);
    let mut train: Vec<(u16, u8)> = (0..100).map(seen).collect();
    train.extend((0..CROSSING).map(|i| if i < 2 * EVAL_BATCH { seen(i) } else { unseen(i) }));
    let test: Vec<(u16, u8)> = (0..1300).map(|i| if i < 2 * EVAL_BATCH { seen(i) } else { unseen(i) }).collect();
    write_data_dir(&d.join("data"), &train, &test);
    let (params, metrics, ck) = (d.join("params.f32"), d.join("metrics.jsonl"), d.join("run.ck"));
    hnca()
        .args(["vae", "--layers", "3,2", "--batch-size", "20", "--lr", "0.03", "--steps", "300", "--train-images", "100"])
        .args(["--test-every", "1000", "--seed", "2", "--device", "cpu", "--threads", "1", "--save-every", "0", "--data-dir"])
        .arg(d.join("data"))
        .arg("--metrics")
        .arg(&metrics)
        .arg("--save")
        .arg(&ck)
        .arg("--save-params")
        .arg(&params)
        .assert()
        .success();
    let shape = Shape::new(SIDE * SIDE, &[3, 2]);
    let mut host = Params::init(&shape, 0);
    let lens: Vec<usize> = host.tensors().iter().map(|t| t.len()).collect();
    for (t, values) in host.tensors_mut().into_iter().zip(read_tensors(&params, &lens)) {
        *t = values;
    }
    let net = Net::from_params(&shape, &host);
    let exact: Vec<ExactVae> = SEEN.iter().chain(&UNSEEN).map(|&p| ExactVae::of(&net, &bits(p))).collect();
    let of = |p: u16| &exact[SEEN.iter().chain(&UNSEEN).position(|&q| q == p).unwrap()];
    let expect = |images: &[(u16, u8)], f: &dyn Fn(&ExactVae) -> (f64, f64)| {
        let all = mean_and_sd(&images.iter().map(|&(p, _)| f(of(p))).collect::<Vec<_>>());
        let full_batches = mean_and_sd(&images[..2 * EVAL_BATCH].iter().map(|&(p, _)| f(of(p))).collect::<Vec<_>>());
        // The partial batch's images move the mean by more than 2Z standard deviations.
        assert!((all.0 - full_batches.0).abs() > 2.0 * Z * all.1, "the partial batch matters too little: {all:?} vs {full_batches:?}");
        all
    };

    let line = last_metrics_line(&metrics);
    assert_eq!(line["step"], 300, "{line}");
    let valid = &train[100..];
    for (key, images) in [("test_elbo", &test[..]), ("valid_elbo", valid)] {
        let (want, sd) = expect(images, &|e| e.elbo_moments());
        let got = line[key].as_f64().unwrap_or_else(|| panic!("{key} in {line}"));
        println!("{key}: {got} vs exact {want} ± {sd} over {} images", images.len());
        assert!((got - want).abs() < Z * sd + 1e-4, "{key} {got} vs exact {want} ± {sd}");
    }

    // `hnca eval` of the run's checkpoint on the first 1,234 test images, K = 2.
    let out = hnca()
        .args(["eval", "--k", "2", "--images", "1234", "--json", "--device", "cpu", "--seed", "5", "--data-dir"])
        .arg(d.join("data"))
        .arg("--checkpoint")
        .arg(&ck)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ev: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((ev["images"].as_u64(), ev["k"].as_u64()), (Some(CROSSING as u64), Some(2)), "{ev}");
    for (key, f) in [("elbo", &(|e: &ExactVae| e.elbo_moments()) as &dyn Fn(&ExactVae) -> (f64, f64)), ("iwae", &|e: &ExactVae| e.iwae2)] {
        let (want, sd) = expect(&test[..CROSSING], f);
        let got = ev[key].as_f64().unwrap();
        println!("eval {key}: {got} vs exact {want} ± {sd}");
        assert!((got - want).abs() < Z * sd + 1e-4, "eval {key} {got} vs exact {want} ± {sd}");
    }
}

// ---------------------------------------------------------------- the bandit, exactly

/// The agent's dense layers in f64: (w (in, out) row-major, bias), from the pixels up.
type Layers = Vec<(Vec<f64>, Vec<f64>)>;

fn layers_of(tensors: &[Vec<f32>]) -> Layers {
    let f = |t: &Vec<f32>| t.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    tensors.chunks(2).map(|wb| (f(&wb[0]), f(&wb[1]))).collect()
}

/// The probability that the agent's sampled action is `label` for input x: every hidden state
/// enumerated (each unit fires with its clipped probability; outputs centred to ±1 before the
/// next layer), then the softmax's probability of the label.
fn p_correct(layers: &[(Vec<f64>, Vec<f64>)], input: &[f64], label: usize) -> f64 {
    let (w, b) = &layers[0];
    let n = b.len();
    let logits: Vec<f64> = (0..n).map(|k| b[k] + input.iter().enumerate().map(|(i, &u)| u * w[i * n + k]).sum::<f64>()).collect();
    if layers.len() == 1 {
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|a| (a - max).exp()).collect();
        return e[label] / e.iter().sum::<f64>();
    }
    (0..1usize << n)
        .map(|code| {
            let h: Vec<f64> = (0..n).map(|j| ((code >> j) & 1) as f64).collect();
            let p: f64 = h.iter().zip(&logits).map(|(&z, &a)| if z > 0.5 { clip(sigmoid(a)) } else { 1.0 - clip(sigmoid(a)) }).product();
            p * p_correct(&layers[1..], &h.iter().map(|z| 2.0 * z - 1.0).collect::<Vec<_>>(), label)
        })
        .sum()
}

/// The expected accuracy over `images` and the standard deviation of the sampled accuracy
/// (each image's reward Bernoulli(p_i), independent).
fn expected_accuracy(layers: &Layers, images: &[(u16, u8)]) -> (f64, f64) {
    mean_and_sd(
        &images
            .iter()
            .map(|&(pattern, label)| {
                let p = p_correct(layers, &bits(pattern), label as usize);
                (p, p * (1.0 - p))
            })
            .collect::<Vec<_>>(),
    )
}

/// An accuracy over n images is a count of correct actions over n.
fn assert_count_over(acc: f64, n: usize, what: &str) {
    let count = acc * n as f64;
    assert!((count - count.round()).abs() < 1e-6, "{what}: {acc} is not a count over {n} images");
}

const BANDIT_HIDDEN: [usize; 2] = [3, 2];

/// The bandit's data: 200 training images of the seen patterns, labelled 0-3; 1,300 test images:
/// the first 1,000 the same patterns with labels never rewarded in training (4-7, rarely chosen),
/// the last 300 with their trained labels (often chosen), so that the partial batch's
/// accuracy stands apart.
fn bandit_data(dir: &Path) -> Vec<(u16, u8)> {
    let train: Vec<(u16, u8)> = (0..200).map(|i| (SEEN[i % 4], (i % 4) as u8)).collect();
    let test: Vec<(u16, u8)> = (0..1300).map(|i| (SEEN[i % 4], (i % 4 + if i < 2 * EVAL_BATCH { 4 } else { 0 }) as u8)).collect();
    write_data_dir(dir, &train, &test);
    test
}

fn bandit_lens() -> Vec<usize> {
    let sizes = [SIDE * SIDE, BANDIT_HIDDEN[0], BANDIT_HIDDEN[1], hnca::bandit::ACTIONS];
    sizes.windows(2).flat_map(|w| [w[0] * w[1], w[1]]).collect()
}

/// The expected accuracy over `images`, asserting that the partial batch matters: the mean
/// over the full batches alone, and the count of the full batches over all n images, each lie
/// more than 2Z standard deviations away.
fn expected_accuracy_crossing(layers: &Layers, images: &[(u16, u8)]) -> (f64, f64) {
    let (all, sd) = expected_accuracy(layers, images);
    let (full, _) = expected_accuracy(layers, &images[..2 * EVAL_BATCH]);
    let counted = full * (2 * EVAL_BATCH) as f64 / images.len() as f64;
    assert!(
        (all - full).abs() > 2.0 * Z * sd && (all - counted).abs() > 2.0 * Z * sd,
        "the partial batch matters too little: {all} vs {full}"
    );
    (all, sd)
}

#[test]
fn the_bandits_test_accuracy_is_the_count_of_correct_sampled_actions_over_every_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let test = bandit_data(&d.join("data"));
    let (params, metrics) = (d.join("params.f32"), d.join("metrics.jsonl"));
    hnca()
        .args(["bandit", "--layers", "3,2", "--batch-size", "20", "--lr", "0.05", "--steps", "400", "--test-every", "1000"])
        .args(["--seed", "1", "--device", "cpu", "--threads", "1", "--data-dir"])
        .arg(d.join("data"))
        .arg("--metrics")
        .arg(&metrics)
        .arg("--save-params")
        .arg(&params)
        .assert()
        .success();
    let layers = layers_of(&read_tensors(&params, &bandit_lens()));
    let line = last_metrics_line(&metrics);
    assert_eq!(line["step"], 400, "{line}");
    let acc = line["test_accuracy"].as_f64().unwrap_or_else(|| panic!("test_accuracy in {line}"));
    assert_count_over(acc, test.len(), "test_accuracy");
    let (want, sd) = expected_accuracy_crossing(&layers, &test);
    println!("test accuracy {acc} vs exact {want} ± {sd}");
    assert!((acc - want).abs() < Z * sd + 1e-9, "test accuracy {acc} vs exact {want} ± {sd}");
}

#[test]
fn a_bandit_sweep_evaluates_each_run_of_its_batch_on_its_own_parameters_over_every_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let test = bandit_data(&d.join("data"));
    let out = d.join("runs");
    hnca()
        .args(["sweep", "bandit", "--estimators", "hnca", "--seeds", "0-1", "--eval-images", "1234", "--out"])
        .arg(&out)
        .args(["--layers", "3,2", "--batch-size", "20", "--lr", "0.05", "--steps", "200", "--test-every", "1000", "--device", "cpu"])
        .args(["--threads", "1", "--data-dir"])
        .arg(d.join("data"))
        .assert()
        .success();
    let mut expected = Vec::new();
    for seed in 0..2 {
        let run = out.join(format!("bandit-hnca-s{seed}"));
        let mut ck = Checkpoint::load(&run.join("checkpoint.ck")).unwrap();
        let names = (1..=3).flat_map(|l| [format!("param/layer{l}.w"), format!("param/layer{l}.bias")]);
        let tensors: Vec<Vec<f32>> = names.zip(bandit_lens()).map(|(name, len)| ck.take(&name, len).unwrap()).collect();
        let layers = layers_of(&tensors);
        // Each epoch's test accuracy, evaluated in the batch on the run's own parameters.
        let line = last_metrics_line(&run.join("metrics.jsonl"));
        assert_eq!(line["step"], 200, "{line}");
        let acc = line["test_accuracy"].as_f64().unwrap();
        assert_count_over(acc, test.len(), "test_accuracy");
        let (want, sd) = expected_accuracy_crossing(&layers, &test);
        println!("seed {seed}: test accuracy {acc} vs exact {want} ± {sd}");
        assert!((acc - want).abs() < Z * sd + 1e-9, "seed {seed}: test accuracy {acc} vs exact {want} ± {sd}");
        expected.push((want, sd));
        // The final evaluation over the first 1,234 test images.
        let eval: Value = serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
        let result = &eval["results"][0];
        assert_eq!((eval["images"].as_u64(), result["key"].as_str()), (Some(CROSSING as u64), Some("test_accuracy")), "{eval}");
        let acc = result["mean"].as_f64().unwrap();
        assert_count_over(acc, CROSSING, "eval.json");
        let (want, sd) = expected_accuracy_crossing(&layers, &test[..CROSSING]);
        println!("seed {seed}: eval.json accuracy {acc} vs exact {want} ± {sd}");
        assert!((acc - want).abs() < Z * sd + 1e-9, "seed {seed}: eval.json accuracy {acc} vs exact {want} ± {sd}");
    }
    // The two runs' accuracies stand apart, so that one run's evaluated on the other's
    // parameters would fail the checks above.
    let ((a, sa), (b, sb)) = (expected[0], expected[1]);
    assert!((a - b).abs() > 2.0 * Z * sa.max(sb), "the runs' expected accuracies are too close to tell apart: {a} and {b}");
}

#[test]
fn the_bandits_evaluation_draws_afresh_in_every_batch_and_evaluation() {
    let shape = AgentShape::new(SIDE * SIDE, &BANDIT_HIDDEN, hnca::bandit::ACTIONS);
    let host = AgentParams::init(&shape, 3);
    let tensors: Vec<Vec<f32>> = host.tensors().cloned().collect();
    let layers = layers_of(&tensors);
    let (pattern, label) = (SEEN[1], 2u8);
    let p = p_correct(&layers, &bits(pattern), label as usize);
    assert!(p > 0.05 && p < 0.95, "an accuracy with variance to measure: {p}");
    let split = split_of(&vec![(bits(pattern), label); CROSSING], SIDE, SIDE);
    let cpu = Cpu::new();
    let mut trainer = BanditTrainer::new(&cpu, shape, EstimatorKind::Hnca, 20, 1e-3, 3);
    trainer.params = host.map(|t| cpu.upload(t));
    let accs: Vec<f64> =
        (0..200).map(|e| hnca::bandit::trainer::evaluate(&trainer, &split, RngKey::new(3, e, stream::BINARIZE_TEST), e)).collect();
    accs.iter().for_each(|&a| assert_count_over(a, CROSSING, "accuracy"));
    check_replicates("test accuracy", &accs, p, p * (1.0 - p) / CROSSING as f64);
}
