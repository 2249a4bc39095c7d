//! Values the binary writes that no other test held to an expectation, each checked here
//! through the real binary against a value written out in the test or a closed form:
//!
//! - metrics.jsonl's configuration fields (`experiment`, `samples`, `layers`, `batch_size`, and
//!   `estimator`/`evaluations`) for plain and K-sample estimators;
//! - `steps_in_epoch` and `step` of full epochs (whole batches only), of a stopped epoch, and of
//!   the lines around a resume mid-epoch and at an epoch's boundary;
//! - `train_elbo` of a several-step epoch against the mean of its steps' objectives, each taken
//!   from a line that averages exactly one step;
//! - a sweep's eval.json `experiment`, `run`, `estimator`, `seed`, `step`, `images` and `k`;
//! - `hnca bench --json`'s `samples`, `evaluations_per_step` (1 + (K−1)·L), `batch_size`,
//!   `runs`, `threads`, `simd`, and its rates' relations (`examples_per_second` =
//!   `steps_per_second` × runs × batch).
//!
//! Why: these fields are what `hnca report`, `hnca plot` and a reader of the files go by. A
//! wrong one (a default written instead of the option, an epoch count off by a partial batch, a
//! mean divided by the wrong count) leaves every run training as before and is invisible to the
//! tests that compare a run with itself by another route.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use assert_cmd::Command;
use hnca::data::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use hnca::run::checkpoint::Checkpoint;
use serde_json::Value;

/// Training images in the data set written here (4x4 pixels each), and test images.
const TRAIN: usize = 200;
const TEST: usize = 20;
const PIXELS: usize = 16;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes `n` pseudo-random 4x4 images (xorshift bytes from `state`) and labels 0..9 as the two
/// gzip-compressed IDX files (magic 0x803 with n, rows, cols; magic 0x801 with n; big-endian).
fn write_idx(dir: &Path, n: usize, mut state: u64, images_name: &str, labels_name: &str) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n, 4, 4] {
        images.extend((d as u32).to_be_bytes());
    }
    for _ in 0..n * PIXELS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        images.push((state >> 56) as u8);
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join(images_name), gzip(&images)).unwrap();
    std::fs::write(dir.join(labels_name), gzip(&labels)).unwrap();
}

/// A data directory of `TRAIN` training and `TEST` test images.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), TRAIN, 0x9E37_79B9_7F4A_7C15, TRAIN_IMAGES, TRAIN_LABELS);
    write_idx(dir.path(), TEST, 0xD1B5_4A32_D192_ED03, TEST_IMAGES, TEST_LABELS);
    dir
}

/// `hnca vae` on the CPU, on the data in `data`, without test evaluations, with `args`.
fn vae(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("hnca").unwrap();
    cmd.args(["vae", "--device", "cpu", "--test-every", "0", "--lr", "3e-3", "--data-dir"]).arg(data).args(args);
    cmd
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (epoch, step, steps_in_epoch) of each metrics line.
fn counts(lines: &[Value]) -> Vec<(u64, u64, u64)> {
    lines.iter().map(|l| (l["epoch"].as_u64().unwrap(), l["step"].as_u64().unwrap(), l["steps_in_epoch"].as_u64().unwrap())).collect()
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Whether `got` is `want` to `rel` of its magnitude.
fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn metrics_lines_name_the_runs_configuration_as_given() {
    let data = data_dir();
    let out = tempfile::tempdir().unwrap();
    // (options, the label written out, K, layers, batch, 1 + (K−1)·L written out). The layers and
    // batch sizes are no defaults (200,200,200 and 50), and K is 1, 2 by default and 2, 3 given.
    let cases: [(&[&str], &str, u64, &[u64], u64, u64); 4] = [
        (&["--estimator", "hnca"], "hnca", 1, &[8, 5], 20, 1),
        (&["--estimator", "loo", "--samples", "3"], "loo-k3", 3, &[6, 4, 3], 25, 7),
        (&["--estimator", "disarm"], "disarm", 2, &[8, 5], 20, 3),
        (&["--estimator", "hnca", "--samples", "2"], "hnca-k2", 2, &[7], 40, 2),
    ];
    for (i, (opts, label, k, layers, batch, evaluations)) in cases.into_iter().enumerate() {
        let metrics = out.path().join(format!("{i}.jsonl"));
        let widths: Vec<String> = layers.iter().map(u64::to_string).collect();
        vae(data.path(), opts)
            .args(["--layers", &widths.join(","), "--batch-size", &batch.to_string(), "--steps", "2", "--seed", "4"])
            .arg("--metrics")
            .arg(&metrics)
            .assert()
            .success();
        let lines = read_lines(&metrics);
        assert_eq!(lines.len(), 1, "{label}: one stopped epoch");
        let l = &lines[0];
        assert_eq!(l["experiment"], "vae", "{label}");
        assert_eq!(l["estimator"], label);
        assert_eq!(l["samples"], k, "{label}");
        assert_eq!(l["layers"], serde_json::json!(layers), "{label}");
        assert_eq!(l["batch_size"], batch, "{label}");
        assert_eq!(l["evaluations"], evaluations, "{label}");
        assert_eq!(l["seed"], 4, "{label}");
    }
}

#[test]
fn steps_in_epoch_counts_whole_batches_and_the_lines_around_a_resume() {
    let data = data_dir();
    let out = tempfile::tempdir().unwrap();
    let path = |name: &str| out.path().join(name);
    // 200 images in batches of 30: 6 whole batches per epoch (the 20 left over are not a step).
    let opts = ["--layers", "8,5", "--batch-size", "30", "--epochs", "2", "--seed", "1"];
    vae(data.path(), &opts).arg("--metrics").arg(path("straight.jsonl")).assert().success();
    let straight = read_lines(&path("straight.jsonl"));
    assert_eq!(counts(&straight), [(1, 6, 6), (2, 12, 6)]);

    // Stopped at step 8, two steps into epoch 2, then continued to the end: the stopped part's
    // line, and at the epoch's end a line for the whole epoch (docs/usage.md, Metrics).
    vae(data.path(), &opts).args(["--steps", "8", "--save"]).arg(path("mid.ck")).arg("--metrics").arg(path("mid.jsonl")).assert().success();
    assert_eq!(counts(&read_lines(&path("mid.jsonl"))), [(1, 6, 6), (2, 8, 2)]);
    vae(data.path(), &opts)
        .arg("--resume")
        .arg(path("mid.ck"))
        .arg("--save")
        .arg(path("mid.ck"))
        .arg("--metrics")
        .arg(path("mid.jsonl"))
        .assert()
        .success();
    let resumed = read_lines(&path("mid.jsonl"));
    assert_eq!(counts(&resumed), [(1, 6, 6), (2, 8, 2), (2, 12, 6)]);
    // Each line's rate is its updates over its seconds.
    for line in straight.iter().chain(&resumed) {
        let (steps, seconds) = (f64_of(line, "steps_in_epoch"), f64_of(line, "seconds"));
        assert!(seconds > 0.0 && close(f64_of(line, "steps_per_second"), steps / seconds, 1e-12), "{line}");
    }
    // The whole epoch's line is the straight run's (the same six steps' mean).
    assert!(close(f64_of(&resumed[2], "train_elbo"), f64_of(&straight[1], "train_elbo"), 1e-12), "{} vs {}", resumed[2], straight[1]);

    // Stopped at an epoch's end, the next epoch's line holds that epoch alone.
    vae(data.path(), &opts)
        .args(["--steps", "6", "--save"])
        .arg(path("edge.ck"))
        .arg("--metrics")
        .arg(path("edge.jsonl"))
        .assert()
        .success();
    vae(data.path(), &opts).arg("--resume").arg(path("edge.ck")).arg("--metrics").arg(path("edge.jsonl")).assert().success();
    assert_eq!(counts(&read_lines(&path("edge.jsonl"))), [(1, 6, 6), (2, 12, 6)]);
}

/// The header field in which a mid-epoch checkpoint carries its epoch's sums (src/run/saver.rs).
const EPOCH_STATS: &str = "epoch_stats";

/// Removes the partial epoch's sums from the checkpoint at `path`, so that the run resumed from
/// it starts that epoch's statistics afresh: its next line then averages only the steps after.
/// The sums are statistics only; parameters, moments, baselines and the step are untouched.
fn forget_partial_epoch(path: &Path) {
    let mut ck = Checkpoint::load(path).unwrap();
    assert!(ck.header.remove(EPOCH_STATS).is_some(), "a checkpoint written mid-epoch carries {EPOCH_STATS}");
    ck.header.remove("epoch_seconds");
    ck.save(path).unwrap();
}

#[test]
fn train_elbo_of_an_epoch_is_the_mean_of_its_steps_objectives() {
    let data = data_dir();
    let out = tempfile::tempdir().unwrap();
    let path = |name: &str| out.path().join(name);
    // 200 images in batches of 60: an epoch of 3 steps.
    let opts = ["--layers", "8,5", "--batch-size", "60", "--epochs", "1", "--seed", "2"];
    vae(data.path(), &opts).arg("--save").arg(path("straight.ck")).arg("--metrics").arg(path("straight.jsonl")).assert().success();
    let straight = read_lines(&path("straight.jsonl"));
    assert_eq!(counts(&straight), [(1, 3, 3)]);

    // Each step's objective alone: stop after every step and resume from a checkpoint without the
    // epoch's sums, so that every line averages exactly one step.
    let (ck, metrics) = (path("one.ck"), path("one.jsonl"));
    for step in 1..=3u64 {
        let mut cmd = vae(data.path(), &opts);
        if step > 1 {
            forget_partial_epoch(&ck);
            cmd.arg("--resume").arg(&ck);
        }
        cmd.args(["--steps", &step.to_string(), "--save"]).arg(&ck).arg("--metrics").arg(&metrics).assert().success();
    }
    let single = read_lines(&metrics);
    assert_eq!(counts(&single), [(1, 1, 1), (1, 2, 1), (1, 3, 1)], "each line holds one step");
    // The same three steps as the straight run: the end-of-epoch checkpoints are the same bytes.
    assert!(std::fs::read(&ck).unwrap() == std::fs::read(path("straight.ck")).unwrap(), "the step-by-step run trained other steps");
    let objectives: Vec<f64> = single.iter().map(|l| f64_of(l, "train_elbo")).collect();
    // Otherwise a count wrong by a factor could pass: the steps' objectives differ.
    assert!(objectives[0] != objectives[1] && objectives[1] != objectives[2], "{objectives:?}");
    let mean = |k: usize| objectives[..k].iter().sum::<f64>() / k as f64;
    let got = f64_of(&straight[0], "train_elbo");
    assert!(close(got, mean(3), 1e-9), "train_elbo {got} vs the mean of {objectives:?}");

    // A resume that keeps the epoch's sums (as written): each line is the mean of every step
    // of the epoch so far, before the stop and after.
    let (ck, metrics) = (path("kept.ck"), path("kept.jsonl"));
    for step in 1..=3u64 {
        let mut cmd = vae(data.path(), &opts);
        if step > 1 {
            cmd.arg("--resume").arg(&ck);
        }
        cmd.args(["--steps", &step.to_string(), "--save"]).arg(&ck).arg("--metrics").arg(&metrics).assert().success();
    }
    let kept = read_lines(&metrics);
    assert_eq!(counts(&kept), [(1, 1, 1), (1, 2, 2), (1, 3, 3)]);
    for (k, line) in kept.iter().enumerate() {
        let got = f64_of(line, "train_elbo");
        assert!(close(got, mean(k + 1), 1e-9), "line {}: train_elbo {got} vs the mean of {:?}", k + 1, &objectives[..=k]);
    }
}

#[test]
fn a_sweeps_eval_json_names_its_run_and_the_images_it_evaluated() {
    let data = data_dir();
    let out = tempfile::tempdir().unwrap();
    let sweep = out.path().join("sweep");
    Command::cargo_bin("hnca")
        .unwrap()
        .args(["sweep", "vae", "--estimators", "hnca,loo-k3", "--seeds", "5", "--eval-k", "2", "--eval-images", "13"])
        .args(["--layers", "8,5", "--batch-size", "20", "--steps", "3", "--test-every", "0", "--device", "cpu", "--data-dir"])
        .arg(data.path())
        .arg("--out")
        .arg(&sweep)
        .assert()
        .success();
    let dirs: BTreeSet<String> = std::fs::read_dir(&sweep)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(dirs, BTreeSet::from(["vae-hnca-s5".to_string(), "vae-loo-k3-s5".to_string()]));
    for (dir, estimator) in [("vae-hnca-s5", "hnca"), ("vae-loo-k3-s5", "loo-k3")] {
        let eval = read_json(&sweep.join(dir).join("eval.json"));
        assert_eq!(eval["experiment"], "vae", "{eval}");
        assert_eq!(eval["run"], dir, "the run is its folder's name: {eval}");
        assert_eq!(eval["estimator"], estimator, "{eval}");
        assert_eq!(eval["seed"], 5, "{eval}");
        assert_eq!(eval["step"], 3, "{eval}");
        assert_eq!(eval["images"], 13, "--eval-images 13 of the 20 test images: {eval}");
        assert_eq!(eval["k"], 2, "{eval}");
        let results = eval["results"].as_array().unwrap();
        let keys: Vec<(&str, &str)> = results.iter().map(|r| (r["key"].as_str().unwrap(), r["title"].as_str().unwrap())).collect();
        assert_eq!(keys, [("test_elbo", "test ELBO"), ("test_bound", "test bound, K = 2")], "{eval}");
    }
}

#[test]
fn bench_json_counts_samples_and_evaluations_and_its_rates_agree() {
    let out = tempfile::tempdir().unwrap();
    // (estimator, K, 1 + (K−1)·L for the 1-layer model, and for the 3-layer one), written out.
    let estimators: [(&str, u64, u64, u64); 7] = [
        ("hnca", 1, 1, 1),
        ("reinforce", 1, 1, 1),
        ("hnca-k2", 2, 2, 4),
        ("disarm", 2, 2, 4),
        ("double-cv", 2, 2, 4),
        ("loo-k3", 3, 3, 7),
        ("arms-k4", 4, 4, 10),
    ];
    let names: Vec<&str> = estimators.iter().map(|e| e.0).collect();
    let (batch, seconds) = (7u64, 0.01);
    for runs in [1u64, 3] {
        let json = out.path().join(format!("bench-{runs}.json"));
        Command::cargo_bin("hnca")
            .unwrap()
            .env("HNCA_CPU_SIMD", "portable")
            .args(["bench", "--models", "8;6,4,3", "--estimators", &names.join(","), "--threads", "2"])
            .args(["--batch-size", &batch.to_string(), "--seconds", &seconds.to_string(), "--runs", &runs.to_string(), "--json"])
            .arg(&json)
            .assert()
            .success();
        let rows = read_json(&json);
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2 * estimators.len(), "one row per model and estimator");
        for (i, row) in rows.iter().enumerate() {
            let (model, depth_one) = (i / estimators.len(), i / estimators.len() == 0);
            let (name, k, evals_1, evals_3) = estimators[i % estimators.len()];
            assert_eq!(row["model"], if model == 0 { serde_json::json!([8]) } else { serde_json::json!([6, 4, 3]) });
            assert_eq!(row["estimator"], name);
            assert_eq!(row["samples"], k, "{row}");
            assert_eq!(row["evaluations_per_step"], if depth_one { evals_1 } else { evals_3 }, "{row}");
            assert_eq!(row["batch_size"], batch, "{row}");
            assert_eq!(row["runs"], runs, "{row}");
            assert_eq!(row["threads"], 2, "{row}");
            assert_eq!(row["simd"], "Portable", "HNCA_CPU_SIMD=portable: {row}");
            // Timed for at least --seconds and at least 3 steps (the loop's condition).
            let steps = row["steps"].as_u64().unwrap();
            let secs = f64_of(row, "seconds");
            assert!(steps >= 3 && secs >= seconds, "{row}");
            let rate = f64_of(row, "steps_per_second");
            assert!(close(rate, steps as f64 / secs, 1e-12), "{row}");
            assert!(close(f64_of(row, "run_steps_per_second"), rate * runs as f64, 1e-12), "{row}");
            assert!(close(f64_of(row, "examples_per_second"), rate * (runs * batch) as f64, 1e-12), "{row}");
        }
        // REINFORCE on 784 pixels → 8, outside a credit pass: the encoder's entropy per unit,
        // the decoder's log-likelihood per pixel and the prior per unit, each per row.
        assert_eq!(rows[1]["other_log_sigmoid_evaluations_per_step"], batch * (8 + 784 + 8), "{}", rows[1]);
    }
}
