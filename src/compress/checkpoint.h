// The journal of a compress run that writes a file (issue #19): an interrupted run (SIGKILL, a power cut, a full
// disk) is resumed with --resume from the last finished layer and writes the same bytes as a run that was never
// interrupted.
//
// The journal is the folder "<OUT>.journal" next to the output:
//  * spool: the finished tensors (the pipeline's spool, core/spool.h, as a named file), appended to only;
//  * journal.json: where the run stands, replaced atomically after each finished unit of work: the key of the run
//    (input, recipe, calibration, build), the stage and the layers of it done, the tensors of the model the stage
//    started from and of the model now (each a tensor of the input file or a range of the spool), the reports so
//    far, the number of spool bytes written, and the name of the calibration snapshot;
//  * calib-N.bin: the calibration stream entering the next layer (LayerwiseCalibration::save), N the entry number.
// The spool and the snapshot are made durable before the entry that names them, so every entry describes bytes
// that exist. Units: a layer of stage 1 (low rank + quantisation), a group of layers of the sparse FFN, the cluster
// head as a whole (it resumes from its start), and the final write. The folder is removed once OUT is written.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "compress/cluster_head.h"
#include "compress/compress.h"
#include "compress/sparse_ffn.h"
#include "core/spool.h"
#include "model/model.h"

namespace rwkvl::compress {

class LayerwiseCalibration;

// The pipeline's stages in their order (pipeline.h); kSave: every pass is done, the file is being written.
enum class Stage : int { kLowRankQuant = 0, kSparseFfn = 1, kClusterHead = 2, kSave = 3 };
const char* stage_name(Stage s);  // "lowrank_quant", "sparse_ffn", "cluster_head", "save"

// Where a journal says a run stands.
struct ResumePoint {
  Stage stage = Stage::kLowRankQuant;
  int unit = 0;                // layers of the stage done (0: the stage starts from `base`)
  TensorMap base;              // the model the stage starts from (empty for stage 1: the input model)
  nlohmann::json base_passes;  // its pass records
  TensorMap current;           // unit > 0: the stage's tensors now
  nlohmann::json state;        // unit > 0: what the stage keeps between units (its report so far)
  std::string calibration;     // unit > 0: path of the calibration snapshot ("" when the stage keeps none)
  nlohmann::json reports;      // the finished stages' reports (the pipeline's)
};

class Checkpoint {
 public:
  // The journal of the run that writes `out_path`. `key` identifies the run. With resume, a journal found there is
  // continued when its key is the same, and refused (Error(kInvalidArgument) naming what differs) when not; without
  // one the run starts from the beginning. Without resume, a journal found there is replaced. Error(kIo) when the
  // folder cannot be made, or the path holds anything but a journal.
  Checkpoint(const std::string& out_path, nlohmann::json key, std::shared_ptr<const Model> input, bool resume);
  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  Spool* spool() const { return spool_.get(); }
  const std::string& dir() const { return dir_; }
  // The point to resume from (null: from the beginning).
  const ResumePoint* resume_point() const { return resumed_ ? &point_ : nullptr; }
  // True when an earlier journal (of another run) was there and has been replaced.
  bool replaced_earlier() const { return replaced_; }
  // Seconds spent writing entries so far (the spool's sync, the calibration snapshots, the entries).
  double seconds() const { return seconds_; }
  // True when the journal records finished work (a layer, or a stage after the first), or continues a run that did.
  bool has_progress() const { return resumed_ || progress_; }

  // The finished stages' reports, written with every later entry.
  void set_reports(nlohmann::json reports) { reports_ = std::move(reports); }
  // Stage s starts from `base` (the previous stage's result, or the input for stage 1): an entry.
  void begin_stage(Stage s, const Model& base);
  // `unit` layers of the current stage are done: its tensors now, its state, and the calibration entering the
  // next layer (null: none). An entry.
  void save(int unit, const TensorMap& current, const nlohmann::json& state, const LayerwiseCalibration* cal);
  // OUT is written: the journal is removed.
  void finish();

 private:
  nlohmann::json encode(const TensorMap& tm);
  TensorMap decode(const nlohmann::json& j) const;
  void write_entry(int unit, const nlohmann::json* current, const nlohmann::json& state, const std::string& calib);
  void read_journal(const nlohmann::json& key);
  void clear_folder();

  std::string dir_;
  std::shared_ptr<const Model> input_;
  std::shared_ptr<Spool> spool_;
  nlohmann::json key_, reports_, base_, base_passes_;
  Stage stage_ = Stage::kLowRankQuant;
  int entry_ = 0;          // number of the last entry written
  std::string calib_file_;  // the snapshot the last entry names
  std::map<const void*, std::pair<uint64_t, Tensor>> spooled_;  // tensors in memory copied to the spool
  ResumePoint point_;
  bool resumed_ = false, replaced_ = false, progress_ = false;
  double seconds_ = 0;
};

// Exact JSON for reports kept in a journal: doubles round-trip bit for bit (NaN and infinities as strings).
nlohmann::json exact(double v);
double exact_double(const nlohmann::json& j);
nlohmann::json report_json(const Report& r);
Report report_from_json(const nlohmann::json& j);
nlohmann::json sparse_layers_json(const std::vector<SparseFfnLayerReport>& layers);
std::vector<SparseFfnLayerReport> sparse_layers_from_json(const nlohmann::json& j);
nlohmann::json sparse_report_json(const SparseFfnReport& r);
SparseFfnReport sparse_report_from_json(const nlohmann::json& j);
nlohmann::json cluster_report_json(const ClusterHeadReport& r);
ClusterHeadReport cluster_report_from_json(const nlohmann::json& j);

}  // namespace rwkvl::compress
