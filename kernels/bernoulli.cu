// Bernoulli layers: fused sampling, per-row log-likelihoods and entropies, reward rows, and the
// logit gradients of a log-likelihood (bernoulli_delta) and of an entropy (entropy_grad).

// z (b, n) from logits (b, n): u = uniform(key, i), p = clip(sigma(logit)); z = [u < p], or for
// DisARM (antithetic != 0) z = [1 - u < p] and its twin anti = [u < p].
struct BernoulliSampleParams {
    float* z;
    float* anti;
    const float* logits;
    RngKey key;
    int b, n, antithetic;
};

KERNEL(bernoulli_sample, BernoulliSampleParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.b * p.n) return;
    float u = rng_uniform(p.key, (u32)i);
    float prob = clipped_p(p.logits[i]);
    if (p.antithetic) {
        p.z[i] = (1.0f - u < prob) ? 1.0f : 0.0f;
        p.anti[i] = (u < prob) ? 1.0f : 0.0f;
    } else {
        p.z[i] = (u < prob) ? 1.0f : 0.0f;
    }
}

// out (n) = logits clamped to ±CLIP_LOGIT, so that sigma(out) = clip(sigma(logits)): log π(z | out)
// is the log-probability of z under the distribution bernoulli_sample draws from (the proposal of
// the importance-weighted bound, src/evaluate.rs).
struct ClipLogitsParams {
    float* out;
    const float* logits;
    int n;
};

KERNEL(clip_logits, ClipLogitsParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    p.out[i] = fminf(fmaxf(p.logits[i], -CLIP_LOGIT), CLIP_LOGIT);
}

// terms[r, col] = Σ_j log π(targets[r, j] | logits[r, j]) (logits (n) when broadcast), or with
// entropy != 0, Σ_j H(sigma(logits[r, j])). With base_logits non-null, each element's term minus
// the same term of (base_logits, base_targets): two chains compared without subtracting large
// totals. One block per row.
struct RowTermParams {
    float* terms;
    const float* logits;
    const float* targets;
    const float* base_logits;
    const float* base_targets;
    int b, n, t, col, broadcast, entropy;
};

__device__ inline float row_term(float a, float x, int entropy) {
    if (entropy) {
        float ls, h;
        log_sigmoid_and_entropy(a, &ls, &h);
        return h;
    }
    return log_sigmoid((2.0f * x - 1.0f) * a);
}

KERNEL(row_terms, RowTermParams, p) {
    __shared__ float scratch[REDUCE_BLOCK];
    int r = blockIdx.x;
    long long row = (long long)r * p.n;
    const float* a = p.broadcast ? p.logits : p.logits + row;
    const float* a0 = p.base_logits ? (p.broadcast ? p.base_logits : p.base_logits + row) : 0;
    float s = 0.0f;
    for (int j = threadIdx.x; j < p.n; j += blockDim.x) {
        float x = p.entropy ? 0.0f : p.targets[row + j];
        float v = row_term(a[j], x, p.entropy);
        if (a0) v -= row_term(a0[j], p.entropy ? 0.0f : p.base_targets[row + j], p.entropy);
        s += v;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) p.terms[(long long)r * p.t + p.col] = s;
}

// out (m, b): out[j, r] = Σ_c coef[j, c] · terms[r, c] - (baselines ? baselines[baseline] : 0),
// coef (m, t): rows' rewards less the baseline (which lives on the device), or one row per chain.
struct WeightedRowSumParams {
    float* out;
    const float* terms;
    const float* coef;
    const float* baselines;
    int baseline, b, t, m;
};

KERNEL(weighted_row_sum, WeightedRowSumParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.m * p.b) return;
    long long j = i / p.b, r = i % p.b;
    float s = 0.0f;
    for (int c = 0; c < p.t; ++c) s += p.coef[j * p.t + c] * p.terms[r * p.t + c];
    p.out[i] = p.baselines ? s - p.baselines[p.baseline] : s;
}

// out (b, n) = targets - sigma(logits); logits (b, n), or (n) when broadcast.
struct BernoulliDeltaParams {
    float* out;
    const float* logits;
    const float* targets;
    int b, n, broadcast;
};

KERNEL(bernoulli_delta, BernoulliDeltaParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.b * p.n) return;
    float a = p.broadcast ? p.logits[i % p.n] : p.logits[i];
    p.out[i] = p.targets[i] - sigmoid(a);
}

// out (b, n) = -a·sigma(a)·sigma(-a), a = logits: the logit derivative of H(sigma(a)).
struct EntropyGradParams {
    float* out;
    const float* logits;
    int b, n;
};

KERNEL(entropy_grad, EntropyGradParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.b * p.n) return;
    float a = p.logits[i];
    p.out[i] = -a * sigmoid(a) * sigmoid(-a);
}
