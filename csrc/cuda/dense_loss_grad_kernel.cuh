// The fused kernel of mfext::dense_loss_grad (tensor cores through WMMA),
// shared by dense_loss_grad_kernel.cu (plan and launch) and the per-dtype
// instantiation files dense_loss_grad_kernel_f32.cu and _f64.cu.
//
// Block (rg, cg) owns the row tiles of row group rg and the column tiles of
// column group cg, and walks them row tile by row tile. For each BM x BN tile:
//   1. A tile (prefetched into registers while the previous tile computed)
//      -> A_s; H tile -> H_s                                    (A read once)
//   2. R = W_s H_s - A_s on the tensor cores, written over A_s   (stage 1)
//   3. loss += weight R^2 (float64), G = 2 weight R over A_s     (element-wise)
//   4. gW += G H_s^T   in register fragments (whole row tile)    (stage 2)
//      gH_s[:, tile] += W_s^T G  in shared memory (whole group)  (stage 3)
// After its column tiles, the block writes its gW rows to gw_part[cg]; at the
// end it writes gH_s to gh_part[rg]. Each partial element has one writer, and
// dense_reduce_kernel sums them in a fixed order: no atomics, so every result
// repeats bit for bit. Nothing of size m x n is ever stored.
//
// Precision: float32 runs 3xTF32 (a = a_hi + a_lo, three products; about
// float32 accuracy) or, when torch allows TF32 matmuls, 1xTF32. float64 runs
// the FP64 tensor cores (DMMA), exact IEEE double. The loss is accumulated in
// float64 in both.
#pragma once

#include "common.cuh"
#include "dense_loss_grad.h"

namespace mfext {
namespace cuda {
namespace dense {

#ifndef MFEXT_CUDA_EMU
namespace wmma = nvcuda::wmma;
#else
namespace wmma = nvcuda::wmma;
#endif

constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / kWarp;

// How a tile of A (or weight) is read: 16-byte vectors along rows (unit
// column stride, aligned rows), scalars along rows, or scalars along columns
// (column-major A, e.g. A = B.t()). Threads are mapped so that loads coalesce.
enum LoadMode : int { kModeVec = 0, kModeRow = 1, kModeCol = 2 };

template <typename T>
struct Cfg;
template <>
struct Cfg<float> {
  static constexpr int BM = 128, BN = 64, PAD = 4;
};
template <>
struct Cfg<double> {
  static constexpr int BM = 64, BN = 64, PAD = 2;
};

template <typename T, bool SPLIT>
struct Mma;

// float32: TF32 fragments 16x16x8; SPLIT adds the two low-order products.
template <bool SPLIT>
struct Mma<float, SPLIT> {
  static constexpr int M = 16, N = 16, K = 8;
  using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
  template <typename L>
  struct A {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, L> hi, lo;
  };
  template <typename L>
  struct B {
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, L> hi, lo;
  };
  template <typename F>
  static __device__ __forceinline__ void split(F& hi, F& lo) {
#pragma unroll
    for (int t = 0; t < hi.num_elements; ++t) {
      const float x = hi.x[t];
      const float h = wmma::__float_to_tf32(x);
      hi.x[t] = h;
      if constexpr (SPLIT) lo.x[t] = wmma::__float_to_tf32(x - h);
    }
  }
  template <typename L>
  static __device__ __forceinline__ void load(A<L>& a, const float* p, int ld) {
    wmma::load_matrix_sync(a.hi, p, ld);
    split(a.hi, a.lo);
  }
  template <typename L>
  static __device__ __forceinline__ void load(B<L>& b, const float* p, int ld) {
    wmma::load_matrix_sync(b.hi, p, ld);
    split(b.hi, b.lo);
  }
  template <typename LA, typename LB>
  static __device__ __forceinline__ void mma(Acc& c, const A<LA>& a, const B<LB>& b) {
    if constexpr (SPLIT) {
      wmma::mma_sync(c, a.lo, b.hi, c);  // small terms first
      wmma::mma_sync(c, a.hi, b.lo, c);
    }
    wmma::mma_sync(c, a.hi, b.hi, c);
  }
};

// float64: DMMA fragments 8x8x4, exact.
template <bool SPLIT>
struct Mma<double, SPLIT> {
  static constexpr int M = 8, N = 8, K = 4;
  using Acc = wmma::fragment<wmma::accumulator, 8, 8, 4, double>;
  template <typename L>
  struct A {
    wmma::fragment<wmma::matrix_a, 8, 8, 4, double, L> hi;
  };
  template <typename L>
  struct B {
    wmma::fragment<wmma::matrix_b, 8, 8, 4, double, L> hi;
  };
  template <typename L>
  static __device__ __forceinline__ void load(A<L>& a, const double* p, int ld) {
    wmma::load_matrix_sync(a.hi, p, ld);
  }
  template <typename L>
  static __device__ __forceinline__ void load(B<L>& b, const double* p, int ld) {
    wmma::load_matrix_sync(b.hi, p, ld);
  }
  template <typename LA, typename LB>
  static __device__ __forceinline__ void mma(Acc& c, const A<LA>& a, const B<LB>& b) {
    wmma::mma_sync(c, a.hi, b.hi, c);
  }
};

// The kernel's argument: the fields of DenseLossGradParams it reads, with the
// rank as an int, and what the launch adds (load modes, the plan's grid, the
// workspace). Its layout is the kernel's own: the compiled kernel (registers,
// no spills) depends on it.
template <typename T>
struct FusedArgs {
  const T* A;          // (m, n), strides (sa0, sa1)
  int64_t sa0, sa1;
  int a_mode;          // LoadMode of A
  const T* weight;     // (m, n), strides (sw0, sw1), or null
  int64_t sw0, sw1;
  int w_mode;          // LoadMode of weight
  const T* W;          // (m, k) row-major
  const T* H;          // (k, n) row-major
  int64_t m, n;
  int k;
  int row_tiles, col_tiles, pr, pc;
  int ldgh;            // leading dimension of the gH accumulator in shared memory
  T* gw_part;          // (pc, m, k)
  T* gh_part;          // (pr, k, n)
  double* loss_parts;  // (pr * pc,)
  Status* status;
};

// Shared memory of one block, in bytes (regions stay 32-byte aligned: WMMA needs it).
template <typename T>
constexpr size_t smem_bytes(int kp, int ldgh, bool weighted) {
  return (size_t(weighted ? 3 : 2) * Cfg<T>::BM * (Cfg<T>::BN + Cfg<T>::PAD) +
          size_t(Cfg<T>::BM) * (kp + Cfg<T>::PAD) + size_t(kp) * (Cfg<T>::BN + Cfg<T>::PAD) +
          size_t(kp) * ldgh) *
             sizeof(T) +
         kWarps * sizeof(double);
}

// Asynchronous global -> shared copy of BYTES (4, 8 or 16) bytes; zero-fills
// when !valid (then `src` is only a placeholder and is not read).
template <int BYTES>
__device__ __forceinline__ void cp_async(void* dst, const void* src, bool valid) {
#ifdef MFEXT_CUDA_EMU
  if (valid) std::memcpy(dst, src, BYTES);
  else std::memset(dst, 0, BYTES);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int src_bytes = valid ? BYTES : 0;
  if constexpr (BYTES == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(src), "n"(BYTES),
                 "r"(src_bytes));
  }
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifndef MFEXT_CUDA_EMU
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

__device__ __forceinline__ void cp_async_wait_all() {
#ifndef MFEXT_CUDA_EMU
  asm volatile("cp.async.wait_group 0;\n" ::);
#endif
}

// Starts copying the BM x BN tile of src at (i0, j0) into dst (leading dimension
// LD), zero outside m x n. Threads are laid out so that global reads coalesce.
template <typename T, int BM, int BN, int LD>
__device__ __forceinline__ void async_tile(T* dst, const T* __restrict__ src, int64_t s0,
                                           int64_t s1, int mode, int64_t m, int64_t n, int64_t i0,
                                           int64_t j0) {
  constexpr int V = Vec16<T>::size;
  const int tid = threadIdx.x;
  if (mode == kModeVec) {
#pragma unroll 4
    for (int v = tid; v < BM * BN / V; v += kThreads) {
      const int i = v / (BN / V), j = (v % (BN / V)) * V;
      const bool ok = i0 + i < m && j0 + j < n;  // n % V == 0: a vector is all in or all out
      cp_async<16>(dst + i * LD + j, ok ? src + (i0 + i) * s0 + j0 + j : src, ok);
    }
  } else {
#pragma unroll 4
    for (int l = tid; l < BM * BN; l += kThreads) {
      int i, j;
      if (mode == kModeRow) {
        i = l / BN;
        j = l % BN;
      } else {
        i = l % BM;
        j = l / BM;
      }
      const bool ok = i0 + i < m && j0 + j < n;
      cp_async<int(sizeof(T))>(dst + i * LD + j, ok ? src + (i0 + i) * s0 + (j0 + j) * s1 : src,
                               ok);
    }
  }
}

template <typename T, int KP, bool SPLIT>
__global__ void __launch_bounds__(kThreads, 1) dense_fused_kernel(FusedArgs<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // the host never launches this below compute capability 8.0
#else
  using Ops = Mma<T, SPLIT>;
  using Acc = typename Ops::Acc;
  constexpr int BM = Cfg<T>::BM, BN = Cfg<T>::BN, PAD = Cfg<T>::PAD;
  constexpr int LDA = BN + PAD, LDW = KP + PAD, LDH = BN + PAD;
  constexpr int FM = Ops::M, FN = Ops::N, FK = Ops::K;
  // Stage 1: 4 x 2 warps, each a WTM x WTN block of R.
  constexpr int WTM = BM / 4, WTN = BN / 2, FR1 = WTM / FM, FC1 = WTN / FN;
  // Stage 2: warp w owns gW rows [w FM, (w + 1) FM) and all KP columns.
  constexpr int FC2 = KP / FN;
  // Stage 3: the (KP / FM) x (BN / FN) fragments of the tile's gH, dealt to the warps.
  constexpr int F3C = BN / FN, F3 = (KP / FM) * F3C;
  static_assert(BM / kWarps == FM, "stage 2 gives each warp one fragment row");
  static_assert(KP % 16 == 0 && KP % FN == 0 && KP % FM == 0 && KP % FK == 0, "KP");
  static_assert(LDA >= KP, "A_s must hold a warp's gW rows for the write-out");

  MFEXT_DYNAMIC_SMEM(smem);
  // Shared memory (see smem_bytes): two A tiles (the current one becomes R,
  // then G, while the next one lands), the weight tile, W and H tiles, the gH
  // accumulator of the block's column group, and the loss scratch.
  T* A_buf = reinterpret_cast<T*>(smem);  // 2 x (BM, LDA)
  T* Wt_s = A_buf + 2 * BM * LDA;         // (BM, LDA), only when weighted
  T* W_s = Wt_s + (p.weight ? BM * LDA : 0);  // (BM, LDW): W rows of the row tile
  T* H_s = W_s + BM * LDW;                // (KP, LDH): H columns of the column tile
  T* gH_s = H_s + KP * LDH;               // (KP, ldgh): gH of the block's column group
  double* red = reinterpret_cast<double*>(gH_s + KP * p.ldgh);

  const T* __restrict__ A = p.A;
  const T* __restrict__ Wt = p.weight;
  const T* __restrict__ W = p.W;
  const T* __restrict__ H = p.H;
  T* __restrict__ gw_part = p.gw_part;
  T* __restrict__ gh_part = p.gh_part;
  const int64_t m = p.m, n = p.n;
  const int k = p.k, ldgh = p.ldgh;
  const bool weighted = Wt != nullptr;

  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int rg = blockIdx.y, cg = blockIdx.x;
  const int rt0 = int(int64_t(p.row_tiles) * rg / p.pr);
  const int rt1 = int(int64_t(p.row_tiles) * (rg + 1) / p.pr);
  const int ct0 = int(int64_t(p.col_tiles) * cg / p.pc);
  const int ct1 = int(int64_t(p.col_tiles) * (cg + 1) / p.pc);

  for (int i = tid; i < KP * ldgh; i += kThreads) gH_s[i] = T(0);

  double loss = 0.0;
  unsigned long long bad_w = kNoError;
  int cur = 0;  // which A buffer holds the current tile
  if (rt0 < rt1 && ct0 < ct1) {
    async_tile<T, BM, BN, LDA>(A_buf, A, p.sa0, p.sa1, p.a_mode, m, n, int64_t(rt0) * BM,
                               int64_t(ct0) * BN);
    if (weighted)
      async_tile<T, BM, BN, LDA>(Wt_s, Wt, p.sw0, p.sw1, p.w_mode, m, n, int64_t(rt0) * BM,
                                 int64_t(ct0) * BN);
    cp_async_commit();
  }

  for (int rt = rt0; rt < rt1; ++rt) {
    const int64_t i0 = int64_t(rt) * BM;
    __syncthreads();  // the previous row tile's users of W_s and A_buf are done
    for (int l = tid; l < BM * KP; l += kThreads) {
      const int i = l / KP, c = l % KP;
      W_s[i * LDW + c] = (i0 + i < m && c < k) ? W[(i0 + i) * k + c] : T(0);
    }
    Acc gw[FC2];
#pragma unroll
    for (int f = 0; f < FC2; ++f) wmma::fill_fragment(gw[f], T(0));

    for (int ct = ct0; ct < ct1; ++ct) {
      const int64_t j0 = int64_t(ct) * BN;
      T* A_s = A_buf + cur * BM * LDA;
      // 1. This tile's H columns; wait for the A (and weight) tile in flight.
      for (int l = tid; l < KP * BN; l += kThreads) {
        const int c = l / BN, j = l % BN;
        H_s[c * LDH + j] = (c < k && j0 + j < n) ? H[int64_t(c) * n + j0 + j] : T(0);
      }
      cp_async_wait_all();
      __syncthreads();

      // Start the next A tile into the other buffer (its last reader finished
      // before the barrier that closed the previous tile).
      int nrt = rt, nxt = ct + 1;
      if (nxt == ct1) {
        nrt = rt + 1;
        nxt = ct0;
      }
      const bool has_next = nrt < rt1;
      if (has_next) {
        async_tile<T, BM, BN, LDA>(A_buf + (cur ^ 1) * BM * LDA, A, p.sa0, p.sa1, p.a_mode, m, n,
                                   int64_t(nrt) * BM, int64_t(nxt) * BN);
        cp_async_commit();
      }

      // 2. Stage 1: R = W_s H_s - A_s, written over A_s (each warp its own block).
      {
        const int wr = warp / 2, wc = warp % 2;
        Acc acc[FR1][FC1];
#pragma unroll
        for (int a = 0; a < FR1; ++a)
#pragma unroll
          for (int b = 0; b < FC1; ++b) wmma::fill_fragment(acc[a][b], T(0));
#pragma unroll 1
        for (int kk = 0; kk < KP; kk += FK) {
          typename Ops::template A<wmma::row_major> fa[FR1];
          typename Ops::template B<wmma::row_major> fb[FC1];
#pragma unroll
          for (int a = 0; a < FR1; ++a) Ops::load(fa[a], W_s + (wr * WTM + a * FM) * LDW + kk, LDW);
#pragma unroll
          for (int b = 0; b < FC1; ++b) Ops::load(fb[b], H_s + kk * LDH + wc * WTN + b * FN, LDH);
#pragma unroll
          for (int a = 0; a < FR1; ++a)
#pragma unroll
            for (int b = 0; b < FC1; ++b) Ops::mma(acc[a][b], fa[a], fb[b]);
        }
#pragma unroll
        for (int a = 0; a < FR1; ++a)
#pragma unroll
          for (int b = 0; b < FC1; ++b) {
            T* tile = A_s + (wr * WTM + a * FM) * LDA + wc * WTN + b * FN;
            Acc fa_tile;
            wmma::load_matrix_sync(fa_tile, tile, LDA, wmma::mem_row_major);
#pragma unroll
            for (int t = 0; t < fa_tile.num_elements; ++t) acc[a][b].x[t] -= fa_tile.x[t];
            wmma::store_matrix_sync(tile, acc[a][b], LDA, wmma::mem_row_major);
          }
      }
      __syncthreads();

      // 3. Element-wise: loss and G = d loss / d (W H), over A_s. Outside m x n,
      //    A, the weight, W rows and H columns are zero, so R, G and the loss are too.
      if (weighted) {
#pragma unroll 4
        for (int l = tid; l < BM * BN; l += kThreads) {
          const int i = l / BN, j = l % BN;
          const T r = A_s[i * LDA + j], w = Wt_s[i * LDA + j];
          if (!math::valid_weight(w)) note_bad(bad_w, (i0 + i) * n + j0 + j);
          loss += math::weighted_square<double>(double(r), double(w));
          A_s[i * LDA + j] = math::residual_grad(r, w);
        }
      } else {
#pragma unroll 4
        for (int l = tid; l < BM * BN; l += kThreads) {
          const int i = l / BN, j = l % BN;
          const T r = A_s[i * LDA + j];
          loss += math::square<double>(double(r));
          A_s[i * LDA + j] = math::unit_residual_grad(r);
        }
      }
      __syncthreads();
      if (weighted && has_next) {  // the weight tile is free again: start the next one
        async_tile<T, BM, BN, LDA>(Wt_s, Wt, p.sw0, p.sw1, p.w_mode, m, n, int64_t(nrt) * BM,
                                   int64_t(nxt) * BN);
        cp_async_commit();
      }

      // 4a. Stage 2: gW rows of this warp += G H^T (H^T is H_s read column-major).
#pragma unroll 1
      for (int kk = 0; kk < BN; kk += FK) {
        typename Ops::template A<wmma::row_major> fa;
        Ops::load(fa, A_s + (warp * FM) * LDA + kk, LDA);
#pragma unroll
        for (int f = 0; f < FC2; ++f) {
          typename Ops::template B<wmma::col_major> fb;
          Ops::load(fb, H_s + (f * FN) * LDH + kk, LDH);
          Ops::mma(gw[f], fa, fb);
        }
      }
      // 4b. Stage 3: gH_s[:, tile] += W^T G (W^T is W_s read column-major).
      for (int f = warp; f < F3; f += kWarps) {
        const int fr = f / F3C, fc = f % F3C;
        T* out = gH_s + (fr * FM) * ldgh + (ct - ct0) * BN + fc * FN;
        Acc c;
        wmma::load_matrix_sync(c, out, ldgh, wmma::mem_row_major);
#pragma unroll 1
        for (int kk = 0; kk < BM; kk += FK) {
          typename Ops::template A<wmma::col_major> fa;
          typename Ops::template B<wmma::row_major> fb;
          Ops::load(fa, W_s + kk * LDW + fr * FM, LDW);
          Ops::load(fb, A_s + kk * LDA + fc * FN, LDA);
          Ops::mma(c, fa, fb);
        }
        wmma::store_matrix_sync(out, c, ldgh, wmma::mem_row_major);
      }
      __syncthreads();  // A_s and H_s are overwritten next
      cur ^= 1;
    }

    // The row tile's gW for this column group, through this warp's rows of the
    // free A buffer (the next tile, if any, is landing in the other one).
    T* out_s = A_buf + (cur ^ 1) * BM * LDA;
#pragma unroll
    for (int f = 0; f < FC2; ++f)
      wmma::store_matrix_sync(out_s + (warp * FM) * LDA + f * FN, gw[f], LDA, wmma::mem_row_major);
    __syncwarp();
    for (int l = lane; l < FM * k; l += kWarp) {
      const int r = l / k, c = l % k;
      const int64_t gi = i0 + warp * FM + r;
      if (gi < m) gw_part[int64_t(cg) * m * k + gi * k + c] = out_s[(warp * FM + r) * LDA + c];
    }
  }

  __syncthreads();
  const int64_t cols = int64_t(ct1 - ct0) * BN;
  for (int64_t l = tid; l < int64_t(k) * cols; l += kThreads) {
    const int64_t c = l / cols, jj = l % cols, gj = int64_t(ct0) * BN + jj;
    if (gj < n) gh_part[int64_t(rg) * k * n + c * n + gj] = gH_s[c * ldgh + jj];
  }
  const double total = block_sum(loss, red);
  if (tid == 0) p.loss_parts[int64_t(blockIdx.y) * gridDim.x + blockIdx.x] = total;
  flush_bad(&p.status->bad_weight, bad_w);
#endif
}

// Launches dense_fused_kernel<T, kp, split> (defined per dtype in
// dense_loss_grad_kernel_<dtype>.cu).
template <typename T>
cudaError_t launch_fused_kernel(const FusedArgs<T>& params, int kp, bool split, dim3 grid,
                                size_t smem, cudaStream_t stream);

template <typename T, int KP, bool SPLIT>
cudaError_t launch_one(const FusedArgs<T>& params, dim3 grid, size_t smem, cudaStream_t stream) {
  auto kernel = dense_fused_kernel<T, KP, SPLIT>;
  MFEXT_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  MFEXT_LAUNCH(kernel, grid, kThreads, smem, stream, params);
  MFEXT_LAUNCH_CHECK();
  return cudaSuccess;
}

}  // namespace dense
}  // namespace cuda
}  // namespace mfext
