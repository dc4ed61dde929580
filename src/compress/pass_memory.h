// How the compression passes keep resident memory bounded (issue #19): what they read of the pipeline's input
// file is dropped once read, and what they finish goes to a spool on storage (core/spool.h) instead of staying in
// memory. Both are optional: without them (a model built in memory, a test) everything stays in memory as before,
// and the passes write the same bytes either way.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "core/mapped_file.h"
#include "core/spool.h"
#include "core/tensor.h"

namespace rwkvl::compress {

class Checkpoint;

struct PassMemory {
  const MappedFile* input = nullptr;  // the pipeline's input file (may be null)
  Spool* spool = nullptr;             // where finished tensors go (may be null)
  // The run's journal (checkpoint.h; may be null): a pass records each finished layer there and, when the journal
  // says the run stands inside this pass, continues from there.
  Checkpoint* checkpoint = nullptr;
  // Smaller tensors (vectors, scales, the small LoRAs) stay in memory: a page each on storage would cost more.
  static constexpr size_t kSpoolMin = size_t{64} << 10;

  // t itself, or its spooled view.
  Tensor keep(const Tensor& t) const;
  // Drops the resident pages of the input file and of the spool (both are read back when touched).
  void release() const;
  // A matrix (with its row scales for int8) stored as `want`, converted a block of rows at a time (each row is
  // converted on its own, so the bytes equal those of a whole-matrix quantize_matrix); with a spool the result
  // goes there block by block and the float copy never exceeds a block. Returns {matrix, scale-or-empty}.
  std::pair<Tensor, Tensor> convert(const std::string& name, const Tensor& src, const Tensor* src_scale, DType want,
                                    bool f16_scales) const;
};

}  // namespace rwkvl::compress
