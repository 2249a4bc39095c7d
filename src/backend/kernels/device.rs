//! Where kernels run ([`Device`]: the GPU through cudarc, or the CPU emulation), and the guards
//! that keep a launch's buffers ordered until it is queued.

use super::{Elem, GemmParams, KernelParams, Ptr};

/// Where kernels run: memory, copies, and launches by parameter struct.
pub trait Device {
    type Buf: Send + Sync;
    type Array<T: Elem>: Send + Sync;
    /// A recorded sequence of launches (a CUDA graph).
    type Graph: Send;
    fn array<T: Elem>(&self, host: &[T]) -> Self::Array<T>;
    fn read_array<T: Elem>(&self, a: &Self::Array<T>) -> Vec<T>;
    fn write_array<T: Elem>(&self, a: &mut Self::Array<T>, host: &[T]);
    fn array_ptr<'a, T: Elem>(&'a self, a: &'a Self::Array<T>) -> (Ptr, Self::Guard<'a>);
    fn array_ptr_mut<'a, T: Elem>(&'a self, a: &'a mut Self::Array<T>) -> (Ptr, Self::Guard<'a>);
    /// Starts recording launches instead of running them; false where the device cannot.
    fn begin_recording(&self) -> bool {
        false
    }
    fn end_recording(&self) -> Result<Self::Graph, String>;
    fn replay(&self, graph: &Self::Graph);
    fn alloc_zeros(&self, n: usize) -> Self::Buf;
    fn upload(&self, host: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    fn write(&self, dst: &mut Self::Buf, host: &[f32]);
    /// Number of f32 elements in the buffer.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// What keeps a buffer's use ordered until the work that uses it is queued (cudarc's event
    /// guards); dropped after the launch.
    type Guard<'a>
    where
        Self: 'a;
    /// The device address of a buffer the kernel only reads, and its guard.
    fn ptr<'a>(&'a self, buf: &'a Self::Buf) -> (Ptr, Self::Guard<'a>);
    /// The device address of a buffer the kernel writes, and its guard.
    fn ptr_mut<'a>(&'a self, buf: &'a mut Self::Buf) -> (Ptr, Self::Guard<'a>);
    fn launch<P: KernelParams>(&self, grid: [u32; 3], block: [u32; 3], params: &P);
    /// Launches the batched twin of kernel `name` (`name_runs`, see `KERNEL` in
    /// kernels/common.cuh) over `grid`, whose z is the number of runs, reading run z's parameter
    /// struct from the device array at `table`.
    fn launch_runs(&self, name: &'static str, grid: [u32; 3], block: [u32; 3], table: Ptr);
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

/// The guards of one launch's buffers, kept until the launch is queued (the end of the
/// operation), so that a device that orders buffers by events records them after the work.
pub(crate) struct Guards<'a, D: Device + 'a> {
    device: &'a D,
    kept: Vec<D::Guard<'a>>,
}

impl<'a, D: Device> Guards<'a, D> {
    pub(crate) fn new(device: &'a D) -> Self {
        Guards { device, kept: Vec::new() }
    }
    pub(crate) fn ptr(&mut self, buf: &'a D::Buf) -> Ptr {
        let (p, g) = self.device.ptr(buf);
        self.kept.push(g);
        p
    }
    pub(crate) fn ptr_mut(&mut self, buf: &'a mut D::Buf) -> Ptr {
        let (p, g) = self.device.ptr_mut(buf);
        self.kept.push(g);
        p
    }
    pub(super) fn array<T: Elem>(&mut self, a: &'a D::Array<T>) -> Ptr {
        let (p, g) = self.device.array_ptr(a);
        self.kept.push(g);
        p
    }
    pub(crate) fn array_mut<T: Elem>(&mut self, a: &'a mut D::Array<T>) -> Ptr {
        let (p, g) = self.device.array_ptr_mut(a);
        self.kept.push(g);
        p
    }
}
