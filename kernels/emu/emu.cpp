// The kernels compiled for the CPU, with a launcher the Rust side calls by kernel name with a
// pointer to the kernel's parameter struct (src/backend/emu.rs), the schedule's setter, and
// three deliberately wrong kernels that show the shim catches what it claims to.
#include "table.h"

// Returns 0; 1 for a kernel name it does not know; 2 when the launch misused a barrier
// (hnca_emu_last_error says how).
extern "C" int hnca_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               const void* params) {
    const EmuKernel* k = emu_find(name);
    if (!k) return 1;
    return k->run(dim3{gx, gy, gz}, dim3{bx, by, bz}, params) ? 0 : 2;
}

// Why the calling thread's last launch failed, or "".
extern "C" const char* hnca_emu_last_error() {
    return emu_error.c_str();
}

// The calling thread's schedule from now on: order 0 forward, 1 reverse, 2 shuffled by seed.
extern "C" void hnca_emu_set_schedule(int order, unsigned long long seed) {
    emu_schedule = EmuSchedule{order, seed};
}

// sizeof the kernel's parameter struct as C++ lays it out, or 0 for an unknown name: the Rust
// side checks its #[repr(C)] twin against it.
extern "C" unsigned long hnca_emu_param_size(const char* name) {
    const EmuKernel* k = emu_find(name);
    return k ? k->param_size : 0;
}

// The shim's own checks: kernels with the mistakes it must catch. They live here, not in
// kernels/, so that neither NVRTC nor the program ever sees them.
namespace selfcheck {
struct Params {
    float* out;
    int kind;
    float salt;
};

// kind 0: each thread writes its slot (t + 1 + salt) and reads its neighbour's without a
// barrier between (a slot not yet written reads as the poison, NaN);
// kind 1: the same with the barrier (the right way); kind 2: half the block returns before a
// barrier the other half reaches; kind 3: the two halves wait at different barriers; kind 4:
// only the first half writes its slot, then every thread reads its own after a barrier (the
// second half reads slots no thread of this block wrote).
void kernel(const Params p) {
    __shared__ float slot[64];
    unsigned t = threadIdx.x, n = blockDim.x;
    if (p.kind == 2 && t >= n / 2) return;
    if (p.kind == 3) {
        if (t < n / 2) {
            __syncthreads();
        } else {
            __syncthreads();
        }
        return;
    }
    if (p.kind == 4) {
        if (t < n / 2) slot[t] = (float)(t + 1) + p.salt;
        __syncthreads();
        p.out[t] = slot[t];
        return;
    }
    slot[t] = (float)(t + 1) + p.salt;
    if (p.kind != 0) __syncthreads();
    p.out[t] = slot[(t + 1) % n];
    if (p.kind == 2) __syncthreads();
}
}  // namespace selfcheck

// Runs the self-check kernel of `kind` on one block of `threads` (at most 64) threads writing
// `out`; returns 0, or 2 with hnca_emu_last_error saying why.
extern "C" int hnca_emu_selfcheck(int kind, unsigned threads, float salt, float* out) {
    if (threads == 0 || threads > 64) return 1;
    for (unsigned t = 0; t < threads; ++t) out[t] = 0.0f;
    return emu_run<selfcheck::Params>(selfcheck::kernel, dim3{1, 1, 1}, dim3{threads, 1, 1}, selfcheck::Params{out, kind, salt}) ? 0 : 2;
}
