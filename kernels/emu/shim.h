// Just enough of CUDA to compile the project's kernels as C++20 on the CPU. Each CUDA thread of
// a block is a fiber (ucontext) with its own threadIdx; __syncthreads switches back to the
// scheduler, which runs every thread of the block up to the barrier before any goes past it;
// __shared__ is static (blocks run one after another, so one copy serves them all), placed in
// one section and poisoned before every block (see emu_poison_shared). A fiber
// is entered once through setcontext and switched with _setjmp/_longjmp afterwards, which,
// unlike swapcontext, makes no system call: that keeps whole training steps testable.
//
// Strict on purpose, since a GPU forgives nothing a fixed order would hide:
// - the threads between two barriers run in the order the schedule says (forward, reverse, or
//   a shuffle seeded per schedule, block and round), so a missing __syncthreads makes results
//   depend on the schedule, and the tests compare schedules bit for bit;
// - a barrier that only part of a block reaches (some threads ended, others wait), or threads
//   waiting at different barriers, ends the launch with an error naming the barrier;
// - compiled with -fsanitize=address (build.rs's second emulated driver), the fibers' stack
//   switches are announced to AddressSanitizer, so an out-of-bounds read is reported;
// - every block starts with its shared memory filled with 0xff bytes (NaN as a float, all ones
//   as an integer), as a GPU's holds whatever the previous block left: a kernel that reads shared
//   memory it did not write this block gets NaN, not a zero or last block's value.
//
// The schedule: HNCA_EMU_SCHEDULE=forward|reverse|shuffle:SEED in the environment (read once
// per thread), or hnca_emu_set_schedule for the calling thread.
#pragma once
// longjmp between fiber stacks is what fibers do; fortified longjmp would call it an error.
#undef _FORTIFY_SOURCE
#include <csetjmp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

struct dim3 {
    unsigned x, y, z;
};

struct EmuFiber {
    ucontext_t context;  // only to enter the fiber the first time
    jmp_buf resume;      // where it continues after a barrier
    dim3 index;
    bool started, done;
    const char* barrier_file;  // the barrier it waits at
    int barrier_line;
    void* asan_fake_stack;
};

// The order threads run in between two barriers.
enum EmuOrder { EMU_FORWARD = 0, EMU_REVERSE = 1, EMU_SHUFFLE = 2 };
struct EmuSchedule {
    int order;
    unsigned long long seed;
};

// HNCA_EMU_SCHEDULE, or forward when unset; an unreadable value is an error, not a default.
inline EmuSchedule emu_schedule_from_env() {
    const char* v = std::getenv("HNCA_EMU_SCHEDULE");
    if (!v || !*v || std::strcmp(v, "forward") == 0) return {EMU_FORWARD, 0};
    if (std::strcmp(v, "reverse") == 0) return {EMU_REVERSE, 0};
    if (std::strncmp(v, "shuffle:", 8) == 0) {
        char* end = nullptr;
        unsigned long long seed = std::strtoull(v + 8, &end, 10);
        if (end && *end == 0 && end != v + 8) return {EMU_SHUFFLE, seed};
    }
    std::fprintf(stderr, "HNCA_EMU_SCHEDULE=%s: expected forward, reverse or shuffle:SEED\n", v);
    std::abort();
}

inline thread_local EmuSchedule emu_schedule = emu_schedule_from_env();
// Why the last launch on this thread failed ("" when it did not).
inline thread_local std::string emu_error;

inline EmuFiber* emu_current_fiber = nullptr;
inline jmp_buf emu_scheduler;
inline std::function<void()> emu_body;
inline bool emu_failed = false;
// The scheduler's stack, as AddressSanitizer reports it when a fiber is entered.
inline const void* emu_scheduler_stack = nullptr;
inline size_t emu_scheduler_stack_size = 0;

#define threadIdx (emu_current_fiber->index)
inline dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

#define __global__
#define __device__
// A kernel body (KERNEL in common.cuh) is a function of this translation unit: its __shared__
// arrays are then plain statics of the section, not inline-function statics of their own group.
#define __forceinline__ static
#define __restrict__ __restrict
// Every __shared__ array in one section, whose bounds the linker names.
#define __shared__ static __attribute__((section("emu_shared")))
extern "C" {
__attribute__((weak, visibility("hidden"))) extern char __start_emu_shared[];
__attribute__((weak, visibility("hidden"))) extern char __stop_emu_shared[];
}

// Fills every __shared__ array with 0xff bytes. Under AddressSanitizer byte by byte and
// uninstrumented, in case the section holds redzones between the arrays.
__attribute__((no_sanitize_address)) inline void emu_poison_shared() {
    if (!__start_emu_shared || !__stop_emu_shared) return;
#ifdef EMU_ASAN
    for (volatile char* c = __start_emu_shared; c < __stop_emu_shared; ++c) *c = (char)0xff;
#else
    std::memset(__start_emu_shared, 0xff, (size_t)(__stop_emu_shared - __start_emu_shared));
#endif
}

// Stack switches announced to AddressSanitizer (no-ops otherwise).
inline void emu_leaving(void** fake_stack, const void* to_bottom, size_t to_size) {
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(fake_stack, to_bottom, to_size);
#else
    (void)fake_stack, (void)to_bottom, (void)to_size;
#endif
}
inline void emu_arrived(void* fake_stack, const void** from_bottom, size_t* from_size) {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, from_bottom, from_size);
#else
    (void)fake_stack, (void)from_bottom, (void)from_size;
#endif
}

inline void emu_barrier(const char* file, int line) {
    EmuFiber* f = emu_current_fiber;
    f->barrier_file = file;
    f->barrier_line = line;
    if (!_setjmp(f->resume)) {
        emu_leaving(&f->asan_fake_stack, emu_scheduler_stack, emu_scheduler_stack_size);
        _longjmp(emu_scheduler, 1);
    }
    emu_arrived(f->asan_fake_stack, &emu_scheduler_stack, &emu_scheduler_stack_size);
}
#define __syncthreads() emu_barrier(__FILE__, __LINE__)

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
    emu_arrived(nullptr, &emu_scheduler_stack, &emu_scheduler_stack_size);
    emu_body();
    emu_current_fiber->done = true;
    emu_leaving(nullptr, emu_scheduler_stack, emu_scheduler_stack_size);  // this fiber's stack is done
    _longjmp(emu_scheduler, 1);
}

inline unsigned long long emu_mix(unsigned long long x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The order of one round of a block's threads under `s`.
inline void emu_round_order(std::vector<unsigned>& order, EmuSchedule s, unsigned long long block, unsigned round) {
    unsigned n = (unsigned)order.size();
    for (unsigned t = 0; t < n; ++t) order[t] = s.order == EMU_REVERSE ? n - 1 - t : t;
    if (s.order != EMU_SHUFFLE) return;
    unsigned long long state = emu_mix(s.seed ^ emu_mix(block * 0x100000001b3ull + round));
    for (unsigned t = n; t > 1; --t) {
        state = emu_mix(state);
        unsigned j = (unsigned)(state % t);
        unsigned tmp = order[t - 1];
        order[t - 1] = order[j];
        order[j] = tmp;
    }
}

inline std::string emu_where(const EmuFiber& f) {
    return "thread (" + std::to_string(f.index.x) + ", " + std::to_string(f.index.y) + ", " + std::to_string(f.index.z) + ")";
}

// Runs kernel(params) over the grid, block after block; within a block, round after round,
// each unfinished thread runs until its next __syncthreads or its end, in the schedule's
// order. Returns false, with emu_error saying why, when a barrier is reached by part of a
// block or threads wait at different barriers.
template <typename P>
bool emu_run(void (*kernel)(const P), dim3 grid, dim3 block, const P& params) {
#ifdef EMU_ASAN
    constexpr size_t STACK = 512 * 1024;  // instrumented frames are larger
#else
    constexpr size_t STACK = 64 * 1024;
#endif
    std::lock_guard<std::mutex> lock(emu_launch_mutex);
    static std::vector<std::vector<char>> stacks;
    unsigned threads = block.x * block.y * block.z;
    while (stacks.size() < threads) stacks.emplace_back(STACK);
    std::vector<EmuFiber> fibers(threads);
    std::vector<unsigned> order(threads);
    blockDim = block;
    gridDim = grid;
    emu_body = [&] { kernel(params); };
    emu_error.clear();
    const EmuSchedule schedule = emu_schedule;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = dim3{x, y, z};
                emu_poison_shared();
                unsigned long long block_id = ((unsigned long long)z * grid.y + y) * grid.x + x;
                for (unsigned t = 0; t < threads; ++t) {
                    EmuFiber& f = fibers[t];
                    f.index = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                    f.started = false;
                    f.done = false;
                    f.asan_fake_stack = nullptr;
                    getcontext(&f.context);
                    f.context.uc_stack.ss_sp = stacks[t].data();
                    f.context.uc_stack.ss_size = STACK;
                    f.context.uc_link = nullptr;
                    makecontext(&f.context, emu_fiber_main, 0);
                }
                for (unsigned round = 0;; ++round) {
                    emu_round_order(order, schedule, block_id, round);
                    for (unsigned t : order) {
                        EmuFiber& f = fibers[t];
                        if (f.done) continue;
                        emu_current_fiber = &f;
                        void* scheduler_fake_stack = nullptr;
                        emu_leaving(&scheduler_fake_stack, stacks[t].data(), STACK);
                        if (!_setjmp(emu_scheduler)) {
                            if (f.started) _longjmp(f.resume, 1);
                            f.started = true;
                            setcontext(&f.context);
                        }
                        emu_arrived(scheduler_fake_stack, nullptr, nullptr);
                    }
                    const EmuFiber* waiting = nullptr;
                    const EmuFiber* ended = nullptr;
                    for (const EmuFiber& f : fibers) {
                        if (f.done) {
                            if (!ended) ended = &f;
                            continue;
                        }
                        if (waiting && (waiting->barrier_line != f.barrier_line || std::strcmp(waiting->barrier_file, f.barrier_file) != 0)) {
                            emu_error = emu_where(*waiting) + " waits at the barrier of " + waiting->barrier_file + ":" +
                                        std::to_string(waiting->barrier_line) + " and " + emu_where(f) + " at " + f.barrier_file + ":" +
                                        std::to_string(f.barrier_line);
                        }
                        if (!waiting) waiting = &f;
                    }
                    if (!waiting) break;
                    if (ended && emu_error.empty()) {
                        emu_error = "the barrier at " + std::string(waiting->barrier_file) + ":" + std::to_string(waiting->barrier_line) +
                                    " was reached by only part of the block: " + emu_where(*ended) + " had ended";
                    }
                    if (!emu_error.empty()) {
                        emu_error += " (block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + "))";
                        emu_current_fiber = nullptr;
                        return false;
                    }
                }
            }
    emu_current_fiber = nullptr;
    return true;
}
