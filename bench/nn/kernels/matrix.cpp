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
//
// The dense product (full) uses MKL's packed GEMM where the torch build exports it
// (x86 wheels do): W is packed once per sequence and every step reuses the packing,
// instead of sgemm re-packing 4–16 MB of weights per step (1.3–1.4× faster per step
// on this machine at H = 1024–2048). Elsewhere, and for fp64, it is at::mm_out.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <memory>
#include <string>
#include <vector>

#include "cellmath.h"

namespace connbench {
namespace {

// MKL's packed sgemm, looked up at load time (no MKL headers: the prototypes are
// MKL's LP64 cblas interface; the enums below are its CBLAS_* values).
using PackSize = size_t (*)(int, int, int, int);
using Pack = void (*)(int, int, int, int, int, int, float, const float*, int, float*);
using Compute = void (*)(int, int, int, int, int, int, const float*, int, const float*, int,
                         float, float*, int);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

struct Mkl {
  PackSize size = nullptr;
  Pack pack = nullptr;
  Compute compute = nullptr;
  Mkl() {
    size = reinterpret_cast<PackSize>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack_get_size"));
    pack = reinterpret_cast<Pack>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack"));
    compute = reinterpret_cast<Compute>(dlsym(RTLD_DEFAULT, "cblas_sgemm_compute"));
  }
  bool ok() const { return size && pack && compute; }
};

const Mkl& mkl() {
  static const Mkl m;
  return m;
}

// B (K, N) packed for out (M, N) = a (M, K) · B, reused for every step of a sequence
struct PackedB {
  at::Tensor buf;
  int M = 0, N = 0, K = 0;

  static bool usable(const at::Tensor& b, int64_t M) {
    const bool int32 = M < (1 << 30) && b.size(0) < (1 << 30) && b.size(1) < (1 << 30);
    return mkl().ok() && b.scalar_type() == at::kFloat && b.dim() == 2 && int32 &&
           (b.stride(1) == 1 || b.stride(0) == 1);
  }
  PackedB(const at::Tensor& b, int64_t m) : M(m), N(b.size(1)), K(b.size(0)) {
    const bool rows = b.stride(1) == 1;  // row-major B, or the transpose of a row-major Bᵀ
    const int ld = rows ? b.stride(0) : b.stride(1);
    const size_t bytes = mkl().size(kBMatrix, M, N, K);
    buf = at::empty({static_cast<int64_t>(bytes / sizeof(float)) + 16}, b.options());
    mkl().pack(kRowMajor, kBMatrix, rows ? kNoTrans : kTrans, M, N, K, 1.0f,
               b.data_ptr<float>(), std::max(ld, 1), buf.data_ptr<float>());
  }
  // out = a·B (+ out when accumulate); a and out contiguous rows
  void mm(const at::Tensor& a, at::Tensor& out, bool accumulate) const {
    mkl().compute(kRowMajor, kNoTrans, kPacked, M, N, K, a.data_ptr<float>(), K,
                  buf.data_ptr<float>(), N, accumulate ? 1.0f : 0.0f, out.data_ptr<float>(), N);
  }
};

// The product h·W of one step, and its transpose g·Wᵀ, for each kind of plan.
// `ops` are the operands the structure prepared once per sequence (see fused_plan()).
struct Product {
  std::string kind;
  std::vector<at::Tensor> ops;
  at::Tensor tmp1, tmp2, tmp3;  // per-sequence scratch, allocated on first use
  std::unique_ptr<PackedB> packed;  // dense: the one operand, packed on first use

  // the packed operand for a dense product with h's rows, or null (use at::mm_out)
  const PackedB* pack_for(const at::Tensor& h) {
    if (!packed && PackedB::usable(ops[0], h.size(0)) && h.is_contiguous())
      packed = std::make_unique<PackedB>(ops[0], h.size(0));
    return packed && packed->M == h.size(0) && h.is_contiguous() ? packed.get() : nullptr;
  }

  // out = h·W
  void forward(const at::Tensor& h, at::Tensor& out) {
    if (kind == "dense") {  // ops: Wᵀ as (H, gates·H)
      if (const PackedB* p = pack_for(h)) p->mm(h, out, false);
      else at::mm_out(out, h, ops[0]);
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
    const PackedB* packed_w = kind == "dense" ? pack_for(g) : nullptr;
    if (packed_w) {  // ops: W (gates·H, H)
      packed_w->mm(g, out, accumulate);
    } else if (kind == "dense" || kind == "block") {  // ops: W (gates·H, H) / wᵀ (G, gates·n, n)
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

// need_grad false (inference): nothing is kept for a backward, so the gates live in a
// per-thread row buffer and the LSTM cell state in two alternating (R, k) slots
std::vector<at::Tensor> forward(const at::Tensor& us_in, std::string kind,
                                std::vector<at::Tensor> ops, int64_t cell, int64_t act,
                                const at::Tensor& bhn_in, bool need_grad,
                                const at::Tensor& wx_in, const at::Tensor& bx_in) {
  // us (T, …, B, gates·k); or, when wx (I, gates·k) is given, x (T, B, I), projected
  // here row by row (plain (B, k) state layouts only: dense, lowrank)
  const at::Tensor us = us_in.contiguous(), wx = wx_in.contiguous(), bx = bx_in.contiguous();
  const int64_t I = wx.numel() ? wx.size(0) : 0;
  const int64_t gates = cell == GRU ? 3 : cell == LSTM ? 4 : 1;
  const int64_t GK = I ? wx.size(1) : us.size(-1);
  TORCH_CHECK(us.dim() >= 3 && GK % gates == 0,
              "fused matrix kernel: us must be (T, …, B, gates*k), got ", us.sizes());
  TORCH_CHECK(!I || (us.dim() == 3 && us.size(2) == I && (kind == "dense" || kind == "lowrank")),
              "fused matrix kernel: x ", us.sizes(), " and wx ", wx.sizes(),
              " (the kernel projects only for dense and lowrank plans)");
  const int64_t T_ = us.size(0), k = GK / gates;
  const int64_t R = I ? us.size(1) : us[0].numel() / GK;
  std::vector<int64_t> state_sizes(us.sizes().begin(), us.sizes().end());
  state_sizes.back() = k;
  auto hs = at::empty(state_sizes, us.options());
  auto saved = at::empty({need_grad ? T_ : 0, R, saved_per_unit(cell) * k}, us.options());
  auto cs = at::empty({cell == LSTM ? (need_grad ? T_ : 2) : 0, R, k}, us.options());
  auto rec = I ? at::empty({R, GK}, us.options()) : at::empty(us[0].sizes(), us.options());
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
    const T* WX = I ? wx.data_ptr<T>() : nullptr;
    const T* BX = I && bx.numel() ? bx.data_ptr<T>() : nullptr;
    // per-thread row buffers (gates without grad, the projected input), allocated once
    const int64_t per_thread = (need_grad ? 0 : S) + (I ? GK : 0);
    auto work = at::empty({at::get_num_threads(), per_thread}, us.options());
    T* Work = work.data_ptr<T>();
    for (int64_t t = 0; t < T_; ++t) {
      if (t) {
        at::Tensor rt = rec;
        prod.forward(hs[t - 1], rt);
      } else {
        rec.zero_();
      }
      const int64_t slot = need_grad ? t : t % 2, pslot = need_grad ? t - 1 : (t + 1) % 2;
      at::parallel_for(0, R, grain(GK), [&](int64_t r0, int64_t r1) {
        T* scratch = Work + at::get_thread_num() * per_thread;
        T* u = scratch + (need_grad ? 0 : S);
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t row = t * R + r, prev = row - R;
          const T* hp = t ? Hs + prev * k : Z;
          const T* cp = (t && cell == LSTM) ? Cs + (pslot * R + r) * k : Z;
          T* s = need_grad ? Sv + row * S : scratch;
          const T* urow = U + row * GK;
          if (I) {
            project_row(I, GK, U + row * I, WX, BX, u);
            urow = u;
          }
          cell_fwd<T>(cell, act, k, urow, Rec + r * GK, BH ? BH + r * k : nullptr, hp, cp, s,
                      cell == LSTM ? Cs + (slot * R + r) * k : nullptr, Hs + row * k);
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
  m.def("matrix_forward(Tensor us, str kind, Tensor[] ops, int cell, int act, Tensor bhn, "
        "bool need_grad, Tensor wx, Tensor bx) -> Tensor[]",
        &connbench::forward);
  m.def("matrix_backward(Tensor gout, Tensor hs, Tensor saved, Tensor cs, str kind, "
        "Tensor[] ops, int cell, int act, Tensor bhn) -> Tensor[]",
        &connbench::backward);
}
