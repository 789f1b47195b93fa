// Whole-sequence kernels for elementwise structures (none, diagonal, banded, jordan):
// h·W per gate is a sum of shifted products, rec_c[j] = Σ_k h[j + o_k] · w[k, c, j].
//
// Rows of the batch never interact, so each thread takes a slice of the batch for the
// whole sequence: one parallel region per call, no ATen call and no allocation per step.
// The weight gradient (a reduction over time and batch) is accumulated while the
// backward loop has the step's operands in cache, per thread, and summed at the end.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "cellmath.h"

namespace connbench {
namespace {

// y[j] += x[j + o] · w[j] over the j where j + o is a unit (or wraps, when cyclic)
template <class T>
inline void shift_madd(T* __restrict y, const T* __restrict x, const T* __restrict w, int64_t o,
                       int64_t H, bool cyclic) {
  if (!cyclic) {
    const int64_t lo = std::max<int64_t>(0, -o), hi = std::min<int64_t>(H, H - o);
    for (int64_t j = lo; j < hi; ++j) y[j] += x[j + o] * w[j];
    return;
  }
  const int64_t s = ((o % H) + H) % H;
  for (int64_t j = 0; j < H - s; ++j) y[j] += x[j + s] * w[j];
  for (int64_t j = H - s; j < H; ++j) y[j] += x[j + s - H] * w[j];
}

// the transpose: y[i] += g[i − o] · w[i − o]
template <class T>
inline void shift_madd_t(T* __restrict y, const T* __restrict g, const T* __restrict w,
                         int64_t o, int64_t H, bool cyclic) {
  if (!cyclic) {
    const int64_t lo = std::max<int64_t>(0, o), hi = std::min<int64_t>(H, H + o);
    for (int64_t i = lo; i < hi; ++i) y[i] += g[i - o] * w[i - o];
    return;
  }
  const int64_t s = ((o % H) + H) % H;
  for (int64_t i = s; i < H; ++i) y[i] += g[i - s] * w[i - s];
  for (int64_t i = 0; i < s; ++i) y[i] += g[i - s + H] * w[i - s + H];
}

struct Shape {
  int64_t T, B, H, gates, K;
};

Shape shape_of(const at::Tensor& us, const at::Tensor& table, int64_t cell) {
  TORCH_CHECK(us.dim() == 3, "fused elementwise kernel: us must be (T, B, gates*H), got ",
              us.sizes());
  TORCH_CHECK(table.dim() == 3, "fused elementwise kernel: table must be (K, gates, H), got ",
              table.sizes());
  const int64_t gates = cell == GRU ? 3 : cell == LSTM ? 4 : 1;
  TORCH_CHECK(table.size(1) == gates && us.size(2) == gates * table.size(2),
              "fused elementwise kernel: table ", table.sizes(), " does not match us ",
              us.sizes(), " for ", gates, " gates");
  return {us.size(0), us.size(1), table.size(2), gates, table.size(0)};
}

// Contiguous slices of the batch, one per thread (at most B).
template <class F>
void over_batch_slices(int64_t B, F fn) {
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B));
  at::parallel_for(0, n, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c, c * B / n, (c + 1) * B / n);
  });
}

template <class T>
void recurrent_product(const Shape& sh, const T* hp, const T* table, const int64_t* offs,
                       bool cyclic, T* rec) {
  const int64_t H = sh.H;
  std::fill(rec, rec + sh.gates * H, T(0));
  for (int64_t k = 0; k < sh.K; ++k)
    for (int64_t c = 0; c < sh.gates; ++c)
      shift_madd(rec + c * H, hp, table + (k * sh.gates + c) * H, offs[k], H, cyclic);
}

std::vector<at::Tensor> forward(const at::Tensor& us_in, const at::Tensor& table_in,
                                std::vector<int64_t> offsets, bool cyclic, int64_t cell,
                                int64_t act, const at::Tensor& bhn_in) {
  const at::Tensor us = us_in.contiguous(), table = table_in.contiguous();
  const Shape sh = shape_of(us, table, cell);
  TORCH_CHECK((int64_t)offsets.size() == sh.K, "fused elementwise kernel: ", offsets.size(),
              " offsets for a table of ", sh.K);
  const at::Tensor bhn = bhn_in.numel() ? bhn_in.contiguous() : bhn_in;
  auto hs = at::empty({sh.T, sh.B, sh.H}, us.options());
  auto saved = at::empty({sh.T, sh.B, saved_per_unit(cell) * sh.H}, us.options());
  auto cs = at::empty({cell == LSTM ? sh.T : 0, sh.B, sh.H}, us.options());
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "connbench_elementwise_forward", [&] {
    using T = scalar_t;
    const int64_t H = sh.H, GH = sh.gates * H, S = saved_per_unit(cell) * H;
    const T *U = us.data_ptr<T>(), *W = table.data_ptr<T>();
    const T* BH = bhn.numel() ? bhn.data_ptr<T>() : nullptr;
    T *Hs = hs.data_ptr<T>(), *Sv = saved.data_ptr<T>(), *Cs = cs.data_ptr<T>();
    over_batch_slices(sh.B, [&](int64_t, int64_t b0, int64_t b1) {
      std::vector<T> rec(GH, T(0)), zeros(H, T(0));
      for (int64_t t = 0; t < sh.T; ++t) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * sh.B + b, prev = row - sh.B;
          const T* hp = t ? Hs + prev * H : zeros.data();
          const T* cp = (t && cell == LSTM) ? Cs + prev * H : zeros.data();
          if (t) recurrent_product(sh, hp, W, offsets.data(), cyclic, rec.data());
          cell_fwd<T>(cell, act, H, U + row * GH, rec.data(), BH ? BH + b * H : nullptr, hp, cp,
                      Sv + row * S, cell == LSTM ? Cs + row * H : nullptr, Hs + row * H);
        }
      }
    });
  });
  return {hs, saved, cs};
}

std::vector<at::Tensor> backward(const at::Tensor& gout_in, const at::Tensor& hs,
                                 const at::Tensor& saved, const at::Tensor& cs,
                                 const at::Tensor& table_in, std::vector<int64_t> offsets,
                                 bool cyclic, int64_t cell, int64_t act, const at::Tensor& bhn) {
  const at::Tensor gout = gout_in.contiguous(), table = table_in.contiguous();
  const int64_t T_ = hs.size(0), B = hs.size(1), H = hs.size(2);
  const int64_t gates = table.size(1), K = table.size(0), GH = gates * H;
  auto dus = at::empty({T_, B, GH}, hs.options());
  auto dbhn = at::zeros({bhn.numel() ? B : 0, H}, hs.options());
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B));
  auto dtable_parts = at::zeros({slices, K, gates, H}, hs.options());
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "connbench_elementwise_backward", [&] {
    using T = scalar_t;
    const int64_t S = saved_per_unit(cell) * H;
    const T *G = gout.data_ptr<T>(), *Hs = hs.data_ptr<T>(), *Sv = saved.data_ptr<T>();
    const T *Cs = cs.data_ptr<T>(), *W = table.data_ptr<T>();
    T *DU = dus.data_ptr<T>(), *DB = bhn.numel() ? dbhn.data_ptr<T>() : nullptr;
    T* DW = dtable_parts.data_ptr<T>();
    const int64_t n = slices;
    at::parallel_for(0, n, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t sl = c0; sl < c1; ++sl) {
        const int64_t b0 = sl * B / n, b1 = (sl + 1) * B / n;
        T* dw = DW + sl * K * GH;
        std::vector<T> carry((b1 - b0) * H, T(0)), dc(cell == LSTM ? (b1 - b0) * H : 0, T(0));
        std::vector<T> dh(H), drec_gru(cell == GRU ? GH : 0), zeros(H, T(0));
        for (int64_t t = T_ - 1; t >= 0; --t) {
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t row = t * B + b, prev = row - B;
            T* cr = carry.data() + (b - b0) * H;
            const T* g = G + row * H;
            for (int64_t j = 0; j < H; ++j) dh[j] = g[j] + cr[j];
            const T* hp = t ? Hs + prev * H : zeros.data();
            const T* cp = (t && cell == LSTM) ? Cs + prev * H : zeros.data();
            T* du = DU + row * GH;
            T* drec = cell == GRU ? drec_gru.data() : du;
            cell_bwd<T>(cell, act, H, dh.data(), Hs + row * H, hp, cp, Sv + row * S, du, drec, cr,
                        cell == LSTM ? dc.data() + (b - b0) * H : nullptr,
                        DB ? DB + b * H : nullptr);
            if (t == 0) continue;  // h_{-1} = 0: no weight gradient, nothing to carry
            for (int64_t k = 0; k < K; ++k)
              for (int64_t c = 0; c < gates; ++c) {
                const T* w = W + (k * gates + c) * H;
                shift_madd_t(cr, drec + c * H, w, offsets[k], H, cyclic);
                shift_madd(dw + (k * gates + c) * H, hp, drec + c * H, offsets[k], H, cyclic);
              }
          }
        }
      }
    });
  });
  return {dus, dtable_parts.sum(0), dbhn};
}

}  // namespace
}  // namespace connbench

TORCH_LIBRARY_FRAGMENT(connbench, m) {
  m.def("elementwise_forward(Tensor us, Tensor table, int[] offsets, bool cyclic, int cell, "
        "int act, Tensor bhn) -> Tensor[]",
        &connbench::forward);
  m.def("elementwise_backward(Tensor gout, Tensor hs, Tensor saved, Tensor cs, Tensor table, "
        "int[] offsets, bool cyclic, int cell, int act, Tensor bhn) -> Tensor[]",
        &connbench::backward);
}
