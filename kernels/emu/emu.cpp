// The kernels compiled for the CPU, with a launcher the Rust side calls by kernel name with a
// pointer to the kernel's parameter struct (src/backend/emu.rs).
#include "table.h"

// Returns 0, or 1 for a kernel name it does not know.
extern "C" int hnca_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               const void* params) {
    const EmuKernel* k = emu_find(name);
    if (!k) return 1;
    k->run(dim3{gx, gy, gz}, dim3{bx, by, bz}, params);
    return 0;
}

// sizeof the kernel's parameter struct as C++ lays it out, or 0 for an unknown name: the Rust
// side checks its #[repr(C)] twin against it.
extern "C" unsigned long hnca_emu_param_size(const char* name) {
    const EmuKernel* k = emu_find(name);
    return k ? k->param_size : 0;
}
