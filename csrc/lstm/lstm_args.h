// Arguments of the LSTM cell ops (csrc/lstm/lstm_math.h), one list per op (see common/entry.h).
// Pointers are data pointers of contiguous tensors (0 for an absent optional one); dtype a
// common/dtype.h code. Gates are (B, 4H) in torch.nn.LSTM's order i, f, g, o.
//
// lstm_cell: gates = x W_ih^T + b_ih + h W_hh^T + b_hh; c_prev, h, c (B, H); h_rec (B, H) or 0:
// h * keep(b, j) / (1 - p), keep from Philox at (seed, offset, row b, element j) (the same mask for
// every time step of a sequence: variational recurrent dropout).
#pragma once
#include <cstdint>

#include "common/entry.h"

#define GK_LSTM_CELL_ARGS(X)                                                                       \
  X(uintptr_t, gates) X(uintptr_t, c_prev) X(uintptr_t, h) X(uintptr_t, c) X(uintptr_t, h_rec)     \
  X(int64_t, B) X(int64_t, H) X(double, p) X(uint64_t, seed) X(uint64_t, offset) X(int, dtype)

// grad_h, grad_c (B, H) (the gradients of the cell's outputs h and c); grad_h_rec (B, H) or 0 (the
// gradient of h_rec, masked and added to grad_h); grad_gates (B, 4H), grad_c_prev (B, H).
#define GK_LSTM_CELL_BACKWARD_ARGS(X)                                                              \
  X(uintptr_t, grad_h) X(uintptr_t, grad_h_rec) X(uintptr_t, grad_c) X(uintptr_t, gates)           \
  X(uintptr_t, c_prev) X(uintptr_t, grad_gates) X(uintptr_t, grad_c_prev) X(int64_t, B)            \
  X(int64_t, H) X(double, p) X(uint64_t, seed) X(uint64_t, offset) X(int, dtype)

// ln_lstm_cell (Ba et al. 2016): gates = gates_x + LN(gates_h) * weight_h (LN over the 4H gates,
// no bias: gates_x carries it); c = f c_prev + i g; h = o tanh(LN(c) * weight_c + bias_c).
// gates_x, gates_h (B, 4H); weight_h (4H,); weight_c, bias_c (H,); c_prev, h, c, h_rec as above.
#define GK_LN_LSTM_CELL_ARGS(X)                                                                    \
  X(uintptr_t, gates_x) X(uintptr_t, gates_h) X(uintptr_t, c_prev) X(uintptr_t, weight_h)          \
  X(uintptr_t, weight_c) X(uintptr_t, bias_c) X(uintptr_t, h) X(uintptr_t, c) X(uintptr_t, h_rec)  \
  X(int64_t, B) X(int64_t, H) X(double, eps) X(double, p) X(uint64_t, seed) X(uint64_t, offset)    \
  X(int, dtype)

// grad_gates_x, grad_gates_h (B, 4H), grad_c_prev (B, H) in the storage dtype; float32 per-row
// terms of the weight gradients (summed over rows by the host, in a fixed order):
// terms_h (B, 4H) = dgates * LN(gates_h) (-> weight_h), terms_c (B, H) = dcn * LN(c) (-> weight_c),
// terms_b (B, H) = dcn (-> bias_c), dcn the gradient of LN(c) * weight_c + bias_c.
#define GK_LN_LSTM_CELL_BACKWARD_ARGS(X)                                                           \
  X(uintptr_t, grad_h) X(uintptr_t, grad_h_rec) X(uintptr_t, grad_c) X(uintptr_t, gates_x)         \
  X(uintptr_t, gates_h) X(uintptr_t, c_prev) X(uintptr_t, weight_h) X(uintptr_t, weight_c)         \
  X(uintptr_t, bias_c) X(uintptr_t, grad_gates_x) X(uintptr_t, grad_gates_h)                       \
  X(uintptr_t, grad_c_prev) X(uintptr_t, terms_h) X(uintptr_t, terms_c) X(uintptr_t, terms_b)      \
  X(int64_t, B) X(int64_t, H) X(double, eps) X(double, p) X(uint64_t, seed) X(uint64_t, offset)    \
  X(int, dtype)

// lstm_dropout_mask: out (B, H) = keep(b, j) / (1 - p), the mask the cells apply to h_rec.
#define GK_LSTM_DROPOUT_MASK_ARGS(X)                                                               \
  X(uintptr_t, out) X(int64_t, B) X(int64_t, H) X(double, p) X(uint64_t, seed) X(uint64_t, offset) \
  X(int, dtype)

#define GK_LSTM_OPS(OP)                                                \
  OP(lstm_cell, GK_LSTM_CELL_ARGS)                                     \
  OP(lstm_cell_backward, GK_LSTM_CELL_BACKWARD_ARGS)                   \
  OP(ln_lstm_cell, GK_LN_LSTM_CELL_ARGS)                               \
  OP(ln_lstm_cell_backward, GK_LN_LSTM_CELL_BACKWARD_ARGS)             \
  OP(lstm_dropout_mask, GK_LSTM_DROPOUT_MASK_ARGS)

namespace gk::ops {
GK_LSTM_OPS(GK_DECLARE_OP)
}  // namespace gk::ops
