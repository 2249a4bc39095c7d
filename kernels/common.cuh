// Shared by every kernel: Philox4x32-10 and the branch-free math of src/math.rs, line by line,
// so that a GPU draws the same samples as the CPU. Header-free: NVRTC ships no CUDA headers,
// and the CPU emulation (kernels/emu/shim.h) provides the few builtins used here.
//
// Each kernel takes one parameter struct by value; its field list is mirrored exactly by the
// #[repr(C)] struct of the same name in src/backend/kernels.rs. Device pointers are 64-bit.
//
// KERNEL(name, Params, p) { body } defines two kernels with one body: `name`, which takes its
// Params p by value, and `name_runs`, for a batch of runs (src/backend/runs.rs): it takes a
// device array of Params, one per run, and block (x, y, z) runs the body on run z's, so that
// one launch serves every run. No kernel uses blockIdx.z or gridDim.z otherwise.
#define KERNEL(name, Params, p)                                                                   \
    __device__ __forceinline__ void name##_body(const Params& p);                               \
    extern "C" __global__ void name(const Params p) { name##_body(p); }                          \
    extern "C" __global__ void name##_runs(const Params* __restrict__ runs) { name##_body(runs[blockIdx.z]); } \
    __device__ __forceinline__ void name##_body(const Params& p)

typedef unsigned int u32;
typedef unsigned long long u64;

// ---- Philox4x32-10 (see src/rng.rs for the counter layout) --------------------------------

// A draw's key. `clock`, when not null, is the training clock (below): its step is added to
// (step_hi, step_lo), so a kernel captured once in a CUDA graph draws afresh at every step.
struct RngKey {
    u32 seed_lo, seed_hi, step_lo, step_hi, stream;
    const u32* clock;
};

// The training clock, CLOCK_WORDS words of device memory that the step itself advances: the
// update step (low and high words), the batch within the epoch and the epoch.
#define CLOCK_STEP_LO 0
#define CLOCK_STEP_HI 1
#define CLOCK_BATCH 2
#define CLOCK_EPOCH 3
#define CLOCK_WORDS 4

__device__ inline u64 clock_step(const u32* clock) {
    return clock ? ((u64)clock[CLOCK_STEP_HI] << 32) | clock[CLOCK_STEP_LO] : 0;
}

__device__ inline void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        u64 p0 = (u64)0xD2511F53u * (u64)c[0];
        u64 p1 = (u64)0xCD9E8D57u * (u64)c[2];
        u32 hi0 = (u32)(p0 >> 32), lo0 = (u32)p0;
        u32 hi1 = (u32)(p1 >> 32), lo1 = (u32)p1;
        u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// The uniform in [0, 1) of element `index`: word index % 4 of block index / 4.
__device__ inline float rng_uniform(RngKey key, u32 index) {
    u64 step = (((u64)key.step_hi << 32) | key.step_lo) + clock_step(key.clock);
    u32 c[4] = {index >> 2, key.stream, (u32)step, (u32)(step >> 32)};
    philox4x32_10(c, key.seed_lo, key.seed_hi);
    return (float)(c[index & 3] >> 8) * (1.0f / 16777216.0f);
}

// ---- math (src/math.rs) --------------------------------------------------------------------

#define CLIP 1e-5f
// log((1 - CLIP) / CLIP): sigma(±CLIP_LOGIT) = the clipped probabilities (src/backend/cpu/mod.rs).
#define CLIP_LOGIT 11.512915f

__device__ inline float exp_neg(float x) {
    bool tiny = x < -87.0f;
    x = fmaxf(x, -87.0f);
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
    // e^r = 1 + r + r^2 q(r), q the minimax cubic of src/math.rs.
    float p = 0.008312525f * r + 0.041890114f;
    p = p * r + 0.16667114f;
    p = p * r + 0.4999923f;
    p = (r * r) * p + r + 1.0f;
    float scale = __uint_as_float((__float_as_uint(t) - 0x4B400000u + 127u) << 23);
    return tiny ? 0.0f : p * scale;
}

// e^x for x in [-87, 88] (src/math.rs's exp_f32): exp_neg's polynomial with 2^n up to 2^127.
__device__ inline float exp_f32(float x) {
    x = fminf(fmaxf(x, -87.0f), 88.0f);
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
    float p = 0.008312525f * r + 0.041890114f;
    p = p * r + 0.16667114f;
    p = p * r + 0.4999923f;
    p = (r * r) * p + r + 1.0f;
    float scale = __uint_as_float((__float_as_uint(t) - 0x4B400000u + 127u) << 23);
    return p * scale;
}

__device__ inline float log1p_unit(float t) {
    float s = t / (2.0f + t);
    float s2 = s * s;
    // 2s P(s^2), P the minimax quartic of src/math.rs.
    float p = 0.14095774f * s2 + 0.13978833f;
    p = p * s2 + 0.20012557f;
    p = p * s2 + 0.33333155f;
    p = p * s2 + 1.0f;
    return 2.0f * s * p;
}

__device__ inline float log_sigmoid(float x) {
    return fminf(x, 0.0f) - log1p_unit(exp_neg(-fabsf(x)));
}

__device__ inline float sigmoid(float x) {
    float e = exp_neg(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}

__device__ inline float clipped_p(float logit) {
    return fminf(fmaxf(sigmoid(logit), CLIP), 1.0f - CLIP);
}

// log((1 - p)/p) for p = clipped_p(logit): minus the clipped logit (src/backend/cpu/mod.rs).
__device__ inline float clipped_log_odds_against(float logit) {
    return -fminf(fmaxf(logit, -CLIP_LOGIT), CLIP_LOGIT);
}

// log sigma(x) and the entropy of Bernoulli(sigma(x)) from one exp and one log.
__device__ inline void log_sigmoid_and_entropy(float x, float* ls, float* h) {
    float y = fminf(fabsf(x), 100.0f);
    float e = exp_neg(-y);
    float l = log1p_unit(e);
    *ls = fminf(x, 0.0f) - l;
    *h = l + y * e / (1.0f + e);
}

// x^n for n >= 0 by binary powering, the same multiplications in the same order as
// src/math.rs (powi_f32): Adam's bias corrections agree bit for bit on every backend.
__device__ inline float powi_f32(float x, u32 n) {
    float r = 1.0f;
    for (;;) {
        if (n & 1u) r = r * x;
        n >>= 1;
        if (n == 0) break;
        x = x * x;
    }
    return r;
}

// Sum of one value per thread over the block (blockDim.x a power of two, at most 1024);
// every thread gets the total. `scratch` holds blockDim.x floats.
__device__ inline float block_sum(float v, float* scratch) {
    u32 t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) scratch[t] += scratch[t + s];
        __syncthreads();
    }
    float total = scratch[0];
    __syncthreads();
    return total;
}

// Launch constants: build.rs turns every `#define NAME <integer>` of the kernels into a Rust
// constant (src/backend/consts.rs), so the launches and the kernels share one value.
// Threads per block of the row reductions, and of the one-thread-per-element kernels.
// The largest of one value per thread over the block; every thread gets it.
__device__ inline float block_max(float v, float* scratch) {
    u32 t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) scratch[t] = fmaxf(scratch[t], scratch[t + s]);
        __syncthreads();
    }
    float m = scratch[0];
    __syncthreads();
    return m;
}

#define REDUCE_BLOCK 128
#define ELEMENTWISE_BLOCK 256
