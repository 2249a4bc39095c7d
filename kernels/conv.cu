// ---- convolutions, stride 1 and no padding ("VALID"), images in (b, height, width, channels)
// order; weights (k, k, c_in, c_out). src/backend/cpu/conv.rs is the twin (through im2col and
// GEMMs there, one thread per output element here). The output is (b, oh, ow, c_out) with
// oh = height - k + 1, ow = width - k + 1.

struct ConvForwardParams {
    float* out;
    const float* x;
    const float* weights;
    const float* bias;
    int b, height, width, c_in, c_out, k;
};

// One thread per output element: out = max(0, bias + sum over the k x k x c_in patch).
KERNEL(conv_relu_forward, ConvForwardParams, p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int oh = p.height - p.k + 1, ow = p.width - p.k + 1;
    if (idx >= (long long)p.b * oh * ow * p.c_out) return;
    int o = (int)(idx % p.c_out);
    long long pos = idx / p.c_out;
    int ox = (int)(pos % ow), oy = (int)(pos / ow % oh), r = (int)(pos / ((long long)ow * oh));
    float acc = 0.0f;
    for (int ky = 0; ky < p.k; ++ky) {
        for (int kx = 0; kx < p.k; ++kx) {
            const float* xs = p.x + (((long long)r * p.height + oy + ky) * p.width + ox + kx) * p.c_in;
            const float* ws = p.weights + ((long long)(ky * p.k + kx) * p.c_in) * p.c_out + o;
            for (int c = 0; c < p.c_in; ++c) acc += xs[c] * ws[(long long)c * p.c_out];
        }
    }
    p.out[idx] = fmaxf(acc + p.bias[o], 0.0f);
}

struct ConvBackwardInputParams {
    float* dx;
    const float* dout;
    const float* weights;
    int b, height, width, c_in, c_out, k;
};

// One thread per input element: dx[r, y, x, c] = sum over the outputs whose patch holds it of
// dout[r, y - ky, x - kx, o] * w[ky, kx, c, o]. dout (b, oh, ow, c_out), dx (b, height, width, c_in).
KERNEL(conv_backward_input, ConvBackwardInputParams, p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)p.b * p.height * p.width * p.c_in) return;
    int oh = p.height - p.k + 1, ow = p.width - p.k + 1;
    int c = (int)(idx % p.c_in);
    long long pos = idx / p.c_in;
    int x = (int)(pos % p.width), y = (int)(pos / p.width % p.height), r = (int)(pos / ((long long)p.width * p.height));
    float acc = 0.0f;
    for (int ky = 0; ky < p.k; ++ky) {
        int oy = y - ky;
        if (oy < 0 || oy >= oh) continue;
        for (int kx = 0; kx < p.k; ++kx) {
            int ox = x - kx;
            if (ox < 0 || ox >= ow) continue;
            const float* g = p.dout + (((long long)r * oh + oy) * ow + ox) * p.c_out;
            const float* ws = p.weights + ((long long)(ky * p.k + kx) * p.c_in + c) * p.c_out;
            for (int o = 0; o < p.c_out; ++o) acc += g[o] * ws[o];
        }
    }
    p.dx[idx] = acc;
}

struct ConvSampleGradsParams {
    float* gw;
    float* gb;
    const float* x;
    const float* dout;
    int b, height, width, c_in, c_out, k;
};

// Per-example gradients, one thread per (row, parameter): gw (b, k*k*c_in*c_out), row r the sum
// over output positions of x's patch times dout[r, pos, :]; gb (b, c_out) the sum of dout[r, pos, :].
KERNEL(conv_sample_grads, ConvSampleGradsParams, p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long nw = (long long)p.k * p.k * p.c_in * p.c_out;
    long long per_row = nw + p.c_out;
    if (idx >= (long long)p.b * per_row) return;
    int r = (int)(idx / per_row);
    long long e = idx % per_row;
    int oh = p.height - p.k + 1, ow = p.width - p.k + 1;
    const float* g = p.dout + (long long)r * oh * ow * p.c_out;
    if (e >= nw) {
        int o = (int)(e - nw);
        float acc = 0.0f;
        for (long long q = 0; q < (long long)oh * ow; ++q) acc += g[q * p.c_out + o];
        p.gb[(long long)r * p.c_out + o] = acc;
        return;
    }
    int o = (int)(e % p.c_out);
    long long tap = e / p.c_out;
    int c = (int)(tap % p.c_in), kx = (int)(tap / p.c_in % p.k), ky = (int)(tap / ((long long)p.c_in * p.k));
    const float* xs = p.x + (((long long)r * p.height + ky) * p.width + kx) * p.c_in + c;
    float acc = 0.0f;
    for (int oy = 0; oy < oh; ++oy) {
        for (int ox = 0; ox < ow; ++ox) {
            acc += xs[((long long)oy * p.width + ox) * p.c_in] * g[((long long)oy * ow + ox) * p.c_out + o];
        }
    }
    p.gw[(long long)r * nw + e] = acc;
}

// g (n) = 0 where act (n), a ReLU's output, is not positive: the gradient through the ReLU.
struct ReluBackwardParams {
    float* g;
    const float* act;
    int n;
};

KERNEL(relu_backward, ReluBackwardParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    if (!(p.act[i] > 0.0f)) p.g[i] = 0.0f;
}
