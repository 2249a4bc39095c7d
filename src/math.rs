//! Branch-free f32 transcendentals for the hot loops.
//!
//! HNCA's credit pass evaluates tens of millions of log-sigmoids per training step. libm's
//! `expf`/`log1pf` are scalar calls that stop rustc from vectorising the loop; these are plain
//! polynomial arithmetic with selects, so a loop over slices compiles to packed instructions,
//! and the same formulas port line by line to a CUDA kernel. Plain `a * b + c` is used instead of
//! `mul_add`, which without the `fma` target feature becomes a slow library call.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that n·LN2_HI is exact for |n| < 2^10 (Cody and Waite).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding and subtracting 1.5·2^23 rounds an f32 of magnitude below 2^22 to an integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for x ≤ 0, relative error below 2e-7 on [-87, 0]; inputs below -87 give exactly 0
/// (never a subnormal, never garbage).
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    let tiny = x < -87.0;
    let x = x.max(-87.0);
    // t = n + 1.5·2^23 holds the integer n in its low mantissa bits, so 2^n's exponent field
    // comes from t's bits by integer arithmetic alone (a saturating `as i32` would block SIMD).
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO; // |r| ≤ ln2/2
                                           // e^r = 1 + r + r²·q(r), q a minimax cubic for (e^r - 1 - r)/r² on [-ln2/2, ln2/2]
                                           // (1.1e-7 relative in exact arithmetic; fitted for this project, see tests).
    let p = 0.008_312_525 * r + 0.041_890_114;
    let p = p * r + 0.166_671_14;
    let p = p * r + 0.499_992_3;
    let p = (r * r) * p + r + 1.0;
    // 2^n for n in [-126, 0]: exponent field n + 127.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits()).wrapping_add(127) << 23);
    if tiny {
        0.0
    } else {
        p * scale
    }
}

/// e^x for x in [-87, 88] (the same polynomial as [`exp_neg`], with 2^n up to 2^127); inputs
/// outside are clamped to that range.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 0.008_312_525 * r + 0.041_890_114;
    let p = p * r + 0.166_671_14;
    let p = p * r + 0.499_992_3;
    let p = (r * r) * p + r + 1.0;
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits()).wrapping_add(127) << 23);
    p * scale
}

/// ln(1 + t) for t in [0, 1], with small relative error even for tiny t: with s = t/(2+t) ≤ 1/3,
/// ln(1+t) = 2·atanh(s) = 2s·P(s²), P a minimax quartic for atanh(s)/s on s² ∈ [0, 1/9]
/// (4e-9 relative in exact arithmetic).
#[inline(always)]
pub fn log1p_unit(t: f32) -> f32 {
    let s = t / (2.0 + t);
    let s2 = s * s;
    let p = 0.140_957_74 * s2 + 0.139_788_33;
    let p = p * s2 + 0.200_125_57;
    let p = p * s2 + 0.333_331_55;
    let p = p * s2 + 1.0; // 1.000000004 rounds to 1 in f32
    2.0 * s * p
}

/// log σ(x) = min(x, 0) - ln(1 + e^{-|x|}), finite for every finite x.
#[inline(always)]
pub fn log_sigmoid(x: f32) -> f32 {
    x.min(0.0) - log1p_unit(exp_neg(-x.abs()))
}

/// σ(x) = 1/(1 + e^{-x}) without overflow.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_neg(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// (log σ(x), H(σ(x))) from one exponential and one logarithm, where H is the entropy of
/// Bernoulli(σ(x)) in nats: with e = e^{-|x|}, H = ln(1+e) + |x|·e/(1+e).
/// (|x| is capped where e^{-|x|} is already 0, so no ∞·0 can arise.)
#[inline(always)]
pub fn log_sigmoid_and_entropy(x: f32) -> (f32, f32) {
    let y = x.abs().min(100.0);
    let e = exp_neg(-y);
    let l = log1p_unit(e);
    (x.min(0.0) - l, l + y * e / (1.0 + e))
}

/// The entropy of Bernoulli(σ(x)) in nats, -(σ(x) log σ(x) + σ(-x) log σ(-x)).
#[inline(always)]
pub fn bernoulli_entropy_from_logit(x: f32) -> f32 {
    log_sigmoid_and_entropy(x).1
}

/// x^n for n >= 0 by binary powering (the algorithm of compiler-rt's `__powisf2`, which
/// `f32::powi` calls), written out so that the kernels (`powi_f32` in kernels/common.cuh) make
/// the same multiplications in the same order: Adam's bias corrections agree bit for bit.
#[inline]
pub fn powi_f32(mut x: f32, mut n: u32) -> f32 {
    let mut r = 1.0f32;
    loop {
        if n & 1 == 1 {
            r *= x;
        }
        n >>= 1;
        if n == 0 {
            break;
        }
        x *= x;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls64(x: f64) -> f64 {
        x.min(0.0) - (-x.abs()).exp().ln_1p()
    }

    /// A dense grid over [lo, hi] plus the given extra points.
    fn grid(lo: f32, hi: f32, n: usize, extra: &[f32]) -> Vec<f32> {
        let mut v: Vec<f32> = (0..=n).map(|i| lo + (hi - lo) * (i as f32 / n as f32)).collect();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn exp_f32_is_accurate_on_its_domain() {
        for x in grid(-87.0, 88.0, 100_001, &[0.0, 1.0, -1.0, 80.0, -80.0]) {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            assert!((got - want).abs() <= 3e-7 * want, "exp({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn powi_f32_is_f32_powi() {
        for x in [0.9f32, 0.999, 0.5, 1.0000001, -1.5] {
            for n in (0..2000).chain([65_535, 1 << 20, 1_000_003, i32::MAX as u32]) {
                assert_eq!(powi_f32(x, n).to_bits(), x.powi(n as i32).to_bits(), "{x}^{n}");
            }
        }
    }

    #[test]
    fn exp_neg_is_accurate_on_its_domain() {
        let mut worst = 0.0f64;
        for x in grid(-87.0, 0.0, 1_000_000, &[0.0, -0.0, -1e-30, -1e-7, -86.99]) {
            let want = (x as f64).exp();
            worst = worst.max((exp_neg(x) as f64 - want).abs() / want);
        }
        eprintln!("exp_neg max relative error {worst:.2e}");
        assert!(worst < 3e-7);
        for x in [-88.0, -1e30, f32::MIN] {
            assert_eq!(exp_neg(x), 0.0, "exp_neg({x})");
        }
    }

    #[test]
    fn log1p_unit_is_accurate_in_relative_terms() {
        let mut worst = 0.0f64;
        for t in grid(0.0, 1.0, 1_000_000, &[1e-30, 1e-20, 1e-10, 1e-5, 1.0]) {
            if t == 0.0 {
                assert_eq!(log1p_unit(t), 0.0);
                continue;
            }
            let want = (t as f64).ln_1p();
            worst = worst.max((log1p_unit(t) as f64 - want).abs() / want);
        }
        eprintln!("log1p_unit max relative error {worst:.2e}");
        assert!(worst < 3e-7);
    }

    #[test]
    fn log_sigmoid_sigmoid_and_entropy_match_f64() {
        let extra = [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1e30, -1e30, f32::MAX, f32::MIN, 88.0, -88.0, 200.0, -200.0];
        let (mut ls_abs, mut ls_rel, mut sig_rel, mut ent_abs) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for x in grid(-100.0, 100.0, 2_000_000, &extra) {
            let xd = x as f64;
            let (ls, sg, h) = (log_sigmoid(x), sigmoid(x), bernoulli_entropy_from_logit(x));
            assert!(ls.is_finite() && sg.is_finite() && h.is_finite(), "non-finite at {x}");
            let want = ls64(xd);
            ls_abs = ls_abs.max((ls as f64 - want).abs() / want.abs().max(1.0));
            if want.abs() > 1e-30 && xd.abs() < 80.0 {
                ls_rel = ls_rel.max((ls as f64 - want).abs() / want.abs());
            }
            let sig = 1.0 / (1.0 + (-xd).exp());
            if sig > 1e-30 && xd.abs() < 80.0 {
                sig_rel = sig_rel.max((sg as f64 - sig).abs() / sig);
            }
            let ent = if xd.abs() > 700.0 { 0.0 } else { -(sig * ls64(xd) + (1.0 - sig) * ls64(-xd)) };
            ent_abs = ent_abs.max((h as f64 - ent).abs());
        }
        eprintln!("log_sigmoid max error {ls_abs:.2e} (relative where |x| < 80: {ls_rel:.2e}); sigmoid relative {sig_rel:.2e}; entropy absolute {ent_abs:.2e}");
        assert!(ls_abs < 2e-7, "log_sigmoid absolute/relative error {ls_abs}");
        assert!(ls_rel < 1e-6, "log_sigmoid relative error {ls_rel}");
        assert!(sig_rel < 5e-7, "sigmoid relative error {sig_rel}");
        assert!(ent_abs < 3e-7, "entropy absolute error {ent_abs}");
    }
}
