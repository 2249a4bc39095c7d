// The training state that lives on the device, so that a step needs nothing from the host:
// the batch gathered and binarized from images uploaded once, Adam over every tensor in one
// launch, the gradient variance's partial sums, and the step's statistics (the epoch's metric
// sums, the baselines, the divergence flag, the clock). src/backend/cpu/state.rs is the twin.

// ---- the batch ----------------------------------------------------------------------------

// x (b, n0): row r is image order[clock.batch * b + r] of images (u8, (count, n0)), as bits:
// dynamic (threshold == 0), 1[u < pixel/255] with u = uniform(seed, clock.epoch, stream) at
// image * n0 + j, keyed by the image so its bits in an epoch do not depend on the shuffle; or
// pixel/255 > 0.5. With labels_out, the images' labels as f32 integers too.
struct GatherParams {
    float* x;
    float* labels_out;
    const unsigned char* images;
    const unsigned char* labels;
    const u32* order;
    const u32* clock;
    u32 seed_lo, seed_hi, stream;
    int b, n0, threshold;
};

// One block per row, its threads striding over the pixels.
KERNEL(gather_binarize, GatherParams, p) {
    int r = blockIdx.x;
    u32 img = p.order[(long long)p.clock[CLOCK_BATCH] * p.b + r];
    RngKey key = {p.seed_lo, p.seed_hi, p.clock[CLOCK_EPOCH], 0u, p.stream, 0};
    for (int j = threadIdx.x; j < p.n0; j += blockDim.x) {
        float px = (float)p.images[(long long)img * p.n0 + j] / 255.0f;
        float bit;
        if (p.threshold) {
            bit = px > 0.5f ? 1.0f : 0.0f;
        } else {
            bit = rng_uniform(key, img * (u32)p.n0 + (u32)j) < px ? 1.0f : 0.0f;
        }
        p.x[(long long)r * p.n0 + j] = bit;
    }
    if (p.labels_out && threadIdx.x == 0) p.labels_out[r] = (float)p.labels[img];
}

// ---- the step's statistics ----------------------------------------------------------------

// Whether x is a finite number: x - x is 0 for every finite x and NaN for NaN and ±inf.
__device__ inline bool finite_d(double x) {
    return x - x == 0.0;
}

// The statistics array (f64), for L layers with a gradient variance and a terms table of t
// columns: the epoch's sums, the divergence flag, the last step's values, the last term means.
#define STATS_STEPS 0
#define STATS_OBJECTIVE 1
#define STATS_GRAD_VAR 2
#define STATS_DIVERGED 3
#define STATS_WHAT 4
#define STATS_WHICH 5
#define STATS_LAST_OBJECTIVE 6
#define STATS_LAYERS 7
#define STATS_PER_LAYER 3
// What STATS_WHAT names: the objective, layer STATS_WHICH's gradient variance, a baseline.
#define DIVERGED_OBJECTIVE 1
#define DIVERGED_GRAD_VAR 2
#define DIVERGED_BASELINE 3

// Each slot of the gradient variance's partial sums: Σ_r |u_r|²|g_r|², Σ_r |g_r|², Σ dw², Σ db².
#define GV_SLOT 4
// Weights (and biases) summed by one block of the partial sums.
#define GV_CHUNK 4096

// One of the gradient variance's chunk blocks: |dw|² and |db|² over elements chunk·GV_CHUNK ..
// of dw (nw) followed by db (nb), into slot (0, 0, |dw|², |db|²).
__device__ inline void grad_variance_chunk(double* slot, const float* dw, long long nw, const float* db, long long nb, int chunk, float* scratch) {
    long long start = (long long)chunk * GV_CHUNK;
    float sw = 0.0f, sb = 0.0f;
    for (long long e = start + threadIdx.x; e < start + GV_CHUNK; e += blockDim.x) {
        if (e < nw) {
            sw += dw[e] * dw[e];
        } else if (e < nw + nb) {
            float v = db[e - nw];
            sb += v * v;
        }
    }
    sw = block_sum(sw, scratch);
    sb = block_sum(sb, scratch);
    if (threadIdx.x == 0) {
        slot[0] = 0.0;
        slot[1] = 0.0;
        slot[2] = (double)sw;
        slot[3] = (double)sb;
    }
}

// The partial sums of one layer's gradient variance into partials[first_slot ..]: blocks
// 0..b-1 take the rows, the rest chunks of dw and then db (n). The per-example gradients are
// x (b, k) and g (b, n): for a dense layer (whole == 0) the weights' of row r are the outer
// product x[r]^T g[r], so its row sum is |x_r|^2·|g_r|^2 and dw is (k, n); given whole
// (whole != 0, a convolution's) x holds the weights' gradients, |x_r|^2, and dw is (k).
struct GradVarParams {
    double* partials;
    const float* x;
    const float* g;
    const float* dw;
    const float* db;
    int first_slot, b, k, n, whole;
};

KERNEL(grad_variance, GradVarParams, p) {
    __shared__ float scratch[REDUCE_BLOCK];
    int blk = blockIdx.x;
    double* slot = p.partials + (long long)(p.first_slot + blk) * GV_SLOT;
    if (blk < p.b) {
        float x2 = 0.0f, g2 = 0.0f;
        for (int j = threadIdx.x; j < p.k; j += blockDim.x) x2 += p.x[(long long)blk * p.k + j] * p.x[(long long)blk * p.k + j];
        for (int j = threadIdx.x; j < p.n; j += blockDim.x) g2 += p.g[(long long)blk * p.n + j] * p.g[(long long)blk * p.n + j];
        x2 = block_sum(x2, scratch);
        g2 = block_sum(g2, scratch);
        if (threadIdx.x == 0) {
            slot[0] = p.whole ? (double)x2 : (double)x2 * (double)g2;
            slot[1] = (double)g2;
            slot[2] = 0.0;
            slot[3] = 0.0;
        }
        return;
    }
    grad_variance_chunk(slot, p.dw, p.whole ? (long long)p.k : (long long)p.k * p.n, p.db, p.n, blk - p.b, scratch);
}

// After a step, in one block: the term means of terms (b, t) (f64, rows in order), the
// objective Σ coef[c]·mean[c], each baseline's target and its running average, each layer's
// gradient variance from its partial sums, the epoch's sums, the divergence flag (the first
// step at which the objective, a variance or a baseline is not finite), and the clock (step
// and batch advance). coef is (1 + baselines, t): the objective's row, then one per baseline;
// layer_params (layers) the parameter counts; slots (layers, 2) each layer's (first slot, count).
struct StepStatsParams {
    double* stats;
    float* baselines;
    u32* clock;
    const float* terms;
    const double* partials;
    const float* coef;
    const double* layer_params;
    const u32* slots;
    int b, t, layers, n_baselines;
    float decay;
};

KERNEL(step_stats, StepStatsParams, p) {
    double* means = p.stats + STATS_LAYERS + STATS_PER_LAYER * p.layers;
    for (int c = threadIdx.x; c < p.t; c += blockDim.x) {
        double m = 0.0;
        for (int r = 0; r < p.b; ++r) m += (double)p.terms[(long long)r * p.t + c];
        means[c] = m / (double)p.b;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    u64 step = clock_step(p.clock) + 1;
    int what = 0, which = 0;
    double objective = -0.0;
    for (int c = 0; c < p.t; ++c) objective += (double)p.coef[c] * means[c];
    if (!finite_d(objective)) what = DIVERGED_OBJECTIVE;
    double all_params = 0.0, total = 0.0;
    for (int l = 0; l < p.layers; ++l) all_params += p.layer_params[l];
    for (int l = 0; l < p.layers; ++l) {
        double rw = 0.0, rb = 0.0, sw = 0.0, sb = 0.0;
        for (u32 s = p.slots[2 * l]; s < p.slots[2 * l] + p.slots[2 * l + 1]; ++s) {
            rw += p.partials[(long long)s * GV_SLOT + 0];
            rb += p.partials[(long long)s * GV_SLOT + 1];
            sw += p.partials[(long long)s * GV_SLOT + 2];
            sb += p.partials[(long long)s * GV_SLOT + 3];
        }
        double w = rw / (double)p.b - sw, bv = rb / (double)p.b - sb;
        double* layer = p.stats + STATS_LAYERS + STATS_PER_LAYER * l;
        layer[0] += (w + bv) / p.layer_params[l];
        layer[1] = w;
        layer[2] = bv;
        total += w + bv;
        if (!what && !(finite_d(w) && finite_d(bv))) {
            what = DIVERGED_GRAD_VAR;
            which = l;
        }
    }
    for (int i = 0; i < p.n_baselines; ++i) {
        double target = -0.0;
        for (int c = 0; c < p.t; ++c) target += (double)p.coef[(long long)(i + 1) * p.t + c] * means[c];
        float b = p.baselines[i];
        b = p.decay * b + (1.0f - p.decay) * (float)target;
        p.baselines[i] = b;
        if (!what && !finite_d(b)) {
            what = DIVERGED_BASELINE;
            which = i;
        }
    }
    p.stats[STATS_STEPS] += 1.0;
    p.stats[STATS_OBJECTIVE] += objective;
    p.stats[STATS_GRAD_VAR] += total / all_params;
    p.stats[STATS_LAST_OBJECTIVE] = objective;
    if (what && p.stats[STATS_DIVERGED] == 0.0) {
        p.stats[STATS_DIVERGED] = (double)step;
        p.stats[STATS_WHAT] = what;
        p.stats[STATS_WHICH] = which;
    }
    p.clock[CLOCK_STEP_LO] = (u32)step;
    p.clock[CLOCK_STEP_HI] = (u32)(step >> 32);
    p.clock[CLOCK_BATCH] += 1;
}

// At an epoch's start: the epoch's sums back to zero, the clock at `epoch` and its batch
// `first_batch` (a run resumed mid-epoch skips the batches already done).
struct EpochStartParams {
    double* stats;
    u32* clock;
    u32 epoch, first_batch;
    int layers;
};

KERNEL(epoch_start, EpochStartParams, p) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    p.stats[STATS_STEPS] = 0.0;
    p.stats[STATS_OBJECTIVE] = 0.0;
    p.stats[STATS_GRAD_VAR] = 0.0;
    for (int l = 0; l < p.layers; ++l) p.stats[STATS_LAYERS + STATS_PER_LAYER * l] = 0.0;
    p.clock[CLOCK_EPOCH] = p.epoch;
    p.clock[CLOCK_BATCH] = p.first_batch;
}

// ---- the scan for NaN and infinity ----------------------------------------------------------

// For each of `count` tensors (table: count rows of {address, length} as u64), the number of
// NaNs and of infinities into counts[2i], counts[2i + 1]. One block.
struct CountNonFiniteParams {
    u32* counts;
    const u64* table;
    int count;
};

KERNEL(count_non_finite, CountNonFiniteParams, p) {
    __shared__ float scratch[REDUCE_BLOCK];
    for (int i = 0; i < p.count; ++i) {
        const float* x = (const float*)p.table[2 * i];
        long long n = (long long)p.table[2 * i + 1];
        float nan = 0.0f, inf = 0.0f;
        for (long long e = threadIdx.x; e < n; e += blockDim.x) {
            float v = x[e];
            nan += v != v ? 1.0f : 0.0f;
            inf += (v == v && v - v != v - v) ? 1.0f : 0.0f;
        }
        // Counts below 2^24 per thread are exact in f32; the totals go out as integers.
        nan = block_sum(nan, scratch);
        inf = block_sum(inf, scratch);
        if (threadIdx.x == 0) {
            p.counts[2 * i] = (u32)nan;
            p.counts[2 * i + 1] = (u32)inf;
        }
    }
}

// ---- Adam over every tensor in one launch -----------------------------------------------------

// Adam ascent step t = clock.step + 1 on every tensor of the table: count rows of {param, grad,
// m, v, n, first} (u64; `first` the tensor's first element in the launch's flat numbering):
// param += lr · m̂ / (sqrt(v̂) + eps), m̂ = m / (1 - beta1^t), v̂ = v / (1 - beta2^t).
struct AdamParams {
    const u64* table;
    const u32* clock;
    int count;
    long long total;
    float lr, beta1, beta2, eps;
};

#define ADAM_ROW 6

KERNEL(adam, AdamParams, p) {
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= p.total) return;
    int i = 0;
    while (i + 1 < p.count && (long long)p.table[(i + 1) * ADAM_ROW + 5] <= e) ++i;
    const u64* row = p.table + i * ADAM_ROW;
    long long j = e - (long long)row[5];
    float* param = (float*)row[0];
    const float* grad = (const float*)row[1];
    float* m_ = (float*)row[2];
    float* v_ = (float*)row[3];
    u32 t = (u32)(clock_step(p.clock) + 1);
    float c1 = 1.0f - powi_f32(p.beta1, t), c2 = 1.0f - powi_f32(p.beta2, t);
    float g = grad[j];
    float m = p.beta1 * m_[j] + (1.0f - p.beta1) * g;
    float v = p.beta2 * v_[j] + (1.0f - p.beta2) * g * g;
    m_[j] = m;
    v_[j] = v;
    param[j] += p.lr * (m / c1) / (sqrtf(v / c2) + p.eps);
}
