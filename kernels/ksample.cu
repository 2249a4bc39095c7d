// The K-sample estimators (docs/estimators.md): ARMS's antithetic K-tuples, the per-row
// combination of a layer's K chains into its logit gradient (leave-one-out, ARMS, Double CV,
// RODEO with its learned control network). CPU twin: src/backend/cpu/ksample.rs.

// The most samples per layer: the length of the per-row tables of chain scalars.
#define MAX_SAMPLES 64

// RODEO's control network per layer (thjashin/rodeo, SteinControlNNSingleLayer): inputs
// (lin, fbar), each through a dense layer of RODEO_HIDDEN units, summed, LeakyReLU(0.3), a dense
// layer to (H_0, H_1). Its parameters follow α and β in the layer's learned vector:
// [α, β, wx (H), bx (H), wz (H), bz (H), w2 (2, H): the weights into H_0 then into H_1, b2 (2)],
// RODEO_LEARNED values in all.
#define RODEO_HIDDEN 100
#define RODEO_LEARNED 604
#define RODEO_WX 2
#define RODEO_BX 102
#define RODEO_WZ 202
#define RODEO_BZ 302
#define RODEO_W2 402
#define RODEO_B2 602

// Hidden unit h's pre-activation at (lin, fbar): lin·wx + ((bx + fbar·wz) + bz), the part in
// parentheses shared by a chain's points (the CPU computes it once per chain, in this order).
__device__ inline float rodeo_pre(const float* nn, int h, float lin, float fbar) {
    return lin * nn[RODEO_WX + h] + ((nn[RODEO_BX + h] + fbar * nn[RODEO_WZ + h]) + nn[RODEO_BZ + h]);
}

// (H_0, H_1) of the control network `nn` (the layer's learned vector) at (lin, fbar).
__device__ inline void rodeo_eval(const float* nn, float lin, float fbar, float* h0, float* h1) {
    float o0 = nn[RODEO_B2], o1 = nn[RODEO_B2 + 1];
    for (int h = 0; h < RODEO_HIDDEN; ++h) {
        float pre = rodeo_pre(nn, h, lin, fbar);
        float act = pre >= 0.0f ? pre : 0.3f * pre;
        o0 += act * nn[RODEO_W2 + h];
        o1 += act * nn[RODEO_W2 + RODEO_HIDDEN + h];
    }
    *h0 = o0;
    *h1 = o1;
}

// ARMS: for each element i of (b, n), K-1 uniforms uniform(key, i·(K-1) + s), sorted; their
// spacings d (a Dirichlet(1,…,1) draw of K parts); U_k = (1 - d_k)^{K-1}; z_k = [U_k < p] for
// p = clip(sigma(logit)) < ½, else [1 - U_k < p]. `zs` is a table of K output addresses.
struct ArmsSampleParams {
    const u64* zs;
    const float* logits;
    RngKey key;
    int b, n, k;
};

KERNEL(arms_sample, ArmsSampleParams, p) {
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
    // K = 2: J = (2p - 1)_+, and the factor is max(p, 1 - p) = sigma(|a|), DisARM's.
    if (k == 2) return fmaxf(p, 1.0f - p);
    u32 m = (u32)(k - 1);
    float q = p < 0.5f ? p : 1.0f - p;
    float root = m == 1 ? q : powf(q, 1.0f / (float)m);
    float biv = powi_f32(fmaxf(2.0f * root - 1.0f, 0.0f), m);
    float j = p < 0.5f ? biv : 2.0f * p - 1.0f + biv;
    return p * (1.0f - p) / (p - j);
}

// The logit gradient of a K-sample score-function estimator for one encoder layer, one block
// per row, in mode KSCORE_LOO (leave-one-out), KSCORE_ARMS, KSCORE_DOUBLE_CV or KSCORE_RODEO
// (n_coef: DOUBLE_CV_LEARNED or RODEO_LEARNED learned values, else 0). z and grad_f are tables of
// K addresses of (b, n) arrays (chain 0 the main one); rows is (K, b): row 0 F_l of the main
// chain, row j F_l(chain j) - F_l(main); coef the layer's learned vector (α; or RODEO's).
// With cv_partials, row r gets the ascent direction of every learned value on the variance
// loss, loss_scale·Σ_d g_d·∂g_d/∂value (n_coef values per row).
#define KSCORE_LOO 0
#define KSCORE_ARMS 1
#define KSCORE_DOUBLE_CV 2
#define KSCORE_RODEO 3
#define DOUBLE_CV_LEARNED 1
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

// Σ_c ∇F_c at unit i of the row: G_i.
__device__ inline float grad_f_total(const u64* grad_f, int k, long long at) {
    float g = 0.0f;
    for (int c = 0; c < k; ++c) g += ((const float*)grad_f[c])[at];
    return g;
}

KERNEL(k_score_unit_grad, KScoreParams, p) {
    __shared__ float scratch[REDUCE_BLOCK];
    __shared__ float c_tab[MAX_SAMPLES];
    __shared__ float a_tab[MAX_SAMPLES];
    __shared__ float gz_tab[MAX_SAMPLES];
    __shared__ float fz_tab[MAX_SAMPLES];
    // RODEO: Σ_i w H_0, Σ_i w H_1, Σ_i w over the flipped neighbours; H at the sample; u·s_k.
    __shared__ float s0_tab[MAX_SAMPLES];
    __shared__ float t_tab[MAX_SAMPLES];
    __shared__ float w_tab[MAX_SAMPLES];
    __shared__ float h0z_tab[MAX_SAMPLES];
    __shared__ float h1z_tab[MAX_SAMPLES];
    __shared__ float us_tab[MAX_SAMPLES];
    __shared__ float nn[RODEO_LEARNED];
    int r = blockIdx.x;
    int n = p.n, k = p.k;
    float kf = (float)k, km1 = (float)(k - 1), nf = (float)n;
    long long at = (long long)r * n;
    const float* logits = p.logits + at;
    bool cv = p.mode == KSCORE_DOUBLE_CV || p.mode == KSCORE_RODEO;
    bool rodeo = p.mode == KSCORE_RODEO;
    // Leave-one-out coefficients c_k = (D_k - D̄)/(K-1), D_0 = 0, in the CPU's order.
    float d_sum = 0.0f;
    for (int j = 1; j < k; ++j) d_sum += p.rows[(long long)j * p.b + r];
    float d_bar = d_sum / kf;
    if (threadIdx.x == 0) {
        for (int j = 0; j < k; ++j) c_tab[j] = ((j == 0 ? 0.0f : p.rows[(long long)j * p.b + r]) - d_bar) / km1;
    }
    if (rodeo) {
        for (int i = threadIdx.x; i < RODEO_LEARNED; i += blockDim.x) nn[i] = p.coef[i];
    }
    __syncthreads();
    if (cv) {
        for (int j = 0; j < k; ++j) {
            const float* zj = (const float*)p.z[j] + at;
            const float* fj = (const float*)p.grad_f[j] + at;
            float a = 0.0f, gz = 0.0f, fz = 0.0f;
            for (int d = threadIdx.x; d < n; d += blockDim.x) {
                float g = grad_f_total(p.grad_f, k, at + d);
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
        if (rodeo) beta = p.coef[1];
    }
    float cc_bar = 0.0f, fz_sum = 0.0f;
    if (cv) {
        for (int j = 0; j < k; ++j) cc_bar += a_tab[j] / km1;
        cc_bar /= kf;
        for (int j = 0; j < k; ++j) fz_sum += fz_tab[j];
    }
    float f0 = p.rows[r];
    // RODEO: chain j's control function is H(lin, fbar_j), fbar_j the other chains' mean F_l and
    // lin = ℓ_j(z_j) + ḡ_{-j,i}(1 - 2 z_{j,i}) at the neighbour with unit i flipped.
    if (rodeo) {
        for (int j = 0; j < k; ++j) {
            const float* zj = (const float*)p.z[j] + at;
            const float* fj = (const float*)p.grad_f[j] + at;
            float d_j = j == 0 ? 0.0f : p.rows[(long long)j * p.b + r];
            float fbar = f0 + (d_sum - d_j) / km1;
            float lz = (gz_tab[j] - fz_sum) / km1;
            float s0 = 0.0f, t1 = 0.0f, ww = 0.0f;
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                float g = grad_f_total(p.grad_f, k, at + i);
                float zi = zj[i], pi = clipped_p(logits[i]);
                float lin = lz + (g - fj[i]) / km1 * (1.0f - 2.0f * zi);
                float w = pi * (1.0f - zi) + (1.0f - pi) * zi;
                float h0, h1;
                rodeo_eval(nn, lin, fbar, &h0, &h1);
                s0 += w * h0;
                t1 += w * h1;
                ww += w;
            }
            s0 = block_sum(s0, scratch);
            t1 = block_sum(t1, scratch);
            ww = block_sum(ww, scratch);
            if (threadIdx.x == 0) {
                s0_tab[j] = s0;
                t_tab[j] = t1;
                w_tab[j] = ww;
                rodeo_eval(nn, lz, fbar, &h0z_tab[j], &h1z_tab[j]);
            }
        }
        __syncthreads();
    }
    float dcv_sum = 0.0f;
    if (rodeo) {
        for (int j = 0; j < k; ++j) dcv_sum += (s0_tab[j] - w_tab[j] * h0z_tab[j]) / nf;
    }
    float gb = 0.0f, gc = 0.0f;
    for (int d = threadIdx.x; d < n; d += blockDim.x) {
        float pd = clipped_p(logits[d]);
        float ent = pd * (1.0f - pd) * clipped_log_odds_against(logits[d]);
        float loo = 0.0f;
        for (int j = 0; j < k; ++j) loo += c_tab[j] * ((const float*)p.z[j])[at + d];
        float g = p.mode == KSCORE_ARMS ? ent + arms_debias(pd, k) * loo : ent + loo;
        float part_b = 0.0f, part_c = 0.0f;
        if (p.mode == KSCORE_DOUBLE_CV) {
            float acc = 0.0f;
            for (int j = 0; j < k; ++j) acc += (a_tab[j] / km1 - cc_bar) * ((const float*)p.z[j])[at + d];
            part_b = acc / km1 - grad_f_total(p.grad_f, k, at + d) / kf * (pd * (1.0f - pd));
        } else if (rodeo) {
            float gt = grad_f_total(p.grad_f, k, at + d);
            float acc_b = 0.0f, acc_c = 0.0f;
            for (int j = 0; j < k; ++j) {
                float zj = ((const float*)p.z[j])[at + d];
                float sj = zj - pd;
                float dcv_j = (s0_tab[j] - w_tab[j] * h0z_tab[j]) / nf;
                acc_b += (dcv_sum - dcv_j) / km1 * sj;
                float d_j = j == 0 ? 0.0f : p.rows[(long long)j * p.b + r];
                float fbar = f0 + (d_sum - d_j) / km1;
                float lin = (gz_tab[j] - fz_sum) / km1 + (gt - ((const float*)p.grad_f[j])[at + d]) / km1 * (1.0f - 2.0f * zj);
                float h0, h1;
                rodeo_eval(nn, lin, fbar, &h0, &h1);
                float w = pd * (1.0f - zj) + (1.0f - pd) * zj;
                acc_c += (sj * (t_tab[j] - w * h1) + w * h1 * (1.0f - zj - pd) - h1z_tab[j] * sj * w_tab[j]) / nf;
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
    if (!p.cv_partials) return;
    gb = block_sum(gb, scratch);
    gc = block_sum(gc, scratch);
    float* partials = p.cv_partials + (long long)r * p.n_coef;
    if (threadIdx.x == 0) {
        partials[0] = p.loss_scale * gb;
        if (rodeo) partials[1] = p.loss_scale * gc;
    }
    if (!rodeo) return;
    // The network's ascent: with u = loss_scale·g, u·s_j per chain, then every evaluation
    // point's upstream weights (on H_0 through the baseline's control variate, on H_1 through
    // the gradient's) backpropagated, one hidden unit per thread.
    __syncthreads();
    for (int j = 0; j < k; ++j) {
        const float* zj = (const float*)p.z[j] + at;
        float us = 0.0f;
        for (int d = threadIdx.x; d < n; d += blockDim.x) us += p.loss_scale * p.out[at + d] * (zj[d] - clipped_p(logits[d]));
        us = block_sum(us, scratch);
        if (threadIdx.x == 0) us_tab[j] = us;
    }
    __syncthreads();
    float us_sum = 0.0f;
    for (int j = 0; j < k; ++j) us_sum += us_tab[j];
    int h = threadIdx.x;
    if (h >= RODEO_HIDDEN) return;
    float wx = nn[RODEO_WX + h];
    float w20 = nn[RODEO_W2 + h], w21 = nn[RODEO_W2 + RODEO_HIDDEN + h];
    float d_wx = 0.0f, d_bx = 0.0f, d_wz = 0.0f, d_bz = 0.0f, d_w20 = 0.0f, d_w21 = 0.0f, d_b20 = 0.0f, d_b21 = 0.0f;
    for (int j = 0; j < k; ++j) {
        const float* zj = (const float*)p.z[j] + at;
        const float* fj = (const float*)p.grad_f[j] + at;
        float d_j = j == 0 ? 0.0f : p.rows[(long long)j * p.b + r];
        float fbar = f0 + (d_sum - d_j) / km1;
        float lz = (gz_tab[j] - fz_sum) / km1;
        float up_dcv = -alpha / (kf * km1) * (us_sum - us_tab[j]);
        float shared = (nn[RODEO_BX + h] + fbar * nn[RODEO_WZ + h]) + nn[RODEO_BZ + h];
        // bx and bz take the pre-activation's upstream gradient, wz that times the chain's fbar:
        // summed over the chain's points first, as the CPU does.
        float d_pre = 0.0f;
        for (int i = 0; i <= n; ++i) {
            float lin, up0, up1;
            if (i < n) {
                float g = grad_f_total(p.grad_f, k, at + i);
                float zi = zj[i], pi = clipped_p(logits[i]);
                float w = pi * (1.0f - zi) + (1.0f - pi) * zi;
                lin = lz + (g - fj[i]) / km1 * (1.0f - 2.0f * zi);
                up0 = up_dcv * w / nf;
                up1 = beta * w / (kf * nf) * (us_tab[j] + p.loss_scale * p.out[at + i] * (1.0f - 2.0f * zi));
            } else {
                lin = lz;
                up0 = -up_dcv * w_tab[j] / nf;
                up1 = -beta * w_tab[j] / (kf * nf) * us_tab[j];
            }
            float pre = lin * wx + shared;
            float act = pre >= 0.0f ? pre : 0.3f * pre;
            d_w20 += act * up0;
            d_w21 += act * up1;
            d_b20 += up0;
            d_b21 += up1;
            float dpre = (up0 * w20 + up1 * w21) * (pre >= 0.0f ? 1.0f : 0.3f);
            d_wx += dpre * lin;
            d_pre += dpre;
        }
        d_bx += d_pre;
        d_wz += d_pre * fbar;
        d_bz += d_pre;
    }
    partials[RODEO_WX + h] = d_wx;
    partials[RODEO_BX + h] = d_bx;
    partials[RODEO_WZ + h] = d_wz;
    partials[RODEO_BZ + h] = d_bz;
    partials[RODEO_W2 + h] = d_w20;
    partials[RODEO_W2 + RODEO_HIDDEN + h] = d_w21;
    if (h == 0) {
        partials[RODEO_B2] = d_b20;
        partials[RODEO_B2 + 1] = d_b21;
    }
}

