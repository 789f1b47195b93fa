// Whole-sequence kernels for matrix structures (full, block, lowrank, butterfly's
// two-factor Monarch form): the time loop runs here, each step calls the BLAS product
// in place into a buffer allocated once (at::mm_out / at::bmm_out), then one fused
// pointwise pass adds the input, applies bias, activation and gates, and writes h_t.
//
// The state stays in the structure's layout (…, B, k) for the whole sequence (block
// structures keep (G, B, H/G), see connbench.nn.structures.base), and the pointwise
// pass treats it as rows of k units whose gates are chunks of the last dimension.
// Weight gradients are not computed here: the caller gets d(h·W) for every step and
// takes the weight gradient as one batched product over all steps.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cellmath.h"

namespace connbench {
namespace {

// The product h·W of one step, and its transpose g·Wᵀ, for each kind of plan.
// `ops` are the operands the structure prepared once per sequence (see fused_plan()).
struct Product {
  std::string kind;
  std::vector<at::Tensor> ops;
  at::Tensor tmp1, tmp2, tmp3;  // per-sequence scratch, allocated on first use

  // out = h·W
  void forward(const at::Tensor& h, at::Tensor& out) {
    if (kind == "dense") {  // ops: Wᵀ as (H, gates·H)
      at::mm_out(out, h, ops[0]);
    } else if (kind == "block") {  // ops: w (G, n, gates·n); state (G, B, n)
      at::bmm_out(out, h, ops[0]);
    } else if (kind == "lowrank") {  // ops: U (H, r), V (r, gates·H)
      scratch(tmp1, {h.size(0), ops[0].size(1)}, h);
      at::mm_out(tmp1, h, ops[0]);
      at::mm_out(out, tmp1, ops[1]);
    } else if (kind == "monarch") {  // ops: W1 (nh, nl, G·nl), W2 (G·nl, nh, nh)
      const int64_t nh = h.size(0), B = h.size(1), nl = h.size(2);
      const int64_t Gnl = ops[0].size(2), G = Gnl / nl;
      scratch(tmp1, {nh, B, Gnl}, h);
      scratch(tmp2, {Gnl, B, nh}, h);
      scratch(tmp3, {Gnl, B, nh}, h);
      at::bmm_out(tmp1, h, ops[0]);
      tmp2.view({G, nl, B, nh}).copy_(tmp1.view({nh, B, G, nl}).permute({2, 3, 1, 0}));
      at::bmm_out(tmp3, tmp2, ops[1]);
      out.view({nh, B, G, nl}).copy_(tmp3.view({G, nl, B, nh}).permute({3, 2, 0, 1}));
    } else {
      TORCH_CHECK(false, "fused matrix kernel: unknown plan kind '", kind,
                  "'; allowed: dense, block, lowrank, monarch");
    }
  }

  // out = g·Wᵀ (accumulate: out += g·Wᵀ). ops: the transposed operands, contiguous
  void backward(const at::Tensor& g, at::Tensor& out, bool accumulate) {
    if (kind == "dense" || kind == "block") {  // ops: W (gates·H, H) / wᵀ (G, gates·n, n)
      const bool b = kind == "block";
      if (!accumulate) b ? (void)at::bmm_out(out, g, ops[0]) : (void)at::mm_out(out, g, ops[0]);
      else b ? (void)out.baddbmm_(g, ops[0]) : (void)out.addmm_(g, ops[0]);
    } else if (kind == "lowrank") {  // ops: Vᵀ (gates·H, r), Uᵀ (r, H)
      scratch(tmp1, {g.size(0), ops[0].size(1)}, g);
      at::mm_out(tmp1, g, ops[0]);
      accumulate ? (void)out.addmm_(tmp1, ops[1]) : (void)at::mm_out(out, tmp1, ops[1]);
    } else {  // monarch; ops: W2ᵀ (G·nl, nh, nh), W1ᵀ (nh, G·nl, nl)
      const int64_t nh = g.size(0), B = g.size(1), Gnl = g.size(2), nl = ops[1].size(2);
      const int64_t G = Gnl / nl;
      scratch(tmp1, {nh, B, Gnl}, g);
      scratch(tmp2, {Gnl, B, nh}, g);
      scratch(tmp3, {Gnl, B, nh}, g);
      tmp3.view({G, nl, B, nh}).copy_(g.view({nh, B, G, nl}).permute({2, 3, 1, 0}));
      at::bmm_out(tmp2, tmp3, ops[0]);
      tmp1.view({nh, B, G, nl}).copy_(tmp2.view({G, nl, B, nh}).permute({3, 2, 0, 1}));
      accumulate ? (void)out.baddbmm_(tmp1, ops[1]) : (void)at::bmm_out(out, tmp1, ops[1]);
    }
  }

  static void scratch(at::Tensor& t, at::IntArrayRef sizes, const at::Tensor& like) {
    if (!t.defined() || t.sizes() != sizes) t = at::empty(sizes, like.options());
  }
};

// Rows of the pointwise pass per thread: small steps stay on one thread, because an
// OpenMP region costs more than the arithmetic below ~16k elements.
int64_t grain(int64_t width) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width)); }

std::vector<at::Tensor> forward(const at::Tensor& us_in, std::string kind,
                                std::vector<at::Tensor> ops, int64_t cell, int64_t act,
                                const at::Tensor& bhn_in) {
  const at::Tensor us = us_in.contiguous();
  const int64_t gates = cell == GRU ? 3 : cell == LSTM ? 4 : 1;
  TORCH_CHECK(us.dim() >= 3 && us.size(-1) % gates == 0,
              "fused matrix kernel: us must be (T, …, B, gates*k), got ", us.sizes());
  const int64_t T_ = us.size(0), GK = us.size(-1), k = GK / gates;
  const int64_t R = us[0].numel() / GK;
  std::vector<int64_t> state_sizes(us.sizes().begin(), us.sizes().end());
  state_sizes.back() = k;
  auto hs = at::empty(state_sizes, us.options());
  auto saved = at::empty({T_, R, saved_per_unit(cell) * k}, us.options());
  auto cs = at::empty({cell == LSTM ? T_ : 0, R, k}, us.options());
  auto rec = at::empty(us[0].sizes(), us.options());
  auto zeros = at::zeros({R, k}, us.options());
  const at::Tensor bhn = bhn_in.numel() ? bhn_in.contiguous() : bhn_in;
  Product prod{kind, ops};
  AT_DISPATCH_FLOATING_TYPES(us.scalar_type(), "connbench_matrix_forward", [&] {
    using T = scalar_t;
    const int64_t S = saved_per_unit(cell) * k;
    const T *U = us.data_ptr<T>(), *Z = zeros.data_ptr<T>();
    const T* BH = bhn.numel() ? bhn.data_ptr<T>() : nullptr;
    T *Hs = hs.data_ptr<T>(), *Sv = saved.data_ptr<T>(), *Cs = cs.data_ptr<T>();
    T* Rec = rec.data_ptr<T>();
    for (int64_t t = 0; t < T_; ++t) {
      if (t) {
        at::Tensor rt = rec;
        prod.forward(hs[t - 1], rt);
      } else {
        rec.zero_();
      }
      at::parallel_for(0, R, grain(GK), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t row = t * R + r, prev = row - R;
          const T* hp = t ? Hs + prev * k : Z;
          const T* cp = (t && cell == LSTM) ? Cs + prev * k : Z;
          cell_fwd<T>(cell, act, k, U + row * GK, Rec + r * GK, BH ? BH + r * k : nullptr, hp, cp,
                      Sv + row * S, cell == LSTM ? Cs + row * k : nullptr, Hs + row * k);
        }
      });
    }
  });
  return {hs, saved, cs};
}

// Returns (d us, d(h_{t-1}·W) for every step, d b_hn per row).
std::vector<at::Tensor> backward(const at::Tensor& gout_in, const at::Tensor& hs,
                                 const at::Tensor& saved, const at::Tensor& cs, std::string kind,
                                 std::vector<at::Tensor> ops, int64_t cell, int64_t act,
                                 const at::Tensor& bhn) {
  const at::Tensor gout = gout_in.contiguous();
  const int64_t gates = cell == GRU ? 3 : cell == LSTM ? 4 : 1;
  const int64_t T_ = hs.size(0), k = hs.size(-1), GK = gates * k, R = hs[0].numel() / k;
  std::vector<int64_t> gate_sizes(hs.sizes().begin(), hs.sizes().end());
  gate_sizes.back() = GK;
  auto dus = at::empty(gate_sizes, hs.options());
  auto drecs = cell == GRU ? at::empty(gate_sizes, hs.options()) : dus;
  auto dbhn = at::zeros({bhn.numel() ? R : 0, k}, hs.options());
  auto carry = at::zeros(hs[0].sizes(), hs.options());
  auto dc = at::zeros({cell == LSTM ? R : 0, k}, hs.options());
  auto zeros = at::zeros({R, k}, hs.options());
  Product prod{kind, ops};
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "connbench_matrix_backward", [&] {
    using T = scalar_t;
    const int64_t S = saved_per_unit(cell) * k;
    const T *G = gout.data_ptr<T>(), *Hs = hs.data_ptr<T>(), *Sv = saved.data_ptr<T>();
    const T *Cs = cs.data_ptr<T>(), *Z = zeros.data_ptr<T>();
    T *DU = dus.data_ptr<T>(), *DR = drecs.data_ptr<T>(), *Cr = carry.data_ptr<T>();
    T *DC = dc.data_ptr<T>(), *DB = bhn.numel() ? dbhn.data_ptr<T>() : nullptr;
    for (int64_t t = T_ - 1; t >= 0; --t) {
      at::parallel_for(0, R, grain(GK), [&](int64_t r0, int64_t r1) {
        std::vector<T> dh(k);
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t row = t * R + r, prev = row - R;
          const T* g = G + row * k;
          T* cr = Cr + r * k;
          for (int64_t j = 0; j < k; ++j) dh[j] = g[j] + cr[j];
          const T* hp = t ? Hs + prev * k : Z;
          const T* cp = (t && cell == LSTM) ? Cs + prev * k : Z;
          cell_bwd<T>(cell, act, k, dh.data(), Hs + row * k, hp, cp, Sv + row * S,
                      DU + row * GK, DR + row * GK, cr, cell == LSTM ? DC + r * k : nullptr,
                      DB ? DB + r * k : nullptr);
        }
      });
      if (t) prod.backward(drecs[t], carry, /*accumulate=*/cell == GRU);
    }
  });
  return {dus, drecs, dbhn};
}

}  // namespace
}  // namespace connbench

TORCH_LIBRARY_FRAGMENT(connbench, m) {
  m.def("matrix_forward(Tensor us, str kind, Tensor[] ops, int cell, int act, Tensor bhn) "
        "-> Tensor[]",
        &connbench::forward);
  m.def("matrix_backward(Tensor gout, Tensor hs, Tensor saved, Tensor cs, str kind, "
        "Tensor[] ops, int cell, int act, Tensor bhn) -> Tensor[]",
        &connbench::backward);
}
