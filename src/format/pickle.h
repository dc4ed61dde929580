// A restricted pickle interpreter for PyTorch state-dict checkpoints (the data.pkl inside a .pth zip).
//
// Loading a model must never run code: the VM implements only the opcodes a state dict needs and
// resolves only an allowlist of globals (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter and the torch.*Storage types). Calling a global builds a plain data
// record (an empty dict, a TensorRef); nothing is ever imported or executed. Any other opcode or
// global, a malformed stack, an undefined memo slot, nesting deeper than kMaxDepth or more than
// kMaxObjects objects (kMaxWork references) throws rwkvl::Error (kFormat or kUnsupported) naming the
// opcode and its offset.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rwkvl::pickle {

constexpr int kMaxDepth = 64;                    // container nesting and open MARKs
constexpr size_t kMaxObjects = size_t{1} << 19;  // objects created by one pickle (~18 per tensor)
constexpr size_t kMaxWork = size_t{1} << 24;     // objects + container elements + memo slots + pushes
constexpr size_t kMaxDims = 32;                  // tensor rank

enum class Kind : uint8_t { kNone, kBool, kInt, kFloat, kStr, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
const char* kind_name(Kind k);

enum class GlobalId : uint8_t { kOrderedDict, kRebuildTensorV2, kRebuildParameter, kStorageType };

// What a persistent id ('storage', torch.XStorage, key, location, numel) refers to.
struct StorageRef {
  std::string type;  // storage class name without "torch.", e.g. "BFloat16Storage"
  std::string key;   // entry name under <archive>/data/
  std::string location;
  int64_t numel = 0;  // elements of the storage's dtype
};

// The arguments of torch._utils._rebuild_tensor_v2, checked for types and signs only; the reader
// checks the extent against the storage.
struct TensorRef {
  const StorageRef* storage = nullptr;
  int64_t offset = 0;  // in elements
  std::vector<int64_t> size, stride;
  bool requires_grad = false;
};

struct Value {
  Kind kind = Kind::kNone;
  bool ordered = false;  // dict made by collections.OrderedDict()
  int depth = 0;         // container nesting depth (scalars 0)
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                                                   // str; global: "module.name"
  GlobalId global = GlobalId::kOrderedDict;                        // kGlobal
  std::vector<Value*> items;                                       // tuple, list
  std::vector<std::pair<Value*, Value*>> entries;                  // dict, in insertion order
  std::unique_ptr<std::unordered_map<std::string, size_t>> index;  // dict key -> entries position
  std::unique_ptr<StorageRef> storage;                             // kStorage
  std::unique_ptr<TensorRef> tensor;                               // kTensor
};

// Owns every object the pickle created (references may form cycles through the memo; the arena
// frees them all). `root` is the object STOP returned.
struct Unpickled {
  std::vector<std::unique_ptr<Value>> arena;
  const Value* root = nullptr;
};

// Runs the pickle in [data, data+size). `what` names the source in error messages.
Unpickled unpickle(const uint8_t* data, size_t size, const std::string& what);

// Name of a pickle opcode byte ("BINUNICODE"), or nullptr if the byte is not an opcode.
const char* opcode_name(uint8_t op);

// Strict UTF-8 check (no overlong forms, no surrogates, nothing above U+10FFFF).
bool valid_utf8(const uint8_t* p, size_t n);

// Emits protocol-2 pickle opcodes (used by write_pth and by tests that craft pickles).
class Writer {
 public:
  std::string bytes;
  void op(uint8_t code) { bytes.push_back(static_cast<char>(code)); }
  void proto(uint8_t version) {
    op(0x80);
    op(version);
  }
  void str(const std::string& s);  // BINUNICODE
  void integer(int64_t v);         // BININT1 / BININT2 / BININT / LONG1, the shortest that fits
  void global(const std::string& module, const std::string& name);  // GLOBAL
  void tuple(const std::vector<int64_t>& ints);                     // a tuple of ints
  void put(uint32_t idx);                                           // BINPUT / LONG_BINPUT
  void get(uint32_t idx);                                           // BINGET / LONG_BINGET
  // Emits the object once and memoizes it under `key`; later calls emit a memo get.
  template <typename F>
  void memoized(const std::string& key, F&& emit) {
    auto it = memo_.find(key);
    if (it != memo_.end()) return get(it->second);
    emit();
    const uint32_t idx = static_cast<uint32_t>(memo_.size());
    memo_.emplace(key, idx);
    put(idx);
  }

 private:
  std::unordered_map<std::string, uint32_t> memo_;
};

}  // namespace rwkvl::pickle
