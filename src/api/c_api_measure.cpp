// C API: measurement helpers (resident memory, read bandwidth, system description).
#include <string>

#include "api/api_internal.h"
#include "runtime/sysinfo.h"

extern "C" {

const char* rwkvl_system_info(void) {
  // Computed once; the ISA choice and the machine do not change while the process runs.
  static const std::string info = rwkvl::system_info();
  return info.c_str();
}

uint64_t rwkvl_peak_rss_bytes(void) { return rwkvl::peak_rss_bytes(); }

uint64_t rwkvl_current_rss_bytes(void) { return rwkvl::current_rss_bytes(); }
int rwkvl_reset_peak_rss(void) { return rwkvl::reset_peak_rss() ? 1 : 0; }

double rwkvl_measure_read_bandwidth(int n_threads, uint64_t buffer_bytes, double seconds) {
  double result = 0.0;
  rwkvl::api::guarded([&] { result = rwkvl::measure_read_bandwidth(n_threads, buffer_bytes, seconds); });
  return result;  // 0 on failure; rwkvl_last_error() says why
}

}  // extern "C"
