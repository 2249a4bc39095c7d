//! The f64 reference of the K-sample estimators of docs/estimators.md (LOO with K samples,
//! ARMS, Double CV, RODEO, HNCA with K samples) and their exact enumeration on a tiny network.
//!
//! For encoder layer l every estimator uses K chains that share z_0..z_{l-1} (the main chain's)
//! and each carry their own z_l..z_L: chain 0 is the main chain, chains 1..K-1 are re-sampled
//! from layer l upward exactly as LOO's and DisARM's alternative chains are. Their layer-l
//! samples are independent (LOO, Double CV, RODEO, HNCA) or the K antithetic draws of ARMS's
//! Dirichlet copula (independent across units); above l every chain is sampled independently.
#![allow(dead_code, clippy::needless_range_loop)]

use super::exact::{clip, log_bern, log_sigmoid, sigmoid, Chain, Net};
use hnca::vae::estimator::{Estimator, EstimatorKind};

/// Σ_j [z_j log σ(a_j) + (1 - z_j) log σ(-a_j)]: the Bernoulli log-probability extended
/// linearly to real z (what autodiff of TFP's Bernoulli.log_prob differentiates).
pub fn log_bern_linear(z: &[f64], logits: &[f64]) -> f64 {
    z.iter().zip(logits).map(|(&z, &a)| z * log_sigmoid(a) + (1.0 - z) * log_sigmoid(-a)).sum()
}

/// The learned control function of RODEO's official code (`SteinControlNNSingleLayer` in
/// thjashin/rodeo networks.py), our own f64 version: two scalar inputs (the linearised
/// surrogate ℓ and the leave-one-out mean F̄), each through its own dense layer of `hidden`
/// units, summed, LeakyReLU(0.3), then a dense layer to 2 outputs (H_0 for the baseline's
/// control variate, H_1 for the gradient's).
#[derive(Clone, Debug)]
pub struct Mlp {
    pub wx: Vec<f64>,
    pub bx: Vec<f64>,
    pub wz: Vec<f64>,
    pub bz: Vec<f64>,
    pub w2: Vec<[f64; 2]>,
    pub b2: [f64; 2],
}

/// splitmix64: a tiny deterministic generator for test weights and Monte Carlo checks.
pub struct SplitMix(pub u64);
impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform on (0, 1), never exactly 0 or 1.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
}

impl Mlp {
    /// Glorot-uniform kernels as Keras initialises them; biases drawn too (Keras starts them
    /// at zero) so that no part of the function is trivially zero in the tests.
    pub fn random(hidden: usize, seed: u64) -> Mlp {
        let mut r = SplitMix(seed);
        let l1 = (6.0 / (1.0 + hidden as f64)).sqrt();
        let l2 = (6.0 / (hidden as f64 + 2.0)).sqrt();
        Mlp {
            wx: (0..hidden).map(|_| r.range(-l1, l1)).collect(),
            bx: (0..hidden).map(|_| r.range(-0.5, 0.5)).collect(),
            wz: (0..hidden).map(|_| r.range(-l1, l1)).collect(),
            bz: (0..hidden).map(|_| r.range(-0.5, 0.5)).collect(),
            w2: (0..hidden).map(|_| [r.range(-l2, l2), r.range(-l2, l2)]).collect(),
            b2: [r.range(-0.5, 0.5), r.range(-0.5, 0.5)],
        }
    }
    pub fn eval(&self, lin: f64, fbar: f64) -> [f64; 2] {
        let mut out = self.b2;
        for h in 0..self.wx.len() {
            let pre = lin * self.wx[h] + self.bx[h] + fbar * self.wz[h] + self.bz[h];
            let act = if pre >= 0.0 { pre } else { 0.3 * pre };
            out[0] += act * self.w2[h][0];
            out[1] += act * self.w2[h][1];
        }
        out
    }
}

/// RODEO's control function H^(k)(y) = (H_0, H_1), evaluated at the surrogate inputs.
#[derive(Clone, Debug)]
pub enum SteinControl {
    /// No network: H_0 = H_1 = F̄_{-k} + ℓ_k(y), the first-order Taylor surrogate of F_l built
    /// from the other samples (our network-free variant; not in the official code).
    Taylor,
    /// The official architecture with fixed weights (trained online in the official code).
    Mlp(Mlp),
}

impl SteinControl {
    fn eval(&self, lin: f64, fbar: f64) -> [f64; 2] {
        match self {
            SteinControl::Taylor => [fbar + lin, fbar + lin],
            SteinControl::Mlp(m) => m.eval(lin, fbar),
        }
    }
}

/// Which K-sample estimator (a local enum: the production code has none of these yet).
#[derive(Clone, Debug)]
pub enum KKind {
    /// REINFORCE with the leave-one-out baseline over K samples.
    Loo,
    /// ARMS: K antithetic samples from the Dirichlet copula, debiased.
    Arms,
    /// LOO plus Titsias & Shi's Taylor (double) control variate; coefficient α.
    DoubleCv,
    /// LOO plus RODEO's Gibbs-Stein control variates; coefficients α (baseline) and β (gradient).
    Rodeo(SteinControl),
    /// HNCA on each of the K chains, baseline for chain k = mean of the others' tracked targets.
    Hnca { all_child: bool, full_reward: bool },
}

#[derive(Clone, Debug)]
pub struct KEstimator {
    pub kind: KKind,
    pub k: usize,
}

impl KEstimator {
    pub fn new(kind: KKind, k: usize) -> Self {
        assert!(k >= 2, "K-sample estimators need K >= 2");
        KEstimator { kind, k }
    }
    pub fn label(&self) -> String {
        let name = match &self.kind {
            KKind::Loo => "loo".to_string(),
            KKind::Arms => "arms".to_string(),
            KKind::DoubleCv => "double-cv".to_string(),
            KKind::Rodeo(SteinControl::Taylor) => "rodeo(taylor)".to_string(),
            KKind::Rodeo(SteinControl::Mlp(_)) => "rodeo(mlp)".to_string(),
            KKind::Hnca { all_child, full_reward } => {
                let mut s = "hnca".to_string();
                if *all_child {
                    s.push_str("+all-child");
                }
                if *full_reward {
                    s.push_str("+full-reward");
                }
                s
            }
        };
        format!("{name} K={}", self.k)
    }
    /// How many parts the estimate is made of: part 0 plus one per control-variate coefficient
    /// (estimate = part_0 + Σ_i coef_i · part_i).
    pub fn parts(&self) -> usize {
        match self.kind {
            KKind::DoubleCv => 2,
            KKind::Rodeo(_) => 3,
            _ => 1,
        }
    }
    fn hnca_flags(&self) -> Estimator {
        match self.kind {
            KKind::Hnca { all_child, full_reward } => Estimator { all_child, full_reward, ..Estimator::new(EstimatorKind::HncaNb) },
            _ => Estimator::new(EstimatorKind::HncaNb),
        }
    }
    fn antithetic(&self) -> bool {
        matches!(self.kind, KKind::Arms)
    }
}

/// What one chain contributes to layer l's K-sample estimates, each computed from scratch.
#[derive(Clone, Debug)]
pub struct ChainTerms {
    /// The chain's z_l.
    pub z: Vec<f64>,
    /// F_l of the chain.
    pub f: f64,
    /// ∇_{z_l} F_l with z_l relaxed to real values (the chain's upper layers held fixed).
    pub grad_f: Vec<f64>,
    /// HNCA's tracked target T_l (what its running baseline averages).
    pub target: f64,
    /// HNCA's logit gradients with baseline 0 ...
    pub hnca0: Vec<f64>,
    /// ... and their derivative with respect to the baseline (they are affine in it).
    pub hnca_db: Vec<f64>,
}

/// The pairwise joint P(b_i = 1, b_j = 1) of two of ARMS's K antithetic draws with marginal p
/// (the official `bivariate`/`joint` of alekdimi/arms networks.py, written out).
pub fn arms_pair_joint(p: f64, k: usize) -> f64 {
    let e = 1.0 / (k as f64 - 1.0);
    let biv = |q: f64| (2.0 * q.powf(e) - 1.0).max(0.0).powf(k as f64 - 1.0);
    if p < 0.5 {
        biv(p)
    } else {
        2.0 * p - 1.0 + biv(1.0 - p)
    }
}

/// ARMS's debiasing factor p(1-p) / (p - J(p)) = 1 / (1 - Corr(b_i, b_j)).
pub fn arms_debias(p: f64, k: usize) -> f64 {
    p * (1.0 - p) / (p - arms_pair_joint(p, k))
}

/// The exact probability that one unit's K ARMS draws equal `bits` (bit k = draw k), in
/// closed form. With D ~ Dirichlet(1,…,1) (uniform on the simplex) and U_k = (1-D_k)^{K-1}:
/// for p < ½, b_k = 1[U_k < p] = 1[D_k > s] with s = 1 - p^{1/(K-1)}; for p ≥ ½ the official
/// code uses 1 - U_k, so b_k = 0 exactly when D_k > s' = 1 - (1-p)^{1/(K-1)}. Uniform spacings
/// give P(D_k > s for all k in T) = (1 - |T| s)_+^{K-1}, and inclusion–exclusion gives the
/// probability that exactly the set S of draws exceeds s:
///   Σ_{r=0}^{K-|S|} C(K-|S|, r) (-1)^r (1 - (|S|+r) s)_+^{K-1}.
pub fn arms_tuple_prob(p: f64, k: usize, bits: usize) -> f64 {
    let mask = (1usize << k) - 1;
    let (q, exceed) = if p < 0.5 { (p, bits & mask) } else { (1.0 - p, !bits & mask) };
    let s = 1.0 - q.powf(1.0 / (k as f64 - 1.0));
    let m = exceed.count_ones() as usize;
    let mut total = 0.0;
    let mut binom = 1.0;
    for r in 0..=(k - m) {
        let sign = if r % 2 == 0 { 1.0 } else { -1.0 };
        total += sign * binom * (1.0 - (m + r) as f64 * s).max(0.0).powi(k as i32 - 1);
        binom = binom * (k - m - r) as f64 / (r + 1) as f64;
    }
    total.max(0.0)
}

/// One unit's K ARMS draws from K iid uniforms, as the official code samples them:
/// e = -ln u, d = e / Σe, U = (1-d)^{K-1}; b = 1[U < p] for p < ½, else 1[1 - U < p].
pub fn arms_sample(p: f64, u: &[f64]) -> Vec<f64> {
    let k = u.len();
    let e: Vec<f64> = u.iter().map(|&u| -u.ln()).collect();
    let sum: f64 = e.iter().sum();
    e.iter()
        .map(|&e| {
            let uc = (1.0 - e / sum).powi(k as i32 - 1);
            let v = if p < 0.5 { uc } else { 1.0 - uc };
            if v < p {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Exact first and second moments of a K-sample estimator's parts, per encoder parameter
/// (flattened as in `exact_encoder_grad`): mean[i][param], second[i][j][param] = E[part_i part_j].
#[derive(Clone, Debug)]
pub struct PartsMoments {
    pub mean: Vec<Vec<f64>>,
    pub second: Vec<Vec<Vec<f64>>>,
}

impl PartsMoments {
    /// The full coefficient vector (1, coef...).
    fn full(coef: &[f64], parts: usize) -> Vec<f64> {
        let mut c = vec![1.0];
        c.extend_from_slice(coef);
        assert_eq!(c.len(), parts, "one coefficient per control-variate part");
        c
    }
    pub fn mean_with(&self, coef: &[f64]) -> Vec<f64> {
        let c = Self::full(coef, self.mean.len());
        (0..self.mean[0].len()).map(|q| c.iter().enumerate().map(|(i, ci)| ci * self.mean[i][q]).sum()).collect()
    }
    /// Cov(part_i, part_j) of parameter q.
    pub fn cov(&self, i: usize, j: usize, q: usize) -> f64 {
        self.second[i][j][q] - self.mean[i][q] * self.mean[j][q]
    }
    pub fn var_with(&self, coef: &[f64]) -> Vec<f64> {
        let c = Self::full(coef, self.mean.len());
        let n = c.len();
        (0..self.mean[0].len())
            .map(|q| {
                let mut v = 0.0;
                for i in 0..n {
                    for j in 0..n {
                        v += c[i] * c[j] * self.cov(i, j, q);
                    }
                }
                v
            })
            .collect()
    }
}

/// The control-variate coefficients (for parts 1..) that minimise Σ over `moments` and over
/// the parameters in `range` of the exact variance: the fixed point an ideal online learner of
/// α (and β) would reach on this data. Solves the 1×1 or 2×2 normal equations.
pub fn optimal_coefficients(moments: &[&PartsMoments], range: std::ops::Range<usize>) -> Vec<f64> {
    let parts = moments[0].mean.len();
    let m = parts - 1;
    let mut a = vec![vec![0.0; m]; m];
    let mut b = vec![0.0; m];
    for pm in moments {
        for q in range.clone() {
            for i in 0..m {
                b[i] -= pm.cov(i + 1, 0, q);
                for j in 0..m {
                    a[i][j] += pm.cov(i + 1, j + 1, q);
                }
            }
        }
    }
    match m {
        0 => vec![],
        1 => vec![b[0] / a[0][0]],
        2 => {
            let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
            vec![(b[0] * a[1][1] - a[0][1] * b[1]) / det, (a[0][0] * b[1] - a[1][0] * b[0]) / det]
        }
        _ => unreachable!(),
    }
}

impl Net {
    /// F_l with z_l relaxed to real values: the generative term that scores z_l is extended
    /// linearly in z_l; every other term of F_l is already a smooth function of z_l.
    pub fn f_reward_relaxed(&self, l: usize, z: &Chain) -> f64 {
        self.f_reward(l, z) - self.log_gen(l, z) + log_bern_linear(&z[l], &self.gen_logits(l, z))
    }

    /// ∇_{z_l} F_l (relaxed), written out: the generative logits that score z_l, plus
    /// Σ_c (z_{l-1,c} - σ(d_c)) W^dec[k,c] from log p(z_{l-1}|z_l), plus
    /// Σ_j -e_j σ(e_j) σ(-e_j) W^enc_{l+1}[k,j] from H(q_{l+1}|z_l) (l < L).
    pub fn f_reward_grad(&self, l: usize, z: &Chain) -> Vec<f64> {
        let n = self.sizes[l];
        let mut g = self.gen_logits(l, z);
        let n_below = self.sizes[l - 1];
        let d = self.dec_logits(l, &z[l]);
        for k in 0..n {
            for c in 0..n_below {
                g[k] += (z[l - 1][c] - sigmoid(d[c])) * self.dec_w[l - 1][k * n_below + c];
            }
        }
        if l < self.depth() {
            let n_above = self.sizes[l + 1];
            let e = self.enc_logits(l + 1, &z[l]);
            for k in 0..n {
                for j in 0..n_above {
                    g[k] += -e[j] * sigmoid(e[j]) * sigmoid(-e[j]) * self.enc_w[l][k * n_above + j];
                }
            }
        }
        g
    }

    /// HNCA's tracked target T_l for the given flags (production `baseline_coef`).
    pub fn hnca_target(&self, est: &Estimator, l: usize, z: &Chain) -> f64 {
        let mut t = self.hnca_reward(l, z, est.full_reward);
        if l < self.depth() {
            t += self.log_p(l + 1, z);
            if est.all_child {
                t += self.ent_q(l + 1, z) + self.log_p(l, z);
            }
        }
        t
    }

    pub fn chain_terms(&self, l: usize, z: &Chain, hnca: &Estimator) -> ChainTerms {
        self.chain_terms_with(l, z, hnca, true)
    }

    /// [`Net::chain_terms`], with HNCA's credit only where `with_hnca` (it is the costly part).
    pub fn chain_terms_with(&self, l: usize, z: &Chain, hnca: &Estimator, with_hnca: bool) -> ChainTerms {
        let (hnca0, hnca1) = if with_hnca {
            (self.hnca_unit_grads(hnca, l, z, 0.0), self.hnca_unit_grads(hnca, l, z, 1.0))
        } else {
            (vec![0.0; self.sizes[l]], vec![0.0; self.sizes[l]])
        };
        ChainTerms {
            z: z[l].clone(),
            f: self.f_reward(l, z),
            grad_f: self.f_reward_grad(l, z),
            target: self.hnca_target(hnca, l, z),
            hnca_db: hnca1.iter().zip(&hnca0).map(|(a, b)| a - b).collect(),
            hnca0,
        }
    }

    /// The parts of a K-sample estimator's logit gradients for layer l (unit by unit), from
    /// the shared input z_{l-1} and the K chains' terms (ts[0] is the main chain). The
    /// estimate is part_0 + Σ_i coef_i part_i (docs/estimators.md).
    pub fn k_sample_parts(&self, est: &KEstimator, l: usize, below: &[f64], ts: &[&ChainTerms]) -> Vec<Vec<f64>> {
        let kk = ts.len();
        assert_eq!(kk, est.k);
        let kf = kk as f64;
        let n = self.sizes[l];
        let logits = self.enc_logits(l, below);
        let p: Vec<f64> = logits.iter().map(|&a| clip(sigmoid(a))).collect();
        let ent: Vec<f64> = p.iter().map(|&p| p * (1.0 - p) * ((1.0 - p) / p).ln()).collect();
        // s_k = ∇_a log q(z_k) = z_k - p.
        let s: Vec<Vec<f64>> = ts.iter().map(|t| (0..n).map(|d| t.z[d] - p[d]).collect()).collect();
        let fbar = ts.iter().map(|t| t.f).sum::<f64>() / kf;
        // (1/(K-1)) Σ_k (F_k - F̄) s_k: the K-sample leave-one-out REINFORCE term.
        let loo: Vec<f64> = (0..n).map(|d| (0..kk).map(|k| (ts[k].f - fbar) * s[k][d]).sum::<f64>() / (kf - 1.0)).collect();
        let loo_part: Vec<f64> = (0..n).map(|d| ent[d] + loo[d]).collect();
        // Leave-one-out mean of a per-chain scalar.
        let loo_mean = |v: &[f64], k: usize| (v.iter().sum::<f64>() - v[k]) / (kf - 1.0);
        match &est.kind {
            KKind::Loo => vec![loo_part],
            KKind::Arms => vec![(0..n).map(|d| ent[d] + arms_debias(p[d], kk) * loo[d]).collect()],
            KKind::Hnca { .. } => {
                let targets: Vec<f64> = ts.iter().map(|t| t.target).collect();
                let mut g = vec![0.0; n];
                for k in 0..kk {
                    let b = loo_mean(&targets, k);
                    for d in 0..n {
                        g[d] += (ts[k].hnca0[d] + b * ts[k].hnca_db[d]) / kf;
                    }
                }
                vec![g]
            }
            KKind::DoubleCv => {
                // ḡ_{-k}: the leave-one-out mean of ∇F; c_k = ḡ_{-k}·s_k; ĝ = mean_k ∇F_k.
                let gbar_not = |k: usize, d: usize| (0..kk).filter(|&j| j != k).map(|j| ts[j].grad_f[d]).sum::<f64>() / (kf - 1.0);
                let c: Vec<f64> = (0..kk).map(|k| (0..n).map(|d| gbar_not(k, d) * s[k][d]).sum()).collect();
                let ghat: Vec<f64> = (0..n).map(|d| ts.iter().map(|t| t.grad_f[d]).sum::<f64>() / kf).collect();
                let b: Vec<f64> = (0..n)
                    .map(|d| (0..kk).map(|k| (c[k] - loo_mean(&c, k)) * s[k][d]).sum::<f64>() / kf - ghat[d] * p[d] * (1.0 - p[d]))
                    .collect();
                vec![loo_part, b]
            }
            KKind::Rodeo(control) => {
                let mut dcv = vec![0.0; kk];
                let mut cv = vec![vec![0.0; n]; kk];
                let fs: Vec<f64> = ts.iter().map(|t| t.f).collect();
                for k in 0..kk {
                    let gbar: Vec<f64> =
                        (0..n).map(|d| (0..kk).filter(|&j| j != k).map(|j| ts[j].grad_f[d]).sum::<f64>() / (kf - 1.0)).collect();
                    let offset =
                        (0..kk).filter(|&j| j != k).map(|j| (0..n).map(|d| ts[j].grad_f[d] * ts[j].z[d]).sum::<f64>()).sum::<f64>()
                            / (kf - 1.0);
                    let f_not = loo_mean(&fs, k);
                    // ℓ_k(y) = ḡ_{-k}·y - (1/(K-1)) Σ_{j≠k} ∇F_j·z_j.
                    let lin_x = (0..n).map(|d| gbar[d] * ts[k].z[d]).sum::<f64>() - offset;
                    let hx = control.eval(lin_x, f_not);
                    for i in 0..n {
                        let zi = ts[k].z[i];
                        let w = p[i] * (1.0 - zi) + (1.0 - p[i]) * zi; // q(unit i flipped)
                        let hi = control.eval(lin_x + gbar[i] * (1.0 - 2.0 * zi), f_not);
                        dcv[k] += w * (hi[0] - hx[0]) / n as f64;
                        for d in 0..n {
                            let y_d = if d == i { 1.0 - zi } else { ts[k].z[d] };
                            cv[k][d] += w * (hi[1] * (y_d - p[d]) - hx[1] * s[k][d]) / n as f64;
                        }
                    }
                }
                let b: Vec<f64> = (0..n).map(|d| -(0..kk).map(|k| loo_mean(&dcv, k) * s[k][d]).sum::<f64>() / kf).collect();
                let c: Vec<f64> = (0..n).map(|d| (0..kk).map(|k| cv[k][d]).sum::<f64>() / kf).collect();
                vec![loo_part, b, c]
            }
        }
    }

    /// The per-sample logit gradient of layer l from the K chains (chains[0] the main chain;
    /// all share z_0..z_{l-1}), with control-variate coefficients `coef` (α for Double CV,
    /// α then β for RODEO, none otherwise). For ARMS the chains' z_l must be one antithetic
    /// K-tuple.
    pub fn k_sample_unit_grads(&self, est: &KEstimator, l: usize, chains: &[Chain], coef: &[f64]) -> Vec<f64> {
        for c in chains {
            assert_eq!(c[..l], chains[0][..l], "the K chains must share layers below l");
        }
        let hflags = est.hnca_flags();
        let terms: Vec<ChainTerms> = chains.iter().map(|c| self.chain_terms(l, c, &hflags)).collect();
        let refs: Vec<&ChainTerms> = terms.iter().collect();
        let parts = self.k_sample_parts(est, l, &chains[0][l - 1], &refs);
        let full = PartsMoments::full(coef, parts.len());
        (0..self.sizes[l]).map(|d| parts.iter().zip(&full).map(|(p, c)| c * p[d]).sum()).collect()
    }

    /// The parts of a K-sample estimator's logit gradients of layer l for one example's chains
    /// (chains[0] the main chain), as [`Net::k_sample_parts`] makes them.
    pub fn k_sample_parts_of(&self, est: &KEstimator, l: usize, chains: &[Chain]) -> Vec<Vec<f64>> {
        let hflags = est.hnca_flags();
        let terms: Vec<ChainTerms> = chains.iter().map(|c| self.chain_terms(l, c, &hflags)).collect();
        let refs: Vec<&ChainTerms> = terms.iter().collect();
        self.k_sample_parts(est, l, &chains[0][l - 1], &refs)
    }

    /// For one example: the ascent direction of each learned coefficient (parts 1..) on the
    /// variance loss, loss_scale · Σ_d g_d · part_d with g the estimate at coefficients `coef`.
    pub fn coefficient_ascent(&self, est: &KEstimator, l: usize, chains: &[Chain], coef: &[f64], loss_scale: f64) -> Vec<f64> {
        let parts = self.k_sample_parts_of(est, l, chains);
        let full = PartsMoments::full(coef, parts.len());
        let g: Vec<f64> = (0..self.sizes[l]).map(|d| parts.iter().zip(&full).map(|(p, c)| c * p[d]).sum()).collect();
        parts[1..].iter().map(|p| loss_scale * p.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()).collect()
    }

    /// Exact enumeration of a K-sample estimator for input x: every joint configuration of the
    /// K chains of every layer (independent layer-l samples, or ARMS's exact antithetic
    /// K-tuple distribution per unit), with the layers above l enumerated independently per
    /// chain. Returns the moments of the estimator's parts per encoder parameter.
    pub fn k_sample_moments(&self, est: &KEstimator, x: &[f64]) -> PartsMoments {
        let kk = est.k;
        let np = est.parts();
        let total_params = self.enc_param_count();
        let mut mean = vec![vec![0.0; total_params]; np];
        let mut second = vec![vec![vec![0.0; total_params]; np]; np];
        let hflags = est.hnca_flags();
        let root = vec![x.to_vec()];
        for l in 1..=self.depth() {
            let off = self.enc_layer_offset(l);
            let n = self.sizes[l];
            let mut total_prob = 0.0;
            for (below, pr_below) in self.chains(&root, 0, l - 1) {
                let logits = self.enc_logits(l, &below[l - 1]);
                let cands = self.chains_above(&below, l - 1);
                let terms: Vec<ChainTerms> = cands.iter().map(|(c, _)| self.chain_terms(l, c, &hflags)).collect();
                let code = |z: &[f64]| z.iter().enumerate().map(|(j, &v)| (v as usize) << j).sum::<usize>();
                let codes: Vec<usize> = cands.iter().map(|(c, _)| code(&c[l])).collect();
                let q_l: Vec<f64> = cands.iter().map(|(c, _)| log_bern(&c[l], &logits).exp()).collect();
                // Probability of the chain's upper layers given its z_l.
                let cond: Vec<f64> = cands.iter().zip(&q_l).map(|((_, pr), q)| pr / q).collect();
                // The joint probability of the K layer-l samples, by their codes.
                let n_codes = 1usize << n;
                let mut joint_l = vec![0.0; n_codes.pow(kk as u32)];
                for (t, slot) in joint_l.iter_mut().enumerate() {
                    let cs: Vec<usize> = (0..kk).map(|k| (t / n_codes.pow(k as u32)) % n_codes).collect();
                    *slot = if est.antithetic() {
                        (0..n)
                            .map(|d| {
                                let bits = (0..kk).map(|k| ((cs[k] >> d) & 1) << k).sum::<usize>();
                                arms_tuple_prob(clip(sigmoid(logits[d])), kk, bits)
                            })
                            .product()
                    } else {
                        cs.iter().map(|&c| log_bern(&(0..n).map(|j| ((c >> j) & 1) as f64).collect::<Vec<_>>(), &logits).exp()).product()
                    };
                }
                let nc = cands.len();
                let mut idx = vec![0usize; kk];
                loop {
                    let t = (0..kk).map(|k| codes[idx[k]] * n_codes.pow(k as u32)).sum::<usize>();
                    let pr = pr_below * joint_l[t] * idx.iter().map(|&i| cond[i]).product::<f64>();
                    if pr > 0.0 {
                        total_prob += pr;
                        let refs: Vec<&ChainTerms> = idx.iter().map(|&i| &terms[i]).collect();
                        let parts = self.k_sample_parts(est, l, &below[l - 1], &refs);
                        let params: Vec<Vec<f64>> = parts.iter().map(|g| self.layer_params_from_units(l, &cands[idx[0]].0, g)).collect();
                        for q in 0..params[0].len() {
                            for i in 0..np {
                                mean[i][off + q] += pr * params[i][q];
                                for j in 0..np {
                                    second[i][j][off + q] += pr * params[i][q] * params[j][q];
                                }
                            }
                        }
                    }
                    // Next index tuple (odometer).
                    let mut k = 0;
                    while k < kk {
                        idx[k] += 1;
                        if idx[k] < nc {
                            break;
                        }
                        idx[k] = 0;
                        k += 1;
                    }
                    if k == kk {
                        break;
                    }
                }
            }
            assert!((total_prob - 1.0).abs() < 1e-12, "{}: layer {l} configuration probabilities sum to {total_prob}", est.label());
        }
        PartsMoments { mean, second }
    }
}

/// The reference of a production estimator with K ≥ 2 samples per layer, given the layer's
/// learned values in production's layout (Double CV: α; RODEO: α, β, then its control network,
/// kernels/ksample.cu), and the control-variate coefficients to use with it; None for the
/// estimators with one sample and DisARM.
pub fn k_estimator(est: &Estimator, learned: &[f64]) -> Option<(KEstimator, Vec<f64>)> {
    let (kind, coef) = match est.kind {
        EstimatorKind::Loo => (KKind::Loo, vec![]),
        EstimatorKind::Arms => (KKind::Arms, vec![]),
        EstimatorKind::DoubleCv => (KKind::DoubleCv, learned[..1].to_vec()),
        EstimatorKind::Rodeo => (KKind::Rodeo(SteinControl::Mlp(Mlp::from_learned(&learned[2..]))), learned[..2].to_vec()),
        EstimatorKind::Hnca if est.samples > 1 => (KKind::Hnca { all_child: est.all_child, full_reward: est.full_reward }, vec![]),
        _ => return None,
    };
    Some((KEstimator::new(kind, est.samples), coef))
}

impl Mlp {
    /// The network from production's layout: wx, bx, wz, bz (hidden each), the weights into H_0
    /// then those into H_1 (hidden each), b2.
    pub fn from_learned(v: &[f64]) -> Mlp {
        let h = (v.len() - 2) / 6;
        Mlp {
            wx: v[..h].to_vec(),
            bx: v[h..2 * h].to_vec(),
            wz: v[2 * h..3 * h].to_vec(),
            bz: v[3 * h..4 * h].to_vec(),
            w2: (0..h).map(|i| [v[4 * h + i], v[5 * h + i]]).collect(),
            b2: [v[6 * h], v[6 * h + 1]],
        }
    }
}

impl Net {
    /// Any production estimator's per-sample logit gradients of layer l from its chains
    /// (chains[0] the main chain; DisARM: the main chain and its twin's; the estimators with
    /// one sample: the main chain alone), with the running baseline `baseline` (where one is
    /// used) and the layer's learned values `learned` (see [`k_estimator`]).
    pub fn estimate(&self, est: &Estimator, l: usize, chains: &[Chain], baseline: f64, learned: &[f64]) -> Vec<f64> {
        match k_estimator(est, learned) {
            Some((k, coef)) => self.k_sample_unit_grads(&k, l, chains, &coef),
            None => self.unit_grads(est, l, &chains[0], chains.get(1).unwrap_or(&chains[0]), baseline),
        }
    }

    /// For one example: the ascent direction of each of layer l's learned values on the
    /// variance loss, loss_scale · Σ_d g_d ∂g_d/∂value (production's `cv_grad` before the batch
    /// mean): the coefficients' from the estimate's parts, the control network's weights' by
    /// central differences of (loss_scale/2) Σ_d g_d² (f64, step 1e-5).
    pub fn learned_ascent(&self, est: &Estimator, l: usize, chains: &[Chain], learned: &[f64], loss_scale: f64) -> Vec<f64> {
        let (kest, coef) = k_estimator(est, learned).expect("an estimator that learns");
        let hflags = kest.hnca_flags();
        let terms: Vec<ChainTerms> = chains.iter().map(|c| self.chain_terms_with(l, c, &hflags, false)).collect();
        let refs: Vec<&ChainTerms> = terms.iter().collect();
        let below = &chains[0][l - 1];
        let estimate = |kest: &KEstimator, coef: &[f64]| {
            let parts = self.k_sample_parts(kest, l, below, &refs);
            let full = PartsMoments::full(coef, parts.len());
            let g: Vec<f64> = (0..self.sizes[l]).map(|d| parts.iter().zip(&full).map(|(p, c)| c * p[d]).sum()).collect();
            (parts, g)
        };
        let (parts, g) = estimate(&kest, &coef);
        let mut out: Vec<f64> = parts[1..].iter().map(|p| loss_scale * p.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()).collect();
        let half_loss = |v: &[f64]| {
            let (k, c) = k_estimator(est, v).unwrap();
            loss_scale / 2.0 * estimate(&k, &c).1.iter().map(|x| x * x).sum::<f64>()
        };
        for i in coef.len()..learned.len() {
            let (mut up, mut down) = (learned.to_vec(), learned.to_vec());
            up[i] += 1e-7;
            down[i] -= 1e-7;
            out.push((half_loss(&up) - half_loss(&down)) / 2e-7);
        }
        out
    }
}
