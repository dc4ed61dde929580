// Deterministic mutation tests for the .pth and safetensors readers: thousands of seeded byte flips,
// truncations, insertions, deletions and "interesting value" overwrites of small valid files. Each
// mutated input must either load (and then survive a write/read round trip) or throw rwkvl::Error:
// never crash, never throw anything else, never make an absurdly large allocation.
// The per-input checks are the libFuzzer targets' cores (tests/fuzz/), compiled in here.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <random>

#define RWKVL_FUZZ_NO_ENTRY
#include "../fuzz/fuzz_pth.cpp"
#include "../fuzz/fuzz_safetensors.cpp"

#include "format/pickle.h"
#include "format/zip.h"
#include "test_util.h"

// ---- allocation watch: the largest single allocation since the last reset. Under AddressSanitizer
// its malloc hook sees every allocation (malloc, aligned_alloc, new); otherwise operator new is replaced.
#if defined(__SANITIZE_ADDRESS__)
#define RWKVL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RWKVL_ASAN 1
#endif
#endif

namespace {
std::atomic<size_t> g_largest_alloc{0};
void note_alloc(size_t n) {
  size_t cur = g_largest_alloc.load(std::memory_order_relaxed);
  while (n > cur && !g_largest_alloc.compare_exchange_weak(cur, n, std::memory_order_relaxed)) {
  }
}
}  // namespace

#ifdef RWKVL_ASAN
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*, size_t),
                                                         void (*free_hook)(const volatile void*));
namespace {
void malloc_hook(const volatile void*, size_t n) { note_alloc(n); }
void free_hook(const volatile void*) {}
const int g_hooks_installed = __sanitizer_install_malloc_and_free_hooks(malloc_hook, free_hook);
}  // namespace
#else
namespace {
void* counted_alloc(size_t n) {
  note_alloc(n);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace
void* operator new(size_t n) { return counted_alloc(n); }
void* operator new[](size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#endif

namespace rwkvl {
namespace {

using Bytes = std::string;

// Mutated inputs are a few KB: no single allocation may come anywhere near this.
constexpr size_t kAllocLimit = size_t{64} << 20;
constexpr int kIterations = 3000;

Tensor small_tensor(const std::string& name, DType dt, std::vector<int64_t> shape, int seed) {
  Tensor t = Tensor::alloc(name, dt, std::move(shape));
  auto* p = static_cast<uint8_t*>(t.mutable_data());
  for (size_t i = 0; i < t.nbytes; ++i) p[i] = static_cast<uint8_t>(i * 37 + static_cast<size_t>(seed) * 11);
  return t;
}

Bytes file_bytes(const std::string& path) { return test::read_file(path); }

struct Seed {
  Bytes bytes;
  size_t hot_begin, hot_end;  // where structure lives (the pickle, the JSON header)
  // Re-wraps mutated structure bytes into an otherwise valid file (zip records / length prefix
  // recomputed), so mutations reach the pickle VM and the JSON validation, not just the outer layer.
  std::function<Bytes(const Bytes&)> rewrap;
};

Bytes zip_of(const std::vector<std::pair<std::string, Bytes>>& entries, bool zip64) {
  Bytes out;
  zip::Writer z([&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }, zip64);
  for (const auto& [name, data] : entries) z.add(name, data.data(), data.size());
  z.finish();
  return out;
}

// The entries of a zip, with their bytes.
std::vector<std::pair<std::string, Bytes>> entries_of(const Bytes& zip_bytes) {
  const std::string p = test::temp_dir() + "/entries.zip";
  test::write_file(p, zip_bytes);
  auto f = MappedFile::open(p);
  std::vector<std::pair<std::string, Bytes>> out;
  for (const zip::Entry& e : zip::read_entries(f->data(), f->size(), p))
    out.emplace_back(e.name, Bytes(reinterpret_cast<const char*>(f->data() + e.data_offset), e.size));
  return out;
}

std::function<Bytes(const Bytes&)> pth_rewrap(const Bytes& zip_bytes, bool zip64) {
  const auto entries = entries_of(zip_bytes);  // entries[0] is data.pkl
  return [entries, zip64](const Bytes& pkl) {
    auto e = entries;
    e[0].second = pkl;
    return zip_of(e, zip64);
  };
}

Seed pth_seed_written() {
  const std::string p = test::temp_dir() + "/seed.pth";
  write_pth(p, {small_tensor("emb.weight", DType::kF32, {2, 3}, 1), small_tensor("ln.weight", DType::kF16, {4}, 2),
                small_tensor("blocks.0.att.key.weight", DType::kBF16, {2, 2}, 3)});
  Bytes b = file_bytes(p);
  auto f = MappedFile::open(p);
  const std::vector<zip::Entry> e = zip::read_entries(f->data(), f->size(), p);
  return {b, e[0].data_offset, e[0].data_offset + e[0].size, pth_rewrap(b, false)};
}

// Protocol 4, OrderedDict + BUILD state, a transposed view, a parameter, shared storage, ZIP64 records.
Seed pth_seed_crafted() {
  pickle::Writer w;
  w.proto(4);
  w.global("collections", "OrderedDict");
  w.op(0x94);
  w.op(')');
  w.op('R');
  w.op(0x94);
  w.op('(');
  auto tensor = [&](const std::string& key, int64_t offset, std::vector<int64_t> size, std::vector<int64_t> stride) {
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.op('(');
    w.op('(');
    w.str("storage");
    w.global("torch", "FloatStorage");
    w.str(key);
    w.str("cpu");
    w.integer(6);
    w.op('t');
    w.op('Q');
    w.integer(offset);
    w.tuple(size);
    w.tuple(stride);
    w.op(0x89);
    w.get(0);
    w.op(')');
    w.op('R');
    w.op('t');
    w.op('R');
  };
  w.str("t");
  tensor("0", 0, {3, 2}, {1, 3});
  w.str("p");
  w.global("torch._utils", "_rebuild_parameter");
  w.op('(');
  tensor("0", 2, {2, 2}, {2, 1});
  w.op(0x88);
  w.get(0);
  w.op(')');
  w.op('R');
  w.op('t');
  w.op('R');
  w.op('u');
  w.op('}');
  w.str("_metadata");
  w.op('}');
  w.op('s');
  w.op('b');
  w.op('.');
  const float st[6] = {0, 1, 2, 3, 4, 5};
  const Bytes out = zip_of({{"m/data.pkl", w.bytes},
                            {"m/data/0", Bytes(reinterpret_cast<const char*>(st), sizeof st)},
                            {"m/version", "3\n"}},
                           /*zip64=*/true);
  const size_t pkl_at = out.find(w.bytes);
  return {out, pkl_at, pkl_at + w.bytes.size(), pth_rewrap(out, true)};
}

Seed st_seed() {
  const std::string p = test::temp_dir() + "/seed.safetensors";
  write_safetensors(p,
                    {small_tensor("a", DType::kF32, {2, 2}, 1), small_tensor("b", DType::kBF16, {3}, 2),
                     small_tensor("c", DType::kI8, {5}, 3), small_tensor("d", DType::kI32, {2}, 4),
                     small_tensor("e", DType::kU8, {0}, 5)},
                    {{"format", "pt"}});
  Bytes b = file_bytes(p);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  const Bytes data = b.substr(8 + n);
  auto rewrap = [data](const Bytes& header) {
    Bytes len(8, '\0');
    for (int k = 0; k < 8; ++k) len[k] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * k));
    return len + header + data;
  };
  return {b, 8, 8 + static_cast<size_t>(n), rewrap};
}

// One random edit. Positions favour [hot_begin, hot_end) half of the time.
void mutate(Bytes& b, size_t hot_begin, size_t hot_end, std::mt19937_64& rng) {
  auto pos = [&](size_t extra) -> size_t {
    const size_t n = b.size() + extra;
    if (n == 0) return 0;
    if (rng() % 2 && hot_end <= b.size() && hot_begin < hot_end) return hot_begin + rng() % (hot_end - hot_begin);
    return rng() % n;
  };
  static constexpr uint64_t kInteresting[] = {0,
                                              1,
                                              0x7f,
                                              0x80,
                                              0xff,
                                              0xffff,
                                              0x7fffffff,
                                              0x80000000u,
                                              0xffffffffu,
                                              uint64_t{1} << 32,
                                              uint64_t{1} << 62,
                                              uint64_t{1} << 63,
                                              ~uint64_t{0},
                                              64,
                                              1u << 20};
  switch (rng() % 8) {
    case 0:  // random byte
      if (!b.empty()) b[pos(0)] = static_cast<char>(rng());
      break;
    case 1:  // bit flip
      if (!b.empty()) b[pos(0)] ^= static_cast<char>(1u << (rng() % 8));
      break;
    case 2:  // truncate
      b.resize(b.empty() ? 0 : rng() % b.size());
      break;
    case 3: {  // insert random bytes
      const size_t at = pos(1) % (b.size() + 1);
      Bytes ins(1 + rng() % 16, '\0');
      for (char& c : ins) c = static_cast<char>(rng());
      b.insert(at, ins);
      break;
    }
    case 4: {  // delete a range
      if (b.empty()) break;
      const size_t at = pos(0);
      b.erase(at, 1 + rng() % 32);
      break;
    }
    case 5:
    case 6: {  // overwrite 1, 2, 4 or 8 bytes with an interesting little-endian value
      if (b.empty()) break;
      const uint64_t v = kInteresting[rng() % (sizeof kInteresting / sizeof kInteresting[0])];
      const size_t width = size_t{1} << (rng() % 4);
      const size_t at = pos(0);
      for (size_t k = 0; k < width && at + k < b.size(); ++k) b[at + k] = static_cast<char>(v >> (8 * k));
      break;
    }
    default: {  // copy a chunk elsewhere (duplicates records, opcodes, JSON members)
      if (b.size() < 2) break;
      const size_t from = rng() % b.size(), len = 1 + rng() % std::min<size_t>(64, b.size() - from);
      const Bytes chunk = b.substr(from, len);
      b.insert(pos(1) % (b.size() + 1), chunk);
      break;
    }
  }
}

struct Stats {
  int loaded = 0, rejected = 0, failures = 0;
  size_t largest_alloc = 0;
};

Stats run_mutations(const std::vector<Seed>& seeds, uint64_t rng_seed,
                    const std::function<void(const uint8_t*, size_t)>& target) {
  std::mt19937_64 rng(rng_seed);
  Stats s;
  for (int it = 0; it < kIterations; ++it) {
    const Seed& seed = seeds[static_cast<size_t>(it / 2) % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    Bytes b;
    if (it % 2) {  // raw bytes of the whole file
      b = seed.bytes;
      for (int e = 0; e < edits; ++e) mutate(b, seed.hot_begin, seed.hot_end, rng);
    } else {  // only the pickle / JSON header, re-wrapped into a well-formed container
      Bytes inner = seed.bytes.substr(seed.hot_begin, seed.hot_end - seed.hot_begin);
      for (int e = 0; e < edits; ++e) mutate(inner, 0, inner.size(), rng);
      b = seed.rewrap(inner);
    }
    g_largest_alloc = 0;
    try {
      target(reinterpret_cast<const uint8_t*>(b.data()), b.size());
      ++s.loaded;
    } catch (const Error&) {
      ++s.rejected;
    } catch (const std::exception& e) {
      ++s.failures;
      ADD_FAILURE() << "iteration " << it << ": non-rwkvl exception: " << e.what();
    }
    const size_t largest = g_largest_alloc.load();
    s.largest_alloc = std::max(s.largest_alloc, largest);
    if (largest > kAllocLimit) {
      ++s.failures;
      ADD_FAILURE() << "iteration " << it << ": allocation of " << largest << " bytes for a " << b.size()
                    << "-byte input";
    }
    if (s.failures > 10) break;
  }
  return s;
}

TEST(FormatFuzz, SeedsLoad) {
  for (const Seed& s : {pth_seed_written(), pth_seed_crafted()})
    EXPECT_NO_THROW(fuzz::fuzz_pth_input(reinterpret_cast<const uint8_t*>(s.bytes.data()), s.bytes.size()));
  const Seed st = st_seed();
  EXPECT_NO_THROW(fuzz::fuzz_safetensors_input(reinterpret_cast<const uint8_t*>(st.bytes.data()), st.bytes.size()));
}

TEST(FormatFuzz, PthMutations) {
  const Stats s = run_mutations({pth_seed_written(), pth_seed_crafted()}, 20240601, fuzz::fuzz_pth_input);
  std::printf("pth: %d mutated inputs loaded, %d rejected with rwkvl::Error, largest allocation %zu bytes\n", s.loaded,
              s.rejected, s.largest_alloc);
  EXPECT_EQ(s.failures, 0);
  EXPECT_GT(s.loaded, 0);
  EXPECT_GT(s.rejected, kIterations / 4);
}

TEST(FormatFuzz, SafetensorsMutations) {
  const Stats s = run_mutations({st_seed()}, 20240602, fuzz::fuzz_safetensors_input);
  std::printf("safetensors: %d mutated inputs loaded, %d rejected with rwkvl::Error, largest allocation %zu bytes\n",
              s.loaded, s.rejected, s.largest_alloc);
  EXPECT_EQ(s.failures, 0);
  EXPECT_GT(s.loaded, 0);
  EXPECT_GT(s.rejected, kIterations / 4);
}

}  // namespace
}  // namespace rwkvl
