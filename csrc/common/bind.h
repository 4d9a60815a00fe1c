// Python side of common/entry.h: one module function per op, keyword arguments only, named as the
// op's Args fields (CUDA entry points add `device` and `stream`). Included only by the bindings
// files; GK_BIND_CPU / GK_BIND_CUDA expand inside PYBIND11_MODULE(..., m).
//
// The functions are plain METH_FASTCALL | METH_KEYWORDS builtins rather than pybind11 functions
// with py::arg: a keyword call then costs about what a positional pybind11 call did (pybind11 looks
// every keyword up by a freshly built string, which doubled the launch cost of a 21-argument op),
// and sampler steps call these once per step on tiny tensors.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/entry.h"

namespace gk::bind {

inline PyObject* type_error(const char* op, const char* name, const char* expected, PyObject* got) {
  PyErr_Format(PyExc_TypeError, "%s(): argument '%s' must be %s, got %s", op, name, expected, Py_TYPE(got)->tp_name);
  return nullptr;
}

// Python value -> field type; false (with a Python error set) when it does not fit.
template <class T>
bool load(PyObject* value, T& out, const char* op, const char* name) {
  if constexpr (std::is_same_v<T, bool>) {
    if (value != Py_True && value != Py_False) return type_error(op, name, "a bool", value);
    out = value == Py_True;
  } else if constexpr (std::is_floating_point_v<T>) {
    if (PyFloat_Check(value)) {
      out = static_cast<T>(PyFloat_AS_DOUBLE(value));
    } else if (PyLong_Check(value)) {
      const double v = PyLong_AsDouble(value);
      if (v == -1.0 && PyErr_Occurred()) return false;
      out = static_cast<T>(v);
    } else {
      return type_error(op, name, "a float", value);
    }
  } else {
    static_assert(std::is_integral_v<T>, "kernel arguments are integers, floats or bools");
    if (!PyLong_Check(value)) return type_error(op, name, "an int", value);
    bool fits;
    if constexpr (std::is_signed_v<T>) {
      const long long v = PyLong_AsLongLong(value);
      fits = !(v == -1 && PyErr_Occurred()) && v >= std::numeric_limits<T>::min() && v <= std::numeric_limits<T>::max();
      out = static_cast<T>(v);
    } else {
      const unsigned long long v = PyLong_AsUnsignedLongLong(value);
      fits = !(v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) && v <= std::numeric_limits<T>::max();
      out = static_cast<T>(v);
    }
    if (!fits) {
      PyErr_Clear();
      PyErr_Format(PyExc_OverflowError, "%s(): argument '%s' is out of range for a %s%d-bit integer", op, name,
                   std::is_signed_v<T> ? "signed " : "unsigned ", int(8 * sizeof(T)));
      return false;
    }
  }
  return true;
}

// Interned names, made once per op: keywords written in Python source are interned too, so a
// match is usually a pointer comparison.
inline PyObject** intern(const char* const* names, size_t count) {
  PyObject** keys = new PyObject*[count];  // lives as long as the module
  for (size_t i = 0; i < count; ++i) keys[i] = PyUnicode_InternFromString(names[i]);
  return keys;
}

// Puts the keyword values of a vectorcall into values[] in field order; false (TypeError set) for a
// positional, unknown or missing argument.
inline bool collect(const char* op, const char* const* names, PyObject* const* keys, size_t count,
                    PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, PyObject** values) {
  if (nargs != 0) {
    PyErr_Format(PyExc_TypeError, "%s() takes keyword arguments only (%s=..., ...), got %zd positional", op,
                 names[0], nargs);
    return false;
  }
  for (size_t i = 0; i < count; ++i) values[i] = nullptr;
  const Py_ssize_t given = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t j = 0; j < given; ++j) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, j);
    size_t i = static_cast<size_t>(j) < count && keys[j] == key ? static_cast<size_t>(j) : count;
    for (size_t k = 0; i == count && k < count; ++k)
      if (keys[k] == key) i = k;
    for (size_t k = 0; i == count && k < count; ++k)
      if (PyUnicode_Compare(keys[k], key) == 0) i = k;
    if (i == count) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", op, key);
      return false;
    }
    values[i] = args[j];
  }
  for (size_t i = 0; i < count; ++i) {
    if (!values[i]) {
      PyErr_Format(PyExc_TypeError, "%s() missing keyword argument '%s'", op, names[i]);
      return false;
    }
  }
  return true;
}

// Runs the entry point, turning its C++ exceptions into Python ones as pybind11 would.
template <class Body>
PyObject* call(Body&& body) {
  try {
    body();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

using FastFunction = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);

// Adds `function` to module m as `name`, with a text signature so inspect.signature and help()
// show the keyword names.
inline void add(pybind11::module_& m, const char* name, const char* const* names, size_t count, FastFunction function) {
  std::string doc = std::string(name) + "($module, /, *";
  for (size_t i = 0; i < count; ++i) doc += std::string(", ") + names[i];
  doc += ")\n--\n\nKernel entry point: keyword arguments only (see csrc/common/entry.h).";
  auto* def = new PyMethodDef{name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(function)),
                              METH_FASTCALL | METH_KEYWORDS, (new std::string(std::move(doc)))->c_str()};
  PyObject* module_name = PyModule_GetNameObject(m.ptr());
  if (!module_name) throw pybind11::error_already_set();
  PyObject* object = PyCFunction_NewEx(def, m.ptr(), module_name);
  Py_DECREF(module_name);
  if (!object) throw pybind11::error_already_set();
  m.add_object(name, pybind11::reinterpret_steal<pybind11::object>(object));
}

}  // namespace gk::bind

#define GK_ARG_NAME(type, name) #name,
#define GK_ARG_LOAD(type, name) ok = ok && ::gk::bind::load(*value++, args.name, op, #name);

// The lambdas use only static locals of their block, so they convert to plain function pointers.
#define GK_BIND_ENTRY(NAME, ARGS, EXTRA_NAMES, EXTRA_LOAD, RUN)                                          \
  {                                                                                                       \
    static const char* const names[] = {ARGS(GK_ARG_NAME) EXTRA_NAMES};                                   \
    static constexpr size_t count = sizeof(names) / sizeof(names[0]);                                     \
    ::gk::bind::add(m, #NAME, names, count,                                                               \
                    [](PyObject*, PyObject* const* argv, Py_ssize_t nargs, PyObject* kwnames) -> PyObject* { \
                      static const char* const op = #NAME;                                                \
                      static PyObject* const* keys = ::gk::bind::intern(names, count);                    \
                      PyObject* values[count];                                                            \
                      if (!::gk::bind::collect(op, names, keys, count, argv, nargs, kwnames, values))     \
                        return nullptr;                                                                   \
                      ::gk::ops::NAME::Args args{};                                                       \
                      PyObject* const* value = values;                                                    \
                      bool ok = true;                                                                     \
                      ARGS(GK_ARG_LOAD)                                                                   \
                      EXTRA_LOAD                                                                          \
                      if (!ok) return nullptr;                                                            \
                      return ::gk::bind::call([&] { RUN; });                                              \
                    });                                                                                   \
  }

#define GK_BIND_CPU(NAME, ARGS) GK_BIND_ENTRY(NAME, ARGS, , , ::gk::ops::NAME::run_cpu(args))

#define GK_BIND_CUDA(NAME, ARGS)                                                                  \
  GK_BIND_ENTRY(NAME, ARGS, "device" GK_COMMA "stream",                                           \
                int device = 0; uintptr_t stream = 0;                                             \
                ok = ok && ::gk::bind::load(*value++, device, op, "device");                      \
                ok = ok && ::gk::bind::load(*value++, stream, op, "stream");,                     \
                ::gk::ops::NAME::run_cuda(args, device, stream))
#define GK_COMMA ,
