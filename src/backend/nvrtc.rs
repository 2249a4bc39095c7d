//! Compiling the kernel program with NVRTC (loaded at run time): PTX for the GPU backend, and
//! a SASS build whose ptxas report the tests read for register spills.

use std::ffi::{CStr, CString};

use cudarc::nvrtc::result;

use super::kernels::PROGRAM;

/// Options every build uses. FMA contraction is off so that the GPU rounds `a*b + c` as the
/// CPU does: the Bernoulli draws compare `u < p` and must agree bit for bit.
const BASE_OPTIONS: [&str; 2] = ["--fmad=false", "--std=c++17"];

/// Whether libnvrtc can be opened (without panicking when it cannot).
pub fn available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's version, (major, minor).
pub fn version() -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC writes two integers.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| format!("{e:?}"))?;
    Ok((major, minor))
}

/// Compiles the program with `--gpu-architecture=arch` plus `extra`; returns (PTX or empty for a
/// SASS-only build, NVRTC's log). A failed build returns the log as the error.
fn compile(arch: &str, extra: &[&str], want_ptx: bool) -> Result<(String, String), String> {
    let src = CString::new(PROGRAM).expect("kernel source has no NUL");
    let name = CString::new("hnca.cu").expect("no NUL");
    let prog = result::create_program(&src, Some(&name)).map_err(|e| format!("nvrtcCreateProgram: {e:?}"))?;
    let mut options: Vec<String> = vec![format!("--gpu-architecture={arch}")];
    options.extend(BASE_OPTIONS.iter().chain(extra).map(|s| s.to_string()));
    // SAFETY: prog is a live program; the options outlive the call.
    let compiled = unsafe { result::compile_program(prog, &options) };
    // SAFETY: as above; the log is a NUL-terminated string NVRTC allocated for us.
    let log = unsafe { result::get_program_log(prog) }
        .map(|raw| unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = match compiled {
        Err(e) => Err(format!("NVRTC failed for {arch} ({e:?}):\n{log}")),
        Ok(()) if want_ptx => {
            // SAFETY: the program compiled; get_ptx copies the NUL-terminated PTX.
            let raw = unsafe { result::get_ptx(prog) }.map_err(|e| format!("nvrtcGetPTX: {e:?}"))?;
            let ptx = unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned();
            Ok((ptx, log))
        }
        Ok(()) => Ok((String::new(), log)),
    };
    // SAFETY: prog is not used after this.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// PTX for a virtual architecture such as "compute_80".
pub fn compile_ptx(arch: &str) -> Result<String, String> {
    compile(arch, &[], true).map(|(ptx, _)| ptx)
}

/// The ptxas report (`-v`: registers, stack, spills per kernel) of a SASS build for a real
/// architecture such as "sm_90".
pub fn ptxas_report(arch: &str) -> Result<String, String> {
    compile(arch, &["--ptxas-options=-v"], false).map(|(_, log)| log)
}
