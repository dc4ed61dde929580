#include "compress/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "compress/calibrate.h"
#include "core/error.h"
#include "core/file_writer.h"
#include "core/mapped_file.h"

namespace rwkvl::compress {

namespace {

constexpr int kJournalVersion = 1;
constexpr const char* kJournal = "journal.json";
constexpr const char* kSpool = "spool";

// The names a journal folder may hold: its files and the writer's named temporaries of them.
bool journal_file(const std::string& n) {
  if (n == kJournal || n == kSpool) return true;
  if (n.starts_with("calib-") && n.ends_with(".bin")) return true;
  return n.starts_with(".journal.json.tmp-") || (n.starts_with(".calib-") && n.find(".bin.tmp-") != std::string::npos);
}

std::string read_text(const std::string& path) {
  const std::shared_ptr<MappedFile> f = MappedFile::open(path);
  if (f->size() > (size_t{256} << 20)) RWKVL_FAIL(kFormat, "'%s' is too large for a journal", path.c_str());
  return std::string(reinterpret_cast<const char*>(f->data()), f->size());
}

Stage stage_from(const std::string& s) {
  for (Stage st : {Stage::kLowRankQuant, Stage::kSparseFfn, Stage::kClusterHead, Stage::kSave})
    if (s == stage_name(st)) return st;
  RWKVL_FAIL(kFormat, "unknown stage '%s' in a compress journal", s.c_str());
}

}  // namespace

const char* stage_name(Stage s) {
  switch (s) {
    case Stage::kLowRankQuant: return "lowrank_quant";
    case Stage::kSparseFfn: return "sparse_ffn";
    case Stage::kClusterHead: return "cluster_head";
    case Stage::kSave: return "save";
  }
  return "";
}

// ------------------------------------------------------------------------------------------ the folder

Checkpoint::Checkpoint(const std::string& out_path, nlohmann::json key, std::shared_ptr<const Model> input, bool resume)
    : dir_(out_path + ".journal"), input_(std::move(input)), key_(std::move(key)) {
  struct stat st {};
  if (lstat(dir_.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      RWKVL_FAIL(kIo, "'%s' (the journal of this output) exists and is not a folder: remove it or choose another output",
                 dir_.c_str());
    if (resume && access((dir_ + "/" + kJournal).c_str(), F_OK) == 0) {
      read_journal(key_);
      return;
    }
    replaced_ = access((dir_ + "/" + kJournal).c_str(), F_OK) == 0;
    clear_folder();
  } else if (errno != ENOENT || mkdir(dir_.c_str(), 0700) != 0) {
    RWKVL_FAIL(kIo, "cannot make the journal folder '%s': %s", dir_.c_str(), std::strerror(errno));
  }
  spool_ = Spool::open(dir_ + "/" + kSpool, 0);
}

Checkpoint::~Checkpoint() = default;

void Checkpoint::clear_folder() {
  DIR* d = opendir(dir_.c_str());
  if (!d) RWKVL_FAIL(kIo, "cannot read the journal folder '%s': %s", dir_.c_str(), std::strerror(errno));
  std::vector<std::string> names;
  while (const dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    names.push_back(n);
  }
  closedir(d);
  for (const std::string& n : names)
    if (!journal_file(n))
      RWKVL_FAIL(kIo, "'%s' holds '%s', which is not part of a compress journal: remove it or choose another output",
                 dir_.c_str(), n.c_str());
  for (const std::string& n : names)
    if (unlink((dir_ + "/" + n).c_str()) != 0 && errno != ENOENT)
      RWKVL_FAIL(kIo, "cannot remove '%s/%s': %s", dir_.c_str(), n.c_str(), std::strerror(errno));
}

void Checkpoint::finish() {
  spool_.reset();  // (views still held stay valid: the mapping outlives the name)
  clear_folder();
  rmdir(dir_.c_str());
}

// ------------------------------------------------------------------------------------------ tensors

nlohmann::json Checkpoint::encode(const TensorMap& tm) {
  nlohmann::json out = nlohmann::json::array();
  const TensorMap& in = input_->tensors();
  for (const auto& [name, t] : tm) {
    nlohmann::json e = {{"n", name}, {"t", static_cast<uint32_t>(t.dtype)}, {"s", t.shape}};
    auto it = in.find(name);
    if (it != in.end() && it->second.data == t.data && it->second.nbytes == t.nbytes && it->second.dtype == t.dtype &&
        it->second.shape == t.shape) {
      e["in"] = name;
      out.push_back(std::move(e));
      continue;
    }
    int64_t off = t.data ? spool_->offset_of(t.data) : -1;
    if (off < 0) {  // a tensor in memory: copied to the spool once
      auto c = t.data ? spooled_.find(t.data) : spooled_.end();
      if (c != spooled_.end() && c->second.second.nbytes == t.nbytes) {
        off = static_cast<int64_t>(c->second.first);
      } else {
        const Tensor v = spool_->put(t);
        off = spool_->offset_of(v.data);
        if (t.data) spooled_[t.data] = {static_cast<uint64_t>(off), t};
      }
    }
    e["o"] = off;
    e["b"] = t.nbytes;
    out.push_back(std::move(e));
  }
  return out;
}

TensorMap Checkpoint::decode(const nlohmann::json& j) const {
  TensorMap tm;
  const TensorMap& in = input_->tensors();
  for (const nlohmann::json& e : j) {
    const std::string name = e.at("n").get<std::string>();
    const uint32_t raw = e.at("t").get<uint32_t>();
    if (!dtype_valid(raw)) RWKVL_FAIL(kFormat, "journal: tensor '%s' has an unknown dtype", name.c_str());
    const DType dt = static_cast<DType>(raw);
    const std::vector<int64_t> shape = e.at("s").get<std::vector<int64_t>>();
    if (e.contains("in")) {
      auto it = in.find(e.at("in").get<std::string>());
      if (it == in.end() || it->second.dtype != dt || it->second.shape != shape)
        RWKVL_FAIL(kFormat, "journal: tensor '%s' of the input is not in the input model as recorded", name.c_str());
      tm[name] = it->second;
      continue;
    }
    uint64_t n = 1;
    for (int64_t d : shape) {
      if (d < 0 || d > (int64_t{1} << 40) || (d > 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)))
        RWKVL_FAIL(kFormat, "journal: tensor '%s' has a bad shape", name.c_str());
      n *= static_cast<uint64_t>(d);
    }
    const int64_t off = e.at("o").get<int64_t>();
    const uint64_t nbytes = e.at("b").get<uint64_t>();
    int64_t kept = 0;
    const bool fits = dtype_is_masked(dt) ? shape.size() == 2 && masked_kept_from_bytes(dt, shape[0], shape[1], nbytes, &kept)
                                          : dtype_bytes(dt, n) == nbytes;
    if (off < 0 || !fits)
      RWKVL_FAIL(kFormat, "journal: tensor '%s' has a size that does not match its shape", name.c_str());
    tm[name] = spool_->view(name, dt, shape, static_cast<uint64_t>(off), nbytes);
  }
  return tm;
}

// ------------------------------------------------------------------------------------------ entries

void Checkpoint::begin_stage(Stage s, const Model& base) {
  stage_ = s;
  if (s == Stage::kLowRankQuant) {
    base_ = nullptr;  // the input itself
    base_passes_ = input_->passes();
  } else {
    base_ = encode(base.tensors());
    base_passes_ = base.passes();
  }
  write_entry(0, nullptr, nlohmann::json(), "");
}

void Checkpoint::save(int unit, const TensorMap& current, const nlohmann::json& state, const LayerwiseCalibration* cal) {
  const auto t0 = std::chrono::steady_clock::now();
  const nlohmann::json cur = encode(current);
  std::string calib;
  if (cal) {
    calib = "calib-" + std::to_string(entry_ + 1) + ".bin";
    cal->save(dir_ + "/" + calib);
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_entry(unit, &cur, state, calib);
}

void Checkpoint::write_entry(int unit, const nlohmann::json* current, const nlohmann::json& state,
                             const std::string& calib) {
  const auto t0 = std::chrono::steady_clock::now();
  spool_->sync();  // the bytes the entry names are durable before it is
  nlohmann::json j = {{"version", kJournalVersion},
                      {"key", key_},
                      {"entry", entry_ + 1},
                      {"stage", stage_name(stage_)},
                      {"unit", unit},
                      {"spool_bytes", spool_->bytes()},
                      {"base", base_},
                      {"base_passes", base_passes_},
                      {"current", current ? *current : nlohmann::json()},
                      {"state", state},
                      {"calibration", calib},
                      {"reports", reports_}};
  const std::string text = j.dump();
  write_file_atomic(dir_ + "/" + kJournal, text.data(), text.size());
  ++entry_;
  progress_ = progress_ || unit > 0 || stage_ != Stage::kLowRankQuant;
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!calib_file_.empty() && calib_file_ != calib) unlink((dir_ + "/" + calib_file_).c_str());
  calib_file_ = calib;
}

void Checkpoint::read_journal(const nlohmann::json& key) {
  const std::string path = dir_ + "/" + kJournal;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    RWKVL_FAIL(kFormat, "'%s' is damaged: %s", path.c_str(), e.what());
  }
  try {
    if (!j.is_object() || j.value("version", 0) != kJournalVersion)
      RWKVL_FAIL(kFormat, "'%s' is not a compress journal of this version (%d)", path.c_str(), kJournalVersion);
    for (const auto& [field, v] : key.items())
      if (!j.at("key").contains(field) || j.at("key").at(field) != v)
        RWKVL_FAIL(kInvalidArgument,
                   "cannot resume: the journal in '%s' was made with another %s (run without --resume to start again)",
                   dir_.c_str(), field.c_str());
    entry_ = j.at("entry").get<int>();
    stage_ = stage_from(j.at("stage").get<std::string>());
    spool_ = Spool::open(dir_ + "/" + kSpool, j.at("spool_bytes").get<uint64_t>());
    base_ = j.at("base");
    base_passes_ = j.at("base_passes");
    reports_ = j.at("reports");
    calib_file_ = j.at("calibration").get<std::string>();
    if (calib_file_.find('/') != std::string::npos || (!calib_file_.empty() && !journal_file(calib_file_)))
      RWKVL_FAIL(kFormat, "'%s' names a calibration snapshot outside its folder", path.c_str());
    point_.stage = stage_;
    point_.unit = j.at("unit").get<int>();
    if (point_.unit < 0 || point_.unit > (1 << 20)) RWKVL_FAIL(kFormat, "'%s': bad unit", path.c_str());
    if (!base_.is_null()) point_.base = decode(base_);
    point_.base_passes = base_passes_;
    if (!j.at("current").is_null()) point_.current = decode(j.at("current"));
    point_.state = j.at("state");
    point_.calibration = calib_file_.empty() ? "" : dir_ + "/" + calib_file_;
    point_.reports = reports_;
  } catch (const nlohmann::json::exception& e) {
    RWKVL_FAIL(kFormat, "'%s' is damaged: %s", path.c_str(), e.what());
  }
  // A snapshot or temporaries of an entry that was never written are left over: they go.
  DIR* d = opendir(dir_.c_str());
  if (d) {
    std::vector<std::string> stale;
    while (const dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != ".." && n != kJournal && n != kSpool && n != calib_file_ && journal_file(n)) stale.push_back(n);
    }
    closedir(d);
    for (const std::string& n : stale) unlink((dir_ + "/" + n).c_str());
  }
  resumed_ = true;
}

// ------------------------------------------------------------------------------------------ reports

nlohmann::json exact(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

double exact_double(const nlohmann::json& j) {
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    RWKVL_FAIL(kFormat, "journal: '%s' is not a number", s.c_str());
  }
  return j.get<double>();
}

nlohmann::json report_json(const Report& r) {
  nlohmann::json mats = nlohmann::json::array();
  for (const MatrixReport& m : r.matrices)
    mats.push_back({{"name", m.name}, {"action", m.action}, {"rows", m.rows}, {"cols", m.cols}, {"rank", m.rank},
                    {"dtype", m.dtype}, {"bytes_before", m.bytes_before}, {"bytes_after", m.bytes_after},
                    {"err_svd", exact(m.err_svd)}, {"err_asvd", exact(m.err_asvd)}, {"err_frob", exact(m.err_frob)}});
  return {{"matrices", mats},
          {"bytes_before", r.bytes_before},
          {"bytes_after", r.bytes_after},
          {"pass", r.pass},
          {"budget_planned_bytes", r.budget_planned_bytes},
          {"budget_error_sum", exact(r.budget_error_sum)},
          {"seconds", exact(r.seconds)}};
}

Report report_from_json(const nlohmann::json& j) {
  Report r;
  for (const nlohmann::json& m : j.at("matrices")) {
    MatrixReport mr;
    mr.name = m.at("name").get<std::string>();
    mr.action = m.at("action").get<std::string>();
    mr.rows = m.at("rows").get<int64_t>();
    mr.cols = m.at("cols").get<int64_t>();
    mr.rank = m.at("rank").get<int64_t>();
    mr.dtype = m.at("dtype").get<std::string>();
    mr.bytes_before = m.at("bytes_before").get<uint64_t>();
    mr.bytes_after = m.at("bytes_after").get<uint64_t>();
    mr.err_svd = exact_double(m.at("err_svd"));
    mr.err_asvd = exact_double(m.at("err_asvd"));
    mr.err_frob = exact_double(m.at("err_frob"));
    r.matrices.push_back(std::move(mr));
  }
  r.bytes_before = j.at("bytes_before").get<uint64_t>();
  r.bytes_after = j.at("bytes_after").get<uint64_t>();
  r.pass = j.at("pass");
  r.budget_planned_bytes = j.at("budget_planned_bytes").get<uint64_t>();
  r.budget_error_sum = exact_double(j.at("budget_error_sum"));
  r.seconds = exact_double(j.at("seconds"));
  return r;
}

namespace {

// The fields of the reports a journal keeps, named once for both directions (doubles bit for bit, see exact()).
template <class T>
struct Fields {
  std::vector<std::pair<const char*, double T::*>> doubles;
  std::vector<std::pair<const char*, float T::*>> floats;
  std::vector<std::pair<const char*, int64_t T::*>> ints;
  void put(nlohmann::json& j, const T& o) const {
    for (const auto& [n, m] : doubles) j[n] = exact(o.*m);
    for (const auto& [n, m] : floats) j[n] = exact(o.*m);
    for (const auto& [n, m] : ints) j[n] = o.*m;
  }
  void get(const nlohmann::json& j, T& o) const {
    for (const auto& [n, m] : doubles) o.*m = exact_double(j.at(n));
    for (const auto& [n, m] : floats) o.*m = static_cast<float>(exact_double(j.at(n)));
    for (const auto& [n, m] : ints) o.*m = j.at(n).template get<int64_t>();
  }
};

const Fields<LayerPredictor>& predictor_fields() {
  using P = LayerPredictor;
  static const Fields<P> f{{{"true_active_frac", &P::true_active_frac},
                            {"recall_mlp", &P::recall_mlp},
                            {"frac_mlp", &P::frac_mlp},
                            {"recall_bits", &P::recall_bits},
                            {"frac_bits", &P::frac_bits},
                            {"recall_ens", &P::recall_ens},
                            {"frac_ens", &P::frac_ens},
                            {"pos_weight", &P::pos_weight},
                            {"train_loss", &P::train_loss},
                            {"holdout_loss", &P::holdout_loss},
                            {"seconds", &P::seconds}},
                           {{"mlp_logit_thresh", &P::mlp_logit_thresh},
                            {"bits_thresh", &P::bits_thresh},
                            {"mlp_alone_logit_thresh", &P::mlp_alone_logit_thresh},
                            {"bits_alone_thresh", &P::bits_alone_thresh}},
                           {{"C", &P::C}, {"F", &P::F}, {"hidden", &P::hidden}, {"n_train", &P::n_train},
                            {"n_holdout", &P::n_holdout}}};
  return f;
}

const Fields<ClusterHeadReport>& cluster_fields() {
  using R = ClusterHeadReport;
  static const Fields<R> f{{{"heldout_kl_init", &R::heldout_kl_init},
                            {"heldout_kl", &R::heldout_kl},
                            {"heldout_top1_cluster", &R::heldout_top1_cluster},
                            {"heldout_rows_frac", &R::heldout_rows_frac},
                            {"heldout_token_covered", &R::heldout_token_covered},
                            {"heldout_mass_covered", &R::heldout_mass_covered},
                            {"seconds_cluster", &R::seconds_cluster},
                            {"seconds_calib", &R::seconds_calib},
                            {"seconds_train", &R::seconds_train}},
                           {},
                           {{"k_initial", &R::k_initial},
                            {"k_final", &R::k_final},
                            {"largest_before_cap", &R::largest_before_cap},
                            {"largest", &R::largest},
                            {"smallest", &R::smallest}}};
  return f;
}

}  // namespace

nlohmann::json sparse_layers_json(const std::vector<SparseFfnLayerReport>& layers) {
  nlohmann::json out = nlohmann::json::array();
  for (const SparseFfnLayerReport& l : layers) {
    nlohmann::json e = {{"layer", l.layer}, {"zero_frac", exact(l.zero_frac)}};
    predictor_fields().put(e, l.pred);
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<SparseFfnLayerReport> sparse_layers_from_json(const nlohmann::json& j) {
  std::vector<SparseFfnLayerReport> out;
  for (const nlohmann::json& e : j) {
    SparseFfnLayerReport l;
    l.layer = e.at("layer").get<int>();
    l.zero_frac = exact_double(e.at("zero_frac"));
    predictor_fields().get(e, l.pred);
    out.push_back(std::move(l));
  }
  return out;
}

nlohmann::json sparse_report_json(const SparseFfnReport& r) {
  return {{"layers", sparse_layers_json(r.layers)},
          {"predictor_bytes", r.predictor_bytes},
          {"bundle_bytes", r.bundle_bytes},
          {"seconds_collect", exact(r.seconds_collect)},
          {"seconds_train", exact(r.seconds_train)},
          {"pass", r.pass}};
}

SparseFfnReport sparse_report_from_json(const nlohmann::json& j) {
  SparseFfnReport r;
  r.layers = sparse_layers_from_json(j.at("layers"));
  r.predictor_bytes = j.at("predictor_bytes").get<uint64_t>();
  r.bundle_bytes = j.at("bundle_bytes").get<uint64_t>();
  r.seconds_collect = exact_double(j.at("seconds_collect"));
  r.seconds_train = exact_double(j.at("seconds_train"));
  r.pass = j.value("pass", nlohmann::json());
  return r;
}

nlohmann::json cluster_report_json(const ClusterHeadReport& r) {
  nlohmann::json j = {{"best_epoch", r.best_epoch}, {"pass", r.pass}};
  cluster_fields().put(j, r);
  return j;
}

ClusterHeadReport cluster_report_from_json(const nlohmann::json& j) {
  ClusterHeadReport r;
  cluster_fields().get(j, r);
  r.best_epoch = j.at("best_epoch").get<int>();
  r.pass = j.at("pass");
  return r;
}

}  // namespace rwkvl::compress
