// Native CPU kernels of leakjax.sparse.conv.pair_conv (forward and its VJP) for the XLA FFI.
//
// Every valid pair of a PairList becomes an "entry" (src row, dst row, weight index k) of one
// sample; the weight is one stacked array [K', C_in, C_out] = [centre?, direct offsets, mirrored
// offsets?]. The centre tap adds one entry (r, r, 0) per row of the mask; a mirrored list adds
// (dst, src, mirror k) for every (src, dst, k). Entry order: centre, direct (tile order), mirrored.
//
// Determinism: out rows are split into fixed blocks of kBlockRows; one thread owns a block and
// adds its entries in entry order (a stable counting sort keeps it), so every output row is
// summed in the same order whatever the thread count. The weight gradient is split into segments
// of kSegment entries of one k (a fixed size, not a function of the thread count), each summed by
// one thread in entry order, and the segments' partial sums are added in a fixed order. No atomics
// on data, no racy scatter: results are bitwise identical across runs and thread counts.
//
// Batching: every array has the same leading (batch) dims except the weight, whose leading dims
// are a prefix of the batch (vmap "broadcast_all" puts the vmapped axis first): sample i uses
// weight i / (B / Wb) and the weight gradient sums the samples of each weight.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlockRows = 128;  // output rows per work item (fixed: thread-count free)
constexpr int64_t kSegment = 4096;   // entries per weight-gradient work item (fixed, see below)
constexpr int64_t kChunk = 64;       // entries per weight-gradient chunk (stays in cache)

// Vectors of kW floats: 16 (64 bytes) where the build targets AVX-512 (32 registers), else 8;
// the register blocks below use at most kNV vectors per row.
#if defined(__AVX512F__)
constexpr int kW = 16;
constexpr int kNV = 4;
#else
constexpr int kW = 8;
constexpr int kNV = 2;
#endif
typedef float vf __attribute__((vector_size(4 * kW)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
inline vf splat(float x) { return vf{} + x; }

struct Entry {
  int32_t src, dst, k;
};

// Who runs parallel_for's items: `threads` workers in all, the caller one of them, the others
// tasks on XLA's intra-op thread pool (no thread is created per call: a Cylinder3D train step
// makes ~480 parallel_for calls). XLA's CPU runtime always gives one; without it, the caller alone.
struct Workers {
  int64_t threads;
  ffi::ThreadPool* pool;  // nullptr: no pool
};

// What the caller of parallel_for shares with its pool tasks. A task may start after the call has
// returned (the pool was busy): it then finds `closed` set and never touches `fn`.
struct Shared {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> active{0};
  std::atomic<bool> closed{false};
  int64_t items = 0;
  const std::function<void(int64_t)>* fn = nullptr;

  void work() {
    for (int64_t i = next.fetch_add(1); i < items; i = next.fetch_add(1)) (*fn)(i);
  }
};

// Run fn(item) for item in [0, items) on up to `workers.threads` workers (the caller is one).
// Which worker runs an item never changes a result (module comment). With the pool, the caller
// waits only for tasks that started before it closed the call, never for queued ones, so a busy
// pool (its threads all inside such calls) cannot deadlock: the caller does the items itself.
void parallel_for(int64_t items, const Workers& workers,
                  const std::function<void(int64_t)>& fn) {
  const int64_t threads =
      workers.pool == nullptr ? 1 : std::max<int64_t>(1, std::min(workers.threads, items));
  if (threads == 1) {
    for (int64_t i = 0; i < items; ++i) fn(i);
    return;
  }
  auto shared = std::make_shared<Shared>();
  shared->items = items;
  shared->fn = &fn;
  for (int64_t t = 1; t < threads; ++t) {
    workers.pool->Schedule([shared] {
      shared->active.fetch_add(1);
      if (!shared->closed.load()) shared->work();
      shared->active.fetch_sub(1);
    });
  }
  shared->work();
  shared->closed.store(true);
  while (shared->active.load() != 0) std::this_thread::yield();
}

int64_t product(ffi::Span<const int64_t> dims, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= dims[i];
  return p;
}

struct Pairs {
  const int32_t* src_rows;     // [B, S]
  const int32_t* dst_rows;     // [B, S]
  const int32_t* tile_offset;  // [B, S / T]
  const int32_t* num_tiles;    // [B]
  const bool* mask;            // [B, N_src]
  int64_t slots, num_tile_slots, tile, num_offsets;
  bool mirrored, centre;
};

// The entries of sample b (order: centre, direct, mirrored); rows outside [0, n) are skipped.
void sample_entries(const Pairs& p, int64_t b, int64_t n_src, int64_t n_dst,
                    std::vector<Entry>& out) {
  out.clear();
  const int32_t k0 = p.centre ? 1 : 0;
  if (p.centre) {
    const bool* m = p.mask + b * n_src;
    for (int64_t r = 0; r < n_src; ++r)
      if (m[r]) out.push_back({int32_t(r), int32_t(r), 0});
  }
  const int32_t* s = p.src_rows + b * p.slots;
  const int32_t* d = p.dst_rows + b * p.slots;
  const int32_t* to = p.tile_offset + b * p.num_tile_slots;
  const int64_t used = std::clamp<int64_t>(p.num_tiles[b], 0, p.num_tile_slots);
  for (int pass = 0; pass < (p.mirrored ? 2 : 1); ++pass) {
    for (int64_t i = 0; i < used; ++i) {
      const int32_t off = to[i];
      if (off < 0 || off >= p.num_offsets) continue;
      const int32_t k = k0 + off + (pass ? int32_t(p.num_offsets) : 0);
      for (int64_t j = i * p.tile; j < (i + 1) * p.tile; ++j) {
        int32_t a = s[j], c = d[j];
        if (pass) std::swap(a, c);  // mirrored: a symmetric map, src and dst sets are one
        if (a < 0 || a >= n_src || c < 0 || c >= n_dst) continue;
        out.push_back({a, c, k});
      }
    }
  }
}

// Stable counting sort of entries by key(e) in [0, num_keys); start[key] .. start[key + 1].
template <typename Key>
void group_by(const std::vector<Entry>& in, int64_t num_keys, Key key, std::vector<Entry>& out,
              std::vector<int64_t>& start) {
  start.assign(num_keys + 1, 0);
  for (const Entry& e : in) ++start[key(e) + 1];
  for (int64_t i = 0; i < num_keys; ++i) start[i + 1] += start[i];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  out.resize(in.size());
  for (const Entry& e : in) out[fill[key(e)]++] = e;
}

// out[r] += a[r] @ w for R rows (a[r]: ci floats; w [ci, co] row-major, columns c0 .. c0 + 8 NV).
template <int R, int NV>
inline void rows_kernel(const float* const* a, const int64_t ci, const float* w, const int64_t co,
                        const int64_t c0, float* const* out) {
  vf acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = splat(0.f);
  for (int64_t i = 0; i < ci; ++i) {
    vf wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = load(w + i * co + c0 + kW * v);
    for (int r = 0; r < R; ++r) {
      const vf x = splat(a[r][i]);
      for (int v = 0; v < NV; ++v) acc[r][v] += x * wv[v];
    }
  }
  for (int r = 0; r < R; ++r)  // in row order: a repeated dst row sees the earlier adds
    for (int v = 0; v < NV; ++v) {
      float* o = out[r] + c0 + kW * v;
      store(o, load(o) + acc[r][v]);
    }
}

template <int R>
void rows_all_columns(const float* const* a, int64_t ci, const float* w, int64_t co,
                      float* const* out) {
  int64_t c0 = 0;
  for (; c0 + kNV * kW <= co; c0 += kNV * kW) rows_kernel<R, kNV>(a, ci, w, co, c0, out);
  for (; c0 + kW <= co; c0 += kW) rows_kernel<R, 1>(a, ci, w, co, c0, out);
  for (; c0 < co; ++c0)
    for (int r = 0; r < R; ++r) {
      float sum = 0.f;
      for (int64_t i = 0; i < ci; ++i) sum += a[r][i] * w[i * co + c0];
      out[r][c0] += sum;
    }
}

void rows_any(int n, const float* const* a, int64_t ci, const float* w, int64_t co,
              float* const* out) {
  switch (n) {
    case 6: return rows_all_columns<6>(a, ci, w, co, out);
    case 5: return rows_all_columns<5>(a, ci, w, co, out);
    case 4: return rows_all_columns<4>(a, ci, w, co, out);
    case 3: return rows_all_columns<3>(a, ci, w, co, out);
    case 2: return rows_all_columns<2>(a, ci, w, co, out);
    default: return rows_all_columns<1>(a, ci, w, co, out);
  }
}

// y[b, dst] = sum over entries (src, dst, k) of x[b, src] @ w[k] (w [Wb, K', ci, co]), rows with
// no entry zero. entries[b]: the entries of sample b; x [B, n_x, ci], y [B, n_y, co].
void walk(const std::vector<std::vector<Entry>>& entries, const float* x, int64_t n_x, int64_t ci,
          const float* w, int64_t num_k, int64_t per_weight, float* y, int64_t n_y, int64_t co,
          const Workers& threads) {
  const int64_t batch = int64_t(entries.size());
  const int64_t blocks = (n_y + kBlockRows - 1) / kBlockRows;
  std::vector<std::vector<Entry>> sorted(batch);
  std::vector<std::vector<int64_t>> start(batch);
  parallel_for(batch, threads, [&](int64_t b) {
    group_by(entries[b], blocks, [](const Entry& e) { return e.dst / kBlockRows; }, sorted[b],
             start[b]);
  });
  parallel_for(batch * blocks, threads, [&](int64_t item) {
    const int64_t b = item / blocks, block = item % blocks;
    const int64_t r0 = block * kBlockRows, r1 = std::min(n_y, r0 + kBlockRows);
    float* yb = y + b * n_y * co;
    std::fill(yb + r0 * co, yb + r1 * co, 0.f);
    const float* xb = x + b * n_x * ci;
    const float* wb = w + (b / per_weight) * num_k * ci * co;
    const Entry* e = sorted[b].data() + start[b][block];
    const Entry* end = sorted[b].data() + start[b][block + 1];
    const float* a[6];
    float* o[6];
    while (e < end) {  // runs of one k, in groups of up to 6 rows
      int n = 0;
      const int32_t k = e->k;
      while (e < end && e->k == k && n < 6) {
        a[n] = xb + int64_t(e->src) * ci;
        o[n] = yb + int64_t(e->dst) * co;
        ++n;
        ++e;
      }
      rows_any(n, a, ci, wb + int64_t(k) * ci * co, co, o);
    }
  });
}

// acc[i, c] += sum over the chunk's n rows e of f[e, i0 + i] * g[e, c] for RI rows i (f [n, ci],
// g [n, co] and acc [ci, co] row-major).
template <int RI, int NV>
inline void outer_kernel(const float* f, int64_t ci, const float* g, int64_t co, int64_t n,
                         int64_t i0, int64_t c0, float* acc) {
  vf sum[RI][NV];
  for (int i = 0; i < RI; ++i)
    for (int v = 0; v < NV; ++v) sum[i][v] = load(acc + (i0 + i) * co + c0 + kW * v);
  for (int64_t e = 0; e < n; ++e) {
    vf gv[NV];
    for (int v = 0; v < NV; ++v) gv[v] = load(g + e * co + c0 + kW * v);
    for (int i = 0; i < RI; ++i) {
      const vf x = splat(f[e * ci + i0 + i]);
      for (int v = 0; v < NV; ++v) sum[i][v] += x * gv[v];
    }
  }
  for (int i = 0; i < RI; ++i)
    for (int v = 0; v < NV; ++v) store(acc + (i0 + i) * co + c0 + kW * v, sum[i][v]);
}

template <int RI>
void outer_all_columns(const float* f, int64_t ci, const float* g, int64_t co, int64_t n,
                       int64_t i0, float* acc) {
  int64_t c0 = 0;
  for (; c0 + kNV * kW <= co; c0 += kNV * kW) outer_kernel<RI, kNV>(f, ci, g, co, n, i0, c0, acc);
  for (; c0 + kW <= co; c0 += kW) outer_kernel<RI, 1>(f, ci, g, co, n, i0, c0, acc);
  for (; c0 < co; ++c0)
    for (int i = 0; i < RI; ++i) {
      float sum = acc[(i0 + i) * co + c0];
      for (int64_t e = 0; e < n; ++e) sum += f[e * ci + i0 + i] * g[e * co + c0];
      acc[(i0 + i) * co + c0] = sum;
    }
}

// acc [ci, co] += sum over `count` entries of x[src]^T g[dst], in entry order, a chunk at a time
// (the chunk's rows are gathered into contiguous buffers that stay in cache while every block of
// acc passes over them).
void outer_entries(const Entry* entries, int64_t count, const float* x, int64_t ci,
                   const float* g, int64_t co, float* acc) {
  std::vector<float> fc(kChunk * ci), gc(kChunk * co);
  for (int64_t e0 = 0; e0 < count; e0 += kChunk) {
    const int64_t n = std::min(kChunk, count - e0);
    for (int64_t e = 0; e < n; ++e) {
      std::memcpy(fc.data() + e * ci, x + int64_t(entries[e0 + e].src) * ci, ci * sizeof(float));
      std::memcpy(gc.data() + e * co, g + int64_t(entries[e0 + e].dst) * co, co * sizeof(float));
    }
    int64_t i = 0;
    for (; i + 6 <= ci; i += 6) outer_all_columns<6>(fc.data(), ci, gc.data(), co, n, i, acc);
    for (; i + 4 <= ci; i += 4) outer_all_columns<4>(fc.data(), ci, gc.data(), co, n, i, acc);
    for (; i < ci; ++i) outer_all_columns<1>(fc.data(), ci, gc.data(), co, n, i, acc);
  }
}

// grad_w[wb, k] = sum over the samples of weight wb and their entries (src, dst, k) of
// x[b, src]^T g[b, dst]; x [B, n_x, ci], g [B, n_g, co], grad_w [Wb, K', ci, co].
// The entries of each (sample, k) are cut into segments of kSegment (a fixed size, not a
// function of the thread count); each segment's partial sum is one work item, and the partials
// of (wb, k) are added in (sample, segment) order.
void weight_grad(const std::vector<std::vector<Entry>>& entries, const float* x, int64_t n_x,
                 int64_t ci, const float* g, int64_t n_g, int64_t co, float* grad_w,
                 int64_t num_k, int64_t per_weight, const Workers& threads) {
  const int64_t batch = int64_t(entries.size());
  const int64_t num_w = per_weight ? batch / per_weight : 0;
  std::vector<std::vector<Entry>> sorted(batch);
  std::vector<std::vector<int64_t>> start(batch);
  parallel_for(batch, threads, [&](int64_t b) {
    group_by(entries[b], num_k, [](const Entry& e) { return e.k; }, sorted[b], start[b]);
  });
  struct Segment {
    int64_t b, begin, end;
  };
  std::vector<Segment> segments;
  std::vector<int64_t> first(num_w * num_k + 1, 0);  // segments of (wb, k): first[..] ..
  for (int64_t wb = 0; wb < num_w; ++wb)
    for (int64_t k = 0; k < num_k; ++k) {
      first[wb * num_k + k] = int64_t(segments.size());
      for (int64_t b = wb * per_weight; b < (wb + 1) * per_weight; ++b)
        for (int64_t e = start[b][k]; e < start[b][k + 1]; e += kSegment)
          segments.push_back({b, e, std::min(e + kSegment, start[b][k + 1])});
    }
  first[num_w * num_k] = int64_t(segments.size());
  const int64_t size = ci * co;
  std::vector<float> partial(segments.size() * size);
  parallel_for(int64_t(segments.size()), threads, [&](int64_t s) {
    const Segment& seg = segments[s];
    float* acc = partial.data() + s * size;
    std::fill(acc, acc + size, 0.f);
    outer_entries(sorted[seg.b].data() + seg.begin, seg.end - seg.begin, x + seg.b * n_x * ci, ci,
                  g + seg.b * n_g * co, co, acc);
  });
  parallel_for(num_w * num_k, threads, [&](int64_t item) {
    float* out = grad_w + item * size;
    std::fill(out, out + size, 0.f);
    for (int64_t s = first[item]; s < first[item + 1]; ++s) {
      const float* p = partial.data() + s * size;
      for (int64_t j = 0; j < size; ++j) out[j] += p[j];
    }
  });
}

struct Shapes {
  int64_t batch, per_weight, num_w, n_src, n_dst, ci, co, num_k;
};

ffi::Error check(const ffi::Buffer<ffi::F32>& feats, const ffi::Buffer<ffi::F32>& weight,
                 const ffi::Buffer<ffi::S32>& src_rows, const ffi::Buffer<ffi::S32>& tile_offset,
                 const ffi::Buffer<ffi::S32>& num_tiles, const ffi::Buffer<ffi::PRED>& mask,
                 int64_t n_dst, int64_t co_out, int64_t tile, Shapes& s) {
  auto fd = feats.dimensions(), wd = weight.dimensions(), nd = num_tiles.dimensions();
  const size_t rank = nd.size();
  if (fd.size() != rank + 2 || wd.size() < 3 || src_rows.dimensions().size() != rank + 1 ||
      tile_offset.dimensions().size() != rank + 1 || mask.dimensions().size() != rank + 1 ||
      wd.size() - 3 > rank)
    return ffi::Error::InvalidArgument("leakjax pair_conv: unexpected ranks");
  s.batch = product(nd, 0, rank);
  s.n_src = fd[rank];
  s.ci = fd[rank + 1];
  s.num_k = wd[wd.size() - 3];
  s.co = wd[wd.size() - 1];
  s.n_dst = n_dst;
  s.num_w = product(wd, 0, wd.size() - 3);
  for (size_t i = 0; i + 3 < wd.size(); ++i)
    if (wd[i] != nd[i]) return ffi::Error::InvalidArgument("leakjax pair_conv: weight batch");
  s.per_weight = s.num_w ? s.batch / s.num_w : 0;
  if (wd[wd.size() - 2] != s.ci || co_out != s.co || tile <= 0 ||
      src_rows.dimensions()[rank] != tile_offset.dimensions()[rank] * tile ||
      mask.dimensions()[rank] != s.n_src)
    return ffi::Error::InvalidArgument("leakjax pair_conv: inconsistent shapes");
  return ffi::Error::Success();
}

std::vector<std::vector<Entry>> all_entries(const Pairs& p, const Shapes& s,
                                            const Workers& threads) {
  std::vector<std::vector<Entry>> entries(s.batch);
  parallel_for(s.batch, threads,
               [&](int64_t b) { sample_entries(p, b, s.n_src, s.n_dst, entries[b]); });
  return entries;
}

ffi::Error forward(ffi::Buffer<ffi::F32> feats, ffi::Buffer<ffi::F32> weight,
                   ffi::Buffer<ffi::S32> src_rows, ffi::Buffer<ffi::S32> dst_rows,
                   ffi::Buffer<ffi::S32> tile_offset, ffi::Buffer<ffi::S32> num_tiles,
                   ffi::Buffer<ffi::PRED> mask, ffi::ResultBuffer<ffi::F32> out, int64_t tile,
                   int64_t num_offsets, int64_t mirrored, int64_t centre, int64_t num_threads,
                   ffi::ThreadPool pool) {
  const Workers threads{num_threads, pool.num_threads() > 0 ? &pool : nullptr};
  auto od = out->dimensions();
  if (od.size() < 2) return ffi::Error::InvalidArgument("leakjax pair_conv: output rank");
  Shapes s;
  ffi::Error err = check(feats, weight, src_rows, tile_offset, num_tiles, mask,
                         od[od.size() - 2], od[od.size() - 1], tile, s);
  if (err.failure()) return err;
  const size_t rank = num_tiles.dimensions().size();
  Pairs p{src_rows.typed_data(), dst_rows.typed_data(), tile_offset.typed_data(),
          num_tiles.typed_data(), mask.typed_data(), src_rows.dimensions()[rank],
          tile_offset.dimensions()[rank], tile, num_offsets, mirrored != 0, centre != 0};
  auto entries = all_entries(p, s, threads);
  walk(entries, feats.typed_data(), s.n_src, s.ci, weight.typed_data(), s.num_k, s.per_weight,
       out->typed_data(), s.n_dst, s.co, threads);
  return ffi::Error::Success();
}

ffi::Error backward(ffi::Buffer<ffi::F32> feats, ffi::Buffer<ffi::F32> weight,
                    ffi::Buffer<ffi::S32> src_rows, ffi::Buffer<ffi::S32> dst_rows,
                    ffi::Buffer<ffi::S32> tile_offset, ffi::Buffer<ffi::S32> num_tiles,
                    ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32> grad_out,
                    ffi::ResultBuffer<ffi::F32> grad_feats, ffi::ResultBuffer<ffi::F32> grad_weight,
                    int64_t tile, int64_t num_offsets, int64_t mirrored, int64_t centre,
                    int64_t num_threads, ffi::ThreadPool pool) {
  const Workers threads{num_threads, pool.num_threads() > 0 ? &pool : nullptr};
  auto gd = grad_out.dimensions();
  if (gd.size() < 2) return ffi::Error::InvalidArgument("leakjax pair_conv: grad rank");
  Shapes s;
  ffi::Error err = check(feats, weight, src_rows, tile_offset, num_tiles, mask,
                         gd[gd.size() - 2], gd[gd.size() - 1], tile, s);
  if (err.failure()) return err;
  const size_t rank = num_tiles.dimensions().size();
  Pairs p{src_rows.typed_data(), dst_rows.typed_data(), tile_offset.typed_data(),
          num_tiles.typed_data(), mask.typed_data(), src_rows.dimensions()[rank],
          tile_offset.dimensions()[rank], tile, num_offsets, mirrored != 0, centre != 0};
  auto entries = all_entries(p, s, threads);
  weight_grad(entries, feats.typed_data(), s.n_src, s.ci, grad_out.typed_data(), s.n_dst, s.co,
              grad_weight->typed_data(), s.num_k, s.per_weight, threads);
  // grad_feats[src] += grad_out[dst] @ w[k]^T: the same walk with the entries reversed
  const int64_t wsize = s.ci * s.co;
  std::vector<float> wt(size_t(s.num_w * s.num_k * wsize));
  const float* w = weight.typed_data();
  parallel_for(s.num_w * s.num_k, threads, [&](int64_t m) {
    for (int64_t i = 0; i < s.ci; ++i)
      for (int64_t c = 0; c < s.co; ++c) wt[m * wsize + c * s.ci + i] = w[m * wsize + i * s.co + c];
  });
  for (auto& sample : entries)
    for (Entry& e : sample) std::swap(e.src, e.dst);
  walk(entries, grad_out.typed_data(), s.n_dst, s.co, wt.data(), s.num_k, s.per_weight,
       grad_feats->typed_data(), s.n_src, s.ci, threads);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LeakjaxPairConvFwd, forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("tile")
                                  .Attr<int64_t>("num_offsets")
                                  .Attr<int64_t>("mirrored")
                                  .Attr<int64_t>("centre")
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LeakjaxPairConvBwd, backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("tile")
                                  .Attr<int64_t>("num_offsets")
                                  .Attr<int64_t>("mirrored")
                                  .Attr<int64_t>("centre")
                                  .Attr<int64_t>("threads")
                                  .Ctx<ffi::ThreadPool>());
