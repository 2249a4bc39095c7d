//! Build script: concatenates the kernel sources into one CUDA program (embedded by
//! src/backend/kernels.rs); declares every kernel once, from that program (see
//! [`kernel_declarations`]); compiles the program as C++ for the CPU emulation, both as a static
//! library linked into hnca and as an emulated CUDA driver, `libcuda.so`, that the tests load
//! in place of the real one (its directory is given to the crate as HNCA_FAKE_CUDA_DIR); and,
//! where NVRTC can be loaded, compiles the program to PTX for compute_80 and compute_90, failing
//! the build with NVRTC's log on any error. Elsewhere the program is compiled at first use.

use std::path::PathBuf;

/// The kernel sources, in program order (common definitions first).
const KERNEL_FILES: [&str; 8] = ["common.cuh", "dense.cu", "bernoulli.cu", "credit.cu", "softmax.cu", "state.cu", "conv.cu", "ksample.cu"];
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
    let (consts, rust, table) = kernel_declarations(&program);
    std::fs::write(out.join("consts.rs"), consts).expect("write consts.rs");
    std::fs::write(out.join("kernels.rs"), rust).expect("write kernels.rs");
    std::fs::write(out.join("kernel_table.h"), table).expect("write kernel_table.h");

    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .file("kernels/emu/emu.cpp")
        .include("kernels/emu")
        .include(&out)
        .opt_level(2)
        .warnings(false)
        .compile("hnca_emu");
    build_fake_driver(&out, false);
    build_fake_driver(&out, true);

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
/// the executable that loads it. With `asan`, a second one in OUT_DIR/fake_cuda_asan, built with
/// AddressSanitizer (run with the sanitizer's runtime preloaded; its path is HNCA_LIBASAN), so
/// that the tests catch a kernel's out-of-bounds read, not only a write past a guard region.
fn build_fake_driver(out: &std::path::Path, asan: bool) {
    let dir = out.join(if asan { "fake_cuda_asan" } else { "fake_cuda" });
    std::fs::create_dir_all(&dir).expect("create fake_cuda dir");
    let lib = dir.join("libcuda.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut command = compiler.to_command();
    command.args(["-std=c++20", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread", "-Wl,-soname,libcuda.so", "-Wl,-Bsymbolic"]);
    if asan {
        command.args(["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]);
    } else {
        command.arg("-O2");
    }
    let status = command
        .arg("-Ikernels/emu")
        .arg(format!("-I{}", out.display()))
        .arg("kernels/emu/fake_cuda.cpp")
        .arg("-o")
        .arg(&lib)
        .status()
        .expect("run the C++ compiler for the emulated CUDA driver");
    assert!(status.success(), "building the emulated CUDA driver (kernels/emu/fake_cuda.cpp) failed");
    if asan {
        println!("cargo:rustc-env=HNCA_FAKE_CUDA_ASAN_DIR={}", dir.display());
        let runtime = compiler.to_command().arg("-print-file-name=libasan.so").output().expect("ask the C++ compiler for libasan");
        println!("cargo:rustc-env=HNCA_LIBASAN={}", String::from_utf8_lossy(&runtime.stdout).trim());
    } else {
        println!("cargo:rustc-env=HNCA_FAKE_CUDA_DIR={}", dir.display());
    }
}

/// Every kernel is declared once, in its `.cu`: `KERNEL(NAME, PARAMS, p)` and the
/// `struct PARAMS { ... };` it takes. From the program this generates
/// - `consts.rs` (included by src/backend/consts.rs, backend-neutral): the launch constants and
///   the modes the kernels switch on, every `#define NAME <integer>`;
/// - `kernels.rs` (included by src/backend/kernels.rs): one `#[repr(C)]` Rust struct per kernel parameter struct, field
///   for field, `KERNELS`, every kernel with its parameter size, in program order, and
///   `KERNELS_RUNS`, their batched twins;
/// - `kernel_table.h` (included by kernels/emu/table.h): the emulator's `EMU_KERNELS` list.
///
/// So adding a kernel is its `.cu` function and its parameter struct, and one operation that
/// launches it; the layouts are compared with the C++ compiler's in tests/kernels.rs.
fn kernel_declarations(program: &str) -> (String, String, String) {
    let code: String = program.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut consts = String::from("// Generated by build.rs from kernels/*.cu; do not edit.\n\n");
    for line in code.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["#define", name, value] = words[..] {
            if name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') && value.parse::<u32>().is_ok() {
                consts.push_str(&format!("pub const {name}: u32 = {value};\n"));
            }
        }
    }
    let mut rust = String::from("// Generated by build.rs from kernels/*.cu; do not edit.\n\n");
    let mut kernels = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("KERNEL(") {
        let before = &rest[..at];
        rest = &rest[at + "KERNEL(".len()..];
        // The macro's own definition in common.cuh.
        if before.rsplit('\n').next().is_some_and(|line| line.trim_start().starts_with("#define")) {
            continue;
        }
        let close = rest.find(')').expect("a kernel's declaration");
        let args: Vec<&str> = rest[..close].split(',').map(str::trim).collect();
        match args[..] {
            [name, ty, _] => kernels.push((name.to_string(), ty.to_string())),
            _ => panic!("a kernel is declared `KERNEL(name, ParamsStruct, p)`, found KERNEL({}", &rest[..=close]),
        }
    }
    let mut table = String::from("// Generated by build.rs from kernels/*.cu; do not edit.\n#define EMU_KERNELS(X)");
    for (name, ty) in &kernels {
        let fields = struct_fields(&code, ty).unwrap_or_else(|| panic!("kernel {name}: no `struct {ty} {{ ... }};` in kernels/"));
        let list: Vec<String> = fields.iter().map(|(f, t)| format!("{f}: {t}")).collect();
        rust.push_str(&format!("kernel_params!({ty} = \"{name}\" {{ {} }});\n", list.join(", ")));
        table.push_str(&format!(" \\\n    X({name}, {ty}) X({name}_runs, RunsOf<{ty}>)"));
    }
    rust.push_str(&format!(
        "\n/// Every kernel with the size of its parameter struct, in program order.\npub const KERNELS: [(&str, usize); {}] = [\n",
        kernels.len()
    ));
    for (_, ty) in &kernels {
        rust.push_str(&format!("    ({ty}::NAME, std::mem::size_of::<{ty}>()),\n"));
    }
    rust.push_str("];\n");
    rust.push_str(&format!(
        "\n/// Every kernel's twin for a batch of runs (`KERNEL` in kernels/common.cuh), in program order.\npub const KERNELS_RUNS: [&str; {}] = [\n",
        kernels.len()
    ));
    for (name, _) in &kernels {
        rust.push_str(&format!("    \"{name}_runs\",\n"));
    }
    rust.push_str("];\n\n/// The batched twin of kernel `name`.\npub fn runs_twin(name: &str) -> &'static str {\n    match name {\n");
    for (name, _) in &kernels {
        rust.push_str(&format!("        \"{name}\" => \"{name}_runs\",\n"));
    }
    rust.push_str("        other => panic!(\"no kernel named {other}\"),\n    }\n}\n");
    table.push('\n');
    (consts, rust, table)
}

/// The fields of `struct NAME { ... };` as (name, Rust type): pointers become `Ptr`, `int` i32,
/// `long long` i64, `float` f32, `double` f64, `u32`/`unsigned` u32, and `RngKey` its Rust twin.
fn struct_fields(code: &str, name: &str) -> Option<Vec<(String, String)>> {
    let start = code.find(&format!("struct {name} {{"))?;
    let body = &code[start..];
    let body = &body[body.find('{')? + 1..body.find("};")?];
    let mut fields = Vec::new();
    for decl in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let mut declarators = decl.split(',');
        let first = declarators.next()?.trim();
        let split = first.rfind(|c: char| c.is_whitespace() || c == '*')?;
        let base = first[..=split].trim().to_string();
        let mut names = vec![first[split + 1..].trim().to_string()];
        names.extend(declarators.map(|d| d.trim().to_string()));
        for n in names {
            let pointer = base.contains('*') || n.starts_with('*');
            let ty = if pointer {
                "Ptr"
            } else {
                match base.trim_start_matches("const ").trim() {
                    "int" => "i32",
                    "long long" => "i64",
                    "float" => "f32",
                    "double" => "f64",
                    "u32" | "unsigned" | "unsigned int" => "u32",
                    "RngKey" => "RngKeyC",
                    other => panic!("struct {name}: field type `{other}` has no Rust twin in build.rs"),
                }
            };
            fields.push((n.trim_start_matches('*').to_string(), ty.to_string()));
        }
    }
    Some(fields)
}
