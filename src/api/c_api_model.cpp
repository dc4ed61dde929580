// The C API's description of a loaded model beyond rwkvl_model_info: its projections one by one
// (rwkvl_model_get_matrix) and the compression passes recorded in the file (rwkvl_model_passes_json).
#include <cstring>
#include <iterator>
#include <memory>
#include <string>

#include "api/api_internal.h"
#include "model/model.h"
#include "rwkv_lite.h"

using rwkvl::api::guarded;

static_assert(std::size(rwkvl::kProjectionRoles) == 8, "projection numbers 0..7 are the RWKVL_TARGET_* bits");

extern "C" {

rwkvl_status rwkvl_model_get_matrix(const rwkvl_model* model, int layer, int projection, rwkvl_matrix_info* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && out, "rwkvl_model_get_matrix: NULL argument");
    const std::shared_ptr<rwkvl::Model> m = rwkvl::api::model_of(model);
    const int n_layer = m->config().n_layer;
    RWKVL_API_REQUIRE(layer >= 0 && layer < n_layer, "rwkvl_model_get_matrix: layer %d outside [0, %d)", layer, n_layer);
    RWKVL_API_REQUIRE(projection >= 0 && projection < static_cast<int>(std::size(rwkvl::kProjectionRoles)),
                      "rwkvl_model_get_matrix: projection %d outside [0, 8)", projection);
    const rwkvl::Matrix& w = rwkvl::layer_matrix(m->layer(layer), rwkvl::kProjectionRoles[projection]);
    rwkvl_matrix_info r{};
    r.dtype = RWKVL_DTYPE_KEEP;
    if (!w.empty()) {
      r.present = 1;
      r.factored = w.factored() ? 1 : 0;
      r.diag = w.factored() && w.d != nullptr ? 1 : 0;
      r.rows = w.rows;
      r.cols = w.cols;
      r.rank = w.rank();
      r.dtype = rwkvl::api::to_c_dtype(w.factored() ? w.a.dtype : w.ref.dtype);
      r.bytes = w.bytes();
    }
    *out = r;
  });
}

rwkvl_status rwkvl_model_passes_json(const rwkvl_model* model, char* out, size_t cap, size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && n_out && (out || cap == 0), "rwkvl_model_passes_json: NULL argument");
    const nlohmann::json& p = rwkvl::api::model_of(model)->passes();
    const std::string text = p.is_null() ? std::string("[]") : p.dump();
    *n_out = text.size();
    RWKVL_API_REQUIRE(text.size() < cap, "rwkvl_model_passes_json: %zu bytes needed, buffer has %zu", text.size() + 1, cap);
    std::memcpy(out, text.c_str(), text.size() + 1);
  });
}

}  // extern "C"
