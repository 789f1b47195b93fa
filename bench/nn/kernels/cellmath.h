// Pointwise cell math shared by the fused kernels (elementwise.cpp, matrix.cpp).
//
// Every routine works on one row of the state: k units, and for gated cells the gate
// pre-activations as `gates` consecutive chunks of k (the layout the structures use).
// The loops are plain and branch-free so that -O3 -march=native vectorises them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

// Forced inline: without it gcc (-fPIC) may call fast_tanh through the PLT from the
// gate loops, which then stay scalar (measured: 15 % of a full LSTM step in the call).
#define CB_INLINE inline __attribute__((always_inline))

namespace connbench {

enum Cell : int64_t { ELMAN = 0, GRU = 1, LSTM = 2 };
enum Act : int64_t { TANH = 0, RELU = 1, SIGMOID = 2 };

// tanh as a [13/6] rational function on [-7.9, 7.9] (the approximation Eigen uses):
// a few ulp in fp32 (tests check 1e-6 against torch.tanh), and it vectorises, where
// std::tanh is a scalar libm call and torch.tanh costs ~2 ns/element on this build.
CB_INLINE float fast_tanh(float x) {
  const float clamped = std::min(7.90531110763549805f, std::max(-7.90531110763549805f, x));
  const float x2 = clamped * clamped;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * clamped;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  // below 4e-4 tanh(x) == x to fp32 precision, and p/q loses relative accuracy there
  return std::abs(x) < 0.0004f ? x : p / q;
}
// fp64 is the gradcheck path: exactness matters there, not speed
CB_INLINE double fast_tanh(double x) { return std::tanh(x); }

template <class T> CB_INLINE T sigm(T x) { return T(0.5) * fast_tanh(T(0.5) * x) + T(0.5); }

template <class T> CB_INLINE T act_fwd(int64_t act, T x) {
  if (act == TANH) return fast_tanh(x);
  if (act == SIGMOID) return sigm(x);
  return x > T(0) ? x : T(0);
}

// d act / d pre, written with the output y (what is saved)
template <class T> CB_INLINE T act_grad(int64_t act, T y) {
  if (act == TANH) return T(1) - y * y;
  if (act == SIGMOID) return y * (T(1) - y);
  return y > T(0) ? T(1) : T(0);
}

// ---------------------------------------------------------------- Elman
template <class T>
inline void elman_fwd(int64_t act, int64_t k, const T* __restrict u, const T* __restrict rec,
                      T* __restrict h) {
  // one loop per activation: the branch stays outside the vectorised body
  if (act == TANH) {
    for (int64_t j = 0; j < k; ++j) h[j] = fast_tanh(u[j] + rec[j]);
  } else if (act == SIGMOID) {
    for (int64_t j = 0; j < k; ++j) h[j] = sigm(u[j] + rec[j]);
  } else {
    for (int64_t j = 0; j < k; ++j) h[j] = std::max(u[j] + rec[j], T(0));
  }
}

// dpre = dh * act'(h)
template <class T>
inline void elman_bwd(int64_t act, int64_t k, const T* __restrict dh, const T* __restrict h,
                      T* __restrict dpre) {
  if (act == TANH) {
    for (int64_t j = 0; j < k; ++j) dpre[j] = dh[j] * (T(1) - h[j] * h[j]);
  } else if (act == SIGMOID) {
    for (int64_t j = 0; j < k; ++j) dpre[j] = dh[j] * h[j] * (T(1) - h[j]);
  } else {
    for (int64_t j = 0; j < k; ++j) dpre[j] = h[j] > T(0) ? dh[j] : T(0);
  }
}

// ---------------------------------------------------------------- GRU (PyTorch's equations)
// saved s = (r, z, n, rn) with rn = rec_n + b_hn
template <class T>
inline void gru_fwd(int64_t k, const T* __restrict u, const T* __restrict rec,
                    const T* __restrict bhn, const T* __restrict hp, T* __restrict s,
                    T* __restrict h) {
  T *r = s, *z = s + k, *n = s + 2 * k, *rn = s + 3 * k;
  // the b_hn branch outside the loop, so that both loops vectorise
  if (bhn) {
    for (int64_t j = 0; j < k; ++j) rn[j] = rec[2 * k + j] + bhn[j];
  } else {
    for (int64_t j = 0; j < k; ++j) rn[j] = rec[2 * k + j];
  }
  for (int64_t j = 0; j < k; ++j) {
    r[j] = sigm(u[j] + rec[j]);
    z[j] = sigm(u[k + j] + rec[k + j]);
    n[j] = fast_tanh(u[2 * k + j] + r[j] * rn[j]);
    h[j] = n[j] + z[j] * (hp[j] - n[j]);
  }
}

// du: grad of the input pre-activations; drec: grad of h·W (differs from du in the n
// gate, where the recurrence is scaled by r); carry = dh·z, the direct path to h_{t-1}
template <class T>
inline void gru_bwd(int64_t k, const T* __restrict dh, const T* __restrict hp,
                    const T* __restrict s, T* __restrict du, T* __restrict drec,
                    T* __restrict carry, T* __restrict dbhn) {
  const T *r = s, *z = s + k, *n = s + 2 * k, *rn = s + 3 * k;
  for (int64_t j = 0; j < k; ++j) {
    const T dn = dh[j] * (T(1) - z[j]);
    const T dz = dh[j] * (hp[j] - n[j]);
    const T dpn = dn * (T(1) - n[j] * n[j]);
    const T drn = dpn * r[j];
    const T dpr = dpn * rn[j] * r[j] * (T(1) - r[j]);
    const T dpz = dz * z[j] * (T(1) - z[j]);
    du[j] = dpr;
    du[k + j] = dpz;
    du[2 * k + j] = dpn;
    drec[j] = dpr;
    drec[k + j] = dpz;
    drec[2 * k + j] = drn;
    carry[j] = dh[j] * z[j];
  }
  if (dbhn)
    for (int64_t j = 0; j < k; ++j) dbhn[j] += drec[2 * k + j];
}

// ---------------------------------------------------------------- LSTM, gates (i, f, o, g)
// saved s = (i, f, o, g, tanh c); c the cell state
template <class T>
inline void lstm_fwd(int64_t k, const T* __restrict u, const T* __restrict rec,
                     const T* __restrict cp, T* __restrict s, T* __restrict c,
                     T* __restrict h) {
  T *i = s, *f = s + k, *o = s + 2 * k, *g = s + 3 * k, *tc = s + 4 * k;
  for (int64_t j = 0; j < k; ++j) {
    i[j] = sigm(u[j] + rec[j]);
    f[j] = sigm(u[k + j] + rec[k + j]);
    o[j] = sigm(u[2 * k + j] + rec[2 * k + j]);
    g[j] = fast_tanh(u[3 * k + j] + rec[3 * k + j]);
    c[j] = f[j] * cp[j] + i[j] * g[j];
    tc[j] = fast_tanh(c[j]);
    h[j] = o[j] * tc[j];
  }
}

// dc: in, the gradient reaching c_t from step t+1; out, the one reaching c_{t-1}
template <class T>
inline void lstm_bwd(int64_t k, const T* __restrict dh, const T* __restrict cp,
                     const T* __restrict s, T* __restrict dc, T* __restrict dpre) {
  const T *i = s, *f = s + k, *o = s + 2 * k, *g = s + 3 * k, *tc = s + 4 * k;
  for (int64_t j = 0; j < k; ++j) {
    const T dct = dc[j] + dh[j] * o[j] * (T(1) - tc[j] * tc[j]);
    dpre[j] = dct * g[j] * i[j] * (T(1) - i[j]);
    dpre[k + j] = dct * cp[j] * f[j] * (T(1) - f[j]);
    dpre[2 * k + j] = dh[j] * tc[j] * o[j] * (T(1) - o[j]);
    dpre[3 * k + j] = dct * i[j] * (T(1) - g[j] * g[j]);
    dc[j] = dct * f[j];
  }
}

// One row of one step, any cell. hp/cp: previous h and c (zeros at t = 0); s, c: the
// step's saved gates and cell state (unused for Elman); h: the new state.
template <class T>
inline void cell_fwd(int64_t cell, int64_t act, int64_t k, const T* u, const T* rec,
                     const T* bhn, const T* hp, const T* cp, T* s, T* c, T* h) {
  if (cell == GRU) gru_fwd(k, u, rec, bhn, hp, s, h);
  else if (cell == LSTM) lstm_fwd(k, u, rec, cp, s, c, h);
  else elman_fwd(act, k, u, rec, h);
}

// One row of one step backwards. dh: total gradient reaching h_t. Writes du (grad of the
// input pre-activations), drec (grad of h_{t-1}·W; the same buffer as du is allowed for
// Elman and LSTM, where the two are equal) and carry (the direct part of the gradient
// reaching h_{t-1}, without the recurrent product, which the caller adds).
template <class T>
inline void cell_bwd(int64_t cell, int64_t act, int64_t k, const T* dh, const T* h,
                     const T* hp, const T* cp, const T* s, T* du, T* drec, T* carry, T* dc,
                     T* dbhn) {
  const int64_t width = cell == GRU ? 3 * k : cell == LSTM ? 4 * k : k;
  if (cell == GRU) {
    gru_bwd(k, dh, hp, s, du, drec, carry, dbhn);
    return;
  }
  if (cell == LSTM) lstm_bwd(k, dh, cp, s, dc, du);
  else elman_bwd(act, k, dh, h, du);
  if (drec != du) std::copy(du, du + width, drec);
  std::fill(carry, carry + k, T(0));
}

// u = x·wx + bx for one row, when a kernel projects its input itself (few features):
// I passes over an L1-resident row of gates·k, in place of a DRAM read of a
// (T, B, gates·k) tensor that a separate matmul wrote
template <class T>
inline void project_row(int64_t I, int64_t GK, const T* __restrict x, const T* __restrict wx,
                        const T* __restrict bx, T* __restrict u) {
  if (bx) std::copy(bx, bx + GK, u);
  else std::fill(u, u + GK, T(0));
  for (int64_t i = 0; i < I; ++i) {
    const T xi = x[i];
    const T* w = wx + i * GK;
    for (int64_t j = 0; j < GK; ++j) u[j] += xi * w[j];
  }
}

// Explicit vectors (GCC's vector extension, 64 bytes: 16 floats or 8 doubles) for
// loops gcc would not vectorise well by itself: reductions (a float sum needs
// reassociation, which gcc refuses without -ffast-math, so it stays a scalar chain of
// dependent adds) and sparse products (see matrix.cpp).
template <class T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(64))); };
template <class T> using Vec = typename VecOf<T>::type;
template <class T> constexpr int64_t kLanes = sizeof(Vec<T>) / sizeof(T);
template <class T> CB_INLINE Vec<T> vload(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

// Σ of a vector's lanes, halving with shuffles (a scalar loop over 16 lanes cost more
// than the 128-long dot it finishes)
CB_INLINE float hsum(Vec<float> v) {
  typedef float V8 __attribute__((vector_size(32)));
  typedef float V4 __attribute__((vector_size(16)));
  const V8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
CB_INLINE double hsum(Vec<double> v) {  // fp64: the gradcheck path
  double s = 0;
  for (int l = 0; l < 8; ++l) s += v[l];
  return s;
}

// Σ_j a[j]·b[j], in vector lanes
template <class T>
CB_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc{};
  int64_t j = 0;
  for (; j + L <= n; j += L) acc += vload(a + j) * vload(b + j);
  T s = hsum(acc);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// Saved floats per unit and step besides h: GRU (r, z, n, rn), LSTM (i, f, o, g, tanh c)
inline int64_t saved_per_unit(int64_t cell) { return cell == GRU ? 4 : cell == LSTM ? 5 : 0; }

}  // namespace connbench
