//! The GPU device: cudarc's driver API (loaded at run time) running the kernel program, from
//! PTX that build.rs embedded where NVRTC was present, or compiled by NVRTC at first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use cudarc::nvrtc::Ptx;

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas};

use super::kernels::{runs_twin, Device, GemmParams, KernelBackend, KernelParams, Ptr, KERNELS, KERNELS_RUNS};
use super::{nvrtc, Elem};

/// The kernel backend on a GPU.
pub type CudaBackend = KernelBackend<CudaDevice>;

pub struct CudaDevice {
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    /// The first driver error since the last `take_error`; later operations are skipped.
    error: Mutex<Option<String>>,
    /// The GPU's name and compute capability, for messages.
    pub description: String,
    /// Where the kernels came from, e.g. "embedded PTX (compute_90), GEMMs in cuBLAS".
    pub kernels_from: String,
    /// cuBLAS, when its library loads; otherwise GEMMs run in the project's kernel.
    blas: Option<CudaBlas>,
    /// cuBLAS's workspace, given to it before any capture so that it allocates nothing then.
    _blas_workspace: Option<CudaSlice<u8>>,
    /// How many of each kind of driver work this device has asked for ([`Calls`]).
    calls: Mutex<Calls>,
    _ctx: Arc<CudaContext>,
}

/// The driver work a device asked for, counted by kind: what a training step costs the host
/// (`hnca bench --device cuda` reports them per step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    pub graph_launches: u64,
    pub kernel_launches: u64,
    pub blas_calls: u64,
    pub copies_to_device: u64,
    pub copies_to_host: u64,
    pub synchronisations: u64,
    pub allocations: u64,
}

impl Calls {
    /// Each kind in words, with its count.
    pub fn named(&self) -> [(&'static str, u64); 7] {
        [
            ("graph_launches", self.graph_launches),
            ("kernel_launches", self.kernel_launches),
            ("blas_calls", self.blas_calls),
            ("copies_to_device", self.copies_to_device),
            ("copies_to_host", self.copies_to_host),
            ("synchronisations", self.synchronisations),
            ("allocations", self.allocations),
        ]
    }
}

/// Bytes of cuBLAS's workspace (what it asks for on Hopper, and enough on Ampere).
const BLAS_WORKSPACE: usize = 32 << 20;

/// PTX embedded at build time, by virtual architecture.
fn embedded_ptx(arch: &str) -> Option<&'static str> {
    #[cfg(hnca_prebuilt_ptx)]
    {
        match arch {
            "compute_80" => return Some(include_str!(concat!(env!("OUT_DIR"), "/compute_80.ptx"))),
            "compute_90" => return Some(include_str!(concat!(env!("OUT_DIR"), "/compute_90.ptx"))),
            _ => {}
        }
    }
    let _ = arch;
    None
}

/// PTX for a GPU of compute capability (major, minor): embedded PTX for the newest of
/// compute_90/compute_80 it can run, else NVRTC's build for exactly that GPU, compiled once per
/// process and architecture.
fn ptx_for(major: i32, minor: i32) -> Result<(String, String), String> {
    let embedded = if major >= 9 { "compute_90" } else { "compute_80" };
    if major >= 8 {
        if let Some(ptx) = embedded_ptx(embedded) {
            return Ok((ptx.to_string(), format!("embedded PTX ({embedded})")));
        }
    }
    if !nvrtc::available() {
        return Err(format!("no embedded PTX for compute capability {major}.{minor} and NVRTC (libnvrtc.so.13) cannot be loaded"));
    }
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let arch = format!("compute_{major}{minor}");
    let mut cache = CACHE.get_or_init(Default::default).lock().map_err(|_| "NVRTC cache poisoned".to_string())?;
    if !cache.contains_key(&arch) {
        cache.insert(arch.clone(), nvrtc::compile_ptx(&arch)?);
    }
    let (maj, min) = nvrtc::version()?;
    Ok((cache[&arch].clone(), format!("NVRTC {maj}.{min} ({arch})")))
}

impl CudaDevice {
    /// Opens GPU 0 and loads every kernel, or says in one line why it cannot. Probes for the
    /// driver library first, so that a machine without CUDA never reaches a call that panics.
    pub fn open() -> Result<CudaDevice, String> {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver library (libcuda.so) could be loaded".into());
        }
        let count = CudaContext::device_count().map_err(|e| format!("the CUDA driver did not initialise: {e}"))?;
        if count < 1 {
            return Err("the CUDA driver reports no GPU".into());
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot create a context on GPU 0: {e}"))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("cannot query GPU 0: {e}"))?;
        let name = ctx.name().unwrap_or_else(|_| "GPU 0".into());
        let (ptx, kernels_from) = ptx_for(major, minor)?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| format!("the driver rejected the kernels' PTX: {e}"))?;
        let mut functions = HashMap::new();
        for (kernel, size) in KERNELS {
            let f = module.load_function(kernel).map_err(|e| format!("kernel {kernel} missing from the module: {e}"))?;
            check_parameter_list(&f, kernel, size)?;
            functions.insert(kernel, f);
        }
        // The batched twins take the device address of their runs' parameter structs.
        for kernel in KERNELS_RUNS {
            let f = module.load_function(kernel).map_err(|e| format!("kernel {kernel} missing from the module: {e}"))?;
            check_parameter_list(&f, kernel, std::mem::size_of::<Ptr>())?;
            functions.insert(kernel, f);
        }
        // One created stream for everything (a CUDA graph cannot be captured on the legacy NULL
        // stream). Every buffer is used on it alone, so it orders all work by itself, and
        // cudarc's per-buffer events would only add calls, and waits on events recorded before
        // a capture began, which a capture refuses.
        // SAFETY: called before any buffer of this context exists.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| format!("cannot create a stream on GPU 0: {e}"))?;
        // SAFETY: only tries to open the library.
        let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } { CudaBlas::new(stream.clone()).ok() } else { None };
        let blas_workspace = match &blas {
            Some(b) => {
                let mut ws = stream.alloc_zeros::<u8>(BLAS_WORKSPACE).map_err(|e| format!("cannot allocate cuBLAS's workspace: {e}"))?;
                let (ptr, _guard) = ws.device_ptr_mut(&stream);
                // SAFETY: the workspace outlives the handle's use of it (both live in the device).
                let status =
                    unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*b.handle(), ptr as *mut std::ffi::c_void, BLAS_WORKSPACE) };
                if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                    return Err(format!("cuBLAS refused its workspace: {status:?}"));
                }
                drop(_guard);
                Some(ws)
            }
            None => None,
        };
        let kernels_from = format!("{kernels_from}, GEMMs in {}", if blas.is_some() { "cuBLAS" } else { "the project's tiled kernel" });
        Ok(CudaDevice {
            stream,
            blas,
            _blas_workspace: blas_workspace,
            calls: Mutex::new(Calls::default()),
            functions,
            error: Mutex::new(None),
            description: format!("{name} (sm_{major}{minor})"),
            kernels_from,
            _ctx: ctx,
        })
    }

    fn record(&self, what: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(what);
        }
    }

    fn failed(&self) -> bool {
        self.error.lock().map(|e| e.is_some()).unwrap_or(true)
    }

    /// The driver work asked for so far.
    pub fn calls(&self) -> Calls {
        self.calls.lock().map(|c| *c).unwrap_or_default()
    }

    fn count(&self, f: impl FnOnce(&mut Calls)) {
        if let Ok(mut c) = self.calls.lock() {
            f(&mut c);
        }
    }

    /// A loaded kernel, for tests that drive the driver directly.
    pub fn function(&self, kernel: &str) -> Option<&CudaFunction> {
        self.functions.get(kernel)
    }

    /// The stream every operation is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all queued work (for timing).
    pub fn synchronize(&self) {
        self.count(|c| c.synchronisations += 1);
        if let Err(e) = self.stream.synchronize() {
            self.record(format!("synchronize: {e}"));
        }
    }
}

/// A row-major GEMM c (m, n) = alpha·A·B + beta·c restated for a column-major BLAS, which
/// computes C (m', n') = alpha·op(X1)·op(X2) + beta·C: here cᵀ = Bᵀ·Aᵀ, first = B, second = A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnMajorGemm {
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub first: Ptr,
    pub trans_first: bool,
    pub ld_first: i32,
    pub second: Ptr,
    pub trans_second: bool,
    pub ld_second: i32,
    pub ldc: i32,
}

/// How a column-major BLAS reads Mᵀ (c, r) for a matrix M (r, c) whose element (i, j) is at
/// i·sr + j·sc: (op T?, leading dimension), with the leading dimension cuBLAS requires
/// (at least max(1, rows of the matrix as stored)). A stride along a dimension of size 1 is
/// meaningless, so there any valid leading dimension will do; None if neither op can read it.
fn blas_operand(r: i32, c: i32, sr: i32, sc: i32) -> Option<(bool, i32)> {
    // op N: stored as Mᵀ (c, r) column-major, X[j + i·ld] = M[i, j].
    let as_n = (sc == 1 || c == 1).then(|| if r == 1 { c.max(1) } else { sr }).filter(|&ld| ld >= c.max(1));
    // op T: stored as M (r, c) column-major, X[i + j·ld] = M[i, j].
    let as_t = (sr == 1 || r == 1).then(|| if c == 1 { r.max(1) } else { sc }).filter(|&ld| ld >= r.max(1));
    as_n.map(|ld| (false, ld)).or(as_t.map(|ld| (true, ld)))
}

impl ColumnMajorGemm {
    /// The call for `p`, or None when a BLAS cannot read an operand with its strides.
    pub fn of(p: &GemmParams) -> Option<Self> {
        // First: op(X1) = Bᵀ (n, k), B (k, n). Second: op(X2) = Aᵀ (k, m), A (m, k).
        let (trans_first, ld_first) = blas_operand(p.k, p.n, p.b_row, p.b_col)?;
        let (trans_second, ld_second) = blas_operand(p.m, p.k, p.a_row, p.a_col)?;
        Some(ColumnMajorGemm {
            m: p.n,
            n: p.m,
            k: p.k,
            first: p.b,
            trans_first,
            ld_first,
            second: p.a,
            trans_second,
            ld_second,
            ldc: p.n.max(1),
        })
    }
}

/// Checks that a loaded kernel takes exactly one parameter of the size of its Rust parameter
/// struct, as the driver reads it from the compiled kernel (cuFuncGetParamInfo, CUDA 12.4+;
/// skipped on older drivers). A kernel whose parameter list drifted from its Rust twin thus fails
/// when the GPU is opened, not as garbage arguments at launch.
pub fn check_parameter_list(f: &CudaFunction, kernel: &str, rust_size: usize) -> Result<(), String> {
    use cudarc::driver::sys::{cuFuncGetParamInfo, culib, CUresult};
    // SAFETY: looks a symbol up in the already-loaded driver library.
    if unsafe { culib().get::<unsafe extern "C" fn()>(b"cuFuncGetParamInfo\0") }.is_err() {
        return Ok(());
    }
    let (mut offset, mut size) = (0usize, 0usize);
    // SAFETY: f is a live function of this context; the outputs are plain integers.
    let first = unsafe { cuFuncGetParamInfo(f.cu_function(), 0, &mut offset, &mut size) };
    if first != CUresult::CUDA_SUCCESS || size != rust_size {
        return Err(format!(
            "kernel {kernel}: the compiled kernel's first parameter is {size} bytes ({first:?}), its Rust parameter struct {rust_size}"
        ));
    }
    // SAFETY: as above.
    let second = unsafe { cuFuncGetParamInfo(f.cu_function(), 1, &mut offset, &mut size) };
    if second == CUresult::CUDA_SUCCESS {
        return Err(format!("kernel {kernel} takes more than the one parameter struct the Rust side passes"));
    }
    Ok(())
}

/// Allocation failures cannot be deferred like other errors (there is no buffer to return):
/// they end the program with the driver's message.
fn must<T>(what: &str, r: Result<T, cudarc::driver::DriverError>) -> T {
    r.unwrap_or_else(|e| panic!("CUDA {what} failed: {e}"))
}

/// A recorded step. It moves between threads with the trainer that owns it (the runs of a
/// batch take turns to launch their shared step, one at a time behind the batch's lock); the
/// driver's graph handles are not tied to the thread that made them.
pub struct StepGraph(CudaGraph);

// Safety: the handles are used by one thread at a time (the owner holds it exclusively or
// behind a lock), and the CUDA driver API accepts them from any thread of the process.
unsafe impl Send for StepGraph {}

impl Device for CudaDevice {
    type Buf = CudaSlice<f32>;
    type Array<T: Elem> = CudaSlice<T>;
    type Graph = StepGraph;
    type Guard<'a> = SyncOnDrop<'a>;

    fn array<T: Elem>(&self, host: &[T]) -> CudaSlice<T> {
        self.count(|c| {
            c.allocations += 1;
            c.copies_to_device += !host.is_empty() as u64;
        });
        if host.is_empty() {
            return must("allocation", self.stream.alloc_zeros::<T>(1));
        }
        must("allocation", self.stream.clone_htod(host))
    }
    fn read_array<T: Elem>(&self, a: &CudaSlice<T>) -> Vec<T> {
        self.count(|c| {
            c.copies_to_host += 1;
            c.synchronisations += 1;
        });
        // A copy into pageable memory returns once it is done, but say so: the host reads it next.
        match self.stream.clone_dtoh(a).and_then(|v| self.stream.synchronize().map(|_| v)) {
            Ok(v) => v,
            Err(e) => {
                self.record(format!("copy to host: {e}"));
                vec![T::default(); a.len()]
            }
        }
    }
    fn write_array<T: Elem>(&self, a: &mut CudaSlice<T>, host: &[T]) {
        self.count(|c| c.copies_to_device += 1);
        if let Err(e) = self.stream.memcpy_htod(host, a) {
            self.record(format!("copy to device: {e}"));
        }
    }
    fn array_ptr<'a, T: Elem>(&'a self, a: &'a CudaSlice<T>) -> (Ptr, SyncOnDrop<'a>) {
        a.device_ptr(&self.stream)
    }
    fn array_ptr_mut<'a, T: Elem>(&'a self, a: &'a mut CudaSlice<T>) -> (Ptr, SyncOnDrop<'a>) {
        a.device_ptr_mut(&self.stream)
    }
    fn begin_recording(&self) -> bool {
        if self.failed() {
            return false;
        }
        match self.stream.begin_capture(cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL) {
            Ok(()) => true,
            Err(e) => {
                self.record(format!("beginning a stream capture: {e}"));
                false
            }
        }
    }
    fn end_recording(&self) -> Result<StepGraph, String> {
        match self.stream.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0)) {
            Ok(Some(g)) => Ok(StepGraph(g)),
            Ok(None) => Err("the stream capture recorded nothing".into()),
            Err(e) => Err(format!("ending the stream capture: {e}")),
        }
    }
    fn replay(&self, graph: &StepGraph) {
        if self.failed() {
            return;
        }
        self.count(|c| c.graph_launches += 1);
        if let Err(e) = graph.0.launch() {
            self.record(format!("launching the step's CUDA graph: {e}"));
        }
    }

    fn alloc_zeros(&self, n: usize) -> CudaSlice<f32> {
        self.count(|c| c.allocations += 1);
        // Zero-length buffers stand for absent ones; the driver wants at least one element.
        must("allocation", self.stream.alloc_zeros::<f32>(n.max(1)))
    }
    fn upload(&self, host: &[f32]) -> CudaSlice<f32> {
        if host.is_empty() {
            return self.alloc_zeros(0);
        }
        self.count(|c| {
            c.allocations += 1;
            c.copies_to_device += 1;
        });
        must("allocation", self.stream.clone_htod(host))
    }
    fn download(&self, buf: &CudaSlice<f32>) -> Vec<f32> {
        self.count(|c| {
            c.copies_to_host += 1;
            c.synchronisations += 1;
        });
        match self.stream.clone_dtoh(buf).and_then(|v| self.stream.synchronize().map(|_| v)) {
            Ok(v) => v,
            Err(e) => {
                self.record(format!("copy to host: {e}"));
                vec![0.0; buf.len()]
            }
        }
    }
    fn write(&self, dst: &mut CudaSlice<f32>, host: &[f32]) {
        self.count(|c| c.copies_to_device += 1);
        if let Err(e) = self.stream.memcpy_htod(host, dst) {
            self.record(format!("copy to device: {e}"));
        }
    }
    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }
    fn ptr<'a>(&'a self, buf: &'a CudaSlice<f32>) -> (Ptr, SyncOnDrop<'a>) {
        buf.device_ptr(&self.stream)
    }
    fn ptr_mut<'a>(&'a self, buf: &'a mut CudaSlice<f32>) -> (Ptr, SyncOnDrop<'a>) {
        buf.device_ptr_mut(&self.stream)
    }
    fn launch_runs(&self, name: &'static str, grid: [u32; 3], block: [u32; 3], table: Ptr) {
        if self.failed() {
            return;
        }
        self.count(|c| c.kernel_launches += 1);
        let twin = runs_twin(name);
        let f = &self.functions[twin];
        let cfg = LaunchConfig { grid_dim: (grid[0], grid[1], grid[2]), block_dim: (block[0], block[1], block[2]), shared_mem_bytes: 0 };
        let mut args = self.stream.launch_builder(f);
        args.arg(&table);
        // SAFETY: the twin takes one device address, of a live table of `grid[2]` parameter
        // structs of `name`, each addressing live buffers of this context.
        if let Err(e) = unsafe { args.launch(cfg) } {
            self.record(format!("launching {twin}: {e}"));
        }
    }
    fn launch<P: KernelParams>(&self, grid: [u32; 3], block: [u32; 3], params: &P) {
        if self.failed() {
            return;
        }
        self.count(|c| c.kernel_launches += 1);
        let f = &self.functions[P::NAME];
        let cfg = LaunchConfig { grid_dim: (grid[0], grid[1], grid[2]), block_dim: (block[0], block[1], block[2]), shared_mem_bytes: 0 };
        // The struct's bytes with its padding zeroed, in storage aligned for P: a struct's
        // padding holds whatever was on the stack (often half of some stale address), which
        // would make a recorded graph's bytes differ from run to run and reads as a pointer to
        // freed memory to the emulated driver's use-after-free scan.
        let bytes = params.to_bytes();
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` holds at least `bytes.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        const { assert!(std::mem::align_of::<P>() <= 8, "parameter structs hold fields of at most 8 bytes") };
        // SAFETY: `words` is 8-byte aligned and holds size_of::<P>() bytes that are P's fields
        // at their offsets (KernelParams::to_bytes), every bit pattern of which is valid (plain
        // integers, floats and addresses); the reference does not outlive `words`.
        let padded: &P = unsafe { &*words.as_ptr().cast::<P>() };
        let mut args = self.stream.launch_builder(f);
        args.arg(padded);
        // SAFETY: P is the kernel's parameter struct (KernelParams' contract) and its addresses
        // point into live buffers of this context, sized by the launching operation.
        if let Err(e) = unsafe { args.launch(cfg) } {
            self.record(format!("launching {}: {e}", P::NAME));
        }
    }
    fn has_vendor_gemm(&self, p: &GemmParams) -> bool {
        self.blas.is_some() && p.bias == 0 && ColumnMajorGemm::of(p).is_some()
    }

    fn vendor_gemm(&self, p: &GemmParams) {
        let Some(blas) = &self.blas else { return };
        if self.failed() {
            return;
        }
        let Some(call) = ColumnMajorGemm::of(p) else { return };
        self.count(|c| c.blas_calls += 1);
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        // SAFETY: the pointers address live buffers of this context with the extents the
        // operation that built `p` sized them for; alpha and beta are host scalars.
        let r = unsafe {
            cudarc::cublas::result::sgemm(
                *blas.handle(),
                op(call.trans_first),
                op(call.trans_second),
                call.m,
                call.n,
                call.k,
                &p.alpha,
                call.first as *const f32,
                call.ld_first,
                call.second as *const f32,
                call.ld_second,
                &p.beta,
                p.c as *mut f32,
                call.ldc,
            )
        };
        if let Err(e) = r {
            self.record(format!("cuBLAS sgemm: {e:?}"));
        }
    }

    fn take_error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}
