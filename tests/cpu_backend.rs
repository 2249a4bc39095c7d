//! The CPU backend's fast paths: the credit pass against f64, and runs that do not depend on the
//! thread count or the instruction set the hot loops were compiled for.

use assert_cmd::Command;
use hnca::backend::cpu::Cpu;
use hnca::backend::CreditOps;
use hnca::rng::RngKey;

fn log_sigmoid64(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

fn entropy64(x: f64) -> f64 {
    let p = 1.0 / (1.0 + (-x).exp());
    -(p * log_sigmoid64(x) + (1.0 - p) * log_sigmoid64(-x))
}

/// The credit pass (in product form) against f64 recomputed per edge. Returns the worst errors
/// of the log-likelihood changes relative to the magnitude of the per-child terms they sum
/// (Σ_c |log π'| + |log π|); of the entropy changes relative to Σ_c |H'| + |H|; and of the
/// entropy changes relative to Σ_c |log x_c| (x_c = σ(-a) + σ(a)·e^Δ), the log-partition
/// changes that any product form sums and that a child pushed across to its other side makes
/// large on both sides of its entropy change.
fn credit_pass_error(b: usize, p: usize, c: usize, w_span: f32, logit_span: f32, huge_rows: usize, seed: u64) -> (f64, f64, f64) {
    use hnca::backend::credit_tables_len;
    let key = RngKey::new(seed, 0, 0);
    let u = |i: usize, k: u32| key.uniform(k.wrapping_mul(1 << 20).wrapping_add(i as u32));
    let parent: Vec<f32> = (0..b * p).map(|i| (u(i, 1) < 0.5) as u8 as f32).collect();
    let child: Vec<f32> = (0..b * c).map(|i| (u(i, 2) < 0.3) as u8 as f32).collect();
    let mut w: Vec<f32> = (0..p * c).map(|i| w_span * (2.0 * u(i, 3) - 1.0)).collect();
    for i in 0..huge_rows {
        w[i * c] = 100.0;
    }
    let child_logits: Vec<f32> = (0..b * c).map(|i| logit_span * (2.0 * u(i, 4) - 1.0)).collect();
    let (mut flip_lp, mut flip_ent) = (vec![0.0; b * p], vec![0.0; b * p]);
    let mut tables = vec![0.0; credit_tables_len(p, c)];
    Cpu::new().credit_pass(&mut flip_lp, Some(&mut flip_ent), &parent, &w, &mut tables, &child_logits, &child, b, p, c);
    let mut no_ent = vec![0.0; b * p];
    Cpu::new().credit_pass(&mut no_ent, None, &parent, &w, &mut tables, &child_logits, &child, b, p, c);
    assert_eq!(no_ent, flip_lp, "the pass without entropies computes the same log-likelihood changes");
    let (mut worst_lp, mut worst_ent, mut worst_ent_partition) = (0.0f64, 0.0f64, 0.0f64);
    for r in 0..b {
        for i in 0..p {
            let (mut lp, mut lp_scale, mut ent, mut ent_scale, mut partition) = (0.0, 0.0, 0.0, 0.0, 0.0);
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
                // log(σ(-a) + σ(a)·e^Δ) = log σ(-a) - log σ(-(a + Δ)).
                partition += (log_sigmoid64(-a) - log_sigmoid64(-flipped)).abs();
            }
            let (got_lp, got_ent) = (flip_lp[r * p + i] as f64, flip_ent[r * p + i] as f64);
            assert!(got_lp.is_finite() && got_ent.is_finite(), "row {r} parent {i}: {got_lp}, {got_ent}");
            worst_lp = worst_lp.max((got_lp - lp).abs() / lp_scale.max(1e-3));
            worst_ent = worst_ent.max((got_ent - ent).abs() / ent_scale.max(1.0));
            worst_ent_partition = worst_ent_partition.max((got_ent - ent).abs() / partition.max(1.0));
        }
    }
    (worst_lp, worst_ent, worst_ent_partition)
}

#[test]
fn credit_pass_matches_f64_to_1e6_of_its_terms() {
    // Ragged sizes (c not a multiple of the 16 lanes), enough work for the multithreaded path.
    let cases = [
        ("training's weights", 6, 37, 301, 0.3, 8.0, 0),
        ("weights to 8, logits to 32", 6, 37, 301, 8.0, 32.0, 0),
        ("weights to 30, logits to 40", 4, 21, 203, 30.0, 40.0, 0),
        ("saturated children (logits to 40), small weights", 4, 21, 203, 0.05, 40.0, 0),
        ("some weights beyond 80: the per-edge form", 4, 21, 203, 2.0, 20.0, 5),
    ];
    for (what, b, p, c, w_span, logit_span, huge) in cases {
        let (lp, ent, ent_partition) = credit_pass_error(b, p, c, w_span, logit_span, huge, 11);
        eprintln!(
            "credit pass, {what}: worst error of the log-likelihood changes {lp:.2e} of their terms, of the entropy changes \
             {ent:.2e} of their terms and {ent_partition:.2e} of the log-partition changes"
        );
        // The log-likelihood changes (δ, and through it ρ) keep the per-edge form's bound
        // everywhere; so do the entropy changes wherever weights stay below 10.
        assert!(lp < 1e-6, "credit pass, {what}: log-likelihood error {lp:.2e}");
        assert!(ent_partition < 1e-6, "credit pass, {what}: entropy error {ent_partition:.2e} of the log-partition changes");
        if w_span < 10.0 {
            assert!(ent < 1e-6, "credit pass, {what}: entropy error {ent:.2e}");
        }
    }
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
    for estimator in ["hnca", "disarm", "arms", "double-cv", "rodeo"] {
        let reference = trained_params(estimator, "1", None);
        assert_eq!(reference.len(), 4 * (784 * 200 + 200 + 2 * 200 * 200 + 2 * 200 + 200 * 784 + 784 + 2 * 200 * 200 + 2 * 200 + 200));
        for (threads, simd) in [("2", None), ("2", Some("portable")), ("1", Some("avx2"))] {
            let other = trained_params(estimator, threads, simd);
            assert!(other == reference, "{estimator}: {threads} threads with {simd:?} changed the parameters");
        }
    }
}
