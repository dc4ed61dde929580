// The C enums by name (include/rwkv_lite.h, "NAMES"): every value's name parses back to the value, the
// spellings are the ones the command line and docs/CLI.md use (written out here, not taken from the library),
// unknown names and NULL arguments are INVALID_ARGUMENT with *out untouched, and values outside an enum are
// named "unknown".
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "rwkv_lite.h"

namespace {

// One enum's table: its values with their expected names, the parser and the name function.
template <class E>
struct EnumCase {
  const char* what;
  std::vector<std::pair<E, const char*>> names;  // every value, with its one spelling
  std::vector<std::pair<const char*, E>> aliases;  // further accepted spellings
  std::vector<const char*> unknown;               // spellings that must be refused
  rwkvl_status (*from_string)(const char*, E*);
  const char* (*name)(E);
  int first_invalid;  // the first value past the enum
};

template <class E>
void check_enum(const EnumCase<E>& c) {
  SCOPED_TRACE(c.what);
  for (const auto& [v, expected] : c.names) {
    const char* n = c.name(v);
    ASSERT_NE(n, nullptr);
    EXPECT_STREQ(n, expected) << "value " << static_cast<int>(v);
    E back = c.names[0].first == v && c.names.size() > 1 ? c.names[1].first : c.names[0].first;  // != v
    ASSERT_EQ(c.from_string(n, &back), RWKVL_OK) << n << ": " << rwkvl_last_error();
    EXPECT_EQ(back, v) << n;
    EXPECT_STREQ(rwkvl_last_error(), "");
    EXPECT_STREQ(c.name(back), expected);
  }
  for (const auto& [s, v] : c.aliases) {
    E got = c.names.back().first == v ? c.names.front().first : c.names.back().first;
    ASSERT_EQ(c.from_string(s, &got), RWKVL_OK) << s;
    EXPECT_EQ(got, v) << s;
  }
  for (const char* s : c.unknown) {
    E out = c.names.back().first;
    const E before = out;
    EXPECT_EQ(c.from_string(s, &out), RWKVL_ERR_INVALID_ARGUMENT) << "'" << s << "'";
    EXPECT_EQ(out, before) << "'" << s << "': *out changed on failure";
    const std::string msg = rwkvl_last_error();
    EXPECT_NE(msg.find(std::string("'") + s + "'"), std::string::npos) << msg;
    // The message lists the known names.
    EXPECT_NE(msg.find(c.names.back().second), std::string::npos) << msg;
  }
  E out = c.names.back().first;
  EXPECT_EQ(c.from_string(nullptr, &out), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(out, c.names.back().first);
  EXPECT_NE(std::string(rwkvl_last_error()).find("NULL"), std::string::npos) << rwkvl_last_error();
  EXPECT_EQ(c.from_string(c.names.front().second, nullptr), RWKVL_ERR_INVALID_ARGUMENT);
  // Values outside the enum (a C caller may store any int) are named, not undefined.
  for (int bad : {c.first_invalid, c.first_invalid + 1, 1000, -1}) {
    E v;
    std::memcpy(&v, &bad, sizeof v);
    EXPECT_STREQ(c.name(v), "unknown") << bad;
  }
}

TEST(CApiTypes, Dtype) {
  check_enum<rwkvl_dtype>({"dtype",
                           {{RWKVL_DTYPE_KEEP, "keep"},
                            {RWKVL_DTYPE_F32, "f32"},
                            {RWKVL_DTYPE_F16, "f16"},
                            {RWKVL_DTYPE_BF16, "bf16"},
                            {RWKVL_DTYPE_I8, "i8"},
                            {RWKVL_DTYPE_Q4, "q4"},
                            {RWKVL_DTYPE_Q5_1, "q5_1"},
                            {RWKVL_DTYPE_F16_2OF4, "f16_2of4"},
                            {RWKVL_DTYPE_F16_MASKED, "f16_masked"},
                            {RWKVL_DTYPE_I8_MASKED, "i8_masked"},
                            {RWKVL_DTYPE_Q4_MASKED, "q4_masked"}},
                           {{"int8", RWKVL_DTYPE_I8}, {"int4", RWKVL_DTYPE_Q4}, {"", RWKVL_DTYPE_KEEP}},
                           {"F32", "fp16", "f8", "i32", "u8", "int2", "keep ", "q4_0", "2:4"},
                           &rwkvl_dtype_from_string,
                           &rwkvl_dtype_name,
                           11});
  // The values are fixed (VERSIONING: never renumbered).
  EXPECT_EQ(RWKVL_DTYPE_KEEP, 0);
  EXPECT_EQ(RWKVL_DTYPE_F32, 1);
  EXPECT_EQ(RWKVL_DTYPE_I8, 4);
  EXPECT_EQ(RWKVL_DTYPE_Q4, 5);
  EXPECT_EQ(RWKVL_DTYPE_Q5_1, 6);
  EXPECT_EQ(RWKVL_DTYPE_F16_2OF4, 7);
  EXPECT_EQ(RWKVL_DTYPE_Q4_MASKED, 10);
}

TEST(CApiTypes, FfnMode) {
  check_enum<rwkvl_ffn_mode>({"ffn mode",
                              {{RWKVL_FFN_AUTO, "auto"},
                               {RWKVL_FFN_DENSE, "dense"},
                               {RWKVL_FFN_EXACT, "exact"},
                               {RWKVL_FFN_PREDICT, "predict"}},
                              {},
                              {"", "sparse", "Dense", "predicted"},
                              &rwkvl_ffn_mode_from_string,
                              &rwkvl_ffn_mode_name,
                              4});
}

TEST(CApiTypes, HeadMode) {
  check_enum<rwkvl_head_mode>({"head mode",
                               {{RWKVL_HEAD_AUTO, "auto"}, {RWKVL_HEAD_FULL, "full"}, {RWKVL_HEAD_CLUSTER, "cluster"}},
                               {},
                               {"", "clustered", "FULL", "dense"},
                               &rwkvl_head_mode_from_string,
                               &rwkvl_head_mode_name,
                               3});
}

TEST(CApiTypes, LowRankMethod) {
  check_enum<rwkvl_lowrank_method>({"low-rank method",
                                    {{RWKVL_LOWRANK_NONE, "none"}, {RWKVL_LOWRANK_SVD, "svd"}, {RWKVL_LOWRANK_ASVD, "asvd"}},
                                    {{"", RWKVL_LOWRANK_NONE}},
                                    {"pca", "SVD", "asvd2"},
                                    &rwkvl_lowrank_method_from_string,
                                    &rwkvl_lowrank_method_name,
                                    3});
}

TEST(CApiTypes, Quant) {
  check_enum<rwkvl_quant>({"quantisation",
                           {{RWKVL_QUANT_NONE, "none"}, {RWKVL_QUANT_INT8, "int8"}, {RWKVL_QUANT_INT4, "int4"}},
                           {{"", RWKVL_QUANT_NONE}},
                           {"i8", "int3", "q4"},
                           &rwkvl_quant_from_string,
                           &rwkvl_quant_name,
                           3});
}

TEST(CApiTypes, HeadPrior) {
  check_enum<rwkvl_head_prior>({"head prior",
                                {{RWKVL_HEAD_PRIOR_CALIB, "calib"}, {RWKVL_HEAD_PRIOR_UNIFORM, "uniform"}},
                                {},
                                {"", "flat", "Calib"},
                                &rwkvl_head_prior_from_string,
                                &rwkvl_head_prior_name,
                                2});
}

TEST(CApiTypes, ClusterSource) {
  check_enum<rwkvl_cluster_source>({"cluster source",
                                    {{RWKVL_CLUSTER_SOURCE_HEAD, "head"}, {RWKVL_CLUSTER_SOURCE_EMB, "emb"}},
                                    {},
                                    {"", "embedding", "Head"},
                                    &rwkvl_cluster_source_from_string,
                                    &rwkvl_cluster_source_name,
                                    2});
}

// A dtype name is what the string-typed calls take: every name a conversion can produce loads and saves.
TEST(CApiTypes, DtypeNamesAreWhatModelParamsTake) {
  rwkvl_model_params p = rwkvl_model_default_params();
  EXPECT_STREQ(p.weight_dtype, rwkvl_dtype_name(RWKVL_DTYPE_KEEP));
  // q5_1 is a name for reading, never a conversion target: the loader refuses it by that name.
  rwkvl_synth_params sp{};
  sp.arch_major = 7;
  sp.n_layer = 1;
  sp.n_embd = 64;
  sp.n_vocab = 256;
  sp.dtype = rwkvl_dtype_name(RWKVL_DTYPE_Q5_1);
  EXPECT_EQ(rwkvl_synth(&sp, "/nonexistent-folder/x.rwkvl"), RWKVL_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(rwkvl_last_error()).find("q5_1"), std::string::npos) << rwkvl_last_error();
}

TEST(CApiTypes, VersionIsOnePointTwo) {
  EXPECT_EQ(RWKVL_API_VERSION_MAJOR, 1);
  EXPECT_GE(RWKVL_API_VERSION_MINOR, 2);  // the NAMES functions are 1.2
  EXPECT_EQ(rwkvl_api_version(), RWKVL_API_VERSION);
}

}  // namespace
