// Streaming (non-temporal) stores for the CPU kernels' outputs: when an output is written with them
// (stream_output), how a vector is (store_vector, store_each_vector), and the fence that orders them before the
// threads join (fence_streaming_stores).
//
// Part of cpu/instance_norm_cpu.cpp, which is compiled once per instruction set: like that file's own helpers,
// everything here lives in instancenorm::CPU_CAPABILITY with internal linkage, and CPU_CAPABILITY_AVX2 /
// CPU_CAPABILITY_AVX512 choose the store instructions.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "instance_norm.h"

namespace instancenorm {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Outputs at least this big are written with streaming (non-temporal) stores when nothing in the kernel reads them
// back. A normal store first reads each line from memory (read-for-ownership), a third more traffic for a
// memory-bound pass. A smaller output still fits in a cache that the next layer reads it from, and streaming it
// past that cache is no faster, sometimes slower (docs/benchmarks.md has the measurements behind this size).
constexpr int64_t kStreamMinBytes = int64_t(16) << 20;

// Whether every page of [p, p + n) is mapped in. A fresh mapping is not (glibc's default for allocations above
// 32 MiB, or a heap grown after a trim): the kernel zeroes each page on first touch, which leaves it in cache, and
// streaming stores then also pay for writing those zeros back, which makes them slower than normal stores there.
// Checking costs one mincore call, microseconds against the milliseconds of such a pass.
bool pages_resident(const void* p, int64_t n) {
#if defined(__linux__)
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + uintptr_t(n);
  std::vector<unsigned char> resident((end - begin + page - 1) / page);
  if (mincore(reinterpret_cast<void*>(begin), end - begin, resident.data()) != 0) return false;
  return std::all_of(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; });
#else
  (void)p, (void)n;
  return false;
#endif
}

bool vector_aligned(const void* p, size_t vector_bytes) { return reinterpret_cast<uintptr_t>(p) % vector_bytes == 0; }

template <typename T, typename A>
bool stream_output(const at::Tensor& out, const at::Tensor& in, const Geometry& g) {
  // In place (normalize_) the kernel has just read each line it writes, so there is no read-for-ownership to save.
  // channels_last rows are stored vector by vector from their first channel: every vector is aligned only when C
  // fills whole vectors (NCHW runs store their unaligned heads normally).
  // NCHW stores start streaming at the first vector boundary, which elements reach only if out itself is
  // element-aligned: a buffer such as torch.frombuffer(..., offset=1) never is, and a streaming store to an address
  // off the vector boundary faults.
  using Vec = Vectorized<A>;
  const bool aligned = g.channels_last ? g.C % Vec::size() == 0 && vector_aligned(out.data_ptr(), sizeof(Vec))
                                       : vector_aligned(out.data_ptr(), sizeof(A));
  return std::is_same_v<T, A> && aligned && out.nbytes() >= kStreamMinBytes && out.data_ptr() != in.data_ptr() &&
         pages_resident(out.data_ptr(), int64_t(out.nbytes()));
}

// v (cnt lanes) to p: a full vector with a streaming store when stream (p is then on a vector boundary), else a
// normal store.
template <typename A>
inline void store_vector(A* p, const Vectorized<A>& v, int64_t cnt, bool stream) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if (stream && cnt == Vectorized<A>::size()) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<A, float>) _mm512_stream_ps(p, v);
    else _mm512_stream_pd(p, v);
#else
    if constexpr (std::is_same_v<A, float>) _mm256_stream_ps(p, v);
    else _mm256_stream_pd(p, v);
#endif
    return;
  }
#endif
  v.store(p, cnt);
}

// out[i, i + cnt) = value(i, cnt) for i in [0, n), one vector at a time; with stream (out element-aligned, see
// stream_output), the aligned vectors are written with streaming stores.
template <typename A, typename F>
void store_each_vector(A* out, int64_t n, bool stream, const F& value) {
  using Vec = Vectorized<A>;
  constexpr int64_t V = Vec::size();
  const int64_t misaligned = int64_t(reinterpret_cast<uintptr_t>(out) % sizeof(Vec)) / int64_t(sizeof(A));
  int64_t i = misaligned == 0 ? 0 : std::min(n, V - misaligned);
  if (i > 0) value(0, i).store(out, i);
  for (; i + V <= n; i += V) store_vector(out + i, value(i, V), V, stream);
  if (i < n) value(i, n - i).store(out + i, n - i);
}

// Streaming stores are weakly ordered: each thread fences them before the threads join and others read the output.
void fence_streaming_stores() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace instancenorm
