//! Run-time choice of instruction set for the CPU backend's hot loops (no `target-cpu=native`
//! in the build), and the fixed-order lane sums that let those loops vectorise.

/// The instruction sets the CPU backend's hot loops are compiled for. Plain `a * b + c` is never contracted
/// into FMA and the sums run in a fixed 8-lane order, so every path gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    Portable,
    Avx2,
    Avx512,
}

impl Simd {
    /// The widest the CPU supports, unless HNCA_CPU_SIMD (portable, avx2, avx512) asks for a
    /// narrower one (for benchmarks and tests); chosen once per process.
    pub fn selected() -> Simd {
        static CHOICE: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *CHOICE.get_or_init(|| {
            let best = Simd::best_supported();
            match std::env::var("HNCA_CPU_SIMD").as_deref() {
                Ok("portable") => Simd::Portable,
                Ok("avx2") if best != Simd::Portable => Simd::Avx2,
                _ => best,
            }
        })
    }

    pub fn best_supported() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }
}

impl Simd {
    /// Runs `f` compiled for this instruction set: `f` is inlined into a function built with
    /// the target features, so its loops vectorise for them. Mark the closure
    /// `#[inline(always)]`: a large one is otherwise compiled on its own, for the baseline
    /// instruction set (SSE), and called.
    #[inline(always)]
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        match self {
            // SAFETY: `Simd::selected` only names instruction sets the CPU supports.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { run_avx512(f) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { run_avx2(f) },
            _ => f(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Lanes of the explicit partial sums: an f32 `+=` into one accumulator cannot be vectorised
/// (reordering changes the rounding), eight independent ones can.
pub const LANES: usize = 8;

/// Σ xs in eight interleaved partial sums, then those in order: a fixed, vectorisable order.
#[inline(always)]
pub fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    lane_accumulate(&mut acc, xs);
    acc.iter().sum()
}

/// acc[j mod 8] += xs[j]; `xs` must start at a multiple of eight of the overall sum.
#[inline(always)]
fn lane_accumulate(acc: &mut [f32; LANES], xs: &[f32]) {
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += x;
    }
}

/// Σ of n terms that `fill(range, out)` writes for the index range into `out`, in the same
/// order as [`lane_sum`]. The terms go through a small stack buffer, so `fill` is one plain loop
/// that vectorises, and no (n) array is needed.
#[inline(always)]
pub fn chunked_sum(n: usize, fill: impl Fn(std::ops::Range<usize>, &mut [f32])) -> f32 {
    const CHUNK: usize = 32 * LANES;
    let mut buf = [0.0f32; CHUNK];
    let mut acc = [0.0f32; LANES];
    for j0 in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - j0);
        fill(j0..j0 + len, &mut buf[..len]);
        lane_accumulate(&mut acc, &buf[..len]);
    }
    acc.iter().sum()
}
