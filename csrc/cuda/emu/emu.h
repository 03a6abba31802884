// A small CPU emulation of the CUDA features the mfext kernels use, so that
// their logic (index math, bounds, barriers, warp collectives, WMMA tiles) can
// be tested without a GPU, under AddressSanitizer.  Test-only: never part of
// the extension build.
//
// Model: every CUDA thread is a std::thread; the blocks of a launch run one
// after another (in reverse order when EMU_REVERSE_BLOCKS=1), so cross-block
// atomics and partial buffers behave; __syncthreads and warp collectives are
// real barriers. A thread that leaves the kernel while others wait at a
// barrier is reported as a divergent barrier. Dynamic shared memory is filled
// with 0xFF bytes (NaN) before each block, so reads of unwritten shared memory
// show up in the results. WMMA fragments hold the whole tile in every lane:
// the element mapping differs from the hardware's, but the programming model
// (uniform element-wise ops, collective load/store/mma) is the same.
#pragma once

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __noinline__

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

using cudaStream_t = void*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 4 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace emu {

struct Barrier {
  std::mutex mu;
  std::condition_variable cv;
  int expected = 0, arrived = 0, exited = 0;
  long generation = 0;
  bool* error = nullptr;
  const char* what = "";

  void reset(int n, bool* err, const char* name) {
    expected = n;
    arrived = exited = 0;
    generation = 0;
    error = err;
    what = name;
  }
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mu);
    const long gen = generation;
    if (++arrived + exited == expected) {
      if (exited > 0) divergent();
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    cv.wait(lock, [&] { return generation != gen; });
  }
  void exit() {
    std::unique_lock<std::mutex> lock(mu);
    ++exited;
    if (arrived > 0) {
      divergent();
      if (arrived + exited == expected) {
        arrived = 0;
        ++generation;
        cv.notify_all();
      }
    }
  }
  void divergent() {
    if (!*error) std::fprintf(stderr, "emu: divergent %s (a thread left while others waited)\n", what);
    *error = true;
  }
};

struct Block {
  dim3 grid, block, block_idx;
  std::vector<unsigned char> smem;
  Barrier bar;
  std::vector<Barrier> warp_bars;
  std::vector<std::vector<uint64_t>> warp_slots;
  bool error = false;
};

struct ThreadCtx {
  Block* blk = nullptr;
  dim3 thread_idx;
  int linear = 0;
};

inline ThreadCtx& tls() {
  thread_local ThreadCtx ctx;
  return ctx;
}

inline bool& launch_failed() {
  static bool failed = false;
  return failed;
}

inline unsigned char* dynamic_smem() { return tls().blk->smem.data(); }

inline void syncthreads() { tls().blk->bar.arrive_and_wait(); }
inline void syncwarp() { tls().blk->warp_bars[tls().linear / 32].arrive_and_wait(); }

template <typename T>
inline T shfl_generic(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  ThreadCtx& t = tls();
  const int warp = t.linear / 32, lane = t.linear % 32;
  auto& slots = t.blk->warp_slots[warp];
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  syncwarp();
  slots[lane] = bits;
  syncwarp();
  T out;
  const uint64_t got = slots[src & 31];
  std::memcpy(&out, &got, sizeof(T));
  syncwarp();
  return out;
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t, Args... args) {
  const int threads = int(block.x * block.y * block.z);
  const long blocks = long(grid.x) * grid.y * grid.z;
  if (threads <= 0 || threads > 1024 || threads % 32 != 0 || blocks <= 0) {
    std::fprintf(stderr, "emu: bad launch configuration (%ld blocks of %d threads)\n", blocks, threads);
    launch_failed() = true;
    return;
  }
  const bool reverse = std::getenv("EMU_REVERSE_BLOCKS") && std::getenv("EMU_REVERSE_BLOCKS")[0] == '1';
  for (long bi = 0; bi < blocks; ++bi) {
    const long b = reverse ? blocks - 1 - bi : bi;
    Block blk;
    blk.grid = grid;
    blk.block = block;
    blk.block_idx = dim3(unsigned(b % grid.x), unsigned((b / grid.x) % grid.y),
                         unsigned(b / (long(grid.x) * grid.y)));
    blk.smem.assign(smem_bytes, 0xFF);
    blk.bar.reset(threads, &blk.error, "__syncthreads");
    blk.warp_bars = std::vector<Barrier>(threads / 32);
    for (auto& wb : blk.warp_bars) wb.reset(32, &blk.error, "warp collective");
    blk.warp_slots.assign(threads / 32, std::vector<uint64_t>(32, 0));
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        ThreadCtx& ctx = tls();
        ctx.blk = &blk;
        ctx.linear = t;
        ctx.thread_idx = dim3(unsigned(t % block.x), unsigned((t / block.x) % block.y),
                              unsigned(t / (block.x * block.y)));
        kernel(args...);
        blk.warp_bars[t / 32].exit();
        blk.bar.exit();
      });
    }
    for (auto& th : pool) th.join();
    if (blk.error) launch_failed() = true;
  }
}

}  // namespace emu

#define threadIdx (::emu::tls().thread_idx)
#define blockIdx (::emu::tls().blk->block_idx)
#define blockDim (::emu::tls().blk->block)
#define gridDim (::emu::tls().blk->grid)

inline void __syncthreads() { ::emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::emu::syncwarp(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap() { std::abort(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int = 32) {
  return ::emu::shfl_generic(v, (::emu::tls().linear % 32) ^ mask);
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src, int = 32) {
  return ::emu::shfl_generic(v, src);
}

template <typename T>
inline T __ldg(const T* p) { return *p; }

inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  std::atomic_ref<unsigned long long> a(*p);
  unsigned long long cur = a.load();
  while (v < cur && !a.compare_exchange_weak(cur, v)) {
  }
  return cur;
}
inline unsigned atomicCAS(unsigned* p, unsigned expected, unsigned desired) {
  std::atomic_ref<unsigned> a(*p);
  a.compare_exchange_strong(expected, desired);
  return expected;
}
inline unsigned atomicExch(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).exchange(v); }

inline cudaError_t cudaGetLastError() {
  const bool failed = ::emu::launch_failed();
  ::emu::launch_failed() = false;
  return failed ? cudaErrorLaunchFailure : cudaSuccess;
}
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated launch failure"; }
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

// ----------------------------------------------------------------------------- WMMA
namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

template <typename T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};

template <typename Use, int M, int N, int K>
struct shape;
template <int M, int N, int K>
struct shape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct shape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct shape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  using element_type = typename storage<T>::type;
  static constexpr int rows = shape<Use, M, N, K>::rows, cols = shape<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];
};

template <typename Frag, typename P>
inline void load_tile(Frag& f, const P* p, unsigned ldm, bool row) {
  for (int r = 0; r < Frag::rows; ++r)
    for (int c = 0; c < Frag::cols; ++c)
      f.x[r * Frag::cols + c] = row ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  __syncwarp();
  load_tile(f, p, ldm, std::is_same<Layout, row_major>::value);
  __syncwarp();
}
template <int M, int N, int K, typename T, typename P>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const P* p, unsigned ldm,
                             layout_t layout) {
  __syncwarp();
  load_tile(f, p, ldm, layout == mem_row_major);
  __syncwarp();
}
template <int M, int N, int K, typename T, typename P>
inline void store_matrix_sync(P* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                              layout_t layout) {
  __syncwarp();
  // Every lane holds the whole tile; lane 0 writes it (the others hold the same values).
  if (::emu::tls().linear % 32 == 0) {
    using F = fragment<accumulator, M, N, K, T>;
    for (int r = 0; r < F::rows; ++r)
      for (int c = 0; c < F::cols; ++c) {
        const size_t off = layout == mem_row_major ? size_t(r) * ldm + c : size_t(c) * ldm + r;
        p[off] = f.x[r * F::cols + c];
      }
  }
  __syncwarp();
}
template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& v) {
  for (auto& e : f.x) e = v;
}
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b,
                     const fragment<accumulator, M, N, K, TC>& c) {
  __syncwarp();
  fragment<accumulator, M, N, K, TC> out;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      TC s = c.x[i * N + j];
      for (int q = 0; q < K; ++q) s += TC(a.x[i * K + q]) * TC(b.x[q * N + j]);
      out.x[i * N + j] = s;
    }
  d = out;
  __syncwarp();
}
inline float __float_to_tf32(float x) {
  if (!std::isfinite(x)) return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xFFFFE000u;  // round to nearest (ties away), 10 mantissa bits
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

}  // namespace wmma
}  // namespace nvcuda
