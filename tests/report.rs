//! `hnca report`'s aggregation, column by column, through the real binary.
//!
//! Run directories are written here by hand, in the formats a sweep writes (metrics.jsonl,
//! eval.json, diverged.json, OUT/sweep.json), with numbers chosen so that each column's rule
//! matters: epochs of different lengths (the gradient variance is weighted by each epoch's
//! steps), several epochs' seconds (steps/s is all the steps over all the seconds), evaluation
//! seconds (the wall time adds them), unfinished and diverged runs with outlandish numbers
//! (they are counted, never averaged), estimators of differing cost (the evaluations column),
//! and an order of the manifest that is not the directories'. Every expected number, the mean
//! and standard error (sample standard deviation / √n) over the finished runs included, is
//! recomputed here from those numbers, and checked in both `--json` and the Markdown table's
//! cells. A real small sweep then cross-checks the columns tests/sweep.rs leaves unchecked
//! (gradient variance, steps/s, wall time) against its own files.

use std::path::Path;

use assert_cmd::Command;
use serde_json::{json, Value};

fn hnca() -> Command {
    Command::cargo_bin("hnca").unwrap()
}

/// One epoch's line of a metrics file, as far as the report reads it.
#[derive(Clone, Copy)]
struct Epoch {
    steps_in_epoch: u64,
    train: f64,
    grad_var: f64,
    seconds: f64,
}

fn epoch(steps_in_epoch: u64, train: f64, grad_var: f64, seconds: f64) -> Epoch {
    Epoch { steps_in_epoch, train, grad_var, seconds }
}

/// One run directory's contents.
struct Run {
    experiment: &'static str,
    estimator: &'static str,
    seed: u64,
    epochs: Vec<Epoch>,
    /// ELBO evaluations per step (the `evaluations` field of every line).
    evaluations: f64,
    /// eval.json's results (key, title, mean) and seconds; none for a run that has not finished.
    eval: Option<(Vec<(&'static str, &'static str, f64)>, f64)>,
    /// Whether it wrote diverged.json.
    diverged: bool,
}

impl Run {
    fn name(&self) -> String {
        format!("{}-{}-s{}", self.experiment, self.estimator, self.seed)
    }
}

/// The training objective's field and the evaluation's, per experiment.
fn metric_keys(experiment: &str) -> (&'static str, &'static str) {
    match experiment {
        "vae" => ("train_elbo", "test_elbo"),
        _ => ("train_accuracy", "test_accuracy"),
    }
}

/// Writes `run`'s files into OUT/<experiment>-<estimator>-s<seed>, field for field as a sweep
/// writes them (src/run/mod.rs's metrics lines, src/sweep/local.rs's eval.json and
/// diverged.json).
fn write_run(out: &Path, run: &Run) {
    let dir = out.join(run.name());
    std::fs::create_dir_all(&dir).unwrap();
    let (train_key, test_key) = metric_keys(run.experiment);
    let mut step = 0;
    let mut text = String::new();
    for (i, e) in run.epochs.iter().enumerate() {
        step += e.steps_in_epoch;
        let mut line = json!({
            "experiment": run.experiment, "epoch": i + 1, "step": step, "steps_in_epoch": e.steps_in_epoch,
            "grad_var": e.grad_var, "grad_var_layers": [e.grad_var * 0.5, e.grad_var * 2.0], "seconds": e.seconds,
            "steps_per_second": e.steps_in_epoch as f64 / e.seconds, "estimator": run.estimator, "samples": 1,
            "evaluations": run.evaluations, "seed": run.seed, "layers": [8, 5], "batch_size": 20, "lr": 0.001,
        });
        line[train_key] = e.train.into();
        line[test_key] = Value::Null;
        text += &format!("{line}\n");
    }
    if !run.epochs.is_empty() {
        std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    }
    if let Some((results, seconds)) = &run.eval {
        let results: Vec<Value> =
            results.iter().map(|(key, title, mean)| json!({ "key": key, "title": title, "mean": mean, "std_err": 0.5 })).collect();
        let eval = json!({
            "experiment": run.experiment, "run": run.name(), "estimator": run.estimator, "seed": run.seed, "step": step,
            "seconds": seconds, "results": results, "images": 300, "k": 5,
        });
        std::fs::write(dir.join("eval.json"), format!("{eval}\n")).unwrap();
    }
    if run.diverged {
        let record = json!({
            "experiment": run.experiment, "run": run.name(), "estimator": run.estimator, "seed": run.seed, "step": step + 3,
            "what": "the objective is not finite", "kept": "its last checkpoint is left as it was",
        });
        std::fs::write(dir.join("diverged.json"), format!("{record}\n")).unwrap();
    }
}

/// How the Markdown table writes a column's numbers (the mean and its standard error alike).
#[derive(Clone, Copy)]
enum Shown {
    /// The experiment's digits after the point.
    Fixed(usize),
    Sci,
    Rate,
    Duration,
}

fn show(v: f64, how: Shown) -> String {
    match how {
        Shown::Fixed(d) => format!("{v:.d$}"),
        Shown::Sci => format!("{v:.3e}"),
        Shown::Rate => format!("{v:.1}"),
        Shown::Duration if v < 120.0 => format!("{v:.1} s"),
        Shown::Duration if v < 7200.0 => format!("{:.1} min", v / 60.0),
        Shown::Duration => format!("{:.2} h", v / 3600.0),
    }
}

/// What a finished run contributes to each column, from its numbers by the documented rules:
/// the last epoch's objective; each eval.json mean; the gradient variance averaged over the
/// run's steps (each epoch's value weighted by its steps); the evaluations per step; steps/s as
/// all the steps over all the epochs' seconds; the wall time as those seconds plus the
/// evaluation's.
fn run_values(run: &Run, key: &str) -> f64 {
    let steps: u64 = run.epochs.iter().map(|e| e.steps_in_epoch).sum();
    let seconds: f64 = run.epochs.iter().map(|e| e.seconds).sum();
    let (results, eval_seconds) = run.eval.as_ref().expect("only finished runs are averaged");
    match key {
        "train" => run.epochs.last().unwrap().train,
        "grad_var" => run.epochs.iter().map(|e| e.grad_var * e.steps_in_epoch as f64).sum::<f64>() / steps as f64,
        "evaluations" => run.evaluations,
        "steps_per_second" => steps as f64 / seconds,
        "wall_seconds" => seconds + eval_seconds,
        k => results.iter().find(|r| r.0 == k).unwrap().2,
    }
}

/// Mean and standard error (sample standard deviation, divisor n - 1, over √n; none for n = 1).
fn mean_se(xs: &[f64]) -> (f64, Option<f64>) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let se = (xs.len() > 1).then(|| (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt() / n.sqrt());
    (mean, se)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

/// The report's `--json` object and its Markdown text for OUT.
fn report(out: &Path) -> (Value, String) {
    let json = hnca().arg("report").arg(out).arg("--json").assert().success();
    let json: Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
    let md = hnca().arg("report").arg(out).assert().success();
    (json, String::from_utf8(md.get_output().stdout.clone()).unwrap())
}

/// The cells of the Markdown row of `estimator` in the table under the heading that starts
/// with `## {title}`.
fn markdown_row(md: &str, title: &str, estimator: &str) -> Vec<String> {
    let section = md.split("\n## ").find(|s| s.trim_start_matches("## ").starts_with(title)).unwrap_or_else(|| panic!("no {title}:\n{md}"));
    let line = section.lines().find(|l| l.starts_with(&format!("| {estimator} |"))).unwrap_or_else(|| panic!("no row {estimator}:\n{md}"));
    line.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect()
}

/// The header cells of the table under `## {title}`.
fn markdown_header(md: &str, title: &str) -> Vec<String> {
    markdown_row(md, title, "estimator")
}

/// Checks one estimator's entry of the report, in --json and in its Markdown row, against its
/// runs: the counts written out by the caller (`cell` the Markdown runs cell), then every column
/// `(json key, Markdown title, value key, format)` from the finished runs' numbers.
fn assert_estimator(
    json_rows: &[Value],
    md: &str,
    title: &str,
    runs: &[Run],
    estimator: &str,
    counts: (u64, u64, u64, &str),
    columns: &[(&str, &str, &str, Shown)],
) {
    let row = json_rows.iter().find(|r| r["estimator"] == estimator).unwrap_or_else(|| panic!("no {estimator}: {json_rows:?}"));
    assert_eq!(
        (row["runs"].as_u64(), row["finished"].as_u64(), row["diverged"].as_u64()),
        (Some(counts.0), Some(counts.1), Some(counts.2)),
        "{row}"
    );
    let finished: Vec<&Run> = runs.iter().filter(|r| r.estimator == estimator && r.eval.is_some()).collect();
    assert_eq!(finished.len() as u64, counts.1, "the test's own runs");
    let header = markdown_header(md, title);
    let cells = markdown_row(md, title, estimator);
    assert_eq!(cells.len(), header.len(), "{cells:?} under {header:?}");
    assert_eq!(cells[1], counts.3, "{estimator}: runs cell");
    for &(json_key, md_title, key, how) in columns {
        let xs: Vec<f64> = finished.iter().map(|r| run_values(r, key)).collect();
        let (mean, se) = mean_se(&xs);
        let got = &row[json_key];
        assert!(close(got["mean"].as_f64().unwrap(), mean), "{estimator} {json_key}: mean {got}, want {mean}");
        match se {
            Some(se) => assert!(close(got["std_err"].as_f64().unwrap(), se), "{estimator} {json_key}: {got}, want std_err {se}"),
            None => assert!(got["std_err"].is_null(), "{estimator} {json_key}: one run has no standard error: {got}"),
        }
        assert_eq!(got["n"].as_u64(), Some(xs.len() as u64), "{estimator} {json_key}: {got}");
        let at = header.iter().position(|h| h == md_title).unwrap_or_else(|| panic!("no column {md_title} in {header:?}"));
        let want = match se {
            Some(se) => format!("{} ± {}", show(mean, how), show(se, how)),
            None => show(mean, how),
        };
        assert_eq!(cells[at], want, "{estimator}: the cell of {md_title}");
    }
}

fn vae_eval(elbo: f64, bound: f64) -> Option<(Vec<(&'static str, &'static str, f64)>, f64)> {
    Some((vec![("test_elbo", "test ELBO", elbo), ("test_bound", "test bound, K = 5", bound)], 0.0))
}

fn with_eval_seconds(
    eval: Option<(Vec<(&'static str, &'static str, f64)>, f64)>,
    seconds: f64,
) -> Option<(Vec<(&'static str, &'static str, f64)>, f64)> {
    eval.map(|(r, _)| (r, seconds))
}

fn vae_run(estimator: &'static str, seed: u64, epochs: Vec<Epoch>, evaluations: f64) -> Run {
    Run { experiment: "vae", estimator, seed, epochs, evaluations, eval: None, diverged: false }
}

/// The VAE runs of the first test: hnca three finished (epochs of 8 and 2 steps, and of 5, 5
/// and 2), one unfinished and one diverged, both with numbers far from the others; reinforce
/// two finished and one that diverged before its first epoch ended (diverged.json alone);
/// disarm one finished at 3 evaluations per step.
fn vae_runs() -> Vec<Run> {
    vec![
        Run {
            eval: with_eval_seconds(vae_eval(-101.25, -98.5), 4.5),
            ..vae_run("hnca", 0, vec![epoch(8, -150.0, 1.0, 40.0), epoch(2, -120.5, 6.0, 20.0)], 1.0)
        },
        Run {
            eval: with_eval_seconds(vae_eval(-103.75, -99.25), 7.25),
            ..vae_run("hnca", 1, vec![epoch(8, -149.0, 2.0, 50.0), epoch(2, -121.25, 12.0, 30.0)], 1.0)
        },
        Run {
            eval: with_eval_seconds(vae_eval(-100.5, -97.0), 6.0),
            ..vae_run("hnca", 2, vec![epoch(5, -151.0, 0.5, 100.0), epoch(5, -130.0, 2.5, 110.0), epoch(2, -119.0, 9.5, 41.0)], 1.0)
        },
        // Trained its epochs but not evaluated yet.
        vae_run("hnca", 3, vec![epoch(8, -900.0, 1e6, 1.0), epoch(2, -800.0, 1e6, 1.0)], 1.0),
        Run { diverged: true, ..vae_run("hnca", 4, vec![epoch(8, -1e9, 1e12, 0.5)], 1.0) },
        Run {
            eval: with_eval_seconds(vae_eval(-110.0, -106.5), 3.0),
            ..vae_run("reinforce", 0, vec![epoch(8, -160.0, 40.0, 12.0), epoch(2, -140.0, 100.0, 4.0)], 1.0)
        },
        Run {
            eval: with_eval_seconds(vae_eval(-114.5, -108.0), 2.5),
            ..vae_run("reinforce", 1, vec![epoch(8, -158.0, 30.0, 14.0), epoch(2, -139.0, 80.0, 2.0)], 1.0)
        },
        Run { diverged: true, ..vae_run("reinforce", 2, Vec::new(), 1.0) },
        Run {
            eval: with_eval_seconds(vae_eval(-104.0, -100.0), 9.0),
            ..vae_run("disarm", 0, vec![epoch(8, -155.0, 8.0, 30.0), epoch(2, -125.0, 2.0, 6.0)], 3.0)
        },
    ]
}

const VAE_TITLE: &str = "Discrete VAE on binarized MNIST";

#[test]
fn every_column_is_the_mean_and_standard_error_over_the_finished_runs_of_their_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let runs = vae_runs();
    for r in &runs {
        write_run(out, r);
    }
    // A sweep's manifest, in an order that is not the directories' (disarm, hnca, reinforce).
    std::fs::write(out.join("sweep.json"), "{\n  \"vae\": {\n    \"estimators\": [\"reinforce\", \"hnca\", \"disarm\"]\n  }\n}\n").unwrap();
    let (json, md) = report(out);
    let experiments = json["experiments"].as_array().unwrap();
    assert_eq!(experiments.len(), 1, "{json}");
    assert_eq!(experiments[0]["experiment"], "vae");
    let rows = experiments[0]["estimators"].as_array().unwrap();
    let order: Vec<&str> = rows.iter().map(|r| r["estimator"].as_str().unwrap()).collect();
    assert_eq!(order, ["reinforce", "hnca", "disarm"], "the manifest's order");
    let md_order: Vec<String> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| estimator"))
        .map(|l| l.split(" | ").next().unwrap()[2..].to_string())
        .collect();
    assert_eq!(md_order, ["reinforce", "hnca", "disarm"], "{md}");
    // Every column, in this order (the evaluations column because disarm's runs cost 3).
    let header = markdown_header(&md, VAE_TITLE);
    let want_header = [
        "estimator",
        "runs",
        "train ELBO (nats)",
        "test ELBO",
        "test bound, K = 5",
        "gradient variance",
        "evaluations/step",
        "steps/s",
        "wall time",
    ];
    assert_eq!(header, want_header, "{md}");
    let columns = [
        ("train_elbo", "train ELBO (nats)", "train", Shown::Fixed(3)),
        ("test_elbo", "test ELBO", "test_elbo", Shown::Fixed(3)),
        ("test_bound", "test bound, K = 5", "test_bound", Shown::Fixed(3)),
        ("grad_var", "gradient variance", "grad_var", Shown::Sci),
        ("evaluations", "evaluations/step", "evaluations", Shown::Rate),
        ("steps_per_second", "steps/s", "steps_per_second", Shown::Rate),
        ("wall_seconds", "wall time", "wall_seconds", Shown::Duration),
    ];
    assert_estimator(rows, &md, VAE_TITLE, &runs, "hnca", (5, 3, 1, "3 of 5 (1 diverged)"), &columns);
    assert_estimator(rows, &md, VAE_TITLE, &runs, "reinforce", (3, 2, 1, "2 of 3 (1 diverged)"), &columns);
    assert_estimator(rows, &md, VAE_TITLE, &runs, "disarm", (1, 1, 0, "1"), &columns);
    // Hand-checked anchors of the rules above, for hnca: seed 0's gradient variance over its 10
    // steps is (8·1 + 2·6)/10 = 2 (not the epochs' mean 3.5), its steps/s 10/60, its wall time
    // 60 + 4.5 s; the three runs' wall times 64.5, 87.25 and 257 s average 136.25 s.
    let hnca = &rows[1];
    assert!(close(hnca["wall_seconds"]["mean"].as_f64().unwrap(), 136.25), "{hnca}");
    assert!(close(run_values(&runs[0], "grad_var"), 2.0) && close(run_values(&runs[0], "steps_per_second"), 10.0 / 60.0));
}

#[test]
fn experiments_are_reported_apart_with_their_own_columns_and_titles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let bandit_eval = |acc: f64| Some((vec![("test_accuracy", "test accuracy", acc)], 1.5));
    let bandit =
        |estimator, seed, epochs| Run { experiment: "bandit", estimator, seed, epochs, evaluations: 1.0, eval: None, diverged: false };
    let runs = vec![
        Run { eval: bandit_eval(0.625), ..bandit("hnca", 0, vec![epoch(6, 0.25, 0.004, 3.0), epoch(4, 0.5, 0.001, 2.0)]) },
        Run { eval: bandit_eval(0.75), ..bandit("hnca", 1, vec![epoch(6, 0.375, 0.002, 4.0), epoch(4, 0.5625, 0.003, 1.0)]) },
        Run { eval: bandit_eval(0.125), ..bandit("reinforce", 0, vec![epoch(10, 0.125, 0.25, 4.0)]) },
        Run { eval: bandit_eval(0.1875), ..bandit("reinforce", 1, vec![epoch(10, 0.0625, 0.5, 6.0)]) },
        // A VAE run under the same estimator name belongs to the VAE's table only.
        Run { eval: vae_eval(-99.0, -95.5), ..vae_run("hnca", 0, vec![epoch(3, -140.0, 7.0, 9.0)], 1.0) },
        Run { eval: vae_eval(-97.0, -94.0), ..vae_run("hnca", 1, vec![epoch(3, -138.0, 5.0, 11.0)], 1.0) },
        Run { eval: vae_eval(-120.0, -115.0), ..vae_run("reinforce", 0, vec![epoch(3, -170.0, 70.0, 3.0)], 1.0) },
    ];
    for r in &runs {
        write_run(out, r);
    }
    // The manifest orders the VAE's estimators; the bandit's are in their directories' order.
    std::fs::write(out.join("sweep.json"), r#"{"vae": {"estimators": ["reinforce", "hnca"]}}"#).unwrap();
    let (json, md) = report(out);
    let experiments = json["experiments"].as_array().unwrap();
    let names: Vec<&str> = experiments.iter().map(|e| e["experiment"].as_str().unwrap()).collect();
    assert_eq!(names, ["bandit", "vae"], "{json}");
    let order = |i: usize| {
        experiments[i]["estimators"].as_array().unwrap().iter().map(|r| r["estimator"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!((order(0), order(1)), (vec!["hnca".to_string(), "reinforce".into()], vec!["reinforce".to_string(), "hnca".into()]));
    let headings: Vec<&str> = md.lines().filter(|l| l.starts_with("## ")).collect();
    // The setup the runs share, in the title as the figures have it.
    assert_eq!(
        headings,
        ["## Contextual bandit on MNIST (layers 8,5, batch 20)", "## Discrete VAE on binarized MNIST (layers 8,5, batch 20)"]
    );
    let bandit_title = "Contextual bandit on MNIST";
    let header = markdown_header(&md, bandit_title);
    assert_eq!(header, ["estimator", "runs", "train accuracy", "test accuracy", "gradient variance", "steps/s", "wall time"], "{md}");
    let bandit_columns = [
        ("train_accuracy", "train accuracy", "train", Shown::Fixed(4)),
        ("test_accuracy", "test accuracy", "test_accuracy", Shown::Fixed(4)),
        ("grad_var", "gradient variance", "grad_var", Shown::Sci),
        ("steps_per_second", "steps/s", "steps_per_second", Shown::Rate),
        ("wall_seconds", "wall time", "wall_seconds", Shown::Duration),
    ];
    let bandit_runs: Vec<Run> = runs.iter().filter(|r| r.experiment == "bandit").map(copy).collect();
    let vae_runs: Vec<Run> = runs.iter().filter(|r| r.experiment == "vae").map(copy).collect();
    let bandit_rows = experiments[0]["estimators"].as_array().unwrap();
    for est in ["hnca", "reinforce"] {
        assert_estimator(bandit_rows, &md, bandit_title, &bandit_runs, est, (2, 2, 0, "2"), &bandit_columns);
        assert!(bandit_rows.iter().all(|r| r.get("evaluations").is_none() && r.get("train_elbo").is_none()), "{json}");
    }
    let vae_columns = [
        ("train_elbo", "train ELBO (nats)", "train", Shown::Fixed(3)),
        ("test_bound", "test bound, K = 5", "test_bound", Shown::Fixed(3)),
        ("grad_var", "gradient variance", "grad_var", Shown::Sci),
        ("wall_seconds", "wall time", "wall_seconds", Shown::Duration),
    ];
    let vae_rows = experiments[1]["estimators"].as_array().unwrap();
    assert_estimator(vae_rows, &md, VAE_TITLE, &vae_runs, "hnca", (2, 2, 0, "2"), &vae_columns);
    assert_estimator(vae_rows, &md, VAE_TITLE, &vae_runs, "reinforce", (1, 1, 0, "1"), &vae_columns);
    // Every run costs one evaluation per step: no evaluations column.
    assert!(!markdown_header(&md, VAE_TITLE).iter().any(|h| h == "evaluations/step"), "{md}");
}

fn copy(r: &Run) -> Run {
    Run { epochs: r.epochs.clone(), eval: r.eval.clone(), ..*r }
}

/// A metrics file's lines.
fn lines_of(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Writes a gzip-compressed IDX file (big-endian magic and dimensions, then the bytes).
fn write_idx(path: &Path, magic: u32, dims: &[u32], payload: &[u8]) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&magic.to_be_bytes()).unwrap();
    for d in dims {
        gz.write_all(&d.to_be_bytes()).unwrap();
    }
    gz.write_all(payload).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

/// A small MNIST-format data set in `dir`: `train` and `test` images of 28×28 varied pixels.
fn write_small_mnist(dir: &Path, train: usize, test: usize) {
    use hnca::data::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
    for (images, labels, n, salt) in [(TRAIN_IMAGES, TRAIN_LABELS, train, 1), (TEST_IMAGES, TEST_LABELS, test, 2)] {
        let pixels: Vec<u8> = (0..n * 784).map(|i| ((i * 37 + salt * 101 + i / 784 * 13) % 256) as u8).collect();
        write_idx(&dir.join(images), 0x0803, &[n as u32, 28, 28], &pixels);
        let digits: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx(&dir.join(labels), 0x0801, &[n as u32], &digits);
    }
}

#[test]
fn a_real_sweeps_report_agrees_with_its_runs_files() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (dir.path().join("data"), dir.path().join("runs"));
    std::fs::create_dir(&data).unwrap();
    // 200 training images in batches of 20 and 25 steps: epochs of 10, 10 and 5 steps.
    write_small_mnist(&data, 200, 40);
    hnca()
        .args(["sweep", "vae", "--estimators", "reinforce", "--seeds", "0-2", "--eval-k", "2", "--out"])
        .arg(&out)
        .args(["--layers", "8,5", "--batch-size", "20", "--steps", "25", "--test-every", "0"])
        .args(["--device", "cpu", "--threads", "1", "--data-dir"])
        .arg(&data)
        .assert()
        .success();
    let (mut grad_var, mut unweighted, mut rate, mut wall) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for seed in 0..3 {
        let run = out.join(format!("vae-reinforce-s{seed}"));
        let lines = lines_of(&run.join("metrics.jsonl"));
        let num = |l: &Value, k: &str| l[k].as_f64().unwrap();
        let steps_in: Vec<f64> = lines.iter().map(|l| num(l, "steps_in_epoch")).collect();
        assert_eq!(steps_in, [10.0, 10.0, 5.0], "{}", run.display());
        let seconds: f64 = lines.iter().map(|l| num(l, "seconds")).sum();
        grad_var.push(lines.iter().map(|l| num(l, "grad_var") * num(l, "steps_in_epoch")).sum::<f64>() / 25.0);
        unweighted.push(lines.iter().map(|l| num(l, "grad_var")).sum::<f64>() / 3.0);
        rate.push(num(lines.last().unwrap(), "step") / seconds);
        let eval: Value = serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
        wall.push(seconds + eval["seconds"].as_f64().unwrap());
    }
    let (json, _) = report(&out);
    let row = &json["experiments"][0]["estimators"][0];
    assert_eq!((row["estimator"].as_str(), row["finished"].as_u64()), (Some("reinforce"), Some(3)), "{row}");
    for (key, xs) in [("grad_var", &grad_var), ("steps_per_second", &rate), ("wall_seconds", &wall)] {
        let (mean, se) = mean_se(xs);
        let got = &row[key];
        assert!(
            close(got["mean"].as_f64().unwrap(), mean) && close(got["std_err"].as_f64().unwrap(), se.unwrap()),
            "{key}: {got}, want {mean} ± {se:?}"
        );
    }
    // The epochs' values differ, so the steps' weights matter.
    let (plain, _) = mean_se(&unweighted);
    assert!(!close(plain, mean_se(&grad_var).0), "the epochs' plain mean equals the weighted one; the test would be blind");
    // Every run costs one evaluation per step: no evaluations column.
    assert!(row.get("evaluations").is_none(), "{row}");
}

/// The steps-weighted gradient variance of the metrics file of an uninterrupted run: each of
/// its epochs once.
fn steps_weighted_grad_var(path: &Path) -> f64 {
    let lines = lines_of(path);
    let num = |l: &Value, k: &str| l[k].as_f64().unwrap();
    lines.iter().map(|l| num(l, "grad_var") * num(l, "steps_in_epoch")).sum::<f64>()
        / lines.iter().map(|l| num(l, "steps_in_epoch")).sum::<f64>()
}

/// A sweep run again with more --steps continues its runs from checkpoints written mid-epoch;
/// the continued run's line of that epoch reports the whole epoch (docs/usage.md, "Metrics": "at
/// the epoch's end, a line for the whole epoch"), so the earlier line's steps are in it
/// twice. The report's gradient variance, averaged over each run's steps, must count each step
/// once: the same as for the uninterrupted run.
///
/// (Before the report kept only each epoch's last line it averaged 30 steps' worth here, steps
/// 1-5 twice: 23713.7 against the run's 22664.3.)
#[test]
fn a_sweep_continued_mid_epoch_reports_the_gradient_variance_over_each_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_small_mnist(&data, 200, 40);
    let sweep = |out: &Path, steps: &str| {
        hnca()
            .args(["sweep", "vae", "--estimators", "reinforce", "--seeds", "0", "--eval-k", "2", "--out"])
            .arg(out)
            .args(["--layers", "8,5", "--batch-size", "20", "--steps", steps, "--test-every", "0"])
            .args(["--device", "cpu", "--threads", "1", "--data-dir"])
            .arg(&data)
            .assert()
            .success();
    };
    let (continued, straight) = (dir.path().join("continued"), dir.path().join("straight"));
    sweep(&continued, "5");
    sweep(&continued, "25");
    sweep(&straight, "25");
    let want = steps_weighted_grad_var(&straight.join("vae-reinforce-s0").join("metrics.jsonl"));
    for out in [&straight, &continued] {
        let (json, _) = report(out);
        let got = json["experiments"][0]["estimators"][0]["grad_var"]["mean"].as_f64().unwrap();
        assert!(close(got, want), "{}: grad_var {got}, the run's mean over its 25 steps is {want}", out.display());
    }
}

/// What `hnca plot` and `report --figures` draw of an estimator: at every step all its seeds'
/// files share, the mean over the seeds of their training objective and gradient variance, with
/// a band of one sample standard deviation (divisor n - 1) around it, placed on the wall-time
/// axis at the seeds' mean time to that step (each file's seconds summed up to that line).
#[test]
fn the_figures_average_each_estimators_seeds_from_their_metrics_files() {
    use hnca::plot::data::{group_on, load_run};
    use hnca::plot::{Spread, XAxis};
    let dir = tempfile::tempdir().unwrap();
    let runs = [
        vae_run("hnca", 0, vec![epoch(8, -150.0, 1.0, 40.0), epoch(2, -120.5, 6.0, 20.0)], 1.0),
        vae_run("hnca", 1, vec![epoch(8, -149.0, 2.0, 50.0), epoch(2, -121.25, 12.0, 30.0), epoch(5, -118.0, 3.0, 9.0)], 1.0),
        vae_run("hnca", 2, vec![epoch(8, -153.5, 4.0, 10.0), epoch(2, -119.0, 9.0, 5.0)], 1.0),
        vae_run("reinforce", 0, vec![epoch(10, -160.0, 40.0, 12.0)], 1.0),
    ];
    let loaded: Vec<_> = runs
        .iter()
        .map(|r| {
            write_run(dir.path(), r);
            load_run(&dir.path().join(r.name()).join("metrics.jsonl"), &hnca::app::EXPERIMENTS).unwrap()
        })
        .collect();
    let series = group_on(&loaded, Spread::Std, XAxis::Seconds).unwrap();
    let names: Vec<(&str, usize)> = series.iter().map(|s| (s.estimator.as_str(), s.runs)).collect();
    assert_eq!(names, [("hnca", 3), ("reinforce", 1)]);
    let hnca = &series[0];
    // The steps all three hnca files have: 8 and 10 (seed 1's step 15 is its own).
    for (i, epoch_index) in [0usize, 1].into_iter().enumerate() {
        let seeds = &runs[..3];
        let at = |f: &dyn Fn(&Run) -> f64| seeds.iter().map(f).collect::<Vec<f64>>();
        let time = at(&|r| r.epochs[..=epoch_index].iter().map(|e| e.seconds).sum());
        let train = at(&|r| r.epochs[epoch_index].train);
        let grad_var = at(&|r| r.epochs[epoch_index].grad_var);
        let sd = |xs: &[f64]| mean_se(xs).1.unwrap() * (xs.len() as f64).sqrt();
        let (x, m, g) = (mean_se(&time).0, mean_se(&train).0, mean_se(&grad_var).0);
        assert!(close(hnca.metric.x[i], x) && close(hnca.grad_var.x[i], x), "step {i}: x {} vs the seeds' mean time {x}", hnca.metric.x[i]);
        assert!(close(hnca.metric.mean[i], m) && close(hnca.grad_var.mean[i], g), "step {i}: {hnca:?}");
        assert!(close(hnca.metric.lo[i], m - sd(&train)) && close(hnca.metric.hi[i], m + sd(&train)), "step {i}: {hnca:?}");
        assert!(close(hnca.grad_var.hi[i], g + sd(&grad_var)), "step {i}: {hnca:?}");
    }
    assert_eq!(hnca.metric.x.len(), 2, "only the steps every seed has: {hnca:?}");
}
