// 1-bit approximation of W x for the activation predictor (bits_* in kernels.h). Portable code,
// baseline flags.
//
// Table: for each group of 8 input columns, the 256 sums of every subset of its x values
// (cols / 8 * 256 floats, 96 KB at cols = 768, L2-resident), then sum(x). A row's score is then one
// look-up per byte of its bits. Measured (Zen 5, one core, table and bits in cache): ~6 ns per row
// at cols = 256 and ~20 ns at cols = 768; 4-column groups (16-entry tables, 12 KB at 768, in L1)
// took twice as long (twice the look-ups), and an AVX-512 masked-add loop over x (no table, 4 rows
// at a time) was ~25 % faster at cols = 768 and no faster at 256: not worth a per-ISA path.
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/kernels.h"
#include "kernels/kernels_internal.h"

namespace rwkvl::kern {

namespace {
constexpr int64_t kGroupCols = 8, kGroupEntries = 256;

// One score from its parts, the only place the two are combined: bits_scores_rows and bits_scores_chunk share it so
// that both round alike (this file is compiled with -ffp-contract=off: no fused multiply-add on any target).
inline float finish(float lo, float sum, float step, float raw) { return lo * sum + step * raw; }
}  // namespace

size_t bits_table_floats(int64_t cols) {
  RWKVL_CHECK(cols >= 0 && cols % kGroupCols == 0);
  return static_cast<size_t>(cols / kGroupCols * kGroupEntries + 1);
}

void bits_prepare(const float* x, int64_t cols, float* table) {
  RWKVL_CHECK(cols >= 0 && cols % kGroupCols == 0);
  const int64_t ng = cols / kGroupCols;
  for (int64_t g = 0; g < ng; ++g) {
    const float* xg = x + g * kGroupCols;
    float* t = table + g * kGroupEntries;
    // Subset sums of the low and the high 4 columns, then every pair: entry (h << 4 | l) = lo[l] + hi[h]
    // (independent adds that vectorise, instead of a 256-long dependent chain).
    float lo[16], hi[16];
    lo[0] = hi[0] = 0.0f;
    for (int b = 1; b < 16; ++b) {
      const int low = __builtin_ctz(static_cast<unsigned>(b));
      lo[b] = lo[b & (b - 1)] + xg[low];
      hi[b] = hi[b & (b - 1)] + xg[4 + low];
    }
    for (int h = 0; h < 16; ++h)
      for (int l = 0; l < 16; ++l) t[h * 16 + l] = lo[l] + hi[h];
  }
  float s = 0.0f;
  for (int64_t c = 0; c < cols; ++c) s += x[c];
  table[ng * kGroupEntries] = s;
}

void bits_scores_rows(const uint8_t* bits, const float* lo, const float* step, int64_t cols, const float* table,
                      float* score, int64_t r0, int64_t r1) {
  RWKVL_CHECK(cols >= 0 && cols % kGroupCols == 0 && 0 <= r0 && r0 <= r1);
  const int64_t nb = cols / kGroupCols;  // bytes per row = groups
  const float sum = table[nb * kGroupEntries];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = bits + r * nb;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;  // independent chains
    const float* t = table;
    int64_t i = 0;
    // 8 bytes per load, bytes extracted by shifts (halves the loads against byte loads: ~15 % faster).
    for (; i + 8 <= nb; i += 8, t += 8 * kGroupEntries) {
      uint64_t u;
      std::memcpy(&u, p + i, 8);
      a0 += t[u & 255];
      a1 += t[256 + ((u >> 8) & 255)];
      a2 += t[512 + ((u >> 16) & 255)];
      a3 += t[768 + ((u >> 24) & 255)];
      a0 += t[1024 + ((u >> 32) & 255)];
      a1 += t[1280 + ((u >> 40) & 255)];
      a2 += t[1536 + ((u >> 48) & 255)];
      a3 += t[1792 + (u >> 56)];
    }
    for (; i < nb; ++i) a0 += table[i * kGroupEntries + p[i]];
    score[r] = finish(lo[r], sum, step[r], (a0 + a1) + (a2 + a3));
  }
}

size_t bits_chunk_table_floats(int64_t cols) {
  RWKVL_CHECK(cols >= 0 && cols % kGroupCols == 0);
  return static_cast<size_t>(cols / 4 * 16 * kBitsLanes + kBitsLanes);
}

// Per 4-column group q and entry b < 16, lane l: the subset sum of input l's columns 4q + (set bits of b), built as
// bits_prepare builds its lo / hi halves (lo[b] = lo[b & (b - 1)] + x[lowest bit]); then each input's sum(x) in
// column order. Lanes of n..kBitsLanes-1 hold zeros.
void bits_prepare_chunk(const float* X, int64_t ldx, int64_t n, int64_t cols, float* table) {
  RWKVL_CHECK(cols >= 0 && cols % kGroupCols == 0 && n >= 1 && n <= kBitsLanes && ldx >= cols);
  constexpr int64_t L = kBitsLanes;
  const int64_t nq = cols / 4;
  float* sums = table + nq * 16 * L;
  for (int64_t l = 0; l < L; ++l) sums[l] = 0.0f;
  for (int64_t q = 0; q < nq; ++q) {
    // The group's 4 columns of every input with the inputs side by side (zeros past n), so that the loops over the
    // lanes below read and write contiguous floats (they vectorise) instead of one input's row per lane.
    alignas(64) float xt[4][L] = {};
    for (int64_t l = 0; l < n; ++l)
      for (int c = 0; c < 4; ++c) xt[c][l] = X[l * ldx + 4 * q + c];
    float* t = table + q * 16 * L;
    for (int64_t l = 0; l < L; ++l) t[l] = 0.0f;
    for (int b = 1; b < 16; ++b) {
      const float* x = xt[__builtin_ctz(static_cast<unsigned>(b))];
      const float* prev = t + (b & (b - 1)) * L;
      float* e = t + b * L;
      for (int64_t l = 0; l < L; ++l) e[l] = prev[l] + x[l];
    }
    for (int c = 0; c < 4; ++c)
      for (int64_t l = 0; l < L; ++l) sums[l] += xt[c][l];
  }
}

void bits_scores_chunk(const uint8_t* bits, const float* lo, const float* step, int64_t cols, const float* table,
                       int64_t n, float* score, int64_t ld_score, int64_t r0, int64_t r1) {
  RWKVL_CHECK(cols >= 0 && cols % kGroupCols == 0 && 0 <= r0 && r0 <= r1 && n >= 1 && n <= kBitsLanes && ld_score >= r1);
  constexpr int64_t kRows = 64;
  const int64_t nb = cols / kGroupCols;
  const float* sums = table + cols / 4 * 16 * kBitsLanes;
  alignas(64) float raw[kRows * kBitsLanes];
  for (int64_t b = r0; b < r1; b += kRows) {
    const int64_t e = std::min(r1, b + kRows);
    detail::bits_sums(bits, nb, table, raw, b, e);
    // finished in place, a row's lanes side by side (the loop over the lanes vectorises), then copied out per input
    for (int64_t r = b; r < e; ++r) {
      float* __restrict a = raw + (r - b) * kBitsLanes;
      for (int64_t l = 0; l < kBitsLanes; ++l) a[l] = finish(lo[r], sums[l], step[r], a[l]);
    }
    for (int64_t l = 0; l < n; ++l)
      for (int64_t r = b; r < e; ++r) score[l * ld_score + r] = raw[(r - b) * kBitsLanes + l];
  }
}

}  // namespace rwkvl::kern
