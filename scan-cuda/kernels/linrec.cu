// The linear recurrence h_t = a_t * h_{t-1} + x_t and its backward pass on NVIDIA GPUs.
//
// Compiled to PTX by `cargo xtask build-kernels`; the PTX is committed and embedded in the
// scan-cuda crate, so building the crate needs no nvcc. Every `extern "C"` entry point takes
// one `LinrecParams` by value; its layout is mirrored by `scan_cuda::params::LinrecParams`
// (the static_asserts below and a Rust test pin the size and offsets).
//
// Vocabulary. A "scan" runs the recurrence over scan steps j = 0 .. n_steps - 1 in order.
// Scan step j touches time index t = reverse ? n_steps - 1 - j : j, and element (t, f) of
// every (T, F) array sits at t * stride_t + f * stride_f (time-major (T, F) data has
// stride_f = 1; time-contiguous (F, T) data has stride_t = 1).
//
// * Forward: the scan pairs are (a_t, x_t), the scan starts from h0 and writes h_t.
// * Backward: the scan runs against the processing order of the forward pass on the pairs
//   (a of the forward step after this one, dL/dh_t), starting from grad_last:
//   g = a_next * g + dL/dh_t. It writes dL/dx_t = g and dL/da_t = h_prev * g, where h_prev
//   is the forward state one processing step earlier (h0 at the first step), and
//   dL/dh0 = a_first * g_first. The host sets `reverse` so that the scan order is the
//   reverse of the forward processing order.
//
// Two kernels:
// * linrec_serial_*: one thread per feature walks all steps (the paper's serial baseline).
// * linrec_{forward,backward}_*: single-pass parallel scan over tiles of
//   feature_lanes x (time_groups * STEPS) elements, one tile per 256-thread block. Each
//   thread keeps STEPS consecutive steps of one feature in registers, reduces them to one
//   affine pair, the block scans the pairs across time groups in shared memory, and the
//   carry into the tile comes from a look-back across tiles (below). The thread then re-runs
//   the plain recurrence over its registers from its exact incoming state, so rounding is
//   serial inside a thread and only reassociated at thread and tile borders.
//
// Look-back across tiles, deterministic by construction. Tile ids come from an atomic ticket
// counter, not blockIdx, so a tile only ever waits on tiles that already hold a ticket, which
// are running or done: the wait always ends. Time tiles are grouped into windows of
// `tiles_per_window`. A tile that is not the last of its window publishes its aggregate
// (the composition of its pairs) as soon as its block scan is done. The last tile of a window
// publishes the inclusive state after itself. The carry into tile q, whose window starts at
// tile w, is the composition of the aggregates of tiles w .. q-1, composed in that fixed order,
// applied to the state after tile w-1 (h0 for w = 0). The arithmetic therefore never depends
// on which tile happened to finish first, and repeated runs are bit-identical, which a
// classic decoupled look-back (stop at the first inclusive prefix found) does not give for
// floating point. The chain of dependent publications has n_time_tiles / tiles_per_window
// links instead of n_time_tiles.
//
// Publication protocol: values are written with st.global.cg (L2), then __threadfence, then
// __syncthreads, then one thread stores the tile's flag with st.release.gpu. Readers spin on
// the flag with ld.acquire.gpu in one thread, __syncthreads, then read the values with
// ld.global.cg. A flag is ready when it equals this launch's `epoch`; the host increments the
// epoch every launch and clears the workspace when it would wrap, so the workspace is never
// cleared between launches.
//
// Indexing is 64-bit throughout (T * F > 2^31 works).
//
// Non-finite values follow the serial loop's IEEE result (the scan_core contract). The one
// place a composition departs from it is a product of decays that underflows to 0: applied
// to an infinite state it gives 0 * inf = NaN where the serial loop, multiplying by one
// nonzero decay at a time, keeps the infinity. Products of decays are therefore formed by
// `mul_decays`, which returns the smallest subnormal (with the product's sign) instead of an
// underflowed 0, so only an exact zero decay composes to 0 (and turns inf into NaN, as the
// serial loop does). On finite states the substitution changes results by at most
// 2^-149 (f32) or 2^-1074 (f64) times the state, far below rounding.

#define LINREC_BLOCK 256

template <typename E>
struct LinrecParams {
    const E* decay;             // a, (T, F).
    const E* impulse;           // forward: x; backward: dL/dh, (T, F).
    const E* state;             // backward: the forward states h, (T, F); forward: unused.
    const E* carry_in;          // forward: h0; backward: grad_last; (F) or null for zeros.
    const E* initial_state;     // backward: h0, (F) or null for zeros; forward: unused.
    E* out;                     // forward: h; backward: dL/dx, (T, F).
    E* out_grad_decay;          // backward: dL/da, (T, F); forward: unused.
    E* out_grad_initial;        // backward: dL/dh0, (F) or null; forward: unused.
    long long n_steps;          // T >= 1.
    long long n_features;       // F >= 1.
    long long stride_t;         // Element stride between consecutive time indices.
    long long stride_f;         // Element stride between consecutive features.
    long long n_feature_tiles;  // Parallel kernel: ceil(F / feature_lanes).
    long long n_time_tiles;     // Parallel kernel: ceil(T / (time_groups * STEPS)).
    unsigned long long* tile_counter;  // Parallel kernel: the ticket counter.
    unsigned* tile_flags;       // Parallel kernel: one flag per tile.
    E* carry_decay;             // Parallel kernel: aggregate decay per (time tile, feature).
    E* carry_impulse;           // Parallel kernel: aggregate impulse per (time tile, feature).
    E* carry_state;             // Parallel kernel: state after a window's last tile.
    unsigned long long ticket_base;  // Counter value when this launch starts.
    int reverse;                // Scan step j touches time index T-1-j when nonzero.
    int lanes_on_time;          // Thread mapping: consecutive threads walk time (1) or features (0).
    int feature_lanes;          // Features per tile.
    int time_groups;            // Threads per feature in a tile; feature_lanes * time_groups = 256.
    int tiles_per_window;       // Time tiles per look-back window (>= 1).
    unsigned epoch;             // Flag value that means "published in this launch".
};

static_assert(sizeof(LinrecParams<float>) == 184, "LinrecParams layout changed: update params.rs");
static_assert(sizeof(LinrecParams<double>) == 184, "LinrecParams layout changed: update params.rs");

template <typename E>
struct StepsPerThread;
template <>
struct StepsPerThread<float> {
    static constexpr int value = 8;
};
template <>
struct StepsPerThread<double> {
    static constexpr int value = 4;
};

template <typename E>
__device__ __forceinline__ long long time_index(const LinrecParams<E>& p, long long j) {
    return p.reverse ? p.n_steps - 1 - j : j;
}

template <typename E>
__device__ __forceinline__ long long element(const LinrecParams<E>& p, long long t, long long f) {
    return t * p.stride_t + f * p.stride_f;
}

template <typename E>
__device__ __forceinline__ E value_or_zero(const E* values, long long f) {
    return values != nullptr ? values[f] : E(0);
}

// The scan pair of step j of feature f. Backward uses the decay of the previous scan step
// (the next forward step), and 1 at the first scan step.
template <typename E, bool BACKWARD>
__device__ __forceinline__ void load_step(const LinrecParams<E>& p, long long j, long long f, E& a,
                                          E& x) {
    const long long t = time_index(p, j);
    x = p.impulse[element(p, t, f)];
    if (BACKWARD) {
        a = j == 0 ? E(1) : p.decay[element(p, time_index(p, j - 1), f)];
    } else {
        a = p.decay[element(p, t, f)];
    }
}

// Writes the outputs of step j of feature f, whose scan value is v (h forward, g backward).
template <typename E, bool BACKWARD>
__device__ __forceinline__ void store_step(const LinrecParams<E>& p, long long j, long long f,
                                           E v) {
    const long long t = time_index(p, j);
    p.out[element(p, t, f)] = v;
    if (BACKWARD) {
        const bool first_forward_step = j == p.n_steps - 1;
        const E h_prev = first_forward_step ? value_or_zero(p.initial_state, f)
                                            : p.state[element(p, time_index(p, j + 1), f)];
        p.out_grad_decay[element(p, t, f)] = h_prev * v;
        if (first_forward_step && p.out_grad_initial != nullptr) {
            p.out_grad_initial[f] = p.decay[element(p, t, f)] * v;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Products of decays that never underflow to 0 from nonzero factors (see the file header).

template <typename E>
struct SmallestSubnormal;
template <>
struct SmallestSubnormal<float> {
    static __device__ __forceinline__ float value() { return 1.40129846e-45f; }
};
template <>
struct SmallestSubnormal<double> {
    static __device__ __forceinline__ double value() { return 4.9406564584124654e-324; }
};

template <typename E>
__device__ __forceinline__ E mul_decays(E a, E b) {
    const E product = a * b;
    if (product == E(0) && a != E(0) && b != E(0)) {
        return copysign(SmallestSubnormal<E>::value(), product);
    }
    return product;
}

// ---------------------------------------------------------------------------------------
// Serial kernel: one thread per feature.

template <typename E, bool BACKWARD>
__device__ __forceinline__ void serial_scan(const LinrecParams<E>& p) {
    const long long f = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= p.n_features) {
        return;
    }
    E h = value_or_zero(p.carry_in, f);
    for (long long j = 0; j < p.n_steps; ++j) {
        E a, x;
        load_step<E, BACKWARD>(p, j, f, a, x);
        h = fma(a, h, x);
        store_step<E, BACKWARD>(p, j, f, h);
    }
}

// ---------------------------------------------------------------------------------------
// Parallel kernel.

__device__ __forceinline__ void store_release(unsigned* flag, unsigned value) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(flag), "r"(value) : "memory");
}

__device__ __forceinline__ unsigned load_acquire(const unsigned* flag) {
    unsigned value;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(value) : "l"(flag) : "memory");
    return value;
}

// Spins (one thread) until a tile's flag says it published in this launch.
__device__ __forceinline__ void wait_for_flag(const unsigned* flag, unsigned epoch) {
    while (load_acquire(flag) != epoch) {
        __nanosleep(32);
    }
}

template <typename E, bool BACKWARD>
__device__ __forceinline__ void parallel_scan(const LinrecParams<E>& p) {
    constexpr int STEPS = StepsPerThread<E>::value;
    __shared__ E s_decay[LINREC_BLOCK];
    __shared__ E s_impulse[LINREC_BLOCK];
    __shared__ E s_carry[LINREC_BLOCK];
    __shared__ long long s_tile;

    const int tid = threadIdx.x;
    const int lanes = p.feature_lanes;
    const int groups = p.time_groups;
    const int lane = p.lanes_on_time ? tid / groups : tid % lanes;
    const int group = p.lanes_on_time ? tid % groups : tid / lanes;

    // The ticket decides which tile this block computes (see the file header).
    if (tid == 0) {
        s_tile = (long long)(atomicAdd(p.tile_counter, 1ULL) - p.ticket_base);
    }
    __syncthreads();
    const long long tile = s_tile;
    if (tile < 0 || tile >= p.n_feature_tiles * p.n_time_tiles) {
        return;  // Cannot happen with a consistent ticket_base; uniform across the block.
    }
    const long long feature_tile = tile % p.n_feature_tiles;
    const long long time_tile = tile / p.n_feature_tiles;
    const long long f = feature_tile * lanes + lane;
    const bool feature_ok = f < p.n_features;
    const long long first_step = (time_tile * groups + group) * STEPS;

    // Load STEPS pairs; positions past either end act as the identity (1, 0).
    E a[STEPS], x[STEPS];
#pragma unroll
    for (int s = 0; s < STEPS; ++s) {
        const long long j = first_step + s;
        if (feature_ok && j < p.n_steps) {
            load_step<E, BACKWARD>(p, j, f, a[s], x[s]);
        } else {
            a[s] = E(1);
            x[s] = E(0);
        }
    }

    // Reduce the thread's steps to one pair: h_out = pair_decay * h_in + pair_impulse.
    E pair_decay = E(1), pair_impulse = E(0);
#pragma unroll
    for (int s = 0; s < STEPS; ++s) {
        pair_impulse = fma(a[s], pair_impulse, x[s]);
        pair_decay = mul_decays(pair_decay, a[s]);
    }

    // Inclusive Hillis-Steele scan of the pairs over the time groups of each feature lane.
    // Composing "earlier (ea, eb), then later (la, lb)" gives (ea * la, la * eb + lb).
    const int slot = group * lanes + lane;
    s_decay[slot] = pair_decay;
    s_impulse[slot] = pair_impulse;
    __syncthreads();
    for (int distance = 1; distance < groups; distance *= 2) {
        E earlier_decay = E(1), earlier_impulse = E(0);
        if (group >= distance) {
            earlier_decay = s_decay[slot - distance * lanes];
            earlier_impulse = s_impulse[slot - distance * lanes];
        }
        __syncthreads();
        if (group >= distance) {
            pair_impulse = fma(pair_decay, earlier_impulse, pair_impulse);
            pair_decay = mul_decays(earlier_decay, pair_decay);
            s_decay[slot] = pair_decay;
            s_impulse[slot] = pair_impulse;
        }
        __syncthreads();
    }
    // The composition of the time groups before this thread's, and of the whole tile.
    E before_decay = E(1), before_impulse = E(0);
    if (group > 0) {
        before_decay = s_decay[slot - lanes];
        before_impulse = s_impulse[slot - lanes];
    }
    const int last_slot = (groups - 1) * lanes + lane;
    const E tile_decay = s_decay[last_slot];
    const E tile_impulse = s_impulse[last_slot];

    const long long window = p.tiles_per_window;
    const long long window_first = (time_tile / window) * window;
    const bool window_last =
        time_tile % window == window - 1 || time_tile == p.n_time_tiles - 1;
    const bool has_successor = time_tile + 1 < p.n_time_tiles;
    const long long lane_slot = time_tile * p.n_features + f;

    // Publish the aggregate early, for the later tiles of this window.
    if (!window_last) {
        if (group == 0 && feature_ok) {
            __stcg(&p.carry_decay[lane_slot], tile_decay);
            __stcg(&p.carry_impulse[lane_slot], tile_impulse);
        }
        __threadfence();
        __syncthreads();
        if (tid == 0) {
            store_release(&p.tile_flags[tile], p.epoch);
        }
    }

    // Wait for the aggregates of the earlier tiles of this window and for the state before
    // the window; tid 0 waits, the barrier hands the acquired values to the block.
    if (tid == 0) {
        for (long long q = window_first; q < time_tile; ++q) {
            wait_for_flag(&p.tile_flags[q * p.n_feature_tiles + feature_tile], p.epoch);
        }
        if (window_first > 0) {
            wait_for_flag(&p.tile_flags[(window_first - 1) * p.n_feature_tiles + feature_tile],
                          p.epoch);
        }
        __threadfence();
    }
    __syncthreads();

    // Compose the carry into this tile in a fixed order (see the file header).
    if (group == 0) {
        E carry = E(0);
        if (feature_ok) {
            E window_decay = E(1), window_impulse = E(0);
            for (long long q = window_first; q < time_tile; ++q) {
                const long long q_slot = q * p.n_features + f;
                const E q_decay = __ldcg(&p.carry_decay[q_slot]);
                const E q_impulse = __ldcg(&p.carry_impulse[q_slot]);
                window_impulse = fma(q_decay, window_impulse, q_impulse);
                window_decay = mul_decays(window_decay, q_decay);
            }
            const E window_in = window_first > 0
                                    ? __ldcg(&p.carry_state[(window_first - 1) * p.n_features + f])
                                    : value_or_zero(p.carry_in, f);
            carry = fma(window_decay, window_in, window_impulse);
        }
        s_carry[lane] = carry;
        if (window_last && has_successor && feature_ok) {
            __stcg(&p.carry_state[lane_slot], fma(tile_decay, carry, tile_impulse));
        }
    }
    if (window_last && has_successor) {
        __threadfence();
    }
    __syncthreads();
    if (window_last && has_successor && tid == 0) {
        store_release(&p.tile_flags[tile], p.epoch);
    }

    // Re-run the recurrence over the registers from this thread's exact incoming state.
    E h = fma(before_decay, s_carry[lane], before_impulse);
#pragma unroll
    for (int s = 0; s < STEPS; ++s) {
        const long long j = first_step + s;
        h = fma(a[s], h, x[s]);
        if (feature_ok && j < p.n_steps) {
            store_step<E, BACKWARD>(p, j, f, h);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points.

extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_serial_forward_f32(const LinrecParams<float> p) {
    serial_scan<float, false>(p);
}
extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_serial_backward_f32(const LinrecParams<float> p) {
    serial_scan<float, true>(p);
}
extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_serial_forward_f64(const LinrecParams<double> p) {
    serial_scan<double, false>(p);
}
extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_serial_backward_f64(const LinrecParams<double> p) {
    serial_scan<double, true>(p);
}
extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_forward_f32(const LinrecParams<float> p) {
    parallel_scan<float, false>(p);
}
extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_backward_f32(const LinrecParams<float> p) {
    parallel_scan<float, true>(p);
}
extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_forward_f64(const LinrecParams<double> p) {
    parallel_scan<double, false>(p);
}
extern "C" __global__ void __launch_bounds__(LINREC_BLOCK)
    linrec_backward_f64(const LinrecParams<double> p) {
    parallel_scan<double, true>(p);
}
