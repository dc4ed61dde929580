// Writes a PyTorch zip checkpoint of a plain dict {name: tensor} that torch.load() accepts: the same
// layout torch.save produces (archive/data.pkl, archive/byteorder, archive/data/<key> aligned to 64
// bytes, archive/version), with a protocol-2 pickle using only the opcodes our reader allows.
#include <unordered_set>

#include "core/error.h"
#include "core/file_writer.h"
#include "format/format.h"
#include "format/pickle.h"
#include "format/zip.h"

namespace rwkvl {

namespace {

const char* storage_type(DType dt) {
  switch (dt) {
    case DType::kF32: return "FloatStorage";
    case DType::kF16: return "HalfStorage";
    case DType::kBF16: return "BFloat16Storage";
    default: return nullptr;
  }
}

std::string state_dict_pickle(const std::vector<Tensor>& tensors) {
  pickle::Writer w;
  w.proto(2);
  w.op('}');
  constexpr size_t kBatch = 1000;  // SETITEMS batches, as Python's pickler does
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    if (i % kBatch == 0) w.op('(');
    w.str(t.name);
    w.memoized("g:rebuild", [&] { w.global("torch._utils", "_rebuild_tensor_v2"); });
    w.op('(');
    // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
    w.op('(');
    w.memoized("s:storage", [&] { w.str("storage"); });
    const char* st = storage_type(t.dtype);
    w.memoized(std::string("g:") + st, [&] { w.global("torch", st); });
    w.str(std::to_string(i));
    w.memoized("s:cpu", [&] { w.str("cpu"); });
    w.integer(t.numel());
    w.op('t');
    w.op('Q');  // BINPERSID
    w.integer(0);
    w.tuple(t.shape);
    std::vector<int64_t> stride(t.shape.size());
    int64_t s = 1;
    for (size_t k = t.shape.size(); k-- > 0;) {
      stride[k] = s;
      s *= t.shape[k];
    }
    w.tuple(stride);
    w.op(0x89);  // requires_grad = False
    w.memoized("g:OrderedDict", [&] { w.global("collections", "OrderedDict"); });
    w.op(')');
    w.op('R');  // backward_hooks = OrderedDict()
    w.op('t');
    w.op('R');
    if (i % kBatch == kBatch - 1 || i + 1 == tensors.size()) w.op('u');
  }
  w.op('.');
  return w.bytes;
}

}  // namespace

void write_pth(const std::string& path, const std::vector<Tensor>& tensors) {
  const char* pc = path.c_str();
  std::unordered_set<std::string> names;
  for (const Tensor& t : tensors) {
    const char* nm = t.name.c_str();
    if (!storage_type(t.dtype))
      RWKVL_FAIL(kUnsupported, "%s: tensor '%s' has dtype %s; .pth output supports f32, f16 and bf16", pc, nm,
                 dtype_name(t.dtype));
    if (!names.insert(t.name).second) RWKVL_FAIL(kInvalidArgument, "%s: duplicate tensor name '%s'", pc, nm);
    if (!pickle::valid_utf8(reinterpret_cast<const uint8_t*>(t.name.data()), t.name.size()) ||
        t.name.size() > 0xffffffffu)
      RWKVL_FAIL(kInvalidArgument, "%s: tensor name '%s' is not valid UTF-8", pc, nm);
    const int64_t n = checked_numel(t.shape, t.name);
    if (dtype_bytes(t.dtype, static_cast<uint64_t>(n)) != t.nbytes)
      RWKVL_FAIL(kInvalidArgument, "%s: tensor '%s' has shape %s but %zu bytes", pc, nm, t.shape_str().c_str(),
                 t.nbytes);
    if (t.nbytes && !t.data) RWKVL_FAIL(kInvalidArgument, "%s: tensor '%s' has no data", pc, nm);
  }
  const std::string pkl = state_dict_pickle(tensors);

  FileWriter out(path);
  zip::Writer z([&out](const void* p, size_t n) { out.write(p, n); });
  const std::string dir = "archive/";
  z.add(dir + "data.pkl", pkl.data(), pkl.size());
  z.add(dir + "byteorder", "little", 6);
  for (size_t i = 0; i < tensors.size(); ++i)
    z.add(dir + "data/" + std::to_string(i), tensors[i].data, tensors[i].nbytes);
  z.add(dir + "version", "3\n", 2);
  z.finish();
  out.commit();
}

}  // namespace rwkvl
