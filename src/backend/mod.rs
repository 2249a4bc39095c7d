//! The operations the estimators are written over. A backend owns its buffers (`Buf`, a flat
//! array of f32 in row-major order) and runs each operation where they live; the CPU backend is
//! the reference, and a GPU backend implements the same list with the same argument order.
//!
//! Shapes follow llm.c's convention: `b` is the batch size, and every buffer's shape is written
//! next to it, e.g. "out is (b, n)".

pub mod consts;
pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod kernels;
pub mod nvrtc;
pub mod ops;
pub mod runs;

pub use ops::*;

/// The most samples per layer the K-sample operations take (their per-row tables' length).
pub use consts::MAX_SAMPLES;

/// Element types of the arrays besides f32 buffers: image bytes, words (an epoch's image order,
/// the training clock, counts, tables of device addresses) and f64 sums.
pub trait Elem:
    Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + Unpin + 'static + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits
{
}
impl Elem for u8 {}
impl Elem for u32 {}
impl Elem for u64 {}
impl Elem for f64 {}

/// Everything an estimator is written over: the sum of the topic traits of [`ops`]. A backend
/// implements each topic; `Backend` then comes with them.
pub trait Backend: MemoryOps + DenseOps + BernoulliOps + CreditOps + KSampleOps + ConvOps + SoftmaxOps + StateOps {}
impl<T> Backend for T where T: MemoryOps + DenseOps + BernoulliOps + CreditOps + KSampleOps + ConvOps + SoftmaxOps + StateOps {}
