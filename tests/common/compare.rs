//! Comparisons of two backends' outputs that cannot be fooled by non-finite values: each helper
//! fails when either side holds a NaN or an infinity, and takes its scale (the floor of a
//! relative comparison, or the norm of a normwise one) from finite values only. A comparison
//! whose reference is all infinities would otherwise have an infinite floor and accept anything.

/// Fails unless every value of `xs` is finite, naming the first that is not.
pub fn assert_finite(what: &str, side: &str, xs: &[f32]) {
    if let Some((i, x)) = xs.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        panic!("{what}: {side}[{i}] is {x}; a comparison of non-finite values proves nothing");
    }
}

/// The largest |x| of finite values, at least `min`.
fn finite_scale(xs: &[f32], min: f32) -> f32 {
    xs.iter().filter(|x| x.is_finite()).fold(min, |m, &x| m.max(x.abs()))
}

/// |got - want| ≤ tol·max(|want|, floor) elementwise, floor = `floor_fraction` · the largest
/// |want| (sums of many terms lose absolute, not relative, precision near zero). Both sides must
/// be finite.
pub fn assert_close_floor(what: &str, got: &[f32], want: &[f32], tol: f32, floor_fraction: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    assert_finite(what, "got", got);
    assert_finite(what, "want", want);
    let floor = floor_fraction * finite_scale(want, 1e-6);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(floor), "{what}[{i}]: got {g} vs want {w} (tolerance {tol}, floor {floor})");
    }
}

/// Elementwise with a floor of 1e-2 of the largest |want|.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_close_floor(what, got, want, tol, 1e-2);
}

/// Normwise: every |got - want| ≤ tol · the largest |want| of the tensor. For whole steps,
/// whose estimates are differences of sums of hundreds of terms, this is the meaningful f32
/// yardstick: an entry near zero carries the absolute, not the relative, error of the sums.
pub fn assert_close_normwise(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_close_floor(what, got, want, tol, 1.0);
}

/// The largest |got - want| relative to the largest |want| (at least 1e-6); infinite when either
/// side holds a non-finite value, so that any `normwise(..) <= limit` check fails on it.
pub fn normwise(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "normwise: lengths");
    if got.iter().chain(want).any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let scale = finite_scale(want, 1e-6) as f64;
    got.iter().zip(want).fold(0.0f64, |m, (&g, &w)| m.max((g as f64 - w as f64).abs())) / scale
}

/// |got - want| ≤ tol·max(|want|, floor) for f64 values, both finite.
pub fn assert_close_f64(what: &str, got: f64, want: f64, tol: f64, floor: f64) {
    assert!(got.is_finite() && want.is_finite(), "{what}: got {got}, want {want}: not finite");
    assert!((got - want).abs() <= tol * want.abs().max(floor), "{what}: got {got} vs want {want} (tolerance {tol})");
}
