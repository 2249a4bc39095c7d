//! The emulated CUDA driver catches the faults a GPU would (or would silently suffer): each is
//! provoked on purpose and must come back as the real error code with a clear message.
//! One test, scenario after scenario: a fault poisons the (process-wide) context, which the
//! emulated driver's test hook clears in between.

mod common;

use std::ffi::c_void;

use common::fake_cuda;
use cudarc::driver::result;
use cudarc::driver::sys::cudaError_enum as CuResult;
use hnca::backend::cuda::check_parameter_list;
use hnca::backend::kernels::{AffineParams, Device, GemmParams, KernelParams};

/// Asserts that the device recorded a driver error with `code`, and that the emulated driver
/// described it with `words`; then clears the fault.
/// The emulated driver is one per process and a global-mode capture makes it refuse other
/// threads' calls too (as a real driver does), so the tests here take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn assert_fault(error: Option<String>, code: &str, words: &str) {
    let error = error.unwrap_or_else(|| panic!("expected {code}, but the device reported no error"));
    assert!(error.contains(code), "expected {code}, got: {error}");
    let fault = fake_cuda::last_fault();
    assert!(fault.contains(words), "the driver's description {fault:?} lacks {words:?}");
    fake_cuda::reset();
}

fn assert_raw_fault<T: std::fmt::Debug>(r: Result<T, result::DriverError>, code: CuResult, words: &str) {
    match r {
        Err(e) => assert_eq!(e.0, code, "{e:?}"),
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
    }
    let fault = fake_cuda::last_fault();
    assert!(fault.contains(words), "the driver's description {fault:?} lacks {words:?}");
    fake_cuda::reset();
}

#[test]
fn the_emulated_driver_reports_every_kind_of_fault() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(d) = fake_cuda::open_or_skip() else { return };

    // A kernel writing past the end of its output: 20 floats into an allocation of 10.
    let mut small = d.alloc_zeros(10);
    let bias = d.upload(&[1.0; 20]);
    let p = AffineParams { out: d.ptr_mut(&mut small).0, x: d.ptr(&bias).0, scale: 0.0, shift: 1.0, n: 20 };
    d.launch([1, 1, 1], [32, 1, 1], &p);
    assert_fault(d.take_error(), "CUDA_ERROR_ILLEGAL_ADDRESS", "past the end of the 40-byte allocation");
    // Where the write stays inside, the same launch is fine.
    d.launch([1, 1, 1], [32, 1, 1], &AffineParams { n: 10, ..p });
    assert_eq!(d.take_error(), None);
    assert_eq!(d.download(&small), vec![1.0; 10]);

    // A kernel given memory that was freed.
    let freed = d.alloc_zeros(16);
    let dangling = d.ptr(&freed).0;
    drop(freed);
    d.launch([1, 1, 1], [32, 1, 1], &AffineParams { out: dangling, x: d.ptr(&bias).0, scale: 0.0, shift: 1.0, n: 16 });
    assert_fault(d.take_error(), "CUDA_ERROR_ILLEGAL_ADDRESS", "allocation that was freed");

    // A copy larger than its destination.
    let stream = d.stream().cu_stream();
    let host = [0.0f32; 20];
    // SAFETY: the emulated driver checks the range and refuses the copy.
    assert_raw_fault(
        unsafe { result::memcpy_htod_async(d.ptr(&small).0, &host[..], stream) },
        CuResult::CUDA_ERROR_INVALID_VALUE,
        "of 80 bytes at offset 0 of a 40-byte allocation",
    );

    // Freeing twice.
    // SAFETY: raw driver calls on memory this test owns.
    let raw = unsafe { result::malloc_sync(64) }.unwrap();
    unsafe { result::free_sync(raw) }.unwrap();
    assert_raw_fault(unsafe { result::free_sync(raw) }, CuResult::CUDA_ERROR_INVALID_VALUE, "twice");

    // A launch on a stream that was destroyed.
    let gone = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
    // SAFETY: the stream is not used by anything else.
    unsafe { result::stream::destroy(gone) }.unwrap();
    let f = d.function(AffineParams::NAME).unwrap();
    let mut arg = AffineParams { n: 10, ..p };
    let mut args = [&mut arg as *mut AffineParams as *mut c_void];
    // SAFETY: a valid function and argument; the driver refuses the stream.
    assert_raw_fault(
        unsafe { result::launch_kernel(f.cu_function(), (1, 1, 1), (32, 1, 1), 0, gone, &mut args) },
        CuResult::CUDA_ERROR_INVALID_HANDLE,
        "destroyed stream",
    );

    // Launch configurations a GPU refuses: more than 1,024 threads, a zero grid, too much
    // dynamic shared memory.
    d.launch([1, 1, 1], [2048, 1, 1], &AffineParams { n: 10, ..p });
    assert_fault(d.take_error(), "CUDA_ERROR_INVALID_VALUE", "which a GPU refuses");
    d.launch([0, 1, 1], [32, 1, 1], &AffineParams { n: 10, ..p });
    assert_fault(d.take_error(), "CUDA_ERROR_INVALID_VALUE", "which a GPU refuses");
    // SAFETY: as above.
    assert_raw_fault(
        unsafe { result::launch_kernel(f.cu_function(), (1, 1, 1), (32, 1, 1), 64 * 1024, stream, &mut args) },
        CuResult::CUDA_ERROR_INVALID_VALUE,
        "dynamic shared memory",
    );

    // A Rust parameter struct whose size drifted from the kernel's: refused when the GPU opens.
    let gemm = d.function(GemmParams::NAME).unwrap();
    let size = std::mem::size_of::<GemmParams>();
    assert_eq!(check_parameter_list(gemm, "gemm", size), Ok(()));
    let err = check_parameter_list(gemm, "gemm", size + 8).unwrap_err();
    assert!(err.contains("gemm") && err.contains(&size.to_string()), "{err}");

    // PTX whose kernel takes other parameters than its CPU twin: the module is refused.
    let ptx = hnca::backend::nvrtc::compile_ptx("compute_90").unwrap();
    let needle = format!("gemm_param_0[{size}]");
    assert!(ptx.contains(&needle), "the PTX does not declare {needle}");
    let bad = std::ffi::CString::new(ptx.replace(&needle, &format!("gemm_param_0[{}]", size + 8))).unwrap();
    // SAFETY: a NUL-terminated PTX image.
    assert_raw_fault(unsafe { result::module::load_data(bad.as_ptr() as *const c_void) }, CuResult::CUDA_ERROR_INVALID_PTX, "kernel gemm");

    // After all that, ordinary work still runs.
    let again = d.upload(&[2.0; 4]);
    assert_eq!(d.download(&again), vec![2.0; 4]);
    assert_eq!(d.take_error(), None);
}

/// What a real driver refuses during a stream capture, the emulated one refuses with the same
/// codes, and the capture is then invalidated; a capture of launches replays them when launched.
#[test]
fn the_emulated_driver_records_graphs_and_refuses_what_a_capture_forbids() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let Some(d) = fake_cuda::open_or_skip() else { return };
    let mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL;
    let stream = d.stream().cu_stream();

    // No capture on the legacy NULL stream.
    // SAFETY: raw driver calls on handles this test owns.
    assert_raw_fault(
        unsafe { result::stream::begin_capture(std::ptr::null_mut(), mode) },
        CuResult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
        "legacy",
    );
    fake_cuda::reset();

    // A recorded launch runs only when the graph is launched, and every time.
    let x = d.upload(&[1.0, 2.0, 3.0]);
    let mut out = d.alloc_zeros(3);
    let p = AffineParams { out: d.ptr_mut(&mut out).0, x: d.ptr(&x).0, scale: 2.0, shift: 1.0, n: 3 };
    // SAFETY: as above.
    unsafe { result::stream::begin_capture(stream, mode) }.unwrap();
    d.launch([1, 1, 1], [32, 1, 1], &p);
    // SAFETY: as above.
    let graph = unsafe { result::stream::end_capture(stream) }.unwrap();
    assert_eq!(d.take_error(), None);
    assert_eq!(d.download(&out), vec![0.0; 3], "a captured launch must not run");
    // SAFETY: as above.
    let exec = unsafe { result::graph::instantiate(graph, CUgraphInstantiate_flags(0)) }.unwrap();
    unsafe { result::graph::launch(exec, stream) }.unwrap();
    assert_eq!(d.download(&out), vec![3.0, 5.0, 7.0]);
    d.write(&mut out, &[0.0; 3]);
    unsafe { result::graph::launch(exec, stream) }.unwrap();
    assert_eq!(d.download(&out), vec![3.0, 5.0, 7.0], "a replay runs the launches again");

    // Allocation, a copy and synchronisation inside a capture are refused, and the capture is
    // invalidated: ending it fails.
    type Refused = fn(cudarc::driver::sys::CUstream) -> Result<(), result::DriverError>;
    let refused: [(&str, Refused); 3] = [
        ("allocating memory", |_| unsafe { result::malloc_sync(64) }.map(|_| ())),
        ("a copy from pageable host memory", |s| unsafe { result::memcpy_htod_async(8, &[0.0f32][..], s) }),
        ("synchronising a stream", |s| unsafe { result::stream::synchronize(s) }),
    ];
    for (what, call) in refused {
        // SAFETY: as above.
        unsafe { result::stream::begin_capture(stream, mode) }.unwrap();
        assert_raw_fault(call(stream), CuResult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, what);
        // SAFETY: as above.
        assert_raw_fault(unsafe { result::stream::end_capture(stream) }, CuResult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "invalidated");
        fake_cuda::reset();
    }

    // Waiting, inside a capture, on an event recorded outside it.
    let event = result::event::create(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT).unwrap();
    // SAFETY: as above.
    unsafe { result::event::record(event, stream) }.unwrap();
    unsafe { result::stream::begin_capture(stream, mode) }.unwrap();
    let waited = unsafe { result::stream::wait_event(stream, event, cudarc::driver::sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT) };
    assert_raw_fault(waited, CuResult::CUDA_ERROR_STREAM_CAPTURE_ISOLATION, "outside its capture");
    assert_raw_fault(unsafe { result::stream::end_capture(stream) }, CuResult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "invalidated");
    fake_cuda::reset();

    // A replayed launch is checked like a direct one: a graph that writes past its buffer faults.
    let p_bad = AffineParams { n: 40, ..p };
    // SAFETY: as above.
    unsafe { result::stream::begin_capture(stream, mode) }.unwrap();
    d.launch([1, 1, 1], [64, 1, 1], &p_bad);
    let bad = unsafe { result::stream::end_capture(stream) }.unwrap();
    let bad_exec = unsafe { result::graph::instantiate(bad, CUgraphInstantiate_flags(0)) }.unwrap();
    assert_raw_fault(unsafe { result::graph::launch(bad_exec, stream) }, CuResult::CUDA_ERROR_ILLEGAL_ADDRESS, "past the end");
    fake_cuda::reset();
    assert_eq!(d.take_error(), None);
}
