// Argument checks of mfext::sgd_epoch_ (see sgd_epoch_checks.h).
#include "sgd_epoch_checks.h"

#include <ATen/MemoryOverlap.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <utility>

#include "tensor_checks.h"

namespace mfext {

namespace {

void check_in_place(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), op, ": argument '", name,
              "' is updated in place and must be contiguous, got strides ", t.strides());
  // The op is a solver step, not differentiable: updating a tensor that autograd
  // tracks would leave its graph describing values it no longer holds (torch's own
  // in-place ops refuse a leaf that requires grad for the same reason). Under
  // torch.no_grad() the update is plain data, as for torch's in-place ops.
  TORCH_CHECK(!(at::GradMode::is_enabled() && t.requires_grad()), op, ": argument '", name,
              "' requires grad and would be updated in place by this non-differentiable op; "
              "pass ", name, ".detach() or call it under torch.no_grad()");
}

}  // namespace

SgdSizes check_sgd_inputs(const char* op, const at::Tensor& W, const at::Tensor& H_t,
                          const at::Tensor& user_bias, const at::Tensor& item_bias,
                          const at::Tensor& rows, const at::Tensor& cols, const at::Tensor& vals,
                          const std::optional<at::Tensor>& order,
                          const std::optional<at::Tensor>& block_ptr,
                          const std::optional<at::Tensor>& schedule, double lr, double reg,
                          double bias_reg, double global_mean, bool use_biases) {
  check_float_tensor(op, "W", W, 2, false);
  check_float_tensor(op, "H_t", H_t, 2, false);
  check_same_dtype(op, "W", W, "H_t", H_t);
  TORCH_CHECK(W.size(1) == H_t.size(1), op, ": W of shape ", W.sizes(), " and H_t of shape ",
              H_t.sizes(), " disagree on the rank k (W is (m, k), H_t is (n, k))");
  TORCH_CHECK(W.size(1) >= 1, op, ": the rank k must be at least 1, got W of shape ",
              W.sizes());
  check_in_place(op, "W", W);
  check_in_place(op, "H_t", H_t);
  SgdSizes s{};
  s.m = W.size(0);
  s.n = H_t.size(0);
  s.k = W.size(1);
  check_float_tensor(op, "user_bias", user_bias, 1, false);
  check_float_tensor(op, "item_bias", item_bias, 1, false);
  check_same_dtype(op, "W", W, "user_bias", user_bias);
  check_same_dtype(op, "W", W, "item_bias", item_bias);
  if (use_biases) {
    TORCH_CHECK(user_bias.size(0) == s.m, op, ": user_bias must have shape (m,) = (", s.m,
                ",) to match W, got ", user_bias.sizes());
    TORCH_CHECK(item_bias.size(0) == s.n, op, ": item_bias must have shape (n,) = (", s.n,
                ",) to match H_t, got ", item_bias.sizes());
    check_in_place(op, "user_bias", user_bias);
    check_in_place(op, "item_bias", item_bias);
  }
  check_index_pair(op, rows, cols);
  check_float_tensor(op, "vals", vals, 1, false);
  check_same_dtype(op, "W", W, "vals", vals);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"H_t", &H_t},
                                {"user_bias", &user_bias}, {"item_bias", &item_bias},
                                {"rows", &rows}, {"cols", &cols}, {"vals", &vals}}) {
    check_same_device(op, "W", W, name, *t);
  }
  s.nnz = vals.size(0);
  TORCH_CHECK(rows.size(0) == s.nnz && cols.size(0) == s.nnz, op,
              ": rows, cols and vals must have the same length, got ", rows.size(0), ", ",
              cols.size(0), " and ", s.nnz);
  const at::Tensor* mutated[] = {&W, &H_t, &user_bias, &item_bias};
  const char* mutated_names[] = {"W", "H_t", "user_bias", "item_bias"};
  for (int a = 0; a < 4; ++a) {
    for (int b = a + 1; b < 4; ++b) {
      const bool used = use_biases || (a < 2 && b < 2);
      TORCH_CHECK(!used || mutated[a]->numel() == 0 || mutated[b]->numel() == 0 ||
                      !mutated[a]->is_alias_of(*mutated[b]),
                  op, ": '", mutated_names[a], "' and '", mutated_names[b],
                  "' share memory; the tensors updated in place must be distinct");
    }
  }
  // An input that overlaps a tensor written in place would be read after the
  // kernel has overwritten it (e.g. vals a view of W): reject it up front.
  const std::pair<const char*, const at::Tensor*> inputs[] = {
      {"rows", &rows}, {"cols", &cols}, {"vals", &vals},
      {"order", order.has_value() ? &*order : nullptr},
      {"block_ptr", block_ptr.has_value() ? &*block_ptr : nullptr},
      {"schedule", schedule.has_value() ? &*schedule : nullptr}};
  for (int a = 0; a < 4; ++a) {
    if (!(use_biases || a < 2) || mutated[a]->numel() == 0) continue;
    for (const auto& [in_name, in] : inputs) {
      if (in == nullptr || in->numel() == 0) continue;
      const at::MemOverlapStatus status = at::get_overlap_status(*mutated[a], *in);
      const bool overlap = status == at::MemOverlapStatus::Full ||
                           status == at::MemOverlapStatus::Partial ||
                           (status == at::MemOverlapStatus::TooHard && mutated[a]->is_alias_of(*in));
      TORCH_CHECK(!overlap, op, ": input '", in_name, "' overlaps '", mutated_names[a],
                  "', which is updated in place; pass a copy (e.g. ", in_name, ".clone())");
    }
  }
  TORCH_CHECK(std::isfinite(lr) && lr > 0, op, ": lr must be finite and positive, got ", lr);
  TORCH_CHECK(std::isfinite(reg) && reg >= 0, op, ": reg must be finite and >= 0, got ", reg);
  TORCH_CHECK(std::isfinite(bias_reg) && bias_reg >= 0, op,
              ": bias_reg must be finite and >= 0, got ", bias_reg);
  TORCH_CHECK(std::isfinite(global_mean), op, ": global_mean must be finite, got ",
              global_mean);

  s.len = s.nnz;
  if (order.has_value()) {
    check_same_device(op, "W", W, "order", *order);
    TORCH_CHECK(order->dim() == 1 && order->scalar_type() == at::kLong, op,
                ": argument 'order' must be a 1-D int64 tensor, got shape ", order->sizes(),
                " and dtype ", order->scalar_type());
    s.len = order->size(0);
  }
  TORCH_CHECK(block_ptr.has_value() == schedule.has_value(), op,
              ": give both 'block_ptr' and 'schedule' (blocked epoch) or neither (Hogwild)");
  if (block_ptr.has_value()) {
    check_same_device(op, "W", W, "block_ptr", *block_ptr);
    check_same_device(op, "W", W, "schedule", *schedule);
    TORCH_CHECK(block_ptr->dim() == 1 && block_ptr->scalar_type() == at::kLong &&
                    block_ptr->size(0) >= 1,
                op, ": argument 'block_ptr' must be a non-empty 1-D int64 tensor, got shape ",
                block_ptr->sizes(), " and dtype ", block_ptr->scalar_type());
    TORCH_CHECK(schedule->dim() == 2 && schedule->scalar_type() == at::kLong, op,
                ": argument 'schedule' must be a 2-D int64 tensor (n_strata, width), got shape ",
                schedule->sizes(), " and dtype ", schedule->scalar_type());
    s.n_blocks = block_ptr->size(0) - 1;
    s.n_strata = schedule->size(0);
    s.width = schedule->size(1);
  }
  return s;
}

}  // namespace mfext
