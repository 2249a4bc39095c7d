//! The kernels of `kernels/*.cu` as seen from Rust: one `#[repr(C)]` parameter struct per
//! kernel, mirroring the struct of the same name in the `.cu` field for field, and
//! [`KernelBackend`], which implements every [`Backend`] operation by launching them on a
//! [`Device`]. The CUDA driver and the CPU emulation are two such devices, so the mapping from
//! operations to kernels — grid sizes, argument order, everything — is written once and
//! exercised on every machine by the emulation.

use super::{AdamStep, Backend, HncaInputs, SampleMode, ScoreAlt};
use crate::rng::RngKey;

/// The whole kernel program as NVRTC compiles it: `kernels/*.cu` concatenated by build.rs.
pub const PROGRAM: &str = include_str!(concat!(env!("OUT_DIR"), "/program.cu"));

/// A kernel's parameter struct. `NAME` is the kernel's symbol in the `.cu`.
///
/// # Safety
/// The implementing type must be `#[repr(C)]` with exactly the fields, in order and of the same
/// sizes, of the `.cu` struct the kernel `NAME` takes by value.
pub unsafe trait KernelParams: Copy + cudarc::driver::DeviceRepr {
    const NAME: &'static str;
}

/// Every kernel with the size of its parameter struct, for checking layouts and for loading
/// them all.
pub const KERNELS: [(&str, usize); 18] = {
    use std::mem::size_of;
    [
        (GemmParams::NAME, size_of::<GemmParams>()),
        (BroadcastRowsParams::NAME, size_of::<BroadcastRowsParams>()),
        (ColumnMeanParams::NAME, size_of::<ColumnMeanParams>()),
        (BernoulliDeltaParams::NAME, size_of::<BernoulliDeltaParams>()),
        (AdamParams::NAME, size_of::<AdamParams>()),
        (RowSquaresParams::NAME, size_of::<RowSquaresParams>()),
        (BernoulliSampleParams::NAME, size_of::<BernoulliSampleParams>()),
        (ClipLogitsParams::NAME, size_of::<ClipLogitsParams>()),
        (RowTermParams::NAME, size_of::<RowTermParams>()),
        (WeightedRowSumParams::NAME, size_of::<WeightedRowSumParams>()),
        (CreditParams::NAME, size_of::<CreditParams>()),
        (HncaUnitParams::NAME, size_of::<HncaUnitParams>()),
        (ScoreUnitParams::NAME, size_of::<ScoreUnitParams>()),
        (AffineParams::NAME, size_of::<AffineParams>()),
        (SoftmaxActParams::NAME, size_of::<SoftmaxActParams>()),
        (SoftmaxScoreParams::NAME, size_of::<SoftmaxScoreParams>()),
        (SoftmaxCreditParams::NAME, size_of::<SoftmaxCreditParams>()),
        (BanditUnitParams::NAME, size_of::<BanditUnitParams>()),
    ]
};

/// Device addresses are 64-bit on both devices; 0 is a null pointer.
pub type Ptr = u64;

macro_rules! kernel_params {
    ($(#[$doc:meta])* $name:ident = $kernel:literal { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub struct $name { $(pub $field: $ty),* }
        // SAFETY: the field list is the `.cu` struct's (its size is checked against the C++
        // compiler's in tests/kernels.rs, and the emulation runs the kernels with it).
        unsafe impl KernelParams for $name {
            const NAME: &'static str = $kernel;
        }
        // SAFETY: plain old data: integers, floats and 64-bit device addresses.
        unsafe impl cudarc::driver::DeviceRepr for $name {}
    };
}

kernel_params!(
    /// c (m, n) = alpha·A·B + beta·c + bias, A and B given by strides.
    GemmParams = "gemm" { c: Ptr, a: Ptr, b: Ptr, bias: Ptr, m: i32, n: i32, k: i32, a_row: i32, a_col: i32, b_row: i32, b_col: i32, alpha: f32, beta: f32 }
);
kernel_params!(BroadcastRowsParams = "broadcast_rows" { out: Ptr, bias: Ptr, b: i32, n: i32 });
kernel_params!(ColumnMeanParams = "column_mean" { out: Ptr, x: Ptr, b: i32, n: i32 });
kernel_params!(BernoulliDeltaParams = "bernoulli_delta" { out: Ptr, logits: Ptr, targets: Ptr, b: i32, n: i32, broadcast: i32 });
kernel_params!(AdamParams = "adam" { param: Ptr, grad: Ptr, m: Ptr, v: Ptr, n: i32, lr: f32, beta1: f32, beta2: f32, eps: f32, c1: f32, c2: f32 });
kernel_params!(RowSquaresParams = "row_squares" { sums: Ptr, x: Ptr, rows: i32, n: i32 });
kernel_params!(BernoulliSampleParams = "bernoulli_sample" { z: Ptr, anti: Ptr, logits: Ptr, key: RngKeyC, b: i32, n: i32, antithetic: i32 });
kernel_params!(
    RowTermParams = "row_terms" { terms: Ptr, logits: Ptr, targets: Ptr, base_logits: Ptr, base_targets: Ptr, b: i32, n: i32, t: i32, col: i32, broadcast: i32, entropy: i32 }
);
kernel_params!(WeightedRowSumParams = "weighted_row_sum" { out: Ptr, terms: Ptr, coef: Ptr, offset: f32, b: i32, t: i32 });
kernel_params!(CreditParams = "credit_pass" { flip_lp: Ptr, flip_ent: Ptr, parent: Ptr, w: Ptr, child_logits: Ptr, child: Ptr, b: i32, p: i32, c: i32, entropy: i32 });
kernel_params!(
    HncaUnitParams = "hnca_unit_grad" {
        out: Ptr, logits: Ptr, z: Ptr, flip_dec: Ptr, gen_logits: Ptr, flip_lp: Ptr, flip_ent: Ptr, reward: Ptr, terms: Ptr,
        b: i32, p: i32, t: i32, col_dec: i32, col_gen: i32, col_ent: i32, gen_is_prior: i32, has_above: i32, all_child: i32,
    }
);
kernel_params!(ScoreUnitParams = "score_unit_grad" { out: Ptr, logits: Ptr, z: Ptr, alt: Ptr, coef: Ptr, b: i32, n: i32, mode: i32 });

kernel_params!(ClipLogitsParams = "clip_logits" { out: Ptr, logits: Ptr, n: i32 });
kernel_params!(AffineParams = "affine" { out: Ptr, x: Ptr, scale: f32, shift: f32, n: i32 });
kernel_params!(SoftmaxActParams = "softmax_act" { action: Ptr, reward: Ptr, logits: Ptr, labels: Ptr, key: RngKeyC, b: i32, a: i32 });
kernel_params!(SoftmaxScoreParams = "softmax_score" { dout: Ptr, logits: Ptr, action: Ptr, coef: Ptr, b: i32, a: i32 });
kernel_params!(SoftmaxCreditParams = "softmax_credit" { flip: Ptr, parent: Ptr, w2: Ptr, logits: Ptr, action: Ptr, b: i32, p: i32, a: i32 });
kernel_params!(BanditUnitParams = "bandit_unit_grad" { out: Ptr, logits: Ptr, z: Ptr, flip: Ptr, coef: Ptr, b: i32, n: i32 });

/// `RngKey` as the kernels take it (see `kernels/common.cuh`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RngKeyC {
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub step_lo: u32,
    pub step_hi: u32,
    pub stream: u32,
}

impl From<RngKey> for RngKeyC {
    fn from(k: RngKey) -> Self {
        RngKeyC {
            seed_lo: k.seed as u32,
            seed_hi: (k.seed >> 32) as u32,
            step_lo: k.step as u32,
            step_hi: (k.step >> 32) as u32,
            stream: k.stream,
        }
    }
}

// Launch geometry constants shared with the `.cu` (#define of the same name there).
pub const GEMM_TILE: u32 = 16;
pub const REDUCE_BLOCK: u32 = 128;
pub const CREDIT_BLOCK: u32 = 128;
pub const CREDIT_PARENTS: u32 = 8;
const ELEMENTWISE_BLOCK: u32 = 256;

/// Where kernels run: memory, copies, and launches by parameter struct.
pub trait Device {
    type Buf;
    fn alloc_zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, host: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    fn write(&self, dst: &mut Self::Buf, host: &[f32]);
    /// Number of f32 elements in the buffer.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// The device address of a buffer the kernel only reads.
    fn ptr(&self, buf: &Self::Buf) -> Ptr;
    /// The device address of a buffer the kernel writes.
    fn ptr_mut(&self, buf: &mut Self::Buf) -> Ptr;
    fn launch<P: KernelParams>(&self, grid: [u32; 3], block: [u32; 3], params: &P);
    /// Whether a vendor library (cuBLAS) on this device can run a bias-free GEMM with `p`'s
    /// stride pattern.
    fn has_vendor_gemm(&self, p: &GemmParams) -> bool {
        let _ = p;
        false
    }
    /// Runs the bias-free GEMM `p` in the vendor library (only after `has_vendor_gemm`).
    fn vendor_gemm(&self, p: &GemmParams) {
        let _ = p;
        unreachable!("vendor_gemm without has_vendor_gemm")
    }
    /// The first error a device operation met since the last call, if any.
    fn take_error(&self) -> Option<String> {
        None
    }
}

/// Every [`Backend`] operation as kernel launches on a [`Device`].
pub struct KernelBackend<D: Device> {
    pub device: D,
}

fn blocks(n: usize, per_block: u32) -> [u32; 3] {
    [n.div_ceil(per_block as usize).max(1) as u32, 1, 1]
}

const ELEMENTWISE: [u32; 3] = [ELEMENTWISE_BLOCK, 1, 1];

impl<D: Device> KernelBackend<D> {
    pub fn new(device: D) -> Self {
        KernelBackend { device }
    }

    /// A GEMM in the vendor library where the device has one, else in the project's tiled
    /// kernel. For the vendor library a bias is first broadcast into c and then accumulated onto.
    fn gemm(&self, p: GemmParams) {
        let vendor = GemmParams { bias: 0, beta: if p.bias != 0 { 1.0 } else { p.beta }, ..p };
        if (p.bias == 0 || p.beta == 0.0) && self.device.has_vendor_gemm(&vendor) {
            if p.bias != 0 {
                let fill = BroadcastRowsParams { out: p.c, bias: p.bias, b: p.m, n: p.n };
                self.device.launch(blocks(p.m as usize * p.n as usize, ELEMENTWISE_BLOCK), ELEMENTWISE, &fill);
            }
            self.device.vendor_gemm(&vendor);
        } else {
            let grid = [(p.n as u32).div_ceil(GEMM_TILE), (p.m as u32).div_ceil(GEMM_TILE), 1];
            self.device.launch(grid, [GEMM_TILE, GEMM_TILE, 1], &p);
        }
    }

    fn row_squares(&self, sums: &mut D::Buf, x: &D::Buf, rows: usize, n: usize) {
        let p = RowSquaresParams { sums: self.device.ptr_mut(sums), x: self.device.ptr(x), rows: rows as i32, n: n as i32 };
        self.device.launch([rows as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }
}

impl<D: Device> Backend for KernelBackend<D> {
    type Buf = D::Buf;

    fn zeros(&self, n: usize) -> D::Buf {
        self.device.alloc_zeros(n)
    }
    fn upload(&self, host: &[f32]) -> D::Buf {
        self.device.upload(host)
    }
    fn download(&self, buf: &D::Buf) -> Vec<f32> {
        self.device.download(buf)
    }
    fn write(&self, dst: &mut D::Buf, host: &[f32]) {
        self.device.write(dst, host)
    }

    fn matmul_forward(&self, out: &mut D::Buf, inp: &D::Buf, w: &D::Buf, bias: &D::Buf, b: usize, k: usize, n: usize) {
        let d = &self.device;
        self.gemm(GemmParams {
            c: d.ptr_mut(out),
            a: d.ptr(inp),
            b: d.ptr(w),
            bias: d.ptr(bias),
            m: b as i32,
            n: n as i32,
            k: k as i32,
            a_row: k as i32,
            a_col: 1,
            b_row: n as i32,
            b_col: 1,
            alpha: 1.0,
            beta: 0.0,
        });
    }

    fn matmul_backward_weight(&self, dw: &mut D::Buf, inp: &D::Buf, dout: &D::Buf, b: usize, k: usize, n: usize) {
        let d = &self.device;
        // dw (k, n) = inpᵀ · dout / b: A = inpᵀ, whose element (i, r) is inp[r·k + i].
        self.gemm(GemmParams {
            c: d.ptr_mut(dw),
            a: d.ptr(inp),
            b: d.ptr(dout),
            bias: 0,
            m: k as i32,
            n: n as i32,
            k: b as i32,
            a_row: 1,
            a_col: k as i32,
            b_row: n as i32,
            b_col: 1,
            alpha: 1.0 / b as f32,
            beta: 0.0,
        });
    }

    fn column_mean(&self, out: &mut D::Buf, x: &D::Buf, b: usize, n: usize) {
        let p = ColumnMeanParams { out: self.device.ptr_mut(out), x: self.device.ptr(x), b: b as i32, n: n as i32 };
        self.device.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn bernoulli_sample(
        &self,
        z: &mut D::Buf,
        anti: Option<&mut D::Buf>,
        logits: &D::Buf,
        key: RngKey,
        mode: SampleMode,
        b: usize,
        n: usize,
    ) {
        let antithetic = mode == SampleMode::Antithetic;
        assert!(!antithetic || anti.is_some(), "antithetic sampling needs an output for the twin");
        let d = &self.device;
        let p = BernoulliSampleParams {
            z: d.ptr_mut(z),
            anti: anti.map_or(0, |a| d.ptr_mut(a)),
            logits: d.ptr(logits),
            key: key.into(),
            b: b as i32,
            n: n as i32,
            antithetic: antithetic as i32,
        };
        d.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn log_prob_rows(
        &self,
        terms: &mut D::Buf,
        t: usize,
        col: usize,
        logits: &D::Buf,
        broadcast: bool,
        targets: &D::Buf,
        base: Option<(&D::Buf, &D::Buf)>,
        b: usize,
        n: usize,
    ) {
        let d = &self.device;
        let p = RowTermParams {
            terms: d.ptr_mut(terms),
            logits: d.ptr(logits),
            targets: d.ptr(targets),
            base_logits: base.map_or(0, |(l, _)| d.ptr(l)),
            base_targets: base.map_or(0, |(_, x)| d.ptr(x)),
            b: b as i32,
            n: n as i32,
            t: t as i32,
            col: col as i32,
            broadcast: broadcast as i32,
            entropy: 0,
        };
        d.launch([b as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn entropy_rows(&self, terms: &mut D::Buf, t: usize, col: usize, logits: &D::Buf, base: Option<&D::Buf>, b: usize, n: usize) {
        let d = &self.device;
        let p = RowTermParams {
            terms: d.ptr_mut(terms),
            logits: d.ptr(logits),
            targets: 0,
            base_logits: base.map_or(0, |l| d.ptr(l)),
            base_targets: 0,
            b: b as i32,
            n: n as i32,
            t: t as i32,
            col: col as i32,
            broadcast: 0,
            entropy: 1,
        };
        d.launch([b as u32, 1, 1], [REDUCE_BLOCK, 1, 1], &p);
    }

    fn weighted_row_sum(&self, out: &mut D::Buf, terms: &D::Buf, coef: &[f32], offset: f32, b: usize, t: usize) {
        let d = &self.device;
        let coef = d.upload(coef);
        let p = WeightedRowSumParams { out: d.ptr_mut(out), terms: d.ptr(terms), coef: d.ptr(&coef), offset, b: b as i32, t: t as i32 };
        d.launch(blocks(b, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn term_means(&self, terms: &D::Buf, b: usize, t: usize) -> Vec<f64> {
        let mut means = self.device.alloc_zeros(t);
        self.column_mean(&mut means, terms, b, t);
        self.device.download(&means).into_iter().map(f64::from).collect()
    }

    fn credit_pass(
        &self,
        flip_lp: &mut D::Buf,
        flip_ent: Option<&mut D::Buf>,
        parent: &D::Buf,
        w: &D::Buf,
        child_logits: &D::Buf,
        child: &D::Buf,
        b: usize,
        p: usize,
        c: usize,
    ) {
        let d = &self.device;
        let entropy = flip_ent.is_some();
        let params = CreditParams {
            flip_lp: d.ptr_mut(flip_lp),
            flip_ent: flip_ent.map_or(0, |e| d.ptr_mut(e)),
            parent: d.ptr(parent),
            w: d.ptr(w),
            child_logits: d.ptr(child_logits),
            child: d.ptr(child),
            b: b as i32,
            p: p as i32,
            c: c as i32,
            entropy: entropy as i32,
        };
        d.launch([b as u32, (p as u32).div_ceil(CREDIT_PARENTS), 1], [CREDIT_BLOCK, 1, 1], &params);
    }

    fn hnca_unit_grad(&self, out: &mut D::Buf, inp: &HncaInputs<'_, D::Buf>, b: usize, p: usize) {
        let d = &self.device;
        let above = inp.above.as_ref();
        let params = HncaUnitParams {
            out: d.ptr_mut(out),
            logits: d.ptr(inp.logits),
            z: d.ptr(inp.z),
            flip_dec: d.ptr(inp.flip_dec),
            gen_logits: d.ptr(inp.gen_logits),
            flip_lp: above.map_or(0, |a| d.ptr(a.flip_lp)),
            flip_ent: above.map_or(0, |a| d.ptr(a.flip_ent)),
            reward: d.ptr(inp.reward),
            terms: d.ptr(inp.terms),
            b: b as i32,
            p: p as i32,
            t: inp.t as i32,
            col_dec: inp.col_dec as i32,
            col_gen: inp.col_gen as i32,
            col_ent: above.map_or(0, |a| a.col_ent as i32),
            gen_is_prior: inp.gen_is_prior as i32,
            has_above: above.is_some() as i32,
            all_child: inp.all_child as i32,
        };
        d.launch(blocks(b * p, ELEMENTWISE_BLOCK), ELEMENTWISE, &params);
    }

    fn score_unit_grad(&self, out: &mut D::Buf, logits: &D::Buf, z: &D::Buf, alt: ScoreAlt<'_, D::Buf>, coef: &D::Buf, b: usize, n: usize) {
        let d = &self.device;
        let (mode, alt) = match alt {
            ScoreAlt::Mean => (0, 0),
            ScoreAlt::Sample(z2) => (1, d.ptr(z2)),
            ScoreAlt::Antithetic(zt) => (2, d.ptr(zt)),
        };
        let p = ScoreUnitParams {
            out: d.ptr_mut(out),
            logits: d.ptr(logits),
            z: d.ptr(z),
            alt,
            coef: d.ptr(coef),
            b: b as i32,
            n: n as i32,
            mode,
        };
        d.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn bernoulli_delta(&self, out: &mut D::Buf, logits: &D::Buf, broadcast: bool, targets: &D::Buf, b: usize, n: usize) {
        let d = &self.device;
        let p = BernoulliDeltaParams {
            out: d.ptr_mut(out),
            logits: d.ptr(logits),
            targets: d.ptr(targets),
            b: b as i32,
            n: n as i32,
            broadcast: broadcast as i32,
        };
        d.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn clip_logits(&self, out: &mut D::Buf, logits: &D::Buf, n: usize) {
        let d = &self.device;
        let p = ClipLogitsParams { out: d.ptr_mut(out), logits: d.ptr(logits), n: n as i32 };
        d.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn affine(&self, out: &mut D::Buf, x: &D::Buf, scale: f32, shift: f32, n: usize) {
        let d = &self.device;
        let p = AffineParams { out: d.ptr_mut(out), x: d.ptr(x), scale, shift, n: n as i32 };
        d.launch(blocks(n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn softmax_act(&self, action: &mut D::Buf, reward: &mut D::Buf, logits: &D::Buf, labels: &D::Buf, key: RngKey, b: usize, a: usize) {
        let d = &self.device;
        let p = SoftmaxActParams {
            action: d.ptr_mut(action),
            reward: d.ptr_mut(reward),
            logits: d.ptr(logits),
            labels: d.ptr(labels),
            key: key.into(),
            b: b as i32,
            a: a as i32,
        };
        d.launch(blocks(b, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn softmax_score(&self, dout: &mut D::Buf, logits: &D::Buf, action: &D::Buf, coef: &D::Buf, b: usize, a: usize) {
        let d = &self.device;
        let p = SoftmaxScoreParams {
            dout: d.ptr_mut(dout),
            logits: d.ptr(logits),
            action: d.ptr(action),
            coef: d.ptr(coef),
            b: b as i32,
            a: a as i32,
        };
        d.launch(blocks(b, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn softmax_credit(
        &self,
        flip: &mut D::Buf,
        parent: &D::Buf,
        w2: &D::Buf,
        logits: &D::Buf,
        action: &D::Buf,
        b: usize,
        p: usize,
        a: usize,
    ) {
        let d = &self.device;
        let params = SoftmaxCreditParams {
            flip: d.ptr_mut(flip),
            parent: d.ptr(parent),
            w2: d.ptr(w2),
            logits: d.ptr(logits),
            action: d.ptr(action),
            b: b as i32,
            p: p as i32,
            a: a as i32,
        };
        d.launch(blocks(b * p, ELEMENTWISE_BLOCK), ELEMENTWISE, &params);
    }

    fn bandit_unit_grad(&self, out: &mut D::Buf, logits: &D::Buf, z: &D::Buf, flip: Option<&D::Buf>, coef: &D::Buf, b: usize, n: usize) {
        let d = &self.device;
        let p = BanditUnitParams {
            out: d.ptr_mut(out),
            logits: d.ptr(logits),
            z: d.ptr(z),
            flip: flip.map_or(0, |f| d.ptr(f)),
            coef: d.ptr(coef),
            b: b as i32,
            n: n as i32,
        };
        d.launch(blocks(b * n, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn grad_variance_sums(&self, inp: &D::Buf, g: &D::Buf, dw: &D::Buf, db: &D::Buf, b: usize, k: usize, n: usize) -> (f64, f64) {
        // Per-row squared norms of inputs and logit gradients, and the squared norms of the
        // batch means; the few numbers come to the host and finish in f64 as on the CPU.
        let d = &self.device;
        let mut u2 = d.alloc_zeros(b);
        let mut g2 = d.alloc_zeros(b);
        self.row_squares(&mut u2, inp, b, k);
        self.row_squares(&mut g2, g, b, n);
        let mut w_sq = d.alloc_zeros(1);
        let mut b_sq = d.alloc_zeros(1);
        self.row_squares(&mut w_sq, dw, 1, k * n);
        self.row_squares(&mut b_sq, db, 1, n);
        let (u2, g2) = (d.download(&u2), d.download(&g2));
        let sq_w: f64 = u2.iter().zip(&g2).map(|(&a, &c)| a as f64 * c as f64).sum();
        let sq_b: f64 = g2.iter().map(|&c| c as f64).sum();
        let (w_sq, b_sq) = (d.download(&w_sq)[0] as f64, d.download(&b_sq)[0] as f64);
        (sq_w / b as f64 - w_sq, sq_b / b as f64 - b_sq)
    }

    fn adam(&self, param: &mut D::Buf, grad: &D::Buf, m: &mut D::Buf, v: &mut D::Buf, hp: AdamStep) {
        let d = &self.device;
        let t = hp.t.min(i32::MAX as u64) as i32;
        let p = AdamParams {
            param: d.ptr_mut(param),
            grad: d.ptr(grad),
            m: d.ptr_mut(m),
            v: d.ptr_mut(v),
            n: d.len(grad) as i32,
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.eps,
            c1: 1.0 - hp.beta1.powi(t),
            c2: 1.0 - hp.beta2.powi(t),
        };
        d.launch(blocks(p.n as usize, ELEMENTWISE_BLOCK), ELEMENTWISE, &p);
    }

    fn check(&self) -> Result<(), String> {
        match self.device.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
