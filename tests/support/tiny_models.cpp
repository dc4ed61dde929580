#include "tiny_models.h"

#include "model/model.h"
#include "runtime/session.h"
#include "test_util.h"

namespace rwkvl::test {

std::string tiny_model_path(const std::string& version, const std::string& format) {
  return shared_file("reference/tiny-rwkv/tiny-rwkv-" + version + "-" + format + ".bin");
}

std::string tiny_expected_path(const std::string& version) {
  return shared_file("reference/tiny-rwkv/expected-logits-" + version + ".bin");
}

std::shared_ptr<Model> load_tiny(const std::string& version, const std::string& format) {
  const std::string path = tiny_model_path(version, format);
  if (path.empty()) return nullptr;
  return Model::load(path, {});
}

std::vector<float> logits_after(const std::shared_ptr<const Model>& m, const std::vector<int32_t>& toks, size_t chunk,
                                int threads) {
  Session ctx(m, threads);
  State st;
  st.reset(m->config());
  std::vector<float> logits(static_cast<size_t>(m->config().n_vocab));
  ctx.eval(st, toks.data(), toks.size(), chunk, logits.data(), nullptr);
  return logits;
}

std::vector<int32_t> byte_tokens(const std::string& s, size_t n) {
  std::vector<int32_t> t;
  for (size_t i = 0; i < s.size() && t.size() < n; ++i) t.push_back(static_cast<unsigned char>(s[i]));
  return t;
}

}  // namespace rwkvl::test
