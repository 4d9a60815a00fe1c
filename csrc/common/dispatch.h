// Runtime codes -> compile-time template arguments (the dtype switch is GK_DISPATCH_DTYPE in
// common/dtype.h). A code that picks a formula per element becomes a template parameter of the
// functor, so the kernels carry no per-element switch and each variant is compiled on its own.
#pragma once
#include <stdexcept>
#include <string>
#include <type_traits>

namespace gk {

// Calls body(std::integral_constant<int, code>{}) for the one code among Codes equal to `code`;
// any other code throws std::invalid_argument("<op>: <name> must be <expected>, got <code>").
template <int... Codes, class Body>
void dispatch_code(int code, const char* op, const char* name, const char* expected, Body&& body) {
  const bool found = ((code == Codes && (body(std::integral_constant<int, Codes>{}), true)) || ...);
  if (!found)
    throw std::invalid_argument(std::string(op) + ": " + name + " must be " + expected + ", got " + std::to_string(code));
}

}  // namespace gk
