// CUDA kernels: one reduce-then-apply kernel per direction, serving both memory layouts.
//
// A block's "unit" is a tile of blockDim.x (n, c) instances; threadIdx.x picks the instance, threadIdx.y walks
// the reduced dimension M in batches of V = 32 bytes / sizeof(T) elements. NHWC: a tile is up to 32
// consecutive channels of one sample, so a warp reads consecutive channels of a row (coalesced) and a batch
// is V rows. NCHW: a batch is one aligned vector load from the plane; big planes get a whole block each
// (blockDim.x == 1), small ones share a block instead of leaving threads idle. Each block reduces its part
// of a unit, combines threads (warp shuffle, then shared memory) and, when it owns all of M, finalizes and
// re-reads its (cache-hot) data to write the output. When there are too few units to fill the GPU, M is
// split over gridDim.y blocks that write partials to a workspace; a second launch of the same kernel
// combines them and applies. moments runs the forward kernel without an output (it stops after the statistics);
// apply_kernel is the apply step alone, with given statistics.
//
// Numerics: moments are of x minus the unit's first element; each batch's come from a corrected two-pass
// over V registers (pairwise mean, exact for constant data), and batches, threads and blocks merge with
// Chan's formula, so large offsets don't cancel and a constant channel has m2 == 0 exactly. NaN propagates
// (nothing is clamped with max/min).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "instance_norm.h"

namespace instancenorm {
namespace {

constexpr int kThreads = 256;    // per block, in every launch (bx * by)
constexpr int kBatchBytes = 32;  // per thread and step: two 16-byte loads in flight per thread, not one

template <typename T>
constexpr int kBatch = kBatchBytes / sizeof(T);

// Running (count, mean, M2); a POD so that it can live in __shared__ arrays.
template <typename A>
struct Moments {
  static constexpr int K = 3;
  A v[K];  // count, mean, m2
  __device__ void merge(const Moments& o) {
    if (o.v[0] == A(0)) return;  // also keeps 0 * inf (huge means) out of empty merges
    if (v[0] == A(0)) {
      *this = o;
      return;
    }
    const A n = v[0] + o.v[0];
    const A w = o.v[0] / n;
    const A d = o.v[1] - v[1];
    v[1] += d * w;
    v[2] += o.v[2] + d * d * v[0] * w;
    v[0] = n;
  }
};

// Backward sums: sum(dy), sum(dy * (x - mean)).
template <typename A>
struct GradSums {
  static constexpr int K = 2;
  A v[K];
  __device__ void merge(const GradSums& o) {
    v[0] += o.v[0];
    v[1] += o.v[1];
  }
};

// Pairwise sum (K a power of two): exact for K copies of one value scaled by 1/K.
template <int K, typename A>
__device__ __forceinline__ A tree_sum(const A* t) {
  if constexpr (K == 1) return t[0];
  else return tree_sum<K / 2>(t) + tree_sum<K / 2>(t + K / 2);
}

// Moments of K values. The mean is a pairwise sum of x/K (exact for constant data, cannot overflow); the
// residual sum s1 then corrects both the mean and M2 (Chan, Golub & LeVeque's corrected two-pass).
template <int K, typename A>
__device__ __forceinline__ Moments<A> moments(const A (&x)[K]) {
  constexpr A r = A(1) / A(K);
  A t[K];
#pragma unroll
  for (int k = 0; k < K; ++k) t[k] = x[k] * r;
  const A m = tree_sum<K>(t);
  A s1 = 0, s2 = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const A d = x[k] - m;
    s1 += d;
    s2 += d * d;
  }
  A m2 = s2 - s1 * s1 * r;
  if (m2 < A(0)) m2 = A(0);  // rounding only; a NaN compares false and stays NaN
  return {{A(K), m + s1 * r, m2}};
}

template <typename T, int K>
struct alignas(sizeof(T) * K) Pack {
  T v[K];
};

// K elements at off, off + stride, ...; stride == 1 means contiguous and aligned to the pack (see make_unit).
template <int K, typename T, typename A>
__device__ __forceinline__ void load(const T* __restrict__ p, int64_t off, int64_t stride, A (&out)[K]) {
  if (stride == 1) {
    const Pack<T, K> t = *reinterpret_cast<const Pack<T, K>*>(p + off);
#pragma unroll
    for (int k = 0; k < K; ++k) out[k] = static_cast<A>(t.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < K; ++k) out[k] = static_cast<A>(p[off + k * stride]);
  }
}

template <int K, typename T, typename A>
__device__ __forceinline__ void store(T* __restrict__ p, int64_t off, int64_t stride, const A (&in)[K]) {
  if (stride == 1) {
    Pack<T, K> t;
#pragma unroll
    for (int k = 0; k < K; ++k) t.v[k] = static_cast<T>(in[k]);
    *reinterpret_cast<Pack<T, K>*>(p + off) = t;
  } else {
#pragma unroll
    for (int k = 0; k < K; ++k) p[off + k * stride] = static_cast<T>(in[k]);
  }
}

// Where a block's unit and its elements lie: the problem's geometry as the kernels index it, computed on the host.
struct IndexMap {
  int64_t N, C, M;
  int64_t ctiles;  // units per sample: ceil(C / blockDim.x). NCHW is passed as N = 1, C = N * C
  bool channels_last;
  bool vec_ok;  // all data pointers agree modulo kBatchBytes, so one head length aligns them all
};

// This thread's share of its block's unit. Elements of the unit are x[base + i * stride], i < M; they are
// scalars [0, head), then nvec batches of V, then scalars [tail, M). Batches are split into contiguous ranges
// per split; the few scalars are dealt round-robin over all threads of all splits.
struct Unit {
  int64_t n, c, nc;  // sample, channel, n * C + c
  int64_t base, stride, head, tail, nscalar;
  int64_t v0, v1;  // this split's batches
  int split, nsplit;
  bool valid;  // c < C (the last tile may be partial)
};

// apply_pass walks blocks in reverse launch order: the reduce pass finished with the highest blocks, whose
// data is then most likely still in L2.
template <int V, typename T>
__device__ Unit make_unit(const IndexMap& map, const T* x, bool apply_pass) {
  Unit u;
  const int64_t block = apply_pass ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  u.nsplit = gridDim.y;
  u.split = apply_pass ? gridDim.y - 1 - blockIdx.y : blockIdx.y;
  u.n = block / map.ctiles;
  u.c = (block % map.ctiles) * blockDim.x + threadIdx.x;
  u.valid = u.c < map.C;
  u.nc = u.n * map.C + u.c;
  if (map.channels_last) {
    u.base = u.n * map.M * map.C + u.c;
    u.stride = map.C;
    u.head = 0;
  } else {
    u.base = u.nc * map.M;
    u.stride = 1;
    // Scalars up to the first batch-aligned address; without a common alignment everything is scalar.
    const int64_t misalignment = static_cast<int64_t>(reinterpret_cast<uintptr_t>(x + u.base) / sizeof(T)) % V;
    u.head = map.vec_ok ? min(map.M, (V - misalignment) % V) : map.M;
  }
  const int64_t nvec = (map.M - u.head) / V;
  const int64_t per = (nvec + u.nsplit - 1) / u.nsplit;
  u.v0 = min(nvec, u.split * per);
  u.v1 = min(nvec, u.v0 + per);
  u.tail = u.head + nvec * V;
  u.nscalar = u.head + (map.M - u.tail);
  return u;
}

// Calls f(offset, integral_constant<K>) for each of this thread's batches (K == V) and scalars (K == 1).
template <int V, typename F>
__device__ __forceinline__ void visit(const Unit& u, F&& f) {
  if (!u.valid) return;
  for (int64_t v = u.v0 + threadIdx.y; v < u.v1; v += blockDim.y)
    f(u.base + (u.head + v * V) * u.stride, std::integral_constant<int, V>());
  const int64_t stride = static_cast<int64_t>(u.nsplit) * blockDim.y;
  for (int64_t j = static_cast<int64_t>(u.split) * blockDim.y + threadIdx.y; j < u.nscalar; j += stride)
    f(u.base + (j < u.head ? j : j - u.head + u.tail) * u.stride, std::integral_constant<int, 1>());
}

// Merges s over threads with the same threadIdx.x (blockDim.x is a power of two <= 32, so those lanes differ
// only in lane bits >= blockDim.x); the result is valid in the threads with threadIdx.y == 0.
template <typename S>
__device__ __forceinline__ S reduce_y(S s, S* warp_partials) {
  const int bx = blockDim.x;
  for (int off = 16; off >= bx; off >>= 1) {
    S o;
#pragma unroll
    for (int k = 0; k < S::K; ++k) o.v[k] = __shfl_xor_sync(0xffffffffu, s.v[k], off);
    s.merge(o);
  }
  const int tid = threadIdx.y * bx + threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5, nwarps = (bx * blockDim.y) >> 5;
  if (lane < bx) warp_partials[warp * bx + threadIdx.x] = s;  // lane < bx means lane == threadIdx.x
  __syncthreads();
  if (threadIdx.y == 0)
    for (int w = 1; w < nwarps; ++w) s.merge(warp_partials[w * bx + threadIdx.x]);
  return s;
}

// Workspace of split partials: field k of (n, split, c) at k * N * nsplit * C + (n * nsplit + split) * C + c.
__device__ __forceinline__ int64_t workspace_index(const Unit& u, const IndexMap& map, int split, int k) {
  return (k * map.N + u.n) * u.nsplit * map.C + split * map.C + u.c;
}

template <typename S, typename A>
__device__ __forceinline__ void store_partial(const S& s, A* workspace, const Unit& u, const IndexMap& map) {
#pragma unroll
  for (int k = 0; k < S::K; ++k) workspace[workspace_index(u, map, u.split, k)] = s.v[k];
}

template <typename S, typename A>
__device__ __forceinline__ S combine_partials(const A* workspace, const Unit& u, const IndexMap& map) {
  S s{};
  if (!u.valid) return s;
  for (int j = threadIdx.y; j < u.nsplit; j += blockDim.y) {
    S o;
#pragma unroll
    for (int k = 0; k < S::K; ++k) o.v[k] = workspace[workspace_index(u, map, j, k)];
    s.merge(o);
  }
  return s;
}

__device__ __forceinline__ float rsqrt_(float v) { return rsqrtf(v); }
__device__ __forceinline__ double rsqrt_(double v) { return rsqrt(v); }

// The apply step over this thread's share of its unit: y = ((x - shift) - mean) * scale + b. The forward's mean is
// relative to the unit's first element (shift); given statistics come with shift = 0.
template <int V, typename T, typename A>
__device__ __forceinline__ void normalize_unit(const Unit& u, const T* x, T* y, A shift, A mean, A scale, A b) {
  visit<V>(u, [&](int64_t off, auto width) {
    constexpr int K = decltype(width)::value;
    A v[K];
    load<K>(x, off, u.stride, v);
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = ((v[k] - shift) - mean) * scale + b;
    store<K>(y, off, u.stride, v);
  });
}

// apply_pass == false: reduce (and, when gridDim.y == 1, finalize and apply); true: combine partials, apply.
// y == nullptr (moments): the statistics only.
template <typename T, typename A = at::opmath_type<T>>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* x, T* y, const A* __restrict__ weight, const A* __restrict__ bias, A* __restrict__ mean_out,
                   A* __restrict__ rstd_out, A* __restrict__ var_out, A* __restrict__ mean_lo_out, A* workspace,
                   IndexMap map, A eps, A inv_M, bool apply_pass) {
  constexpr int V = kBatch<T>;
  __shared__ Moments<A> warp_partials[kThreads];
  __shared__ A coef[3][32];
  const Unit u = make_unit<V>(map, x, apply_pass);
  // Moments of x - x[first element of the unit]: partial means stay small, so float keeps their digits
  // when channels sit on a large offset, and y never subtracts two large rounded numbers.
  // y may be x (normalize_): every element is read, then written, by one thread; the shift, which threads
  // share, is read before the block writes anything, and in a split apply pass comes from the workspace.
  constexpr int kShift = Moments<A>::K;  // its workspace field, at split 0
  A shift = A(0);
  if (u.valid) shift = apply_pass ? workspace[workspace_index(u, map, 0, kShift)] : static_cast<A>(x[u.base]);
  Moments<A> s{};
  if (!apply_pass) {
    visit<V>(u, [&](int64_t off, auto width) {
      constexpr int K = decltype(width)::value;
      A v[K];
      load<K>(x, off, u.stride, v);
#pragma unroll
      for (int k = 0; k < K; ++k) v[k] -= shift;
      s.merge(moments<K>(v));
    });
  } else {
    s = combine_partials<Moments<A>>(workspace, u, map);
  }
  s = reduce_y(s, warp_partials);
  const bool partial = !apply_pass && u.nsplit > 1;
  if (threadIdx.y == 0 && u.valid) {
    if (partial) {
      store_partial(s, workspace, u, map);
      if (u.split == 0) workspace[workspace_index(u, map, 0, kShift)] = shift;
    } else {
      const A var = s.v[2] * inv_M;
      const A rstd = rsqrt_(var + eps);
      if (u.split == 0) {
        // The kernel's mean is the pair shift + s.v[1]: stored as its rounded sum and that sum's rounding error
        // (Knuth's two-sum), so the backward subtracts the same mean the forward did.
        const A hi = shift + s.v[1], b_virtual = hi - shift;
        mean_out[u.nc] = hi;
        mean_lo_out[u.nc] = (shift - (hi - b_virtual)) + (s.v[1] - b_virtual);
        rstd_out[u.nc] = rstd;
        var_out[u.nc] = var;
      }
      coef[0][threadIdx.x] = s.v[1];
      coef[1][threadIdx.x] = rstd * weight[u.nc];
      coef[2][threadIdx.x] = bias[u.nc];
    }
  }
  if (partial || y == nullptr) return;
  __syncthreads();
  if (!u.valid) return;
  normalize_unit<V>(u, x, y, shift, coef[0][threadIdx.x], coef[1][threadIdx.x], coef[2][threadIdx.x]);
}

// normalize_with_stats: no reduction, so a split of M is just more blocks, each normalizing its own batches.
template <typename T, typename A = at::opmath_type<T>>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const T* x, T* y, const A* __restrict__ mean, const A* __restrict__ rstd, const A* __restrict__ weight,
                 const A* __restrict__ bias, IndexMap map) {
  const Unit u = make_unit<kBatch<T>>(map, x, /*apply_pass=*/false);
  if (!u.valid) return;
  normalize_unit<kBatch<T>>(u, x, y, A(0), mean[u.nc], rstd[u.nc] * weight[u.nc], bias[u.nc]);
}

template <typename T, typename A = at::opmath_type<T>>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                    const A* __restrict__ mean_in, const A* __restrict__ mean_lo_in, const A* __restrict__ rstd_in,
                    const A* __restrict__ weight, A* __restrict__ dweight, A* __restrict__ dbias, A* workspace,
                    IndexMap map, A inv_M, bool apply_pass) {
  constexpr int V = kBatch<T>;
  __shared__ GradSums<A> warp_partials[kThreads];
  __shared__ A coef[3][32];
  const Unit u = make_unit<V>(map, x, apply_pass);
  // x - mean as (x - hi) - lo with the forward's pair: exact for x near a large mean.
  const A mean = u.valid ? mean_in[u.nc] : A(0), mean_lo = u.valid ? mean_lo_in[u.nc] : A(0);
  GradSums<A> s{};
  if (!apply_pass) {
    visit<V>(u, [&](int64_t off, auto width) {
      constexpr int K = decltype(width)::value;
      A g[K], v[K];
      load<K>(dy, off, u.stride, g);
      load<K>(x, off, u.stride, v);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        s.v[0] += g[k];
        s.v[1] += g[k] * ((v[k] - mean) - mean_lo);
      }
    });
  } else {
    s = combine_partials<GradSums<A>>(workspace, u, map);
  }
  s = reduce_y(s, warp_partials);
  const bool partial = !apply_pass && u.nsplit > 1;
  if (threadIdx.y == 0 && u.valid) {
    if (partial) {
      store_partial(s, workspace, u, map);
    } else {
      const A rstd = rstd_in[u.nc];
      const A db = s.v[0], dw = s.v[1] * rstd;
      if (u.split == 0) {
        dweight[u.nc] = dw;
        dbias[u.nc] = db;
      }
      // dx = scale * (dy - db / M - (x - mean) * rstd * dw / M)
      coef[0][threadIdx.x] = weight[u.nc] * rstd;
      coef[1][threadIdx.x] = db * inv_M;
      coef[2][threadIdx.x] = dw * rstd * inv_M;
    }
  }
  if (partial) return;
  __syncthreads();
  if (!u.valid) return;
  const A scale = coef[0][threadIdx.x], mean_dy = coef[1][threadIdx.x], rstd_mean_dy_xhat = coef[2][threadIdx.x];
  visit<V>(u, [&](int64_t off, auto width) {
    constexpr int K = decltype(width)::value;
    A g[K], v[K];
    load<K>(dy, off, u.stride, g);
    load<K>(x, off, u.stride, v);
#pragma unroll
    for (int k = 0; k < K; ++k) g[k] = scale * (g[k] - mean_dy - ((v[k] - mean) - mean_lo) * rstd_mean_dy_xhat);
    store<K>(dx, off, u.stride, g);
  });
}

struct Plan {
  IndexMap map;
  dim3 grid, block;
  int nsplit;
  at::Tensor workspace;  // split partials, when nsplit > 1
};

// Block shape, units, split count and workspace for kernel. ptrs: every data tensor it touches (for the
// alignment check); fields: values per partial (0: the kernel's splits need no workspace).
Plan make_plan(const void* kernel, const Geometry& g, int V, int elem_bytes, std::initializer_list<const void*> ptrs,
               int fields, const at::TensorOptions& stats) {
  Plan p;
  IndexMap& map = p.map;
  // NCHW planes are independent and contiguous: index them as one sample of N * C channels.
  map.channels_last = g.channels_last && g.C > 1;  // (N, M, 1) is (N, 1, M): take the vectorized path
  map.N = map.channels_last ? g.N : 1;
  map.C = map.channels_last ? g.C : g.N * g.C;
  map.M = g.M;
  map.vec_ok = true;
  // The scalar head reaches a batch boundary only from an element-aligned pointer (make_unit counts in elements).
  const uintptr_t phase = reinterpret_cast<uintptr_t>(*ptrs.begin()) % kBatchBytes;
  for (const void* q : ptrs) map.vec_ok &= reinterpret_cast<uintptr_t>(q) % kBatchBytes == phase;
  map.vec_ok &= phase % elem_bytes == 0;
  // About one batch per thread along M, at most kThreads; the rest of the block spans channels: up to a
  // warp's worth of NHWC channels (coalesced), or several small NCHW planes per block instead of idle threads.
  const int64_t batches = (g.M + V - 1) / V;
  int by = 1, bx = 1;
  while (by < kThreads && 2 * by <= batches) by *= 2;
  if (map.channels_last) {
    while (bx < 32 && bx < g.C) bx *= 2;
    by = std::min(by, kThreads / bx);
  } else if (by < 64) {
    bx = std::min(32, 64 / by);
  }
  while (bx * by < 32) by *= 2;  // whole warps
  map.ctiles = (map.C + bx - 1) / bx;
  const int64_t units = map.N * map.ctiles;
  TORCH_CHECK(units <= INT_MAX, "instancenorm (CUDA): too many instances (", units, ")");
  // Split M only when the units alone would leave most of the GPU's resident block slots empty, and never
  // below 4 batches per thread. (ATen/cuda/CUDAContext.h has cached device properties but needs the
  // cuSPARSE/cuBLAS headers; these queries are cheap.)
  int sms = 0, per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, bx * by, 0));
  const int64_t resident = static_cast<int64_t>(sms) * std::max(per_sm, 1);
  int64_t nsplit = 1;
  if (2 * units < resident) {
    const int64_t max_split = g.M / V / (4 * by);
    nsplit = std::max<int64_t>(1, std::min((resident + units - 1) / units, max_split));
  }
  p.nsplit = static_cast<int>(nsplit);
  p.grid = dim3(static_cast<unsigned>(units), p.nsplit);
  p.block = dim3(bx, by);
  if (nsplit > 1 && fields > 0) p.workspace = at::empty({fields, map.N, nsplit, map.C}, stats);
  return p;
}

}  // namespace

void forward_cuda(const ForwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "instancenorm_forward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* x = a.x.const_data_ptr<scalar_t>();
    scalar_t* y = a.y.defined() ? a.y.mutable_data_ptr<scalar_t>() : nullptr;  // none for moments
    const Plan p = make_plan(reinterpret_cast<const void*>(&forward_kernel<scalar_t>), a.g, kBatch<scalar_t>,
                             sizeof(scalar_t), {x, y != nullptr ? y : x}, Moments<A>::K + 1, a.mean.options());
    A* workspace = p.nsplit > 1 ? p.workspace.mutable_data_ptr<A>() : nullptr;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    for (int pass = 0; pass < 1 + (p.nsplit > 1); ++pass) {
      forward_kernel<scalar_t><<<p.grid, p.block, 0, stream>>>(
          x, y, a.weight.const_data_ptr<A>(), a.bias.const_data_ptr<A>(), a.mean.mutable_data_ptr<A>(),
          a.inv_std.mutable_data_ptr<A>(), a.var.mutable_data_ptr<A>(), a.mean_lo.mutable_data_ptr<A>(), workspace,
          p.map, static_cast<A>(a.eps), static_cast<A>(1.0 / static_cast<double>(a.g.M)), pass == 1);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

void backward_cuda(const BackwardArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "instancenorm_backward_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* dy = a.dy.const_data_ptr<scalar_t>();
    const scalar_t* x = a.x.const_data_ptr<scalar_t>();
    scalar_t* dx = a.dx.mutable_data_ptr<scalar_t>();
    const Plan p = make_plan(reinterpret_cast<const void*>(&backward_kernel<scalar_t>), a.g, kBatch<scalar_t>,
                             sizeof(scalar_t), {x, dy, dx}, GradSums<A>::K, a.mean.options());
    A* workspace = p.nsplit > 1 ? p.workspace.mutable_data_ptr<A>() : nullptr;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    for (int pass = 0; pass < 1 + (p.nsplit > 1); ++pass) {
      backward_kernel<scalar_t><<<p.grid, p.block, 0, stream>>>(
          dy, x, dx, a.mean.const_data_ptr<A>(), a.mean_lo.const_data_ptr<A>(), a.inv_std.const_data_ptr<A>(),
          a.weight.const_data_ptr<A>(), a.dweight.mutable_data_ptr<A>(), a.dbias.mutable_data_ptr<A>(), workspace,
          p.map, static_cast<A>(1.0 / static_cast<double>(a.g.M)), pass == 1);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

void apply_cuda(const ApplyArgs& a) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "instancenorm_apply_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* x = a.x.const_data_ptr<scalar_t>();
    scalar_t* y = a.y.mutable_data_ptr<scalar_t>();
    const Plan p = make_plan(reinterpret_cast<const void*>(&apply_kernel<scalar_t>), a.g, kBatch<scalar_t>,
                             sizeof(scalar_t), {x, y}, 0, a.mean.options());
    apply_kernel<scalar_t><<<p.grid, p.block, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x, y, a.mean.const_data_ptr<A>(), a.inv_std.const_data_ptr<A>(), a.weight.const_data_ptr<A>(),
        a.bias.const_data_ptr<A>(), p.map);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

TORCH_LIBRARY_IMPL(instancenorm, CUDA, m) {
  m.impl("forward", &forward_op<forward_cuda>);
  m.impl("normalize_", &normalize_op<forward_cuda>);
  m.impl("normalize_out", &normalize_out_op<forward_cuda>);
  m.impl("backward", &backward_op<backward_cuda>);
  m.impl("moments", &moments_op<forward_cuda>);
  m.impl("normalize_with_stats", &normalize_with_stats_op<apply_cuda>);
  m.impl("normalize_with_stats_", &normalize_with_stats_inplace_op<apply_cuda>);
  m.impl("normalize_with_stats_out", &normalize_with_stats_out_op<apply_cuda>);
}

}  // namespace instancenorm
