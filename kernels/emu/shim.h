// Just enough of CUDA to compile the project's kernels as C++20 on the CPU: one OS thread per
// CUDA thread, thread-local threadIdx/blockIdx, __syncthreads as a barrier, __shared__ as static
// (blocks of a launch run one after another, so one copy serves them all).
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x, y, z;
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
inline std::barrier<>* emu_block_barrier = nullptr;

#define __global__
#define __device__
#define __shared__ static

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
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

// One launch at a time: the statics behind __shared__ and the launch geometry are global.
inline std::mutex emu_launch_mutex;

// Runs kernel(params) over the grid: blockDim threads, each visiting every block in order, with
// a barrier between blocks so that shared memory is handed from one block to the next intact.
template <typename P>
void emu_run(void (*kernel)(const P), dim3 grid, dim3 block, const P& params) {
    std::lock_guard<std::mutex> lock(emu_launch_mutex);
    unsigned threads = block.x * block.y * block.z;
    std::barrier<> barrier(threads);
    emu_block_barrier = &barrier;
    blockDim = block;
    gridDim = grid;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned z = 0; z < grid.z; ++z)
                for (unsigned y = 0; y < grid.y; ++y)
                    for (unsigned x = 0; x < grid.x; ++x) {
                        blockIdx = dim3{x, y, z};
                        kernel(params);
                        barrier.arrive_and_wait();
                    }
        });
    }
    for (auto& th : pool) th.join();
    emu_block_barrier = nullptr;
}
