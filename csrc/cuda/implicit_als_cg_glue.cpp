// CUDA implementation of mfext::implicit_als_cg_: checks, buffers, stream, the
// GEMMs (cuBLAS through at::mm_out) and the typed parameters of the kernels
// (implicit_als_cg.h). Per call:
//   validate; PG = X @ gram; rows(first); cg_steps x { PG = P @ gram; rows(step) }; finish
// where a (d,) gram (a diagonal G) makes each "@ gram" a broadcast product (with
// row_scale, by the (R, d) outer product row_scale x gram).
// The argument checks are the CPU op's own (../implicit_als_cg_checks.h); the
// indptr and indices values are checked on the GPU by the validation kernel,
// which makes the rows kernels do nothing, turns X into NaN and reports the
// first bad position at the next mfext call, so that nothing here reads device
// data or synchronizes the device. (Unlike the CPU, every step's GEMM runs even
// when every row has stopped: knowing it would need a synchronization.)
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "../implicit_als_cg_checks.h"
#include "glue.h"
#include "implicit_als_cg.h"

namespace mfext {
namespace cuda {
namespace {

constexpr const char* kOp = "mfext::implicit_als_cg_";

void implicit_als_cg_cuda(const at::Tensor& X,       // (R, d), in place
                          const at::Tensor& indptr,  // (R + 1,) int64
                          const at::Tensor& indices, // (nnz,) int32/int64
                          const at::Tensor& weight,  // (nnz,)
                          const at::Tensor& Y,       // (n, d)
                          const at::Tensor& gram,    // (d, d), or (d,) for diag(gram)
                          int64_t cg_steps,
                          const std::optional<at::Tensor>& target,      // (nnz,) or none
                          const std::optional<at::Tensor>& row_scale) {  // (R,) or none
  const at::Tensor tgt = target.has_value() ? *target : at::Tensor();
  const at::Tensor scl = row_scale.has_value() ? *row_scale : at::Tensor();
  const ImplicitSizes s =
      check_implicit_cg_args(kOp, X, indptr, indices, weight, Y, gram, cg_steps, tgt, scl);
  TORCH_CHECK(s.d <= kImplicitCgMaxD, kOp, ": d = ", s.d, " is larger than the CUDA kernels take (",
              kImplicitCgMaxD, ")");
  raise_pending_errors();
  if (s.R == 0) return;
  const c10::cuda::CUDAGuard guard(Y.device());
  const at::Tensor ip = indptr.contiguous(), idx = indices.contiguous();
  const at::Tensor w = weight.contiguous(), Yc = Y.contiguous();
  const at::Tensor tc = tgt.defined() ? tgt.contiguous() : tgt;
  // diag(gram) * row_scale[r] per row: (R, d), made once for every step's product.
  const at::Tensor G = scl.defined() ? at::outer(scl, gram) : gram;
  at::Tensor Xc = X.is_contiguous() ? X : X.contiguous();  // (R, d)
  at::Tensor r = at::empty({s.R, s.d}, Y.options());         // (R, d)
  at::Tensor P = at::empty({s.R, s.d}, Y.options());         // (R, d)
  at::Tensor PG = at::empty({s.R, s.d}, Y.options());        // (R, d)
  at::Tensor rs = at::empty({s.R}, Y.options());             // (R,)
  at::Tensor active = at::empty({s.R}, Y.options().dtype(at::kByte));  // (R,)
  at::Tensor ws = at::empty({static_cast<int64_t>(implicit_cg_workspace_bytes())},
                            Y.options().dtype(at::kByte));
  const DeviceInfo dev = device_info(Y.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_value_index(kOp, Y.scalar_type(), indices.scalar_type(), [&](auto value, auto index) {
    using T = typename decltype(value)::type;
    using I = typename decltype(index)::type;
    ImplicitCgParams<T, I> p;
    p.indptr = ip.const_data_ptr<int64_t>();
    p.indices = idx.const_data_ptr<I>();
    p.weight = w.const_data_ptr<T>();
    p.Y = Yc.const_data_ptr<T>();
    p.X = Xc.data_ptr<T>();
    p.r = r.data_ptr<T>();
    p.p = P.data_ptr<T>();
    p.PG = PG.data_ptr<T>();
    p.rs = rs.data_ptr<T>();
    p.active = active.data_ptr<uint8_t>();
    p.R = s.R;
    p.n = s.n;
    p.d = s.d;
    p.nnz = s.nnz;
    p.mailbox = mailbox_for(Y.device());
    MFEXT_CUDA_LAUNCHED(implicit_cg_validate_launch(p, ws.data_ptr(), dev, stream));
    // PG = V @ G; gram symmetric: row r holds G v_r.
    auto times_gram = [&](const at::Tensor& V) {
      if (gram.dim() == 1) {
        at::mul_out(PG, V, G);  // G: (d,) or, with row_scale, (R, d)
      } else {
        at::mm_out(PG, V, gram);
      }
    };
    times_gram(Xc);
    if (tc.defined()) {
      // The first pass's b is sum_e (1 + w_e) y_c; with a target it is sum_e t_e y_c.
      // The difference, S = sum_e (t_e - 1 - w_e) y_c, is one CSR x dense product
      // (cuSPARSE), taken off PG so that the kernels stay as they are:
      // r = -(X G - S) + sum_e (1 + w_e (1 - y_c . x)) y_c = b - A x.
      // (This path reads indptr's two ends on the host: a synchronization the
      // target-free path avoids. Bad offsets skip it; the validation kernel then
      // reports them and X becomes NaN, as without a target.)
      const int64_t lo = ip[0].item<int64_t>(), hi = ip[s.R].item<int64_t>();
      if (0 <= lo && lo <= hi && hi <= s.nnz) {
        const at::Tensor coef = (tc - w - 1).narrow(0, lo, hi - lo);  // (hi - lo,)
        const at::Tensor S = at::mm(
            at::sparse_csr_tensor(ip - lo, idx.narrow(0, lo, hi - lo).to(at::kLong), coef,
                                  {s.R, s.n}, coef.options()),
            Yc);  // (R, d)
        PG.sub_(S);
      }
    }
    MFEXT_CUDA_LAUNCHED(implicit_cg_rows_launch(p, true, ws.data_ptr(), dev, stream));
    for (int64_t step = 0; step < cg_steps; ++step) {
      times_gram(P);
      MFEXT_CUDA_LAUNCHED(implicit_cg_rows_launch(p, false, ws.data_ptr(), dev, stream));
    }
    MFEXT_CUDA_LAUNCHED(implicit_cg_finish_launch(p, ws.data_ptr(), dev, stream));
  });
  if (!Xc.is_same(X)) X.copy_(Xc);
}

}  // namespace

TORCH_LIBRARY_IMPL(mfext, CUDA, m) {
  m.impl("implicit_als_cg_", &implicit_als_cg_cuda);
}

}  // namespace cuda
}  // namespace mfext
