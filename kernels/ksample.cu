// The K-sample estimators (docs/estimators.md): ARMS's antithetic K-tuples, the per-row
// combination of a layer's K chains into its logit gradient (leave-one-out, ARMS, Double CV,
// RODEO with the Taylor control function), the logit derivative of an entropy (for ∇F), and a
// plain axpy (SGD). CPU twins: src/backend/cpu/ksample.rs and src/backend/cpu/mod.rs.

// The most samples per layer: the length of the per-row tables of chain scalars.
#define MAX_SAMPLES 64

// ARMS: for each element i of (b, n), K-1 uniforms uniform(key, i·(K-1) + s), sorted; their
// spacings d (a Dirichlet(1,…,1) draw of K parts); U_k = (1 - d_k)^{K-1}; z_k = [U_k < p] for
// p = clip(sigma(logit)) < ½, else [1 - U_k < p]. `zs` is a table of K output addresses.
struct ArmsSampleParams {
    const u64* zs;
    const float* logits;
    RngKey key;
    int b, n, k;
};

KERNEL void arms_sample(const ArmsSampleParams p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.b * p.n) return;
    int m = p.k - 1;
    float u[MAX_SAMPLES];
    for (int s = 0; s < m; ++s) u[s] = rng_uniform(p.key, (u32)(i * m + s));
    for (int s = 1; s < m; ++s) {
        float v = u[s];
        int j = s;
        while (j > 0 && u[j - 1] > v) {
            u[j] = u[j - 1];
            --j;
        }
        u[j] = v;
    }
    float prob = clipped_p(p.logits[i]);
    float prev = 0.0f;
    for (int c = 0; c < p.k; ++c) {
        float next = c < m ? u[c] : 1.0f;
        float d = next - prev;
        prev = next;
        float big_u = powi_f32(1.0f - d, (u32)m);
        bool on = prob < 0.5f ? big_u < prob : 1.0f - big_u < prob;
        ((float*)p.zs[c])[i] = on ? 1.0f : 0.0f;
    }
}

// ARMS's debiasing factor p(1-p)/(p - J), J the pairwise joint of two of the K draws
// (src/backend/cpu/ksample.rs, arms_debias).
__device__ inline float arms_debias(float p, int k) {
    u32 m = (u32)(k - 1);
    float q = p < 0.5f ? p : 1.0f - p;
    float root = m == 1 ? q : powf(q, 1.0f / (float)m);
    float biv = powi_f32(fmaxf(2.0f * root - 1.0f, 0.0f), m);
    float j = p < 0.5f ? biv : 2.0f * p - 1.0f + biv;
    return p * (1.0f - p) / (p - j);
}

// The logit gradient of a K-sample score-function estimator for one encoder layer, one block
// per row. mode 0: leave-one-out; 1: ARMS; 2: Double CV; 3: RODEO (Taylor control function).
// z and grad_f are tables of K addresses of (b, n) arrays (chain 0 the main one); rows is
// (K, b): row 0 F_l of the main chain, row j F_l(chain j) - F_l(main). With cv_partials, row r
// gets loss_scale·Σ_d g_d·B_d (and ·C_d for RODEO): the coefficients' ascent directions.
struct KScoreParams {
    float* out;
    float* cv_partials;
    const float* logits;
    const u64* z;
    const u64* grad_f;
    const float* rows;
    const float* coef;
    float loss_scale;
    int b, n, k, mode, n_coef;
};

KERNEL void k_score_unit_grad(const KScoreParams p) {
    __shared__ float scratch[REDUCE_BLOCK];
    __shared__ float c_tab[MAX_SAMPLES];
    __shared__ float a_tab[MAX_SAMPLES];
    __shared__ float gz_tab[MAX_SAMPLES];
    __shared__ float fz_tab[MAX_SAMPLES];
    int r = blockIdx.x;
    int n = p.n, k = p.k;
    float kf = (float)k, km1 = (float)(k - 1), nf = (float)n;
    long long at = (long long)r * n;
    const float* logits = p.logits + at;
    bool cv = p.mode == 2 || p.mode == 3;
    // Leave-one-out coefficients c_k = (D_k - D̄)/(K-1), D_0 = 0, in the CPU's order.
    float d_sum = 0.0f;
    for (int j = 1; j < k; ++j) d_sum += p.rows[(long long)j * p.b + r];
    float d_bar = d_sum / kf;
    if (threadIdx.x == 0) {
        for (int j = 0; j < k; ++j) c_tab[j] = ((j == 0 ? 0.0f : p.rows[(long long)j * p.b + r]) - d_bar) / km1;
    }
    __syncthreads();
    if (cv) {
        for (int j = 0; j < k; ++j) {
            const float* zj = (const float*)p.z[j] + at;
            const float* fj = (const float*)p.grad_f[j] + at;
            float a = 0.0f, gz = 0.0f, fz = 0.0f;
            for (int d = threadIdx.x; d < n; d += blockDim.x) {
                float g = 0.0f;
                for (int c = 0; c < k; ++c) g += ((const float*)p.grad_f[c])[at + d];
                float zd = zj[d];
                a += (g - fj[d]) * (zd - clipped_p(logits[d]));
                gz += g * zd;
                fz += fj[d] * zd;
            }
            a = block_sum(a, scratch);
            gz = block_sum(gz, scratch);
            fz = block_sum(fz, scratch);
            if (threadIdx.x == 0) {
                a_tab[j] = a;
                gz_tab[j] = gz;
                fz_tab[j] = fz;
            }
        }
        __syncthreads();
    }
    float alpha = 0.0f, beta = 0.0f;
    if (cv) {
        alpha = p.coef[0];
        if (p.mode == 3) beta = p.coef[1];
    }
    float cc_bar = 0.0f, dcv_sum = 0.0f, fz_sum = 0.0f;
    if (cv) {
        for (int j = 0; j < k; ++j) cc_bar += a_tab[j] / km1;
        cc_bar /= kf;
        for (int j = 0; j < k; ++j) dcv_sum += -a_tab[j] / km1 / nf;
        for (int j = 0; j < k; ++j) fz_sum += fz_tab[j];
    }
    float f0 = p.rows[r];
    float gb = 0.0f, gc = 0.0f;
    for (int d = threadIdx.x; d < n; d += blockDim.x) {
        float pd = clipped_p(logits[d]);
        float ent = pd * (1.0f - pd) * clipped_log_odds_against(logits[d]);
        float loo = 0.0f;
        for (int j = 0; j < k; ++j) loo += c_tab[j] * ((const float*)p.z[j])[at + d];
        float g = p.mode == 1 ? ent + arms_debias(pd, k) * loo : ent + loo;
        float part_b = 0.0f, part_c = 0.0f;
        if (p.mode == 2) {
            float acc = 0.0f, gt = 0.0f;
            for (int j = 0; j < k; ++j) acc += (a_tab[j] / km1 - cc_bar) * ((const float*)p.z[j])[at + d];
            for (int c = 0; c < k; ++c) gt += ((const float*)p.grad_f[c])[at + d];
            part_b = acc / km1 - gt / kf * (pd * (1.0f - pd));
        } else if (p.mode == 3) {
            float gt = 0.0f;
            for (int c = 0; c < k; ++c) gt += ((const float*)p.grad_f[c])[at + d];
            float acc_b = 0.0f, acc_c = 0.0f;
            for (int j = 0; j < k; ++j) {
                float zj = ((const float*)p.z[j])[at + d];
                float sj = zj - pd;
                float dcv_j = -a_tab[j] / km1 / nf;
                acc_b += (dcv_sum - dcv_j) / km1 * sj;
                float d_j = j == 0 ? 0.0f : p.rows[(long long)j * p.b + r];
                float f_not = f0 + (d_sum - d_j) / km1;
                float h_z = f_not + (gz_tab[j] - fz_sum) / km1;
                float delta = (gt - ((const float*)p.grad_f[j])[at + d]) / km1 * (1.0f - 2.0f * zj);
                float w = pd * (1.0f - zj) + (1.0f - pd) * zj;
                float big_s = -a_tab[j] / km1;
                acc_c += (sj * (big_s - w * delta) - sj * h_z + w * delta * (1.0f - zj - pd)) / nf;
            }
            part_b = -acc_b / kf;
            part_c = acc_c / kf;
        }
        if (cv) {
            g += alpha * part_b + beta * part_c;
            gb += g * part_b;
            gc += g * part_c;
        }
        p.out[at + d] = g;
    }
    if (p.cv_partials) {
        gb = block_sum(gb, scratch);
        gc = block_sum(gc, scratch);
        if (threadIdx.x == 0) {
            p.cv_partials[(long long)r * p.n_coef] = p.loss_scale * gb;
            if (p.n_coef > 1) p.cv_partials[(long long)r * p.n_coef + 1] = p.loss_scale * gc;
        }
    }
}

// out (b, n) = -a·sigma(a)·sigma(-a), a = logits: the logit derivative of H(sigma(a)).
struct EntropyGradParams {
    float* out;
    const float* logits;
    int b, n;
};

KERNEL void entropy_grad(const EntropyGradParams p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.b * p.n) return;
    float a = p.logits[i];
    p.out[i] = -a * sigmoid(a) * sigmoid(-a);
}

// y (n) += a·x.
struct AxpyParams {
    float* y;
    const float* x;
    float a;
    int n;
};

KERNEL void axpy(const AxpyParams p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    p.y[i] += p.a * p.x[i];
}
