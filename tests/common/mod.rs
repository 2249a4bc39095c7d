#![allow(dead_code)]
pub mod bandit_exact;
pub mod compare;
pub mod exact;
pub mod exact_k;
pub mod fake_cuda;

/// Says why a test cannot run here, where it is always seen (libtest captures `eprintln!` of
/// passing tests, but not writes to the stderr handle itself). Under CI (the `CI` variable set,
/// as `.ci/run` runs) nothing may skip: `bash .ci/run` installs everything the tests need, so a
/// test that cannot run there is a failure, not a skip.
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("cannot run under CI, where no test may skip: {reason}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {reason}");
}

/// Whether this is a CI run (`CI` set to anything but "" or "false").
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A model whose shapes cross every launch constant of the kernels (src/backend/kernels.rs), so
/// that whole steps exercise the paths single-operation tests reach only by construction:
/// 1031 inputs (the decoder's children of layer 1, spanning three of the credit pass's
/// 512-child shared-memory chunks, and above the 128-thread reduction and credit blocks), a first layer of
/// 131 units and a second of 70 (wider than one block of 64 or 128 threads, and neither a
/// multiple of 64 nor of the credit pass's 8-parent group), a top layer of 9, and a batch of 7
/// (a multiple of nothing; 7·131 elements span several 256-thread elementwise blocks).
pub const WIDE_INPUTS: usize = 1031;
pub const WIDE_LAYERS: [usize; 3] = [131, 70, 9];
pub const WIDE_BATCH: usize = 7;
/// The bandit's hidden layers for the same purpose: its children are hidden layers, so the
/// second is the one spanning three 512-child chunks (and 1030 is not a multiple of 8).
pub const WIDE_BANDIT_LAYERS: [usize; 3] = [131, 1030, 9];

/// The bit patterns of f32 outputs, for [`under_every_schedule`].
pub fn bits32(v: &[f32]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits() as u64).collect()
}

/// The bit patterns of f64 outputs, for [`under_every_schedule`].
pub fn bits64(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `f` (which launches emulated kernels, checks them and returns their outputs' bits) under
/// every schedule the emulation has (kernels/emu/shim.h: forward, reverse, shuffles): a GPU runs
/// a block's threads in any order, so the outputs must agree bit for bit, and a missing
/// `__syncthreads` that one fixed order would hide makes them differ.
pub fn under_every_schedule(what: &str, f: impl Fn() -> Vec<u64>) {
    use hnca::backend::emu::{set_schedule, Schedule};
    let mut first: Option<Vec<u64>> = None;
    for schedule in Schedule::CHECKED {
        set_schedule(schedule);
        let out = f();
        match &first {
            None => first = Some(out),
            Some(want) => {
                let differ = out.len() != want.len() || out.iter().zip(want).any(|(a, b)| a != b);
                set_schedule(Schedule::Forward);
                assert!(!differ, "{what}: the emulated outputs under {schedule:?} differ from those under {:?}", Schedule::CHECKED[0]);
            }
        }
    }
    set_schedule(Schedule::Forward);
}
