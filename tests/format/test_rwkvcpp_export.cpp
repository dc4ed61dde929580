// The rwkv.cpp writer (export_rwkvcpp / rwkvl_model_save_rwkvcpp) against files rwkv.cpp's own converter wrote: the
// tiny reference models of every version, FP32 and FP16, re-exported from the loaded model must give the very
// tensors of the original file (names, shapes, dtypes, bytes), and the written file the same logits.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "format/format.h"
#include "model/model.h"
#include "rwkv_lite.h"
#include "runtime/session.h"
#include "test_util.h"

namespace rwkvl {
namespace {

std::vector<float> logits_of(const std::shared_ptr<Model>& m) {
  Session ctx(m, 1);
  State st;
  st.reset(m->config());
  const std::vector<int32_t> toks = {34, 105, 110, 0, 255};
  std::vector<float> l(static_cast<size_t>(m->config().n_vocab));
  ctx.eval(st, toks.data(), toks.size(), 1, l.data(), nullptr);
  return l;
}

class RwkvCppExport : public ::testing::TestWithParam<const char*> {};

TEST_P(RwkvCppExport, GivesTheConvertersTensorsAndTheSameLogits) {
  const std::string name = GetParam();
  const std::string src = test::shared_file("reference/tiny-rwkv/tiny-rwkv-" + name + ".bin");
  if (src.empty()) GTEST_SKIP() << "shared reference models not found";
  const bool f16 = name.find("FP16") != std::string::npos;
  RawCheckpoint raw = read_checkpoint(src);
  std::map<std::string, const Tensor*> want;
  for (const Tensor& t : raw.tensors) want[t.name] = &t;

  auto m = Model::load(src, {});
  const std::vector<Tensor> got = export_rwkvcpp(*m, f16);
  ASSERT_EQ(got.size(), want.size());
  for (const Tensor& t : got) {
    SCOPED_TRACE(t.name);
    auto it = want.find(t.name);
    ASSERT_NE(it, want.end()) << "not in the converter's file";
    const Tensor& w = *it->second;
    EXPECT_EQ(t.shape, w.shape);
    EXPECT_EQ(t.dtype, w.dtype);
    ASSERT_EQ(t.nbytes, w.nbytes);
    EXPECT_EQ(std::memcmp(t.data, w.data, t.nbytes), 0) << "values differ";
  }

  // Through the C API to a file, read back: the same logits as the original file (bit for bit: same values).
  rwkvl_model* cm = nullptr;
  ASSERT_EQ(rwkvl_model_load(src.c_str(), nullptr, &cm), RWKVL_OK);
  const std::string out = test::temp_dir() + "/export-" + name + ".bin";
  ASSERT_EQ(rwkvl_model_save_rwkvcpp(cm, out.c_str(), f16 ? RWKVL_DTYPE_F16 : RWKVL_DTYPE_F32), RWKVL_OK);
  rwkvl_model_free(cm);
  auto back = Model::load(out, {});
  EXPECT_EQ(back->source_kind(), FileKind::kRwkvCpp);
  const std::vector<float> a = logits_of(m), b = logits_of(back);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << "logit " << i;
}

INSTANTIATE_TEST_SUITE_P(Tiny, RwkvCppExport,
                         ::testing::Values("4v0-660K-FP32", "4v0-660K-FP16", "5v1-730K-FP32", "5v1-730K-FP16",
                                           "5v2-730K-FP32", "5v2-730K-FP16", "6v0-1m-FP32", "6v0-1m-FP16",
                                           "7v0-834K-FP32", "7v0-834K-FP16"),
                         [](const auto& p) {
                           std::string s = p.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

// KEEP picks f16 for a model with f16 matrices; i8 matrices are written with the values they hold (dequantised
// to f16 here); other dtypes, NULLs and a path that is not a regular file are refused.
TEST(RwkvCppExportApi, DtypesAndRefusals) {
  const std::string src = test::shared_file("reference/tiny-rwkv/tiny-rwkv-5v2-730K-FP16.bin");
  if (src.empty()) GTEST_SKIP() << "shared reference models not found";
  rwkvl_model* cm = nullptr;
  ASSERT_EQ(rwkvl_model_load(src.c_str(), nullptr, &cm), RWKVL_OK);
  const std::string dir = test::temp_dir() + "/";
  ASSERT_EQ(rwkvl_model_save_rwkvcpp(cm, (dir + "keep.bin").c_str(), RWKVL_DTYPE_KEEP), RWKVL_OK);
  RawCheckpoint keep = read_checkpoint(dir + "keep.bin");
  bool any_f16 = false;
  for (const Tensor& t : keep.tensors) any_f16 |= t.name == "emb.weight" && t.dtype == DType::kF16;
  EXPECT_TRUE(any_f16);
  EXPECT_EQ(rwkvl_model_save_rwkvcpp(cm, (dir + "i8.bin").c_str(), RWKVL_DTYPE_I8), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_save_rwkvcpp(cm, (dir + "bf.bin").c_str(), RWKVL_DTYPE_BF16), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_save_rwkvcpp(cm, nullptr, RWKVL_DTYPE_F16), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(rwkvl_model_save_rwkvcpp(nullptr, (dir + "x.bin").c_str(), RWKVL_DTYPE_F16), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(rwkvl_model_save_rwkvcpp(cm, "/dev/null", RWKVL_DTYPE_F16), RWKVL_OK);
  EXPECT_NE(rwkvl_model_save_rwkvcpp(cm, dir.c_str(), RWKVL_DTYPE_F16), RWKVL_OK);  // a directory

  // An int8 model: written dequantised; its logits stay those of the int8 model within f16 rounding of the weights.
  ASSERT_EQ(rwkvl_model_save(cm, (dir + "i8.rwkvl").c_str(), "i8"), RWKVL_OK);
  rwkvl_model_free(cm);
  ASSERT_EQ(rwkvl_model_load((dir + "i8.rwkvl").c_str(), nullptr, &cm), RWKVL_OK);
  ASSERT_EQ(rwkvl_model_save_rwkvcpp(cm, (dir + "from-i8.bin").c_str(), RWKVL_DTYPE_F32), RWKVL_OK);
  rwkvl_model_free(cm);
  const std::vector<float> a = logits_of(Model::load(dir + "i8.rwkvl", {})), b = logits_of(Model::load(dir + "from-i8.bin", {}));
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  EXPECT_LT(worst, 1e-3f);
}

}  // namespace
}  // namespace rwkvl
