//! Training steps per second of the default VAE (784-200-200-200, batch 50) on the CPU backend,
//! for every estimator, on MNIST-like random bits. Run with `cargo bench --bench step`;
//! `-- hnca loo` restricts it to the named estimators. Compare ratios within one run only.

use std::time::Instant;

use hnca::backend::cpu::Cpu;
use hnca::estimator::{Estimator, EstimatorKind};
use hnca::model::Shape;
use hnca::rng::RngKey;
use hnca::train::Trainer;

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let be = Cpu::new();
    let shape = Shape::new(784, &[200, 200, 200]);
    let batch = 50;
    // About 13% of binarized MNIST pixels are on.
    let key = RngKey::new(1, 0, 0xbe4c);
    let x: Vec<f32> = (0..(batch * 784) as u32).map(|i| (key.uniform(i) < 0.13) as u8 as f32).collect();
    let mut baseline_rate = None;
    println!("{:<14} {:>10} {:>12}", "estimator", "steps/s", "vs hnca");
    for kind in EstimatorKind::ALL {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == kind.name()) {
            continue;
        }
        let mut t = Trainer::new(&be, shape.clone(), Estimator::new(kind), batch, 1e-4, 0);
        for _ in 0..3 {
            t.train_step(&x);
        }
        let steps = 30;
        let start = Instant::now();
        for _ in 0..steps {
            t.train_step(&x);
        }
        let rate = steps as f64 / start.elapsed().as_secs_f64();
        let base = *baseline_rate.get_or_insert(rate);
        println!("{:<14} {:>10.2} {:>11.2}x", kind.name(), rate, rate / base);
    }
}
