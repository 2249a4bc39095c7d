//! Build script: concatenates the kernel sources into one CUDA program (embedded by
//! src/backend/kernels.rs); compiles that program as C++ for the CPU emulation, both as a static
//! library linked into hnca and as an emulated CUDA driver, `libcuda.so`, that the tests load
//! in place of the real one (its directory is given to the crate as HNCA_FAKE_CUDA_DIR); and,
//! where NVRTC can be loaded, compiles the program to PTX for compute_80 and compute_90, failing
//! the build with NVRTC's log on any error. Elsewhere the program is compiled at first use.

use std::path::PathBuf;

/// The kernel sources, in program order (common definitions first).
const KERNEL_FILES: [&str; 5] = ["common.cuh", "dense.cu", "bernoulli.cu", "credit.cu", "bandit.cu"];
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
    build_fake_driver(&out);

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

/// Links kernels/emu/fake_cuda.cpp into OUT_DIR/fake_cuda/libcuda.so. Only the driver API is
/// exported, and -Bsymbolic keeps the library's own kernels from binding to the copies inside
/// the executable that loads it.
fn build_fake_driver(out: &std::path::Path) {
    let dir = out.join("fake_cuda");
    std::fs::create_dir_all(&dir).expect("create fake_cuda dir");
    let lib = dir.join("libcuda.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c++20", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread", "-Wl,-soname,libcuda.so", "-Wl,-Bsymbolic"])
        .arg("-Ikernels/emu")
        .arg(format!("-I{}", out.display()))
        .arg("kernels/emu/fake_cuda.cpp")
        .arg("-o")
        .arg(&lib)
        .status()
        .expect("run the C++ compiler for the emulated CUDA driver");
    assert!(status.success(), "building the emulated CUDA driver (kernels/emu/fake_cuda.cpp) failed");
    println!("cargo:rustc-env=HNCA_FAKE_CUDA_DIR={}", dir.display());
}
