//! The whole CUDA host path — cudarc's context, streams, allocations, copies, module loading,
//! launches and synchronisation, then the training loop — on the emulated CUDA driver
//! (kernels/emu/fake_cuda.cpp), checked against the CPU backend.

mod common;

use assert_cmd::Command;
use common::compare::normwise;
use common::fake_cuda;
use hnca::backend::cpu::Cpu;
use hnca::backend::kernels::KernelBackend;
use hnca::backend::Backend;
use hnca::backend::MemoryOps;
use hnca::bandit::{AgentShape, BanditTrainer, ESTIMATORS};
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::{Params, Shape};
use hnca::vae::step::{compute_gradients, Draw, Workspace};

/// Every sample and every gradient tensor of one step, on the host.
fn step<B: Backend>(
    be: &B,
    shape: &Shape,
    est: &Estimator,
    host: &Params<Vec<f32>>,
    x: &[f32],
    b: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let params = host.to_backend(be);
    let mut grads = host.map(|t| be.zeros(t.len()));
    let mut ws = Workspace::new(be, shape, est, b);
    be.write(&mut ws.main.z[0], x);
    let baselines: Vec<f32> = (0..shape.depth()).map(|l| 0.5 - 1.5 * l as f32).collect();
    let baselines = be.upload(&baselines);
    compute_gradients(be, &params, &mut ws, est, &baselines, Draw::at(8, 2, false), &mut grads);
    be.check().unwrap();
    let mut samples: Vec<Vec<f32>> = ws.main.z.iter().map(|z| be.download(z)).collect();
    // alt[0] is an unused placeholder (a GPU backs empty buffers with one element).
    for chain in ws.alt.iter().skip(1) {
        samples.extend(chain.z.iter().map(|z| be.download(z)));
    }
    (samples, grads.tensors().into_iter().map(|t| be.download(t)).collect())
}

/// One step of every estimator through cudarc and the emulated driver against the CPU, on a
/// small model and on one whose shapes cross every launch constant (tests/common/mod.rs).
#[test]
fn training_steps_through_cudarc_and_the_emulated_driver_match_the_cpu() {
    let Some(device) = fake_cuda::open_or_skip() else { return };
    assert!(device.description.starts_with("hnca emulated GPU"), "{}", device.description);
    let gpu = KernelBackend::new(device);
    let cpu = Cpu::new();
    for (shape, b) in [(Shape::new(30, &[13, 9]), 6), (Shape::new(common::WIDE_INPUTS, &common::WIDE_LAYERS), common::WIDE_BATCH)] {
        let host = Params::init(&shape, 4);
        let n0 = shape.width(0);
        let x: Vec<f32> = (0..b * n0).map(|i| ((i * 7 + i / 5) % 3 == 0) as u8 as f32).collect();
        for kind in EstimatorKind::ALL {
            let est = Estimator::new(kind);
            let (zg, gg) = step(&gpu, &shape, &est, &host, &x, b);
            let (zc, gc) = step(&cpu, &shape, &est, &host, &x, b);
            assert_eq!(zg, zc, "{} {:?}: samples differ", kind.name(), shape.sizes);
            for (i, (g, c)) in gg.iter().zip(&gc).enumerate() {
                let d = normwise(g, c);
                assert!(d <= 1e-5, "{} {:?} gradient tensor {i}: normwise difference {d}", kind.name(), shape.sizes);
            }
        }
    }
}

/// Two bandit steps of every estimator through cudarc and the emulated driver against the CPU, on
/// shapes that cross every launch constant, and over convolutions (with HNCA through ρ as
/// well): identical actions and samples, gradients within 1e-5 normwise.
#[test]
fn bandit_steps_through_cudarc_and_the_emulated_driver_match_the_cpu() {
    let Some(device) = fake_cuda::open_or_skip() else { return };
    let gpu = KernelBackend::new(device);
    let cpu = Cpu::new();
    let wide = AgentShape::new(common::WIDE_INPUTS, &common::WIDE_BANDIT_LAYERS, 10);
    let conv = AgentShape::with_conv(hnca::bandit::conv::conv_geoms(13, 11, 2, 5).unwrap(), &[70, 9], 10);
    for (shape, b) in [(wide, common::WIDE_BATCH), (conv, 5)] {
        assert_bandit_steps_match_the_cpu(&gpu, &cpu, &shape, b);
    }
}

fn assert_bandit_steps_match_the_cpu(gpu: &KernelBackend<hnca::backend::cuda::CudaDevice>, cpu: &Cpu, shape: &AgentShape, b: usize) {
    let x: Vec<f32> = (0..b * shape.pixels()).map(|i| ((i * 7 + i / 5) % 3 == 0) as u8 as f32).collect();
    let labels: Vec<f32> = (0..b).map(|r| (r * 3 % 10) as f32).collect();
    let through_rho = (!shape.conv.is_empty()).then_some((EstimatorKind::Hnca, true));
    for (est, rho_gradient) in ESTIMATORS.into_iter().map(|(e, _)| (e, false)).chain(through_rho) {
        let mut tg = BanditTrainer::new(gpu, shape.clone(), est, b, 1e-3, 2);
        let mut tc = BanditTrainer::new(cpu, shape.clone(), est, b, 1e-3, 2);
        tg.model.rho_gradient = rho_gradient;
        tc.model.rho_gradient = rho_gradient;
        for step in 0..2 {
            tg.train_step(&x, &labels);
            tc.train_step(&x, &labels);
            gpu.check().unwrap();
            assert_eq!(gpu.download(&tg.model.ws.action), tc.model.ws.action, "{} step {step}: actions", est.name());
            for l in 1..=shape.hidden() {
                assert_eq!(gpu.download(&tg.model.ws.z[l]), tc.model.ws.z[l], "{} step {step}: samples of layer {l}", est.name());
            }
            for (i, (g, c)) in tg.grads.tensors().zip(tc.grads.tensors()).enumerate() {
                let d = normwise(&gpu.download(g), c);
                assert!(d <= 1e-5, "{} {:?} step {step} gradient tensor {i}: normwise difference {d}", est.name(), shape.conv);
            }
        }
    }
}

fn hnca_bin() -> Command {
    Command::cargo_bin("hnca").unwrap()
}

fn read_params(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Runs `hnca SUBCOMMAND --estimator EST --steps STEPS` on the small model (and `extra`) with
/// `--device cuda` (the emulated driver) and `--device cpu`; returns each run's first metrics
/// line and final parameters, cuda first.
fn cuda_and_cpu_runs(
    dir: &std::path::Path,
    subcommand: &str,
    est: &str,
    steps: &str,
    extra: &[&str],
) -> [(serde_json::Value, Vec<f32>); 2] {
    ["cuda", "cpu"].map(|device| {
        let metrics = dir.join(format!("{subcommand}-{est}-{}-{device}.jsonl", extra.len()));
        let params = dir.join(format!("{subcommand}-{est}-{}-{device}.f32", extra.len()));
        let out = hnca_bin()
            .env("LD_LIBRARY_PATH", fake_cuda::library_path())
            .args([subcommand, "--device", device, "--estimator", est, "--layers", "16,8", "--batch-size", "20", "--steps", steps])
            .args(extra)
            .args(["--test-every", "0", "--seed", "3", "--metrics"])
            .arg(&metrics)
            .arg("--save-params")
            .arg(&params)
            .assert()
            .success();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        if device == "cuda" {
            assert!(stderr.contains("on hnca emulated GPU"), "{stderr}");
        }
        let m: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&metrics).unwrap().lines().next().unwrap()).unwrap();
        (m, read_params(&params))
    })
}

#[test]
fn fifty_steps_on_device_cuda_agree_with_device_cpu_for_every_estimator() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for kind in EstimatorKind::ALL {
        let [(mg, pg), (mc, pc)] = &cuda_and_cpu_runs(dir.path(), "vae", kind.name(), "50", &[]);
        assert_eq!(mg["step"], 50);
        for field in ["train_elbo", "grad_var"] {
            let (g, c) = (mg[field].as_f64().unwrap(), mc[field].as_f64().unwrap());
            assert!((g - c).abs() <= 1e-4 * c.abs(), "{} {field}: cuda {g} vs cpu {c}", kind.name());
        }
        assert_eq!(pg.len(), pc.len());
        let d = normwise(pg, pc);
        assert!(d <= 1e-4, "{}: final parameters differ by {d} normwise", kind.name());
    }
}

#[test]
fn device_auto_picks_the_emulated_gpu_and_zero_devices_is_a_clean_message() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let base = ["vae", "--layers", "8", "--batch-size", "10", "--steps", "2", "--test-every", "0"];
    let out = hnca_bin().env("LD_LIBRARY_PATH", fake_cuda::library_path()).args(base).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("on hnca emulated GPU (sm_90)") && !stderr.contains("training on the CPU"), "{stderr}");

    let out = hnca_bin().env("LD_LIBRARY_PATH", fake_cuda::library_path()).env("HNCA_FAKE_CUDA_DEVICES", "0").args(base).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("hnca: no usable GPU (the CUDA driver reports no GPU); training on the CPU"), "{stderr}");

    let out = hnca_bin()
        .env("LD_LIBRARY_PATH", fake_cuda::library_path())
        .env("HNCA_FAKE_CUDA_DEVICES", "0")
        .args(base)
        .args(["--device", "cuda"])
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(stderr.trim(), "error: CUDA: the CUDA driver reports no GPU");
}

#[test]
fn bandit_on_device_cuda_agrees_with_device_cpu() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conv: &[&str] = &["--features", "conv", "--conv-channels", "3"];
    for (est, extra) in [("hnca", &[][..]), ("reinforce", &[][..]), ("hnca", conv), ("reinforce", conv)] {
        let [(mg, pg), (mc, pc)] = &cuda_and_cpu_runs(dir.path(), "bandit", est, "40", extra);
        assert_eq!(mg["step"], 40);
        // Identical actions give identical rewards (the GPU averages them in f32); the variances
        // agree to f32 rounding.
        let (ag, ac) = (mg["train_accuracy"].as_f64().unwrap(), mc["train_accuracy"].as_f64().unwrap());
        assert!((ag - ac).abs() <= 1e-6, "{est} train accuracy: cuda {ag} vs cpu {ac}");
        let (g, c) = (mg["grad_var"].as_f64().unwrap(), mc["grad_var"].as_f64().unwrap());
        assert!((g - c).abs() <= 1e-4 * c.abs(), "{est} grad_var: cuda {g} vs cpu {c}");
        assert_eq!(pg.len(), pc.len());
        let d = normwise(pg, pc);
        assert!(d <= 1e-4, "{est}: final parameters differ by {d} normwise");
    }
}

#[test]
fn eval_on_device_cuda_agrees_with_device_cpu() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("m.ck");
    hnca_bin()
        .args(["vae", "--device", "cpu", "--layers", "16,8", "--steps", "300", "--test-every", "0", "--save"])
        .arg(&ck)
        .assert()
        .success();
    let [g, c] = ["cuda", "cpu"].map(|device| {
        let out = hnca_bin()
            .env("LD_LIBRARY_PATH", fake_cuda::library_path())
            .args(["eval", "--device", device, "--k", "4", "--images", "120", "--json", "--checkpoint"])
            .arg(&ck)
            .assert()
            .success();
        serde_json::from_slice::<serde_json::Value>(&out.get_output().stdout).unwrap()
    });
    assert_eq!(g["images"], 120);
    // The same Philox samples on both; sums of f32 terms agree to rounding.
    for field in ["elbo", "iwae", "elbo_std_err", "iwae_std_err"] {
        let (x, y) = (g[field].as_f64().unwrap(), c[field].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-4 * y.abs(), "{field}: cuda {x} vs cpu {y}");
    }
}

/// The driver calls of one run of the real binary on the emulated driver, by function name
/// (HNCA_FAKE_CUDA_TRACE).
fn driver_calls(dir: &std::path::Path, name: &str, args: &[&str]) -> std::collections::BTreeMap<String, i64> {
    let trace = dir.join(format!("{name}.json"));
    hnca_bin().env("LD_LIBRARY_PATH", fake_cuda::library_path()).env("HNCA_FAKE_CUDA_TRACE", &trace).args(args).assert().success();
    serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap()
}

/// The driver calls of two runs, `args(steps)` at two step counts, by function name
/// (HNCA_FAKE_CUDA_TRACE).
struct Grown {
    calls: Vec<std::collections::BTreeMap<String, i64>>,
}

impl Grown {
    fn run(dir: &std::path::Path, name: &str, args: impl Fn(&str) -> Vec<String>, steps: [u64; 2]) -> Grown {
        let calls = steps
            .iter()
            .map(|steps| {
                let steps = steps.to_string();
                let a = args(&steps);
                driver_calls(dir, &format!("{name}-{steps}"), &a.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        Grown { calls }
    }

    /// How many more times the longer run called `f` (work that does not grow with the steps
    /// cancels out).
    fn by(&self, f: &str) -> i64 {
        self.calls[1].get(f).copied().unwrap_or(0) - self.calls[0].get(f).copied().unwrap_or(0)
    }
}

/// The contract of a GPU training step, from the driver calls of 100 and of 200 steps (both
/// within the first epoch, so the once-per-epoch work cancels out): per step, exactly one graph
/// launch; no copy to the device; no allocation or free; and copies to the host, waits and
/// kernel launches outside the graph only at the reads every 100 steps (the statistics, and
/// the counts of the scan for NaN and infinity). It fails if any of these grows with the steps.
#[test]
fn a_device_step_is_one_graph_launch_with_nothing_read_back() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runs: [(&str, &[&str]); 4] = [
        ("vae", &["vae", "--device", "cuda", "--layers", "8,5", "--batch-size", "20", "--test-every", "0", "--estimator", "hnca"]),
        // Three chains per layer, ∇F, and the coefficients' own Adam step: still one launch.
        (
            "vae-rodeo-k3",
            &[
                "vae",
                "--device",
                "cuda",
                "--layers",
                "8,5",
                "--batch-size",
                "20",
                "--test-every",
                "0",
                "--estimator",
                "rodeo",
                "--samples",
                "3",
            ],
        ),
        ("bandit", &["bandit", "--device", "cuda", "--layers", "8,5", "--batch-size", "20", "--test-every", "0"]),
        (
            "conv-bandit",
            &[
                "bandit",
                "--device",
                "cuda",
                "--features",
                "conv",
                "--conv-channels",
                "2",
                "--layers",
                "8",
                "--batch-size",
                "4",
                "--test-every",
                "0",
            ],
        ),
    ];
    for (name, args) in runs {
        let with_steps = |steps: &str| args.iter().copied().chain(["--steps", steps]).map(String::from).collect();
        let grown = Grown::run(dir.path(), name, with_steps, [100, 200]);
        let (per_100, calls) = (|f: &str| grown.by(f), &grown.calls);
        let reads = 100 / hnca::run::DEVICE_READ_EVERY as i64;
        assert_eq!(per_100("cuGraphLaunch"), 100, "{name}: one graph launch per step: {:?}", calls[1]);
        for f in ["cuMemcpyHtoDAsync_v2", "cuMemAlloc_v2", "cuMemFree_v2", "cuMemAllocAsync", "cuMemFreeAsync", "cuMemsetD8Async"] {
            assert_eq!(per_100(f), 0, "{name}: {f} grows with the steps");
        }
        // The statistics and the scan's counts, each read once per read.
        assert_eq!(per_100("cuMemcpyDtoHAsync_v2"), 2 * reads, "{name}: copies to the host");
        for f in ["cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize"] {
            assert!(per_100(f) <= 2 * reads, "{name}: {f} {} times in 100 steps", per_100(f));
        }
        // Only the scan for NaN and infinity launches outside the graph.
        assert!(per_100("cuLaunchKernel") <= reads, "{name}: {} kernel launches outside the graph in 100 steps", per_100("cuLaunchKernel"));
        assert_eq!(calls[0].get("cuStreamBeginCapture_v2"), Some(&1), "{name}: one capture");
        assert_eq!(calls[1].get("cuStreamBeginCapture_v2"), Some(&1), "{name}: still one capture");
    }
}

/// A batch of runs steps them all with the launches of one run's step: from the driver calls of
/// sweeps of 20 and 40 steps (each ends with a read and a scan for NaN, which uploads its table
/// once), per step one graph launch whose graph runs as many kernels for six runs (one
/// estimator, six seeds, trained as one batch) as for one, and nothing copied to the device or
/// allocated.
#[test]
fn a_batch_of_six_runs_steps_with_the_launches_of_one() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let per_20 = |seeds: &str| {
        // Each run its own directory: the longer sweep must not continue the shorter's runs.
        let args = |steps: &str| {
            let out = dir.path().join(format!("runs-{seeds}-{steps}"));
            let mut a: Vec<String> = ["sweep", "vae", "--device", "cuda", "--estimators", "hnca", "--seeds", seeds, "--layers", "8,5"]
                .map(String::from)
                .to_vec();
            a.extend(
                ["--batch-size", "20", "--test-every", "0", "--eval-k", "2", "--eval-images", "20", "--steps", steps].map(String::from),
            );
            a.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
            a
        };
        Grown::run(dir.path(), seeds, args, [20, 40])
    };
    let (one, six) = (per_20("0"), per_20("0-5"));
    for (name, c) in [("1 run", &one), ("6 runs", &six)] {
        assert_eq!(c.by("cuGraphLaunch"), 20, "{name}: one graph launch per step");
        for f in ["cuMemcpyHtoDAsync_v2", "cuMemAlloc_v2", "cuMemFree_v2", "cuStreamBeginCapture_v2"] {
            assert_eq!(c.by(f), 0, "{name}: {f} grows with the steps");
        }
    }
    let nodes = one.by("graph kernel node");
    eprintln!("kernels per step: {} for one run, {} for six", nodes / 20, six.by("graph kernel node") / 20);
    assert!(nodes >= 20 * 10, "a step of the VAE runs more than {} kernels", nodes / 20);
    assert_eq!(six.by("graph kernel node"), nodes, "six runs' step runs more kernels than one run's");
}

/// A run on the device saved mid-way and resumed ends with the checkpoint of a run that went
/// straight through, byte for byte (DisARM, and Double CV with its learned coefficients);
/// sample draws from it on the device.
#[test]
fn a_device_run_resumes_exactly() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for est in ["double-cv", "disarm"] {
        let base = ["vae", "--device", "cuda", "--layers", "8,5", "--batch-size", "20", "--test-every", "0", "--estimator", est, "--save"];
        let run = |ck: &std::path::Path, extra: &[&str]| {
            hnca_bin().env("LD_LIBRARY_PATH", fake_cuda::library_path()).args(base).arg(ck).args(extra).assert().success();
        };
        let (straight, resumed) = (dir.path().join("straight.ck"), dir.path().join("resumed.ck"));
        run(&straight, &["--steps", "60"]);
        run(&resumed, &["--steps", "25"]);
        run(&resumed, &["--steps", "60", "--resume", resumed.to_str().unwrap()]);
        assert_eq!(std::fs::read(&straight).unwrap(), std::fs::read(&resumed).unwrap(), "{est}: the resumed run's checkpoint differs");
    }
    let straight = dir.path().join("straight.ck");
    // Drawing from it on the device gives the CPU's digits (sampled bits: the same draws).
    let pngs = ["cuda", "cpu"].map(|device| {
        let out = dir.path().join(format!("{device}.png"));
        hnca_bin()
            .env("LD_LIBRARY_PATH", fake_cuda::library_path())
            .args(["sample", "--binary", "--rows", "2", "--cols", "3", "--device", device, "--checkpoint"])
            .arg(&straight)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        std::fs::read(out).unwrap()
    });
    assert_eq!(pngs[0], pngs[1], "sample on the device differs from the CPU's");
}

/// `hnca bench --device cuda` times the real loop and reports the driver work per step: one
/// graph launch, no copy to the device, no allocation.
#[test]
fn bench_on_the_device_reports_one_graph_launch_per_step() {
    if fake_cuda::open_or_skip().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // One run, and three runs as one batch (its kernels' batched twins).
    for runs in [1u64, 3] {
        let json = dir.path().join(format!("bench-{runs}.json"));
        hnca_bin()
            .env("LD_LIBRARY_PATH", fake_cuda::library_path())
            .args(["bench", "--device", "cuda", "--models", "6", "--estimators", "hnca,disarm", "--seconds", "0.01", "--batch-size", "8"])
            .args(["--runs", &runs.to_string(), "--json"])
            .arg(&json)
            .assert()
            .success();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            let calls = &row["driver_calls_per_step"];
            assert_eq!(calls["graph_launches"], 1.0, "{row}");
            assert_eq!(calls["copies_to_device"], 0.0, "{row}");
            assert_eq!(calls["allocations"], 0.0, "{row}");
            // The reads every 100 steps (one per run), and the final wait.
            assert!(calls["copies_to_host"].as_f64().unwrap() <= 0.03 * runs as f64, "{row}");
            let rate = row["steps_per_second"].as_f64().unwrap();
            let run_rate = row["run_steps_per_second"].as_f64().unwrap();
            assert!(rate > 0.0 && (run_rate - rate * runs as f64).abs() <= 1e-9 * run_rate, "{row}");
        }
    }
}
