//! `hnca bench`: training speed, with what explains it.
//!
//! On the CPU (the default), for each model and estimator it times training steps on MNIST-like
//! random bits and reports steps/s, examples/s, the credit pass's edges per step
//! (row, parent, child triples, counted from the shapes), the nanoseconds it spends per edge per core,
//! the credit pass's share of the step, and the process's peak resident memory. On the GPU
//! (`--device cuda`) it times the real training loop (the batch gathered and binarized on the
//! device, the step replayed as one CUDA graph, the statistics read every 100 steps) and
//! reports the driver work per step.

use crate::backend::MemoryOps;
use std::path::PathBuf;
use std::time::Instant;

use super::estimator::{AltTerms, Combine, Estimator, EstimatorKind};
use super::model::Shape;
use super::trainer::Trainer;
use crate::backend::cpu::{take_credit_nanos, Cpu, Simd};
use crate::backend::cuda::CudaDevice;
use crate::backend::kernels::KernelBackend;
use crate::backend::runs::Runs;
use crate::backend::Backend;
use crate::data::Split;
use crate::error::Error;
use crate::nn::TrainData;
use crate::rng::RngKey;
use crate::run::files::write_atomically;
use crate::run::read_every;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Models to time, each a comma-separated list of latent widths; separate models with ';'.
    #[arg(long, default_value = "200;200,200,200;1000,1000,1000")]
    pub models: String,

    /// Estimators to time, as the metrics name them: a name, HNCA's flags (+all-child,
    /// +full-reward), and -kK for K samples per layer, e.g. `disarm,loo,arms-k4,hnca-k2`
    /// [default: every estimator at its default sample count].
    #[arg(long, value_delimiter = ',', value_name = "ESTIMATOR")]
    pub estimators: Vec<String>,

    /// Minibatch size.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Time each configuration for about this many seconds (at least 3 steps).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,

    /// Worker threads [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Where to time: the CPU backend, or the GPU (an error without one).
    #[arg(long, value_enum, default_value_t = BenchDevice::Cpu)]
    pub device: BenchDevice,

    /// Time R runs (seeds 0 to R-1) trained as one batch, as `hnca sweep` batches an
    /// estimator's seeds: a step steps them all, and run-steps/s is R times steps/s.
    #[arg(long, default_value_t = 1, value_name = "R", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub runs: u64,
}

/// Where `hnca bench` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchDevice {
    /// The CPU backend, with the credit pass's cost model.
    Cpu,
    /// The GPU, with the driver work per step.
    Cuda,
}

/// Images of MNIST's size whose pixels are on about as often as binarized MNIST's (13%), with
/// labels: the training data of the benchmarks and the self-test, which need no data files.
pub fn synthetic_split(images: usize, n0: usize) -> Split {
    let key = RngKey::new(1, 0, 0xbe4c);
    let pixels: Vec<u8> = (0..(images * n0) as u32).map(|i| if key.uniform(i) < 0.13 { 255 } else { 0 }).collect();
    Split { images: pixels, labels: (0..images).map(|i| (i % 10) as u8).collect(), n: images, rows: 1, cols: n0 }
}

/// Times the real training loop of `trainer` on `split`: the step on the device's copy of the
/// data (gathered, binarized, and on a GPU replayed as one graph), a new epoch when the data
/// runs out, the statistics read every [`read_every`] steps. Runs at least `min_steps` steps
/// and `seconds` seconds after two warm-up steps (the direct one, and the recorded one);
/// `sync` waits for the device, `started` is called when the timed steps begin. Returns
/// (steps, seconds).
pub fn time_training_loop<B: Backend>(
    trainer: &mut Trainer<'_, B>,
    split: &Split,
    min_steps: u64,
    seconds: f64,
    sync: impl Fn(),
    mut started: impl FnMut(),
) -> (u64, f64) {
    let be = trainer.be;
    let mut data = TrainData::new(be, split);
    let per_epoch = (split.n / trainer.model.ws.b) as u64;
    let order: Vec<u32> = (0..split.n as u32).collect();
    let every = read_every(be);
    let step = |trainer: &mut Trainer<'_, B>, data: &mut TrainData<B>| {
        if trainer.step.is_multiple_of(per_epoch) {
            trainer.start_epoch(data, trainer.step / per_epoch + 1, &order, 0);
        }
        trainer.train_step_on(data);
        if trainer.step.is_multiple_of(every) {
            trainer.progress(trainer.step.is_multiple_of(100));
        }
    };
    for _ in 0..2 {
        step(trainer, &mut data);
    }
    // A first read with the scan, so that the timed steps find its constants uploaded.
    trainer.progress(true);
    sync();
    started();
    let start = Instant::now();
    let mut steps = 0u64;
    while steps < min_steps || start.elapsed().as_secs_f64() < seconds {
        step(trainer, &mut data);
        steps += 1;
    }
    sync();
    (steps, start.elapsed().as_secs_f64())
}

/// What one step of `est` costs, counted from the shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepCost {
    /// Edges of the credit pass: (row, parent, child) triples, each one flip's effect on one child.
    pub credit_edges: u64,
    /// Exponentials and logarithms the credit pass takes: e^{±W} once per weight, one exponential
    /// per child per row, one logarithm per parent per lane per row (two with entropies).
    pub credit_transcendentals: u64,
    /// Log-sigmoid evaluations outside the credit pass (the chains' log-likelihoods and entropies).
    pub other_evaluations: u64,
}

/// The cost of one step of `est` on `shape` at batch `b`.
pub fn step_cost(shape: &Shape, est: &Estimator, b: usize) -> StepCost {
    let depth = shape.depth();
    let n = |m: usize| shape.width(m) as u64;
    let b = b as u64;
    let lanes = crate::backend::consts::CREDIT_LANES as u64;
    // Main chain: encoder entropies, decoder log-likelihoods, prior.
    let main: u64 = (1..=depth).map(|m| b * n(m) + b * n(m - 1)).sum::<u64>() + b * n(depth);
    let mut cost = StepCost { credit_edges: 0, credit_transcendentals: 0, other_evaluations: main };
    let plan = est.plan();
    if matches!(plan.combine, Combine::Hnca | Combine::HncaK) {
        let chains = est.samples as u64;
        for l in 1..=depth {
            // Layer l's parents against its children below (the decoder's weights) and, below
            // the top, above (the encoder's, where the flip also changes the entropy).
            let mut pass = |children: u64, entropy: bool| {
                cost.credit_edges += chains * b * n(l) * children;
                let logs = if entropy { 2 } else { 1 };
                cost.credit_transcendentals += chains * (2 * n(l) * children + b * children + logs * lanes * b * n(l));
            };
            pass(n(l - 1), false);
            if l < depth {
                pass(n(l + 1), true);
            }
            cost.other_evaluations += chains * 2 * b * n(l); // own generative term at both values
        }
    }
    // Each alternative chain's terms: two evaluations per element where they are differences.
    let per_element = if plan.alt_terms == AltTerms::Differences { 2 } else { 1 };
    for l in 1..=depth {
        let mut chain = per_element * (b * n(l - 1) + b * n(depth));
        for m in (l + 1)..=depth {
            chain += per_element * (b * n(m) + b * n(m - 1));
        }
        cost.other_evaluations += plan.alternatives as u64 * chain;
    }
    cost
}

/// Peak resident memory of the process since the last reset, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn run(args: &BenchArgs) -> Result<(), Error> {
    if args.batch_size == 0 || !(args.seconds > 0.0 && args.seconds.is_finite()) || args.threads == Some(0) {
        return Err(Error::Config("--batch-size, --seconds and --threads must be positive".into()));
    }
    let models: Vec<Vec<usize>> = args
        .models
        .split(';')
        .map(|m| m.split(',').map(|w| w.trim().parse::<usize>().ok().filter(|&w| w > 0 && w <= 4096)).collect::<Option<Vec<_>>>())
        .collect::<Option<_>>()
        .ok_or_else(|| Error::Config(format!("--models must be ';'-separated lists of widths 1 to 4096, got {:?}", args.models)))?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| Error::Config(format!("--threads: {e}")))?;
    }
    let estimators: Vec<Estimator> = if args.estimators.is_empty() {
        EstimatorKind::ALL.into_iter().map(Estimator::new).collect()
    } else {
        args.estimators
            .iter()
            .map(|e| Estimator::parse(e.trim()))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Config(format!("--estimators: {e}")))?
    };
    if args.device == BenchDevice::Cuda {
        return run_on_gpu(args, &models, &estimators);
    }
    let threads = rayon::current_num_threads();
    let be = Cpu::new();
    let b = args.batch_size;
    println!("CPU backend, {threads} threads, credit pass compiled for {:?}, batch {b}{}", Simd::selected(), runs_note(args.runs));
    println!(
        "{:<16} {:<13} {:>9} {:>11} {:>6} {:>12} {:>13} {:>8} {:>9}",
        "model", "estimator", "steps/s", "examples/s", "evals", "edges/step", "ns/edge/core", "credit", "peak MB"
    );
    let mut rows = Vec::new();
    for latent in &models {
        let shape = Shape::new(784, latent);
        // About 13% of binarized MNIST pixels are on.
        let key = RngKey::new(1, 0, 0xbe4c);
        let x: Vec<f32> = (0..(b * 784) as u32).map(|i| (key.uniform(i) < 0.13) as u8 as f32).collect();
        for &est in &estimators {
            reset_peak_rss();
            let (steps, secs) = if args.runs == 1 {
                time_steps(&be, &shape, est, b, &x, args.seconds)
            } else {
                time_steps(&Runs::new(&be, (0..args.runs).collect()), &shape, est, b, &x, args.seconds)
            };
            let credit_secs = take_credit_nanos() as f64 * 1e-9;
            let cost = step_cost(&shape, &est, b);
            let rate = steps as f64 / secs;
            let run_rate = rate * args.runs as f64;
            // The credit pass's time is summed over the batch's runs.
            let edges = cost.credit_edges * args.runs;
            // A batch's runs time their credit passes at once, on different threads: the pass's
            // wall time is then not its share of the step.
            let timed = edges > 0 && args.runs == 1;
            let ns_per_edge = timed.then(|| credit_secs * 1e9 * threads as f64 / (edges as f64 * steps as f64));
            let credit_share = (args.runs == 1).then(|| credit_secs / secs);
            let peak_mb = peak_rss().map(|p| p as f64 / 1048576.0);
            let model = latent.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
            let evals = est.evaluations(latent.len());
            println!(
                "{:<16} {:<13} {:>9.1} {:>11.0} {:>6} {:>11.1}M {:>13} {:>8} {:>9}",
                model,
                est.label(),
                rate,
                run_rate * b as f64,
                evals,
                edges as f64 / 1e6,
                ns_per_edge.map_or("-".into(), |v| format!("{v:.3}")),
                credit_share.map_or("-".into(), |c| format!("{:.0}%", 100.0 * c)),
                peak_mb.map_or("-".into(), |v| format!("{v:.0}")),
            );
            rows.push(serde_json::json!({
                "model": latent, "estimator": est.label(), "samples": est.samples, "evaluations_per_step": evals,
                "batch_size": b, "threads": threads,
                "simd": format!("{:?}", Simd::selected()), "steps": steps, "seconds": secs,
                "runs": args.runs, "steps_per_second": rate, "run_steps_per_second": run_rate, "examples_per_second": run_rate * b as f64,
                "credit_edges_per_step": edges, "credit_transcendentals_per_step": cost.credit_transcendentals,
                "other_log_sigmoid_evaluations_per_step": cost.other_evaluations,
                "credit_ns_per_edge_per_core": ns_per_edge, "credit_pass_share": credit_share,
                "peak_rss_bytes": peak_mb.map(|m| (m * 1048576.0) as u64),
            }));
        }
    }
    if let Some(path) = &args.json {
        write_atomically(path, serde_json::to_string_pretty(&rows).expect("JSON values serialise").as_bytes())?;
    }
    Ok(())
}

/// Times `est`'s step on `be` (a CPU backend, or a batch of runs on one) with the batch x given
/// by the host, on a thread of the pool as training runs: (steps, seconds) after one warm-up step.
fn time_steps<B: Backend + Sync>(be: &B, shape: &Shape, est: Estimator, b: usize, x: &[f32], seconds: f64) -> (u64, f64) {
    let mut trainer = Trainer::new(be, shape.clone(), est, b, 1e-4, 0);
    Cpu::on_pool(|| {
        trainer.train_step(x);
        take_credit_nanos();
        let start = Instant::now();
        let mut steps = 0u64;
        while steps < 3 || start.elapsed().as_secs_f64() < seconds {
            trainer.train_step(x);
            steps += 1;
        }
        (steps, start.elapsed().as_secs_f64())
    })
}

/// The header's words for `--runs`.
fn runs_note(runs: u64) -> String {
    if runs == 1 {
        String::new()
    } else {
        format!("; {runs} runs as one batch (steps/s of the batch; examples/s of all its runs)")
    }
}

/// `hnca bench --device cuda`: steps/s of the real training loop on the GPU, and the driver
/// work per step (counted by the device, so on any driver).
fn run_on_gpu(args: &BenchArgs, models: &[Vec<usize>], estimators: &[Estimator]) -> Result<(), Error> {
    let device = CudaDevice::open().map_err(Error::Device)?;
    println!("GPU: {}; kernels from {}; batch {}{}", device.description, device.kernels_from, args.batch_size, runs_note(args.runs));
    let be = KernelBackend::new(device);
    let batch = Runs::new(&be, (0..args.runs).collect());
    let b = args.batch_size;
    let split = synthetic_split(b * 120, 784);
    println!(
        "{:<16} {:<13} {:>9} {:>11}   per step: {:>6} {:>8} {:>5} {:>5} {:>5} {:>5} {:>6}",
        "model", "estimator", "steps/s", "examples/s", "graphs", "kernels", "blas", "h2d", "d2h", "syncs", "allocs"
    );
    let mut rows = Vec::new();
    for latent in models {
        let shape = Shape::new(784, latent);
        for &est in estimators {
            let before = std::cell::Cell::new(be.device.calls());
            let (sync, started) = (|| be.device.synchronize(), || before.set(be.device.calls()));
            let (steps, secs) = if args.runs == 1 {
                time_training_loop(&mut Trainer::new(&be, shape.clone(), est, b, 1e-4, 0), &split, 100, args.seconds, sync, started)
            } else {
                time_training_loop(&mut Trainer::new(&batch, shape.clone(), est, b, 1e-4, 0), &split, 100, args.seconds, sync, started)
            };
            be.check().map_err(Error::Device)?;
            // The driver work of the timed steps alone (the final wait included).
            let after = be.device.calls();
            let per_step: Vec<(&str, f64)> = after
                .named()
                .iter()
                .zip(before.get().named())
                .map(|(&(name, a), (_, b0))| (name, (a - b0) as f64 / steps as f64))
                .collect();
            let rate = steps as f64 / secs;
            let run_rate = rate * args.runs as f64;
            let model = latent.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
            let get = |n: &str| per_step.iter().find(|(k, _)| *k == n).map_or(0.0, |(_, v)| *v);
            println!(
                "{:<16} {:<13} {:>9.1} {:>11.0}   per step: {:>6.2} {:>8.2} {:>5.2} {:>5.2} {:>5.2} {:>5.2} {:>6.2}",
                model,
                est.label(),
                rate,
                run_rate * b as f64,
                get("graph_launches"),
                get("kernel_launches"),
                get("blas_calls"),
                get("copies_to_device"),
                get("copies_to_host"),
                get("synchronisations"),
                get("allocations"),
            );
            let calls: serde_json::Map<String, serde_json::Value> = per_step.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
            rows.push(serde_json::json!({
                "device": be.device.description, "model": latent, "estimator": est.label(), "samples": est.samples, "batch_size": b, "steps": steps,
                "seconds": secs, "runs": args.runs, "steps_per_second": rate, "run_steps_per_second": run_rate,
                "examples_per_second": run_rate * b as f64, "driver_calls_per_step": calls,
            }));
        }
    }
    if let Some(path) = &args.json {
        write_atomically(path, serde_json::to_string_pretty(&rows).expect("JSON values serialise").as_bytes())?;
    }
    Ok(())
}
