// Diffusion noise-schedule math (Ho et al. 2020, DDPM; Song et al. 2021, DDIM; Salimans & Ho
// 2022, v-prediction), written once for the C++ CPU kernels and the CUDA kernels.
//
// Notation: alpha_bar_t = prod_{s<=t} (1 - beta_s); a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t).
//   q_sample:        x_t = a x0 + s eps,  velocity v = a eps - s x0
//   predictions:     epsilon: x0 = (x_t - s m) / a        sample: x0 = m        v: x0 = a x_t - s m
// Every sampler step has the form  x_prev = c_x0 clip(x0) + c_eps eps + c_x x_t + sigma z,
// with per-sample coefficients from the schedule (computed in double from a float64 table that
// stores alpha_bar and 1 - alpha_bar separately, so 1 - alpha_bar keeps full precision near t=0).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/dtype.h"
#include "common/macros.h"
#include "common/philox.h"
#include "diffusion/diffusion_args.h"

namespace gk {

enum Prediction : int { kEpsilon = 0, kSample = 1, kVelocity = 2 };
enum SamplerKind : int { kDDPM = 0, kDDIM = 1 };

// Per-sample timestep: a pointer to int64 timesteps, or (pointer null) one scalar for the batch.
struct StepIndex {
  const int64_t* ptr;
  int64_t scalar;
  GK_HD int64_t at(int64_t n) const { return ptr ? ptr[n] : scalar; }
};

// table[2t] = alpha_bar_t, table[2t+1] = 1 - alpha_bar_t (float64), t in [0, T).
struct Schedule {
  const double* table;
  int64_t T;
  // Out-of-range timesteps give NaN (the host validates CPU timesteps; GPU ones are not synced).
  GK_HD void at(int64_t t, double& ac, double& om) const {
    if (t < 0 || t >= T) { ac = om = std::numeric_limits<double>::quiet_NaN(); return; }
    ac = table[2 * t];
    om = table[2 * t + 1];
  }
  // The step a sampler lands on: t_prev = -1 is "past the last step", alpha_bar = 1.
  GK_HD void at_prev(int64_t t, double& ac, double& om) const {
    if (t == -1) { ac = 1.0; om = 0.0; return; }
    at(t, ac, om);
  }
};

// x0 = p m + q x_t and eps = pe m + qe x_t for model output m under each parameterisation.
struct PredictionCoef { float p, q, pe, qe; };

template <int kPrediction>
GK_HD PredictionCoef prediction_coefficients(double ac, double om) {
  const double a = sqrt(ac), s = sqrt(om);
  if constexpr (kPrediction == kSample) return {1.f, 0.f, float(-a / s), float(1.0 / s)};
  else if constexpr (kPrediction == kVelocity) return {float(-s), float(a), float(a), float(s)};
  else return {float(-s / a), float(1.0 / a), 1.f, 0.f};  // epsilon
}

// The regression target of the training loss: eps, x0 or v.
template <int kPrediction>
GK_HD float training_target(float a, float s, float x0, float eps) {
  if constexpr (kPrediction == kEpsilon) return eps;
  else if constexpr (kPrediction == kSample) return x0;
  else return a * eps - s * x0;
}

struct StepCoef {
  PredictionCoef pred;
  float c_x0, c_eps, c_x, sigma;
};

// DDPM ancestral step t -> t-1: posterior q(x_{t-1} | x_t, x0) mean and variance (Ho et al. eq. 7).
// large_variance picks sigma^2 = beta_t instead of the posterior beta~_t. No noise at t = 0.
template <int kPrediction>
GK_HD StepCoef ddpm_coefficients(int64_t t, double ac, double om, double ac_prev, double om_prev, bool large_variance) {
  const double beta = (om - om_prev) / ac_prev;  // 1 - alpha_bar_t / alpha_bar_{t-1}, no cancellation
  const double var = large_variance ? beta : beta * om_prev / om;
  StepCoef c;
  c.pred = prediction_coefficients<kPrediction>(ac, om);
  c.c_x0 = float(sqrt(ac_prev) * beta / om);
  c.c_eps = 0.f;
  c.c_x = float(sqrt(1.0 - beta) * om_prev / om);
  c.sigma = t > 0 ? float(sqrt(var)) : 0.f;
  return c;
}

// DDIM step t -> t_prev (Song et al. eq. 12): eta = 0 deterministic, eta = 1 DDPM-like noise.
template <int kPrediction>
GK_HD StepCoef ddim_coefficients(double ac, double om, double ac_prev, double om_prev, double eta) {
  const double sigma = eta * sqrt(om_prev / om * (om - om_prev) / ac_prev);
  const double dir = om_prev - sigma * sigma;
  StepCoef c;
  c.pred = prediction_coefficients<kPrediction>(ac, om);
  c.c_x0 = float(sqrt(ac_prev));
  c.c_eps = float(sqrt(dir > 0.0 ? dir : 0.0));
  c.c_x = 0.f;
  c.sigma = float(sigma);
  return c;
}

// Clamp that lets NaN through (as torch.clamp does); clip = +inf disables it.
GK_HD float clip_value(float x, float clip) { return x > clip ? clip : (x < -clip ? -clip : x); }

// ---------------------------------------------------------------------------------------------
// Functors for the per-sample loops (common/per_sample_cpu.h, common/per_sample_cuda.cuh).
// Element k = n * D + i of every (N, D) tensor; outputs that may be absent are null pointers.
// Each is built from its op's Args (diffusion_args.h) by name; the codes that pick a formula
// (prediction, sampler kind) are template parameters, dispatched once per call.

struct ScaleShift { float a, s; };

GK_HD ScaleShift alpha_scales(const Schedule& sched, int64_t t) {
  double ac, om;
  sched.at(t, ac, om);
  return {float(sqrt(ac)), float(sqrt(om))};
}

inline StepIndex step_index(uintptr_t ptr, int64_t scalar) { return {as<const int64_t>(ptr), scalar}; }
inline Schedule schedule(uintptr_t table, int64_t T) { return {as<const double>(table), T}; }

template <typename T>
struct QSampleForward {
  const T *x0, *noise;
  T *x_t, *velocity;
  StepIndex t;
  Schedule sched;
  int64_t D;
  explicit QSampleForward(const ops::q_sample::Args& a)
      : x0(as<const T>(a.x0)), noise(as<const T>(a.noise)), x_t(as<T>(a.x_t)), velocity(as<T>(a.velocity)),
        t(step_index(a.t, a.t_scalar)), sched(schedule(a.table, a.T)), D(a.D) {}
  GK_HD ScaleShift begin(int64_t n) const { return alpha_scales(sched, t.at(n)); }
  GK_HD void apply(const ScaleShift& c, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float x = load(x0, k), e = load(noise, k);
    store(x_t, k, c.a * x + c.s * e);
    if (velocity) store(velocity, k, c.a * e - c.s * x);
  }
};

template <typename T>
struct QSampleBackward {
  const T *grad_x_t, *grad_velocity;  // either may be null (no gradient flowed)
  T *grad_x0, *grad_noise;            // either may be null (not needed)
  StepIndex t;
  Schedule sched;
  int64_t D;
  explicit QSampleBackward(const ops::q_sample_backward::Args& a)
      : grad_x_t(as<const T>(a.grad_x_t)), grad_velocity(as<const T>(a.grad_velocity)),
        grad_x0(as<T>(a.grad_x0)), grad_noise(as<T>(a.grad_noise)), t(step_index(a.t, a.t_scalar)),
        sched(schedule(a.table, a.T)), D(a.D) {}
  GK_HD ScaleShift begin(int64_t n) const { return alpha_scales(sched, t.at(n)); }
  GK_HD void apply(const ScaleShift& c, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float gx = grad_x_t ? load(grad_x_t, k) : 0.f, gv = grad_velocity ? load(grad_velocity, k) : 0.f;
    if (grad_x0) store(grad_x0, k, c.a * gx - c.s * gv);
    if (grad_noise) store(grad_noise, k, c.s * gx + c.a * gv);
  }
};

// Per-sample sum of squared errors between the model output and the training target.
template <typename T, int kPrediction>
struct DiffusionSSE {
  const T *model_output, *x0, *noise;
  StepIndex t;
  Schedule sched;
  int64_t D;
  explicit DiffusionSSE(const ops::diffusion_sse::Args& a)
      : model_output(as<const T>(a.model_output)), x0(as<const T>(a.x0)), noise(as<const T>(a.noise)),
        t(step_index(a.t, a.t_scalar)), sched(schedule(a.table, a.T)), D(a.D) {}
  GK_HD ScaleShift begin(int64_t n) const { return alpha_scales(sched, t.at(n)); }
  GK_HD float term(const ScaleShift& c, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float d = load(model_output, k) - training_target<kPrediction>(c.a, c.s, load(x0, k), load(noise, k));
    return d * d;
  }
};

struct ScaledScales { float a, s, scale; };

template <typename T, int kPrediction>
struct DiffusionSSEBackward {
  const float* grad_sse;  // (N,) upstream gradient of each sample's SSE
  const T *model_output, *x0, *noise;
  T *grad_output, *grad_x0, *grad_noise;
  StepIndex t;
  Schedule sched;
  int64_t D;
  explicit DiffusionSSEBackward(const ops::diffusion_sse_backward::Args& a)
      : grad_sse(as<const float>(a.grad_sse)), model_output(as<const T>(a.model_output)), x0(as<const T>(a.x0)),
        noise(as<const T>(a.noise)), grad_output(as<T>(a.grad_output)), grad_x0(as<T>(a.grad_x0)),
        grad_noise(as<T>(a.grad_noise)), t(step_index(a.t, a.t_scalar)), sched(schedule(a.table, a.T)), D(a.D) {}
  GK_HD ScaledScales begin(int64_t n) const {
    const ScaleShift c = alpha_scales(sched, t.at(n));
    return {c.a, c.s, 2.f * grad_sse[n]};
  }
  GK_HD void apply(const ScaledScales& c, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float x = load(x0, k), e = load(noise, k);
    const float g = c.scale * (load(model_output, k) - training_target<kPrediction>(c.a, c.s, x, e));
    if (grad_output) store(grad_output, k, g);
    // d target / d x0 and d target / d eps per parameterisation
    if constexpr (kPrediction == kEpsilon) {
      if (grad_x0) store(grad_x0, k, 0.f);
      if (grad_noise) store(grad_noise, k, -g);
    } else if constexpr (kPrediction == kSample) {
      if (grad_x0) store(grad_x0, k, -g);
      if (grad_noise) store(grad_noise, k, 0.f);
    } else {
      if (grad_x0) store(grad_x0, k, c.s * g);
      if (grad_noise) store(grad_noise, k, -c.a * g);
    }
  }
};

// Per-call sampler parameters, from sampler_step::Args or sampler_step_backward::Args (the
// backward draws no noise: seed and offset 0).
struct SamplerParams {
  StepIndex t, t_prev;  // t_prev used by DDIM only
  Schedule sched;
  float guidance;       // classifier-free guidance scale w (used when an unconditional output is given)
  float clip;           // |x0| clip, +inf for none
  double eta;           // DDIM noise scale (kept in double: sigma is computed in double from it)
  bool large_variance;  // DDPM sigma^2 = beta_t
  uint64_t seed, offset;
  template <class Args>
  SamplerParams(const Args& a, uint64_t seed_, uint64_t offset_)
      : t(step_index(a.t, a.t_scalar)), t_prev(step_index(a.t_prev, a.t_prev_scalar)), sched(schedule(a.table, a.T)),
        guidance(float(a.guidance)), clip(float(a.clip)), eta(a.eta), large_variance(a.large_variance),
        seed(seed_), offset(offset_) {}
};

template <int kKind, int kPrediction>
GK_HD StepCoef step_coefficients(const SamplerParams& p, int64_t n) {
  const int64_t t = p.t.at(n);
  double ac, om, ac_prev, om_prev;
  p.sched.at(t, ac, om);
  if constexpr (kKind == kDDPM) {
    p.sched.at_prev(t - 1, ac_prev, om_prev);
    return ddpm_coefficients<kPrediction>(t, ac, om, ac_prev, om_prev, p.large_variance);
  } else {
    p.sched.at_prev(p.t_prev.at(n), ac_prev, om_prev);
    return ddim_coefficients<kPrediction>(ac, om, ac_prev, om_prev, p.eta);
  }
}

// m = u + w (c - u) when an unconditional output u is given (classifier-free guidance).
template <typename T>
GK_HD float guided_output(const T* cond, const T* uncond, float w, int64_t k) {
  const float c = load(cond, k);
  if (!uncond) return c;
  const float u = load(uncond, k);
  return u + w * (c - u);
}

struct StepState {
  StepCoef c;
  NormalStream rng;
};

template <typename T, int kKind, int kPrediction>
struct SamplerStepForward {
  const T *model_output, *model_output_uncond, *x_t;
  T* out;
  SamplerParams p;
  int64_t D;
  explicit SamplerStepForward(const ops::sampler_step::Args& a)
      : model_output(as<const T>(a.model_output)), model_output_uncond(as<const T>(a.model_output_uncond)),
        x_t(as<const T>(a.x_t)), out(as<T>(a.out)), p(a, a.seed, a.offset), D(a.D) {}
  GK_HD StepState begin(int64_t n) const {
    return {step_coefficients<kKind, kPrediction>(p, n), NormalStream(p.seed, p.offset, n)};
  }
  GK_HD void apply(StepState& st, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const StepCoef& c = st.c;
    const float m = guided_output(model_output, model_output_uncond, p.guidance, k), x = load(x_t, k);
    float y = c.c_x0 * clip_value(c.pred.p * m + c.pred.q * x, p.clip) + c.c_x * x;
    if constexpr (kKind == kDDIM) {  // DDPM's c_eps is always 0
      if (c.c_eps != 0.f) y += c.c_eps * (c.pred.pe * m + c.pred.qe * x);
    }
    if (c.sigma != 0.f) y += c.sigma * st.rng.at(static_cast<uint64_t>(i));
    store(out, k, y);
  }
};

template <typename T, int kKind, int kPrediction>
struct SamplerStepBackward {
  const T *grad, *model_output, *model_output_uncond, *x_t;
  T *grad_output, *grad_output_uncond, *grad_x_t;  // grad_output_uncond / grad_x_t may be null
  SamplerParams p;
  int64_t D;
  explicit SamplerStepBackward(const ops::sampler_step_backward::Args& a)
      : grad(as<const T>(a.grad)), model_output(as<const T>(a.model_output)),
        model_output_uncond(as<const T>(a.model_output_uncond)), x_t(as<const T>(a.x_t)),
        grad_output(as<T>(a.grad_output)), grad_output_uncond(as<T>(a.grad_output_uncond)),
        grad_x_t(as<T>(a.grad_x_t)), p(a, 0, 0), D(a.D) {}
  GK_HD StepCoef begin(int64_t n) const { return step_coefficients<kKind, kPrediction>(p, n); }
  GK_HD void apply(const StepCoef& c, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float g = load(grad, k), m = guided_output(model_output, model_output_uncond, p.guidance, k);
    const float x = load(x_t, k), x0 = c.pred.p * m + c.pred.q * x;
    const bool inside = p.clip == std::numeric_limits<float>::infinity() || (x0 >= -p.clip && x0 <= p.clip);  // torch.clamp's rule
    const float g_x0 = inside ? c.c_x0 * g : 0.f, g_eps = c.c_eps * g;
    const float g_m = c.pred.p * g_x0 + c.pred.pe * g_eps;
    if (grad_x_t) store(grad_x_t, k, c.c_x * g + c.pred.q * g_x0 + c.pred.qe * g_eps);
    if (model_output_uncond) {
      store(grad_output, k, p.guidance * g_m);
      if (grad_output_uncond) store(grad_output_uncond, k, (1.f - p.guidance) * g_m);
    } else {
      store(grad_output, k, g_m);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", the multistep second-order data-prediction
// solver; diffusers' DPMSolverMultistepScheduler, algorithm_type="dpmsolver++",
// solver_type="midpoint", solver_order=2). alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar),
// lambda = log(alpha / sigma). From step s (now) to step t (next), h = lambda_t - lambda_s:
//   first order:   x_t = sigma_t / sigma_s x_s + alpha_t (1 - e^{-h}) D0
//   second order:  x_t = sigma_t / sigma_s x_s + alpha_t (1 - e^{-h}) (D0 + (D0 - D_last) / (2 r)),
//                  r = h_last / h, h_last = lambda_s - lambda_last
// with D0 the x0 predicted now and D_last the x0 predicted at the previous call (step t_last).
// The step to the clean sample (t = -1: sigma_t = 0, h = +inf) is first order and returns x0
// exactly (diffusers' final_sigmas_type="zero" with lower-order final step).
struct DpmCoef { PredictionCoef pred; float c_x, c_x0, c_last; };

template <int kPrediction>
GK_HD DpmCoef dpm_solver_coefficients(double ac, double om, double ac_t, double om_t, bool second, double ac_l,
                                      double om_l) {
  DpmCoef c;
  c.pred = prediction_coefficients<kPrediction>(ac, om);
  if (om_t == 0.0) {  // to the clean sample
    c.c_x = 0.f;
    c.c_x0 = float(sqrt(ac_t));  // 1 (NaN stays NaN)
    c.c_last = 0.f;
    return c;
  }
  const double lam_s = 0.5 * (log(ac) - log(om)), lam_t = 0.5 * (log(ac_t) - log(om_t));
  const double h = lam_t - lam_s;
  const double c0 = sqrt(ac_t) * -expm1(-h);  // alpha_t (1 - e^{-h}), accurate for small h
  c.c_x = float(sqrt(om_t / om));
  if (second) {
    const double h_last = lam_s - 0.5 * (log(ac_l) - log(om_l));
    const double half_inv_r = 0.5 * h / h_last;
    c.c_x0 = float(c0 * (1.0 + half_inv_r));
    c.c_last = float(-c0 * half_inv_r);
  } else {
    c.c_x0 = float(c0);
    c.c_last = 0.f;
  }
  return c;
}

template <typename T, int kPrediction>
struct DpmSolverStepForward {
  const T *model_output, *model_output_uncond, *x_t, *x0_prev;  // x0_prev null: first order
  T *out, *x0_out;                                               // x0_out may be null
  StepIndex t, t_prev, t_last;
  Schedule sched;
  float guidance, clip;
  int64_t D;
  explicit DpmSolverStepForward(const ops::dpm_solver_step::Args& a)
      : model_output(as<const T>(a.model_output)), model_output_uncond(as<const T>(a.model_output_uncond)),
        x_t(as<const T>(a.x_t)), x0_prev(as<const T>(a.x0_prev)), out(as<T>(a.out)), x0_out(as<T>(a.x0_out)),
        t(step_index(a.t, a.t_scalar)), t_prev(step_index(a.t_prev, a.t_prev_scalar)),
        t_last(step_index(a.t_last, a.t_last_scalar)), sched(schedule(a.table, a.T)), guidance(float(a.guidance)),
        clip(float(a.clip)), D(a.D) {}
  GK_HD DpmCoef begin(int64_t n) const {
    double ac, om, ac_t, om_t, ac_l = 0.0, om_l = 1.0;
    sched.at(t.at(n), ac, om);
    sched.at_prev(t_prev.at(n), ac_t, om_t);
    if (x0_prev) sched.at(t_last.at(n), ac_l, om_l);
    return dpm_solver_coefficients<kPrediction>(ac, om, ac_t, om_t, x0_prev != nullptr, ac_l, om_l);
  }
  GK_HD void apply(const DpmCoef& c, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float m = guided_output(model_output, model_output_uncond, guidance, k), x = load(x_t, k);
    const float x0 = clip_value(c.pred.p * m + c.pred.q * x, clip);
    float y = c.c_x * x + c.c_x0 * x0;
    if (x0_prev) y += c.c_last * load(x0_prev, k);
    store(out, k, y);
    if (x0_out) store(x0_out, k, x0);
  }
};

// ---------------------------------------------------------------------------------------------
// Euler and Euler-ancestral steps in sigma space (Karras et al. 2022; k-diffusion sample_euler /
// sample_euler_ancestral). sigma = sqrt((1 - alpha_bar) / alpha_bar), x = x0 + sigma eps (the VP
// sample times sqrt(1 + sigma^2)); the model saw x / sqrt(1 + sigma^2). denoised = p m + q x:
//   epsilon: x - sigma m        sample: m        v: x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) m
// d = (x - denoised) / sigma; Euler: x_next = x + d (sigma_next - sigma). Ancestral (eta > 0):
// sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)),
// sigma_down = sqrt(sigma_next^2 - sigma_up^2), x_next = x + d (sigma_down - sigma) + sigma_up z.
// Written as x_next = r x + (1 - r) denoised + sigma_up z with r = sigma_down / sigma.
struct EulerCoef { float p, q, c_x, c_den, sigma_up; };

template <int kPrediction>
GK_HD EulerCoef euler_coefficients(double sigma, double sigma_next, double eta) {
  EulerCoef c;
  if constexpr (kPrediction == kSample) {
    c.p = 1.f; c.q = 0.f;
  } else if constexpr (kPrediction == kVelocity) {
    const double w = 1.0 / (1.0 + sigma * sigma);
    c.p = float(-sigma * sqrt(w)); c.q = float(w);
  } else {
    c.p = float(-sigma); c.q = 1.f;
  }
  double up = 0.0, down = sigma_next;
  if (eta > 0.0 && sigma_next > 0.0) {
    up = eta * sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma));
    if (up > sigma_next) up = sigma_next;
    down = sqrt(sigma_next * sigma_next - up * up);
  }
  const double r = down / sigma;
  c.c_x = float(r);
  c.c_den = float(1.0 - r);
  c.sigma_up = float(up);
  return c;
}

template <typename T, int kPrediction>
struct EulerStepForward {
  const T *model_output, *model_output_uncond, *x;
  T* out;
  EulerCoef c;
  float guidance, clip;
  uint64_t seed, offset;
  int64_t D;
  explicit EulerStepForward(const ops::euler_step::Args& a)
      : model_output(as<const T>(a.model_output)), model_output_uncond(as<const T>(a.model_output_uncond)),
        x(as<const T>(a.x)), out(as<T>(a.out)), c(euler_coefficients<kPrediction>(a.sigma, a.sigma_next, a.eta)),
        guidance(float(a.guidance)), clip(float(a.clip)), seed(a.seed), offset(a.offset), D(a.D) {}
  GK_HD NormalStream begin(int64_t n) const { return NormalStream(seed, offset, n); }
  GK_HD void apply(NormalStream& rng, int64_t n, int64_t i) const {
    const int64_t k = n * D + i;
    const float m = guided_output(model_output, model_output_uncond, guidance, k), xv = load(x, k);
    const float den = clip_value(c.p * m + c.q * xv, clip);
    float y = c.c_x * xv + c.c_den * den;
    if (c.sigma_up != 0.f) y += c.sigma_up * rng.at(static_cast<uint64_t>(i));
    store(out, k, y);
  }
};

}  // namespace gk
