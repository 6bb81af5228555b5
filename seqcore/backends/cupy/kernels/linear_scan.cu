// Diagonal linear scan h_t = a_t * h_{t-1} + x_t and its VJP, as three passes over chunks of
// C steps (RESEARCH §2).  Arrays are C-contiguous (B, T, D); one thread owns one (row, chunk,
// channel), and neighbouring threads own neighbouring channels, so every load is coalesced.
//
// A pass walks "iterations" u = 0 .. T-1 of its own order.  time_of(u) maps them to time:
// the forward scan walks forwards (backwards when reverse), the VJP the other way.  With
// SHIFTED, the coefficient of iteration u is a at iteration u-1 (0 at u = 0): the VJP's
// recurrence g_s = dh_s + a_{s+1} g_{s+1} in its own order.  Each thread carries that a from
// one iteration to the next instead of loading it twice.
//
//   chunk_reduce    : each chunk as an affine map   state_out = prod * state_in + end
//   chain_chunks    : the chunks' entry states, serially over the n = ceil(T / C) chunks
//   chunk_scan      : every chunk again from its entry state, writing h          (forward)
//   chunk_scan_vjp  : the same, writing db = g, da = g * h_prev and dh0          (VJP)
// With C = T (n = 1) only the last pass runs: the plain sequential scan.
//
// Flags are ints and every array is a real one (zeros where a state is absent): no null
// pointers or bools cross the Python-CUDA boundary.  Loops are branch-free and unrolled, and
// pointers __restrict__, so that each thread keeps several loads in flight.

__device__ __forceinline__ long long time_of(long long u, long long T, int flip) {
    return flip ? T - 1 - u : u;
}

// The task of thread `id` in a pass over B x n x D (row, chunk, channel), channels fastest.
struct Task {
    long long i, d, row, u0, u1;  // batch row, channel, offset of (i, t = 0, d), the chunk's iterations [u0, u1)
};

__device__ __forceinline__ Task task_of(long long id, long long T, long long D, long long C, long long n) {
    long long d = id % D, c = (id / D) % n, i = id / (D * n);
    long long u1 = (c + 1) * C < T ? (c + 1) * C : T;
    return Task{i, d, i * T * D + d, c * C, u1};
}

// The coefficient of a shifted pass's first iteration u0: a at iteration u0 - 1 (0 at u0 = 0).
template <typename F>
__device__ __forceinline__ F coefficient_before(const F* __restrict__ a, const Task& k, long long T, long long D,
                                                int flip) {
    return k.u0 == 0 ? F(0) : a[k.row + time_of(k.u0 - 1, T, flip) * D];
}

template <typename F, bool SHIFTED>
__global__ void chunk_reduce(const F* __restrict__ a, const F* __restrict__ x, long long B, long long T, long long D,
                             long long C, int flip, F* __restrict__ prod, F* __restrict__ end) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * D) return;
    Task k = task_of(id, T, D, C, n);
    F carried = SHIFTED ? coefficient_before(a, k, T, D, flip) : F(0);
    F p = F(1), s = F(0);
#pragma unroll 4
    for (long long u = k.u0; u < k.u1; ++u) {
        long long t = k.row + time_of(u, T, flip) * D;
        F at = a[t];
        F g = SHIFTED ? carried : at;
        carried = at;
        s = g * s + x[t];
        p *= g;
    }
    prod[id] = p;
    end[id] = s;
}

// entry[i, c, d]: the state entering chunk c; entry[i, 0, d] = init[i, d]
template <typename F>
__global__ void chain_chunks(const F* __restrict__ prod, const F* __restrict__ end, const F* __restrict__ init,
                             long long B, long long n, long long D, F* __restrict__ entry) {
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * D) return;
    long long d = id % D, i = id / D;
    F s = init[id];
#pragma unroll 8
    for (long long c = 0; c < n; ++c) {
        long long k = (i * n + c) * D + d;
        entry[k] = s;
        s = prod[k] * s + end[k];
    }
}

// entry[i, c, d]: the state entering each chunk (h0 when n = 1).
template <typename F>
__global__ void chunk_scan(const F* __restrict__ a, const F* __restrict__ x, const F* __restrict__ entry, long long B,
                           long long T, long long D, long long C, int flip, F* __restrict__ h) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * D) return;
    Task k = task_of(id, T, D, C, n);
    F s = entry[id];
#pragma unroll 4
    for (long long u = k.u0; u < k.u1; ++u) {
        long long t = k.row + time_of(u, T, flip) * D;
        s = a[t] * s + x[t];
        h[t] = s;
    }
}

// The VJP's last pass (x = dh, flip opposite to the forward's, entry zeros when n = 1):
// db = g, da_t = g_t * h_{t-1} with h0 before the forward's first step (this pass's last
// iteration, T - 1, peeled off so that the loop needs no branch), dh0 = a_first * g_first.
template <typename F>
__global__ void chunk_scan_vjp(const F* __restrict__ a, const F* __restrict__ x, const F* __restrict__ entry,
                               long long B, long long T, long long D, long long C, int flip,
                               const F* __restrict__ h, const F* __restrict__ h0, F* __restrict__ db,
                               F* __restrict__ da, F* __restrict__ dh0) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * D) return;
    Task k = task_of(id, T, D, C, n);
    F s = entry[id];
    F carried = coefficient_before(a, k, T, D, flip);
    long long stop = k.u1 < T ? k.u1 : T - 1;
    // the forward's previous step is one further along this pass's order: iteration u + 1
    long long step = flip ? -D : D;
#pragma unroll 4
    for (long long u = k.u0; u < stop; ++u) {
        long long t = k.row + time_of(u, T, flip) * D;
        F at = a[t];
        s = carried * s + x[t];
        carried = at;
        db[t] = s;
        da[t] = s * h[t + step];
    }
    if (k.u1 == T) {
        long long t = k.row + time_of(T - 1, T, flip) * D;
        s = carried * s + x[t];
        db[t] = s;
        da[t] = s * h0[k.i * D + k.d];
        dh0[k.i * D + k.d] = a[t] * s;
    }
}
