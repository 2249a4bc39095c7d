// Dense layers: the GEMM, column means and elementwise vector ops (axpy, affine).

// c (m, n) = alpha · A (m, k) · B (k, n) + beta · c + bias (n), with A and B given by strides so
// that one kernel serves inp·w (forward) and inpᵀ·dout (weight gradient). bias may be null.
// Tiled through shared memory: a GEMM_TILE x GEMM_TILE block of threads per output tile.
#define GEMM_TILE 16

struct GemmParams {
    float* c;
    const float* a;
    const float* b;
    const float* bias;
    int m, n, k;
    int a_row, a_col, b_row, b_col;  // element (i, l) of A is a[i*a_row + l*a_col]
    float alpha, beta;
};

KERNEL(gemm, GemmParams, p) {
    __shared__ float ta[GEMM_TILE][GEMM_TILE + 1];
    __shared__ float tb[GEMM_TILE][GEMM_TILE + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * GEMM_TILE + ty;
    int col = blockIdx.x * GEMM_TILE + tx;
    float acc = 0.0f;
    for (int l0 = 0; l0 < p.k; l0 += GEMM_TILE) {
        int la = l0 + tx, lb = l0 + ty;
        ta[ty][tx] = (row < p.m && la < p.k) ? p.a[(long long)row * p.a_row + (long long)la * p.a_col] : 0.0f;
        tb[ty][tx] = (lb < p.k && col < p.n) ? p.b[(long long)lb * p.b_row + (long long)col * p.b_col] : 0.0f;
        __syncthreads();
        for (int l = 0; l < GEMM_TILE; ++l) acc += ta[ty][l] * tb[l][tx];
        __syncthreads();
    }
    if (row < p.m && col < p.n) {
        long long i = (long long)row * p.n + col;
        float v = p.alpha * acc;
        if (p.beta != 0.0f) v += p.beta * p.c[i];
        if (p.bias) v += p.bias[col];
        p.c[i] = v;
    }
}

// out (n) = mean over the b rows of x (b, n): one thread per column, rows in order.
struct ColumnMeanParams {
    float* out;
    const float* x;
    int b, n;
};

KERNEL(column_mean, ColumnMeanParams, p) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= p.n) return;
    float s = 0.0f;
    for (int r = 0; r < p.b; ++r) s += p.x[(long long)r * p.n + j];
    p.out[j] = s / (float)p.b;
}

// out (n) = scale * x + shift: centring bits to +-1, or doubling weights.
struct AffineParams {
    float* out;
    const float* x;
    float scale, shift;
    int n;
};

KERNEL(affine, AffineParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    p.out[i] = p.scale * p.x[i] + p.shift;
}

// y (n) += a·x.
struct AxpyParams {
    float* y;
    const float* x;
    float a;
    int n;
};

KERNEL(axpy, AxpyParams, p) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    p.y[i] += p.a * p.x[i];
}
