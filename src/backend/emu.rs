//! The CPU emulation of the CUDA kernels: the same `kernels/*.cu`, compiled as C++20 by
//! build.rs against the shim in `kernels/emu/shim.h` and run with one fiber per CUDA thread.
//! Slow, and meant for tests: it proves the kernels and every launch path on machines without
//! a GPU.

use std::ffi::{c_char, c_void, CString};

use super::kernels::{runs_twin, Device, KernelBackend, KernelParams, Ptr};
use super::Elem;

extern "C" {
    fn hnca_emu_launch(name: *const c_char, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, params: *const c_void) -> i32;
    fn hnca_emu_param_size(name: *const c_char) -> std::ffi::c_ulong;
    fn hnca_emu_last_error() -> *const c_char;
    fn hnca_emu_set_schedule(order: i32, seed: u64);
    fn hnca_emu_selfcheck(kind: i32, threads: u32, salt: f32, out: *mut f32) -> i32;
}

/// The order in which the emulation runs a block's threads between two barriers. Kernels must
/// give the same bits under every one; the tests check that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Forward,
    Reverse,
    /// A permutation drawn afresh for every block and every stretch between barriers.
    Shuffle(u64),
}

impl Schedule {
    /// The schedules the tests run kernels under.
    pub const CHECKED: [Schedule; 4] = [Schedule::Forward, Schedule::Reverse, Schedule::Shuffle(1), Schedule::Shuffle(2)];
}

/// Sets the schedule of the calling thread's later launches (the default is forward, or
/// HNCA_EMU_SCHEDULE=forward|reverse|shuffle:SEED).
pub fn set_schedule(s: Schedule) {
    let (order, seed) = match s {
        Schedule::Forward => (0, 0),
        Schedule::Reverse => (1, 0),
        Schedule::Shuffle(seed) => (2, seed),
    };
    // SAFETY: sets a thread-local of the emulation.
    unsafe { hnca_emu_set_schedule(order, seed) }
}

/// The shim's own mistakes-on-purpose (kernels/emu/emu.cpp): runs the self-check kernel of
/// `kind` (0: a missing barrier, 1: the same kernel correct, 2: a barrier half the block never
/// reaches, 3: the halves at different barriers) on one block of `threads` (≤ 64) threads,
/// thread t writing t + 1 + `salt` to its shared slot and reading its neighbour's. Returns what
/// each thread read, or the emulation's error.
pub fn selfcheck(kind: i32, threads: u32, salt: f32) -> Result<Vec<f32>, String> {
    let mut out = vec![0.0f32; threads as usize];
    // SAFETY: `out` holds `threads` floats and outlives the blocking call.
    match unsafe { hnca_emu_selfcheck(kind, threads, salt, out.as_mut_ptr()) } {
        0 => Ok(out),
        2 => Err(last_error()),
        _ => Err(format!("the self-check takes 1 to 64 threads, not {threads}")),
    }
}

fn last_error() -> String {
    // SAFETY: returns a NUL-terminated thread-local string that lives until the next launch.
    unsafe { std::ffi::CStr::from_ptr(hnca_emu_last_error()) }.to_string_lossy().into_owned()
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
    fn launch_runs(&self, name: &'static str, grid: [u32; 3], block: [u32; 3], table: Ptr) {
        let twin = CString::new(runs_twin(name)).expect("kernel names have no NUL");
        // SAFETY: the twin's one parameter is the device (here: host) address `table` of
        // `grid[2]` parameter structs of `name`, each addressing live Vecs, for this blocking call.
        let rc = unsafe {
            hnca_emu_launch(twin.as_ptr(), grid[0], grid[1], grid[2], block[0], block[1], block[2], &table as *const Ptr as *const c_void)
        };
        match rc {
            0 => {}
            1 => panic!("the emulation has no kernel named {}", runs_twin(name)),
            _ => panic!("kernel {} misused a barrier: {}", runs_twin(name), last_error()),
        }
    }

    fn launch<P: KernelParams>(&self, grid: [u32; 3], block: [u32; 3], params: &P) {
        let name = CString::new(P::NAME).expect("kernel names have no NUL");
        // SAFETY: `params` is the #[repr(C)] twin of the kernel's struct (KernelParams' contract),
        // and every pointer in it addresses a live Vec for the duration of this blocking call.
        let rc = unsafe {
            hnca_emu_launch(name.as_ptr(), grid[0], grid[1], grid[2], block[0], block[1], block[2], params as *const P as *const c_void)
        };
        match rc {
            0 => {}
            1 => panic!("the emulation has no kernel named {}", P::NAME),
            _ => panic!("kernel {} misused a barrier: {}", P::NAME, last_error()),
        }
    }
}
