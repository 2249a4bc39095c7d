//! Build script: concatenates the kernel sources into one CUDA program (embedded by
//! src/backend/kernels.rs), compiles that program as C++ for the CPU emulation, and, where
//! NVRTC can be loaded, compiles it to PTX for compute_80 and compute_90, failing the build
//! with NVRTC's log on any error. Elsewhere the program is compiled at first use.

use std::path::PathBuf;

/// The kernel sources, in program order (common definitions first).
const KERNEL_FILES: [&str; 4] = ["common.cuh", "dense.cu", "bernoulli.cu", "credit.cu"];
/// Architectures the PTX is built for: Ampere and Hopper.
const PTX_ARCHES: [&str; 2] = ["compute_80", "compute_90"];

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");

    let mut program = String::new();
    for f in KERNEL_FILES {
        let src = std::fs::read_to_string(format!("kernels/{f}")).unwrap_or_else(|e| panic!("kernels/{f}: {e}"));
        program.push_str(&format!("// ---- kernels/{f}\n{src}\n"));
    }
    std::fs::write(out.join("program.cu"), &program).expect("write program.cu");

    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .file("kernels/emu/emu.cpp")
        .include("kernels/emu")
        .include(&out)
        .opt_level(2)
        .warnings(false)
        .compile("hnca_emu");

    // SAFETY: only probes whether the library can be opened.
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    for arch in PTX_ARCHES {
        let path = out.join(format!("{arch}.ptx"));
        if !nvrtc {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let opts = cudarc::nvrtc::CompileOptions { arch: Some(arch), fmad: Some(false), ..Default::default() };
        match cudarc::nvrtc::compile_ptx_with_opts(&program, opts) {
            Ok(ptx) => std::fs::write(&path, ptx.to_src()).expect("write ptx"),
            Err(e) => panic!("NVRTC failed to compile the kernels for {arch}:\n{e:?}"),
        }
    }
    println!("cargo:rustc-check-cfg=cfg(hnca_prebuilt_ptx)");
    if nvrtc {
        println!("cargo:rustc-cfg=hnca_prebuilt_ptx");
    }
}
