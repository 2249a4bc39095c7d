//! The CPU backend's fast paths: the credit pass against f64, and runs that do not depend on the
//! thread count or the instruction set the hot loops were compiled for.

use assert_cmd::Command;
use hnca::backend::cpu::Cpu;
use hnca::backend::Backend;
use hnca::rng::RngKey;

fn log_sigmoid64(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

fn entropy64(x: f64) -> f64 {
    let p = 1.0 / (1.0 + (-x).exp());
    -(p * log_sigmoid64(x) + (1.0 - p) * log_sigmoid64(-x))
}

/// Every evaluation in the credit pass is within 1e-6 relative of f64 over the logits training
/// meets (|logit| up to 40 here): each output, a sum of per-child changes, is within 1e-6 of the
/// magnitudes of the terms it sums (plus the f32 rounding of the sum itself).
#[test]
fn credit_pass_matches_f64_to_1e6_of_its_terms() {
    // Ragged sizes (c not a multiple of the 8 lanes or of the 256-element chunk) and enough work
    // to take the multithreaded path.
    let (b, p, c) = (6, 37, 301);
    let key = RngKey::new(11, 0, 0);
    let u = |i: usize, k: u32| key.uniform(k.wrapping_mul(1 << 20).wrapping_add(i as u32));
    let parent: Vec<f32> = (0..b * p).map(|i| (u(i, 1) < 0.5) as u8 as f32).collect();
    let child: Vec<f32> = (0..b * c).map(|i| (u(i, 2) < 0.3) as u8 as f32).collect();
    let w: Vec<f32> = (0..p * c).map(|i| 8.0 * (2.0 * u(i, 3) - 1.0)).collect();
    let child_logits: Vec<f32> = (0..b * c).map(|i| 32.0 * (2.0 * u(i, 4) - 1.0)).collect();
    let (mut flip_lp, mut flip_ent) = (vec![0.0; b * p], vec![0.0; b * p]);
    Cpu::new().credit_pass(&mut flip_lp, Some(&mut flip_ent), &parent, &w, &child_logits, &child, b, p, c);
    let mut no_ent = vec![0.0; b * p];
    Cpu::new().credit_pass(&mut no_ent, None, &parent, &w, &child_logits, &child, b, p, c);
    assert_eq!(no_ent, flip_lp, "the pass without entropies computes the same log-likelihood changes");
    let mut worst = 0.0f64;
    for r in 0..b {
        for i in 0..p {
            let (mut lp, mut lp_scale, mut ent, mut ent_scale) = (0.0, 0.0, 0.0, 0.0);
            for j in 0..c {
                let s = 2.0 * child[r * c + j] as f64 - 1.0;
                let a = child_logits[r * c + j] as f64;
                let flipped = a + (1.0 - 2.0 * parent[r * p + i] as f64) * w[i * c + j] as f64;
                let (l1, l0) = (log_sigmoid64(s * flipped), log_sigmoid64(s * a));
                let (e1, e0) = (entropy64(flipped), entropy64(a));
                lp += l1 - l0;
                lp_scale += l1.abs() + l0.abs();
                ent += e1 - e0;
                ent_scale += e1.abs() + e0.abs();
            }
            let (got_lp, got_ent) = (flip_lp[r * p + i] as f64, flip_ent[r * p + i] as f64);
            worst = worst.max((got_lp - lp).abs() / lp_scale).max((got_ent - ent).abs() / ent_scale.max(1.0));
        }
    }
    eprintln!("credit pass: worst error {worst:.2e} of the summed terms' magnitude");
    assert!(worst < 1e-6, "credit pass error {worst:.2e}");
}

/// Trains a few steps of the default model and returns the saved parameters' bytes.
fn trained_params(estimator: &str, threads: &str, simd: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("params.f32");
    let mut cmd = Command::cargo_bin("hnca").unwrap();
    cmd.args([
        "vae",
        "--device",
        "cpu",
        "--steps",
        "6",
        "--test-every",
        "0",
        "--seed",
        "5",
        "--estimator",
        estimator,
        "--threads",
        threads,
    ]);
    cmd.arg("--save-params").arg(&path);
    match simd {
        Some(s) => cmd.env("HNCA_CPU_SIMD", s),
        None => cmd.env_remove("HNCA_CPU_SIMD"),
    };
    cmd.assert().success();
    std::fs::read(&path).unwrap()
}

#[test]
fn a_run_is_bitwise_identical_on_one_or_two_threads_and_with_every_instruction_set() {
    eprintln!("this CPU's widest path: {:?}", hnca::backend::cpu::Simd::best_supported());
    for estimator in ["hnca", "disarm"] {
        let reference = trained_params(estimator, "1", None);
        assert_eq!(reference.len(), 4 * (784 * 200 + 200 + 2 * 200 * 200 + 2 * 200 + 200 * 784 + 784 + 2 * 200 * 200 + 2 * 200 + 200));
        for (threads, simd) in [("2", None), ("2", Some("portable")), ("1", Some("avx2"))] {
            let other = trained_params(estimator, threads, simd);
            assert!(other == reference, "{estimator}: {threads} threads with {simd:?} changed the parameters");
        }
    }
}
