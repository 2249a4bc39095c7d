//! Whole training steps through the trainers (the estimator's gradients, Adam, the running
//! baselines), checked step by step against a reference written out here from the
//! documentation: the f64 models of tests/common (which recompute every term from scratch), an
//! f64 Adam (β1 0.9, β2 0.999, ε 1e-8, bias correction with t = 1, 2, 3), and the baseline rule
//! b̄ ← 0.99·b̄ + 0.01·mean(target) with each estimator's target computed from the samples.
//!
//! The kernel and emulated-driver tests compare two backends running the same step code, so a
//! bug in the step, the estimators or the trainer passes them by construction; this test is
//! where such a bug fails.

mod common;

use common::bandit_exact::{reference_estimate, Agent, Config, SIZES};
use common::compare::assert_finite;
use common::exact::{sigmoid, Chain, Net};
use hnca::backend::cpu::Cpu;
use hnca::bandit::agent::plan;
use hnca::bandit::{AgentShape, BanditTrainer, ESTIMATORS};
use hnca::rng::{stream, RngKey};
use hnca::vae::estimator::{Baseline, Combine, Estimator, EstimatorKind};
use hnca::vae::model::{Params, Shape};
use hnca::vae::trainer::Trainer;

const LR: f32 = 1e-2;
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const DECAY: f64 = 0.99;
const STEPS: u32 = 3;
/// The learning rate of the control variates' coefficients (`--cv-lr`'s default).
const CV_LR: f32 = 1e-3;

/// Adam in f64, one moment pair per tensor, as documented: m ← β1·m + (1-β1)·g,
/// v ← β2·v + (1-β2)·g², p ← p + lr·m̂/(√v̂ + ε) with m̂ = m/(1-β1^t), v̂ = v/(1-β2^t).
struct ReferenceAdam {
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
}

impl ReferenceAdam {
    fn new(tensors: &[Vec<f32>]) -> Self {
        let zeros: Vec<Vec<f64>> = tensors.iter().map(|t| vec![0.0; t.len()]).collect();
        ReferenceAdam { m: zeros.clone(), v: zeros }
    }

    /// The parameters after step `t` (from 1) with gradients `grads`, from `params`.
    fn step(&mut self, params: &[Vec<f32>], grads: &[Vec<f32>], t: u32) -> Vec<Vec<f64>> {
        self.step_at(params, grads, t, LR)
    }

    /// The same at learning rate `lr`.
    fn step_at(&mut self, params: &[Vec<f32>], grads: &[Vec<f32>], t: u32, lr: f32) -> Vec<Vec<f64>> {
        let (c1, c2) = (1.0 - BETA1.powi(t as i32), 1.0 - BETA2.powi(t as i32));
        let mut out = Vec::new();
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let mut next = Vec::with_capacity(p.len());
            for j in 0..p.len() {
                let g = g[j] as f64;
                self.m[i][j] = BETA1 * self.m[i][j] + (1.0 - BETA1) * g;
                self.v[i][j] = BETA2 * self.v[i][j] + (1.0 - BETA2) * g * g;
                next.push(p[j] as f64 + lr as f64 * (self.m[i][j] / c1) / ((self.v[i][j] / c2).sqrt() + EPS));
            }
            out.push(next);
        }
        out
    }
}

/// Every parameter after the step against the reference Adam's: to f32 rounding of the
/// parameter plus 1e-4 of the step size (an off-by-one step counter moves the first updates by a
/// quarter of the learning rate).
fn assert_params_follow_adam(what: &str, got: &[Vec<f32>], want: &[Vec<f64>]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_finite(what, "parameters", g);
        for (j, (&g, &w)) in g.iter().zip(w).enumerate() {
            let tol = 3e-7 * w.abs().max(1.0) + 1e-4 * LR as f64;
            assert!((g as f64 - w).abs() <= tol, "{what}: tensor {i}[{j}]: {g} after the step, reference Adam gives {w}");
        }
    }
}

/// The production gradients against the reference's, to 1e-5 (absolute below 1).
fn assert_gradients_match(what: &str, got: &[Vec<f32>], want: &[Vec<f64>]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_finite(what, "gradients", g);
        assert_eq!(g.len(), w.len(), "{what}: tensor {i} length");
        for (j, (&g, &w)) in g.iter().zip(w).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}: gradient tensor {i}[{j}]: {g} vs reference {w}");
        }
    }
}

fn assert_baseline(what: &str, got: f32, want: f64) {
    assert!(got.is_finite(), "{what}: baseline {got}");
    assert!((got as f64 - want).abs() <= 1e-5 * want.abs().max(1e-2), "{what}: baseline {got} vs reference {want}");
}

fn tensors(p: &Params<Vec<f32>>) -> Vec<Vec<f32>> {
    p.tensors().into_iter().cloned().collect()
}

// ---- the VAE ---------------------------------------------------------------------------------

fn tiny_shape() -> Shape {
    Shape::new(3, &[2, 2, 2])
}

/// Every weight, bias and prior logit from U(-1.5, 1.5), so no symmetry hides a wrong formula.
fn tiny_params(seed: u64) -> Params<Vec<f32>> {
    let mut p = Params::init(&tiny_shape(), seed);
    for (t, tensor) in p.tensors_mut().into_iter().enumerate() {
        RngKey::new(seed, 1, stream::init(100 + t as u32)).fill_uniform(0, tensor);
        tensor.iter_mut().for_each(|u| *u = 3.0 * *u - 1.5);
    }
    p
}

fn vae_estimators() -> Vec<Estimator> {
    let mut v: Vec<Estimator> = EstimatorKind::ALL.into_iter().map(Estimator::new).collect();
    for (all_child, full_reward) in [(true, false), (false, true), (true, true)] {
        for kind in [EstimatorKind::Hnca, EstimatorKind::HncaNb] {
            v.push(Estimator { all_child, full_reward, ..Estimator::new(kind) });
        }
    }
    for kind in [EstimatorKind::Hnca, EstimatorKind::Loo, EstimatorKind::Arms, EstimatorKind::DoubleCv, EstimatorKind::Rodeo] {
        v.push(Estimator::configure(kind, Some(3), false, false).unwrap());
    }
    v.push(Estimator::configure(EstimatorKind::Hnca, Some(2), true, true).unwrap());
    v
}

/// Layer l's chains of row r of the trainer's workspace: the main chain, then each alternative
/// chain of the layer (its layers below l are the main chain's).
fn chains_of(trainer: &Trainer<'_, Cpu>, l: usize, r: usize) -> Vec<Chain> {
    let (shape, ws, est) = (&trainer.model.shape, &trainer.model.ws, &trainer.model.est);
    let depth = shape.depth();
    let main: Chain = (0..=depth).map(|m| row(&ws.main.z[m], r, shape.width(m))).collect();
    let mut chains = vec![main.clone()];
    for j in 1..est.samples {
        let alt = &ws.alt[est.alt_block(l, j)];
        chains.push((0..=depth).map(|m| if m < l { main[m].clone() } else { row(&alt.z[m], r, shape.width(m)) }).collect());
    }
    chains
}

/// The quantity whose batch mean the baseline of layer l tracks, for one sample (the spec's
/// wording, docs/hnca.md §5 and `hnca vae --help`): HNCA, R_l + [l<L] log p(z_l | z_{l+1}) (with the
/// `full_reward` terms in R_l, and with `all_child` also the terms that take z_l as input,
/// H(q_{l+1} | z_l) and log p(z_{l-1} | z_l)); REINFORCE, F_l.
fn baseline_target(net: &Net, est: &Estimator, l: usize, z: &Chain) -> f64 {
    let depth = net.depth();
    if matches!(est.plan().combine, Combine::Hnca | Combine::HncaK) {
        let mut t = net.hnca_reward(l, z, est.full_reward);
        if l < depth {
            t += net.log_p(l + 1, z);
            if est.all_child {
                t += net.ent_q(l + 1, z) + net.log_p(l, z);
            }
        }
        t
    } else {
        net.f_reward(l, z)
    }
}

fn row(buf: &[f32], r: usize, n: usize) -> Vec<f64> {
    buf[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect()
}

/// What one step reports, from the reference.
struct ReferenceStep {
    /// Every tensor's gradient, in `Params::tensors` order.
    grads: Vec<Vec<f64>>,
    /// Per encoder layer (bandit: per layer), the across-batch variances of the per-example
    /// estimates, summed over the weights and over the biases.
    grad_var: Vec<(f64, f64)>,
    /// The batch-mean single-sample ELBO (bandit: the mean reward).
    mean: f64,
    /// Per encoder layer, the learned coefficients' ascent directions (Double CV, RODEO).
    cv_ascent: Vec<Vec<f64>>,
}

/// Σ over parameters of the across-batch variance of per-example estimates `rows` (each (n_w +
/// n_b)), split into the first `n_w` (weights) and the rest (biases).
fn variance_sums(rows: &[Vec<f64>], n_w: usize) -> (f64, f64) {
    let b = rows.len() as f64;
    let mut sums = (0.0, 0.0);
    for i in 0..rows[0].len() {
        let mean = rows.iter().map(|r| r[i]).sum::<f64>() / b;
        let var = rows.iter().map(|r| (r[i] - mean).powi(2)).sum::<f64>() / b;
        if i < n_w {
            sums.0 += var;
        } else {
            sums.1 += var;
        }
    }
    sums
}

fn assert_variances_match(what: &str, got: &[(f64, f64)], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len(), "{what}: layers");
    for (l, (g, w)) in got.iter().zip(want).enumerate() {
        for (g, w) in [(g.0, w.0), (g.1, w.1)] {
            assert!(
                g.is_finite() && (g - w).abs() <= 1e-4 * w.abs().max(1e-6),
                "{what}: layer {} gradient variance {g} vs reference {w}",
                l + 1
            );
        }
    }
}

/// The reference of one step for the samples in the trainer's workspace, at parameters `net`,
/// with baselines `baselines` and control-variate coefficients `coef` (per layer): the
/// encoder's gradients from the reference estimators, the decoder's and the prior's exact,
/// (target - σ(logit)) ⊗ input; and the coefficients' ascent directions, batch means.
fn reference_vae_step(trainer: &Trainer<'_, Cpu>, net: &Net, baselines: &[f64], coef: &[Vec<f64>]) -> ReferenceStep {
    let (shape, ws, est) = (&trainer.model.shape, &trainer.model.ws, &trainer.model.est);
    let (b, depth) = (ws.b, shape.depth());
    let mut enc: Vec<Vec<f64>> = (1..=depth).map(|l| vec![0.0; shape.width(l - 1) * shape.width(l) + shape.width(l)]).collect();
    let mut dec_w: Vec<Vec<f64>> = (1..=depth).map(|l| vec![0.0; shape.width(l) * shape.width(l - 1)]).collect();
    let mut dec_b: Vec<Vec<f64>> = (1..=depth).map(|l| vec![0.0; shape.width(l - 1)]).collect();
    let mut prior = vec![0.0; shape.width(depth)];
    let mut per_row: Vec<Vec<Vec<f64>>> = vec![Vec::new(); depth];
    let mut cv_ascent: Vec<Vec<f64>> = coef.iter().map(|c| vec![0.0; c.len()]).collect();
    let mut elbo = 0.0;
    for r in 0..b {
        let main: Chain = (0..=depth).map(|m| row(&ws.main.z[m], r, shape.width(m))).collect();
        elbo += net.elbo_sample(&main) / b as f64;
        for l in 1..=depth {
            let chains = chains_of(trainer, l, r);
            let baseline = if est.plan().baseline == Baseline::Running { baselines[l - 1] } else { 0.0 };
            let g = net.layer_params_from_units(l, &main, &net.estimate(est, l, &chains, baseline, &coef[l - 1]));
            if !coef[l - 1].is_empty() {
                let scale = -2.0 / (shape.width(l) * depth) as f64;
                let a = net.learned_ascent(est, l, &chains, &coef[l - 1], scale);
                cv_ascent[l - 1].iter_mut().zip(a).for_each(|(acc, v)| *acc += v / b as f64);
            }
            for (acc, v) in enc[l - 1].iter_mut().zip(&g) {
                *acc += v / b as f64;
            }
            per_row[l - 1].push(g);
        }
        for m in 1..=depth {
            let logits = net.dec_logits(m, &main[m]);
            let n_out = logits.len();
            for (j, &a) in logits.iter().enumerate() {
                let delta = main[m - 1][j] - sigmoid(a);
                dec_b[m - 1][j] += delta / b as f64;
                for (i, &u) in main[m].iter().enumerate() {
                    dec_w[m - 1][i * n_out + j] += u * delta / b as f64;
                }
            }
        }
        for (j, &a) in net.prior.iter().enumerate() {
            prior[j] += (main[depth][j] - sigmoid(a)) / b as f64;
        }
    }
    let mut out = Vec::new();
    for l in 1..=depth {
        let n_w = shape.width(l - 1) * shape.width(l);
        out.push(enc[l - 1][..n_w].to_vec());
        out.push(enc[l - 1][n_w..].to_vec());
    }
    for m in 1..=depth {
        out.push(dec_w[m - 1].clone());
        out.push(dec_b[m - 1].clone());
    }
    out.push(prior);
    let grad_var = (1..=depth).map(|l| variance_sums(&per_row[l - 1], shape.width(l - 1) * shape.width(l))).collect();
    ReferenceStep { grads: out, grad_var, mean: elbo, cv_ascent }
}

#[test]
fn vae_training_steps_follow_the_reference_gradients_adam_and_baselines() {
    let be = Cpu::new();
    let shape = tiny_shape();
    // Every input twice: 16 rows.
    let b = 16;
    let x: Vec<f32> = (0..b).flat_map(|r| (0..3).map(move |j| (((r % 8) >> j) & 1) as f32)).collect();
    for est in vae_estimators() {
        let what = est.label();
        let mut trainer = Trainer::new(&be, shape.clone(), est, b, LR, 7);
        trainer.params = tiny_params(11);
        let mut adam = ReferenceAdam::new(&tensors(&trainer.params));
        let mut cv_adam: Option<ReferenceAdam> = None;
        let mut baselines = vec![0.0f64; shape.depth()];
        for t in 1..=STEPS {
            let before = tensors(&trainer.params);
            let net = Net::from_params(&shape, &trainer.params);
            for (l, (&got, &want)) in trainer.state.baselines(&be).iter().zip(&baselines).enumerate() {
                assert_baseline(&format!("{what} step {t} layer {} (before)", l + 1), got, want);
            }
            let used: Vec<f64> = trainer.state.baselines(&be).iter().map(|&v| v as f64).collect();
            let coef_before: Vec<Vec<f32>> = trainer.model.ws.cv_coef[1..].to_vec();
            let coef: Vec<Vec<f64>> = coef_before.iter().map(|c| c.iter().map(|&v| v as f64).collect()).collect();
            trainer.train_step(&x);
            let (elbo, grad_var) = trainer.state.last_step(&be);
            assert_eq!(trainer.step, t as u64);
            let what_t = format!("{what} step {t}");
            let reference = reference_vae_step(&trainer, &net, &used, &coef);
            assert_gradients_match(&what_t, &tensors(&trainer.grads), &reference.grads);
            assert_variances_match(&what_t, &grad_var, &reference.grad_var);
            assert!((elbo - reference.mean).abs() <= 1e-5 * reference.mean.abs(), "{what_t}: ELBO {elbo} vs reference {}", reference.mean);
            let want = adam.step(&before, &tensors(&trainer.grads), t);
            assert_params_follow_adam(&what_t, &tensors(&trainer.params), &want);
            if est.plan().learned > 0 {
                // The coefficients' ascent directions, then their own Adam step (lr 1e-3).
                let got: Vec<Vec<f32>> = trainer.model.ws.cv_grad[1..].to_vec();
                assert_gradients_match(&format!("{what_t} coefficients"), &got, &reference.cv_ascent);
                let want = cv_adam.get_or_insert_with(|| ReferenceAdam::new(&coef_before)).step_at(&coef_before, &got, t, CV_LR);
                assert_params_follow_adam(&format!("{what_t} coefficients"), &trainer.model.ws.cv_coef[1..], &want);
                assert!(t == 1 || trainer.model.ws.cv_coef[1..].iter().flatten().all(|&a| a != 0.0), "{what_t}: a coefficient never moved");
            }
            if est.plan().baseline == Baseline::Running {
                let depth = shape.depth();
                for l in 1..=depth {
                    let mean = (0..b)
                        .map(|r| {
                            let z: Chain = (0..=depth).map(|m| row(&trainer.model.ws.main.z[m], r, shape.width(m))).collect();
                            baseline_target(&net, &est, l, &z)
                        })
                        .sum::<f64>()
                        / b as f64;
                    baselines[l - 1] = DECAY * baselines[l - 1] + (1.0 - DECAY) * mean;
                }
            }
            for (l, (&got, &want)) in trainer.state.baselines(&be).iter().zip(&baselines).enumerate() {
                assert_baseline(&format!("{what_t} layer {}", l + 1), got, want);
            }
        }
        // HNCA's top layer tracks R_L + 0 = 0; every other baseline must have moved.
        let moving =
            if matches!(est.plan().combine, Combine::Hnca | Combine::HncaK) { &baselines[..shape.depth() - 1] } else { &baselines[..] };
        if est.plan().baseline == Baseline::Running {
            assert!(moving.iter().all(|&v| v.abs() > 1e-3), "{what}: baselines {baselines:?} never moved; the check is vacuous");
        }
    }
}

// ---- the bandit ------------------------------------------------------------------------------

#[test]
fn bandit_training_steps_follow_the_reference_gradients_adam_and_baseline() {
    let be = Cpu::new();
    let shape = AgentShape::new(SIZES[0], &SIZES[1..SIZES.len() - 1], SIZES[SIZES.len() - 1]);
    let b = 16;
    let inputs: Vec<Vec<f64>> = (0..b).map(|r| (0..3).map(|j| (((r % 8) >> j) & 1) as f64).collect()).collect();
    let x: Vec<f32> = inputs.iter().flatten().map(|&v| v as f32).collect();
    let labels: Vec<f32> = (0..b).map(|r| ((r * 5 + 1) % 3) as f32).collect();
    for (est, _) in ESTIMATORS {
        let what = est.name();
        let mut trainer = BanditTrainer::new(&be, shape.clone(), est, b, LR, 9);
        trainer.params = Agent::random(3).to_params();
        let mut adam = ReferenceAdam::new(&trainer.params.tensors().cloned().collect::<Vec<_>>());
        let mut baseline = 0.0f64;
        let mut rewarded = 0;
        for t in 1..=STEPS {
            let before: Vec<Vec<f32>> = trainer.params.tensors().cloned().collect();
            let agent = Agent::from_params(&trainer.params);
            assert_baseline(&format!("{what} step {t} (before)"), trainer.baseline(), baseline);
            let used = if plan(est).baseline == Baseline::Running { trainer.baseline() as f64 } else { 0.0 };
            trainer.train_step(&x, &labels);
            let (mean_reward, grad_var) = trainer.state.last_step(&be);
            let what_t = format!("{what} step {t}");
            let ws = &trainer.model.ws;
            let mut grad = vec![0.0f64; Agent::param_count()];
            let mut per_row = Vec::new();
            let mut reward_sum = 0.0;
            for r in 0..b {
                let action = ws.action[r] as usize;
                let reward = (action as f32 == labels[r]) as u8 as f64;
                assert_eq!(ws.reward[r] as f64, reward, "{what_t} row {r}: reward of action {action} for label {}", labels[r]);
                reward_sum += reward;
                let c = Config { h1: row(&ws.z[1], r, 2), h2: row(&ws.z[2], r, 2), action, prob: 0.0 };
                let g = reference_estimate(&agent, &inputs[r], &c, reward, used, plan(est).combine == Combine::Hnca);
                for (acc, v) in grad.iter_mut().zip(&g) {
                    *acc += v / b as f64;
                }
                per_row.push(g);
            }
            assert_eq!(mean_reward, reward_sum / b as f64, "{what_t}: mean reward");
            // Per layer, the slice of the flat estimates that holds its weights and biases.
            let mut want_var = Vec::new();
            let mut at = 0;
            for l in 1..SIZES.len() {
                let (n_w, n_b) = (SIZES[l - 1] * SIZES[l], SIZES[l]);
                let layer: Vec<Vec<f64>> = per_row.iter().map(|g| g[at..at + n_w + n_b].to_vec()).collect();
                want_var.push(variance_sums(&layer, n_w));
                at += n_w + n_b;
            }
            assert_variances_match(&what_t, &grad_var, &want_var);
            rewarded += reward_sum as usize;
            // The flat reference is per layer weights then biases, as `AgentParams::tensors`.
            let mut want_grads = Vec::new();
            let mut at = 0;
            for t in trainer.grads.tensors() {
                want_grads.push(grad[at..at + t.len()].to_vec());
                at += t.len();
            }
            assert_gradients_match(&what_t, &trainer.grads.tensors().cloned().collect::<Vec<_>>(), &want_grads);
            let want = adam.step(&before, &trainer.grads.tensors().cloned().collect::<Vec<_>>(), t);
            assert_params_follow_adam(&what_t, &trainer.params.tensors().cloned().collect::<Vec<_>>(), &want);
            if plan(est).baseline == Baseline::Running {
                baseline = DECAY * baseline + (1.0 - DECAY) * reward_sum / b as f64;
            }
            assert_baseline(&what_t, trainer.baseline(), baseline);
        }
        assert!(rewarded > 0 && rewarded < b * STEPS as usize, "{what}: rewards all equal ({rewarded}); the test would be vacuous");
    }
}
