//! The emulation's own strictness (kernels/emu/shim.h): it catches a missing barrier, a barrier
//! part of a block never reaches, threads at different barriers and reads of shared memory the
//! block did not write; whole training runs on the
//! emulated driver give the same bits under every schedule of a block's threads; and the
//! AddressSanitizer build of the emulated driver reports a kernel's out-of-bounds read, and runs
//! the whole program (every VAE estimator, the bandit, eval, sample) without one.

mod common;

use std::process::Command;

use assert_cmd::prelude::*;
use common::fake_cuda;
use hnca::backend::emu::{selfcheck, set_schedule, Schedule};

/// Kind 0 writes a shared slot and reads the neighbour's with no barrier between, kind 1 has the
/// barrier: only the first depends on the order the threads run in. Each launch writes fresh
/// values (the salt), and a slot not yet written holds the poison, so a read of the slot before
/// its thread wrote it shows.
#[test]
fn the_emulation_catches_a_missing_barrier() {
    let threads = 32;
    let correct = |salt: f32| -> Vec<f32> { (0..threads).map(|t| ((t + 1) % threads + 1) as f32 + salt).collect() };
    let mut racy = Vec::new();
    for (i, schedule) in Schedule::CHECKED.into_iter().enumerate() {
        set_schedule(schedule);
        let salt = 100.0 * (2 * i + 1) as f32;
        assert_eq!(selfcheck(1, threads as u32, salt).unwrap(), correct(salt), "{schedule:?}: with the barrier");
        let salt = 100.0 * (2 * i + 2) as f32;
        racy.push(selfcheck(0, threads as u32, salt).unwrap() != correct(salt));
    }
    set_schedule(Schedule::Forward);
    assert_eq!(racy, [true; 4], "every order reads some slot before its thread wrote it");
}

/// Shared memory is poisoned before every block: a slot no thread of this launch wrote reads as
/// NaN, not as what the previous launch left there (kind 1 first fills every slot).
#[test]
fn shared_memory_a_block_did_not_write_reads_as_nan() {
    let threads = 32usize;
    let salt = 7000.0;
    assert!(selfcheck(1, 64, 1.0).unwrap().iter().all(|v| v.is_finite()), "every slot filled");
    let out = selfcheck(4, threads as u32, salt).unwrap();
    for (t, v) in out.iter().enumerate() {
        if t < threads / 2 {
            assert_eq!(*v, (t + 1) as f32 + salt, "slot {t} was written this block");
        } else {
            assert!(v.is_nan(), "slot {t} was not written this block but reads {v}");
        }
    }
}

#[test]
fn a_barrier_reached_by_part_of_a_block_is_an_error() {
    let err = selfcheck(2, 32, 0.0).unwrap_err();
    assert!(err.contains("reached by only part of the block") && err.contains("emu.cpp") && err.contains("block (0, 0, 0)"), "{err}");
}

#[test]
fn threads_waiting_at_different_barriers_are_an_error() {
    let err = selfcheck(3, 32, 0.0).unwrap_err();
    assert!(err.contains("waits at the barrier of") && err.contains("emu.cpp"), "{err}");
}

fn hnca_bin() -> Command {
    Command::cargo_bin("hnca").unwrap()
}

/// The emulated driver is usable here (NVRTC makes the PTX it loads); the reason otherwise.
fn driver_or_skip() -> bool {
    fake_cuda::open_or_skip().is_some()
}

/// A few steps of every kind of run on the emulated GPU, checkpoints byte for byte equal under
/// the forward, reverse and two shuffled orders of every block's threads.
#[test]
fn training_on_the_emulated_gpu_gives_the_same_bits_under_every_schedule() {
    if !driver_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runs: [&[&str]; 3] = [
        &["vae", "--layers", "131,9", "--batch-size", "7", "--estimator", "hnca"],
        &["vae", "--layers", "9,5", "--batch-size", "7", "--estimator", "disarm"],
        &["bandit", "--layers", "70,9", "--batch-size", "7", "--estimator", "hnca"],
    ];
    for (i, args) in runs.iter().enumerate() {
        let mut first: Option<Vec<u8>> = None;
        for schedule in ["forward", "reverse", "shuffle:7", "shuffle:8"] {
            let ck = dir.path().join(format!("{i}-{schedule}.ck"));
            hnca_bin()
                .env("LD_LIBRARY_PATH", fake_cuda::library_path())
                .env("HNCA_EMU_SCHEDULE", schedule)
                .args(*args)
                .args(["--device", "cuda", "--steps", "6", "--test-every", "0", "--save"])
                .arg(&ck)
                .assert()
                .success();
            let bytes = std::fs::read(&ck).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(want) => assert!(&bytes == want, "{args:?}: the checkpoint under {schedule} differs from the forward order's"),
            }
        }
    }
}

/// Runs `hnca args` on the AddressSanitizer build of the emulated driver; returns its stderr.
fn hnca_under_asan(args: &[&str]) -> String {
    let trains = matches!(args[0], "vae" | "bandit");
    let out = hnca_bin()
        .env("LD_PRELOAD", env!("HNCA_LIBASAN"))
        .env("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1")
        .env("LD_LIBRARY_PATH", asan_library_path())
        .env("HNCA_EMU_SCHEDULE", "shuffle:3")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success() && !stderr.contains("AddressSanitizer"), "hnca {args:?} under AddressSanitizer:\n{stderr}");
    assert!(!trains || stderr.contains("emulated GPU"), "hnca {args:?} did not run on the emulated GPU:\n{stderr}");
    stderr
}

fn asan_library_path() -> String {
    let plain = fake_cuda::library_path();
    format!("{}:{}", env!("HNCA_FAKE_CUDA_ASAN_DIR"), plain.strip_prefix(&format!("{}:", fake_cuda::DIR)).unwrap_or(""))
}

/// Every kernel of every path reads only inside its buffers: the whole program on the
/// sanitizer's driver, at widths that cross the launch constants.
#[test]
fn the_whole_program_reads_nothing_out_of_bounds() {
    if !driver_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("vae.ck");
    let ck = ck.to_str().unwrap();
    let wide = ["--layers", "131,70,9", "--batch-size", "7", "--steps", "2", "--test-every", "0", "--device", "cuda"];
    for est in ["hnca", "hnca-nb", "reinforce", "reinforce-nb", "loo", "disarm"] {
        hnca_under_asan(&[&["vae", "--estimator", est], &wide[..], &["--save", ck]].concat());
    }
    hnca_under_asan(&[&["vae", "--estimator", "hnca", "--all-child", "--full-reward"], &wide[..]].concat());
    for est in ["hnca", "reinforce"] {
        hnca_under_asan(
            &[
                &["bandit", "--estimator", est, "--layers", "131,1030,9", "--batch-size", "7", "--steps", "2", "--test-every", "0"][..],
                &["--device", "cuda"],
            ]
            .concat(),
        );
    }
    // Batches of three runs: every kernel's batched twin, over the same widths.
    for (exp, est, layers) in [("vae", "hnca,double-cv", "131,70,9"), ("bandit", "hnca", "131,1030,9")] {
        let out = dir.path().join(format!("{exp}-runs"));
        let args = ["sweep", exp, "--estimators", est, "--seeds", "0-2", "--layers", layers, "--batch-size", "7", "--steps", "2"];
        let stderr = hnca_under_asan(
            &[&args[..], &["--test-every", "0", "--eval-k", "2", "--eval-images", "5", "--device", "cuda", "--out", out.to_str().unwrap()]]
                .concat(),
        );
        assert!(stderr.contains("trained as one batch") && stderr.contains("emulated GPU"), "{stderr}");
    }
    hnca_under_asan(&["eval", "--checkpoint", ck, "--k", "3", "--images", "9", "--device", "cuda"]);
    let png = dir.path().join("s.png");
    hnca_under_asan(&["sample", "--checkpoint", ck, "--out", png.to_str().unwrap(), "--rows", "2", "--cols", "3", "--device", "cuda"]);
}

/// The sanitizer's build reports a kernel reading one float past an allocation, which the
/// plain build's guard regions (they catch writes) let through. Runs this test binary again,
/// with the sanitizer's runtime, for the child below.
#[test]
fn the_sanitizer_build_reports_a_read_past_an_allocation() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sanitizer_child_reads_past_an_allocation", "--nocapture", "--test-threads=1"])
        .env("HNCA_ASAN_CHILD", "1")
        .env("LD_PRELOAD", env!("HNCA_LIBASAN"))
        .env("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the read past the end went unreported:\n{stderr}");
    assert!(stderr.contains("AddressSanitizer") && stderr.contains("READ of size 4"), "{stderr}");
    assert!(stderr.contains("read_past_end"), "the report names the kernel:\n{stderr}");
}

/// The child of the test above (with HNCA_ASAN_CHILD, on the sanitizer's driver, where it does
/// not return); alone, on the plain driver, where the read goes unnoticed.
#[test]
fn sanitizer_child_reads_past_an_allocation() {
    let child = std::env::var_os("HNCA_ASAN_CHILD").is_some();
    let path = if child { format!("{}/libcuda.so", env!("HNCA_FAKE_CUDA_ASAN_DIR")) } else { format!("{}/libcuda.so", fake_cuda::DIR) };
    // SAFETY: the library's initialisers only set up empty tables; the symbol is
    // `int hnca_fake_cuda_read_past_end()`.
    let rc = unsafe {
        let lib = libloading::Library::new(&path).unwrap();
        let f = lib.get::<unsafe extern "C" fn() -> i32>(b"hnca_fake_cuda_read_past_end\0").unwrap();
        f()
    };
    assert!(!child, "the sanitizer let the read past the end through");
    assert_eq!(rc, 0, "the plain driver runs the launch (its guard regions see writes, not reads)");
}
