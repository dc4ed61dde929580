#include "compress/calibrate.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/file_writer.h"
#include "core/mapped_file.h"
#include "runtime/layer_stream.h"
#include "runtime/session.h"

namespace rwkvl::compress {

namespace {

// The model's observer, narrowed to a tap set: a projection is recognised by the identity it carries.
Observer observer_for(const TapSet* taps, const TapFn* fn) {
  if (!taps || !fn || !*fn || taps->empty()) return nullptr;
  return [taps, fn](const Matrix& m, const float* X, size_t T) {
    if (taps->contains(m.layer, m.role)) (*fn)(m.layer, m.role, X, T);
  };
}

}  // namespace

TapSet& TapSet::add(int layer, MatRole role) {
  RWKVL_CHECK(layer >= 0);
  if (per_layer_.size() <= static_cast<size_t>(layer)) per_layer_.resize(static_cast<size_t>(layer) + 1, 0);
  per_layer_[static_cast<size_t>(layer)] |= bit(role);
  return *this;
}

bool TapSet::empty() const {
  if (all_) return false;
  return std::all_of(per_layer_.begin(), per_layer_.end(), [](uint64_t m) { return m == 0; });
}

// ------------------------------------------------------------------------------------------ Calibrator

struct Calibrator::Impl {
  std::unique_ptr<Session> session;
  int n_threads = 1;
  TapSet taps;
  TapFn fn;
  uint64_t budget = 0;
  bool planned = false;
  Impl(std::shared_ptr<const Model> m, int threads) : session(std::make_unique<Session>(std::move(m), threads)), n_threads(threads) {}
};

Calibrator::Calibrator(std::shared_ptr<const Model> model, const CalibrationOptions& opts)
    : model_(std::move(model)), impl_(std::make_unique<Impl>(model_, std::max(1, opts.n_threads))) {
  impl_->budget = opts.memory_budget;
}

Calibrator::~Calibrator() = default;

void Calibrator::set_taps(TapSet taps, TapFn fn) {
  impl_->taps = std::move(taps);
  impl_->fn = std::move(fn);
  impl_->session->set_observer(observer_for(&impl_->taps, &impl_->fn));
}

ThreadPool* Calibrator::pool() { return impl_->session->pool(); }

uint64_t Calibrator::streamed_layer_loads() const {
  const LayerStream* s = impl_->session->layer_stream();
  return s ? s->stats().loads : 0;
}

void Calibrator::run(const int32_t* tokens, size_t n, size_t chunk, const ChunkFn& after) {
  RWKVL_CHECK(chunk >= 1);
  if (impl_->budget > 0 && !impl_->planned) {  // the plan needs the chunk: the session is made again for it
    SessionParams sp;
    sp.threads = impl_->n_threads;
    sp.memory.budget = impl_->budget;
    sp.memory.chunk = chunk;
    impl_->session.reset();
    impl_->session = std::make_unique<Session>(model_, sp);
    impl_->session->set_observer(observer_for(&impl_->taps, &impl_->fn));
    impl_->planned = true;
  }
  Session& ctx = *impl_->session;
  const ModelConfig& cfg = model_->config();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  State st;
  st.reset(cfg);
  std::vector<float> x(std::min(chunk, n) * C);
  for (size_t done = 0; done < n; done += chunk) {
    const size_t T = std::min(chunk, n - done);
    ctx.embed(tokens + done, T, x.data());
    ctx.forward_layers(st, x.data(), T, 0, cfg.n_layer, tokens + done);
    if (after) after(done, T, x.data());
  }
}

// ------------------------------------------------------------------------------------------ layerwise

LayerwiseCalibration::LayerwiseCalibration(const std::shared_ptr<const Model>& model,
                                           const std::vector<int32_t>& tokens, int n_threads, size_t chunk)
    : n_(tokens.size()), chunk_(std::max<size_t>(1, chunk)), n_threads_(n_threads) {
  const ModelConfig& cfg = model->config();
  x_.resize(n_ * static_cast<size_t>(cfg.n_embd));
  if (cfg.arch_major == 7) v_first_.resize(x_.size());
  if (cfg.de_rank > 0) tokens_ = tokens;
  Session ctx(model, n_threads_);
  ctx.embed(tokens.data(), n_, x_.data());
  state_.reset(cfg);
}

uint64_t LayerwiseCalibration::bytes() const {
  return (x_.size() + v_first_.size() + state_.data.size()) * sizeof(float);
}

std::vector<float> LayerwiseCalibration::take_stream() {
  std::vector<float> x = std::move(x_);
  x_ = {};
  v_first_ = {};
  tokens_ = {};
  state_.data = {};
  n_ = 0;
  return x;
}

namespace {

constexpr char kSnapshotMagic[8] = {'R', 'W', 'K', 'V', 'L', 'C', 'A', 'L'};
constexpr uint64_t kSnapshotVersion = 1;

// A checksum of float arrays, a 64-bit word at a time (FNV-1a's step on words: fast enough for hundreds of MB per
// layer; it detects damage, not tampering).
uint64_t words_hash(const std::vector<float>& v, uint64_t h) {
  const size_t n = v.size() * sizeof(float);
  const auto* b = reinterpret_cast<const uint8_t*>(v.data());
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, b + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

}  // namespace

void LayerwiseCalibration::save(const std::string& path) const {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const std::vector<float>* v : {&x_, &v_first_, &state_.data}) h = words_hash(*v, h);
  const uint64_t head[7] = {kSnapshotVersion, n_, x_.size(), v_first_.size(), state_.data.size(),
                            static_cast<uint64_t>(next_layer_), h};
  FileWriter w(path);
  w.write(kSnapshotMagic, sizeof kSnapshotMagic);
  w.write(head, sizeof head);
  for (const std::vector<float>* v : {&x_, &v_first_, &state_.data})
    if (!v->empty()) w.write(v->data(), v->size() * sizeof(float));
  w.commit();
}

void LayerwiseCalibration::load(const std::string& path) {
  const std::shared_ptr<MappedFile> f = MappedFile::open(path);
  uint64_t head[7];
  if (f->size() < sizeof kSnapshotMagic + sizeof head || std::memcmp(f->data(), kSnapshotMagic, 8) != 0)
    RWKVL_FAIL(kFormat, "'%s' is not a calibration snapshot of a compress journal", path.c_str());
  std::memcpy(head, f->data() + 8, sizeof head);
  if (head[0] != kSnapshotVersion)
    RWKVL_FAIL(kFormat, "'%s': calibration snapshot version %llu (this build reads %llu)", path.c_str(),
               static_cast<unsigned long long>(head[0]), static_cast<unsigned long long>(kSnapshotVersion));
  if (head[1] != n_ || head[2] != x_.size() || head[3] != v_first_.size() || head[4] != state_.data.size() ||
      head[5] >= (uint64_t{1} << 20) || f->size() != sizeof kSnapshotMagic + sizeof head + (head[2] + head[3] + head[4]) * sizeof(float))
    RWKVL_FAIL(kFormat, "'%s': the calibration snapshot was made for other sizes (or is cut short)", path.c_str());
  const uint8_t* p = f->data() + sizeof kSnapshotMagic + sizeof head;
  for (std::vector<float>* v : {&x_, &v_first_, &state_.data}) {
    if (!v->empty()) std::memcpy(v->data(), p, v->size() * sizeof(float));
    p += v->size() * sizeof(float);
  }
  uint64_t h = 0xcbf29ce484222325ull;
  for (const std::vector<float>* v : {&x_, &v_first_, &state_.data}) h = words_hash(*v, h);
  if (h != head[6]) RWKVL_FAIL(kFormat, "'%s': the calibration snapshot is damaged (checksum)", path.c_str());
  next_layer_ = static_cast<int>(head[5]);
}

void LayerwiseCalibration::collect(const std::shared_ptr<const Model>& model, int l, const TapSet& taps,
                                   const TapFn& fn) {
  run_layer(model, l, &taps, &fn, false);
}

void LayerwiseCalibration::advance(const std::shared_ptr<const Model>& model, int l) {
  run_layer(model, l, nullptr, nullptr, true);
}

void LayerwiseCalibration::advance(const std::shared_ptr<const Model>& model, int l, const TapSet& taps,
                                   const TapFn& fn) {
  run_layer(model, l, &taps, &fn, true);
}

namespace {

// Thrown by a collecting pass's observer once every tapped projection of the layer has seen the chunk: the rest of
// the layer (what follows the taps) is not needed to collect them, and the state it would update is not kept.
struct ChunkCollected {};

}  // namespace

void LayerwiseCalibration::run_layer(const std::shared_ptr<const Model>& model, int l, const TapSet* taps,
                                     const TapFn* fn, bool advance) {
  RWKVL_CHECK(l == next_layer_);
  const size_t C = static_cast<size_t>(model->config().n_embd);
  const bool v7 = !v_first_.empty();
  Session ctx(model, n_threads_);
  // A collecting pass stops each chunk after its last tap. The state the later chunks' taps depend on (the token
  // shifts, and for taps after the time mix its wkv state) is updated before the taps it feeds, so they see the
  // same inputs as in a whole pass.
  uint64_t wanted = 0, seen = 0;
  if (!advance && taps && fn && *fn)
    for (MatRole r : kLayerRoles)
      if (taps->contains(l, r) && !layer_matrix(model->layer(l), r).empty()) wanted |= uint64_t{1} << static_cast<unsigned>(r);
  const Observer base = observer_for(taps, fn);
  if (wanted && base)
    ctx.set_observer([&](const Matrix& m, const float* X, size_t T) {
      base(m, X, T);
      if (m.layer != l) return;
      seen |= (wanted & (uint64_t{1} << static_cast<unsigned>(m.role)));
      if (seen == wanted) throw ChunkCollected{};
    });
  else
    ctx.set_observer(base);
  // The scratch is sized once for the largest chunk (growing it would zero and move the buffers).
  ctx.scratch().reserve(*model, chunk_);
  State st = state_;
  std::vector<float> buf(chunk_ * C);
  for (size_t off = 0; off < n_; off += chunk_) {
    const size_t T = std::min(chunk_, n_ - off);
    std::memcpy(buf.data(), x_.data() + off * C, T * C * sizeof(float));
    // RWKV-7: layers after the first mix in layer 0's value of the same token, which a whole-model pass keeps
    // in the scratch from layer to layer; here it comes from the stream.
    if (v7 && l > 0) std::memcpy(ctx.scratch().v_first, v_first_.data() + off * C, T * C * sizeof(float));
    const int32_t* toks = tokens_.empty() ? nullptr : tokens_.data() + off;
    if (!advance) {
      seen = 0;
      try {
        ctx.forward_layers(st, buf.data(), T, l, l + 1, toks);
      } catch (const ChunkCollected&) {
      }
      continue;
    }
    ctx.forward_layers(st, buf.data(), T, l, l + 1, toks);
    std::memcpy(x_.data() + off * C, buf.data(), T * C * sizeof(float));
    if (v7 && l == 0) std::memcpy(v_first_.data() + off * C, ctx.scratch().v_first, T * C * sizeof(float));
  }
  if (advance) {
    state_ = std::move(st);
    ++next_layer_;
  }
}

}  // namespace rwkvl::compress
