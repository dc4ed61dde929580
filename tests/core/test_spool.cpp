// core/spool.h: tensors kept on storage as mapped views. The views hold exactly the bytes put, stay valid after
// release() and after the spool object is dropped, leave no file behind, and cost no resident memory once
// released (measured on this process's RSS).
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/spool.h"

namespace {

using rwkvl::DType;
using rwkvl::Spool;
using rwkvl::Tensor;

std::string fresh_dir() {
  char tmpl[] = "/tmp/rwkvl-spool-test-XXXXXX";
  const char* d = mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d ? d : "/tmp";
}

size_t entries(const std::string& dir) {
  size_t n = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
    closedir(d);
  }
  return n;
}

// Resident memory of this process from /proc/self/statm, in bytes.
uint64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

Tensor pattern(const std::string& name, int64_t n, uint32_t seed) {
  Tensor t = Tensor::alloc(name, DType::kF32, {n});
  float* p = t.mutable_f32();
  uint32_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    p[i] = static_cast<float>(s >> 8) * (1.0f / 16777216.0f);
  }
  return t;
}

TEST(Spool, ViewsHoldTheBytesPutAndOutliveTheSpool) {
  const std::string dir = fresh_dir();
  std::vector<Tensor> orig, views;
  {
    std::shared_ptr<Spool> s = Spool::create(dir);
    for (int i = 0; i < 7; ++i) {
      static const char* const kNames[] = {"t0", "t1", "t2", "t3", "t4", "t5", "t6"};
      orig.push_back(pattern(kNames[i], 1 + 1000 * i * i, static_cast<uint32_t>(i)));
      views.push_back(s->put(orig.back()));
    }
    s->begin();  // a tensor made of pieces
    s->append(orig[3].data, 100);
    s->append(static_cast<const uint8_t*>(orig[3].data) + 100, orig[3].nbytes - 100);
    views.push_back(s->end("pieces", DType::kF32, orig[3].shape));
    orig.push_back(orig[3]);
    views.push_back(s->put(Tensor::alloc("empty", DType::kF32, {0})));
    EXPECT_TRUE(s->holds(views[0].data));
    EXPECT_FALSE(s->holds(orig[0].data));
    EXPECT_EQ(entries(dir), 0u) << "the spool file must be anonymous";
    s->release();
  }
  ASSERT_EQ(views.size(), orig.size() + 1);
  for (size_t i = 0; i < orig.size(); ++i) {
    EXPECT_EQ(views[i].name, i == 7 ? "pieces" : orig[i].name);
    EXPECT_EQ(views[i].shape, orig[i].shape);
    EXPECT_EQ(views[i].nbytes, orig[i].nbytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(views[i].data) % 64, 0u);
    EXPECT_EQ(std::memcmp(views[i].data, orig[i].data, orig[i].nbytes), 0) << "tensor " << i;
  }
  EXPECT_EQ(views.back().nbytes, 0u);
  EXPECT_NE(views.back().data, nullptr);
  rmdir(dir.c_str());
}

TEST(Spool, ReleasedViewsCostNoResidentMemory) {
  const std::string dir = fresh_dir();
  std::shared_ptr<Spool> s = Spool::create(dir);
  const int64_t n = 64 << 20 >> 2;  // 64 MiB of floats, put in 4 MiB pieces
  std::vector<float> piece(1 << 20);
  s->begin();
  for (int64_t i = 0; i < n; i += static_cast<int64_t>(piece.size())) {
    for (size_t j = 0; j < piece.size(); ++j) piece[j] = static_cast<float>(static_cast<size_t>(i) + j);
    s->append(piece.data(), piece.size() * sizeof(float));
  }
  const Tensor v = s->end("big", DType::kF32, {n});
  const uint64_t before = rss_bytes();
  double sum = 0;  // touch every page
  for (int64_t i = 0; i < n; i += 1024) sum += v.as<float>()[i];
  EXPECT_EQ(sum, static_cast<double>(n / 1024) * static_cast<double>(n - 1024) / 2.0);
  const uint64_t touched = rss_bytes();
  EXPECT_GT(touched, before + (48u << 20)) << "reading the view maps its pages";
  s->release();
  EXPECT_LT(rss_bytes(), touched - (48u << 20)) << "release() drops them";
  EXPECT_EQ(v.as<float>()[n - 1], static_cast<float>(n - 1)) << "and they read back from the file";
  EXPECT_EQ(s->bytes(), static_cast<uint64_t>(n) * 4);
  rmdir(dir.c_str());
}

TEST(Spool, AFolderThatCannotHoldItIsAnIoError) {
  try {
    Spool::create("/nonexistent-folder-of-rwkvl/x");
    FAIL() << "expected an error";
  } catch (const rwkvl::Error& e) {
    EXPECT_EQ(e.code(), rwkvl::ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("/nonexistent-folder-of-rwkvl/x"), std::string::npos) << e.what();
  }
}

}  // namespace
