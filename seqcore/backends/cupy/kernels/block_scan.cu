// Block-diagonal linear scan h_t[g] = A_t[g] @ h_{t-1}[g] + x_t[g] with k x k blocks (K = 2, 3, 4)
// and its VJP, as the three passes over chunks of linear_scan.cu (read that file first: the
// iteration order, time_of, and the shifted coefficient of the VJP are the same).  A is
// C-contiguous (B, T, G, K, K), x and h (B, T, G, K); one thread owns one (row, chunk, group),
// neighbouring threads own neighbouring groups, and a block and a state live in registers.
//
// The VJP's recurrence g_s = dh_s + A_{s+1}^T g_{s+1} runs with the transposed blocks, shifted
// by one iteration; it writes db = g, dA_t = g_t h_{t-1}^T and dh0 = A_first^T g_first.

__device__ __forceinline__ long long time_of(long long u, long long T, int flip) {
    return flip ? T - 1 - u : u;
}

template <typename F, int K>
__device__ __forceinline__ void load_block(const F* __restrict__ A, long long off, bool transpose, F (&M)[K][K]) {
#pragma unroll
    for (int r = 0; r < K; ++r)
#pragma unroll
        for (int q = 0; q < K; ++q) M[r][q] = transpose ? A[off + q * K + r] : A[off + r * K + q];
}

template <typename F, int K>
__device__ __forceinline__ void copy_block(const F (&S)[K][K], F (&M)[K][K]) {
#pragma unroll
    for (int r = 0; r < K; ++r)
#pragma unroll
        for (int q = 0; q < K; ++q) M[r][q] = S[r][q];
}

// s <- M s + x[off .. off + K)
template <typename F, int K>
__device__ __forceinline__ void affine_step(const F (&M)[K][K], const F* __restrict__ x, long long off, F (&s)[K]) {
    F out[K];
#pragma unroll
    for (int r = 0; r < K; ++r) {
        F acc = x[off + r];
#pragma unroll
        for (int q = 0; q < K; ++q) acc += M[r][q] * s[q];
        out[r] = acc;
    }
#pragma unroll
    for (int r = 0; r < K; ++r) s[r] = out[r];
}

// The task of thread `id` in a pass over B x n x G (row, chunk, group), groups fastest.
struct BlockTask {
    long long i, g, u0, u1, a_row, x_row;  // offsets of (i, t = 0, g) in A and in x
};

template <int K>
__device__ __forceinline__ BlockTask block_task_of(long long id, long long T, long long G, long long C, long long n) {
    long long g = id % G, c = (id / G) % n, i = id / (G * n);
    long long u1 = (c + 1) * C < T ? (c + 1) * C : T;
    return BlockTask{i, g, c * C, u1, (i * T * G + g) * K * K, (i * T * G + g) * K};
}

// The block of a VJP pass's first iteration u0: A^T at iteration u0 - 1 (zero at u0 = 0).
template <typename F, int K>
__device__ __forceinline__ void block_before(const F* __restrict__ A, const BlockTask& k, long long T, long long G,
                                             int flip, F (&M)[K][K]) {
    if (k.u0 == 0) {
#pragma unroll
        for (int r = 0; r < K; ++r)
#pragma unroll
            for (int q = 0; q < K; ++q) M[r][q] = F(0);
    } else {
        load_block<F, K>(A, k.a_row + time_of(k.u0 - 1, T, flip) * G * K * K, true, M);
    }
}

template <typename F, int K, bool VJP>
__global__ void block_chunk_reduce(const F* __restrict__ A, const F* __restrict__ x, long long B, long long T,
                                   long long G, long long C, int flip, F* __restrict__ prod, F* __restrict__ end) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * G) return;
    BlockTask k = block_task_of<K>(id, T, G, C, n);
    F carried[K][K], P[K][K], s[K];
    if (VJP) block_before<F, K>(A, k, T, G, flip, carried);
#pragma unroll
    for (int r = 0; r < K; ++r) {
        s[r] = F(0);
#pragma unroll
        for (int q = 0; q < K; ++q) P[r][q] = r == q ? F(1) : F(0);
    }
    for (long long u = k.u0; u < k.u1; ++u) {
        long long t = time_of(u, T, flip);
        F M[K][K];
        load_block<F, K>(A, k.a_row + t * G * K * K, VJP, M);
        if (VJP) {  // use the carried block, keep this one for the next iteration
            F next[K][K];
            copy_block<F, K>(M, next);
            copy_block<F, K>(carried, M);
            copy_block<F, K>(next, carried);
        }
        affine_step<F, K>(M, x, k.x_row + t * G * K, s);
        F Q[K][K];
#pragma unroll
        for (int r = 0; r < K; ++r)
#pragma unroll
            for (int q = 0; q < K; ++q) {
                F acc = F(0);
#pragma unroll
                for (int j = 0; j < K; ++j) acc += M[r][j] * P[j][q];
                Q[r][q] = acc;
            }
        copy_block<F, K>(Q, P);
    }
#pragma unroll
    for (int r = 0; r < K; ++r) {
        end[id * K + r] = s[r];
#pragma unroll
        for (int q = 0; q < K; ++q) prod[id * K * K + r * K + q] = P[r][q];
    }
}

// entry[i, c, g]: the state entering chunk c; entry[i, 0, g] = init[i, g]
template <typename F, int K>
__global__ void block_chain_chunks(const F* __restrict__ prod, const F* __restrict__ end, const F* __restrict__ init,
                                   long long B, long long n, long long G, F* __restrict__ entry) {
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * G) return;
    long long g = id % G, i = id / G;
    F s[K];
#pragma unroll
    for (int r = 0; r < K; ++r) s[r] = init[id * K + r];
    for (long long c = 0; c < n; ++c) {
        long long k = (i * n + c) * G + g;
#pragma unroll
        for (int r = 0; r < K; ++r) entry[k * K + r] = s[r];
        F M[K][K];
        load_block<F, K>(prod, k * K * K, false, M);
        affine_step<F, K>(M, end, k * K, s);
    }
}

template <typename F, int K>
__global__ void block_chunk_scan(const F* __restrict__ A, const F* __restrict__ x, const F* __restrict__ entry,
                                 long long B, long long T, long long G, long long C, int flip, F* __restrict__ h) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * G) return;
    BlockTask k = block_task_of<K>(id, T, G, C, n);
    F s[K];
#pragma unroll
    for (int r = 0; r < K; ++r) s[r] = entry[id * K + r];
    for (long long u = k.u0; u < k.u1; ++u) {
        long long t = time_of(u, T, flip);
        F M[K][K];
        load_block<F, K>(A, k.a_row + t * G * K * K, false, M);
        affine_step<F, K>(M, x, k.x_row + t * G * K, s);
#pragma unroll
        for (int r = 0; r < K; ++r) h[k.x_row + t * G * K + r] = s[r];
    }
}

// g_t h_{t-1}^T into dA at (a_off), g into db at (x_off)
template <typename F, int K>
__device__ __forceinline__ void write_vjp_step(const F (&s)[K], const F* __restrict__ prev, long long x_off,
                                               long long a_off, F* __restrict__ db, F* __restrict__ dA) {
#pragma unroll
    for (int r = 0; r < K; ++r) {
        db[x_off + r] = s[r];
#pragma unroll
        for (int q = 0; q < K; ++q) dA[a_off + r * K + q] = s[r] * prev[q];
    }
}

// The VJP's last pass (x = dh, flip opposite to the forward's, entry zeros when n = 1); its
// last iteration T - 1 (the forward's first step: h0 before it, and dh0) is peeled off.
template <typename F, int K>
__global__ void block_chunk_scan_vjp(const F* __restrict__ A, const F* __restrict__ x, const F* __restrict__ entry,
                                     long long B, long long T, long long G, long long C, int flip,
                                     const F* __restrict__ h, const F* __restrict__ h0, F* __restrict__ db,
                                     F* __restrict__ dA, F* __restrict__ dh0) {
    long long n = (T + C - 1) / C;
    long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (id >= B * n * G) return;
    BlockTask k = block_task_of<K>(id, T, G, C, n);
    F s[K], carried[K][K];
#pragma unroll
    for (int r = 0; r < K; ++r) s[r] = entry[id * K + r];
    block_before<F, K>(A, k, T, G, flip, carried);
    long long stop = k.u1 < T ? k.u1 : T - 1;
    long long step = flip ? -G * K : G * K;  // the forward's previous step: this pass's next iteration
    for (long long u = k.u0; u < stop; ++u) {
        long long t = time_of(u, T, flip);
        F M[K][K];
        load_block<F, K>(A, k.a_row + t * G * K * K, true, M);
        affine_step<F, K>(carried, x, k.x_row + t * G * K, s);
        copy_block<F, K>(M, carried);
        write_vjp_step<F, K>(s, h + k.x_row + t * G * K + step, k.x_row + t * G * K, k.a_row + t * G * K * K,
                             db, dA);
    }
    if (k.u1 == T) {
        long long t = time_of(T - 1, T, flip);
        affine_step<F, K>(carried, x, k.x_row + t * G * K, s);
        long long o = (k.i * G + k.g) * K;
        write_vjp_step<F, K>(s, h0 + o, k.x_row + t * G * K, k.a_row + t * G * K * K, db, dA);
        F M[K][K];
        load_block<F, K>(A, k.a_row + t * G * K * K, true, M);
#pragma unroll
        for (int r = 0; r < K; ++r) {
            F acc = F(0);
#pragma unroll
            for (int q = 0; q < K; ++q) acc += M[r][q] * s[q];
            dh0[o + r] = acc;
        }
    }
}
