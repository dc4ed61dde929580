// rwkv-lite verify: the whole-file integrity check (rwkvl_verify_model) as a table or JSON; exit 1 on any problem.
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

int cmd_verify(const Args& args) {
  const std::string path = require(args, "model");
  std::vector<char> buf(1 << 20);
  size_t n = 0;
  int ok = 0;
  rwkvl_status st = rwkvl_verify_model(path.c_str(), buf.data(), buf.size(), &n, &ok);
  if (st == RWKVL_ERR_INVALID_ARGUMENT && n >= buf.size()) {  // a big report: the library kept it for this call
    buf.resize(n + 1);
    st = rwkvl_verify_model(path.c_str(), buf.data(), buf.size(), &n, &ok);
  }
  check(st, "verify");
  const nlohmann::json rep = nlohmann::json::parse(std::string(buf.data(), n));
  const nlohmann::json& problems = rep.at("problems");

  if (args.on("json")) {
    std::printf("%s\n", rep.dump().c_str());
  } else {
    const nlohmann::json& s = rep.at("summary");
    std::printf("file      %s\n", path.c_str());
    std::printf("format    %s\n", rep.at("format").get<std::string>().c_str());
    if (!rep.at("tensors").empty()) {
      std::printf("\n%-8s %10s %-6s %14s %14s  %s\n", "checksum", "non-finite", "dtype", "bytes", "offset", "name shape");
      for (const auto& t : rep.at("tensors")) {
        std::string shape;
        for (const auto& d : t.at("shape")) shape += (shape.empty() ? "" : ", ") + std::to_string(d.get<int64_t>());
        std::printf("%-8s %10llu %-6s %14llu %14lld  %s [%s]\n", t.at("checksum").get<std::string>().c_str(),
                    static_cast<unsigned long long>(t.at("nonfinite").get<uint64_t>()),
                    t.at("dtype").get<std::string>().c_str(), static_cast<unsigned long long>(t.at("nbytes").get<uint64_t>()),
                    static_cast<long long>(t.at("offset").get<int64_t>()), t.at("name").get<std::string>().c_str(),
                    shape.c_str());
      }
      std::printf("\n");
    }
    std::printf("tensors   %llu (%s)\n", static_cast<unsigned long long>(s.at("tensors").get<uint64_t>()),
                format_bytes(s.at("bytes").get<uint64_t>()).c_str());
    if (s.at("checksums_in_format").get<bool>())
      std::printf("checksums %llu ok, %llu mismatch, %llu none\n",
                  static_cast<unsigned long long>(s.at("checksum_ok").get<uint64_t>()),
                  static_cast<unsigned long long>(s.at("checksum_mismatch").get<uint64_t>()),
                  static_cast<unsigned long long>(s.at("checksum_none").get<uint64_t>()));
    else
      std::printf("checksums none (the %s format stores no checksums; values and header checked only)\n",
                  rep.at("format").get<std::string>().c_str());
    std::printf("non-finite %llu values in %llu tensors\n",
                static_cast<unsigned long long>(s.at("nonfinite_values").get<uint64_t>()),
                static_cast<unsigned long long>(s.at("nonfinite_tensors").get<uint64_t>()));
    if (rep.at("model").is_object()) {
      const nlohmann::json& m = rep.at("model");
      std::printf("model     RWKV %s, %d layers, width %d, vocabulary %d: loads\n", m.at("arch").get<std::string>().c_str(),
                  m.at("n_layer").get<int>(), m.at("n_embd").get<int>(), m.at("n_vocab").get<int>());
    }
    for (const auto& p : problems) std::printf("problem   %s\n", p.get<std::string>().c_str());
    std::printf("result    %s\n", ok ? "OK" : "CORRUPT");
  }
  std::fflush(stdout);
  if (!ok) {
    const std::string first = problems.empty() ? std::string("unknown problem") : problems[0].get<std::string>();
    const size_t more = problems.empty() ? 0 : problems.size() - 1;
    throw Failure(path + " failed verification: " + first +
                  (more ? " (and " + std::to_string(more) + " more problem" + (more == 1 ? "" : "s") + ")" : ""));
  }
  return 0;
}

}  // namespace rwkvl::cli
