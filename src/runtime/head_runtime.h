// The output head at run time: the full head (every row of head.weight) or, for files made by
// `rwkv-lite compress --cluster-head K`, the hierarchical head of RWKV-Lite (see ClusterHead in
// model.h):
//   1. the cluster head scores the clusters: log p = log_softmax(W x + bias);
//   2. clusters are taken in order of probability until their cumulative probability reaches `p`,
//      with at least `min_clusters` and at most `max_clusters` of them;
//   3. the tokens of the chosen clusters get exact logits (their rows are one contiguous read each);
//   4. every token t of an unchosen cluster j gets the pseudo-logit
//        log(Q * (p_j / sum of chosen p) * prior_t),   Q = sum of exp of the exact logits,
//      prior_t being the token's share of its cluster's mass learnt on calibration text (uniform 1/n_j
//      for files made with --head-prior uniform).
// The output is always n_vocab logits in token order, so greedy, temperature and top-k/top-p
// sampling, perplexity and LAMBADA all run unchanged on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace rwkvl {

class ThreadPool;
class Storage;

enum class HeadMode { kAuto, kFull, kCluster };
const char* head_mode_name(HeadMode m);
HeadMode parse_head_mode(const std::string& s);  // "auto", "full", "cluster"; throws otherwise

struct HeadOptions {
  HeadMode mode = HeadMode::kAuto;  // auto = cluster for files with a cluster head, full otherwise
  double p = 0.95;                  // cumulative cluster probability to reach
  int min_clusters = 3;
  int max_clusters = 100;
  bool compare = false;  // cluster mode: also compute the full head to measure agreement and KL (slower)
};

struct HeadStats {
  uint64_t tokens = 0;     // logit vectors produced
  uint64_t rows = 0;       // head rows those could have read (n_vocab each)
  uint64_t rows_read = 0;  // head rows read (exact logits)
  uint64_t clusters = 0;   // clusters chosen (cluster mode)
  uint64_t compared = 0;   // tokens compared with the full head (compare)
  uint64_t top1_agree = 0; // of those, same argmax as the full head
  double kl_sum = 0.0;     // sum over compared tokens of KL(full || this), nats
  double seconds = 0.0;
  double rows_frac() const { return rows ? static_cast<double>(rows_read) / static_cast<double>(rows) : 0.0; }
  double top1() const { return compared ? static_cast<double>(top1_agree) / static_cast<double>(compared) : 0.0; }
  double kl() const { return compared ? kl_sum / static_cast<double>(compared) : 0.0; }
};

class HeadRuntime {
 public:
  // Throws kInvalidArgument when cluster mode is asked of a model without a cluster head, or for
  // p outside (0, 1], min < 1, max < min.
  HeadRuntime(const Model& model, ThreadPool* pool, const HeadOptions& opt);
  HeadMode mode() const { return mode_; }  // resolved (never kAuto)
  const HeadOptions& options() const { return opt_; }
  // out (T x n_vocab, token order) = the logits of the T rows of xn (T x C, the ln_out output).
  void logits(const float* xn, size_t T, float* out);
  const HeadStats& stats() const { return stats_; }
  void reset_stats() {
    stats_ = HeadStats{};
    stream_bytes_ = 0;
  }
  // Streams head rows from the file (pread through `storage`) in batches of at most buffer_bytes instead
  // of reading them in place; null storage = in place again. Throws for a head that is not in the file.
  // resident (cluster heads only; empty = none): clusters whose rows are copied once into memory that stays,
  // read through the storage at this call (the planner picks the most used clusters); the rest are streamed.
  // low (cluster heads with an int4 version only; empty = none): clusters read at int4 (from head.weight.q4),
  // resident or streamed as `resident` says.
  void set_stream(std::shared_ptr<Storage> storage, uint64_t buffer_bytes, const std::vector<uint8_t>& resident = {},
                  const std::vector<uint8_t>& low = {});
  // In place (no storage): the clusters read at int4 (empty = none). Throws without an int4 version, or when the
  // head is streamed (set_stream takes them then).
  void set_low(const std::vector<uint8_t>& low);
  uint64_t resident_bytes() const {
    uint64_t b = 0;
    for (const Source& s : src_) b += s.res_buf.size() + s.res_scale.size() * sizeof(float);
    return b;
  }
  bool streamed() const { return storage_ != nullptr; }
  uint64_t stream_bytes_read() const { return stream_bytes_; }

 private:
  void full(const float* xn, size_t T, float* out);
  void clustered(const float* x, float* out);
  void compare(const float* x, const float* approx);
  void rows(const float* x, float* y, const std::vector<int32_t>& clusters);  // exact logits, grouped order
  void ranges(const float* x, float* y);  // exact logits of the grouped row ranges in ranges_
  struct Segment {
    int64_t src, dst, len;  // rows [src, src + len) of a matrix give the grouped logits [dst, dst + len)
  };
  struct Range {
    int64_t b, e;  // grouped rows [b, e)
    int fid;       // 0: the head's own dtype, 1: int4
  };
  // One fidelity of the head rows: where they are (mapped and in the file) and the copy of its resident clusters.
  struct Source {
    kern::MatRef w;              // all rows, grouped order (mapped)
    uint64_t file_offset = 0;
    size_t row_bytes = 0;
    std::vector<int64_t> res_at;  // per cluster: first row in res_buf, or -1 (not resident at this fidelity)
    std::vector<uint8_t> res_buf;
    std::vector<float> res_scale;  // int8: row scales as f32
    kern::MatRef res_ref;
    std::vector<Segment> segs;
  };
  void segments(const kern::MatRef& w, const float* x, float* y, const std::vector<Segment>& segs);
  kern::MatRef read_rows(const Source& s, int64_t b, int64_t n);  // streamed: rows [b, b + n) into the buffer
  // Rows [b, b + n) of s already read into the buffer at byte `at`, as a matrix (int8 scales copied beside them).
  kern::MatRef buffered_rows(const Source& s, int64_t b, int64_t n, size_t at);
  const Model& model_;
  ThreadPool* pool_;
  HeadOptions opt_;
  HeadMode mode_ = HeadMode::kFull;
  HeadStats stats_;
  std::vector<float> z_, y_, yfull_, grouped_, cmp_;
  std::vector<int32_t> order_, chosen_, all_clusters_;
  std::vector<float> tok_prior_;                 // cluster mode, per token: its prior (the file's, in token order)
  std::vector<uint16_t> tok_cluster16_;          // ... and its cluster (up to 65,536 clusters)
  std::vector<int32_t> tok_cluster_;             // ... (more clusters)
  std::vector<int64_t> cstarts_;                 // per chosen cluster: its first row among the chosen rows
  std::vector<double> ebuf_;                     // the chosen rows' exps
  std::vector<double> base_;                     // per cluster: its pseudo-logits' offset for the current token
  std::vector<int64_t> starts_;
  std::vector<uint8_t> is_chosen_;
  std::vector<Range> ranges_;
  std::vector<uint8_t> low_;  // per cluster: read at int4 (empty = none)
  // streaming
  std::shared_ptr<Storage> storage_;
  struct Piece {
    int64_t b, n;  // grouped rows [b, b + n)
    int fid;
    size_t at;     // byte offset in buf_
  };
  std::vector<Piece> pieces_;
  std::vector<uint8_t> buf_;
  std::vector<float> ybuf_, sbuf_;
  uint64_t stream_bytes_ = 0;
  Source src_[2];
};

}  // namespace rwkvl
