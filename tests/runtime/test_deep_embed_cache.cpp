// RWKV-7a's DeepEmbed tables on storage (runtime/deep_embed_cache.h): the cache returns exactly the tables' rows
// (every dtype, from memory or the file, cached, pinned or read again), its LRU and pinned slots behave as counted by
// hand, and a session with the tables behind the cache (any size, RNN and sequence mode, under a memory budget)
// gives the same logits bit for bit as the tables read in place, reading one row per layer per missed token.
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "runtime/deep_embed_cache.h"
#include "runtime/planner.h"
#include "runtime/session.h"
#include "runtime/storage.h"
#include "test_util.h"

namespace rwkvl {
namespace {

constexpr int kL = 3, kV = 300, kR = 8;

std::shared_ptr<Model> synth7a(uint64_t seed) {
  return synth_model(
      ModelConfig{.arch_major = 7, .n_layer = kL, .n_embd = 64, .n_vocab = kV, .head_size = 32, .de_rank = kR}, "f32",
      seed);
}

// The model saved natively in `dtype` and mapped back from its file.
std::shared_ptr<const Model> on_disk(const std::string& name, WeightDType dtype) {
  const std::string path = test::temp_dir() + "/" + name;
  synth7a(9)->save_native(path, dtype);
  return Model::load(path, {});
}

std::vector<DeepEmbedCache::Table> tables_of(const Model& m, bool in_file) {
  std::vector<DeepEmbedCache::Table> v;
  for (int l = 0; l < m.config().n_layer; ++l) {
    const kern::MatRef& r = m.layer(l).de_emb.ref;
    const uint64_t off = in_file ? static_cast<uint64_t>(static_cast<const uint8_t*>(r.data) - m.file()->data()) : 0;
    v.push_back({r, off});
  }
  return v;
}

std::vector<float> table_row(const Model& m, int l, int32_t t) {
  std::vector<float> v(static_cast<size_t>(kR * kR));
  kern::get_row(m.layer(l).de_emb.ref, t, v.data());
  return v;
}

void expect_rows(DeepEmbedCache& c, const Model& m, const std::vector<int32_t>& toks) {
  std::vector<float> got(static_cast<size_t>(kR * kR));
  for (int l = 0; l < kL; ++l)
    for (int32_t t : toks) {
      c.row(l, t, got.data());
      EXPECT_EQ(got, table_row(m, l, t)) << "layer " << l << " token " << t;
    }
}

TEST(DeepEmbedCache, LruCountsAndRowsFromMemory) {
  const std::shared_ptr<Model> m = synth7a(1);
  DeepEmbedCache c(tables_of(*m, false), nullptr, 3, {});
  EXPECT_EQ(c.capacity(), 3);
  const size_t slot = c.slot_bytes();
  EXPECT_EQ(slot, static_cast<size_t>(kL * kR * kR * 4));
  const std::vector<std::vector<int32_t>> chunks = {{1, 2, 3}, {1}, {4}, {2}, {1}, {3}};
  // MRU order after each: 3 2 1 | 1 3 2 | 4 1 3 (2 evicted) | 2 4 1 (3 evicted) | 1 2 4 | 3 1 2 (4 evicted)
  // misses: 1 2 3, 4, 2, 3 = 6 of 8 lookups
  for (const auto& ch : chunks) {
    c.fetch(ch.data(), ch.size());
    expect_rows(c, *m, ch);
  }
  EXPECT_EQ(c.stats().lookups, 8u);
  EXPECT_EQ(c.stats().hits, 2u);
  EXPECT_EQ(c.stats().rows_read, 6u * kL);
  EXPECT_EQ(c.stats().bytes_read, 6u * slot);
  EXPECT_EQ(c.stats().rereads, 0u);
  // A chunk with more distinct tokens than slots: the first ones are evicted by the last, and read again by row().
  // The last 3 distinct tokens (10, 14, 13) are fetched, 11 and 12 are read by row() one layer at a time: every
  // use of a token reads at most its row of each layer.
  const std::vector<int32_t> wide = {10, 11, 12, 13, 14, 10};
  c.reset_stats();
  c.fetch(wide.data(), wide.size());
  expect_rows(c, *m, wide);
  EXPECT_EQ(c.stats().rows_read, 5u * kL);
  EXPECT_EQ(c.stats().rereads, 2u * kL);
  EXPECT_EQ(c.stats().hits, 1u);  // the second 10
  const int32_t bad = kV;
  EXPECT_THROW(c.fetch(&bad, 1), Error);
  std::vector<float> out(static_cast<size_t>(kR * kR));
  EXPECT_THROW(c.row(0, -1, out.data()), Error);
  EXPECT_THROW(DeepEmbedCache(tables_of(*m, false), nullptr, 0, {}), Error);
}

TEST(DeepEmbedCache, PinnedTokensStayWhileOthersCycle) {
  const std::shared_ptr<Model> m = synth7a(2);
  // 4 slots: at most 2 pinned (half); 7 and 8 pinned, 9 (third in the list) and duplicates / bad ids skipped.
  DeepEmbedCache c(tables_of(*m, false), nullptr, 4, {7, 7, -3, kV + 5, 8, 9});
  EXPECT_EQ(c.pinned(), 2);
  std::vector<int32_t> hot = {7, 8, 9};
  c.fetch(hot.data(), hot.size());                     // three misses (pinned slots fill on first use)
  for (int32_t t = 100; t < 140; ++t) c.fetch(&t, 1);  // 40 other tokens through the 2 LRU slots
  c.reset_stats();
  c.fetch(hot.data(), hot.size());
  EXPECT_EQ(c.stats().hits, 2u);  // 7 and 8 stayed, 9 was evicted
  EXPECT_EQ(c.stats().rows_read, static_cast<uint64_t>(kL));
  expect_rows(c, *m, {7, 8, 9, 139});
}

// From the file through Storage, for the dtypes the tables come in (int8 with its row scales, bf16, q4).
TEST(DeepEmbedCache, RowsFromTheFileEveryDtype) {
  for (WeightDType d : {WeightDType::kF32, WeightDType::kBF16, WeightDType::kI8, WeightDType::kQ4}) {
    const std::shared_ptr<const Model> m = on_disk(std::string("de-") + weight_dtype_option_name(d) + ".rwkvl", d);
    for (int readers : {0, 1, 3}) {  // read by fetch() itself, or in the background
      auto st = std::make_shared<Storage>(m->path(), StorageOptions{});
      DeepEmbedCache c(tables_of(*m, true), st, 5, {0}, readers);
      for (const std::vector<int32_t>& toks : {std::vector<int32_t>{0, 3, 299, 3, 150, 7, 8, 9, 10, 0},
                                               std::vector<int32_t>{3, 2, 1}, std::vector<int32_t>{0, 150, 299}}) {
        c.fetch(toks.data(), toks.size());
        expect_rows(c, *m, toks);
      }
      EXPECT_EQ(st->stats().bytes, c.stats().bytes_read) << weight_dtype_option_name(d) << " readers " << readers;
      EXPECT_EQ(c.stats().bytes_read % (kern::mat_row_bytes(m->layer(0).de_emb.ref)), 0u);
    }
  }
}

std::vector<float> logits(const std::shared_ptr<const Model>& m, const SessionParams& sp,
                          const std::vector<int32_t>& toks, size_t chunk, DeepEmbedCacheStats* stats = nullptr,
                          uint64_t* io_bytes = nullptr) {
  Session s(m, sp);
  State st;
  st.reset(m->config());
  std::vector<float> all(toks.size() * static_cast<size_t>(kV));
  s.eval(st, toks.data(), toks.size(), chunk, nullptr, all.data());
  if (stats) *stats = s.deep_embed_cache() ? s.deep_embed_cache()->stats() : DeepEmbedCacheStats{};
  if (io_bytes) *io_bytes = s.storage() ? s.storage()->stats().bytes : 0;
  return all;
}

TEST(DeepEmbedCache, SessionLogitsEqualTablesInPlace) {
  const std::shared_ptr<const Model> m = on_disk("de-session.rwkvl", WeightDType::kBF16);
  std::vector<int32_t> toks(60);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>((i * i * 7 + 3) % 40);  // repeats
  SessionParams in_place;
  in_place.threads = 2;
  in_place.memory.de_rows = 0;
  for (size_t chunk : {size_t{1}, size_t{16}}) {
    const std::vector<float> want = logits(m, in_place, toks, chunk);
    for (int64_t slots : {1, 3, 512}) {
      SessionParams sp = in_place;
      sp.memory.de_rows = slots;
      DeepEmbedCacheStats ds;
      uint64_t io = 0;
      EXPECT_EQ(logits(m, sp, toks, chunk, &ds, &io), want) << "slots " << slots << " chunk " << chunk;
      EXPECT_EQ(ds.lookups, toks.size());
      EXPECT_EQ(io, ds.bytes_read);  // every table byte came through the storage (the background reader's too)
      const uint64_t distinct = std::set<int32_t>(toks.begin(), toks.end()).size();
      if (slots == 512) {
        EXPECT_EQ(ds.rows_read, distinct * kL);  // each token's rows read once
        EXPECT_EQ(ds.hits, toks.size() - distinct);
      }
    }
  }
  // A simulated device that serves 4 reads at once: 4 background readers, the same logits.
  SessionParams slow = in_place;
  slow.memory.de_rows = 7;
  slow.storage.mb_per_s = 200;
  slow.storage.latency_us = 50;
  slow.storage.queue = 4;
  EXPECT_EQ(logits(m, slow, toks, 16), logits(m, in_place, toks, 16));
  // The default: tables at or above de_on_storage bytes go behind kDeepEmbedSlots slots; below it, in place.
  SessionParams dflt;
  dflt.memory.de_on_storage = 0;
  EXPECT_EQ(Session(m, dflt).deep_embed_cache()->capacity(), std::min<int64_t>(kDeepEmbedSlots, kV));
  EXPECT_EQ(Session(m, SessionParams{}).deep_embed_cache(), nullptr);
}

// Under a memory budget the tables are never resident: the plan counts the cache (64 slots grown with room left)
// and not the tables, and the logits are those of the tables in place.
TEST(DeepEmbedCache, PlannedUnderABudget) {
  const std::shared_ptr<const Model> m = on_disk("de-budget.rwkvl", WeightDType::kF32);
  SessionParams sp;
  sp.memory.budget = 512ull << 20;
  sp.memory.baseline = 64ull << 20;
  std::vector<int32_t> toks = {5, 6, 7, 5, 6, 7, 200, 1};
  SessionParams in_place;
  in_place.memory.de_rows = 0;
  DeepEmbedCacheStats ds;
  EXPECT_EQ(logits(m, sp, toks, 4, &ds), logits(m, in_place, toks, 4));
  EXPECT_EQ(ds.hits, 3u);
  Session s(m, sp);
  const MemoryPlan* p = s.plan();
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->de_tables, deep_embed_table_bytes(*m));
  EXPECT_EQ(p->de_rows, std::min<int64_t>(1024, kV));  // room to grow to the vocabulary
  EXPECT_EQ(p->de_cache, DeepEmbedCache::bytes_for(p->de_rows, deep_embed_slot_bytes(*m), kV));
  EXPECT_LE(p->small + p->de_tables, m->weight_bytes());  // the tables are not among the small tensors
  EXPECT_NE(p->describe().find("DeepEmbed cache"), std::string::npos);
  EXPECT_EQ(s.deep_embed_cache()->capacity(), p->de_rows);
  sp.memory.de_rows = 16;
  EXPECT_EQ(Session(m, sp).plan()->de_rows, 16);
}

// A token reads one row of each layer's table, not the tables: bytes_per_token counts rows.
TEST(DeepEmbedCache, BytesPerTokenCountsOneRowPerLayer) {
  const std::shared_ptr<const Model> m = on_disk("de-bpt.rwkvl", WeightDType::kI8);
  uint64_t tables = 0, rows = 0;
  for (int l = 0; l < kL; ++l) {
    tables += m->layer(l).de_emb.bytes();
    rows += static_cast<uint64_t>(kern::mat_row_bytes(m->layer(l).de_emb.ref)) + 4;  // + the row's f32 scale
  }
  const Tensor& e = m->emb().t;
  const uint64_t emb_row = e.nbytes / static_cast<uint64_t>(e.rows()) + (m->emb().scale.nbytes ? 4 : 0);
  EXPECT_EQ(m->bytes_per_token(), m->weight_bytes() - m->emb().bytes() - tables + rows + emb_row);
}

}  // namespace
}  // namespace rwkvl
