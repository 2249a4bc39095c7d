// Just enough of CUDA to compile the project's kernels as C++20 on the CPU. Each CUDA thread of
// a block is a fiber (ucontext) with its own threadIdx; __syncthreads switches back to the
// scheduler, which runs every thread of the block up to the barrier before any goes past it;
// __shared__ is static (blocks run one after another, so one copy serves them all). A fiber
// is entered once through setcontext and switched with _setjmp/_longjmp afterwards, which,
// unlike swapcontext, makes no system call: that keeps whole training steps testable.
#pragma once
// longjmp between fiber stacks is what fibers do; fortified longjmp would call it an error.
#undef _FORTIFY_SOURCE
#include <csetjmp>
#include <cmath>
#include <cstring>
#include <functional>
#include <mutex>
#include <vector>

#include <ucontext.h>

struct dim3 {
    unsigned x, y, z;
};

struct EmuFiber {
    ucontext_t context;  // only to enter the fiber the first time
    jmp_buf resume;      // where it continues after a barrier
    dim3 index;
    bool started, done;
};

inline EmuFiber* emu_current_fiber = nullptr;
inline jmp_buf emu_scheduler;
inline std::function<void()> emu_body;

#define threadIdx (emu_current_fiber->index)
inline dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

#define __global__
#define __device__
#define __shared__ static

inline void __syncthreads() {
    if (!_setjmp(emu_current_fiber->resume)) _longjmp(emu_scheduler, 1);
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// One launch at a time: the statics behind __shared__, the fibers and the geometry are global.
inline std::mutex emu_launch_mutex;

[[noreturn]] inline void emu_fiber_main() {
    emu_body();
    emu_current_fiber->done = true;
    _longjmp(emu_scheduler, 1);
}

// Runs kernel(params) over the grid, block after block; within a block, round after round,
// each unfinished thread runs until its next __syncthreads or its end.
template <typename P>
void emu_run(void (*kernel)(const P), dim3 grid, dim3 block, const P& params) {
    constexpr size_t STACK = 64 * 1024;
    std::lock_guard<std::mutex> lock(emu_launch_mutex);
    static std::vector<std::vector<char>> stacks;
    unsigned threads = block.x * block.y * block.z;
    while (stacks.size() < threads) stacks.emplace_back(STACK);
    std::vector<EmuFiber> fibers(threads);
    blockDim = block;
    gridDim = grid;
    emu_body = [&] { kernel(params); };
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = dim3{x, y, z};
                for (unsigned t = 0; t < threads; ++t) {
                    EmuFiber& f = fibers[t];
                    f.index = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                    f.started = false;
                    f.done = false;
                    getcontext(&f.context);
                    f.context.uc_stack.ss_sp = stacks[t].data();
                    f.context.uc_stack.ss_size = STACK;
                    f.context.uc_link = nullptr;
                    makecontext(&f.context, emu_fiber_main, 0);
                }
                for (bool running = true; running;) {
                    running = false;
                    for (EmuFiber& f : fibers) {
                        if (f.done) continue;
                        emu_current_fiber = &f;
                        if (!_setjmp(emu_scheduler)) {
                            if (f.started) _longjmp(f.resume, 1);
                            f.started = true;
                            setcontext(&f.context);
                        }
                        running |= !f.done;
                    }
                }
            }
    emu_current_fiber = nullptr;
}
