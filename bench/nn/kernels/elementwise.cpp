// Whole-sequence kernels for elementwise structures (none, diagonal, banded, jordan):
// h·W per gate is a sum of shifted products, rec_c[j] = Σ_k h[j + o_k] · w[k, c, j].
//
// Rows of the batch never interact, so each thread takes a slice of the batch for the
// whole sequence: one parallel region per call, no ATen call and no allocation per step.
// The weight gradient (a reduction over time and batch) is accumulated while the
// backward loop has the step's operands in cache, per thread, and summed at the end.
// With few input features the kernel projects each row itself (project_row), and the
// backward recomputes a gated cell's gates rather than reading saved ones: per step
// the forward writes h (and an LSTM's c), the backward reads them and the incoming
// gradient, and nothing of width gates·H goes through memory.
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
  int64_t T, B, H, gates, K, I;  // I: input features when the projection runs here, else 0
};

// `in` is us (T, B, gates·H), or x (T, B, I) when wx (I, gates·H) is given: then the
// kernel projects the input itself, row by row, u = x·wx + bx, instead of reading a
// (T, B, gates·H) tensor that a separate matmul wrote (see project_row)
Shape shape_of(const at::Tensor& in, const at::Tensor& table, int64_t cell, const at::Tensor& wx) {
  TORCH_CHECK(in.dim() == 3, "fused elementwise kernel: input must be 3-d (T, B, ·), got ",
              in.sizes());
  TORCH_CHECK(table.dim() == 3, "fused elementwise kernel: table must be (K, gates, H), got ",
              table.sizes());
  const int64_t gates = cell == GRU ? 3 : cell == LSTM ? 4 : 1;
  const int64_t width = wx.numel() ? wx.size(1) : in.size(2);
  TORCH_CHECK(table.size(1) == gates && width == gates * table.size(2),
              "fused elementwise kernel: table ", table.sizes(), " does not match width ", width,
              " for ", gates, " gates");
  TORCH_CHECK(!wx.numel() || (wx.dim() == 2 && wx.size(0) == in.size(2)),
              "fused elementwise kernel: wx ", wx.sizes(), " does not match x ", in.sizes());
  return {in.size(0), in.size(1), table.size(2), gates, table.size(0),
          wx.numel() ? in.size(2) : 0};
}

// Contiguous slices of the batch, one per thread (at most B).
template <class F>
void over_batch_slices(int64_t B, F fn) {
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B));
  at::parallel_for(0, n, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(c, c * B / n, (c + 1) * B / n);
  });
}

int64_t slices_for(int64_t B) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B));
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

// The gates of a row live in a per-thread buffer: the backward recomputes them from the
// input, h_{t-1} and c_{t-1} (a few L1 passes per row) rather than reading 4–5·H
// saved floats per row from memory. need_grad false (inference): the LSTM cell state
// lives in two alternating slots; with need_grad every step's c is kept.
std::vector<at::Tensor> forward(const at::Tensor& in_, const at::Tensor& table_in,
                                std::vector<int64_t> offsets, bool cyclic, int64_t cell,
                                int64_t act, const at::Tensor& bhn_in, bool need_grad,
                                const at::Tensor& wx_in, const at::Tensor& bx_in) {
  const at::Tensor in = in_.contiguous(), table = table_in.contiguous();
  const at::Tensor wx = wx_in.contiguous(), bx = bx_in.contiguous();
  const Shape sh = shape_of(in, table, cell, wx);
  TORCH_CHECK((int64_t)offsets.size() == sh.K, "fused elementwise kernel: ", offsets.size(),
              " offsets for a table of ", sh.K);
  const at::Tensor bhn = bhn_in.numel() ? bhn_in.contiguous() : bhn_in;
  auto hs = at::empty({sh.T, sh.B, sh.H}, in.options());
  auto cs = at::empty({cell == LSTM ? (need_grad ? sh.T : 2) : 0, sh.B, sh.H}, in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "connbench_elementwise_forward", [&] {
    using T = scalar_t;
    const int64_t H = sh.H, GH = sh.gates * H, S = saved_per_unit(cell) * H, I = sh.I;
    const T *U = in.data_ptr<T>(), *W = table.data_ptr<T>();
    const T* WX = I ? wx.data_ptr<T>() : nullptr;
    const T* BX = I && bx.numel() ? bx.data_ptr<T>() : nullptr;
    const T* BH = bhn.numel() ? bhn.data_ptr<T>() : nullptr;
    T *Hs = hs.data_ptr<T>(), *Cs = cs.data_ptr<T>();
    over_batch_slices(sh.B, [&](int64_t, int64_t b0, int64_t b1) {
      std::vector<T> rec(GH, T(0)), zeros(H, T(0)), scratch(S), u(I ? GH : 0);
      for (int64_t t = 0; t < sh.T; ++t) {
        const int64_t slot = need_grad ? t : t % 2, pslot = need_grad ? t - 1 : (t + 1) % 2;
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * sh.B + b, prev = row - sh.B;
          const T* hp = t ? Hs + prev * H : zeros.data();
          const T* cp = (t && cell == LSTM) ? Cs + (pslot * sh.B + b) * H : zeros.data();
          if (t) recurrent_product(sh, hp, W, offsets.data(), cyclic, rec.data());
          const T* urow = U + row * GH;
          if (I) {
            project_row(I, GH, U + row * I, WX, BX, u.data());
            urow = u.data();
          }
          cell_fwd<T>(cell, act, H, urow, rec.data(), BH ? BH + b * H : nullptr, hp, cp,
                      scratch.data(),
                      cell == LSTM ? Cs + (slot * sh.B + b) * H : nullptr, Hs + row * H);
        }
      }
    });
  });
  return {hs, cs};
}

// Returns (d us, or d x when the kernel projected; d table; d b_hn; d wx; d bx). The
// projection's gradients are reduced here like the table's: per thread, then summed.
std::vector<at::Tensor> backward(const at::Tensor& gout_in, const at::Tensor& hs,
                                 const at::Tensor& in_, const at::Tensor& cs,
                                 const at::Tensor& table_in, std::vector<int64_t> offsets,
                                 bool cyclic, int64_t cell, int64_t act, const at::Tensor& bhn,
                                 const at::Tensor& wx_in, const at::Tensor& bx) {
  const at::Tensor gout = gout_in.contiguous(), table = table_in.contiguous();
  const at::Tensor in = in_.contiguous(), wx = wx_in.contiguous();
  const int64_t T_ = hs.size(0), B = hs.size(1), H = hs.size(2);
  const int64_t gates = table.size(1), K = table.size(0), GH = gates * H;
  const int64_t I = wx.numel() ? wx.size(0) : 0;
  auto dus = I ? at::empty({T_, B, I}, hs.options()) : at::empty({T_, B, GH}, hs.options());
  auto dbhn = at::zeros({bhn.numel() ? B : 0, H}, hs.options());
  const int64_t slices = slices_for(B);
  auto dtable_parts = at::zeros({slices, K, gates, H}, hs.options());
  auto dwx_parts = at::zeros({I ? slices : 0, I, GH}, hs.options());
  const bool has_bx = bx.numel() > 0;
  auto dbx_parts = at::zeros({I && has_bx ? slices : 0, GH}, hs.options());
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "connbench_elementwise_backward", [&] {
    using T = scalar_t;
    const int64_t S = saved_per_unit(cell) * H;
    const T *G = gout.data_ptr<T>(), *Hs = hs.data_ptr<T>(), *In = in.data_ptr<T>();
    const T *Cs = cs.data_ptr<T>(), *W = table.data_ptr<T>();
    const T* BX = I && bx.numel() ? bx.data_ptr<T>() : nullptr;
    const T* BH = bhn.numel() ? bhn.data_ptr<T>() : nullptr;
    const Shape sh{T_, B, H, gates, K, I};
    const T* WX = I ? wx.data_ptr<T>() : nullptr;
    T *DU = dus.data_ptr<T>(), *DB = bhn.numel() ? dbhn.data_ptr<T>() : nullptr;
    T* DW = dtable_parts.data_ptr<T>();
    const int64_t n = slices;
    at::parallel_for(0, n, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t sl = c0; sl < c1; ++sl) {
        const int64_t b0 = sl * B / n, b1 = (sl + 1) * B / n;
        T* dw = DW + sl * K * GH;
        T* dwx = I ? dwx_parts.data_ptr<T>() + sl * I * GH : nullptr;
        T* dbx = I && has_bx ? dbx_parts.data_ptr<T>() + sl * GH : nullptr;
        std::vector<T> carry((b1 - b0) * H, T(0)), dc(cell == LSTM ? (b1 - b0) * H : 0, T(0));
        std::vector<T> dh(H), drec_gru(cell == GRU ? GH : 0), zeros(H, T(0)), durow(I ? GH : 0);
        std::vector<T> sv(S), rec(cell == ELMAN ? 0 : GH), u(I ? GH : 0), c1(H), h1(H);
        for (int64_t t = T_ - 1; t >= 0; --t) {
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t row = t * B + b, prev = row - B;
            T* cr = carry.data() + (b - b0) * H;
            const T* g = G + row * H;
            for (int64_t j = 0; j < H; ++j) dh[j] = g[j] + cr[j];
            const T* hp = t ? Hs + prev * H : zeros.data();
            const T* cp = (t && cell == LSTM) ? Cs + prev * H : zeros.data();
            if (cell != ELMAN) {  // the step's gates again, as the forward computed them
              if (t) recurrent_product(sh, hp, W, offsets.data(), cyclic, rec.data());
              else std::fill(rec.begin(), rec.end(), T(0));
              const T* urow = In + row * GH;
              if (I) {
                project_row(I, GH, In + row * I, WX, BX, u.data());
                urow = u.data();
              }
              cell_fwd<T>(cell, act, H, urow, rec.data(), BH ? BH + b * H : nullptr, hp, cp,
                          sv.data(), c1.data(), h1.data());
            }
            T* du = I ? durow.data() : DU + row * GH;
            T* drec = cell == GRU ? drec_gru.data() : du;
            cell_bwd<T>(cell, act, H, dh.data(), Hs + row * H, hp, cp, sv.data(), du, drec, cr,
                        cell == LSTM ? dc.data() + (b - b0) * H : nullptr,
                        DB ? DB + b * H : nullptr);
            if (I) {  // the projection: dbx += du, dwx += x ⊗ du, dx = du · wxᵀ
              if (dbx)
                for (int64_t j = 0; j < GH; ++j) dbx[j] += du[j];
              for (int64_t i = 0; i < I; ++i) {
                const T xi = In[row * I + i];
                const T* w = WX + i * GH;
                T* dwi = dwx + i * GH;
                for (int64_t j = 0; j < GH; ++j) dwi[j] += xi * du[j];
                DU[row * I + i] = dot(du, w, GH);  // in vector lanes, not a scalar chain
              }
            }
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
  return {dus, dtable_parts.sum(0), dbhn, I ? dwx_parts.sum(0) : dwx_parts,
          I && has_bx ? dbx_parts.sum(0) : dbx_parts};
}

}  // namespace
}  // namespace connbench

TORCH_LIBRARY_FRAGMENT(connbench, m) {
  m.def("elementwise_forward(Tensor us, Tensor table, int[] offsets, bool cyclic, int cell, "
        "int act, Tensor bhn, bool need_grad, Tensor wx, Tensor bx) -> Tensor[]",
        &connbench::forward);
  m.def("elementwise_backward(Tensor gout, Tensor hs, Tensor inputs, Tensor cs, Tensor table, "
        "int[] offsets, bool cyclic, int cell, int act, Tensor bhn, Tensor wx, Tensor bx) "
        "-> Tensor[]",
        &connbench::backward);
}
