//! `hnca plot` through the library: synthetic metrics files in, SVG and PNG figures out.
//!
//! Set HNCA_PLOT_DEMO to a directory to keep the rendered figures there for a look.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use hnca::app::EXPERIMENTS;
use hnca::plot::{run, PlotArgs, Spread, PALETTE};

const ESTIMATORS: [&str; 2] = ["hnca", "reinforce"];

/// A VAE metrics line (no "experiment" key, as `hnca vae` writes them) or a bandit one.
fn line(bandit: bool, est: &str, seed: u64, epoch: u64) -> String {
    let t = epoch as f64;
    let noise = (seed as f64 - 1.0) * (1.0 + 0.2 * t);
    let scale = if est == "hnca" { 1e-3 } else { 3e-2 };
    let grad_var = scale * (1.0 + 0.3 * seed as f64) / (1.0 + 0.5 * t);
    let common = format!(
        r#""epoch":{epoch},"step":{},"estimator":"{est}","seed":{seed},"grad_var":{grad_var},"grad_var_layers":[{grad_var}],"layers":[200,200],"batch_size":50,"lr":0.0001"#,
        1200 * epoch
    );
    if bandit {
        let acc = (0.9 - 0.8 * (-t / 3.0).exp() + noise * 0.01).clamp(0.0, 1.0);
        format!(r#"{{"experiment":"bandit",{common},"train_accuracy":{acc},"test_accuracy":null}}"#)
    } else {
        let bonus = if est == "hnca" { 10.0 } else { 0.0 };
        let elbo = -200.0 + (90.0 + bonus) * (1.0 - (-t / 3.0).exp()) + noise;
        format!(r#"{{{common},"train_elbo":{elbo},"test_elbo":null}}"#)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Two estimators × three seeds × 10 epochs.
fn synthetic_runs(dir: &Path, bandit: bool) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for seed in 0..3 {
        for est in ESTIMATORS {
            let text: String = (1..=10).map(|e| line(bandit, est, seed, e) + "\n").collect();
            let kind = if bandit { "bandit" } else { "vae" };
            paths.push(write(dir, &format!("{kind}-{est}-{seed}.jsonl"), &text));
        }
    }
    paths
}

fn plot(runs: Vec<PathBuf>, out: PathBuf) -> Result<(), hnca::error::Error> {
    run(&PlotArgs::new(runs, out), &EXPERIMENTS)
}

fn keep(path: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("HNCA_PLOT_DEMO") {
        std::fs::copy(path, Path::new(&dir).join(name)).unwrap();
    }
}

#[test]
fn svg_has_a_legend_entry_per_estimator_bands_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fig.svg");
    plot(synthetic_runs(dir.path(), false), out.clone()).unwrap();
    keep(&out, "plot_demo.svg");
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    for est in ESTIMATORS {
        assert_eq!(svg.matches(&format!(">{est} (3 seeds)</text>")).count(), 1, "{est}");
    }
    // Per estimator, a band in each panel and a swatch in the legend.
    assert_eq!(svg.matches("<polygon ").count(), 2 * 3);
    assert!(svg.contains(&format!(r#"stroke="{}" stroke-width="2""#, PALETTE[0].hex())));
    assert!(svg.contains(&format!(r#"stroke="{}" stroke-width="2""#, PALETTE[1].hex())));
    for label in
        ["train ELBO (nats)", "gradient variance", "steps", "1e-3", "12k", "Discrete VAE on binarized MNIST (layers 200,200, batch 50)"]
    {
        assert!(svg.contains(&format!(">{label}</text>")), "{label}");
    }
    assert!(!dir.path().join("fig.svg.tmp").exists());
}

/// Distinct RGB colours of an 8-bit RGB PNG, and its size from IHDR.
fn png_colours(png: &[u8]) -> ((u32, u32), HashSet<[u8; 3]>) {
    let chunks = hnca::png::chunks(png).expect("a valid PNG");
    let (kind, ihdr) = chunks[0];
    assert_eq!(&kind, b"IHDR");
    let w = u32::from_be_bytes(ihdr[0..4].try_into().unwrap());
    let h = u32::from_be_bytes(ihdr[4..8].try_into().unwrap());
    assert_eq!(ihdr[8..10], [8, 2], "8-bit RGB");
    let idat: Vec<u8> = chunks.iter().filter(|(k, _)| k == b"IDAT").flat_map(|(_, d)| d.iter().copied()).collect();
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
    let stride = 1 + 3 * w as usize;
    assert_eq!(raw.len(), stride * h as usize);
    let mut colours = HashSet::new();
    for row in raw.chunks(stride) {
        assert_eq!(row[0], 0, "filter type none");
        colours.extend(row[1..].chunks(3).map(|p| [p[0], p[1], p[2]]));
    }
    ((w, h), colours)
}

#[test]
fn png_has_the_size_asked_and_draws_in_the_palette() {
    let dir = tempfile::tempdir().unwrap();
    for (bandit, name) in [(false, "plot_demo.png"), (true, "plot_demo_bandit.png")] {
        let out = dir.path().join(name);
        let mut args = PlotArgs::new(synthetic_runs(dir.path(), bandit), out.clone());
        args.width = 1000;
        args.height = 400;
        run(&args, &EXPERIMENTS).unwrap();
        keep(&out, name);
        let png = std::fs::read(&out).unwrap();
        assert_eq!(png[..8], hnca::png::PNG_SIGNATURE);
        let (size, colours) = png_colours(&png);
        assert_eq!(size, (1000, 400));
        let rgb = |c: hnca::plot::Rgb| [c.0, c.1, c.2];
        assert!(colours.contains(&[255, 255, 255]));
        assert!(colours.contains(&rgb(PALETTE[0])) && colours.contains(&rgb(PALETTE[1])), "{name}");
        assert!(colours.len() > 20, "{name}: only {} colours", colours.len());
    }
}

#[test]
fn std_spread_and_a_single_seed_render_too() {
    let dir = tempfile::tempdir().unwrap();
    let runs = synthetic_runs(dir.path(), false);
    let out = dir.path().join("std.svg");
    let mut args = PlotArgs::new(runs.clone(), out.clone());
    args.spread = Spread::Std;
    args.title = Some("a <custom> title".into());
    run(&args, &EXPERIMENTS).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains(">a &lt;custom&gt; title</text>"));
    assert_eq!(svg.matches("<polygon ").count(), 6);

    // One seed: a line, no band (only the legend swatch).
    plot(runs[..1].to_vec(), out.clone()).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains(">hnca (1 seed)</text>"));
    assert_eq!(svg.matches("<polygon ").count(), 1);
}

#[test]
fn a_resumed_run_keeps_the_last_line_of_a_repeated_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut resumed: serde_json::Value = serde_json::from_str(&line(false, "hnca", 0, 2)).unwrap();
    resumed["train_elbo"] = (-1.0).into();
    let text = [line(false, "hnca", 0, 1), line(false, "hnca", 0, 2), resumed.to_string(), String::new()];
    let path = write(dir.path(), "resumed.jsonl", &text.join("\n"));
    let run = hnca::plot::data::load_run(&path, &EXPERIMENTS).unwrap();
    assert_eq!(run.points.keys().copied().collect::<Vec<_>>(), [1200, 2400]);
    assert_eq!(run.points[&2400].0, -1.0);
}

fn error(runs: Vec<PathBuf>, out: PathBuf) -> String {
    let e = plot(runs, out).expect_err("should fail");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn bad_input_is_a_one_line_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("fig.svg");
    let good = write(d, "good.jsonl", &(line(false, "hnca", 0, 1) + "\n"));

    let missing = d.join("missing.jsonl");
    let msg = error(vec![good.clone(), missing.clone()], out.clone());
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    let empty = write(d, "empty.jsonl", "\n\n");
    let msg = error(vec![empty.clone()], out.clone());
    assert!(msg.contains(&format!("{}: empty", empty.display())), "{msg}");

    let cases = [
        ("bad.jsonl", format!("{}\n{{\"step\": 3,\n", line(false, "hnca", 0, 1)), "line 2: not JSON"),
        ("array.jsonl", "[1, 2]\n".to_string(), "line 1: not a JSON object"),
        ("nostep.jsonl", line(false, "hnca", 0, 1).replace("\"step\"", "\"steps\""), "line 1: no \"step\""),
        ("noelbo.jsonl", line(false, "hnca", 0, 1).replace("\"train_elbo\"", "\"elbo\""), "line 1: no \"train_elbo\""),
        (
            "null.jsonl",
            line(true, "hnca", 0, 1).replace(r#""train_accuracy":"#, r#""train_accuracy":null,"x":"#),
            "line 1: \"train_accuracy\" is null",
        ),
        ("nogv.jsonl", line(false, "hnca", 0, 1).replace("\"grad_var\":", "\"gv\":"), "line 1: no \"grad_var\""),
        ("exp.jsonl", line(true, "hnca", 0, 1).replace("\"bandit\"", "\"gan\""), "line 1: unknown \"experiment\""),
        ("mixed.jsonl", format!("{}\n{}\n", line(false, "hnca", 0, 1), line(true, "hnca", 0, 2)), "line 2: a bandit line"),
        ("estimators.jsonl", format!("{}\n{}\n", line(false, "hnca", 0, 1), line(false, "reinforce", 0, 2)), "line 2: estimator"),
    ];
    for (name, text, expected) in cases {
        let path = write(d, name, &text);
        let msg = error(vec![good.clone(), path.clone()], out.clone());
        assert!(msg.contains(&format!("{} {expected}", path.display())), "{name}: {msg}");
    }

    let bandit = write(d, "bandit.jsonl", &(line(true, "hnca", 0, 1) + "\n"));
    let msg = error(vec![good.clone(), bandit.clone()], out.clone());
    assert!(msg.contains(&bandit.display().to_string()) && msg.contains("one experiment at a time"), "{msg}");

    let msg = error(vec![good.clone()], d.join("fig.jpg"));
    assert!(msg.contains("fig.jpg") && msg.contains(".svg or .png"), "{msg}");
    assert!(!d.join("fig.svg").exists());
}

#[test]
fn the_binary_plots_real_metrics_files_and_rejects_bad_input_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut files = Vec::new();
    for est in ["hnca", "reinforce"] {
        let path = d.join(format!("{est}.jsonl"));
        assert_cmd::Command::cargo_bin("hnca")
            .unwrap()
            .args(["vae", "--layers", "8", "--steps", "30", "--test-every", "0", "--device", "cpu", "--estimator", est, "--metrics"])
            .arg(&path)
            .assert()
            .success();
        files.push(path);
    }
    let out = d.join("fig.svg");
    let ok = assert_cmd::Command::cargo_bin("hnca").unwrap().arg("plot").args(&files).arg("--out").arg(&out).assert().success();
    assert!(String::from_utf8_lossy(&ok.get_output().stdout).contains("2 runs, 2 estimators"));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains("hnca (1 seed)") && svg.contains("reinforce (1 seed)"), "{svg}");
    let bad =
        assert_cmd::Command::cargo_bin("hnca").unwrap().arg("plot").args(&files).args(["--out", "fig.pdf"]).assert().failure().code(2);
    let stderr = String::from_utf8_lossy(&bad.get_output().stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: --out fig.pdf: unknown image format"), "{stderr}");
}
