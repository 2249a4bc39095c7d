//! Exact-enumeration tests of the K-sample estimators of docs/estimators.md (LOO with K
//! samples, ARMS, Double CV, RODEO, HNCA with K samples) on the tiny VAE of tests/exact.rs
//! (x of 3 bits, latents 2-2-2), with their f64 reference (tests/common/exact_k.rs), and the
//! production f32 step against that reference on the same samples.
//! 1. ARMS's antithetic K-tuple distribution in closed form against exact simplex areas, its
//!    moments, the official sampler and the production sampler.
//! 2. The relaxed ∇_{z_l} F_l that Double CV and RODEO use, against central differences.
//! 3. Reductions: LOO K=2 and ARMS K=2 are the existing LOO and DisARM sample by sample and in
//!    exact variance; zero coefficients turn Double CV and RODEO into LOO; HNCA K is the mean
//!    of HNCA estimates with the leave-one-out baselines.
//! 4. Unbiasedness, K ∈ {2, 3}, every input, every encoder parameter, to 1e-9.
//! 5. Exact variances: ratios between estimators at equal K (printed; only provable facts
//!    asserted).
//! 6. The production step (f32, CPU backend) gives the reference's per-sample estimates, batch
//!    means and coefficient ascent directions on its own samples, K = 2 and 3.

mod common;

use hnca::backend::{KSampleOps, MemoryOps};
use std::sync::OnceLock;

use common::exact::*;
use common::exact_k::*;
use hnca::backend::cpu::Cpu;
use hnca::rng::{stream, RngKey};
use hnca::vae::estimator::{Estimator, EstimatorKind};
use hnca::vae::model::{Params, Shape};
use hnca::vae::step::{compute_gradients, Draw, Workspace};

fn tiny_shape() -> Shape {
    Shape::new(3, &[2, 2, 2])
}

/// The same network as tests/exact.rs: every parameter drawn from U(-1.5, 1.5).
fn tiny_params(seed: u64) -> Params<Vec<f32>> {
    let mut p = Params::init(&tiny_shape(), seed);
    for (t, tensor) in p.tensors_mut().into_iter().enumerate() {
        RngKey::new(seed, 1, stream::init(100 + t as u32)).fill_uniform(0, tensor);
        tensor.iter_mut().for_each(|u| *u = 3.0 * *u - 1.5);
    }
    p
}

fn tiny_net() -> Net {
    Net::from_params(&tiny_shape(), &tiny_params(11))
}

fn all_inputs() -> Vec<Vec<f64>> {
    (0..8).map(|c| (0..3).map(|j| ((c >> j) & 1) as f64).collect()).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

/// Every estimator configuration covered, per K.
fn estimators(k: usize) -> Vec<KEstimator> {
    let mut v = vec![
        KEstimator::new(KKind::Loo, k),
        KEstimator::new(KKind::Arms, k),
        KEstimator::new(KKind::DoubleCv, k),
        KEstimator::new(KKind::Rodeo(SteinControl::Taylor), k),
        KEstimator::new(KKind::Rodeo(SteinControl::Mlp(Mlp::random(100, 7))), k),
    ];
    for all_child in [false, true] {
        for full_reward in [false, true] {
            v.push(KEstimator::new(KKind::Hnca { all_child, full_reward }, k));
        }
    }
    v
}

/// (estimator, moments per input), computed once for all tests, estimators spread over threads.
fn all_moments() -> &'static Vec<(KEstimator, Vec<PartsMoments>)> {
    static CACHE: OnceLock<Vec<(KEstimator, Vec<PartsMoments>)>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let net = tiny_net();
        let ests: Vec<KEstimator> = [2, 3].into_iter().flat_map(estimators).collect();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(4);
        let mut out: Vec<Option<(KEstimator, Vec<PartsMoments>)>> = vec![None; ests.len()];
        std::thread::scope(|s| {
            let chunks: Vec<Vec<(usize, &KEstimator)>> =
                (0..threads).map(|t| ests.iter().enumerate().filter(|(i, _)| i % threads == t).collect()).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let net = &net;
                    s.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|(i, e)| (i, e.clone(), all_inputs().iter().map(|x| net.k_sample_moments(e, x)).collect::<Vec<_>>()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, e, m) in h.join().unwrap() {
                    out[i] = Some((e, m));
                }
            }
        });
        out.into_iter().map(Option::unwrap).collect()
    })
}

/// Samples layers from+1..=L of a chain given z[..=from].
fn sample_above(net: &Net, z: &Chain, from: usize, rng: &mut SplitMix) -> Chain {
    let mut c = z[..=from].to_vec();
    for l in (from + 1)..=net.depth() {
        let logits = net.enc_logits(l, &c[l - 1]);
        c.push(logits.iter().map(|&a| if rng.uniform() < sigmoid(a) { 1.0 } else { 0.0 }).collect());
    }
    c
}

// ───────────────────────────── 1. ARMS's joint distribution ─────────────────────────────

/// Area of the convex polygon (shoelace).
fn area(poly: &[(f64, f64)]) -> f64 {
    let n = poly.len();
    (0..n).map(|i| poly[i].0 * poly[(i + 1) % n].1 - poly[(i + 1) % n].0 * poly[i].1).sum::<f64>().abs() / 2.0
}

/// Clips a convex polygon to the half-plane a·x + b·y ≤ c (Sutherland–Hodgman).
fn clip_half_plane(poly: &[(f64, f64)], a: f64, b: f64, c: f64) -> Vec<(f64, f64)> {
    let inside = |p: (f64, f64)| a * p.0 + b * p.1 <= c;
    let cross = |p: (f64, f64), q: (f64, f64)| {
        let (fp, fq) = (a * p.0 + b * p.1 - c, a * q.0 + b * q.1 - c);
        let t = fp / (fp - fq);
        (p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1))
    };
    let mut out = Vec::new();
    for i in 0..poly.len() {
        let (p, q) = (poly[i], poly[(i + 1) % poly.len()]);
        match (inside(p), inside(q)) {
            (true, true) => out.push(q),
            (true, false) => out.push(cross(p, q)),
            (false, true) => {
                out.push(cross(p, q));
                out.push(q);
            }
            (false, false) => {}
        }
    }
    out
}

/// For K = 3: P(exactly the draws in `exceed` have D_k > s), D uniform on the 2-simplex, as
/// the exact area of a polygon (d1, d2 coordinates, d3 = 1 - d1 - d2, density 2).
fn simplex_area_prob(s: f64, exceed: usize) -> f64 {
    let mut poly = vec![(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)];
    // D_k > s ⟺ -D_k ≤ -s; D_k ≤ s. D_1 = d1, D_2 = d2, D_3 = 1 - d1 - d2.
    let rows = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (-1.0, -1.0, 1.0)]; // D_k = a d1 + b d2 + c0
    for (k, &(a, b, c0)) in rows.iter().enumerate() {
        if poly.is_empty() {
            return 0.0;
        }
        poly = if (exceed >> k) & 1 == 1 { clip_half_plane(&poly, -a, -b, c0 - s) } else { clip_half_plane(&poly, a, b, s - c0) };
    }
    if poly.len() < 3 {
        0.0
    } else {
        2.0 * area(&poly)
    }
}

#[test]
fn arms_antithetic_tuples_have_the_closed_form_distribution() {
    let ps = [0.003, 0.07, 0.2, 0.3, 0.37, 0.4999, 0.5, 0.52, 0.64, 0.8, 0.93, 0.9995];
    let mut worst_area = 0.0f64;
    for k in [2usize, 3, 4] {
        for &p in &ps {
            let probs: Vec<f64> = (0..1usize << k).map(|b| arms_tuple_prob(p, k, b)).collect();
            let total: f64 = probs.iter().sum();
            assert!((total - 1.0).abs() < 1e-13, "K={k} p={p}: total {total}");
            for i in 0..k {
                let marg: f64 = probs.iter().enumerate().filter(|(b, _)| (b >> i) & 1 == 1).map(|(_, q)| q).sum();
                assert!((marg - p).abs() < 1e-13, "K={k} p={p}: marginal of draw {i} is {marg}");
                for j in (i + 1)..k {
                    let pair: f64 = probs.iter().enumerate().filter(|(b, _)| (b >> i) & 1 == 1 && (b >> j) & 1 == 1).map(|(_, q)| q).sum();
                    assert!((pair - arms_pair_joint(p, k)).abs() < 1e-13, "K={k} p={p}: pair ({i},{j}) joint {pair}");
                }
            }
            if k == 2 {
                // DisARM's pair: P(1,1) = (2p-1)_+, P(0,0) = (1-2p)_+, P(1,0) = P(0,1) = min(p, 1-p).
                assert!((probs[3] - (2.0 * p - 1.0).max(0.0)).abs() < 1e-14);
                assert!((probs[0] - (1.0 - 2.0 * p).max(0.0)).abs() < 1e-14);
                assert!((probs[1] - p.min(1.0 - p)).abs() < 1e-14);
            }
            if k == 3 {
                // Independently: the exact areas of the simplex regions.
                let (q, flip) = if p < 0.5 { (p, false) } else { (1.0 - p, true) };
                let s = 1.0 - q.sqrt();
                for (bits, &want) in probs.iter().enumerate() {
                    let exceed = if flip { !bits & 7 } else { bits };
                    let a = simplex_area_prob(s, exceed);
                    worst_area = worst_area.max((a - want).abs());
                    assert!((a - want).abs() < 1e-13, "p={p} bits={bits:03b}: area {a} vs closed form {want}");
                }
            }
        }
    }
    // The sampler of the official code draws from this distribution (Monte Carlo, 6σ).
    let mut rng = SplitMix(2024);
    for (k, p) in [(3usize, 0.2), (3, 0.7), (4, 0.35), (2, 0.8)] {
        let n = 200_000;
        let mut counts = vec![0usize; 1 << k];
        for _ in 0..n {
            let u: Vec<f64> = (0..k).map(|_| rng.uniform()).collect();
            let b = arms_sample(p, &u);
            counts[b.iter().enumerate().map(|(i, &v)| (v as usize) << i).sum::<usize>()] += 1;
        }
        for (bits, &c) in counts.iter().enumerate() {
            let want = arms_tuple_prob(p, k, bits);
            let sd = (want * (1.0 - want) / n as f64).sqrt().max(1e-9);
            let got = c as f64 / n as f64;
            assert!((got - want).abs() < 6.0 * sd + 1e-12, "K={k} p={p} bits={bits:b}: frequency {got} vs {want}");
        }
    }
    eprintln!("ARMS K=3 closed form vs exact simplex areas: largest difference {worst_area:.1e}");
}

// ───────────────────────────── 2. the relaxed gradient of F_l ─────────────────────────────

#[test]
fn relaxed_reward_gradient_matches_central_differences() {
    let net = tiny_net();
    let mut worst = 0.0f64;
    for x in all_inputs() {
        for (z, _) in net.chains_above(&vec![x.clone()], 0) {
            for l in 1..=net.depth() {
                assert!((net.f_reward_relaxed(l, &z) - net.f_reward(l, &z)).abs() < 1e-12, "relaxation changes F_{l} at a binary point");
                // At the binary point and at an interior point.
                for shift in [None, Some([0.3, 0.55])] {
                    let mut c = z.clone();
                    if let Some(v) = shift {
                        c[l] = v.to_vec();
                    }
                    let g = net.f_reward_grad(l, &c);
                    for k in 0..net.sizes[l] {
                        let h = 1e-5;
                        let (mut a, mut b) = (c.clone(), c.clone());
                        a[l][k] += h;
                        b[l][k] -= h;
                        let fd = (net.f_reward_relaxed(l, &a) - net.f_reward_relaxed(l, &b)) / (2.0 * h);
                        worst = worst.max((fd - g[k]).abs());
                        assert!((fd - g[k]).abs() < 1e-7 * g[k].abs().max(1.0), "layer {l} unit {k}: analytic {} vs fd {fd}", g[k]);
                    }
                }
            }
        }
    }
    eprintln!("∇F_l analytic vs central differences: largest difference {worst:.1e}");
}

// ───────────────────────────── 3. reductions ─────────────────────────────

#[test]
fn k_sample_estimators_reduce_to_the_existing_ones() {
    let net = tiny_net();
    let mut rng = SplitMix(99);
    let mlp = Mlp::random(100, 7);
    for x in all_inputs() {
        for l in 1..=net.depth() {
            for _ in 0..20 {
                let main = sample_above(&net, &vec![x.clone()], 0, &mut rng);
                // LOO, K = 2: the existing reference.
                let alt = sample_above(&net, &main, l - 1, &mut rng);
                let got = net.k_sample_unit_grads(&KEstimator::new(KKind::Loo, 2), l, &[main.clone(), alt.clone()], &[]);
                let want = net.loo_unit_grads(l, &main, &alt);
                for (a, b) in got.iter().zip(&want) {
                    assert!(close(*a, *b, 1e-12), "loo K=2 layer {l}: {a} vs {b}");
                }
                // ARMS, K = 2: DisARM on the same antithetic pair.
                let logits = net.enc_logits(l, &main[l - 1]);
                let pairs: Vec<Vec<f64>> = logits.iter().map(|&a| arms_sample(clip(sigmoid(a)), &[rng.uniform(), rng.uniform()])).collect();
                let mut c0 = main[..l].to_vec();
                c0.push(pairs.iter().map(|b| b[0]).collect());
                let c0 = sample_above(&net, &c0, l, &mut rng);
                let mut c1 = main[..l].to_vec();
                c1.push(pairs.iter().map(|b| b[1]).collect());
                let c1 = sample_above(&net, &c1, l, &mut rng);
                let got = net.k_sample_unit_grads(&KEstimator::new(KKind::Arms, 2), l, &[c0.clone(), c1.clone()], &[]);
                let want = net.disarm_unit_grads(l, &c0, &c1);
                for (a, b) in got.iter().zip(&want) {
                    assert!(close(*a, *b, 1e-12), "arms K=2 layer {l}: {a} vs {b}");
                }
                // K = 3 chains: zero coefficients give LOO; HNCA K written out directly.
                let chains: Vec<Chain> =
                    std::iter::once(main.clone()).chain((0..2).map(|_| sample_above(&net, &main, l - 1, &mut rng))).collect();
                let loo = net.k_sample_unit_grads(&KEstimator::new(KKind::Loo, 3), l, &chains, &[]);
                let dcv = net.k_sample_unit_grads(&KEstimator::new(KKind::DoubleCv, 3), l, &chains, &[0.0]);
                let rodeo =
                    net.k_sample_unit_grads(&KEstimator::new(KKind::Rodeo(SteinControl::Mlp(mlp.clone())), 3), l, &chains, &[0.0, 0.0]);
                for d in 0..loo.len() {
                    assert!(close(dcv[d], loo[d], 1e-12) && close(rodeo[d], loo[d], 1e-12));
                }
                let est = Estimator::new(EstimatorKind::HncaNb);
                let targets: Vec<f64> = chains.iter().map(|c| net.hnca_target(&est, l, c)).collect();
                let mut want = vec![0.0; net.sizes[l]];
                for (k, c) in chains.iter().enumerate() {
                    let b = (targets.iter().sum::<f64>() - targets[k]) / 2.0;
                    for (w, g) in want.iter_mut().zip(net.hnca_unit_grads(&est, l, c, b)) {
                        *w += g / 3.0;
                    }
                }
                let got =
                    net.k_sample_unit_grads(&KEstimator::new(KKind::Hnca { all_child: false, full_reward: false }, 3), l, &chains, &[]);
                for (a, b) in got.iter().zip(&want) {
                    assert!(close(*a, *b, 1e-12), "hnca K=3 layer {l}: {a} vs {b}");
                }
            }
        }
    }
    // The new enumeration reproduces the existing one: exact variances of LOO and DisARM.
    for x in all_inputs() {
        let m = |kind: KKind| net.k_sample_moments(&KEstimator::new(kind, 2), &x).var_with(&[]);
        for (kind, old) in [(KKind::Loo, EstimatorKind::Loo), (KKind::Arms, EstimatorKind::Disarm)] {
            let (_, want) = net.estimator_moments(&Estimator::new(old), &x, &[0.0; 3]);
            for (a, b) in m(kind).iter().zip(&want) {
                assert!(close(*a, *b, 1e-10), "{old:?} variance {a} vs {b}");
            }
        }
    }
}

// ───────────────────────────── 4. unbiasedness ─────────────────────────────

#[test]
fn every_k_sample_estimator_is_unbiased_by_exact_enumeration() {
    let net = tiny_net();
    let exact: Vec<Vec<f64>> = all_inputs().iter().map(|x| net.exact_encoder_grad(x)).collect();
    for (est, per_input) in all_moments() {
        let mut worst = 0.0f64;
        let mut worst_cv = 0.0f64;
        for (xi, pm) in per_input.iter().enumerate() {
            for (q, &e) in exact[xi].iter().enumerate() {
                let m = pm.mean[0][q];
                worst = worst.max((m - e).abs() / e.abs().max(1.0));
                assert!(close(m, e, 1e-9), "{} biased at x={:?} parameter {q}: E={m}, gradient={e}", est.label(), all_inputs()[xi]);
                // Every control-variate part has mean zero: unbiased for every coefficient.
                for part in 1..pm.mean.len() {
                    worst_cv = worst_cv.max(pm.mean[part][q].abs() / e.abs().max(1.0));
                    assert!(
                        close(pm.mean[part][q], 0.0, 1e-9),
                        "{} part {part} has mean {} at parameter {q}",
                        est.label(),
                        pm.mean[part][q]
                    );
                }
            }
        }
        // The finite-difference ground truth is good to ~5e-12; the enumerations agree with
        // each other far more closely (LOO K's exact mean as the yardstick).
        let loo = &all_moments().iter().find(|(e, _)| matches!(e.kind, KKind::Loo) && e.k == est.k).unwrap().1;
        let vs_loo = per_input
            .iter()
            .zip(loo)
            .flat_map(|(a, b)| a.mean[0].iter().zip(&b.mean[0]).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).collect::<Vec<_>>())
            .fold(0.0f64, f64::max);
        eprintln!(
            "{:<32} max relative deviation of E[estimate] from the gradient {worst:.2e}, from LOO K's exact mean {vs_loo:.2e}; of E[CV parts] from 0 {worst_cv:.2e}",
            est.label()
        );
    }
}

// ───────────────────────────── 5. variances ─────────────────────────────

#[test]
fn exact_variance_ratios_at_equal_k() {
    let net = tiny_net();
    let all = all_moments();
    let layers: Vec<std::ops::Range<usize>> = (1..=net.depth())
        .map(|l| net.enc_layer_offset(l)..net.enc_layer_offset(l) + net.sizes[l - 1] * net.sizes[l] + net.sizes[l])
        .collect();
    for k in [2usize, 3] {
        let ests: Vec<&(KEstimator, Vec<PartsMoments>)> = all.iter().filter(|(e, _)| e.k == k).collect();
        // Per estimator and layer: the coefficients (oracle α, β for the CV estimators), then the
        // exact variance summed over the layer's parameters and the 8 inputs.
        let mut rows: Vec<(String, Vec<f64>, Vec<Vec<f64>>)> = Vec::new(); // (label, per-layer var, per-input per-param var)
        for (est, per_input) in &ests {
            let refs: Vec<&PartsMoments> = per_input.iter().collect();
            let coefs: Vec<Vec<f64>> = layers.iter().map(|r| optimal_coefficients(&refs, r.clone())).collect();
            let var: Vec<Vec<f64>> = per_input
                .iter()
                .map(|pm| {
                    let mut v = vec![0.0; net.enc_param_count()];
                    for (li, r) in layers.iter().enumerate() {
                        let full = pm.var_with(&coefs[li]);
                        v[r.clone()].copy_from_slice(&full[r.clone()]);
                    }
                    v
                })
                .collect();
            let per_layer: Vec<f64> = layers.iter().map(|r| var.iter().map(|v| v[r.clone()].iter().sum::<f64>()).sum()).collect();
            let label = est.label();
            if est.parts() > 1 {
                let shown: Vec<String> = coefs.iter().map(|c| c.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(",")).collect();
                eprintln!("{label}: oracle coefficients (α[,β]) per layer: {}", shown.join("; "));
                // Provable: the oracle coefficients do at least as well as zero (= LOO).
                let zero = vec![0.0; est.parts() - 1];
                for (li, r) in layers.iter().enumerate() {
                    let at_zero: f64 = per_input.iter().map(|pm| pm.var_with(&zero)[r.clone()].iter().sum::<f64>()).sum();
                    assert!(per_layer[li] <= at_zero * (1.0 + 1e-12), "{label}: layer {} oracle variance above LOO's", li + 1);
                }
            }
            rows.push((label, per_layer, var));
        }
        let hnca = rows.iter().find(|r| r.0.starts_with("hnca K=")).unwrap().clone();
        let loo = rows.iter().find(|r| r.0.starts_with("loo K=")).unwrap().clone();
        let mut table = format!("K={k}: exact variance summed over each layer's parameters and the 8 inputs\n");
        table += &format!(
            "  {:<32} {:>10} {:>10} {:>10} | Var/Var[hnca K]: per layer (total) | Var/Var[loo K] total | per-parameter Var/Var[hnca K] min..max\n",
            "estimator", "layer 1", "layer 2", "layer 3"
        );
        for (label, per_layer, var) in &rows {
            let tot: f64 = per_layer.iter().sum();
            let htot: f64 = hnca.1.iter().sum();
            let ltot: f64 = loo.1.iter().sum();
            let ratios: Vec<String> = per_layer.iter().zip(&hnca.1).map(|(a, b)| format!("{:.2}", a / b)).collect();
            let mut rmin = f64::INFINITY;
            let mut rmax = 0.0f64;
            for (v, h) in var.iter().zip(&hnca.2) {
                for (a, b) in v.iter().zip(h) {
                    if *b > 1e-12 {
                        rmin = rmin.min(a / b);
                        rmax = rmax.max(a / b);
                    }
                }
            }
            table += &format!(
                "  {label:<32} {:>10.4} {:>10.4} {:>10.4} | {} ({:.2}) | {:.3} | {rmin:.3}..{rmax:.2}\n",
                per_layer[0],
                per_layer[1],
                per_layer[2],
                ratios.join(" "),
                tot / htot,
                tot / ltot
            );
        }
        eprint!("{table}");
    }
}

// ───────────────────────────── 1b. the production ARMS sampler ─────────────────────────────

#[test]
fn the_production_arms_sampler_draws_the_exact_k_tuple_law() {
    let be = Cpu::new();
    let n = 40_000;
    for (k, logit) in [(2usize, 1.3f32), (3, -1.1), (3, 0.6), (4, -0.3), (4, 2.0), (5, 0.1)] {
        let logits = vec![logit; n];
        let mut zs: Vec<Vec<f32>> = (0..k).map(|_| vec![0.0; n]).collect();
        let mut refs: Vec<&mut Vec<f32>> = zs.iter_mut().collect();
        be.arms_sample(&mut refs, &logits, RngKey::new(3, 9, stream::arms(1)), None, 1, n);
        let p = clip(sigmoid(logit as f64));
        let mut counts = vec![0usize; 1 << k];
        for i in 0..n {
            counts[(0..k).map(|c| (zs[c][i] as usize) << c).sum::<usize>()] += 1;
        }
        for (bits, &c) in counts.iter().enumerate() {
            let want = arms_tuple_prob(p, k, bits);
            let sd = (want * (1.0 - want) / n as f64).sqrt().max(1e-9);
            let got = c as f64 / n as f64;
            assert!((got - want).abs() < 6.0 * sd + 1e-12, "K={k} p={p:.3} bits={bits:b}: frequency {got} vs the exact {want}");
        }
    }
}

// ───────────────────────────── 6. production against the reference ─────────────────────────────

/// The learned values the production step is run with (any fixed values keep the estimators
/// unbiased; non-zero ones make the control variates count): α (and β) per layer, and RODEO's
/// network as initialised, with its biases drawn too.
fn test_learned(est: &Estimator, l: usize) -> Vec<f32> {
    let mut v = est.initial_learned(l, 4);
    let n = v.len().min(2);
    v[..n].copy_from_slice(&[0.7 - 0.5 * l as f32, -0.3 + 0.2 * l as f32][..n]);
    if v.len() > 2 {
        let mut noise = vec![0.0f32; v.len()];
        RngKey::new(4, 1, stream::init(500 + l as u32)).fill_uniform(0, &mut noise);
        for (x, u) in v[2..].iter_mut().zip(&noise) {
            *x += 0.2 * (u - 0.5);
        }
    }
    v
}

#[test]
fn production_f32_k_sample_estimates_match_the_f64_reference_sample_by_sample() {
    let (be, shape) = (Cpu::new(), tiny_shape());
    let params = tiny_params(11);
    let net = Net::from_params(&shape, &params);
    let depth = shape.depth();
    let b = 32;
    let x: Vec<f32> = (0..b).flat_map(|r| (0..3).map(move |j| (((r % 8) >> j) & 1) as f32)).collect();
    let mut ests = Vec::new();
    for k in [2, 3] {
        for kind in [EstimatorKind::Loo, EstimatorKind::Arms, EstimatorKind::DoubleCv, EstimatorKind::Rodeo, EstimatorKind::Hnca] {
            ests.push(Estimator::configure(kind, Some(k), false, false).unwrap());
        }
        ests.push(Estimator::configure(EstimatorKind::Hnca, Some(k), true, true).unwrap());
    }
    for est in ests {
        let mut ws = Workspace::new(&be, &shape, &est, b);
        be.write(&mut ws.main.z[0], &x);
        for l in 1..=depth {
            let c = test_learned(&est, l);
            be.write(&mut ws.cv_coef[l], &c);
        }
        let mut grads = params.map(|t| vec![0.0f32; t.len()]);
        compute_gradients(&be, &params, &mut ws, &est, &be.zeros(depth), Draw::at(5, 3, false), &mut grads);
        let mut worst = 0.0f64;
        let mut differ = 0;
        for l in 1..=depth {
            let n = shape.width(l);
            let coef: Vec<f64> = test_learned(&est, l).iter().map(|&v| v as f64).collect();
            let mut mean_ref = vec![0.0f64; shape.width(l - 1) * n + n];
            let mut ascent_ref = vec![0.0f64; coef.len()];
            for r in 0..b {
                let row = |buf: &[f32], w: usize| buf[r * w..(r + 1) * w].iter().map(|&v| v as f64).collect::<Vec<f64>>();
                let main: Chain = (0..=depth).map(|m| row(&ws.main.z[m], shape.width(m))).collect();
                let mut chains = vec![main.clone()];
                for j in 1..est.samples {
                    let alt = &ws.alt[est.alt_block(l, j)];
                    chains.push((0..=depth).map(|m| if m < l { main[m].clone() } else { row(&alt.z[m], shape.width(m)) }).collect());
                }
                differ += chains[1..].iter().any(|c| c[l] != main[l]) as usize;
                let want = net.estimate(&est, l, &chains, 0.0, &coef);
                let got = row(&ws.unit_grad[l], n);
                for d in 0..n {
                    worst = worst.max((got[d] - want[d]).abs() / want[d].abs().max(1.0));
                    assert!(close(got[d], want[d], 1e-5), "{} layer {l} row {r} unit {d}: f32 {} vs f64 {}", est.label(), got[d], want[d]);
                }
                for (acc, v) in mean_ref.iter_mut().zip(net.layer_params_from_units(l, &main, &want)) {
                    *acc += v / b as f64;
                }
                if !coef.is_empty() {
                    let scale = -2.0 / (n * depth) as f64;
                    for (acc, v) in ascent_ref.iter_mut().zip(net.learned_ascent(&est, l, &chains, &coef, scale)) {
                        *acc += v / b as f64;
                    }
                }
            }
            let g = &grads.enc[l - 1];
            for (i, (&a, &e)) in g.w.iter().chain(&g.bias).zip(&mean_ref).enumerate() {
                assert!(close(a as f64, e, 1e-5), "{} layer {l} batch-mean parameter {i}: {a} vs {e}", est.label());
            }
            // The learned values' ascent: the coefficients' to 1e-5; the network's (f32 sums over
            // every flipped neighbour and chain, against f64 central differences) to 2e-4 of the
            // largest, and as a direction to a cosine of 1 - 1e-6.
            let scale = ascent_ref.iter().skip(2).fold(1e-9f64, |m, v| m.max(v.abs()));
            for (i, (&a, &e)) in ws.cv_grad[l].iter().zip(&ascent_ref).enumerate() {
                let tol = if i < 2 { 1e-5 * e.abs().max(1e-3) } else { 2e-4 * scale };
                assert!((a as f64 - e).abs() <= tol, "{} layer {l} learned value {i} ascent: {a} vs {e} (largest {scale})", est.label());
            }
            if ascent_ref.len() > 2 {
                let got: Vec<f64> = ws.cv_grad[l][2..].iter().map(|&v| v as f64).collect();
                let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
                let cosine = dot(&got, &ascent_ref[2..]) / (dot(&got, &got) * dot(&ascent_ref[2..], &ascent_ref[2..])).sqrt();
                assert!(cosine > 1.0 - 1e-6, "{} layer {l}: the network's ascent has cosine {cosine} with the reference", est.label());
            }
            if est.kind == EstimatorKind::Rodeo {
                assert!(
                    ascent_ref[2..].iter().filter(|v| v.abs() > 1e-3 * scale).count() > 300,
                    "{}: the network's ascent is mostly zero",
                    est.label()
                );
            }
        }
        assert!(
            differ > b,
            "{}: the chains of a layer hardly differ ({differ} of {} rows); the test would be vacuous",
            est.label(),
            b * depth
        );
        eprintln!("{}: largest relative f32/f64 difference per sample {worst:.1e}", est.label());
    }
}
