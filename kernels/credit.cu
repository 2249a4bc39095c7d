// HNCA's fused credit pass and the per-unit logit gradients of every estimator (the VAE's
// encoder units and the bandit's hidden units).

// For row r and parent unit i, the change that flipping parent i makes (shifting child c's logit
// by Δ = w[i, c]·(1 - 2·parent[r, i])):
//   flip_lp[r, i]  = Σ_c [log π(child[r, c] | child_logits[r, c] + Δ) - log π(child | child_logits)]
//   flip_ent[r, i] = Σ_c [H(sigma(child_logits[r, c] + Δ)) - H(sigma(child_logits[r, c]))]  (entropy != 0)
// in product form, operation for operation as src/backend/cpu/credit.rs (read it for the
// algebra): flip_lp = -log Π_c x, x = p_obs + p_oth·e^{(1-2y)Δ}, over CREDIT_LANES interleaved
// lanes of children, each product renormalised every R groups, the lanes summed as a tree.
// parent (b, p), tables from credit_tables, child_logits (b, c), child (b, c). One block per
// (row, group of CREDIT_PARENTS parents): a thread per (parent, lane); the row's children are
// staged through shared memory in chunks. Never materialises (b, c, p).
#define CREDIT_BLOCK 128
#define CREDIT_PARENTS 8
#define CREDIT_CHUNK 512
#define CREDIT_LANES 16
#define CREDIT_RENORM_RANGE 80

__device__ inline int credit_padded(int c) {
    return (c + CREDIT_LANES - 1) / CREDIT_LANES * CREDIT_LANES;
}

// Children per lane between renormalisations for a parent whose largest |w| is `max` (0: the
// per-edge form).
__device__ inline float renorm_interval(float max) {
    const float range = (float)CREDIT_RENORM_RANGE;
    if (max > range) return 0.0f;
    if (max * 1048576.0f < range) return 1048576.0f;
    return floorf(range / max);
}

// m = mant·2^e with mant in [1, 2), for a positive normal m.
__device__ inline float split_exponent(float m, int* e) {
    u32 bits = __float_as_uint(m);
    *e = (int)((bits >> 23) & 0xffu) - 127;
    return __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);
}

// The tables of w (p, c), rows padded to whole lane groups (cp): e^w, e^-w, w (padding: 1, 1, 0),
// then each parent's renormalisation interval. One block per parent.
struct CreditTablesParams {
    float* tables;
    const float* w;
    int p, c;
};

KERNEL(credit_tables, CreditTablesParams, a) {
    __shared__ float scratch[REDUCE_BLOCK];
    int i = blockIdx.x, cp = credit_padded(a.c);
    long long plane = (long long)a.p * cp;
    float* plus = a.tables + (long long)i * cp;
    float* minus = plus + plane;
    float* wt = minus + plane;
    float max = 0.0f;
    for (int j = threadIdx.x; j < cp; j += blockDim.x) {
        float v = j < a.c ? a.w[(long long)i * a.c + j] : 0.0f;
        plus[j] = exp_f32(v);
        minus[j] = exp_f32(-v);
        wt[j] = v;
        max = fmaxf(max, fabsf(v));
    }
    max = block_max(max, scratch);
    if (threadIdx.x == 0) a.tables[3 * plane + i] = renorm_interval(max);
}

struct CreditParams {
    float* flip_lp;
    float* flip_ent;
    const float* parent;
    const float* tables;
    const float* child_logits;
    const float* child;
    int b, p, c, entropy;
};

KERNEL(credit_pass, CreditParams, p) {
    __shared__ float obs[CREDIT_CHUNK], oth[CREDIT_CHUNK], ys[CREDIT_CHUNK];
    __shared__ float maj[CREDIT_CHUNK], mnr[CREDIT_CHUNK], zs[CREDIT_CHUNK], ca[CREDIT_CHUNK], cb[CREDIT_CHUNK];
    __shared__ float sa[CREDIT_CHUNK], sgn[CREDIT_CHUNK], lp0[CREDIT_CHUNK], ent0[CREDIT_CHUNK];
    __shared__ float lane_m[CREDIT_BLOCK], lane_mz[CREDIT_BLOCK], lane_t[CREDIT_BLOCK];
    __shared__ int lane_e[CREDIT_BLOCK], lane_ez[CREDIT_BLOCK];
    int r = blockIdx.x;
    int q = threadIdx.x / CREDIT_LANES, l = threadIdx.x % CREDIT_LANES;
    int i = blockIdx.y * CREDIT_PARENTS + q;
    bool live = i < p.p;
    int cp = credit_padded(p.c);
    long long plane = (long long)p.p * cp;
    float u = live ? p.parent[(long long)r * p.p + i] : 0.0f;
    float d = 1.0f - 2.0f * u;
    const float* plus = p.tables + (long long)(live ? i : 0) * cp;
    const float* minus = plus + plane;
    const float* wi = minus + plane;
    const float* t_same = u > 0.5f ? minus : plus;
    const float* t_other = u > 0.5f ? plus : minus;
    float interval = live ? p.tables[3 * plane + i] : 1.0f;
    u32 every = (u32)interval;
    // Groups of lanes left before the next renormalisation (counted across chunks, so that it
    // falls where the CPU's does; how often it falls changes no bits, only whether it can overflow).
    u32 until_renorm = every;
    float m = 1.0f, mz = 1.0f, acc = 0.0f;
    int ex = 0, exz = 0;
    // The per-edge form, for a parent whose weights are too large: one thread, the CPU's order
    // (eight interleaved sums over the padded children, then those in order).
    float elp[8] = {0, 0, 0, 0, 0, 0, 0, 0}, eent[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int c0 = 0; c0 < cp; c0 += CREDIT_CHUNK) {
        int len = cp - c0 < CREDIT_CHUNK ? cp - c0 : CREDIT_CHUNK;
        for (int j = threadIdx.x; j < len; j += blockDim.x) {
            int c = c0 + j;
            if (c >= p.c) {
                float l0, h0;
                log_sigmoid_and_entropy(0.0f, &l0, &h0);
                obs[j] = 1.0f;
                oth[j] = 0.0f;
                ys[j] = 0.0f;
                maj[j] = 1.0f;
                mnr[j] = 0.0f;
                zs[j] = 0.0f;
                ca[j] = 0.0f;
                cb[j] = 0.0f;
                sa[j] = 0.0f;
                sgn[j] = 1.0f;
                lp0[j] = l0;
                ent0[j] = h0;
                continue;
            }
            long long at = (long long)r * p.c + c;
            float logit = p.child_logits[at], y = p.child[at];
            float s = 2.0f * y - 1.0f;
            float signed_logit = s * logit;
            float e = exp_neg(-fabsf(signed_logit));
            float inv = 1.0f / (1.0f + e);
            float po = signed_logit >= 0.0f ? inv : e * inv;
            float pt = signed_logit >= 0.0f ? e * inv : inv;
            float sig = y > 0.5f ? po : pt, qig = y > 0.5f ? pt : po;
            float z = logit >= 0.0f ? 1.0f : 0.0f;
            float pz = logit >= 0.0f ? sig : qig, pnz = logit >= 0.0f ? qig : sig;
            float sz = 2.0f * z - 1.0f;
            obs[j] = po;
            oth[j] = pt;
            ys[j] = y;
            maj[j] = pz;
            mnr[j] = pnz;
            zs[j] = z;
            ca[j] = sz * pnz;
            cb[j] = sz * (sig * qig) * logit;
            sa[j] = signed_logit;
            sgn[j] = s;
            log_sigmoid_and_entropy(signed_logit, &lp0[j], &ent0[j]);
        }
        __syncthreads();
        if (live && every > 0) {
            for (int j = l; j < len; j += CREDIT_LANES) {
                int c = c0 + j;
                float e = ys[j] > 0.5f ? t_other[c] : t_same[c];
                m = m * (obs[j] + oth[j] * e);
                if (p.entropy) {
                    // The entropy terms as one fraction acc/mz (see cpu/credit.rs).
                    float ez = zs[j] > 0.5f ? t_other[c] : t_same[c];
                    float xz = maj[j] + mnr[j] * ez;
                    float delta = d * wi[c];
                    float t1 = ca[j] * delta + cb[j];
                    float n = ez * t1 - cb[j];
                    acc = acc * xz + n * mz;
                    mz = mz * xz;
                }
                if (--until_renorm == 0u) {
                    until_renorm = every;
                    int e2;
                    m = split_exponent(m, &e2);
                    ex += e2;
                    if (p.entropy) {
                        mz = split_exponent(mz, &e2);
                        exz += e2;
                        acc = acc * __uint_as_float((u32)(127 - e2) << 23);
                    }
                }
            }
        } else if (live && l == 0) {
            // len is a multiple of 16, c0 of CREDIT_CHUNK: child c0 + j + k goes to sum k.
            for (int j = 0; j < len; j += 8) {
                for (int k = 0; k < 8; ++k) {
                    float ls, h;
                    log_sigmoid_and_entropy(sa[j + k] + d * sgn[j + k] * wi[c0 + j + k], &ls, &h);
                    elp[k] += ls - lp0[j + k];
                    eent[k] += h - ent0[j + k];
                }
            }
        }
        __syncthreads();
    }
    // The lanes of a parent combined as a tree in shared memory (lane l with lane l + h for
    // h = 8, 4, 2, 1), the CPU's order (cpu/credit.rs, log_product and lane_fraction_sum): each
    // product's exponent taken out, the mantissas multiplied, then one logarithm; the entropy's
    // fractions, scaled so that their denominators (the mantissas of mz) are in [1, 2), added as
    // a/b + c/d = (a·d + c·b)/(b·d), then one division.
    int e2;
    lane_m[threadIdx.x] = split_exponent(m, &e2);
    lane_e[threadIdx.x] = ex + e2;
    if (p.entropy) {
        lane_mz[threadIdx.x] = split_exponent(mz, &e2);
        lane_ez[threadIdx.x] = exz + e2;
        lane_t[threadIdx.x] = acc * __uint_as_float((u32)(127 - e2) << 23);
    }
    __syncthreads();
    for (int h = CREDIT_LANES / 2; h > 0; h /= 2) {
        if (l < h) {
            int t = threadIdx.x;
            lane_m[t] = lane_m[t] * lane_m[t + h];
            lane_e[t] += lane_e[t + h];
            if (p.entropy) {
                lane_t[t] = lane_t[t] * lane_mz[t + h] + lane_t[t + h] * lane_mz[t];
                lane_mz[t] = lane_mz[t] * lane_mz[t + h];
                lane_ez[t] += lane_ez[t + h];
            }
        }
        __syncthreads();
    }
    if (!live || l != 0) return;
    long long out = (long long)r * p.p + i;
    if (every == 0) {
        float lp = 0.0f, en = 0.0f;
        for (int k = 0; k < 8; ++k) {
            lp = lp + elp[k];
            en = en + eent[k];
        }
        p.flip_lp[out] = lp;
        if (p.entropy) p.flip_ent[out] = en;
        return;
    }
    const float ln2 = 0.693147180559945309f;
    float mant = split_exponent(lane_m[threadIdx.x], &e2);
    p.flip_lp[out] = -(log1p_unit(mant - 1.0f) + (float)(lane_e[threadIdx.x] + e2) * ln2);
    if (p.entropy) {
        float mz_all = lane_mz[threadIdx.x];
        float mant_z = split_exponent(mz_all, &e2);
        p.flip_ent[out] = (log1p_unit(mant_z - 1.0f) + (float)(lane_ez[threadIdx.x] + e2) * ln2) + lane_t[threadIdx.x] / mz_all;
    }
}

// HNCA's hindsight ratios from the fire rate p and delta = log P_0 - log P_1, branching on the
// sign of delta so that no exponential overflows.
__device__ inline void hindsight_ratios(float p, float delta, float* rho1, float* rho0) {
    float e = exp_neg(-fabsf(delta));
    if (delta >= 0.0f) {
        float den = p * e + (1.0f - p);
        *rho1 = e / den;
        *rho0 = 1.0f / den;
    } else {
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
    float scale;
    int b, p, t;
    int col_dec, col_gen, col_ent;
    int gen_is_prior, has_above, all_child, accumulate, reward_offset;
};

KERNEL(hnca_unit_grad, HncaUnitParams, a) {
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
    float credit = clipped_log_odds_against(a.logits[i]) + dec_term + rho1 * own1 - rho0 * own0 + (rho1 - rho0) * (siblings + a.reward[a.reward_offset + r]) + ent_term;
    float v = a.scale * (pk * (1.0f - pk) * credit);
    a.out[i] = a.accumulate ? a.out[i] + v : v;
}

// Score-function logit gradient: out = p(1-p)·log((1-p)/p) + coef[r]·(z - alt)·scale with
// mode SCORE_ALT_MEAN (REINFORCE): alt = p; SCORE_ALT_SAMPLE (leave-one-out): alt = z';
// SCORE_ALT_ANTITHETIC (DisARM): alt = z̃, scale = sigma(|a|).
#define SCORE_ALT_MEAN 0
#define SCORE_ALT_SAMPLE 1
#define SCORE_ALT_ANTITHETIC 2
struct ScoreUnitParams {
    float* out;
    const float* logits;
    const float* z;
    const float* alt;
    const float* coef;
    int b, n, mode;
};

KERNEL(score_unit_grad, ScoreUnitParams, a) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)a.b * a.n) return;
    float p = clipped_p(a.logits[i]);
    float own_entropy = p * (1.0f - p) * clipped_log_odds_against(a.logits[i]);
    float score;
    if (a.mode == SCORE_ALT_MEAN) {
        score = a.z[i] - p;
    } else if (a.mode == SCORE_ALT_SAMPLE) {
        score = a.z[i] - a.alt[i];
    } else {
        score = (a.z[i] - a.alt[i]) * fmaxf(p, 1.0f - p);
    }
    a.out[i] = own_entropy + a.coef[i / a.n] * score;
}

// A hidden bandit unit's logit gradient, out (b, n): HNCA p(1-p)(rho_1 - rho_0) coef[r] when
// `flip` is given, else REINFORCE (z - p) coef[r]. With rho_gradient, HNCA's gradient as the
// reference code took it, differentiating through rho as well: p(1-p)(rho_1 - rho_0) rho_0 coef[r].
struct BanditUnitParams {
    float* out;
    const float* logits;
    const float* z;
    const float* flip;
    const float* coef;
    int b, n, rho_gradient;
};

KERNEL(bandit_unit_grad, BanditUnitParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.b * p.n) return;
    float pk = clipped_p(p.logits[i]);
    float c = p.coef[i / p.n];
    if (p.flip) {
        float rho1, rho0;
        hindsight_ratios(pk, p.z[i] > 0.5f ? p.flip[i] : -p.flip[i], &rho1, &rho0);
        float g = pk * (1.0f - pk) * (rho1 - rho0);
        p.out[i] = c * (p.rho_gradient ? g * rho0 : g);
    } else {
        p.out[i] = c * (p.z[i] - pk);
    }
}
