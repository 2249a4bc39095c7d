//! The hold-out split (`--train-images N`), held to a split made here from the images as
//! written: `Mnist::hold_out` keeps exactly the first N images for training and exactly the
//! others for validation (sizes, contents, labels, disjoint and covering, for every N), and
//! refuses N = 0 and N >= the training set's size with one line; through the real binary on a
//! small IDX data set written here, a held-out run reports the sizes, trains on the first N
//! images (its parameters and metrics equal a run on that split made by hand), and its
//! `valid_elbo` is the evaluation of exactly the held-out images with the validation key.
//!
//! Why: a split that keeps the wrong images, or validates on images it trained on, still
//! trains and reports plausible numbers; only the images themselves can tell.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use assert_cmd::Command;
use clap::Parser;
use hnca::backend::cpu::Cpu;
use hnca::data::{Mnist, Split, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use hnca::rng::{stream, RngKey};
use hnca::run::{drive, Experiment};
use hnca::vae::trainer::VaeExperiment;
use hnca::vae::VaeArgs;

#[derive(Parser)]
struct Vae {
    #[command(flatten)]
    args: VaeArgs,
}

const TOTAL: usize = 60;
const PIXELS: usize = 16;

/// `n` distinct 4x4 images: image i's first pixel is `first + i` (so no two are equal, within
/// and across splits), the others pseudo-random bytes; labels 0..9.
fn images(n: usize, first: u8, mut state: u64) -> Split {
    let mut images = Vec::with_capacity(n * PIXELS);
    for i in 0..n {
        images.push(first + i as u8);
        for _ in 1..PIXELS {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            images.push((state >> 56) as u8);
        }
    }
    Split { images, labels: (0..n).map(|i| (i * 3 % 10) as u8).collect(), n, rows: 4, cols: 4 }
}

/// The 60 training images as written.
fn raw_train() -> Split {
    images(TOTAL, 0, 0x9E37_79B9_7F4A_7C15)
}

/// The 15 test images as written (first pixels 100.., distinct from the training images).
fn raw_test() -> Split {
    images(15, 100, 0xD1B5_4A32_D192_ED03)
}

/// Images `range` of `s`, cut here by hand.
fn cut(s: &Split, range: std::ops::Range<usize>) -> Split {
    Split {
        images: s.images[range.start * PIXELS..range.end * PIXELS].to_vec(),
        labels: s.labels[range.clone()].to_vec(),
        n: range.len(),
        rows: 4,
        cols: 4,
    }
}

fn image_set(s: &Split) -> HashSet<Vec<u8>> {
    (0..s.n).map(|i| s.image(i).to_vec()).collect()
}

#[test]
fn hold_out_keeps_exactly_the_first_n_images_and_validates_on_exactly_the_rest() {
    let raw = raw_train();
    let all = image_set(&raw);
    assert_eq!(all.len(), TOTAL, "the written images are not distinct");
    for n in 1..TOTAL {
        let mut data = Mnist { train: raw.clone(), test: raw_test(), valid: None };
        data.hold_out(n).unwrap();
        let valid = data.valid.as_ref().expect("a validation set");
        assert_eq!((data.train.n, valid.n), (n, TOTAL - n), "N = {n}: sizes");
        assert_eq!((data.train.images.len(), valid.images.len()), (n * PIXELS, (TOTAL - n) * PIXELS), "N = {n}");
        // Training image i is written image i; validation image k is written image n + k.
        for i in 0..n {
            assert_eq!(data.train.image(i), raw.image(i), "N = {n}: training image {i}");
            assert_eq!(data.train.labels[i], raw.labels[i], "N = {n}: training label {i}");
        }
        for k in 0..TOTAL - n {
            assert_eq!(valid.image(k), raw.image(n + k), "N = {n}: validation image {k}");
            assert_eq!(valid.labels[k], raw.labels[n + k], "N = {n}: validation label {k}");
        }
        // Disjoint and covering, by content.
        let (t, v) = (image_set(&data.train), image_set(valid));
        assert!(t.is_disjoint(&v), "N = {n}: an image both trains and validates");
        assert_eq!(t.union(&v).count(), TOTAL, "N = {n}: the two sets do not cover the training images");
        assert_eq!((data.train.rows, data.train.cols, valid.rows, valid.cols), (4, 4, 4, 4));
        assert_eq!(data.test.images, raw_test().images, "N = {n}: the test split changed");
    }
    for n in [0, TOTAL, TOTAL + 1] {
        let mut data = Mnist { train: raw.clone(), test: raw_test(), valid: None };
        let err = data.hold_out(n).unwrap_err();
        assert_eq!(
            err,
            format!("--train-images {n}: the training set has 60 images; keep 1 to 59 for training and the rest for validation")
        );
        assert!(data.valid.is_none() && data.train.images == raw.images, "N = {n}: a refused split changed the data");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes `s` as the two gzip-compressed IDX files (magic 0x803 with n, rows, cols; magic
/// 0x801 with n; big-endian).
fn write_idx(dir: &Path, s: &Split, images_name: &str, labels_name: &str) {
    let mut images = vec![0, 0, 8, 3];
    for d in [s.n, s.rows, s.cols] {
        images.extend((d as u32).to_be_bytes());
    }
    images.extend(&s.images);
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((s.n as u32).to_be_bytes());
    labels.extend(&s.labels);
    std::fs::write(dir.join(images_name), gzip(&images)).unwrap();
    std::fs::write(dir.join(labels_name), gzip(&labels)).unwrap();
}

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), &raw_train(), TRAIN_IMAGES, TRAIN_LABELS);
    write_idx(dir.path(), &raw_test(), TEST_IMAGES, TEST_LABELS);
    dir
}

const RUN: [&str; 13] =
    ["vae", "--layers", "8,5", "--batch-size", "10", "--seed", "3", "--epochs", "2", "--test-every", "1", "--lr", "3e-3"];

/// `hnca` with `args`, on the CPU and the data set in `data`.
fn hnca(args: &[&str], data: &Path) -> Command {
    let mut cmd = Command::cargo_bin("hnca").unwrap();
    cmd.args(args).args(["--device", "cpu"]).arg("--data-dir").arg(data);
    cmd
}

/// Whether a metrics field is `want`: the file holds each f64 in its shortest exact decimal
/// form, but serde_json's default parser may land one unit in the last place away, so the two
/// may differ by that much (far below what other images or another key change).
fn same(field: &serde_json::Value, want: f64) -> bool {
    field.as_f64().is_some_and(|got| (got - want).abs() <= 1e-14 * want.abs())
}

fn read_metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_held_out_run_trains_on_the_first_n_images_and_validates_on_exactly_the_rest() {
    let data = data_dir();
    let out = tempfile::tempdir().unwrap();
    let (metrics, params) = (out.path().join("m.jsonl"), out.path().join("p.f32"));
    let run = hnca(&RUN, data.path())
        .args(["--train-images", "40", "--metrics"])
        .arg(&metrics)
        .arg("--save-params")
        .arg(&params)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&run.get_output().stderr).to_string();
    assert!(stderr.contains(" 40 train / 20 validation / 15 test images from "), "{stderr}");
    let lines = read_metrics(&metrics);
    // 40 images in batches of 10: 4 steps an epoch.
    let steps: Vec<(u64, u64)> = lines.iter().map(|m| (m["step"].as_u64().unwrap(), m["steps_in_epoch"].as_u64().unwrap())).collect();
    assert_eq!(steps, [(4, 4), (8, 4)]);

    // The same run in this process on the split made by hand: the first 40 images train, the
    // other 20 validate. Training on other images gives other parameters; validating on others
    // gives another valid_elbo.
    let raw = raw_train();
    let split = Mnist { train: cut(&raw, 0..40), test: raw_test(), valid: Some(cut(&raw, 40..TOTAL)) };
    let mut cfg = Vae::try_parse_from(RUN).unwrap().args.to_config().unwrap();
    cfg.model.train_images = Some(40);
    let be = Cpu::new();
    let mut exp = VaeExperiment::new(&be, &cfg, &split.train).unwrap();
    let records = drive(&mut exp, &cfg.run_options(), &split).unwrap();
    assert!(std::fs::read(&params).unwrap() == exp.params_le_bytes(), "the binary trained on other images than the first 40");
    for (line, record) in lines.iter().zip(&records) {
        let epoch = record.epoch;
        assert!(same(&line["train_elbo"], record.train), "epoch {epoch}: train_elbo {} vs {}", line["train_elbo"], record.train);
        let (valid, test) = (record.valid.unwrap(), record.test.unwrap());
        assert!(same(&line["valid_elbo"], valid), "epoch {epoch}: valid_elbo {} is not that of images 40..60, {valid}", line["valid_elbo"]);
        assert!(same(&line["test_elbo"], test), "epoch {epoch}: test_elbo {} vs {test}", line["test_elbo"]);
    }

    // The last valid_elbo is the evaluation of exactly the held-out images at the trained
    // parameters, binarized with the validation key (seed, epoch 2, BINARIZE_VALID), its samples
    // keyed apart from the test set's (index 2 | 1 << 32); the test set with its own key.
    let held_out = cut(&raw, 40..TOTAL);
    let valid = exp.evaluate(&held_out, RngKey::new(3, 2, stream::BINARIZE_VALID), 2 | 1 << 32);
    assert!(same(&lines[1]["valid_elbo"], valid), "valid_elbo {} is not the held-out images' evaluation, {valid}", lines[1]["valid_elbo"]);
    let test = exp.evaluate(&raw_test(), RngKey::new(3, 2, stream::BINARIZE_TEST), 2);
    assert!(same(&lines[1]["test_elbo"], test), "test_elbo {} vs {test}", lines[1]["test_elbo"]);
    // Evaluating any other set of images gives another number: the check above can fail.
    let overlapping = cut(&raw, 39..TOTAL);
    let other = exp.evaluate(&overlapping, RngKey::new(3, 2, stream::BINARIZE_VALID), 2 | 1 << 32);
    assert!(!same(&serde_json::json!(other), valid), "images 39..60 evaluate as 40..60 do");
}

#[test]
fn train_images_that_leave_no_validation_image_are_a_one_line_error() {
    let data = data_dir();
    // 59 of 60 leaves one validation image and runs; 60 and 61 leave none.
    hnca(&["vae", "--layers", "4", "--batch-size", "10", "--steps", "1", "--test-every", "0", "--train-images", "59"], data.path())
        .assert()
        .success();
    for n in ["60", "61"] {
        let out = hnca(&["vae", "--layers", "4", "--steps", "1", "--train-images", n], data.path()).assert().failure().code(2);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert_eq!(
            errors[0],
            format!("error: --train-images {n}: the training set has 60 images; keep 1 to 59 for training and the rest for validation")
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A sweep's runs hold out as `hnca vae` does: each run's checkpoint and metrics (with their
/// valid_elbo) are those of the same run alone, trained on the first 40 images; a too-large N
/// is the same one-line error before anything trains. (A sweep once accepted --train-images
/// and trained on every image.)
#[test]
fn a_sweep_holds_out_as_a_single_run_does() {
    let data = data_dir();
    let out = tempfile::tempdir().unwrap();
    let sweep_dir = out.path().join("sweep");
    let opts = ["--layers", "8,5", "--batch-size", "10", "--epochs", "2", "--test-every", "1", "--lr", "3e-3", "--train-images", "40"];
    let mut sweep = Command::cargo_bin("hnca").unwrap();
    sweep
        .args(["sweep", "vae", "--estimators", "hnca", "--seeds", "3", "--eval-k", "2", "--device", "cpu"])
        .args(opts)
        .arg("--data-dir")
        .arg(data.path())
        .arg("--out")
        .arg(&sweep_dir)
        .assert()
        .success();
    let (ck, metrics) = (out.path().join("alone.ck"), out.path().join("alone.jsonl"));
    hnca(&["vae", "--estimator", "hnca", "--seed", "3"], data.path())
        .args(opts)
        .arg("--save")
        .arg(&ck)
        .arg("--metrics")
        .arg(&metrics)
        .assert()
        .success();
    let run = sweep_dir.join("vae-hnca-s3");
    assert!(std::fs::read(run.join("checkpoint.ck")).unwrap() == std::fs::read(&ck).unwrap(), "the sweep's run differs from the run alone");
    let (swept, alone) = (read_metrics(&run.join("metrics.jsonl")), read_metrics(&metrics));
    let steps: Vec<u64> = swept.iter().map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [4, 8], "40 images in batches of 10");
    for (s, a) in swept.iter().zip(&alone) {
        assert!(same(&s["valid_elbo"], a["valid_elbo"].as_f64().unwrap()), "valid_elbo {} vs {}", s["valid_elbo"], a["valid_elbo"]);
    }
    let mut refused = Command::cargo_bin("hnca").unwrap();
    let res = refused
        .args(["sweep", "vae", "--estimators", "hnca", "--seeds", "0", "--steps", "1", "--device", "cpu", "--train-images", "60"])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--out")
        .arg(out.path().join("refused"))
        .assert()
        .failure()
        .code(2);
    let stderr = String::from_utf8_lossy(&res.get_output().stderr).to_string();
    assert!(stderr.starts_with("error: --train-images 60: the training set has 60 images"), "{stderr}");
    assert!(!out.path().join("refused").join("vae-hnca-s0").exists(), "a run started before the error");
}
