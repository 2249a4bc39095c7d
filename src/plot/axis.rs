//! Axis ranges and tick values: linear axes with 1-2-5 steps, log axes with ticks at decades.

use super::font;

/// How a linear axis labels its ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// Plain decimals, as many as the tick step needs.
    Plain,
    /// Step counts with k and M suffixes: 500, 1.5k, 200k, 1M.
    Steps,
}

/// One axis: its range and ticks, in axis space (log10 of the value on a log axis).
#[derive(Clone, Debug)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    /// Labelled ticks (with grid lines).
    pub major: Vec<(f64, String)>,
    /// Short unlabelled ticks.
    pub minor: Vec<f64>,
}

impl Axis {
    /// Where a data value falls along the axis: 0 at `lo`, 1 at `hi`.
    pub fn frac(&self, v: f64) -> f64 {
        let t = if self.log { v.log10() } else { v };
        (t - self.lo) / (self.hi - self.lo)
    }

    /// Fraction of an axis-space value (a tick).
    pub fn frac_of_tick(&self, t: f64) -> f64 {
        (t - self.lo) / (self.hi - self.lo)
    }
}

/// Widens an empty range [v, v] around v.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        let d = if lo != 0.0 { lo.abs() * 0.05 } else { 1.0 };
        (lo - d, hi + d)
    }
}

/// Decimals needed to print multiples of `step` exactly.
fn decimals(step: f64) -> usize {
    (-(step.log10() + 1e-9).floor()).max(0.0) as usize
}

/// Formats `v` with `dec` decimals, never as "-0".
fn fixed(v: f64, dec: usize) -> String {
    let s = format!("{v:.dec$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// A step count as 950, 1.2k, 200k, 1.5M (multiples of `step`).
pub fn steps_label(v: f64, step: f64) -> String {
    let (div, suffix) = match v.abs() {
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let mut s = fixed(v / div, decimals(step / div));
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s + suffix
}

/// A linear axis over data in [`dmin`, `dmax`], padded by `pad` of the span on each side (the
/// low end goes to 0 instead when `from_zero` and the data starts near 0), with the densest
/// 1-2-5 tick step whose ticks lie at least `min_px` apart on an axis `len_px` long (and, when
/// `horizontal`, whose labels do not touch).
pub fn linear(dmin: f64, dmax: f64, pad: f64, from_zero: bool, len_px: f64, horizontal: bool, labels: Labels, size: f64) -> Axis {
    // A steps axis starts at 0 when the data starts near it, or is a single step.
    let dmin = if from_zero && dmin >= 0.0 && (dmin <= 0.25 * dmax || dmin == dmax) { 0.0 } else { dmin };
    let (dmin, dmax) = widen(dmin, dmax);
    let span = dmax - dmin;
    let (lo, hi) = (dmin - pad * span, dmax + pad * span);
    let min_px: f64 = if horizontal { 70.0 } else { 40.0 };
    let mut step = 10f64.powf(((hi - lo) / 100.0).log10().floor());
    let mut major = Vec::new();
    for i in 0..60 {
        let step_i = step * [1.0, 2.0, 5.0][i % 3];
        let ticks = ticks_at(lo, hi, step_i, labels);
        let spacing = step_i / (hi - lo) * len_px;
        let widest = ticks.iter().map(|(_, s)| font::text_width(s, size)).fold(0.0, f64::max);
        let need = if horizontal { min_px.max(widest + 16.0) } else { min_px };
        major = ticks;
        if spacing >= need || major.len() <= 2 {
            break;
        }
        if i % 3 == 2 {
            step *= 10.0;
        }
    }
    Axis { lo, hi, log: false, major, minor: Vec::new() }
}

fn ticks_at(lo: f64, hi: f64, step: f64, labels: Labels) -> Vec<(f64, String)> {
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last.max(first - 1))
        .map(|k| {
            let v = k as f64 * step;
            let label = match labels {
                Labels::Plain => fixed(v, decimals(step)),
                Labels::Steps => steps_label(v, step),
            };
            (v, label)
        })
        .collect()
}

/// A log10 axis over positive data in [`dmin`, `dmax`] (both > 0), padded by `pad` of the span
/// in log space, and widened to whole decades when fewer than two decades fall inside. Decades
/// are labelled 1e-3, 1e0, 1e2 (every second or more when they would be closer than 28 px); the
/// others, and 2..9 times each decade when there is room, get minor ticks.
pub fn log(dmin: f64, dmax: f64, pad: f64, len_px: f64) -> Axis {
    let (l0, l1) = if dmin > 0.0 && dmax >= dmin { (dmin.log10(), dmax.log10()) } else { (-1.0, 1.0) };
    let (l0, l1) = if l1 - l0 < 1e-9 { (l0 - 0.5, l1 + 0.5) } else { (l0, l1) };
    let span = l1 - l0;
    let (mut lo, mut hi) = (l0 - pad * span, l1 + pad * span);
    if (hi + 1e-9).floor() - (lo - 1e-9).ceil() < 1.0 {
        lo = (lo + 1e-9).floor();
        hi = (hi - 1e-9).ceil();
    }
    let first = (lo - 1e-9).ceil() as i32;
    let last = (hi + 1e-9).floor() as i32;
    let px_per_decade = len_px / (hi - lo);
    let every = (28.0 / px_per_decade).ceil().max(1.0) as i32;
    let mut major = Vec::new();
    let mut minor = Vec::new();
    for e in first - 1..=last {
        if e >= first {
            if e.rem_euclid(every) == 0 {
                major.push((e as f64, format!("1e{e}")));
            } else {
                minor.push(e as f64);
            }
        }
        if px_per_decade >= 40.0 {
            for d in 2..=9 {
                let t = e as f64 + (d as f64).log10();
                if t > lo && t < hi {
                    minor.push(t);
                }
            }
        }
    }
    Axis { lo, hi, log: true, major, minor }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(a: &Axis) -> Vec<&str> {
        a.major.iter().map(|(_, s)| s.as_str()).collect()
    }

    #[test]
    fn step_labels_use_k_and_m_suffixes() {
        assert_eq!(steps_label(0.0, 2000.0), "0");
        assert_eq!(steps_label(500.0, 500.0), "500");
        assert_eq!(steps_label(1500.0, 500.0), "1.5k");
        assert_eq!(steps_label(2000.0, 2000.0), "2k");
        assert_eq!(steps_label(200_000.0, 200_000.0), "200k");
        assert_eq!(steps_label(1_000_000.0, 200_000.0), "1M");
        assert_eq!(steps_label(1_200_000.0, 200_000.0), "1.2M");
    }

    #[test]
    fn linear_ticks_are_1_2_5_multiples_inside_the_padded_range() {
        let a = linear(-118.3, -96.2, 0.04, false, 300.0, false, Labels::Plain, 14.0);
        assert!(a.lo < -118.3 && a.hi > -96.2);
        assert_eq!(labels(&a), ["-115", "-110", "-105", "-100"]);
        let acc = linear(0.1, 0.93, 0.04, false, 300.0, false, Labels::Plain, 14.0);
        assert_eq!(labels(&acc), ["0.2", "0.4", "0.6", "0.8"]);
        let x = linear(1200.0, 12000.0, 0.02, true, 480.0, true, Labels::Steps, 14.0);
        assert_eq!(labels(&x), ["0", "2k", "4k", "6k", "8k", "10k", "12k"]);
        let flat = linear(0.5, 0.5, 0.04, false, 300.0, false, Labels::Plain, 14.0);
        assert!(flat.lo < 0.5 && flat.hi > 0.5 && flat.major.len() >= 2);
    }

    #[test]
    fn log_ticks_sit_at_decades() {
        let a = log(3e-4, 2e-1, 0.04, 300.0);
        assert_eq!(labels(&a), ["1e-3", "1e-2", "1e-1"]);
        assert!(a.minor.len() > 10);
        let narrow = log(2e-3, 6e-3, 0.04, 300.0);
        assert_eq!((narrow.lo, narrow.hi), (-3.0, -2.0));
        assert_eq!(labels(&narrow), ["1e-3", "1e-2"]);
        let wide = log(1e-12, 1e12, 0.0, 200.0);
        assert!(wide.major.len() <= 8, "{:?}", labels(&wide));
    }
}
