//! Every kernel compiles with NVRTC for sm_80 and sm_90 with no register spills. Runs wherever
//! libnvrtc.so.13 loads (.ci/run installs it); elsewhere it says why it skipped.

mod common;

use hnca::backend::kernels::{KERNELS, KERNELS_RUNS};
use hnca::backend::nvrtc;

fn skip() -> bool {
    if nvrtc::available() {
        return false;
    }
    common::skip("NVRTC (libnvrtc.so.13) cannot be loaded here; `bash .ci/run` installs it with pip and puts it on LD_LIBRARY_PATH");
    true
}

#[test]
fn every_kernel_compiles_to_ptx_for_ampere_and_hopper() {
    if skip() {
        return;
    }
    eprintln!("NVRTC {:?}", nvrtc::version().unwrap());
    for arch in ["compute_80", "compute_90"] {
        let ptx = nvrtc::compile_ptx(arch).unwrap_or_else(|e| panic!("{e}"));
        for (name, _) in KERNELS {
            assert!(ptx.contains(&format!(".entry {name}(")), "{arch}: no entry point {name} in the PTX");
        }
    }
}

#[test]
fn no_kernel_spills_registers_on_sm80_or_sm90() {
    if skip() {
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let log = nvrtc::ptxas_report(arch).unwrap_or_else(|e| panic!("{e}"));
        let mut reported = 0;
        let mut current = String::new();
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                current = rest.split('\'').next().unwrap_or_default().to_string();
            }
            if line.contains("spill stores") {
                reported += 1;
                let spills: Vec<u64> =
                    line.split(',').filter(|f| f.contains("spill")).filter_map(|f| f.split_whitespace().next()?.parse().ok()).collect();
                assert_eq!(spills.len(), 2, "{arch}: cannot read {line:?}");
                assert!(spills.iter().all(|&s| s == 0), "{arch}: kernel {current} spills registers: {line}");
            }
            if line.contains("Used") && line.contains("registers") {
                eprintln!("{arch} {current}: {}", line.trim());
            }
        }
        // Every kernel and its batched twin (KERNEL in kernels/common.cuh).
        let expected = KERNELS.len() + KERNELS_RUNS.len();
        assert!(reported >= expected, "{arch}: ptxas reported on {reported} functions, expected {expected}:\n{log}");
    }
}
