// Host bodies of the LSTM cell ops, one `run` per op (entry points per common/entry.h, arguments in
// lstm_args.h): each builds the row functor (lstm_math.h) for the runtime dtype and dropout flag
// and hands it to LstmLoops<Exec>::rows, one batch row per work unit: an OpenMP loop over rows in
// lstm_cpu.cpp, one CUDA block per row on the given stream in lstm_cuda.cu.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/dtype.h"
#include "lstm/lstm_args.h"
#include "lstm/lstm_math.h"

namespace gk {

template <class Exec>
struct LstmLoops;  // static void rows(const Exec&, const Op&, int64_t B, int64_t H, const char* name)

inline void lstm_check(int64_t B, int64_t H, double p, const char* op) {
  if (B < 0 || H < 0)
    throw std::invalid_argument(std::string(op) + ": B and H must be >= 0, got B=" + std::to_string(B) +
                                ", H=" + std::to_string(H));
  if (!(p >= 0.0 && p < 1.0)) throw std::invalid_argument(std::string(op) + ": p must be in [0, 1), got " + std::to_string(p));
}

template <class Body>
void lstm_dispatch_drop(bool drop, Body&& body) {
  if (drop)
    body(std::true_type{});
  else
    body(std::false_type{});
}

namespace ops::lstm_cell {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  lstm_check(a.B, a.H, a.p, "lstm_cell");
  if (a.B * a.H == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "lstm_cell", [&] {
    lstm_dispatch_drop(a.h_rec != 0, [&](auto drop) {
      LstmLoops<Exec>::rows(exec, LstmCellForward<scalar_t, decltype(drop)::value>(a), a.B, a.H, "lstm_cell");
    });
  });
}
}  // namespace ops::lstm_cell

namespace ops::lstm_cell_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  lstm_check(a.B, a.H, a.p, "lstm_cell_backward");
  if (a.B * a.H == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "lstm_cell_backward", [&] {
    lstm_dispatch_drop(a.grad_h_rec != 0, [&](auto drop) {
      LstmLoops<Exec>::rows(exec, LstmCellBackward<scalar_t, decltype(drop)::value>(a), a.B, a.H,
                            "lstm_cell_backward");
    });
  });
}
}  // namespace ops::lstm_cell_backward

namespace ops::ln_lstm_cell {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  lstm_check(a.B, a.H, a.p, "ln_lstm_cell");
  if (a.B * a.H == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "ln_lstm_cell", [&] {
    lstm_dispatch_drop(a.h_rec != 0, [&](auto drop) {
      LstmLoops<Exec>::rows(exec, LnLstmCellForward<scalar_t, decltype(drop)::value>(a), a.B, a.H, "ln_lstm_cell");
    });
  });
}
}  // namespace ops::ln_lstm_cell

namespace ops::ln_lstm_cell_backward {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  lstm_check(a.B, a.H, a.p, "ln_lstm_cell_backward");
  if (a.B * a.H == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "ln_lstm_cell_backward", [&] {
    lstm_dispatch_drop(a.grad_h_rec != 0, [&](auto drop) {
      LstmLoops<Exec>::rows(exec, LnLstmCellBackward<scalar_t, decltype(drop)::value>(a), a.B, a.H,
                            "ln_lstm_cell_backward");
    });
  });
}
}  // namespace ops::ln_lstm_cell_backward

namespace ops::lstm_dropout_mask {
template <class Exec>
void run(const Exec& exec, const Args& a) {
  lstm_check(a.B, a.H, a.p, "lstm_dropout_mask");
  if (a.B * a.H == 0) return;
  GK_DISPATCH_DTYPE(a.dtype, "lstm_dropout_mask", [&] {
    LstmLoops<Exec>::rows(exec, LstmDropoutMask<scalar_t>(a), a.B, a.H, "lstm_dropout_mask");
  });
}
}  // namespace ops::lstm_dropout_mask

}  // namespace gk
