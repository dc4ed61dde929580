// The layer rule of docs/ARCHITECTURE.md, checked on the source tree: every `#include "..."` in src/,
// include/, tools/, examples/ and bindings/ may name only headers of its own layer or a lower one, and the
// programs on top (tools, examples, bindings) only the public header include/rwkv_lite.h and headers of
// their own folder. There is no allow-list: issue #14 removed the last exceptions (tools/ reading the C++
// model), and a new one is a test failure, not an entry to add. The build enforces the top layer too: src/ is
// a PRIVATE include directory of the library, so tools/ and examples/ cannot find its headers.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#ifndef RWKVL_SOURCE_DIR
#error "tests/CMakeLists.txt defines RWKVL_SOURCE_DIR (the source tree this test reads)"
#endif

namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------- the layer table

// Lower layers never include higher ones. Folders of one layer may include each other.
constexpr int kTopLayer = 6;  // tools, examples, bindings: clients of the public API only
const std::map<std::string, int>& layer_table() {
  static const std::map<std::string, int> t = {
      {"src/core", 0},      {"src/format", 1},       {"src/kernels", 1},      {"src/tokenizer", 1},
      {"src/model", 2},     {"src/runtime", 3},      {"src/eval", 4},         {"src/compress", 4},
      {"src/serve", 4},
      {"src/api", 5},       {"include", 5},  // include/rwkv_lite.h is the API src/api implements
      {"tools", kTopLayer}, {"examples", kTopLayer}, {"bindings", kTopLayer},
  };
  return t;
}

// The component of a path relative to the source root: "src/<folder>" or the top folder ("tools", ...).
std::string component_of(const std::string& rel) {
  const size_t a = rel.find('/');
  if (a == std::string::npos) return "";
  const std::string top = rel.substr(0, a);
  if (top != "src") return top;
  const size_t b = rel.find('/', a + 1);
  return b == std::string::npos ? "" : rel.substr(0, b);
}

std::optional<int> layer_of(const std::string& rel) {
  const auto it = layer_table().find(component_of(rel));
  if (it == layer_table().end()) return std::nullopt;
  return it->second;
}

std::string parent_of(const std::string& rel) {
  const size_t k = rel.rfind('/');
  return k == std::string::npos ? "" : rel.substr(0, k);
}

// ---------------------------------------------------------------- scanning

struct Include {
  std::string file;  // relative to the source root
  int line = 0;
  std::string written;   // as in the #include
  std::string resolved;  // relative to the source root; "" when no such header exists
};

bool is_source(const fs::path& p) {
  static const std::set<std::string> ext = {".h", ".hpp", ".c", ".cc", ".cpp", ".inc"};
  return ext.count(p.extension().string()) != 0;
}

// Resolves like the compiler: beside the including file, then the library's include path (include/, src/).
std::string resolve(const fs::path& root, const std::string& file, const std::string& written) {
  const std::vector<std::string> dirs = {parent_of(file), "include", "src"};
  for (const std::string& d : dirs) {
    const fs::path cand = (d.empty() ? root : root / d) / written;
    std::error_code ec;
    if (fs::is_regular_file(cand, ec))
      return fs::relative(fs::weakly_canonical(cand), fs::weakly_canonical(root)).generic_string();
  }
  return "";
}

std::vector<Include> scan(const fs::path& root, std::vector<std::string>* files) {
  static const std::regex kInclude(R"re(^\s*#\s*include\s*"([^"]+)")re");
  std::vector<Include> out;
  for (const char* top : {"src", "include", "tools", "examples", "bindings"}) {
    std::error_code ec;
    if (!fs::is_directory(root / top, ec)) continue;
    std::vector<fs::path> paths;
    for (const auto& e : fs::recursive_directory_iterator(root / top))
      if (e.is_regular_file() && is_source(e.path())) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    for (const fs::path& p : paths) {
      const std::string rel = fs::relative(p, root).generic_string();
      files->push_back(rel);
      std::ifstream in(p);
      std::string text;
      int line = 0;
      while (std::getline(in, text)) {
        ++line;
        std::smatch m;
        if (std::regex_search(text, m, kInclude))
          out.push_back({rel, line, m[1].str(), resolve(root, rel, m[1].str())});
      }
    }
  }
  return out;
}

// Why `inc` breaks the rule ("" when it does not).
std::string violation(const Include& inc) {
  const int from = *layer_of(inc.file);
  const std::optional<int> to = layer_of(inc.resolved);
  if (!to) return "the header lies outside every layer";
  if (from == kTopLayer) {
    const bool public_header = component_of(inc.resolved) == "include";
    const bool own_folder = parent_of(inc.resolved) == parent_of(inc.file);
    if (public_header || own_folder) return "";
    return component_of(inc.file) + " may include only include/ and its own folder, not " + component_of(inc.resolved);
  }
  if (component_of(inc.file) == "include" && component_of(inc.resolved) != "include")
    return "the public header may include only public headers";
  if (*to > from)
    return component_of(inc.file) + " (layer " + std::to_string(from) + ") may not include " +
           component_of(inc.resolved) + " (layer " + std::to_string(*to) + ")";
  return "";
}

fs::path source_root() { return fs::path(RWKVL_SOURCE_DIR); }

// ---------------------------------------------------------------- tests

TEST(Layering, TableClassifiesPaths) {
  EXPECT_EQ(layer_of("src/core/error.h"), 0);
  EXPECT_EQ(layer_of("src/kernels/matvec_avx2.cpp"), 1);
  EXPECT_EQ(layer_of("src/model/model.h"), 2);
  EXPECT_EQ(layer_of("src/runtime/planner.h"), 3);
  EXPECT_EQ(layer_of("src/compress/compress.h"), 4);
  EXPECT_EQ(layer_of("src/api/c_api.cpp"), 5);
  EXPECT_EQ(layer_of("include/rwkv_lite.h"), 5);
  EXPECT_EQ(layer_of("tools/rwkv-lite/main.cpp"), kTopLayer);
  EXPECT_EQ(layer_of("examples/generate.c"), kTopLayer);
  EXPECT_EQ(layer_of("src/newfolder/x.cpp"), std::nullopt);
  EXPECT_EQ(layer_of("CMakeLists.txt"), std::nullopt);

  // The rule itself, on made-up includes.
  auto why = [](const std::string& file, const std::string& resolved) { return violation({file, 1, "", resolved}); };
  EXPECT_EQ(why("src/model/model.cpp", "src/core/error.h"), "");
  EXPECT_EQ(why("src/format/format.cpp", "src/tokenizer/tokenizer.h"), "");  // same layer
  EXPECT_NE(why("src/core/error.cpp", "src/model/model.h"), "");
  EXPECT_NE(why("src/compress/compress.cpp", "src/api/api_internal.h"), "");
  EXPECT_EQ(why("src/api/c_api.cpp", "include/rwkv_lite.h"), "");
  EXPECT_NE(why("src/kernels/dispatch.cpp", "include/rwkv_lite.h"), "");
  EXPECT_EQ(why("tools/rwkv-lite/main.cpp", "include/rwkv_lite.h"), "");
  EXPECT_EQ(why("tools/rwkv-lite/main.cpp", "tools/rwkv-lite/args.h"), "");
  EXPECT_NE(why("tools/rwkv-lite/main.cpp", "src/core/error.h"), "");
  EXPECT_NE(why("tools/other/x.cpp", "tools/rwkv-lite/args.h"), "");
  EXPECT_NE(why("include/rwkv_lite.h", "src/core/error.h"), "");
}

TEST(Layering, EveryFileBelongsToALayer) {
  std::vector<std::string> files;
  const std::vector<Include> incs = scan(source_root(), &files);
  // Guards against passing by reading nothing (a wrong RWKVL_SOURCE_DIR).
  ASSERT_GT(files.size(), 50u) << "read " << files.size() << " files under " << source_root();
  ASSERT_GT(incs.size(), 100u);
  for (const std::string& f : files)
    EXPECT_TRUE(layer_of(f).has_value()) << f
                                         << ": its folder has no layer; add it to the table in tests/test_layering.cpp "
                                         << "and docs/ARCHITECTURE.md";
  for (const Include& inc : incs)
    EXPECT_FALSE(inc.resolved.empty()) << inc.file << ":" << inc.line << ": #include \"" << inc.written
                                       << "\" names no header in the tree (beside the file, include/ or src/)";
}

TEST(Layering, IncludesFollowTheLayerRule) {
  std::vector<std::string> files;
  const std::vector<Include> incs = scan(source_root(), &files);
  ASSERT_GT(incs.size(), 100u);
  std::ostringstream broken;
  int n_broken = 0;
  for (const Include& inc : incs) {
    if (!layer_of(inc.file) || inc.resolved.empty()) continue;  // reported by EveryFileBelongsToALayer
    const std::string why = violation(inc);
    if (why.empty()) continue;
    ++n_broken;
    broken << "\n  " << inc.file << ":" << inc.line << ": #include \"" << inc.written << "\": " << why;
  }
  EXPECT_EQ(n_broken, 0) << "includes that break the layer rule (docs/ARCHITECTURE.md):" << broken.str();
}

// The tests mirror the source (issue #14): every test program lives in tests/<layer>/ for a folder src/<layer>/
// (test_layering.cpp itself, which reads the whole tree, at the top), and every folder of src/ has its tests.
TEST(Layering, TestsMirrorTheSource) {
  const fs::path root = source_root();
  std::set<std::string> src_dirs, tested_dirs;
  for (const auto& e : fs::directory_iterator(root / "src"))
    if (e.is_directory()) src_dirs.insert(e.path().filename().string());
  ASSERT_GE(src_dirs.size(), 9u) << "read " << (root / "src").string();
  for (const auto& e : fs::recursive_directory_iterator(root / "tests")) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.rfind("test_", 0) != 0 || e.path().extension() != ".cpp") continue;
    const fs::path rel = fs::relative(e.path(), root / "tests");
    if (rel == "test_layering.cpp" || *rel.begin() == "support") continue;  // support: helpers, not tests
    const std::string dir = rel.parent_path().string();
    EXPECT_TRUE(src_dirs.count(dir)) << "tests/" << rel.string()
                                     << ": not in a folder named like one of src/ (tests/<layer>/test_*.cpp)";
    tested_dirs.insert(dir);
  }
  for (const std::string& d : src_dirs)
    EXPECT_TRUE(tested_dirs.count(d)) << "src/" << d << " has no tests/" << d << "/test_*.cpp";
}

}  // namespace
