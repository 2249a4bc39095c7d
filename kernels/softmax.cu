// The bandit's softmax output: its action and reward, its score, and the credit pass into it
// (src/backend/cpu/softmax.rs is the twin).

// The largest logit of a row and sum_j exp(z_j - max), in index order (as cpu/softmax.rs).
__device__ inline void softmax_max_and_sum(const float* z, int a, float* max, float* sum) {
    float m = __uint_as_float(0xff800000u);
    for (int j = 0; j < a; ++j) m = fmaxf(m, z[j]);
    float s = 0.0f;
    for (int j = 0; j < a; ++j) s = s + exp_neg(z[j] - m);
    *max = m;
    *sum = s;
}

// One thread per row: action[r] ~ softmax(logits[r]) by inverse CDF with uniform r of `key`;
// reward[r] = (action[r] == labels[r]). action, reward, labels (b); logits (b, a).
struct SoftmaxActParams {
    float* action;
    float* reward;
    const float* logits;
    const float* labels;
    RngKey key;
    int b, a;
};

KERNEL(softmax_act, SoftmaxActParams, p) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= p.b) return;
    const float* z = p.logits + (long long)r * p.a;
    float max, sum;
    softmax_max_and_sum(z, p.a, &max, &sum);
    float target = rng_uniform(p.key, (u32)r) * sum;
    float acc = 0.0f;
    int act = p.a - 1;
    for (int j = 0; j < p.a; ++j) {
        acc = acc + exp_neg(z[j] - max);
        if (target < acc) {
            act = j;
            break;
        }
    }
    p.action[r] = (float)act;
    p.reward[r] = (float)act == p.labels[r] ? 1.0f : 0.0f;
}

// REINFORCE for the softmax output: dout (b, a) = (onehot(action[r]) - softmax(logits[r])) * coef[r].
struct SoftmaxScoreParams {
    float* dout;
    const float* logits;
    const float* action;
    const float* coef;
    int b, a;
};

KERNEL(softmax_score, SoftmaxScoreParams, p) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= p.b) return;
    const float* z = p.logits + (long long)r * p.a;
    float max, sum;
    softmax_max_and_sum(z, p.a, &max, &sum);
    for (int j = 0; j < p.a; ++j) {
        float onehot = (float)j == p.action[r] ? 1.0f : 0.0f;
        p.dout[(long long)r * p.a + j] = (onehot - exp_neg(z[j] - max) / sum) * p.coef[r];
    }
}

// The credit pass into the softmax child, one thread per (row, parent): flip (b, p) =
// log pi(action | parent i flipped) - log pi(action), the flip moving the logits by
// (1 - 2 parent) * w2[i, :]; w2 is (p, a).
struct SoftmaxCreditParams {
    float* flip;
    const float* parent;
    const float* w2;
    const float* tables;
    const float* logits;
    const float* action;
    int b, p, a;
};

KERNEL(softmax_credit, SoftmaxCreditParams, p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)p.b * p.p) return;
    int r = (int)(idx / p.p), i = (int)(idx % p.p);
    const float* z = p.logits + (long long)r * p.a;
    const float* w = p.w2 + (long long)i * p.a;
    float d = 1.0f - 2.0f * p.parent[idx];
    float max, sum;
    softmax_max_and_sum(z, p.a, &max, &sum);
    int act = (int)p.action[r];
    int ap = credit_padded(p.a);
    long long plane = (long long)p.p * ap;
    if (p.tables[3 * plane + i] > 0.0f) {
        // Product form (cpu/softmax.rs, log_prob_change_tabled): d·w[act] - log sum_j pi_j·e^{d·w_j}.
        const float* e = p.tables + (d > 0.0f ? 0 : plane) + (long long)i * ap;
        float inv = 1.0f / sum, s = 0.0f;
        for (int j = 0; j < p.a; ++j) s = s + (exp_neg(z[j] - max) * inv) * e[j];
        p.flip[idx] = d * w[act] - logf(s);
        return;
    }
    // The per-edge form, for weights beyond the tables' range.
    float max2 = __uint_as_float(0xff800000u);
    for (int j = 0; j < p.a; ++j) max2 = fmaxf(max2, z[j] + d * w[j]);
    float sum2 = 0.0f;
    for (int j = 0; j < p.a; ++j) sum2 = sum2 + exp_neg(z[j] + d * w[j] - max2);
    p.flip[idx] = d * w[act] - ((max2 - max) + logf(sum2 / sum));
}

