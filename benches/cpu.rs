//! Criterion microbenchmarks of the CPU backend's hot operations on the default VAE's shapes
//! (batch 50, 784-200-200-200): the fused credit pass, the Bernoulli sampler, the GEMMs, and a
//! whole training step. `cargo bench --bench cpu [-- FILTER]`. For whole-step numbers of every
//! estimator and model, with the cost model, use `hnca bench`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hnca::backend::cpu::Cpu;
use hnca::backend::SampleMode;
use hnca::backend::{BernoulliOps, CreditOps, DenseOps};
use hnca::rng::RngKey;
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::Shape;
use hnca::vae::trainer::Trainer;

const B: usize = 50;

/// Deterministic bits that are on with probability `p_on`.
fn bits(n: usize, p_on: f32, stream: u32) -> Vec<f32> {
    let key = RngKey::new(7, 0, stream);
    (0..n as u32).map(|i| (key.uniform(i) < p_on) as u8 as f32).collect()
}

/// Deterministic values spread over [-span, span].
fn logits(n: usize, span: f32, stream: u32) -> Vec<f32> {
    let key = RngKey::new(7, 1, stream);
    (0..n as u32).map(|i| span * (2.0 * key.uniform(i) - 1.0)).collect()
}

fn credit_pass(c: &mut Criterion) {
    let be = Cpu::new();
    let mut g = c.benchmark_group("credit_pass");
    // (parents, children, with entropy): layer 1 against the 784 pixels; a latent layer against
    // the encoder layer above it, which also needs the entropies.
    for (p, ch, ent) in [(200, 784, false), (200, 200, true)] {
        let (parent, child) = (bits(B * p, 0.5, 1), bits(B * ch, 0.13, 2));
        let (w, child_logits) = (logits(p * ch, 0.3, 3), logits(B * ch, 6.0, 4));
        let (mut flip_lp, mut flip_ent) = (vec![0.0; B * p], vec![0.0; B * p]);
        let mut tables = vec![0.0; hnca::backend::credit_tables_len(p, ch)];
        g.throughput(Throughput::Elements((B * p * ch) as u64));
        g.bench_function(format!("{B}x{p}x{ch}{}", if ent { "+entropy" } else { "" }), |bench| {
            bench.iter(|| {
                let e = if ent { Some(&mut flip_ent) } else { None };
                be.credit_pass(&mut flip_lp, e, &parent, &w, &mut tables, &child_logits, &child, B, p, ch)
            })
        });
    }
    g.finish();
}

fn sampler(c: &mut Criterion) {
    let be = Cpu::new();
    let n = 200;
    let a = logits(B * n, 4.0, 5);
    let (mut z, mut anti) = (vec![0.0; B * n], vec![0.0; B * n]);
    let key = RngKey::new(1, 2, 3);
    let mut g = c.benchmark_group("bernoulli_sample");
    g.throughput(Throughput::Elements((B * n) as u64));
    g.bench_function(format!("{B}x{n}"), |bench| {
        bench.iter(|| be.bernoulli_sample(&mut z, None, &a, key, None, SampleMode::Standard, B, n))
    });
    g.bench_function(format!("{B}x{n}/antithetic"), |bench| {
        bench.iter(|| be.bernoulli_sample(&mut z, Some(&mut anti), &a, key, None, SampleMode::Antithetic, B, n))
    });
    g.finish();
}

fn gemm(c: &mut Criterion) {
    let be = Cpu::new();
    let mut g = c.benchmark_group("gemm");
    // (k, n): encoder layer 1, the decoder to the pixels, a latent layer.
    for (k, n) in [(784, 200), (200, 784), (200, 200)] {
        let (inp, w, bias) = (bits(B * k, 0.3, 6), logits(k * n, 0.1, 7), logits(n, 0.1, 8));
        let (mut out, mut dw, dout) = (vec![0.0; B * n], vec![0.0; k * n], logits(B * n, 1.0, 9));
        g.throughput(Throughput::Elements((B * k * n) as u64));
        g.bench_function(format!("forward/{B}x{k}x{n}"), |bench| bench.iter(|| be.matmul_forward(&mut out, &inp, &w, &bias, B, k, n)));
        g.bench_function(format!("backward_weight/{B}x{k}x{n}"), |bench| {
            bench.iter(|| be.matmul_backward_weight(&mut dw, &inp, &dout, B, k, n))
        });
    }
    g.finish();
}

fn train_step(c: &mut Criterion) {
    let be = Cpu::new();
    let x = bits(B * 784, 0.13, 10);
    let mut g = c.benchmark_group("train_step");
    g.throughput(Throughput::Elements(B as u64));
    for kind in [EstimatorKind::Hnca, EstimatorKind::Reinforce] {
        let mut t = Trainer::new(&be, Shape::new(784, &[200, 200, 200]), Estimator::new(kind), B, 1e-4, 0);
        g.bench_function(format!("{}/784-200-200-200", kind.name()), |bench| bench.iter(|| t.train_step(&x)));
    }
    g.finish();
}

criterion_group!(benches, credit_pass, sampler, gemm, train_step);
criterion_main!(benches);
