// Diagonal linear scan h_t = a_t * h_{t-1} + x_t and its VJP, as three passes over chunks of
// C steps (RESEARCH §2).  Arrays are C-contiguous (B, T, D); one thread owns one (row, chunk,
// channel), and neighbouring threads own neighbouring channels, so every load is coalesced.
//
// A pass walks "iterations" u = 0 .. T-1 of its own order.  time_of(u) maps them to time:
// the forward scan walks forwards (backwards when reverse), the VJP the other way.  With
// `shifted`, the coefficient of iteration u is a at iteration u-1 (0 at u = 0): the VJP's
// recurrence g_s = dh_s + a_{s+1} g_{s+1} in its own order.
//
//   chunk_reduce: each chunk as an affine map   state_out = prod * state_in + end
//   chain_chunks: the chunks' entry states, serially over the n = ceil(T / C) chunks
//   chunk_scan  : every chunk again from its entry state, writing the outputs
// With C = T (n = 1) only chunk_scan runs: the plain sequential scan.

// Flags are ints and every array is a real one (zeros where a state is absent): no null
// pointers or bools cross the Python-CUDA boundary.

__device__ __forceinline__ long long time_of(long long u, long long T, int flip) {
    return flip ? T - 1 - u : u;
}

__device__ __forceinline__ long long chunk_end(long long c, long long C, long long T) {
    return (c + 1) * C < T ? (c + 1) * C : T;
}

template <typename F>
__device__ __forceinline__ F coefficient(const F* a, long long row, long long u, long long T, long long D,
                                         int flip, int shifted) {
    if (shifted) {
        if (u == 0) return F(0);
        u -= 1;
    }
    return a[row + time_of(u, T, flip) * D];
}

template <typename F>
__global__ void chunk_reduce(const F* a, const F* x, long long B, long long T, long long D, long long C,
                             int flip, int shifted, F* prod, F* end) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * D) return;
    long long d = id % D, c = (id / D) % n, i = id / (D * n);
    long long row = i * T * D + d;
    long long u1 = chunk_end(c, C, T);
    F p = F(1), s = F(0);
    for (long long u = c * C; u < u1; ++u) {
        F k = coefficient(a, row, u, T, D, flip, shifted);
        s = k * s + x[row + time_of(u, T, flip) * D];
        p *= k;
    }
    prod[id] = p;
    end[id] = s;
}

// entry[i, c, d]: the state entering chunk c; entry[i, 0, d] = init[i, d]
template <typename F>
__global__ void chain_chunks(const F* prod, const F* end, const F* init, long long B, long long n, long long D,
                             F* entry) {
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * D) return;
    long long d = id % D, i = id / D;
    F s = init[id];
    for (long long c = 0; c < n; ++c) {
        long long k = (i * n + c) * D + d;
        entry[k] = s;
        s = prod[k] * s + end[k];
    }
}

// entry[i, c, d]: the state entering each chunk (h0, or zeros for the VJP, when n = 1).
// Forward (vjp = 0): out = h.  VJP (vjp = 1): out = db = g, and also da_t = g_t * h_{t-1}
// (h0 before the first step) and dh0 = a_first * g_first; h, h0, da, dh0 are unused otherwise.
template <typename F>
__global__ void chunk_scan(const F* a, const F* x, const F* entry, long long B, long long T, long long D,
                           long long C, int flip, int shifted, F* out,
                           int vjp, const F* h, const F* h0, F* da, F* dh0) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * D) return;
    long long d = id % D, c = (id / D) % n, i = id / (D * n);
    long long row = i * T * D + d;
    long long u1 = chunk_end(c, C, T);
    F s = entry[id];
    for (long long u = c * C; u < u1; ++u) {
        long long t = time_of(u, T, flip);
        s = coefficient(a, row, u, T, D, flip, shifted) * s + x[row + t * D];
        out[row + t * D] = s;
        if (vjp) {
            // the VJP walks time against the forward scan: the forward's previous step is
            // one further along this pass's order, and the forward's first step is u = T - 1
            F prev;
            if (u < T - 1) prev = h[row + time_of(u + 1, T, flip) * D];
            else prev = h0[i * D + d];
            da[row + t * D] = s * prev;
            if (u == T - 1) dh0[i * D + d] = a[row + t * D] * s;
        }
    }
}
