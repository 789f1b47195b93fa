// Whole-sequence kernels for matrix structures (full, block, block_shuffle, lowrank,
// butterfly's two-factor Monarch form, random's CSR): the time loop runs here, each step
// calls the product in place into a buffer allocated once (at::mm_out / at::bmm_out, or
// the CSR product below), then one fused pointwise pass adds the input, applies bias,
// activation and gates, and writes h_t.
//
// The state stays in the structure's layout (…, B, k) for the whole sequence (block
// structures keep (G, B, H/G), see connbench.nn.structures.base), and the pointwise
// pass treats it as rows of k units whose gates are chunks of the last dimension.
// Weight gradients: the caller gets d(h·W) for every step and takes the weight gradient
// as one product over all steps (csr_value_grad for random), except for monarch, whose
// factors' gradients the backward sums step by step (see Product::dops).
//
// The dense product (full) uses MKL's packed GEMM where the torch build exports it
// (x86 wheels do): W is packed once per sequence and every step reuses the packing,
// instead of sgemm re-packing 4–16 MB of weights per step (1.3–1.4× faster per step
// on this machine at H = 1024–2048). Elsewhere, and for fp64, it is at::mm_out.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <cstdlib>
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

// Channel shuffle between block products (block_shuffle): dst[g', b, p] =
// src[f / gn, b, f % gn] with f = idx[g'·gn + p], states in the (G, B, gn) layout.
// `off` caches f's offset without the batch term, built once per sequence.
template <class T>
void gather_groups(const T* __restrict src, T* __restrict dst, const int64_t* off, int64_t G,
                   int64_t B, int64_t gn) {
  for (int64_t g = 0; g < G; ++g)
    for (int64_t b = 0; b < B; ++b) {
      T* d = dst + (g * B + b) * gn;
      const int64_t* o = off + g * gn;
      const T* s = src + b * gn;
      for (int64_t p = 0; p < gn; ++p) d[p] = s[o[p]];
    }
}

// Sparse products (random's CSR plan), written with cellmath.h's Vec: left to itself,
// gcc vectorises the loop over a row's nonzeros with gathers, 8–15× slower than one
// vector multiply-add per nonzero over a contiguous batch chunk.
template <class T> int64_t padded(int64_t n) { return (n + kLanes<T> - 1) / kLanes<T> * kLanes<T>; }

// A buffer on a cache-line boundary: a vector load across two lines costs two (the
// CSR product ran 1.7× slower from a 16-byte aligned std::vector)
template <class T>
struct Aligned {
  T* ptr;
  explicit Aligned(int64_t n)
      : ptr(static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64))) {
    TORCH_CHECK(ptr, "connbench: out of memory for a ", n, "-element buffer");
  }
  ~Aligned() { std::free(ptr); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  T* data() const { return ptr; }
};

// dst[j, m] = src[m, j] for src (M, K) and dst (K, ld); the rows of src stay in L1
// for a cache line's worth of columns, the writes are contiguous (writing by rows of
// src instead, one store per cache line, took 2–3× the time of the product itself)
template <class T>
void transpose(const T* __restrict src, int64_t M, int64_t K, T* __restrict dst, int64_t ld) {
  constexpr int64_t kCols = 64 / sizeof(T);
  for (int64_t j0 = 0; j0 < K; j0 += kCols)
    for (int64_t m0 = 0; m0 < M; m0 += kCols)
      for (int64_t j = j0; j < std::min(K, j0 + kCols); ++j)
        for (int64_t m = m0; m < std::min(M, m0 + kCols); ++m) dst[j * ld + m] = src[m * K + j];
}

// s[0 : NV·lanes] += Σ_nz val[nz] · hT[col[nz], b0 : b0 + NV·lanes] over one CSR row
// (s aligned); the sums stay in registers over the row's nonzeros
template <class T, int NV>
CB_INLINE void csr_row(const int64_t* col, const T* val, int64_t s, int64_t e, const T* hT,
                       int64_t ld_h, int64_t b0, T* sums) {
  if (s == e) return;
  // two nonzeros per iteration into two sets of sums: one chain of dependent
  // multiply-adds per vector would wait on the FMA latency
  Vec<T> a[NV], b[NV];
  for (int v = 0; v < NV; ++v) {
    a[v] = vload(sums + v * kLanes<T>);
    b[v] = Vec<T>{};
  }
  int64_t nz = s;
  for (; nz + 1 < e; nz += 2) {
    const T w0 = val[nz], w1 = val[nz + 1];
    const T* h0 = hT + col[nz] * ld_h + b0;
    const T* h1 = hT + col[nz + 1] * ld_h + b0;
    for (int v = 0; v < NV; ++v) {
      a[v] += w0 * vload(h0 + v * kLanes<T>);
      b[v] += w1 * vload(h1 + v * kLanes<T>);
    }
  }
  if (nz < e) {
    const T* h0 = hT + col[nz] * ld_h + b0;
    for (int v = 0; v < NV; ++v) a[v] += val[nz] * vload(h0 + v * kLanes<T>);
  }
  for (int v = 0; v < NV; ++v) {
    a[v] += b[v];
    __builtin_memcpy(sums + v * kLanes<T>, &a[v], sizeof a[v]);
  }
}

// The sparse operands are CSR over column blocks: the nonzeros ordered by (column
// block, row, column), crow (nblocks·rows + 1) giving row i of block c the range
// crow[c·rows + i] .. crow[c·rows + i + 1]. Going through A one column block at a time
// keeps the rows of hT that a block reads near the core (at 256 columns and B = 32:
// 32 KB) instead of streaming all of hT from L2 for every row. Measured: it helped the
// value gradient (536 against 693 µs per 32 rows, one thread), not the product.
CB_INLINE int64_t column_blocks(int64_t crow_size, int64_t rows) {
  TORCH_CHECK(rows > 0 && (crow_size - 1) % rows == 0, "csr: crow of ", crow_size,
              " entries does not cover ", rows, " rows in whole column blocks");
  return (crow_size - 1) / rows;
}

// out (B, rows) (+)= h (B, K) · Aᵀ for A (rows, K) in blocked CSR (see above). h is
// first transposed into hT (K, Bp), the batch padded with zeros to whole vectors, so
// every nonzero is one multiply-add of a contiguous batch chunk; the sums of a row
// live in sT (rows, Bp) between column blocks. Measured single-threaded at H = 2048,
// density 0.1, B = 32: 0.5 ms unblocked against 4.4 ms for a scalar batch loop.
template <class T>
void csr_mm(const int64_t* crow, int64_t crow_size, const int64_t* col, const T* val,
            int64_t rows, const T* __restrict h, int64_t B, int64_t K, T* __restrict hT,
            T* __restrict sT, T* out, bool accumulate) {
  constexpr int64_t L = kLanes<T>;
  const int64_t Bp = padded<T>(B), nblocks = column_blocks(crow_size, rows);
  transpose(h, B, K, hT, Bp);
  const int64_t per_row = std::max<int64_t>(1, (crow[nblocks * rows] / rows) * B);
  at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / per_row), [&](int64_t r0, int64_t r1) {
    std::fill(sT + r0 * Bp, sT + r1 * Bp, T(0));
    for (int64_t c = 0; c < nblocks; ++c) {
      const int64_t* cr = crow + c * rows;
      for (int64_t i = r0; i < r1; ++i) {
        T* si = sT + i * Bp;
        int64_t b0 = 0;
        for (; b0 + 2 * L <= Bp; b0 += 2 * L) csr_row<T, 2>(col, val, cr[i], cr[i + 1], hT, Bp, b0, si + b0);
        if (b0 < Bp) csr_row<T, 1>(col, val, cr[i], cr[i + 1], hT, Bp, b0, si + b0);
      }
    }
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t b = 0; b < B; ++b) {
        T& o = out[b * rows + i];
        o = (accumulate ? o : T(0)) + sT[i * Bp + b];
      }
  });
}

// The gradient of A's stored values for out = h·Aᵀ summed over M rows (a sampled
// dense-dense product): dval[nz] = Σ_m g[m, i]·h[m, col[nz]] for the nonzeros of row i.
// The M rows go in tiles of kTile, transposed, so each nonzero is one kTile-long dot
// of row i of gT (in registers) and a contiguous row of hT; a thread owns whole CSR
// rows, so no two threads write one value.
template <class T>
void csr_value_grad(const int64_t* crow, int64_t crow_size, const int64_t* col, int64_t rows,
                    const T* h, const T* g, int64_t M, int64_t K, T* dval) {
  constexpr int64_t L = kLanes<T>, kTile = 128, NV = kTile / L;
  const int64_t nblocks = column_blocks(crow_size, rows);
  Aligned<T> hT(K * kTile), gT(rows * kTile);
  const int64_t per_row = std::max<int64_t>(1, (crow[nblocks * rows] / rows) * kTile);
  for (int64_t m0 = 0; m0 < M; m0 += kTile) {
    const int64_t mt = std::min(kTile, M - m0);
    if (mt < kTile) {  // the last tile: rows past M stay zero
      std::fill(hT.data(), hT.data() + K * kTile, T(0));
      std::fill(gT.data(), gT.data() + rows * kTile, T(0));
    }
    transpose(h + m0 * K, mt, K, hT.data(), kTile);
    transpose(g + m0 * rows, mt, rows, gT.data(), kTile);
    at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / per_row), [&](int64_t r0, int64_t r1) {
      Vec<T> gi[NV];
      for (int64_t c = 0; c < nblocks; ++c) {
        const int64_t* cr = crow + c * rows;
        for (int64_t i = r0; i < r1; ++i) {
          if (cr[i] == cr[i + 1]) continue;
          for (int64_t v = 0; v < NV; ++v) gi[v] = vload(gT.data() + i * kTile + v * L);
          for (int64_t nz = cr[i]; nz < cr[i + 1]; ++nz) {
            const T* hj = hT.data() + col[nz] * kTile;
            Vec<T> a = gi[0] * vload(hj);
            for (int64_t v = 1; v < NV; ++v) a += gi[v] * vload(hj + v * L);
            dval[nz] += hsum(a);
          }
        }
      }
    });
  }
}

// The product h·W of one step, and its transpose g·Wᵀ, for each kind of plan.
// `ops` are the operands the structure prepared once per sequence (see fused_plan()).
struct Product {
  std::string kind;
  std::vector<at::Tensor> ops;
  at::Tensor tmp1, tmp2, tmp3;  // per-sequence scratch, allocated on first use
  std::unique_ptr<PackedB> packed;  // dense: the one operand, packed on first use
  std::vector<int64_t> offsets;  // shuffle: source offsets of the gather, for one batch size
  int64_t offsets_batch = -1;
  // monarch, when a backward is to come: `inter` is where the forward keeps this step's
  // first product, permuted (G·nl, B, nh), and where the backward reads it; `hprev` is
  // h_{t−1}; `dops` accumulate the gradients of the forward operands W1, W2 over the
  // steps, each step's two small bmm's while its operands are in cache (one batched
  // product over all steps afterwards spent 70 % of its time permuting 26 MB tensors)
  at::Tensor inter, hprev;
  std::vector<at::Tensor> dops;

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
    } else if (kind == "shuffle") {  // ops: w (G, n, gates·n), gather index (G·gates·n)
      scratch(tmp1, out.sizes(), h);
      at::bmm_out(tmp1, h, ops[0]);
      gather(tmp1, out, ops[1]);
    } else if (kind == "csr") {  // ops: Wᵀ (gates·H, H) as CSR crow, col, values
      sparse(ops[0], ops[1], ops[2], h, out, false);
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
      at::Tensor y1 = inter.defined() ? inter : tmp2;
      at::bmm_out(tmp1, h, ops[0]);
      y1.view({G, nl, B, nh}).copy_(tmp1.view({nh, B, G, nl}).permute({2, 3, 1, 0}));
      at::bmm_out(tmp3, y1, ops[1]);
      out.view({nh, B, G, nl}).copy_(tmp3.view({G, nl, B, nh}).permute({3, 2, 0, 1}));
    } else {
      TORCH_CHECK(false, "fused matrix kernel: unknown plan kind '", kind,
                  "'; allowed: dense, block, shuffle, csr, lowrank, monarch");
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
    } else if (kind == "shuffle") {  // ops: wᵀ (G, gates·n, n), the inverse gather index
      scratch(tmp2, g.sizes(), g);
      gather(g, tmp2, ops[1]);
      accumulate ? (void)out.baddbmm_(tmp2, ops[0]) : (void)at::bmm_out(out, tmp2, ops[0]);
    } else if (kind == "csr") {  // ops: W (H, gates·H) as CSR crow, col, values
      sparse(ops[0], ops[1], ops[2], g, out, accumulate);
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
      if (inter.defined()) {  // d W2 += y1ᵀ·dz, d W1 += h_{t−1}ᵀ·dy1 (this step's share)
        if (dops.empty()) {
          dops = {at::zeros({nh, nl, Gnl}, g.options()), at::zeros({Gnl, nh, nh}, g.options())};
        }
        dops[1].baddbmm_(inter.transpose(1, 2), tmp3);
        dops[0].baddbmm_(hprev.transpose(1, 2), tmp1);
      }
    }
  }

  // dst = src shuffled by `index` (see gather_groups); src, dst (G, B, gn) contiguous
  void gather(const at::Tensor& src, at::Tensor& dst, const at::Tensor& index) {
    const int64_t G = src.size(0), B = src.size(1), gn = src.size(2);
    if (offsets.size() != static_cast<size_t>(G * gn) || offsets_batch != B) {
      const int64_t* idx = index.data_ptr<int64_t>();
      offsets.resize(G * gn);
      for (int64_t q = 0; q < G * gn; ++q) offsets[q] = (idx[q] / gn) * B * gn + idx[q] % gn;
      offsets_batch = B;
    }
    AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "connbench_gather", [&] {
      gather_groups(src.data_ptr<scalar_t>(), dst.data_ptr<scalar_t>(), offsets.data(), G, B,
                    gn);
    });
  }

  // out (+)= h · Aᵀ for A in blocked CSR (see csr_mm); h (B, K), out (B, rows) contiguous
  void sparse(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
              const at::Tensor& h, at::Tensor& out, bool accumulate) {
    const int64_t B = h.size(0), K = h.size(1), rows = out.size(1);
    const int64_t Bp = h.scalar_type() == at::kDouble ? padded<double>(B) : padded<float>(B);
    scratch(tmp1, {K, Bp}, h);  // at::empty: aligned to 64 bytes, as the loads want
    scratch(tmp2, {rows, Bp}, h);
    AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "connbench_csr", [&] {
      csr_mm(crow.data_ptr<int64_t>(), crow.numel(), col.data_ptr<int64_t>(),
             val.data_ptr<scalar_t>(), rows, h.data_ptr<scalar_t>(), B, K,
             tmp1.data_ptr<scalar_t>(), tmp2.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
             accumulate);
    });
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
  const bool plain = kind == "dense" || kind == "lowrank" || kind == "csr";
  TORCH_CHECK(!I || (us.dim() == 3 && us.size(2) == I && plain),
              "fused matrix kernel: x ", us.sizes(), " and wx ", wx.sizes(),
              " (the kernel projects only for dense, lowrank and csr plans)");
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
  // monarch keeps each step's permuted first product for the backward's weight grads
  const bool keep = need_grad && kind == "monarch";
  auto inters = keep ? at::empty({T_, ops[0].size(2), us.size(-2), us.size(1)}, us.options())
                     : at::empty({0}, us.options());
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
        if (keep) prod.inter = inters[t];
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
  return {hs, saved, cs, inters};
}

// Returns (d us, d(h_{t-1}·W) for every step, d b_hn per row), then, where the forward
// kept `inters` (monarch), the gradients of its operands W1, W2 summed over the steps.
std::vector<at::Tensor> backward(const at::Tensor& gout_in, const at::Tensor& hs,
                                 const at::Tensor& saved, const at::Tensor& cs, std::string kind,
                                 std::vector<at::Tensor> ops, int64_t cell, int64_t act,
                                 const at::Tensor& bhn, const at::Tensor& inters) {
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
      if (t) {
        if (inters.numel()) {
          prod.inter = inters[t];
          prod.hprev = hs[t - 1];
        }
        prod.backward(drecs[t], carry, /*accumulate=*/cell == GRU);
      }
    }
  });
  std::vector<at::Tensor> out{dus, drecs, dbhn};
  out.insert(out.end(), prod.dops.begin(), prod.dops.end());
  return out;
}

// d values of A (rows, K) in CSR for out = h·Aᵀ, summed over the rows of h (M, K) and
// g = d out (M, rows): the weight gradient of a csr plan over a whole sequence.
at::Tensor csr_value_grad_op(const at::Tensor& crow_in, const at::Tensor& col_in,
                             const at::Tensor& h_in, const at::Tensor& g_in) {
  const at::Tensor crow = crow_in.contiguous(), col = col_in.contiguous();
  const at::Tensor h = h_in.contiguous(), g = g_in.contiguous();
  const int64_t rows = g.size(-1);
  TORCH_CHECK(h.dim() == 2 && g.dim() == 2 && h.size(0) == g.size(0),
              "csr_value_grad: h ", h.sizes(), " and g ", g.sizes(), " differ in rows");
  auto dval = at::zeros({col.numel()}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "connbench_csr_value_grad", [&] {
    csr_value_grad(crow.data_ptr<int64_t>(), crow.numel(), col.data_ptr<int64_t>(), rows,
                   h.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), h.size(0), h.size(1),
                   dval.data_ptr<scalar_t>());
  });
  return dval;
}

}  // namespace
}  // namespace connbench

TORCH_LIBRARY_FRAGMENT(connbench, m) {
  m.def("matrix_forward(Tensor us, str kind, Tensor[] ops, int cell, int act, Tensor bhn, "
        "bool need_grad, Tensor wx, Tensor bx) -> Tensor[]",
        &connbench::forward);
  m.def("matrix_backward(Tensor gout, Tensor hs, Tensor saved, Tensor cs, str kind, "
        "Tensor[] ops, int cell, int act, Tensor bhn, Tensor inters) -> Tensor[]",
        &connbench::backward);
  m.def("csr_value_grad(Tensor crow, Tensor col, Tensor h, Tensor g) -> Tensor",
        &connbench::csr_value_grad_op);
}
