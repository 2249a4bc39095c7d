//! Loading the emulated CUDA driver (kernels/emu/fake_cuda.cpp, built by build.rs) in place of
//! libcuda, in this process or in a child.
#![allow(dead_code)]

use std::sync::OnceLock;

/// The directory holding the emulated `libcuda.so`.
pub const DIR: &str = env!("HNCA_FAKE_CUDA_DIR");

/// Loads the emulated driver into this process, globally, so that cudarc's later
/// `dlopen("libcuda.so")` finds it by its soname instead of searching for a real one.
pub fn preload() -> &'static libloading::Library {
    static LIB: OnceLock<libloading::Library> = OnceLock::new();
    LIB.get_or_init(|| {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // SAFETY: the library's initialisers only set up empty tables.
        let lib = unsafe { Library::open(Some(format!("{DIR}/libcuda.so")), RTLD_NOW | RTLD_GLOBAL) }.expect("load the emulated libcuda");
        lib.into()
    })
}

/// The emulated driver's description of its last fault.
pub fn last_fault() -> String {
    let lib = preload();
    // SAFETY: the symbol is `const char* hnca_fake_cuda_last_fault()`, returning a string it owns.
    unsafe {
        let f = lib.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"hnca_fake_cuda_last_fault\0").unwrap();
        std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned()
    }
}

/// Clears the last fault and the poisoned context between provoked faults.
pub fn reset() {
    let lib = preload();
    // SAFETY: `void hnca_fake_cuda_reset()`.
    unsafe { lib.get::<unsafe extern "C" fn()>(b"hnca_fake_cuda_reset\0").unwrap()() }
}

/// LD_LIBRARY_PATH for a child process: the emulated driver first, then what this one has
/// (NVRTC, in CI).
pub fn library_path() -> String {
    match std::env::var("LD_LIBRARY_PATH") {
        Ok(rest) if !rest.is_empty() => format!("{DIR}:{rest}"),
        _ => DIR.to_string(),
    }
}

/// Opens the emulated GPU, or explains why the test cannot run here (no NVRTC to make PTX).
pub fn open_or_skip() -> Option<hnca::backend::cuda::CudaDevice> {
    preload();
    match hnca::backend::cuda::CudaDevice::open() {
        Ok(d) => Some(d),
        Err(e) if e.contains("NVRTC") => {
            super::skip(&format!("the emulated driver needs PTX and NVRTC is not loadable here ({e}); `bash .ci/run` installs it"));
            None
        }
        Err(e) => panic!("the emulated GPU did not open: {e}"),
    }
}
