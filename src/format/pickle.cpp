#include "format/pickle.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace rwkvl::pickle {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kStr: return "str";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return "global";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

const char* opcode_name(uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return nullptr;
  }
}

namespace {

// Storage classes torch.save may name; whether their dtype is usable is the reader's decision.
constexpr const char* kStorageTypes[] = {
    "FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage",         "IntStorage",
    "ShortStorage", "CharStorage", "ByteStorage",     "BoolStorage",   "ComplexFloatStorage", "ComplexDoubleStorage",
};

}  // namespace

bool valid_utf8(const uint8_t* p, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

namespace {

#define FAIL_FORMAT(...) fail(ErrorCode::kFormat, __VA_ARGS__)

class Machine {
 public:
  Machine(const uint8_t* data, size_t size, const std::string& what) : d_(data), n_(size), what_(what) {}

  Unpickled run() {
    while (true) {
      if (pos_ >= n_)
        throw_error(ErrorCode::kFormat, "%s: pickle ends at offset %zu without STOP (truncated?)", what_.c_str(), pos_);
      op_pos_ = pos_;
      op_ = d_[pos_++];
      if (step()) break;
    }
    if (!marks_.empty() || stack_.size() != 1)
      FAIL_FORMAT("STOP with %zu objects on the stack and %zu open MARKs (expected exactly one object)", stack_.size(),
                  marks_.size());
    out_.root = stack_.back();
    return std::move(out_);
  }

 private:
  // ---- errors name the source, the opcode and its offset
  [[noreturn]] __attribute__((format(printf, 3, 4))) void fail(ErrorCode code, const char* fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char* name = opcode_name(op_);
    throw_error(code, "%s: pickle opcode %s (0x%02x) at offset %zu: %s", what_.c_str(), name ? name : "?",
                static_cast<unsigned>(op_), op_pos_, msg);
  }

  // Every object, container element, memo slot and stack push costs one unit.
  void spend() {
    if (++work_ > kMaxWork) FAIL_FORMAT("more than %zu objects and references; refusing to continue", kMaxWork);
  }

  // ---- reading operands
  const uint8_t* take(uint64_t len) {
    if (len > n_ - pos_)
      FAIL_FORMAT("needs %llu bytes but only %zu remain (truncated?)", static_cast<unsigned long long>(len), n_ - pos_);
    const uint8_t* p = d_ + pos_;
    pos_ += static_cast<size_t>(len);
    return p;
  }
  uint64_t read_le(int bytes) {
    const uint8_t* p = take(static_cast<uint64_t>(bytes));
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | p[k];
    return v;
  }
  std::string read_line() {
    const size_t start = pos_;
    constexpr size_t kMaxLine = 256;
    while (pos_ < n_ && d_[pos_] != '\n') {
      if (pos_ - start >= kMaxLine) FAIL_FORMAT("GLOBAL name longer than %zu bytes", kMaxLine);
      ++pos_;
    }
    if (pos_ >= n_) FAIL_FORMAT("unterminated GLOBAL name (truncated?)");
    std::string s(reinterpret_cast<const char*>(d_ + start), pos_ - start);
    ++pos_;
    return s;
  }

  // ---- objects
  Value* make(Kind k) {
    if (out_.arena.size() >= kMaxObjects) FAIL_FORMAT("more than %zu objects; refusing to continue", kMaxObjects);
    spend();
    out_.arena.push_back(std::make_unique<Value>());
    Value* v = out_.arena.back().get();
    v->kind = k;
    return v;
  }
  Value* make_int(int64_t i) {
    Value* v = make(Kind::kInt);
    v->i = i;
    return v;
  }
  Value* make_container(Kind k, std::vector<Value*> items) {
    Value* v = make(k);
    for (const Value* c : items) v->depth = std::max(v->depth, c->depth + 1);
    if (v->depth > kMaxDepth) FAIL_FORMAT("objects nested deeper than %d levels", kMaxDepth);
    v->items = std::move(items);
    return v;
  }
  void grow_depth(Value* container, const Value* child) {
    spend();
    container->depth = std::max(container->depth, child->depth + 1);
    if (container->depth > kMaxDepth) FAIL_FORMAT("objects nested deeper than %d levels", kMaxDepth);
  }

  // ---- stack (the part above the innermost MARK is all an ordinary opcode may touch)
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Value* v) {
    spend();
    stack_.push_back(v);
  }
  Value* pop() {
    if (stack_.size() <= floor()) FAIL_FORMAT("stack underflow");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= floor()) FAIL_FORMAT("stack underflow");
    return stack_.back();
  }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) FAIL_FORMAT("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  // ---- dicts
  std::string dict_key(const Value* k) {
    std::string key(1, k->kind == Kind::kStr ? 's' : 'i');
    if (k->kind == Kind::kStr) return key.append(k->s);
    if (k->kind == Kind::kInt) return key.append(std::to_string(k->i));
    fail(ErrorCode::kUnsupported, "dict key of type %s is not supported", kind_name(k->kind));
  }
  void set_item(Value* dict, Value* k, Value* v) {
    if (dict->kind != Kind::kDict) FAIL_FORMAT("target is a %s, not a dict", kind_name(dict->kind));
    grow_depth(dict, k);
    grow_depth(dict, v);
    std::string key = dict_key(k);
    if (!dict->index) dict->index = std::make_unique<std::unordered_map<std::string, size_t>>();
    auto [it, inserted] = dict->index->emplace(std::move(key), dict->entries.size());
    if (inserted) {
      dict->entries.emplace_back(k, v);
    } else {
      dict->entries[it->second].second = v;  // Python semantics: a repeated key keeps its place
    }
  }

  int64_t as_int(const Value* v, const char* what) {
    if (v->kind != Kind::kInt) FAIL_FORMAT("%s must be an int, got %s", what, kind_name(v->kind));
    return v->i;
  }

  // ---- globals and calls
  Value* resolve_global(const std::string& module, const std::string& name) {
    Value* g = make(Kind::kGlobal);
    g->s = module + "." + name;
    if (module == "collections" && name == "OrderedDict") {
      g->global = GlobalId::kOrderedDict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g->global = GlobalId::kRebuildTensorV2;
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      g->global = GlobalId::kRebuildParameter;
    } else {
      bool storage = false;
      if (module == "torch")
        for (const char* t : kStorageTypes) storage = storage || name == t;
      if (!storage) {
        std::string shown = g->s.size() > 120 ? g->s.substr(0, 120) + "..." : g->s;
        for (char& c : shown)
          if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
        fail(ErrorCode::kUnsupported,
             "global '%s' is not allowed (a state-dict checkpoint may only reference collections.OrderedDict, "
             "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and torch.*Storage)",
             shown.c_str());
      }
      g->global = GlobalId::kStorageType;
      g->s = name;
    }
    return g;
  }

  Value* reduce(const Value* callable, const Value* args) {
    if (callable->kind != Kind::kGlobal)
      FAIL_FORMAT("callable is a %s, not an allowed global", kind_name(callable->kind));
    if (args->kind != Kind::kTuple) FAIL_FORMAT("arguments are a %s, not a tuple", kind_name(args->kind));
    const std::vector<Value*>& a = args->items;
    switch (callable->global) {
      case GlobalId::kOrderedDict: {
        if (!a.empty())
          fail(ErrorCode::kUnsupported, "collections.OrderedDict called with %zu arguments (expected 0)", a.size());
        Value* d = make(Kind::kDict);
        d->ordered = true;
        return d;
      }
      case GlobalId::kRebuildParameter: {
        if (a.size() != 3)
          FAIL_FORMAT(
              "torch._utils._rebuild_parameter takes 3 arguments (data, requires_grad, backward_hooks), got %zu",
              a.size());
        if (a[0]->kind != Kind::kTensor)
          FAIL_FORMAT("_rebuild_parameter: data is a %s, not a tensor", kind_name(a[0]->kind));
        if (a[1]->kind != Kind::kBool) FAIL_FORMAT("_rebuild_parameter: requires_grad is a %s", kind_name(a[1]->kind));
        if (a[2]->kind != Kind::kDict) FAIL_FORMAT("_rebuild_parameter: backward_hooks is a %s", kind_name(a[2]->kind));
        return a[0];
      }
      case GlobalId::kRebuildTensorV2: {
        if (a.size() != 6 && a.size() != 7)
          FAIL_FORMAT(
              "torch._utils._rebuild_tensor_v2 takes 6 or 7 arguments (storage, storage_offset, size, stride, "
              "requires_grad, backward_hooks[, metadata]), got %zu",
              a.size());
        if (a[0]->kind != Kind::kStorage) FAIL_FORMAT("_rebuild_tensor_v2: storage is a %s", kind_name(a[0]->kind));
        auto t = std::make_unique<TensorRef>();
        t->storage = a[0]->storage.get();
        t->offset = as_int(a[1], "_rebuild_tensor_v2: storage_offset");
        if (t->offset < 0)
          FAIL_FORMAT("_rebuild_tensor_v2: negative storage_offset %lld", static_cast<long long>(t->offset));
        for (int k = 2; k <= 3; ++k) {
          const char* what = k == 2 ? "size" : "stride";
          if (a[k]->kind != Kind::kTuple)
            FAIL_FORMAT("_rebuild_tensor_v2: %s is a %s, not a tuple", what, kind_name(a[k]->kind));
          if (a[k]->items.size() > kMaxDims)
            fail(ErrorCode::kUnsupported, "tensor rank %zu > %zu", a[k]->items.size(), kMaxDims);
          std::vector<int64_t>& dims = k == 2 ? t->size : t->stride;
          for (const Value* x : a[k]->items) {
            const int64_t v = as_int(x, what);
            if (v < 0) FAIL_FORMAT("_rebuild_tensor_v2: negative %s %lld", what, static_cast<long long>(v));
            dims.push_back(v);
          }
        }
        if (t->size.size() != t->stride.size())
          FAIL_FORMAT("_rebuild_tensor_v2: size has %zu dims but stride %zu", t->size.size(), t->stride.size());
        if (a[4]->kind != Kind::kBool) FAIL_FORMAT("_rebuild_tensor_v2: requires_grad is a %s", kind_name(a[4]->kind));
        t->requires_grad = a[4]->b;
        if (a[5]->kind != Kind::kDict) FAIL_FORMAT("_rebuild_tensor_v2: backward_hooks is a %s", kind_name(a[5]->kind));
        Value* v = make(Kind::kTensor);
        v->tensor = std::move(t);
        return v;
      }
      case GlobalId::kStorageType:
        fail(ErrorCode::kUnsupported, "calling torch.%s is not allowed", callable->s.c_str());
    }
    FAIL_FORMAT("bad global");
  }

  Value* persistent_load(const Value* pid) {
    if (pid->kind != Kind::kTuple || pid->items.size() != 5)
      FAIL_FORMAT("persistent id must be a 5-tuple ('storage', type, key, location, numel)");
    const std::vector<Value*>& a = pid->items;
    if (a[0]->kind != Kind::kStr || a[0]->s != "storage")
      fail(ErrorCode::kUnsupported, "persistent id is not a 'storage'");
    if (a[1]->kind != Kind::kGlobal || a[1]->global != GlobalId::kStorageType)
      FAIL_FORMAT("persistent id: storage type is not a torch.*Storage class");
    if (a[2]->kind != Kind::kStr || a[2]->s.empty()) FAIL_FORMAT("persistent id: storage key must be a non-empty str");
    if (a[3]->kind != Kind::kStr) FAIL_FORMAT("persistent id: location must be a str");
    const int64_t numel = as_int(a[4], "persistent id: numel");
    if (numel < 0) FAIL_FORMAT("persistent id: negative storage size %lld", static_cast<long long>(numel));
    Value* v = make(Kind::kStorage);
    v->storage = std::make_unique<StorageRef>(StorageRef{a[1]->s, a[2]->s, a[3]->s, numel});
    return v;
  }

  void memo_put(uint64_t idx) {
    spend();
    memo_[idx] = top();
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) FAIL_FORMAT("memo index %llu is not defined", static_cast<unsigned long long>(idx));
    push(it->second);
  }

  Value* read_str(uint64_t len) {
    const uint8_t* p = take(len);
    if (!valid_utf8(p, static_cast<size_t>(len))) FAIL_FORMAT("string is not valid UTF-8");
    Value* v = make(Kind::kStr);
    v->s.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
    return v;
  }

  // Pushes a literal (protocol, frame, empty containers, MARK, strings, numbers, booleans, None); true if op_ was one of them.
  bool step_literal() {
    switch (op_) {
      case 0x80: {  // PROTO
        const uint8_t v = *take(1);
        if (v > 5)
          fail(ErrorCode::kUnsupported, "pickle protocol %u is not supported (max 5)", static_cast<unsigned>(v));
        return true;
      }
      case 0x95: {  // FRAME: framing is only a hint; its length must fit
        const uint64_t len = read_le(8);
        if (len > n_ - pos_)
          FAIL_FORMAT("frame of %llu bytes overruns the pickle (truncated?)", static_cast<unsigned long long>(len));
        return true;
      }
      case '}': push(make(Kind::kDict)); return true;
      case ']': push(make(Kind::kList)); return true;
      case ')': push(make(Kind::kTuple)); return true;
      case '(':
        if (marks_.size() >= static_cast<size_t>(kMaxDepth))
          FAIL_FORMAT("MARKs nested deeper than %d levels", kMaxDepth);
        marks_.push_back(stack_.size());
        return true;
      case 'X': push(read_str(read_le(4))); return true;
      case 0x8c: push(read_str(read_le(1))); return true;
      case 0x8d: push(read_str(read_le(8))); return true;
      case 'J': push(make_int(static_cast<int32_t>(static_cast<uint32_t>(read_le(4))))); return true;
      case 'K': push(make_int(static_cast<int64_t>(read_le(1)))); return true;
      case 'M': push(make_int(static_cast<int64_t>(read_le(2)))); return true;
      case 0x8a: {  // LONG1: little-endian two's complement
        const uint64_t len = read_le(1);
        if (len > 8)
          fail(ErrorCode::kUnsupported, "integer of %llu bytes is too large", static_cast<unsigned long long>(len));
        uint64_t v = len ? read_le(static_cast<int>(len)) : 0;
        if (len > 0 && len < 8 && (v >> (8 * len - 1)) & 1) v |= ~uint64_t{0} << (8 * len);
        push(make_int(static_cast<int64_t>(v)));
        return true;
      }
      case 'G': {  // BINFLOAT: big-endian double
        const uint8_t* p = take(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];
        Value* v = make(Kind::kFloat);
        std::memcpy(&v->f, &u, 8);
        push(v);
        return true;
      }
      case 0x88:
      case 0x89: {
        Value* v = make(Kind::kBool);
        v->b = op_ == 0x88;
        push(v);
        return true;
      }
      case 'N': push(make(Kind::kNone)); return true;
      default: return false;
    }
  }

  // Builds tuples, dicts and lists from the stack; true if op_ was one of them.
  bool step_container() {
    switch (op_) {
      case 't': push(make_container(Kind::kTuple, pop_mark())); return true;
      case 0x85:
      case 0x86:
      case 0x87: {
        const size_t k = op_ - 0x84u;
        std::vector<Value*> items(k);
        for (size_t j = k; j-- > 0;) items[j] = pop();
        push(make_container(Kind::kTuple, std::move(items)));
        return true;
      }
      case 's': {
        Value* v = pop();
        Value* k = pop();
        set_item(top(), k, v);
        return true;
      }
      case 'u': {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) FAIL_FORMAT("odd number (%zu) of keys and values", items.size());
        Value* d = top();
        for (size_t j = 0; j < items.size(); j += 2) set_item(d, items[j], items[j + 1]);
        return true;
      }
      case 'a': {
        Value* v = pop();
        Value* l = top();
        if (l->kind != Kind::kList) FAIL_FORMAT("target is a %s, not a list", kind_name(l->kind));
        grow_depth(l, v);
        l->items.push_back(v);
        return true;
      }
      case 'e': {
        std::vector<Value*> items = pop_mark();
        Value* l = top();
        if (l->kind != Kind::kList) FAIL_FORMAT("target is a %s, not a list", kind_name(l->kind));
        for (Value* v : items) {
          grow_depth(l, v);
          l->items.push_back(v);
        }
        return true;
      }
      default: return false;
    }
  }

  // Memo, globals, REDUCE, persistent ids and BUILD; true if op_ was one of them.
  bool step_object() {
    switch (op_) {
      case 'q': memo_put(read_le(1)); return true;
      case 'r': memo_put(read_le(4)); return true;
      case 0x94: memo_put(memo_.size()); return true;
      case 'h': memo_get(read_le(1)); return true;
      case 'j': memo_get(read_le(4)); return true;
      case 'c': {
        std::string module = read_line();
        std::string name = read_line();
        push(resolve_global(module, name));
        return true;
      }
      case 0x93: {
        Value* name = pop();
        Value* module = pop();
        if (module->kind != Kind::kStr || name->kind != Kind::kStr) FAIL_FORMAT("module and name must be str");
        push(resolve_global(module->s, name->s));
        return true;
      }
      case 'R': {
        Value* args = pop();
        Value* callable = pop();
        push(reduce(callable, args));
        return true;
      }
      case 'Q': push(persistent_load(pop())); return true;
      case 'b': {  // BUILD: only an OrderedDict's attribute state (torch's _metadata), which is ignored
        Value* state = pop();
        Value* target = top();
        if (target->kind != Kind::kDict || !target->ordered)
          fail(ErrorCode::kUnsupported, "BUILD is only supported on an OrderedDict, not on a %s",
               kind_name(target->kind));
        if (state->kind != Kind::kDict && state->kind != Kind::kNone)
          fail(ErrorCode::kUnsupported, "OrderedDict state must be a dict, got %s", kind_name(state->kind));
        return true;
      }
      default: return false;
    }
  }

  // Executes one opcode; returns true at STOP.
  bool step() {
    if (op_ == '.') return true;
    if (step_literal() || step_container() || step_object()) return false;
    if (opcode_name(op_)) fail(ErrorCode::kUnsupported, "opcode not allowed in a state-dict checkpoint");
    FAIL_FORMAT("invalid opcode byte");
  }

  const uint8_t* d_;
  size_t n_;
  const std::string& what_;
  size_t pos_ = 0, op_pos_ = 0;
  uint8_t op_ = 0;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
  Unpickled out_;
  size_t work_ = 0;
};
#undef FAIL_FORMAT

}  // namespace

Unpickled unpickle(const uint8_t* data, size_t size, const std::string& what) {
  Machine m(data, size, what);
  return m.run();
}

// ---------------------------------------------------------------- writer

void Writer::str(const std::string& s) {
  op('X');
  const uint64_t n = s.size();
  RWKVL_CHECK(n <= 0xffffffffu);
  for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(n >> (8 * k)));
  bytes += s;
}

void Writer::integer(int64_t v) {
  if (v >= 0 && v < 0x100) {
    op('K');
    op(static_cast<uint8_t>(v));
  } else if (v >= 0 && v < 0x10000) {
    op('M');
    op(static_cast<uint8_t>(v));
    op(static_cast<uint8_t>(v >> 8));
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    op('J');
    const uint32_t u = static_cast<uint32_t>(static_cast<int32_t>(v));
    for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(u >> (8 * k)));
  } else {  // LONG1: shortest little-endian two's complement
    const uint64_t u = static_cast<uint64_t>(v);
    int len = 8;
    while (len > 1) {
      const int64_t shifted = v >> (8 * (len - 1) - 1);  // the top byte is redundant if these bits are all sign
      if (shifted != 0 && shifted != -1) break;
      --len;
    }
    op(0x8a);
    op(static_cast<uint8_t>(len));
    for (int k = 0; k < len; ++k) op(static_cast<uint8_t>(u >> (8 * k)));
  }
}

void Writer::global(const std::string& module, const std::string& name) {
  op('c');
  bytes += module;
  op('\n');
  bytes += name;
  op('\n');
}

void Writer::tuple(const std::vector<int64_t>& ints) {
  if (ints.size() > 3) op('(');
  for (int64_t v : ints) integer(v);
  if (ints.empty()) {
    op(')');
  } else if (ints.size() <= 3) {
    op(static_cast<uint8_t>(0x84 + ints.size()));
  } else {
    op('t');
  }
}

void Writer::put(uint32_t idx) {
  if (idx < 0x100) {
    op('q');
    op(static_cast<uint8_t>(idx));
  } else {
    op('r');
    for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(idx >> (8 * k)));
  }
}

void Writer::get(uint32_t idx) {
  if (idx < 0x100) {
    op('h');
    op(static_cast<uint8_t>(idx));
  } else {
    op('j');
    for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(idx >> (8 * k)));
  }
}

}  // namespace rwkvl::pickle
