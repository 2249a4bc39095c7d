//! The CPU emulation of the CUDA kernels: the same `kernels/*.cu`, compiled as C++20 by
//! build.rs against the shim in `kernels/emu/shim.h` and run with one fiber per CUDA thread.
//! Slow, and meant for tests: it proves the kernels and every launch path on machines without
//! a GPU.

use std::ffi::{c_char, c_void, CString};

use super::kernels::{Device, KernelBackend, KernelParams, Ptr};
use super::Elem;

extern "C" {
    fn hnca_emu_launch(name: *const c_char, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, params: *const c_void) -> i32;
    fn hnca_emu_param_size(name: *const c_char) -> std::ffi::c_ulong;
}

/// Host memory standing in for device memory; a buffer's address is its host address.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmuDevice;

/// The kernel backend on the emulated device.
pub type EmuBackend = KernelBackend<EmuDevice>;

pub fn emu_backend() -> EmuBackend {
    KernelBackend::new(EmuDevice)
}

/// sizeof the kernel's parameter struct as the C++ compiler lays it out (0: no such kernel).
pub fn param_size(kernel: &str) -> usize {
    let name = CString::new(kernel).expect("kernel names have no NUL");
    // SAFETY: the function only reads the NUL-terminated name.
    unsafe { hnca_emu_param_size(name.as_ptr()) as usize }
}

impl Device for EmuDevice {
    type Buf = Vec<f32>;
    type Array<T: Elem> = Vec<T>;
    /// Launches run as they are made; nothing is recorded.
    type Graph = ();

    fn array<T: Elem>(&self, host: &[T]) -> Vec<T> {
        host.to_vec()
    }
    fn read_array<T: Elem>(&self, a: &Vec<T>) -> Vec<T> {
        a.clone()
    }
    fn write_array<T: Elem>(&self, a: &mut Vec<T>, host: &[T]) {
        a.copy_from_slice(host);
    }
    fn array_ptr<'a, T: Elem>(&'a self, a: &'a Vec<T>) -> (Ptr, ()) {
        (a.as_ptr() as Ptr, ())
    }
    fn array_ptr_mut<'a, T: Elem>(&'a self, a: &'a mut Vec<T>) -> (Ptr, ()) {
        (a.as_mut_ptr() as Ptr, ())
    }
    fn end_recording(&self) -> Result<(), String> {
        Ok(())
    }
    fn replay(&self, _graph: &()) {}

    fn alloc_zeros(&self, n: usize) -> Vec<f32> {
        vec![0.0; n]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn write(&self, dst: &mut Vec<f32>, host: &[f32]) {
        dst.copy_from_slice(host);
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    type Guard<'a> = ();
    fn ptr<'a>(&'a self, buf: &'a Vec<f32>) -> (Ptr, ()) {
        (buf.as_ptr() as Ptr, ())
    }
    fn ptr_mut<'a>(&'a self, buf: &'a mut Vec<f32>) -> (Ptr, ()) {
        (buf.as_mut_ptr() as Ptr, ())
    }
    fn launch<P: KernelParams>(&self, grid: [u32; 3], block: [u32; 3], params: &P) {
        let name = CString::new(P::NAME).expect("kernel names have no NUL");
        // SAFETY: `params` is the #[repr(C)] twin of the kernel's struct (KernelParams' contract),
        // and every pointer in it addresses a live Vec for the duration of this blocking call.
        let rc = unsafe {
            hnca_emu_launch(name.as_ptr(), grid[0], grid[1], grid[2], block[0], block[1], block[2], params as *const P as *const c_void)
        };
        assert_eq!(rc, 0, "the emulation has no kernel named {}", P::NAME);
    }
}
