// CPU kernels: SIMD with at::vec, threads with at::parallel_for.
//
// Work is cut into "units" that own their statistics (a plane per (n, c) in NCHW; a sample's (M, C) block in
// NHWC) and each unit into row blocks when there are too few units to keep every thread busy. Inside a block,
// data is walked in L1-sized chunks: a chunk's moments come from a shifted two-pass (exact for constant
// channels, no E[x^2] - E[x]^2 cancellation for large offsets), and chunks combine with Chan's formula in double.
// Reduced types (half, bfloat16) are converted chunk by chunk to float, so one float kernel serves them all.

// This file is compiled once per instruction set (setup.py): CPU_CAPABILITY (DEFAULT, AVX2 or AVX512) names the
// variant, CPU_CAPABILITY_AVX2 / CPU_CAPABILITY_AVX512 give at::vec its SIMD width, and the matching -m flags let the
// compiler use those instructions. Everything here has internal linkage except instancenorm::CPU_CAPABILITY::forward,
// ::backward and ::apply, which cpu/dispatch.cpp picks from at load time by what the CPU supports.
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/streaming_store.h"
#include "instance_norm.h"

namespace instancenorm {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

constexpr int64_t kChunk = 2048;  // elements per chunk: 8 KiB of float stays in L1 between passes
// NHWC chunks are bigger: their per-channel work (a division and a merge per channel) is paid once per chunk, and
// an L1-sized chunk of many channels has so few rows that this work would outweigh the data's. 64 KiB stays in L2.
constexpr int64_t kRowsChunk = 16384;
// ...but each channel sums its rows of a chunk one after another in float: with few channels an uncapped chunk is
// thousands of rows long, and a float sum that long loses digits near a large offset. 256 rows keep the rounding at
// the NCHW path's level.
constexpr int64_t kMaxRowsPerChunk = 256;

int64_t nhwc_rows_per_chunk(int64_t C) { return std::clamp<int64_t>(kRowsChunk / C, 1, kMaxRowsPerChunk); }
constexpr int64_t kGrainElems = 32768;  // below this much work per task, threads cost more than they give

// (count, mean, M2) of a set, merged with Chan et al.'s pairwise formula.
struct Moments {
  double count = 0, mean = 0, m2 = 0;
  void add(double n, double block_mean, double block_m2) {
    if (n == 0) return;
    if (count == 0) {
      count = n, mean = block_mean, m2 = block_m2;
      return;
    }
    const double total = count + n;
    const double delta = block_mean - mean;
    mean += delta * (n / total);
    m2 += block_m2 + delta * delta * (count * n / total);
    count = total;
  }
  void add(const Moments& o) { add(o.count, o.mean, o.m2); }
};

// (count, mean, M2) of every channel of an NHWC sample. The count is the same for all channels, so a Chan merge
// costs one scalar division and a few vectorizable operations per channel, not C scalar merges.
struct ChannelMoments {
  double count = 0;
  std::vector<double> mean, m2;
  explicit ChannelMoments(int64_t C = 0) : mean(C), m2(C) {}
  void add(double n, const double* block_mean, const double* block_m2) {
    if (n == 0) return;
    const double total = count + n, f = n / total, g = count * f;
    const int64_t C = int64_t(mean.size());
    for (int64_t c = 0; c < C; ++c) {  // count == 0 gives f = 1, g = 0: a plain copy
      const double delta = block_mean[c] - mean[c];
      mean[c] += delta * f;
      m2[c] += block_m2[c] + delta * delta * g;
    }
    count = total;
  }
  void add(const ChannelMoments& o) { add(o.count, o.mean.data(), o.m2.data()); }
};

// Sums the backward needs: sum(dy) and sum(dy * (x - mean)).
struct GradSums {
  double dy = 0, dy_xc = 0;
  void add(const GradSums& o) { dy += o.dy, dy_xc += o.dy_xc; }
};

template <typename P>
void merge(std::vector<P>& into, const std::vector<P>& from) {
  for (size_t i = 0; i < into.size(); ++i) into[i].add(from[i]);
}
template <typename P>
void merge(P& into, const P& from) {
  into.add(from);
}

template <typename A>
A hsum(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](Vectorized<A>& a, Vectorized<A>& b) { return a + b; }, v);
}

// n elements of T as the accumulation type A: the data itself, or a converted copy in buf.
template <typename T, typename A>
const A* as_acc(const T* src, int64_t n, A* buf) {
  if constexpr (std::is_same_v<T, A>) {
    return src;
  } else {
    at::vec::convert(src, buf, n);
    return buf;
  }
}

// Where a chunk's result goes before it lands in out: out itself, or buf to be converted by store_from.
template <typename T, typename A>
A* result_ptr(T* out, A* buf) {
  if constexpr (std::is_same_v<T, A>) return out;
  else return buf;
}
template <typename T, typename A>
void store_from(const A* result, T* out, int64_t n) {
  if constexpr (!std::is_same_v<T, A>) at::vec::convert(result, out, n);
}

int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

// f(start, count) over [begin, end) in pieces of at most step: the L1-sized chunks every pass walks.
template <typename F>
void for_chunks(int64_t begin, int64_t end, int64_t step, const F& f) {
  for (int64_t i = begin; i < end; i += step) f(i, std::min(step, end - i));
}

// Blocks per unit: one when the units alone balance the threads, else enough blocks of at least min_len.
int64_t blocks_per_unit(int64_t units, int64_t len, int64_t min_len) {
  const int64_t threads = at::get_num_threads();
  if (units % threads == 0 || units >= 8 * threads) return 1;
  return std::clamp<int64_t>(divup(8 * threads, units), 1, std::max<int64_t>(1, len / min_len));
}

// body(t, unit, begin, end, scratch) for block t, [begin, end) of unit = t / blocks, of every unit, on the threads.
template <typename A, typename Body>
void for_blocks(int64_t units, int64_t len, int64_t blocks, int64_t elems_per_len, int64_t scratch_len,
                const Body& body) {
  const int64_t block_len = divup(len, blocks);
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, block_len * elems_per_len));
  at::parallel_for(0, units * blocks, grain, [&](int64_t t0, int64_t t1) {
    std::vector<A> scratch(scratch_len);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t unit = t / blocks, begin = (t % blocks) * block_len;
      body(t, unit, begin, std::min(len, begin + block_len), scratch.data());
    }
    fence_streaming_stores();
  });
}

// reduce(unit, begin, end, scratch) -> Partial over blocks of [0, len); finish(unit, total); then
// map(unit, begin, end, scratch). With one block per unit, a thread runs reduce, finish and map of a unit back to
// back, so the map reads the unit from cache instead of memory.
template <typename A, typename Partial, typename Reduce, typename Finish, typename Map>
void reduce_then_map(int64_t units, int64_t len, int64_t elems_per_len, int64_t min_block, int64_t scratch_len,
                     const Reduce& reduce, const Finish& finish, const Map& map) {
  const int64_t blocks = blocks_per_unit(units, len, min_block);
  auto run = [&](auto&& body) { for_blocks<A>(units, len, blocks, elems_per_len, scratch_len, body); };
  if (blocks == 1) {
    run([&](int64_t, int64_t unit, int64_t begin, int64_t end, A* scratch) {
      finish(unit, reduce(unit, begin, end, scratch));
      map(unit, begin, end, scratch);
    });
    return;
  }
  std::vector<Partial> partials(units * blocks);
  run([&](int64_t t, int64_t unit, int64_t begin, int64_t end, A* scratch) {
    partials[t] = reduce(unit, begin, end, scratch);
  });
  at::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t unit = u0; unit < u1; ++unit) {
      Partial total = partials[unit * blocks];
      for (int64_t b = 1; b < blocks; ++b) merge(total, partials[unit * blocks + b]);
      finish(unit, total);
    }
  });
  run([&](int64_t, int64_t unit, int64_t begin, int64_t end, A* scratch) { map(unit, begin, end, scratch); });
}

// map(unit, begin, end, scratch) over blocks of [0, len), cut as reduce_then_map cuts them: a pass with no reduction.
template <typename A, typename Map>
void map_blocks(int64_t units, int64_t len, int64_t elems_per_len, int64_t min_block, int64_t scratch_len,
                const Map& map) {
  for_blocks<A>(units, len, blocks_per_unit(units, len, min_block), elems_per_len, scratch_len,
                [&](int64_t, int64_t unit, int64_t begin, int64_t end, A* scratch) { map(unit, begin, end, scratch); });
}

// ---- Chunk arithmetic, NCHW: a chunk is a contiguous run of one plane. ----

// Moments of one chunk around mean = shift + sum(x - shift) / n, kept in double: a float mean would round a large
// offset by up to half an ulp (5e-4 at 1e4). M2 is summed around the float-rounded mean, then corrected exactly.
inline Moments chunk_moments(double n, double shift, double sum_dev, double m2_around, double rounded_mean) {
  const double mean = shift + sum_dev / n;
  const double off = mean - rounded_mean;
  return {n, mean, m2_around - n * off * off};
}

template <typename A>
Moments contiguous_moments(const A* x, int64_t n) {
  using Vec = Vectorized<A>;
  constexpr int64_t V = Vec::size();
  const A shift = x[0];  // sums of x - shift are exact for constant data and small for large offsets
  const Vec vshift(shift);
  Vec s0(A(0)), s1(A(0));
  int64_t i = 0;
  for (; i + 2 * V <= n; i += 2 * V) {
    s0 += Vec::loadu(x + i) - vshift;
    s1 += Vec::loadu(x + i + V) - vshift;
  }
  A sum = hsum(s0 + s1);
  for (; i < n; ++i) sum += x[i] - shift;
  const A mean = shift + sum / A(n);
  const Vec vmean(mean);
  Vec q0(A(0)), q1(A(0));
  for (i = 0; i + 2 * V <= n; i += 2 * V) {
    const Vec d0 = Vec::loadu(x + i) - vmean, d1 = Vec::loadu(x + i + V) - vmean;
    q0 = at::vec::fmadd(d0, d0, q0);
    q1 = at::vec::fmadd(d1, d1, q1);
  }
  A m2 = hsum(q0 + q1);
  for (; i < n; ++i) m2 += (x[i] - mean) * (x[i] - mean);
  return chunk_moments(double(n), shift, sum, m2, mean);
}

// x - mean with the mean as the forward's pair (hi + lo): exact x - hi, then the small correction.
template <typename A>
GradSums contiguous_grad_sums(const A* dy, const A* x, int64_t n, A hi, A lo) {
  using Vec = Vectorized<A>;
  constexpr int64_t V = Vec::size();
  const Vec vhi(hi), vlo(lo);
  Vec s_dy(A(0)), s_dyx(A(0));
  int64_t i = 0;
  for (; i + V <= n; i += V) {
    const Vec g = Vec::loadu(dy + i);
    s_dy += g;
    s_dyx = at::vec::fmadd(g, (Vec::loadu(x + i) - vhi) - vlo, s_dyx);
  }
  A sum_dy = hsum(s_dy), sum_dyx = hsum(s_dyx);
  for (; i < n; ++i) sum_dy += dy[i], sum_dyx += dy[i] * ((x[i] - hi) - lo);
  return {double(sum_dy), double(sum_dyx)};
}

// ---- Chunk arithmetic, NHWC: a chunk is `rows` rows of C channels; SIMD runs across channels. ----

template <typename A, typename F>
void for_channel_vectors(int64_t C, const F& f) {
  constexpr int64_t V = Vectorized<A>::size();
  for (int64_t c = 0; c < C; c += V) f(c, std::min(V, C - c));
}

// f(i, c, cnt) for every channel vector of every row, in memory order (i = r * C + c). Streaming the rows lets the
// hardware prefetcher run ahead; walking one channel vector down the rows (stride C) would leave every load waiting
// on memory.
template <typename A, typename F>
void for_row_vectors(int64_t rows, int64_t C, const F& f) {
  for (int64_t r = 0; r < rows; ++r) for_channel_vectors<A>(C, [&](int64_t c, int64_t cnt) { f(r * C + c, c, cnt); });
}

// For each k, acc[k][c] = sum over the chunk's rows of term(i, c, cnt)[k] (acc starts at zero). Four rows are
// added per update of acc: otherwise the load-add-store chain through acc limits the loop when C is small.
template <typename A, size_t K, typename Term>
void sum_rows(const std::array<A*, K>& acc, int64_t rows, int64_t C, const Term& term) {
  using Vec = Vectorized<A>;
  for (A* a : acc) std::fill(a, a + C, A(0));
  auto update = [&](int64_t c, int64_t cnt, const std::array<Vec, K>& v) {
    for (size_t k = 0; k < K; ++k) (Vec::loadu(acc[k] + c, cnt) + v[k]).store(acc[k] + c, cnt);
  };
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    for_channel_vectors<A>(C, [&](int64_t c, int64_t cnt) {
      const int64_t i = r * C + c;
      const auto t0 = term(i, c, cnt), t1 = term(i + C, c, cnt), t2 = term(i + 2 * C, c, cnt),
                 t3 = term(i + 3 * C, c, cnt);
      std::array<Vec, K> v;
      for (size_t k = 0; k < K; ++k) v[k] = (t0[k] + t1[k]) + (t2[k] + t3[k]);
      update(c, cnt, v);
    });
  }
  for (; r < rows; ++r) {
    for_channel_vectors<A>(C, [&](int64_t c, int64_t cnt) { update(c, cnt, term(r * C + c, c, cnt)); });
  }
}

// Moments of a chunk, per channel, two-pass around the chunk's first row (the shift), merged into acc.
// scratch: 3 * C of A (sum of deviations, float mean, M2 around it), 2 * C of double (the chunk's moments).
template <typename A>
void rows_moments(const A* x, int64_t rows, int64_t C, ChannelMoments& acc, A* scratch, double* chunk) {
  using Vec = Vectorized<A>;
  A* sums = scratch;
  A* means = scratch + C;
  A* m2s = scratch + 2 * C;
  sum_rows<A, 1>({sums}, rows, C, [&](int64_t i, int64_t c, int64_t cnt) {
    return std::array<Vec, 1>{Vec::loadu(x + i, cnt) - Vec::loadu(x + c, cnt)};
  });
  for (int64_t c = 0; c < C; ++c) means[c] = x[c] + sums[c] / A(rows);
  sum_rows<A, 1>({m2s}, rows, C, [&](int64_t i, int64_t c, int64_t cnt) {
    const Vec d = Vec::loadu(x + i, cnt) - Vec::loadu(means + c, cnt);
    return std::array<Vec, 1>{d * d};
  });
  for (int64_t c = 0; c < C; ++c) {
    const Moments m = chunk_moments(double(rows), x[c], sums[c], m2s[c], means[c]);
    chunk[c] = m.mean, chunk[C + c] = m.m2;
  }
  acc.add(double(rows), chunk, chunk + C);
}

// sum(dy) and sum(dy * (x - mean)) of a chunk, per channel, added to acc. scratch: 2 * C of A.
template <typename A>
void rows_grad_sums(const A* dy, const A* x, int64_t rows, int64_t C, const A* hi, const A* lo,
                    std::vector<GradSums>& acc, A* scratch) {
  using Vec = Vectorized<A>;
  A* sum_dy = scratch;
  A* sum_dyx = scratch + C;
  sum_rows<A, 2>({sum_dy, sum_dyx}, rows, C, [&](int64_t i, int64_t c, int64_t cnt) {
    const Vec g = Vec::loadu(dy + i, cnt);
    const Vec xc = (Vec::loadu(x + i, cnt) - Vec::loadu(hi + c, cnt)) - Vec::loadu(lo + c, cnt);
    return std::array<Vec, 2>{g, g * xc};
  });
  for (int64_t c = 0; c < C; ++c) acc[c].add({double(sum_dy[c]), double(sum_dyx[c])});
}

// ---- Per-(n, c) coefficients of the elementwise passes. ----

// y = ((x - mean_hi) - mean_lo) * scale + shift per (n, c): what the normalize pass (normalize_plane,
// normalize_rows) reads, from the forward's own statistics or from given ones (apply).
template <typename A>
struct Coefficients {
  std::vector<A> mean_hi, mean_lo, scale, shift;
  explicit Coefficients(int64_t nc) : mean_hi(nc), mean_lo(nc), scale(nc), shift(nc) {}
};

// Forward: the mean is kept as a float pair (hi + lo): x - mean_hi is exact for x near the mean, so a large offset
// (x = 1e4 + noise) costs no more than the rounding of lo. The pair is also returned (mean, mean_lo), with the
// variance itself, for the backward and running statistics.
template <typename A>
struct ForwardCoefficients : Coefficients<A> {
  A *mean_out, *mean_lo_out, *inv_std_out, *var_out;
  ForwardCoefficients(int64_t nc, const ForwardArgs& a)
      : Coefficients<A>(nc), mean_out(a.mean.mutable_data_ptr<A>()), mean_lo_out(a.mean_lo.mutable_data_ptr<A>()),
        inv_std_out(a.inv_std.mutable_data_ptr<A>()), var_out(a.var.mutable_data_ptr<A>()) {}
  void set(int64_t i, const Moments& m, const ForwardArgs& a) {
    const A w = a.weight.data_ptr<A>()[i], b = a.bias.data_ptr<A>()[i];
    const A var = A(m.m2 / m.count);
    const A inv_std = A(1) / std::sqrt(var + A(a.eps));
    mean_out[i] = this->mean_hi[i] = A(m.mean);
    mean_lo_out[i] = this->mean_lo[i] = A(m.mean - double(this->mean_hi[i]));
    inv_std_out[i] = inv_std;
    var_out[i] = var;
    this->scale[i] = inv_std * w;
    this->shift[i] = b;
  }
};

// Given statistics: a single-precision mean (mean_lo = 0), the scale rounded as the forward's.
template <typename A>
Coefficients<A> given_coefficients(const ApplyArgs& a) {
  const int64_t nc = a.g.N * a.g.C;
  const A* mean = a.mean.const_data_ptr<A>();
  const A* inv_std = a.inv_std.const_data_ptr<A>();
  const A* weight = a.weight.const_data_ptr<A>();
  const A* bias = a.bias.const_data_ptr<A>();
  Coefficients<A> coef(nc);
  for (int64_t i = 0; i < nc; ++i) {
    coef.mean_hi[i] = mean[i];
    coef.scale[i] = inv_std[i] * weight[i];
    coef.shift[i] = bias[i];
  }
  return coef;
}

// Backward: dx = dy_scale * (dy - mean_dy) + xc_scale * (x - mean), i.e.
// w * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)).
// Subtracting mean_dy before scaling keeps dx exactly 0 where dy is constant over the plane (H*W = 1 included).
template <typename A>
struct BackwardCoefficients {
  std::vector<A> dy_scale, xc_scale, mean_dy;
  A *dweight_out, *dbias_out;
  BackwardCoefficients(int64_t nc, const BackwardArgs& a)
      : dy_scale(nc), xc_scale(nc), mean_dy(nc), dweight_out(a.dweight.mutable_data_ptr<A>()),
        dbias_out(a.dbias.mutable_data_ptr<A>()) {}
  void set(int64_t i, const GradSums& s, const BackwardArgs& args) {
    const A inv_std = args.inv_std.data_ptr<A>()[i], w = args.weight.data_ptr<A>()[i];
    const A M = A(args.g.M);
    const A sum_dy_xhat = A(s.dy_xc) * inv_std;
    dweight_out[i] = sum_dy_xhat;
    dbias_out[i] = A(s.dy);
    dy_scale[i] = w * inv_std;
    xc_scale[i] = -dy_scale[i] * inv_std * sum_dy_xhat / M;
    mean_dy[i] = A(s.dy) / M;
  }
};

// ---- The normalize pass, shared by the forward and apply: elements [begin, end) of a unit. ----
// buf: a chunk of A, for reduced types (their chunk is converted to A and back).

// What the forward and apply read in either layout, gathered once per call.
template <typename T>
struct NormalizeOperands {
  using A = at::opmath_type<T>;
  // Chunks of A per thread for reduced types: x's chunk, which y's result then overwrites. T == A needs none.
  static constexpr int64_t buffers = std::is_same_v<T, A> ? 0 : 1;
  int64_t N, C, M;
  const T* x;
  T* y;         // null without an output (moments, y undefined): the forward stops after the statistics
  bool stream;  // y is written with streaming stores
  NormalizeOperands(const Geometry& g, const at::Tensor& x_, const at::Tensor& y_)
      : N(g.N), C(g.C), M(g.M), x(x_.const_data_ptr<T>()), y(y_.defined() ? y_.mutable_data_ptr<T>() : nullptr),
        stream(y != nullptr && stream_output<T, A>(y_, x_, g)) {}
};

template <typename T, typename A>
void normalize_plane(const NormalizeOperands<T>& op, int64_t p, int64_t begin, int64_t end, const Coefficients<A>& coef,
                     A* buf) {
  using Vec = Vectorized<A>;
  const Vec hi(coef.mean_hi[p]), lo(coef.mean_lo[p]), scale(coef.scale[p]), shift(coef.shift[p]);
  for_chunks(begin, end, kChunk, [&](int64_t i, int64_t n) {
    const int64_t offset = p * op.M + i;
    const A* x_acc = as_acc(op.x + offset, n, buf);
    A* y_acc = result_ptr(op.y + offset, buf);
    store_each_vector(y_acc, n, op.stream, [&](int64_t j, int64_t cnt) {
      return at::vec::fmadd((Vec::loadu(x_acc + j, cnt) - hi) - lo, scale, shift);
    });
    store_from(y_acc, op.y + offset, n);
  });
}

// Rows [begin, end) of sample n, in chunks of rows_per_chunk rows.
template <typename T, typename A>
void normalize_rows(const NormalizeOperands<T>& op, int64_t n, int64_t begin, int64_t end, int64_t rows_per_chunk,
                    const Coefficients<A>& coef, A* buf) {
  using Vec = Vectorized<A>;
  const int64_t C = op.C;
  const A* hi = coef.mean_hi.data() + n * C;
  const A* lo = coef.mean_lo.data() + n * C;
  const A* scale = coef.scale.data() + n * C;
  const A* shift = coef.shift.data() + n * C;
  for_chunks(begin, end, rows_per_chunk, [&](int64_t r, int64_t rows) {
    const int64_t offset = (n * op.M + r) * C;
    const A* x_acc = as_acc(op.x + offset, rows * C, buf);
    A* y_acc = result_ptr(op.y + offset, buf);
    for_row_vectors<A>(rows, C, [&](int64_t i, int64_t c, int64_t cnt) {
      const Vec v = (Vec::loadu(x_acc + i, cnt) - Vec::loadu(hi + c, cnt)) - Vec::loadu(lo + c, cnt);
      const Vec out = at::vec::fmadd(v, Vec::loadu(scale + c, cnt), Vec::loadu(shift + c, cnt));
      store_vector(y_acc + i, out, cnt, op.stream);
    });
    store_from(y_acc, op.y + offset, rows * C);
  });
}

// ---- The kernels, one per direction and memory layout. ----
// Contiguous (N, C, M): a unit is one (n, c) plane, walked in chunks of kChunk elements.
// channels_last (N, M, C): a unit is one sample's (M, C) block, walked in chunks of whole rows.
// A direction's sizes, pointers and streaming choice are read into one operands struct (NormalizeOperands,
// BackwardOperands) that both its kernels build, so the two differ only in their loops.

template <typename T>
void forward_contiguous(const ForwardArgs& args) {
  using A = at::opmath_type<T>;
  const NormalizeOperands<T> op(args.g, args.x, args.y);
  ForwardCoefficients<A> coef(op.N * op.C, args);
  reduce_then_map<A, Moments>(
      op.N * op.C, op.M, 1, kChunk, op.buffers * kChunk,
      [&](int64_t p, int64_t begin, int64_t end, A* buf) {
        Moments m;
        for_chunks(begin, end, kChunk,
                   [&](int64_t i, int64_t n) { m.add(contiguous_moments(as_acc(op.x + p * op.M + i, n, buf), n)); });
        return m;
      },
      [&](int64_t p, const Moments& m) { coef.set(p, m, args); },
      [&](int64_t p, int64_t begin, int64_t end, A* buf) {
        if (op.y != nullptr) normalize_plane(op, p, begin, end, coef, buf);
      });
}

template <typename T>
void forward_channels_last(const ForwardArgs& args) {
  using A = at::opmath_type<T>;
  const NormalizeOperands<T> op(args.g, args.x, args.y);
  ForwardCoefficients<A> coef(op.N * op.C, args);
  const int64_t C = op.C, rows_per_chunk = nhwc_rows_per_chunk(C);
  reduce_then_map<A, ChannelMoments>(
      op.N, op.M, C, rows_per_chunk, op.buffers * rows_per_chunk * C,
      [&](int64_t n, int64_t begin, int64_t end, A* buf) {
        ChannelMoments m(C);
        std::vector<A> scratch(3 * C);
        std::vector<double> chunk(2 * C);
        for_chunks(begin, end, rows_per_chunk, [&](int64_t r, int64_t rows) {
          const A* x_acc = as_acc(op.x + (n * op.M + r) * C, rows * C, buf);
          rows_moments(x_acc, rows, C, m, scratch.data(), chunk.data());
        });
        return m;
      },
      [&](int64_t n, const ChannelMoments& m) {
        for (int64_t c = 0; c < C; ++c) coef.set(n * C + c, {m.count, m.mean[c], m.m2[c]}, args);
      },
      [&](int64_t n, int64_t begin, int64_t end, A* buf) {
        if (op.y != nullptr) normalize_rows(op, n, begin, end, rows_per_chunk, coef, buf);
      });
}

template <typename T>
void apply_contiguous(const ApplyArgs& args) {
  using A = at::opmath_type<T>;
  const NormalizeOperands<T> op(args.g, args.x, args.y);
  const Coefficients<A> coef = given_coefficients<A>(args);
  map_blocks<A>(op.N * op.C, op.M, 1, kChunk, op.buffers * kChunk,
                [&](int64_t p, int64_t begin, int64_t end, A* buf) { normalize_plane(op, p, begin, end, coef, buf); });
}

template <typename T>
void apply_channels_last(const ApplyArgs& args) {
  using A = at::opmath_type<T>;
  const NormalizeOperands<T> op(args.g, args.x, args.y);
  const Coefficients<A> coef = given_coefficients<A>(args);
  const int64_t rows_per_chunk = nhwc_rows_per_chunk(op.C);
  map_blocks<A>(op.N, op.M, op.C, rows_per_chunk, op.buffers * rows_per_chunk * op.C,
                [&](int64_t n, int64_t begin, int64_t end, A* buf) {
                  normalize_rows(op, n, begin, end, rows_per_chunk, coef, buf);
                });
}

// What the backward reads in either layout, gathered once per call.
template <typename T>
struct BackwardOperands {
  using A = at::opmath_type<T>;
  // Chunks of A per thread for reduced types: dy's chunk (which dx's result then overwrites) and x's.
  static constexpr int64_t buffers = std::is_same_v<T, A> ? 0 : 2;
  int64_t N, C, M;
  const T *x, *dy;
  T* dx;
  const A *saved_mean, *saved_lo;  // the forward's mean pair (hi + lo)
  bool stream;                     // dx is written with streaming stores
  explicit BackwardOperands(const BackwardArgs& a)
      : N(a.g.N), C(a.g.C), M(a.g.M), x(a.x.const_data_ptr<T>()), dy(a.dy.const_data_ptr<T>()),
        dx(a.dx.mutable_data_ptr<T>()), saved_mean(a.mean.const_data_ptr<A>()), saved_lo(a.mean_lo.const_data_ptr<A>()),
        stream(stream_output<T, A>(a.dx, a.x, a.g)) {}
};

template <typename T>
void backward_contiguous(const BackwardArgs& args) {
  using A = at::opmath_type<T>;
  using Vec = Vectorized<A>;
  const BackwardOperands<T> op(args);
  BackwardCoefficients<A> coef(op.N * op.C, args);
  reduce_then_map<A, GradSums>(
      op.N * op.C, op.M, 1, kChunk, op.buffers * kChunk,
      [&](int64_t p, int64_t begin, int64_t end, A* buf) {
        GradSums s;
        for_chunks(begin, end, kChunk, [&](int64_t i, int64_t n) {
          const int64_t offset = p * op.M + i;
          const A* dy_acc = as_acc(op.dy + offset, n, buf);
          const A* x_acc = as_acc(op.x + offset, n, buf + kChunk);
          s.add(contiguous_grad_sums(dy_acc, x_acc, n, op.saved_mean[p], op.saved_lo[p]));
        });
        return s;
      },
      [&](int64_t p, const GradSums& s) { coef.set(p, s, args); },
      [&](int64_t p, int64_t begin, int64_t end, A* buf) {
        const Vec hi(op.saved_mean[p]), lo(op.saved_lo[p]), dy_scale(coef.dy_scale[p]), xc_scale(coef.xc_scale[p]),
            mean_dy(coef.mean_dy[p]);
        for_chunks(begin, end, kChunk, [&](int64_t i, int64_t n) {
          const int64_t offset = p * op.M + i;
          const A* dy_acc = as_acc(op.dy + offset, n, buf);
          const A* x_acc = as_acc(op.x + offset, n, buf + kChunk);
          A* dx_acc = result_ptr(op.dx + offset, buf);
          store_each_vector(dx_acc, n, op.stream, [&](int64_t j, int64_t cnt) {
            return at::vec::fmadd(xc_scale, (Vec::loadu(x_acc + j, cnt) - hi) - lo,
                                  dy_scale * (Vec::loadu(dy_acc + j, cnt) - mean_dy));
          });
          store_from(dx_acc, op.dx + offset, n);
        });
      });
}

template <typename T>
void backward_channels_last(const BackwardArgs& args) {
  using A = at::opmath_type<T>;
  using Vec = Vectorized<A>;
  const BackwardOperands<T> op(args);
  BackwardCoefficients<A> coef(op.N * op.C, args);
  const int64_t C = op.C, rows_per_chunk = nhwc_rows_per_chunk(C), chunk_elems = rows_per_chunk * C;
  reduce_then_map<A, std::vector<GradSums>>(
      op.N, op.M, C, rows_per_chunk, op.buffers * chunk_elems,
      [&](int64_t n, int64_t begin, int64_t end, A* buf) {
        std::vector<GradSums> s(C);
        std::vector<A> scratch(2 * C);
        for_chunks(begin, end, rows_per_chunk, [&](int64_t r, int64_t rows) {
          const int64_t offset = (n * op.M + r) * C;
          const A* dy_acc = as_acc(op.dy + offset, rows * C, buf);
          const A* x_acc = as_acc(op.x + offset, rows * C, buf + chunk_elems);
          rows_grad_sums(dy_acc, x_acc, rows, C, op.saved_mean + n * C, op.saved_lo + n * C, s, scratch.data());
        });
        return s;
      },
      [&](int64_t n, const std::vector<GradSums>& s) {
        for (int64_t c = 0; c < C; ++c) coef.set(n * C + c, s[c], args);
      },
      [&](int64_t n, int64_t begin, int64_t end, A* buf) {
        for_chunks(begin, end, rows_per_chunk, [&](int64_t r, int64_t rows) {
          const int64_t offset = (n * op.M + r) * C;
          const A* dy_acc = as_acc(op.dy + offset, rows * C, buf);
          const A* x_acc = as_acc(op.x + offset, rows * C, buf + chunk_elems);
          A* dx_acc = result_ptr(op.dx + offset, buf);
          const A* hi = op.saved_mean + n * C;
          const A* lo = op.saved_lo + n * C;
          const A* dy_scale = coef.dy_scale.data() + n * C;
          const A* xc_scale = coef.xc_scale.data() + n * C;
          const A* mean_dy = coef.mean_dy.data() + n * C;
          for_row_vectors<A>(rows, C, [&](int64_t i, int64_t c, int64_t cnt) {
            const Vec g = Vec::loadu(dy_acc + i, cnt) - Vec::loadu(mean_dy + c, cnt);
            const Vec v = (Vec::loadu(x_acc + i, cnt) - Vec::loadu(hi + c, cnt)) - Vec::loadu(lo + c, cnt);
            store_vector(dx_acc + i,
                         at::vec::fmadd(Vec::loadu(xc_scale + c, cnt), v, Vec::loadu(dy_scale + c, cnt) * g), cnt,
                         op.stream);
          });
          store_from(dx_acc, op.dx + offset, rows * C);
        });
      });
}

}  // namespace

// One kernel per memory layout, chosen once per call.
void forward(const ForwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.x.scalar_type(), "instancenorm_forward_cpu", [&] {
    if (args.g.channels_last) {
      forward_channels_last<scalar_t>(args);
    } else {
      forward_contiguous<scalar_t>(args);
    }
  });
}

void apply(const ApplyArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.x.scalar_type(), "instancenorm_apply_cpu", [&] {
    if (args.g.channels_last) {
      apply_channels_last<scalar_t>(args);
    } else {
      apply_contiguous<scalar_t>(args);
    }
  });
}

void backward(const BackwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.x.scalar_type(), "instancenorm_backward_cpu", [&] {
    if (args.g.channels_last) {
      backward_channels_last<scalar_t>(args);
    } else {
      backward_contiguous<scalar_t>(args);
    }
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace instancenorm
