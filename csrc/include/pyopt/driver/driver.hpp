#pragma once
// The one driver every rule runs through. It owns what rules should never think about:
// per-step scalars computed once per tensor, the shared policies (maximize, weight decay) applied
// before the rule sees an element, the split of all tensors of a step into balanced contiguous
// chunks over one OpenMP parallel region, and the per-element loop that loads each slot once,
// calls the rule, and stores it once.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pyopt/config.hpp"
#include "pyopt/driver/tiles.hpp"
#include "pyopt/rules/base.hpp"
#include "pyopt/types.hpp"

PYOPT_KERNEL_NAMESPACE_BEGIN
namespace driver {

// Below this many elements in a whole step, one thread is faster than waking the team.
constexpr int64_t kSerialThreshold = int64_t(1) << 15;
// Chunk boundaries are multiples of 16 elements (64 bytes of float32): threads do not share lines.
constexpr int64_t kChunkAlign = 16;
// Rules with per-tensor reductions (norms) sum each block of this many elements in kReduceLanes
// fixed lanes, then the blocks of a tensor in order: a sum never depends on the thread count, the
// chunking or the vector width, so every ISA path and thread count gives the same bits.
constexpr int64_t kReduceBlock = 4096;
constexpr int kReduceLanes = 16;

// The gradient as the rule sees it: clipped by value, then scaled (see TensorArgs).
template <class T>
PYOPT_INLINE T clipped_grad(T g, T clip, T scale) {
  g = g < -clip ? -clip : g;  // NaN compares false: it stays NaN, as torch.clamp keeps it
  g = g > clip ? clip : g;
  return g * scale;
}

// ---- Shared policies (rules/base.hpp: maximize_policy, decay_policy) ----

// A rule's own variants (its flag combinations) are at most this many: a larger table is a mistake.
constexpr int kMaxRuleVariants = 64;

// The weight-decay part of a kernel: kernel V = rule variant + Rule::num_variants · decay step.
enum DecayStep { kNoDecay = 0, kCoupledDecay = 1, kDecoupledDecay = 2, kNumDecaySteps = 3 };

// Only the decay steps a policy can pick get a kernel.
constexpr bool decay_step_used(rules::Decay policy, int step) {
  switch (policy) {
    case rules::Decay::None: return step == kNoDecay;
    case rules::Decay::Coupled: return step != kDecoupledDecay;
    case rules::Decay::Decoupled: return step != kCoupledDecay;
    default: return true;
  }
}

template <class Rule, class = void>
struct has_maximize : std::false_type {};
template <class Rule>
struct has_maximize<Rule, std::void_t<decltype(Rule::maximize)>> : std::true_type {};
template <class Rule, class = void>
struct has_fixed_decay : std::false_type {};
template <class Rule>
struct has_fixed_decay<Rule, std::void_t<decltype(Rule::fixed_decay)>> : std::true_type {};

template <class Rule, class = void>
struct has_cautious : std::false_type {};
template <class Rule>
struct has_cautious<Rule, std::void_t<decltype(Rule::cautious)>> : std::true_type {};

template <class Rule>
constexpr void check_rule_table() {
  static_assert(has_cautious<Rule>::value == Rule::cautious_policy,
                "a rule with a `cautious` hyperparameter declares cautious_policy = true (the driver applies it)");
  static_assert(Rule::num_variants > 0 && Rule::num_variants <= kMaxRuleVariants,
                "a rule's variant table must have between 1 and kMaxRuleVariants entries");
  static_assert(has_maximize<Rule>::value == Rule::maximize_policy,
                "a rule with a `maximize` hyperparameter declares maximize_policy = true (the driver applies it)");
  static_assert(Rule::num_reductions == 0 || Rule::decay_policy == rules::Decay::None,
                "the reduction pass cannot change p: a rule with reductions applies its own weight decay");
}

// The policies' per-step scalars, computed in double and rounded to T as the rules computed them.
template <class T>
struct Policies {
  T grad_sign, weight_decay, decay;
};

template <class Rule, class T>
Policies<T> prepare_policies(const double* h, int& decay_step) {
  using rules::Decay;
  constexpr Decay policy = Rule::decay_policy;
  Policies<T> k{T(1), T(0), T(1)};
  if constexpr (Rule::maximize_policy) k.grad_sign = T(h[Rule::maximize] != 0.0 ? -1.0 : 1.0);
  decay_step = kNoDecay;
  if constexpr (policy != Decay::None) {
    const double wd = h[Rule::weight_decay];
    if (!(wd != 0.0)) return k;
    bool decoupled = policy == Decay::Decoupled;
    if constexpr (policy == Decay::TorchFlag) decoupled = h[Rule::decoupled_weight_decay] != 0.0;
    if constexpr (policy == Decay::WeightDecouple) decoupled = h[Rule::weight_decouple] != 0.0;
    decay_step = decoupled ? kDecoupledDecay : kCoupledDecay;
    k.weight_decay = T(wd);
    if constexpr (policy == Decay::WeightDecouple) {
      bool fixed = false;
      if constexpr (has_fixed_decay<Rule>::value) fixed = h[Rule::fixed_decay] != 0.0;
      k.decay = T(1.0 - wd * (fixed ? 1.0 : h[Rule::lr]));
    } else {
      k.decay = T(1.0 - h[Rule::lr] * wd);
    }
  }
  return k;
}

// maximize (a multiply by ±1, so a NaN keeps its bits), then decoupled, then coupled decay.
template <class Rule, int Step, class T>
PYOPT_INLINE void apply_policies(const Policies<T>& k, T& p, T& g) {
  if constexpr (Rule::maximize_policy) g = g * k.grad_sign;
  if constexpr (Step == kDecoupledDecay) p = p * k.decay;             // p.mul_(1 − lr·wd)
  if constexpr (Step == kCoupledDecay) g = rules::fmadd(k.weight_decay, p, g);  // grad.add(p, alpha=wd)
}

// The rule's variant for these hyperparameters; one outside its table is a bug in the rule, reported
// before any element (or scalar state) is touched, instead of a silently skipped update.
template <class Rule>
int checked_variant(const double* h) {
  const int v = Rule::variant(h);
  if (v < 0 || v >= Rule::num_variants)
    throw std::logic_error(std::string("rule ") + Rule::name + ": variant() returned " + std::to_string(v) +
                           ", outside its table [0, " + std::to_string(Rule::num_variants) + ")");
  return v;
}

// ---- Element loops ----

// One out-of-line body per kernel, shared by the float32 arrays and the 16-bit tiles (inlined into
// both callers it would double the kernels' code and compile time).
#if defined(__GNUC__) || defined(__clang__)
#define PYOPT_KERNEL_BODY __attribute__((noinline))
#else
#define PYOPT_KERNEL_BODY
#endif

// How update_range reads and writes its arrays: Plain = every array in the step's dtype (the one
// layout of most kernels); the others are the bfloat16 layouts some rules fuse into their loop
// (Rule::fused_bfloat16) instead of going through tiles: a bfloat16 param (and grad), a float32
// master beside a bfloat16 param, bfloat16 states. Same bits as the tiles: convert, step, round.
enum class Layout { Plain, Bf16Param, MasterBf16Param, Bf16States, Bf16ParamStates, MasterBf16ParamStates };
constexpr int kNumLayouts = 6;
constexpr bool bf16_param(Layout l) { return l == Layout::Bf16Param || l == Layout::Bf16ParamStates; }
constexpr bool has_master(Layout l) { return l == Layout::MasterBf16Param || l == Layout::MasterBf16ParamStates; }
constexpr bool bf16_states(Layout l) {
  return l == Layout::Bf16States || l == Layout::Bf16ParamStates || l == Layout::MasterBf16ParamStates;
}
constexpr bool bf16_grad(Layout l) { return bf16_param(l) || has_master(l); }

PYOPT_INLINE float widen(uint16_t bf16) { return storage::bf16_to_float(bf16); }
template <class T>
PYOPT_INLINE T widen(T x) { return x; }
template <class Stored, class T>
PYOPT_INLINE Stored narrow(T x) {
  if constexpr (std::is_same<Stored, uint16_t>::value)
    return storage::float_to_bf16(x);
  else
    return x;
}

template <class Rule, int V, class T, Layout L = Layout::Plain>
PYOPT_KERNEL_BODY void update_range(const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                    const Policies<T>& policies, int64_t begin, int64_t end) {
  constexpr int rule_variant = V % Rule::num_variants, decay_step = V / Rule::num_variants;
  constexpr unsigned mask = Rule::slot_mask(rule_variant);
  using P = std::conditional_t<bf16_param(L), uint16_t, T>;
  using G = std::conditional_t<bf16_grad(L), uint16_t, T>;
  using S = std::conditional_t<bf16_states(L), uint16_t, T>;
  P* __restrict p = static_cast<P*>(has_master(L) ? static_cast<void*>(a.master) : a.param);
  uint16_t* __restrict rounded = static_cast<uint16_t*>(has_master(L) ? a.param : nullptr);
  const G* __restrict g = static_cast<const G*>(a.grad);
  S* __restrict s0 = static_cast<S*>(a.slots[0]);
  S* __restrict s1 = static_cast<S*>(a.slots[1]);
  S* __restrict s2 = static_cast<S*>(a.slots[2]);
  S* __restrict s3 = static_cast<S*>(a.slots[3]);
  S* __restrict s4 = static_cast<S*>(a.slots[4]);
  const T clip = T(a.grad_clip), scale = T(a.grad_scale);
  const Policies<T> pol = policies;
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) {
    T s[kMaxSlots] = {};
    if constexpr (mask & 1u) s[0] = widen(s0[i]);
    if constexpr (mask & 2u) s[1] = widen(s1[i]);
    if constexpr (mask & 4u) s[2] = widen(s2[i]);
    if constexpr (mask & 8u) s[3] = widen(s3[i]);
    if constexpr (mask & 16u) s[4] = widen(s4[i]);
    T param = widen(p[i]);
    T grad = clipped_grad(T(widen(g[i])), clip, scale);
    apply_policies<Rule, decay_step>(pol, param, grad);
    Rule::template update<rule_variant>(k, param, grad, s);
    p[i] = narrow<P>(param);
    if constexpr (has_master(L)) rounded[i] = narrow<uint16_t>(param);
    if constexpr (mask & 1u) s0[i] = narrow<S>(s[0]);
    if constexpr (mask & 2u) s1[i] = narrow<S>(s[1]);
    if constexpr (mask & 4u) s2[i] = narrow<S>(s[2]);
    if constexpr (mask & 8u) s3[i] = narrow<S>(s[3]);
    if constexpr (mask & 16u) s4[i] = narrow<S>(s[4]);
  }
}

// Every kernel variant: the rule's variants times the decay steps its policy can pick.
template <class Rule>
using KernelVariants = std::make_integer_sequence<int, Rule::num_variants * kNumDecaySteps>;
template <class Rule, int V>
constexpr bool kernel_exists = decay_step_used(Rule::decay_policy, V / Rule::num_variants);

template <class Rule, class T, Layout L = Layout::Plain, int... Vs>
PYOPT_INLINE void update_variant(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                 const Policies<T>& policies, int64_t begin, int64_t end,
                                 std::integer_sequence<int, Vs...>) {
  auto run_kernel = [&](auto v) {
    if constexpr (kernel_exists<Rule, decltype(v)::value>)
      update_range<Rule, decltype(v)::value, T, L>(a, k, policies, begin, end);
  };
  ((variant == Vs ? (run_kernel(std::integral_constant<int, Vs>{}), 0) : 0), ...);
}

template <class Rule, class = void>
struct has_fused_bfloat16 : std::false_type {};
template <class Rule>
struct has_fused_bfloat16<Rule, std::void_t<decltype(Rule::fused_bfloat16)>>
    : std::integral_constant<bool, Rule::fused_bfloat16> {};

// The fused layout of a tensor, or Plain when it has none (then its storage goes through tiles).
PYOPT_INLINE Layout fused_layout(const TensorArgs& a) {
  if (a.stochastic_rounding) return Layout::Plain;
  bool all_bf16 = true, all_plain = true;
  for (int j = 0; j < kMaxSlots; ++j) {
    if (!a.slots[j]) continue;
    all_bf16 = all_bf16 && a.slot_storage[j] == Storage::BFloat16;
    all_plain = all_plain && a.slot_storage[j] == Storage::Compute;
  }
  if (!all_bf16 && !all_plain) return Layout::Plain;  // 8-bit or mixed states
  const bool states = !all_plain;
  if (a.param_storage == Storage::Compute && a.grad_storage == Storage::Compute && !a.master)
    return states ? Layout::Bf16States : Layout::Plain;
  if (a.param_storage != Storage::BFloat16 || a.grad_storage != Storage::BFloat16) return Layout::Plain;
  if (a.master) return states ? Layout::MasterBf16ParamStates : Layout::MasterBf16Param;
  return states ? Layout::Bf16ParamStates : Layout::Bf16Param;
}

template <class Rule, class T, class Variants>
PYOPT_INLINE bool update_fused(Layout layout, int variant, const TensorArgs& a,
                               const typename Rule::template Coeffs<T>& k, const Policies<T>& policies, int64_t begin,
                               int64_t end, Variants variants) {
  if constexpr (has_fused_bfloat16<Rule>::value && std::is_same<T, float>::value) {
    switch (layout) {
      case Layout::Bf16Param: update_variant<Rule, T, Layout::Bf16Param>(variant, a, k, policies, begin, end, variants); return true;
      case Layout::MasterBf16Param: update_variant<Rule, T, Layout::MasterBf16Param>(variant, a, k, policies, begin, end, variants); return true;
      case Layout::Bf16States: update_variant<Rule, T, Layout::Bf16States>(variant, a, k, policies, begin, end, variants); return true;
      case Layout::Bf16ParamStates: update_variant<Rule, T, Layout::Bf16ParamStates>(variant, a, k, policies, begin, end, variants); return true;
      case Layout::MasterBf16ParamStates: update_variant<Rule, T, Layout::MasterBf16ParamStates>(variant, a, k, policies, begin, end, variants); return true;
      default: return false;
    }
  }
  return false;
}

template <class Rule, class T, class Variants>
void update_stored(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                   const Policies<T>& policies, int64_t begin, int64_t end, Variants variants) {
  static_assert(std::is_same<T, float>::value, "only float32 steps have other storage");
  alignas(64) float buffer[2 + kMaxSlots][kStorageTile];
  const TileBuffers buffers{buffer[0], buffer[1], {buffer[2], buffer[3], buffer[4], buffer[5], buffer[6]}};
  for (int64_t first = begin; first < end; first += kStorageTile) {
    const int64_t n = end - first < kStorageTile ? end - first : kStorageTile;
    const int64_t next = first + kStorageTile;
    if (next < end) prefetch_tile(a, next, end - next < kStorageTile ? end - next : kStorageTile);
    const TensorArgs tile = float_tile(a, first, n, buffers);
    update_variant<Rule, T>(variant, tile, k, policies, 0, n, variants);
    store_tile(a, tile, first, n, true);
  }
}

// update_variant for any storage: float32/float64 arrays run the kernels directly.
template <class Rule, class T, class Variants>
PYOPT_INLINE void update_tensor(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                const Policies<T>& policies, int64_t begin, int64_t end, Variants variants) {
  if constexpr (std::is_same<T, float>::value) {
    if (!stored_as_computed(a)) {
      if (!update_fused<Rule, T>(fused_layout(a), variant, a, k, policies, begin, end, variants))
        update_stored<Rule, T>(variant, a, k, policies, begin, end, variants);
      return;
    }
  }
  update_variant<Rule, T>(variant, a, k, policies, begin, end, variants);
}

// The reduction pass of a rule with num_reductions > 0: Rule::reduce<V> sees each element once
// (it may update the state slots, not the param) and yields num_reductions values to be summed in
// double. Elements [begin, end) lie in one block; the block's sums go to out[0..R).
template <class Rule, int V, class T>
PYOPT_KERNEL_BODY void reduce_block(const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                    const Policies<T>& policies, int64_t begin, int64_t end, double* out) {
  static_assert(V < Rule::num_variants, "rules with reductions have no decay steps");
  constexpr int R = Rule::num_reductions;
  constexpr unsigned mask = Rule::slot_mask(V);
  const T* __restrict p = static_cast<const T*>(a.param);
  const T* __restrict g = static_cast<const T*>(a.grad);
  T* __restrict s0 = static_cast<T*>(a.slots[0]);
  T* __restrict s1 = static_cast<T*>(a.slots[1]);
  T* __restrict s2 = static_cast<T*>(a.slots[2]);
  T* __restrict s3 = static_cast<T*>(a.slots[3]);
  T* __restrict s4 = static_cast<T*>(a.slots[4]);
  const T clip = T(a.grad_clip), scale = T(a.grad_scale);
  const Policies<T> pol = policies;
  double lanes[R][kReduceLanes] = {};
  auto one = [&](int64_t i, int lane) PYOPT_LAMBDA_INLINE {
    T s[kMaxSlots] = {};
    if constexpr (mask & 1u) s[0] = s0[i];
    if constexpr (mask & 2u) s[1] = s1[i];
    if constexpr (mask & 4u) s[2] = s2[i];
    if constexpr (mask & 8u) s[3] = s3[i];
    if constexpr (mask & 16u) s[4] = s4[i];
    T r[R];
    T param = p[i];  // not stored: the reduction pass leaves p alone
    T grad = clipped_grad(g[i], clip, scale);
    apply_policies<Rule, kNoDecay>(pol, param, grad);
    Rule::template reduce<V>(k, param, grad, s, r);
    if constexpr (mask & 1u) s0[i] = s[0];
    if constexpr (mask & 2u) s1[i] = s[1];
    if constexpr (mask & 4u) s2[i] = s[2];
    if constexpr (mask & 8u) s3[i] = s[3];
    if constexpr (mask & 16u) s4[i] = s[4];
    for (int q = 0; q < R; ++q) lanes[q][lane] += double(r[q]);
  };
  int64_t i = begin;
  for (; i + kReduceLanes <= end; i += kReduceLanes) {
    PYOPT_VECTORIZE_LOOP
    for (int lane = 0; lane < kReduceLanes; ++lane) one(i + lane, lane);
  }
  for (int lane = 0; i + lane < end; ++lane) one(i + lane, lane);
  for (int q = 0; q < R; ++q) {
    // Pairwise over the lanes, in a fixed order.
    double l[kReduceLanes];
    for (int j = 0; j < kReduceLanes; ++j) l[j] = lanes[q][j];
    for (int width = kReduceLanes / 2; width >= 1; width /= 2)
      for (int j = 0; j < width; ++j) l[j] = l[j] + l[j + width];
    out[q] = l[0];
  }
}

template <class Rule, class T, int... Vs>
PYOPT_INLINE void reduce_variant(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                 const Policies<T>& policies, int64_t begin, int64_t end, double* out,
                                 std::integer_sequence<int, Vs...>) {
  ((variant == Vs ? (reduce_block<Rule, Vs, T>(a, k, policies, begin, end, out), 0) : 0), ...);
}

// reduce_variant for any storage. A reduction block is converted whole, so its elements keep
// their lanes (position in the block) and the sums their bits.
template <class Rule, class T, class Variants>
void reduce_tensor(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                   const Policies<T>& policies, int64_t begin, int64_t end, double* out, Variants variants) {
  if constexpr (std::is_same<T, float>::value) {
    if (!stored_as_computed(a)) {
      std::unique_ptr<float[]> buffer(new float[(2 + kMaxSlots) * kReduceBlock]);
      TileBuffers buffers{buffer.get(), buffer.get() + kReduceBlock, {}};
      for (int j = 0; j < kMaxSlots; ++j) buffers.slots[j] = buffer.get() + (2 + j) * kReduceBlock;
      const TensorArgs block = float_tile(a, begin, end - begin, buffers);
      reduce_variant<Rule, T>(variant, block, k, policies, 0, end - begin, out, variants);
      store_tile(a, block, begin, end - begin, false);
      return;
    }
  }
  reduce_variant<Rule, T>(variant, a, k, policies, begin, end, out, variants);
}

// ---- Cautious updates (rules/base.hpp: cautious_policy) ----
// The mask of pytorch-optimizer's apply_cautious: u·(u·g > 0 ? scale : 0), a multiply (not a
// select) as its update.mul_(mask), so an infinite u the mask drops is NaN there and here.
template <class T>
PYOPT_INLINE T cautious_mask(T u, T g, T scale) {
  return u * (u * g > T(0) ? scale : T(0));
}

// The elements of [begin, end) whose direction agrees with the gradient: the rule's direction
// on copies of the states (nothing is stored), after the same policies the update pass applies.
template <class Rule, int V, class T>
PYOPT_KERNEL_BODY int64_t cautious_count_range(const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                               const Policies<T>& policies, int64_t begin, int64_t end) {
  constexpr int rule_variant = V % Rule::num_variants, decay_step = V / Rule::num_variants;
  constexpr unsigned mask = Rule::slot_mask(rule_variant);
  const T* __restrict p = static_cast<const T*>(a.param);
  const T* __restrict g = static_cast<const T*>(a.grad);
  const T* __restrict s0 = static_cast<const T*>(a.slots[0]);
  const T* __restrict s1 = static_cast<const T*>(a.slots[1]);
  const T* __restrict s2 = static_cast<const T*>(a.slots[2]);
  const T* __restrict s3 = static_cast<const T*>(a.slots[3]);
  const T clip = T(a.grad_clip), scale = T(a.grad_scale);
  const Policies<T> pol = policies;
  int64_t agree = 0;
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) {
    T s[kMaxSlots] = {};
    if constexpr (mask & 1u) s[0] = s0[i];
    if constexpr (mask & 2u) s[1] = s1[i];
    if constexpr (mask & 4u) s[2] = s2[i];
    if constexpr (mask & 8u) s[3] = s3[i];
    T param = p[i];
    T grad = clipped_grad(g[i], clip, scale);
    apply_policies<Rule, decay_step>(pol, param, grad);
    const T u = Rule::template direction<rule_variant>(k, param, grad, s);
    agree += (u * grad > T(0)) ? 1 : 0;
  }
  return agree;
}

// update_range with the direction masked: direction, cautious_mask, apply.
template <class Rule, int V, class T>
PYOPT_KERNEL_BODY void cautious_update_range(const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                             const Policies<T>& policies, T cautious_scale, int64_t begin,
                                             int64_t end) {
  constexpr int rule_variant = V % Rule::num_variants, decay_step = V / Rule::num_variants;
  constexpr unsigned mask = Rule::slot_mask(rule_variant);
  T* __restrict p = static_cast<T*>(a.param);
  const T* __restrict g = static_cast<const T*>(a.grad);
  T* __restrict s0 = static_cast<T*>(a.slots[0]);
  T* __restrict s1 = static_cast<T*>(a.slots[1]);
  T* __restrict s2 = static_cast<T*>(a.slots[2]);
  T* __restrict s3 = static_cast<T*>(a.slots[3]);
  const T clip = T(a.grad_clip), scale = T(a.grad_scale), agree_scale = cautious_scale;
  const Policies<T> pol = policies;
  PYOPT_VECTORIZE_LOOP
  for (int64_t i = begin; i < end; ++i) {
    T s[kMaxSlots] = {};
    if constexpr (mask & 1u) s[0] = s0[i];
    if constexpr (mask & 2u) s[1] = s1[i];
    if constexpr (mask & 4u) s[2] = s2[i];
    if constexpr (mask & 8u) s[3] = s3[i];
    T param = p[i];
    T grad = clipped_grad(g[i], clip, scale);
    apply_policies<Rule, decay_step>(pol, param, grad);
    const T u = Rule::template direction<rule_variant>(k, param, grad, s);
    Rule::template apply<rule_variant>(k, param, grad, s, cautious_mask(u, grad, agree_scale));
    p[i] = param;
    if constexpr (mask & 1u) s0[i] = s[0];
    if constexpr (mask & 2u) s1[i] = s[1];
    if constexpr (mask & 4u) s2[i] = s[2];
    if constexpr (mask & 8u) s3[i] = s[3];
  }
}

template <class Rule, class T, int... Vs>
PYOPT_INLINE int64_t cautious_count_variant(int variant, const TensorArgs& a,
                                            const typename Rule::template Coeffs<T>& k, const Policies<T>& policies,
                                            int64_t begin, int64_t end, std::integer_sequence<int, Vs...>) {
  int64_t agree = 0;
  auto run_kernel = [&](auto v) {
    if constexpr (kernel_exists<Rule, decltype(v)::value>)
      agree = cautious_count_range<Rule, decltype(v)::value, T>(a, k, policies, begin, end);
  };
  ((variant == Vs ? (run_kernel(std::integral_constant<int, Vs>{}), 0) : 0), ...);
  return agree;
}

template <class Rule, class T, int... Vs>
PYOPT_INLINE void cautious_update_variant(int variant, const TensorArgs& a, const typename Rule::template Coeffs<T>& k,
                                          const Policies<T>& policies, T cautious_scale, int64_t begin, int64_t end,
                                          std::integer_sequence<int, Vs...>) {
  auto run_kernel = [&](auto v) {
    if constexpr (kernel_exists<Rule, decltype(v)::value>)
      cautious_update_range<Rule, decltype(v)::value, T>(a, k, policies, cautious_scale, begin, end);
  };
  ((variant == Vs ? (run_kernel(std::integral_constant<int, Vs>{}), 0) : 0), ...);
}

template <class Rule, class T>
struct Prepared {
  typename Rule::template Coeffs<T> coeffs;
  Policies<T> policies;
  int variant;  // the kernel variant: rule variant + Rule::num_variants · decay step
  bool cautious = false;  // h[cautious] set: the update masks the rule's direction (cautious_scale)
  T cautious_scale = T(0);
};

inline int team_size(int64_t total, int num_threads) {
  const int64_t max_useful = (total + kSerialThreshold - 1) / kSerialThreshold;
  return int(num_threads < max_useful ? num_threads : max_useful);
}

// Inside a parallel region: thread r takes the r-th contiguous slice of the concatenation of
// `count` tensors (sizes from size_of(i)), so many small tensors and one large tensor balance the
// same way; visit(i, begin, end) for each piece of it. Where align_of(i) > 1, the boundaries inside
// tensor i are rounded up to its multiples (every thread rounds a shared boundary the same way).
template <class SizeOf, class Visit, class AlignOf>
void for_my_chunk(int64_t count, int64_t total, SizeOf size_of, Visit visit, AlignOf align_of) {
  const int64_t nthreads = omp_get_num_threads();
  const int64_t rank = omp_get_thread_num();
  int64_t per_thread = (total + nthreads - 1) / nthreads;
  per_thread = (per_thread + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
  const int64_t lo = rank * per_thread < total ? rank * per_thread : total;
  const int64_t hi = lo + per_thread < total ? lo + per_thread : total;
  int64_t offset = 0;
  for (int64_t i = 0; i < count && offset < hi; ++i) {
    const int64_t size = size_of(i);
    const int64_t begin = lo > offset ? lo - offset : 0;
    const int64_t end = hi < offset + size ? hi - offset : size;
    const int64_t align = align_of(i);
    auto aligned = [&](int64_t x) { return align <= 1 || x >= size ? x : std::min(size, (x + align - 1) / align * align); };
    if (aligned(begin) < aligned(end)) visit(i, aligned(begin), aligned(end));
    offset += size;
  }
}

template <class SizeOf, class Visit>
void for_my_chunk(int64_t count, int64_t total, SizeOf size_of, Visit visit) {
  for_my_chunk(count, total, size_of, visit, [](int64_t) { return int64_t(1); });
}

template <class Rule, class T>
void update_my_chunk(const TensorArgs* tensors, int64_t count, const Prepared<Rule, T>* prepared, int64_t total) {
  for_my_chunk(
      count, total, [&](int64_t i) { return tensors[i].size; },
      [&](int64_t i, int64_t begin, int64_t end) {
        update_tensor<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, prepared[i].policies, begin, end,
                               KernelVariants<Rule>{});
      },
      [&](int64_t i) { return has_int8_slot(tensors[i]) ? kQuantBlock : int64_t(1); });
}

// The fixed reduction blocks of a step's tensors (kReduceBlock elements; a tensor's last block may
// be shorter): tensor i owns blocks [first[i], first[i + 1]). Sums are taken per block and then
// added per tensor in block order, so they do not depend on how blocks are shared among threads.
struct Blocks {
  std::vector<int64_t> first;
  Blocks(const TensorArgs* tensors, int64_t count) : first(size_t(count) + 1, 0) {
    for (int64_t i = 0; i < count; ++i)
      first[i + 1] = first[i] + (tensors[i].size + kReduceBlock - 1) / kReduceBlock;
  }
  int64_t size() const { return first.back(); }
  // f(tensor index, begin, end, block index) for blocks [b_lo, b_hi), in order.
  template <class F>
  void visit(const TensorArgs* tensors, int64_t b_lo, int64_t b_hi, F&& f) const {
    int64_t i = 0;
    for (int64_t b = b_lo; b < b_hi; ++b) {
      while (first[i + 1] <= b) ++i;
      const int64_t begin = (b - first[i]) * kReduceBlock;
      const int64_t end = begin + kReduceBlock < tensors[i].size ? begin + kReduceBlock : tensors[i].size;
      f(i, begin, end, b);
    }
  }
  // Inside a parallel region: this thread's contiguous share [lo, hi) of the blocks.
  void my_share(int64_t& lo, int64_t& hi) const {
    const int64_t n = omp_get_num_threads(), rank = omp_get_thread_num();
    const int64_t per = (size() + n - 1) / n;
    lo = rank * per < size() ? rank * per : size();
    hi = lo + per < size() ? lo + per : size();
  }
};

// A step with cautious tensors (rules/base.hpp): a counting pass over fixed blocks (integer
// counts: the same for any thread count), each cautious tensor's scale (Rule::cautious_scale,
// rounded as the reference's torch ops), then the update pass. Tensors without
// cautious take their usual kernels in the same pass.
template <class Rule, class T, class Variants>
void run_cautious(const TensorArgs* tensors, int64_t count, Prepared<Rule, T>* prepared, int64_t total,
                  int num_threads, Variants variants) {
  const Blocks blocks(tensors, count);
  std::vector<int64_t> agree(size_t(blocks.size()), 0);
  auto count_blocks = [&](int64_t b_lo, int64_t b_hi) {
    blocks.visit(tensors, b_lo, b_hi, [&](int64_t i, int64_t begin, int64_t end, int64_t b) {
      if (prepared[i].cautious)
        agree[b] = cautious_count_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs,
                                                   prepared[i].policies, begin, end, variants);
    });
  };
  auto update_piece = [&](int64_t i, int64_t begin, int64_t end) {
    if (prepared[i].cautious)
      cautious_update_variant<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, prepared[i].policies,
                                       prepared[i].cautious_scale, begin, end, variants);
    else
      update_tensor<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, prepared[i].policies, begin, end,
                             variants);
  };
  const bool serial = num_threads <= 1 || total < kSerialThreshold || omp_in_parallel();
  if (serial) {
    count_blocks(0, blocks.size());
  } else {
#pragma omp parallel num_threads(team_size(total, num_threads))
    {
      int64_t b_lo, b_hi;
      blocks.my_share(b_lo, b_hi);
      count_blocks(b_lo, b_hi);
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    if (!prepared[i].cautious) continue;
    int64_t agreeing = 0;
    for (int64_t b = blocks.first[i]; b < blocks.first[i + 1]; ++b) agreeing += agree[b];
    const T n = T(double(tensors[i].size)), agreeing_t = T(double(agreeing));
    if constexpr (Rule::cautious_scale == rules::CautiousScale::CountPlusOne)
      prepared[i].cautious_scale = (T(1) / (agreeing_t + T(1))) * n;  // numel / (sum + 1): reciprocal() · numel
    else
      prepared[i].cautious_scale = T(1) / std::max(agreeing_t / n, T(1e-3));  // mask.div_(mask.mean().clamp_(1e-3))
  }
  if (serial) {
    for (int64_t i = 0; i < count; ++i) update_piece(i, 0, tensors[i].size);
    return;
  }
#pragma omp parallel num_threads(team_size(total, num_threads))
  for_my_chunk(
      count, total, [&](int64_t i) { return tensors[i].size; }, update_piece,
      [&](int64_t i) { return has_int8_slot(tensors[i]) ? kQuantBlock : int64_t(1); });
}

// Rules with per-tensor reductions (LAMB's and LARS's norms): a reduction pass over fixed blocks,
// Rule::finish turning each tensor's sums into its coefficients, then the update pass, all in one
// parallel region (two barriers).
template <class Rule, class T>
void run_reduced(const TensorArgs* tensors, int64_t count, Prepared<Rule, T>* prepared, int64_t total,
                 int num_threads, bool any_cautious) {
  using Variants = std::make_integer_sequence<int, Rule::num_variants>;  // no decay steps (check_rule_table)
  constexpr int R = Rule::num_reductions;
  const Blocks blocks(tensors, count);
  std::vector<double> block_sums(size_t(blocks.size() * R));
  auto reduce_blocks = [&](int64_t b_lo, int64_t b_hi) {
    blocks.visit(tensors, b_lo, b_hi, [&](int64_t i, int64_t begin, int64_t end, int64_t b) {
      reduce_tensor<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, prepared[i].policies, begin, end,
                             &block_sums[b * R], Variants{});
    });
  };
  auto finish_all = [&] {
    for (int64_t i = 0; i < count; ++i) {
      double sums[R] = {};
      for (int64_t b = blocks.first[i]; b < blocks.first[i + 1]; ++b)
        for (int q = 0; q < R; ++q) sums[q] += block_sums[b * R + q];
      Rule::template finish<T>(prepared[i].coeffs, tensors[i].hyper, sums);
    }
  };

  if constexpr (Rule::cautious_policy) {
    if (any_cautious) {  // reduce, finish, then the cautious passes (which need the finished coefficients)
      if (num_threads <= 1 || total < kSerialThreshold || omp_in_parallel()) {
        reduce_blocks(0, blocks.size());
      } else {
#pragma omp parallel num_threads(team_size(total, num_threads))
        {
          int64_t b_lo, b_hi;
          blocks.my_share(b_lo, b_hi);
          reduce_blocks(b_lo, b_hi);
        }
      }
      finish_all();
      run_cautious<Rule, T>(tensors, count, prepared, total, num_threads, Variants{});
      return;
    }
  }
  if (num_threads <= 1 || total < kSerialThreshold || omp_in_parallel()) {
    reduce_blocks(0, blocks.size());
    finish_all();
    for (int64_t i = 0; i < count; ++i)
      update_tensor<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, prepared[i].policies, 0,
                             tensors[i].size, Variants{});
    return;
  }
#pragma omp parallel num_threads(team_size(total, num_threads))
  {
    int64_t b_lo, b_hi;
    blocks.my_share(b_lo, b_hi);
    reduce_blocks(b_lo, b_hi);
#pragma omp barrier
#pragma omp single
    finish_all();  // implicit barrier after single
    update_my_chunk<Rule, T>(tensors, count, prepared, total);
  }
}

// Storage the tile path cannot serve is a caller's bug, reported before anything is touched.
template <class Rule, class T>
void check_storage(const TensorArgs& a) {
  auto fail = [](const char* what) { throw std::invalid_argument(std::string("rule ") + Rule::name + ": " + what); };
  if (stored_as_computed(a)) return;
  if (!std::is_same<T, float>::value) fail("16-bit or 8-bit storage needs a float32 step");
  if (a.master && a.param_storage == Storage::Compute) fail("a master copy needs a 16-bit param");
  for (int j = 0; j < kMaxSlots; ++j) {
    if (!a.slots[j]) continue;
    // The reduction pass stores the states it updates, and the update pass would then read them
    // rounded: not the "float32 step, store once" every other rule gets.
    if (Rule::num_reductions > 0 && a.slot_storage[j] != Storage::Compute) fail("its states are float32 only");
    if (is_int8(a.slot_storage[j]) && !a.slot_absmax[j]) fail("an 8-bit state slot needs its absmax array");
    if (is_int8(a.slot_storage[j]) && !((Rule::int8_slots >> j) & 1u)) fail("this state slot cannot be 8-bit");
  }
}

template <class Rule, class T>
void run(const TensorArgs* tensors, int64_t count, int num_threads) {
  check_rule_table<Rule>();
  constexpr int64_t kStackTensors = 32;
  Prepared<Rule, T> stack_buffer[kStackTensors];
  std::unique_ptr<Prepared<Rule, T>[]> heap_buffer;
  Prepared<Rule, T>* prepared = stack_buffer;
  if (count > kStackTensors) {
    heap_buffer.reset(new Prepared<Rule, T>[count]);
    prepared = heap_buffer.get();
  }

  // Every variant and storage is checked before the first prepare(), which may advance scalar state.
  bool any_cautious = false;
  for (int64_t i = 0; i < count; ++i) {
    prepared[i].variant = checked_variant<Rule>(tensors[i].hyper);
    check_storage<Rule, T>(tensors[i]);
    if constexpr (Rule::cautious_policy) {
      prepared[i].cautious = tensors[i].hyper[Rule::cautious] != 0.0;
      if (prepared[i].cautious && !stored_as_computed(tensors[i]))
        throw std::invalid_argument(std::string("rule ") + Rule::name +
                                    ": cautious updates need float32 or float64 params and states (no 16-bit or "
                                    "8-bit storage)");
      any_cautious = any_cautious || prepared[i].cautious;
    }
  }

  // Per-step scalars, once per tensor, in double. Tensors of the same group at the same step share
  // them unless the rule keeps scalar state of its own.
  int64_t total = 0;
  for (int64_t i = 0; i < count; ++i) {
    const TensorArgs& a = tensors[i];
    if (Rule::num_scalars == 0 && i > 0 && a.hyper == tensors[i - 1].hyper && a.step == tensors[i - 1].step) {
      prepared[i] = prepared[i - 1];  // the same hyperparameters: the same cautious flag too
    } else {
      int decay_step = kNoDecay;
      prepared[i].coeffs = Rule::template prepare<T>(a.hyper, a.step, a.scalars);
      prepared[i].policies = prepare_policies<Rule, T>(a.hyper, decay_step);
      prepared[i].variant += Rule::num_variants * decay_step;
    }
    total += a.size;
  }

  if constexpr (Rule::num_reductions > 0) {
    run_reduced<Rule, T>(tensors, count, prepared, total, num_threads, any_cautious);
    return;
  }
  if constexpr (Rule::cautious_policy) {
    if (any_cautious) {
      run_cautious<Rule, T>(tensors, count, prepared, total, num_threads, KernelVariants<Rule>{});
      return;
    }
  }
  const bool serial = num_threads <= 1 || total < kSerialThreshold || omp_in_parallel();
  if (serial) {
    for (int64_t i = 0; i < count; ++i)
      update_tensor<Rule, T>(prepared[i].variant, tensors[i], prepared[i].coeffs, prepared[i].policies, 0,
                             tensors[i].size, KernelVariants<Rule>{});
    return;
  }
#pragma omp parallel num_threads(team_size(total, num_threads))
  update_my_chunk<Rule, T>(tensors, count, prepared, total);
}

// A row-sparse step (RowsKernelFn, types.hpp): table row rows[k] steps with gradient row k. Each
// row is a span of `cols` elements run by the same element kernel as a dense step, with the
// per-step scalars prepared once as run() prepares them for one tensor, so every element gets the
// bits a dense step of the gathered rows gives. Threads take contiguous slices of the rows, and
// runs of consecutive rows go to the kernel as one span. Whole-tensor rules (reductions, cautious
// masks) and stored (16-bit, 8-bit) arrays are refused: their step is not per row.
template <class Rule, class T>
void run_rows(const TensorArgs& table, const int64_t* rows, int64_t count, int64_t cols, int num_threads) {
  check_rule_table<Rule>();
  auto refuse = [](const char* why) {
    throw std::invalid_argument(std::string("rule ") + Rule::name + " cannot step rows: " + why);
  };
  if constexpr (Rule::num_reductions > 0) {
    refuse("its step reads whole tensors (norms)");
  } else {
    Prepared<Rule, T> prepared;
    prepared.variant = checked_variant<Rule>(table.hyper);
    if (!stored_as_computed(table)) refuse("its arrays must be stored as computed (no 16-bit or 8-bit storage)");
    if constexpr (Rule::cautious_policy) {
      if (table.hyper[Rule::cautious] != 0.0) refuse("cautious updates read whole tensors");
    }
    const int64_t total = count * cols;
    if (total == 0) return;  // as a dense step of no elements: prepare() (and any scalar state) untouched
    int decay_step = kNoDecay;
    prepared.coeffs = Rule::template prepare<T>(table.hyper, table.step, table.scalars);
    prepared.policies = prepare_policies<Rule, T>(table.hyper, decay_step);
    prepared.variant += Rule::num_variants * decay_step;

    auto step_rows = [&](int64_t k_lo, int64_t k_hi) {
      for (int64_t k = k_lo; k < k_hi;) {
        int64_t end = k + 1;
        while (end < k_hi && rows[end] == rows[end - 1] + 1) ++end;
        const int64_t offset = rows[k] * cols;
        TensorArgs span = table;
        span.param = static_cast<T*>(table.param) + offset;
        span.grad = static_cast<const T*>(table.grad) + k * cols;
        for (int j = 0; j < kMaxSlots; ++j)
          if (table.slots[j]) span.slots[j] = static_cast<T*>(table.slots[j]) + offset;
        span.size = (end - k) * cols;
        update_variant<Rule, T>(prepared.variant, span, prepared.coeffs, prepared.policies, 0, span.size,
                                KernelVariants<Rule>{});
        k = end;
      }
    };
    if (num_threads <= 1 || total < kSerialThreshold || omp_in_parallel()) {
      step_rows(0, count);
      return;
    }
#pragma omp parallel num_threads(team_size(total, num_threads))
    {
      const int64_t n = omp_get_num_threads(), rank = omp_get_thread_num();
      const int64_t per = (count + n - 1) / n;
      const int64_t lo = rank * per < count ? rank * per : count;
      step_rows(lo, lo + per < count ? lo + per : count);
    }
  }
}

}  // namespace driver
PYOPT_KERNEL_NAMESPACE_END
