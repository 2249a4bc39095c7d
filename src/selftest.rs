//! `hnca selftest`: every kernel on the real shapes of the default model against the CPU
//! backend, the gradients of one training step of every estimator (and of the nonlinear
//! bandit's, through its convolutions), then the GPU's step rate.

use crate::backend::{BernoulliOps, CreditOps, DenseOps};
use clap::Args;

use crate::backend::cpu::Cpu;
use crate::backend::cuda::CudaDevice;
use crate::backend::emu::emu_backend;
use crate::backend::kernels::KernelBackend;
use crate::backend::{credit_tables_len, Backend, SampleMode};
use crate::bandit::conv::conv_geoms;
use crate::bandit::{AgentShape, BanditTrainer, ESTIMATORS};
use crate::error::Error;
use crate::rng::{stream, RngKey};
use crate::vae::bench::{synthetic_split, time_training_loop};
use crate::vae::estimator::{Estimator, EstimatorKind};
use crate::vae::model::{Params, Shape};
use crate::vae::step::{compute_gradients, Draw, Workspace};
use crate::vae::trainer::Trainer;

/// Where the self-test runs the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SelftestDevice {
    /// The GPU (an error if there is none).
    Cuda,
    /// The CPU emulation of the kernels (slow; for machines without a GPU).
    Emu,
}

#[derive(Args, Debug, Clone)]
pub struct SelftestArgs {
    /// Where to run the kernels.
    #[arg(long, value_enum, default_value_t = SelftestDevice::Cuda)]
    pub device: SelftestDevice,

    /// Widths of the latent layers of the model checked and timed.
    #[arg(long, value_delimiter = ',', default_value = "200,200,200")]
    pub layers: Vec<usize>,

    /// Batch size of the model checked and timed.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,

    /// Training steps to time (0: skip the timing).
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
}

pub fn run(args: &SelftestArgs) -> Result<(), Error> {
    if args.layers.is_empty() || args.layers.iter().any(|&w| w == 0 || w > 4096) || args.batch_size == 0 {
        return Err(Error::Config(format!(
            "--layers needs 1 to 4096 units per layer and --batch-size at least 1, got {:?} and {}",
            args.layers, args.batch_size
        )));
    }
    let shape = Shape::new(784, &args.layers);
    let failures = match args.device {
        SelftestDevice::Cuda => {
            let d = CudaDevice::open().map_err(Error::Device)?;
            println!("device: {}; kernels from {}", d.description, d.kernels_from);
            let be = KernelBackend::new(d);
            selftest(&be, &shape, args.batch_size, args.steps, || be.device.synchronize())?
        }
        SelftestDevice::Emu => {
            println!("device: CPU emulation of the CUDA kernels");
            selftest(&emu_backend(), &shape, args.batch_size, args.steps, || {})?
        }
    };
    if failures > 0 {
        return Err(Error::Device(format!("{failures} self-test check(s) failed")));
    }
    println!("all checks passed");
    Ok(())
}

/// Deterministic values in [lo, hi) for the self-test's inputs.
fn values(n: usize, tag: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngKey::new(0x5e1f, 0, tag).fill_uniform(0, &mut v);
    v.iter_mut().for_each(|u| *u = lo + (hi - lo) * *u);
    v
}

fn bits(n: usize, tag: u32) -> Vec<f32> {
    values(n, tag, 0.0, 1.0).into_iter().map(|u| (u < 0.3) as u8 as f32).collect()
}

/// Largest |got - want| relative to the largest finite |want| (normwise); infinite when either
/// side holds a NaN or an infinity, so that no check passes on non-finite values.
fn normwise(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().chain(want).any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(1e-30f64, |m, &x| m.max(x.abs() as f64));
    got.iter().zip(want).fold(0.0f64, |m, (&g, &w)| m.max((g as f64 - w as f64).abs())) / scale
}

/// Runs every kernel on the model's real shapes against the CPU backend, prints the largest
/// differences, then times training steps. Returns the number of failed checks.
fn selftest<B: Backend>(be: &B, shape: &Shape, b: usize, steps: u64, sync: impl Fn()) -> Result<usize, Error> {
    let cpu = Cpu::new();
    let mut failures = 0;
    let mut check = |what: &str, diff: f64, limit: f64| {
        let ok = diff <= limit;
        failures += !ok as usize;
        println!("{:<44} {:>12.3e}  (limit {limit:.0e})  {}", what, diff, if ok { "ok" } else { "FAIL" });
    };
    let both = |host: &[f32]| (be.upload(host), host.to_vec());
    let (n0, n1) = (shape.width(0), shape.width(1));
    let n2 = if shape.depth() > 1 { shape.width(2) } else { n1 };
    println!("{:<44} {:>12}", "check (shapes: b, in, out)", "max diff");

    // Forward GEMM and weight gradient, layer 1.
    let (x, xc) = both(&bits(b * n0, 1));
    let (w, wc) = both(&values(n0 * n1, 2, -0.1, 0.1));
    let (bias, biasc) = both(&values(n1, 3, -1.0, 1.0));
    let (mut out, mut outc) = (be.zeros(b * n1), vec![0.0; b * n1]);
    be.matmul_forward(&mut out, &x, &w, &bias, b, n0, n1);
    cpu.matmul_forward(&mut outc, &xc, &wc, &biasc, b, n0, n1);
    check(&format!("matmul_forward ({b}, {n0}, {n1})"), normwise(&be.download(&out), &outc), 1e-5);
    let (dout, doutc) = both(&values(b * n1, 4, -1.0, 1.0));
    let (mut dw, mut dwc) = (be.zeros(n0 * n1), vec![0.0; n0 * n1]);
    be.matmul_backward_weight(&mut dw, &x, &dout, b, n0, n1);
    cpu.matmul_backward_weight(&mut dwc, &xc, &doutc, b, n0, n1);
    check(&format!("matmul_backward_weight ({b}, {n0}, {n1})"), normwise(&be.download(&dw), &dwc), 1e-5);

    // Sampling: the same bits for the same key.
    let key = RngKey::new(12345, 678, stream::encoder(1));
    let sample_logits = be.upload(&outc);
    for mode in [SampleMode::Standard, SampleMode::Antithetic] {
        let (mut z, mut zc) = (be.zeros(b * n1), vec![0.0; b * n1]);
        let (mut a, mut ac) = (be.zeros(b * n1), vec![0.0; b * n1]);
        let anti = mode == SampleMode::Antithetic;
        be.bernoulli_sample(&mut z, anti.then_some(&mut a), &sample_logits, key, None, mode, b, n1);
        cpu.bernoulli_sample(&mut zc, anti.then_some(&mut ac), &outc, key, None, mode, b, n1);
        let mismatches = be.download(&z).iter().zip(&zc).filter(|(p, q)| p != q).count()
            + be.download(&a).iter().zip(&ac).filter(|(p, q)| p != q).count();
        check(&format!("bernoulli_sample {mode:?}: differing bits ({b}, {n1})"), mismatches as f64, 0.0);
    }

    // Logits clipped to the sampler's probabilities (the importance-weighted bound's proposal).
    let wide = values(b * n1, 13, -30.0, 30.0);
    let (mut clip, mut clipc) = (be.zeros(b * n1), vec![0.0; b * n1]);
    be.clip_logits(&mut clip, &be.upload(&wide), b * n1);
    cpu.clip_logits(&mut clipc, &wide, b * n1);
    check(&format!("clip_logits ({b}, {n1})"), normwise(&be.download(&clip), &clipc), 0.0);

    // Row terms and the credit pass, with the decoder (784 children) and encoder children.
    let (t, tc) = (5, 5);
    let (logits, logitsc) = both(&values(b * n0, 5, -4.0, 4.0));
    let (mut terms, mut termsc) = (be.zeros(b * t), vec![0.0; b * tc]);
    be.log_prob_rows(&mut terms, t, 0, &logits, false, &x, None, b, n0);
    cpu.log_prob_rows(&mut termsc, tc, 0, &logitsc, false, &xc, None, b, n0);
    be.entropy_rows(&mut terms, t, 1, &logits, None, b, n0);
    cpu.entropy_rows(&mut termsc, tc, 1, &logitsc, None, b, n0);
    check(&format!("log_prob_rows, entropy_rows ({b}, {n0})"), normwise(&be.download(&terms), &termsc), 1e-5);
    let (parent, parentc) = both(&bits(b * n1, 6));
    let (wd, wdc) = both(&values(n1 * n0, 7, -0.2, 0.2));
    let (mut flip, mut flipc) = (be.zeros(b * n1), vec![0.0; b * n1]);
    let (mut tables, mut tablesc) = (be.zeros(credit_tables_len(n1, n0.max(n2))), vec![0.0; credit_tables_len(n1, n0.max(n2))]);
    be.credit_pass(&mut flip, None, &parent, &wd, &mut tables, &logits, &x, b, n1, n0);
    cpu.credit_pass(&mut flipc, None, &parentc, &wdc, &mut tablesc, &logitsc, &xc, b, n1, n0);
    check(&format!("credit_pass decoder child ({b}, {n1}, {n0})"), normwise(&be.download(&flip), &flipc), 1e-5);
    let (we, wec) = both(&values(n1 * n2, 8, -0.3, 0.3));
    let (cl, clc) = both(&values(b * n2, 9, -3.0, 3.0));
    let (child, childc) = both(&bits(b * n2, 10));
    let (mut ent, mut entc) = (be.zeros(b * n1), vec![0.0; b * n1]);
    be.credit_pass(&mut flip, Some(&mut ent), &parent, &we, &mut tables, &cl, &child, b, n1, n2);
    cpu.credit_pass(&mut flipc, Some(&mut entc), &parentc, &wec, &mut tablesc, &clc, &childc, b, n1, n2);
    check(&format!("credit_pass encoder child, log-probs ({b}, {n1}, {n2})"), normwise(&be.download(&flip), &flipc), 1e-5);
    check(&format!("credit_pass encoder child, entropies ({b}, {n1}, {n2})"), normwise(&be.download(&ent), &entc), 1e-5);

    // Whole steps: every gradient of every estimator.
    let host = Params::init(shape, 3);
    let x_host = bits(b * n0, 11);
    for kind in EstimatorKind::ALL {
        let est = Estimator::new(kind);
        let worst_be = step_gradients(be, shape, &est, &host, &x_host, b);
        let worst_cpu = step_gradients(&cpu, shape, &est, &host, &x_host, b);
        let worst = worst_be.iter().zip(&worst_cpu).map(|(g, c)| normwise(g, c)).fold(0.0, f64::max);
        check(&format!("training step gradients, {}", kind.name()), worst, 1e-4);
    }
    // The nonlinear bandit's default network (two 3x3 convolutions of 16 channels on 28x28
    // images, 200 Bernoulli units, 10 actions): every gradient of one step of every estimator.
    let geoms = conv_geoms(28, 28, 2, 16).map_err(Error::Config)?;
    let conv_shape = AgentShape::with_conv(geoms, &[200], 10);
    let (images, labels) = (bits(b * conv_shape.pixels(), 14), values(b, 15, 0.0, 10.0).iter().map(|v| v.floor()).collect::<Vec<_>>());
    for (est, _) in ESTIMATORS {
        let on_be = bandit_step_gradients(be, &conv_shape, est, &images, &labels);
        let on_cpu = bandit_step_gradients(&cpu, &conv_shape, est, &images, &labels);
        let worst = on_be.iter().zip(&on_cpu).map(|(g, c)| normwise(g, c)).fold(0.0, f64::max);
        check(&format!("conv bandit step gradients, {}", est.name()), worst, 1e-4);
    }
    be.check().map_err(Error::Device)?;

    if steps > 0 {
        // The real training loop: the batch gathered and binarized on the device from images
        // uploaded once, the step replayed as one recorded graph, statistics read every 100 steps.
        let mut trainer = Trainer::new(be, shape.clone(), Estimator::new(EstimatorKind::Hnca), b, 1e-4, 0);
        let split = synthetic_split(b * 120, n0);
        let (done, secs) = time_training_loop(&mut trainer, &split, steps, 0.0, &sync, || {});
        be.check().map_err(Error::Device)?;
        println!("timing: {done} hnca training steps of {:?} at batch {b}: {secs:.3} s, {:.1} steps/s", shape.sizes, done as f64 / secs);
    }
    Ok(failures)
}

/// Every gradient tensor of one bandit step of `est` on `images` (b, pixels), on the host.
fn bandit_step_gradients<B: Backend>(be: &B, shape: &AgentShape, est: EstimatorKind, images: &[f32], labels: &[f32]) -> Vec<Vec<f32>> {
    let mut trainer = BanditTrainer::new(be, shape.clone(), est, labels.len(), 1e-4, 3);
    trainer.train_step(images, labels);
    trainer.grads.tensors().map(|t| be.download(t)).collect()
}

/// Every gradient tensor of one step of `est`, on the host.
fn step_gradients<B: Backend>(be: &B, shape: &Shape, est: &Estimator, host: &Params<Vec<f32>>, x: &[f32], b: usize) -> Vec<Vec<f32>> {
    let params = host.to_backend(be);
    let mut grads = host.map(|t| be.zeros(t.len()));
    let mut ws = Workspace::new(be, shape, est, b);
    be.write(&mut ws.main.z[0], x);
    let baselines = be.upload(&vec![0.0; shape.depth()]);
    compute_gradients(be, &params, &mut ws, est, &baselines, Draw::at(1, 1, false), &mut grads);
    grads.tensors().into_iter().map(|t| be.download(t)).collect()
}
