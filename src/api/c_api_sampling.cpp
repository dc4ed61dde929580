// C API: rwkvl_sampler_* (a thin shell over rwkvl::Sampler).
#include <exception>

#include "api/api_internal.h"
#include "runtime/sampler.h"

struct rwkvl_sampler {
  rwkvl::Sampler impl;
};

rwkvl::SamplerParams rwkvl::api::sampler_params(const rwkvl_sampler_params& p) {
  rwkvl::SamplerParams s;
  s.temperature = p.temperature;
  s.top_k = p.top_k;
  s.top_p = p.top_p;
  s.presence_penalty = p.presence_penalty;
  s.frequency_penalty = p.frequency_penalty;
  s.penalty_decay = p.penalty_decay;
  s.seed = p.seed;
  return s;
}

extern "C" {

rwkvl_sampler_params rwkvl_sampler_default_params(void) {
  const rwkvl::SamplerParams d;
  rwkvl_sampler_params p;
  p.temperature = d.temperature;
  p.top_k = d.top_k;
  p.top_p = d.top_p;
  p.presence_penalty = d.presence_penalty;
  p.frequency_penalty = d.frequency_penalty;
  p.penalty_decay = d.penalty_decay;
  p.seed = d.seed;
  return p;
}

rwkvl_status rwkvl_sampler_new(const rwkvl_sampler_params* params, rwkvl_sampler** out) {
  return rwkvl::api::guarded([&] {
    RWKVL_API_REQUIRE(out != nullptr, "rwkvl_sampler_new: out is NULL");
    *out = nullptr;
    const rwkvl_sampler_params p = params ? *params : rwkvl_sampler_default_params();
    *out = new rwkvl_sampler{rwkvl::Sampler(rwkvl::api::sampler_params(p))};
  });
}

void rwkvl_sampler_free(rwkvl_sampler* s) { delete s; }

int32_t rwkvl_sampler_sample(rwkvl_sampler* s, float* logits, size_t n_vocab) {
  int32_t token = -1;
  const rwkvl_status st = rwkvl::api::guarded([&] {
    RWKVL_API_REQUIRE(s != nullptr, "rwkvl_sampler_sample: sampler is NULL");
    RWKVL_API_REQUIRE(logits != nullptr, "rwkvl_sampler_sample: logits is NULL");
    RWKVL_API_REQUIRE(n_vocab > 0 && n_vocab <= 0x7fffffffu, "rwkvl_sampler_sample: n_vocab %zu out of range",
                      n_vocab);
    token = s->impl.sample(logits, n_vocab);
  });
  return st == RWKVL_OK ? token : -1;
}

void rwkvl_sampler_accept(rwkvl_sampler* s, int32_t token) {
  if (s == nullptr) return;
  try {
    s->impl.accept(token);
  } catch (const std::exception&) {
    // Only allocation can fail here; the penalty for this token is then simply not recorded.
  }
}

}  // extern "C"
