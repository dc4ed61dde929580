// Whole-file integrity check of a model (`rwkv-lite verify`, rwkvl_verify_model): reads every tensor once
// and reports, per tensor, its FNV-1a checksum against the one stored in the header (native files; other
// formats carry none) and the count of non-finite values (every float dtype, and the f16 scales/offsets of
// q4_g32 and q5_1 blocks; int8 scales are tensors of their own), then binds the model (every header field in
// range, shapes, permutations, epsilons). Loading alone checks only the header and the small predictor blocks
// (reading every byte would delay the first token); this reads everything.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace rwkvl {

// The report as JSON (docs/CLI.md, "verify"):
//   {"file", "format", "ok", "load_error", "model_error", "model": {...config} | null,
//    "tensors": [{"name", "dtype", "shape", "nbytes", "offset" (bytes into the file, -1 = not mapped),
//                 "checksum": "ok" | "mismatch" | "none", "expected", "actual" (hex, when stored),
//                 "values" (float values examined), "nonfinite"}],
//    "summary": {"tensors", "bytes", "checksum_ok", "checksum_mismatch", "checksum_none", "nonfinite_tensors",
//                "nonfinite_values", "checksums_in_format"},
//    "problems": ["...", ...]}
// "ok" is true when nothing is wrong: the file reads and binds, no checksum mismatches, no non-finite value
// (in ffn.pred.thresh, +-inf are meaningful and only NaN counts). Never throws for a bad file (the error is in
// the report); throws rwkvl::Error only for out-of-memory and the like.
nlohmann::json verify_model(const std::string& path);

}  // namespace rwkvl
