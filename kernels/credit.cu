// HNCA's fused credit pass and the per-unit logit gradients of every estimator.

// For row r and parent unit i, the change that flipping parent i makes (shifting child c's logit
// by Δ = w[i, c]·(1 - 2·parent[r, i])):
//   flip_lp[r, i]  = Σ_c [log π(child[r, c] | child_logits[r, c] + Δ) - log π(child | child_logits)]
//   flip_ent[r, i] = Σ_c [H(sigma(child_logits[r, c] + Δ)) - H(sigma(child_logits[r, c]))]  (entropy != 0)
// Summing per-child differences keeps HNCA's credit free of cancellation in f32.
// parent (b, p), w (p, c), child_logits (b, c), child (b, c). One block per (row, group of
// CREDIT_PARENTS parents); the row's signed logits are staged through shared memory in chunks,
// each thread strides over the children, and a block sum finishes each parent.
// Never materialises (b, c, p).
#define CREDIT_BLOCK 128
#define CREDIT_PARENTS 8
#define CREDIT_CHUNK 1024

struct CreditParams {
    float* flip_lp;
    float* flip_ent;
    const float* parent;
    const float* w;
    const float* child_logits;
    const float* child;
    int b, p, c, entropy;
};

KERNEL void credit_pass(const CreditParams p) {
    __shared__ float sa[CREDIT_CHUNK];
    __shared__ float sg[CREDIT_CHUNK];
    __shared__ float lp0[CREDIT_CHUNK];
    __shared__ float ent0[CREDIT_CHUNK];
    __shared__ float scratch[CREDIT_BLOCK];
    int r = blockIdx.x;
    int i0 = blockIdx.y * CREDIT_PARENTS;
    float lp[CREDIT_PARENTS], en[CREDIT_PARENTS], d[CREDIT_PARENTS];
    for (int q = 0; q < CREDIT_PARENTS; ++q) {
        int i = i0 + q;
        lp[q] = 0.0f;
        en[q] = 0.0f;
        d[q] = i < p.p ? 1.0f - 2.0f * p.parent[(long long)r * p.p + i] : 0.0f;
    }
    for (int c0 = 0; c0 < p.c; c0 += CREDIT_CHUNK) {
        int len = p.c - c0 < CREDIT_CHUNK ? p.c - c0 : CREDIT_CHUNK;
        for (int j = threadIdx.x; j < len; j += blockDim.x) {
            long long at = (long long)r * p.c + c0 + j;
            float s = 2.0f * p.child[at] - 1.0f;
            sg[j] = s;
            sa[j] = s * p.child_logits[at];
            log_sigmoid_and_entropy(sa[j], &lp0[j], &ent0[j]);
        }
        __syncthreads();
        for (int q = 0; q < CREDIT_PARENTS; ++q) {
            int i = i0 + q;
            if (i >= p.p) continue;
            const float* wi = p.w + (long long)i * p.c + c0;
            for (int j = threadIdx.x; j < len; j += blockDim.x) {
                float ls, h;
                log_sigmoid_and_entropy(sa[j] + d[q] * sg[j] * wi[j], &ls, &h);
                lp[q] += ls - lp0[j];
                if (p.entropy) en[q] += h - ent0[j];
            }
        }
        __syncthreads();
    }
    for (int q = 0; q < CREDIT_PARENTS; ++q) {
        int i = i0 + q;
        float total = block_sum(lp[q], scratch);
        if (threadIdx.x == 0 && i < p.p) p.flip_lp[(long long)r * p.p + i] = total;
        if (p.entropy) {
            total = block_sum(en[q], scratch);
            if (threadIdx.x == 0 && i < p.p) p.flip_ent[(long long)r * p.p + i] = total;
        }
    }
}

// HNCA's hindsight ratios from the fire rate p and delta = log P_0 - log P_1, branching on the
// sign of delta so that no exponential overflows.
__device__ inline void hindsight_ratios(float p, float delta, float* rho1, float* rho0) {
    if (delta >= 0.0f) {
        float e = expf(-delta);
        float den = p * e + (1.0f - p);
        *rho1 = e / den;
        *rho0 = 1.0f / den;
    } else {
        float e = expf(delta);
        float den = p + (1.0f - p) * e;
        *rho1 = 1.0f / den;
        *rho0 = e / den;
    }
}

// f-HNCA's logit gradient p(1-p)·G for every unit of one encoder layer (see
// src/backend/cpu.rs, hnca_unit_grad, for the formula term by term). Row totals come from the
// terms table (b, t); has_above = 0 for the top layer (no stochastic children in the encoder).
struct HncaUnitParams {
    float* out;
    const float* logits;
    const float* z;
    const float* flip_dec;
    const float* gen_logits;
    const float* flip_lp;
    const float* flip_ent;
    const float* reward;
    const float* terms;
    int b, p, t;
    int col_dec, col_gen, col_ent;
    int gen_is_prior, has_above, all_child;
};

KERNEL void hnca_unit_grad(const HncaUnitParams a) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)a.b * a.p) return;
    long long r = i / a.p;
    int k = (int)(i % a.p);
    const float* row = a.terms + r * a.t;
    float pk = clipped_p(a.logits[i]);
    bool on = a.z[i] > 0.5f;
    float dec_actual = row[a.col_dec], dec_flip = a.flip_dec[i];
    // A term's value at Φ = 1 and Φ = 0 from its actual value and the change flipping Φ makes.
    float dec1 = on ? dec_actual : dec_actual + dec_flip, dec0 = on ? dec_actual + dec_flip : dec_actual;
    float rho1 = 1.0f, rho0 = 1.0f, ent1 = 0.0f, ent0 = 0.0f;
    if (a.has_above) {
        // delta = log P_0 - log P_1 is ± the change itself.
        float change = a.flip_lp[i];
        hindsight_ratios(pk, on ? change : -change, &rho1, &rho0);
        float e_actual = row[a.col_ent], e_flip = a.flip_ent[i];
        ent1 = on ? e_actual : e_actual + e_flip;
        ent0 = on ? e_actual + e_flip : e_actual;
    }
    float g = a.gen_is_prior ? a.gen_logits[k] : a.gen_logits[i];
    float own1 = log_sigmoid(g), own0 = log_sigmoid(-g);
    float siblings = row[a.col_gen] - (on ? own1 : own0);
    float dec_term = a.all_child ? rho1 * dec1 - rho0 * dec0 : dec1 - dec0;
    float ent_term = a.all_child ? rho1 * ent1 - rho0 * ent0 : ent1 - ent0;
    float credit = logf((1.0f - pk) / pk) + dec_term + rho1 * own1 - rho0 * own0 + (rho1 - rho0) * (siblings + a.reward[r]) + ent_term;
    a.out[i] = pk * (1.0f - pk) * credit;
}

// Score-function logit gradient: out = p(1-p)·log((1-p)/p) + coef[r]·(z - alt)·scale with
// mode 0 (REINFORCE): alt = p; 1 (leave-one-out): alt = z'; 2 (DisARM): alt = z̃, scale = sigma(|a|).
struct ScoreUnitParams {
    float* out;
    const float* logits;
    const float* z;
    const float* alt;
    const float* coef;
    int b, n, mode;
};

KERNEL void score_unit_grad(const ScoreUnitParams a) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)a.b * a.n) return;
    float p = clipped_p(a.logits[i]);
    float own_entropy = p * (1.0f - p) * logf((1.0f - p) / p);
    float score;
    if (a.mode == 0) {
        score = a.z[i] - p;
    } else if (a.mode == 1) {
        score = a.z[i] - a.alt[i];
    } else {
        score = (a.z[i] - a.alt[i]) * fmaxf(p, 1.0f - p);
    }
    a.out[i] = own_entropy + a.coef[i / a.n] * score;
}
