#include "format/zip.h"

#include <array>
#include <cstring>
#include <unordered_set>

#include "core/error.h"

namespace rwkvl::zip {

namespace {

constexpr uint32_t kSigLocal = 0x04034b50;
constexpr uint32_t kSigCentral = 0x02014b50;
constexpr uint32_t kSigEnd = 0x06054b50;
constexpr uint32_t kSigEnd64 = 0x06064b50;
constexpr uint32_t kSigLocator64 = 0x07064b50;
constexpr size_t kLocalSize = 30, kCentralSize = 46, kEndSize = 22, kEnd64Size = 56, kLocator64Size = 20;
constexpr uint32_t kMax32 = 0xffffffffu;
constexpr uint16_t kMax16 = 0xffffu;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) { return rd32(p) | (static_cast<uint64_t>(rd32(p + 4)) << 32); }

bool in_range(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

struct Crc32Tables {
  uint32_t t[8][256];
  Crc32Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

// Little-endian byte builder for headers.
struct Bytes {
  std::string b;
  void u16(uint64_t v) {
    for (int i = 0; i < 2; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u32(uint64_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
};

constexpr uint16_t kDosDate = 0x21;  // 1980-01-01: fixed, so output is reproducible

}  // namespace

uint32_t crc32(const void* data, size_t n, uint32_t crc) {
  static const Crc32Tables tables;
  const auto& t = tables.t;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  while (n >= 8) {
    const uint32_t lo = rd32(p) ^ c, hi = rd32(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^
        t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

namespace {

// Where the central directory is, from the end records.
struct Directory {
  uint64_t n_total = 0, cd_size = 0, cd_offset = 0;
};

Directory find_directory(const uint8_t* data, size_t size, const char* w) {
  if (size < kEndSize) RWKVL_FAIL(kFormat, "%s: not a zip archive (file is only %zu bytes, truncated?)", w, size);

  // ---- end of central directory: the last signature whose comment fits inside the file
  size_t eocd = SIZE_MAX;
  const size_t lowest = size - kEndSize > 0xffff ? size - kEndSize - 0xffff : 0;
  for (size_t pos = size - kEndSize + 1; pos-- > lowest;) {
    if (rd32(data + pos) == kSigEnd && rd16(data + pos + 20) <= size - pos - kEndSize) {
      eocd = pos;
      break;
    }
  }
  if (eocd == SIZE_MAX)
    RWKVL_FAIL(kFormat, "%s: not a zip archive (no end-of-central-directory record; truncated or corrupt?)", w);
  const uint8_t* e = data + eocd;
  uint64_t disk = rd16(e + 4), disk_cd = rd16(e + 6), n_disk = rd16(e + 8), n_total = rd16(e + 10);
  uint64_t cd_size = rd32(e + 12), cd_offset = rd32(e + 16);
  uint64_t cd_limit = eocd;  // the central directory must end before the end records

  // ---- ZIP64 end records (torch always writes them)
  if (eocd >= kLocator64Size && rd32(data + eocd - kLocator64Size) == kSigLocator64) {
    const uint8_t* loc = data + eocd - kLocator64Size;
    const uint64_t off64 = rd64(loc + 8);
    if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
      RWKVL_FAIL(kUnsupported, "%s: multi-disk zip archives are not supported", w);
    if (!in_range(off64, kEnd64Size, eocd - kLocator64Size) || rd32(data + off64) != kSigEnd64)
      RWKVL_FAIL(kFormat, "%s: ZIP64 end-of-central-directory record missing or out of range (offset %llu)", w,
                 static_cast<unsigned long long>(off64));
    const uint8_t* z = data + off64;
    disk = rd32(z + 16);
    disk_cd = rd32(z + 20);
    n_disk = rd64(z + 24);
    n_total = rd64(z + 32);
    cd_size = rd64(z + 40);
    cd_offset = rd64(z + 48);
    cd_limit = off64;
  } else if (n_total == kMax16 || cd_size == kMax32 || cd_offset == kMax32) {
    RWKVL_FAIL(kFormat, "%s: zip end record needs ZIP64 fields but the ZIP64 locator is missing", w);
  }
  if (disk != 0 || disk_cd != 0 || n_disk != n_total)
    RWKVL_FAIL(kUnsupported, "%s: multi-disk zip archives are not supported", w);
  if (!in_range(cd_offset, cd_size, cd_limit))
    RWKVL_FAIL(kFormat, "%s: central directory (offset %llu, %llu bytes) lies outside the archive (%llu bytes)", w,
               static_cast<unsigned long long>(cd_offset), static_cast<unsigned long long>(cd_size),
               static_cast<unsigned long long>(cd_limit));
  if (n_total > cd_size / kCentralSize)
    RWKVL_FAIL(kFormat, "%s: zip claims %llu entries but its central directory has only %llu bytes", w,
               static_cast<unsigned long long>(n_total), static_cast<unsigned long long>(cd_size));
  return Directory{n_total, cd_size, cd_offset};
}

// ZIP64 extended information in the extra fields x[0, extra_len) of entry nm: present fields are exactly those
// saturated in the fixed record.
void read_zip64_extra(const uint8_t* x, uint64_t extra_len, const char* w, const char* nm, uint64_t& usize,
                      uint64_t& csize, uint64_t& lho, uint64_t& disk_start) {
  for (uint64_t xo = 0; xo + 4 <= extra_len;) {
    const uint16_t id = rd16(x + xo), len = rd16(x + xo + 2);
    if (xo + 4 + len > extra_len) RWKVL_FAIL(kFormat, "%s: zip entry '%s' has a corrupt extra field", w, nm);
    if (id == 0x0001) {
      const uint8_t* f = x + xo + 4;
      uint64_t left = len;
      auto take = [&](uint64_t& v) {
        if (left < 8) RWKVL_FAIL(kFormat, "%s: zip entry '%s' has a short ZIP64 extra field", w, nm);
        v = rd64(f);
        f += 8;
        left -= 8;
      };
      if (usize == kMax32) take(usize);
      if (csize == kMax32) take(csize);
      if (lho == kMax32) take(lho);
      if (disk_start == kMax16 && left >= 4) disk_start = rd32(f);
    }
    xo += 4 + len;
  }
}

// Central directory entry i at offset *p (advanced past it), checked against its local header.
Entry read_central_entry(const uint8_t* data, const Directory& d, uint64_t i, uint64_t* p, const char* w) {
  const uint64_t cd_end = d.cd_offset + d.cd_size, cd_offset = d.cd_offset;
  if (!in_range(*p, kCentralSize, cd_end) || rd32(data + *p) != kSigCentral)
    RWKVL_FAIL(kFormat, "%s: central directory entry %llu is corrupt or truncated", w,
               static_cast<unsigned long long>(i));
  const uint8_t* c = data + *p;
  const uint16_t flags = rd16(c + 8), method = rd16(c + 10);
  const uint32_t crc = rd32(c + 16);
  uint64_t csize = rd32(c + 20), usize = rd32(c + 24), lho = rd32(c + 42);
  uint64_t disk_start = rd16(c + 34);
  const uint64_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
  if (!in_range(*p + kCentralSize, name_len + extra_len + comment_len, cd_end))
    RWKVL_FAIL(kFormat, "%s: central directory entry %llu overruns the directory", w,
               static_cast<unsigned long long>(i));
  std::string name(reinterpret_cast<const char*>(c + kCentralSize), name_len);
  if (name.empty() || name.find('\0') != std::string::npos)
    RWKVL_FAIL(kFormat, "%s: zip entry %llu has an invalid name", w, static_cast<unsigned long long>(i));
  const char* nm = name.c_str();

  read_zip64_extra(c + kCentralSize + name_len, extra_len, w, nm, usize, csize, lho, disk_start);
  if (usize == kMax32 || csize == kMax32 || lho == kMax32)
    RWKVL_FAIL(kFormat, "%s: zip entry '%s' lacks its ZIP64 extra field", w, nm);
  if (flags & 0x41) RWKVL_FAIL(kUnsupported, "%s: zip entry '%s' is encrypted", w, nm);
  if (method != 0)
    RWKVL_FAIL(kUnsupported,
               "%s: zip entry '%s' is compressed (method %u); only stored (uncompressed) entries are "
               "supported, as written by torch.save",
               w, nm, static_cast<unsigned>(method));
  if (csize != usize)
    RWKVL_FAIL(kFormat, "%s: stored zip entry '%s' has compressed size %llu != size %llu", w, nm,
               static_cast<unsigned long long>(csize), static_cast<unsigned long long>(usize));
  if (disk_start != 0) RWKVL_FAIL(kUnsupported, "%s: multi-disk zip archives are not supported", w);

  // Local header: its own name/extra lengths decide where the data start.
  if (!in_range(lho, kLocalSize, cd_offset) || rd32(data + lho) != kSigLocal)
    RWKVL_FAIL(kFormat, "%s: local header of zip entry '%s' (offset %llu) is missing or out of range", w, nm,
               static_cast<unsigned long long>(lho));
  const uint8_t* l = data + lho;
  const uint64_t lname = rd16(l + 26), lextra = rd16(l + 28);
  if (!in_range(lho + kLocalSize, lname + lextra, cd_offset) || lname != name_len ||
      std::memcmp(l + kLocalSize, name.data(), name_len) != 0)
    RWKVL_FAIL(kFormat, "%s: local header of zip entry '%s' does not match the central directory", w, nm);
  const uint64_t data_off = lho + kLocalSize + lname + lextra;
  if (!in_range(data_off, usize, cd_offset))
    RWKVL_FAIL(kFormat, "%s: data of zip entry '%s' (offset %llu, %llu bytes) lie outside the archive (truncated?)",
               w, nm, static_cast<unsigned long long>(data_off), static_cast<unsigned long long>(usize));
  *p += kCentralSize + name_len + extra_len + comment_len;
  return Entry{std::move(name), data_off, usize, crc};
}

}  // namespace

std::vector<Entry> read_entries(const uint8_t* data, size_t size, const std::string& what) {
  const char* w = what.c_str();
  const Directory d = find_directory(data, size, w);
  std::vector<Entry> entries;
  std::unordered_set<std::string> seen;
  uint64_t p = d.cd_offset;
  for (uint64_t i = 0; i < d.n_total; ++i) {
    Entry e = read_central_entry(data, d, i, &p, w);
    if (!seen.insert(e.name).second) RWKVL_FAIL(kFormat, "%s: duplicate zip entry '%s'", w, e.name.c_str());
    entries.push_back(std::move(e));
  }
  return entries;
}

// ---------------------------------------------------------------- writer

Writer::Writer(Sink sink, bool force_zip64) : sink_(std::move(sink)), force_zip64_(force_zip64) {}

void Writer::put(const void* p, size_t n) {
  if (n) sink_(p, n);
  pos_ += n;
}

void Writer::add(const std::string& name, const void* data, uint64_t size, uint32_t alignment) {
  RWKVL_CHECK(!finished_);
  RWKVL_CHECK(alignment >= 1);
  if (name.empty() || name.size() > 0xffff)
    RWKVL_FAIL(kInvalidArgument, "zip entry name '%s' is empty or too long", name.c_str());
  const bool zip64 = force_zip64_ || size >= kMax32;
  const uint32_t crc = crc32(data, size);
  const uint64_t start = pos_ + kLocalSize + name.size() + (zip64 ? 20 : 0) + 4;
  const uint64_t pad = (alignment - start % alignment) % alignment;
  Bytes h;
  h.u32(kSigLocal);
  h.u16(zip64 ? 45 : 20);
  h.u16(0);  // flags
  h.u16(0);  // stored
  h.u16(0);
  h.u16(kDosDate);
  h.u32(crc);
  h.u32(zip64 ? kMax32 : size);
  h.u32(zip64 ? kMax32 : size);
  h.u16(name.size());
  h.u16((zip64 ? 20 : 0) + 4 + pad);
  h.b += name;
  if (zip64) {
    h.u16(0x0001);
    h.u16(16);
    h.u64(size);
    h.u64(size);
  }
  h.u16(0x4246);  // "FB": torch's padding field
  h.u16(pad);
  h.b.append(pad, 'Z');
  records_.push_back(Record{name, pos_, size, crc});
  put(h.b.data(), h.b.size());
  put(data, size);
}

void Writer::finish() {
  RWKVL_CHECK(!finished_);
  finished_ = true;
  const uint64_t cd_start = pos_;
  for (const Record& r : records_) {
    const bool big_size = force_zip64_ || r.size >= kMax32, big_off = force_zip64_ || r.header_offset >= kMax32;
    Bytes x;
    if (big_size || big_off) {
      x.u16(0x0001);
      x.u16((big_size ? 16 : 0) + (big_off ? 8 : 0));
      if (big_size) {
        x.u64(r.size);
        x.u64(r.size);
      }
      if (big_off) x.u64(r.header_offset);
    }
    Bytes h;
    h.u32(kSigCentral);
    h.u16(45);  // made by: zip 4.5, MS-DOS attributes
    h.u16(big_size || big_off ? 45 : 20);
    h.u16(0);
    h.u16(0);
    h.u16(0);
    h.u16(kDosDate);
    h.u32(r.crc);
    h.u32(big_size ? kMax32 : r.size);
    h.u32(big_size ? kMax32 : r.size);
    h.u16(r.name.size());
    h.u16(x.b.size());
    h.u16(0);  // comment
    h.u16(0);  // disk
    h.u16(0);  // internal attributes
    h.u32(0);  // external attributes
    h.u32(big_off ? kMax32 : r.header_offset);
    h.b += r.name;
    h.b += x.b;
    put(h.b.data(), h.b.size());
  }
  const uint64_t cd_size = pos_ - cd_start, end64 = pos_, n = records_.size();
  Bytes t;
  t.u32(kSigEnd64);
  t.u64(kEnd64Size - 12);
  t.u16(45);
  t.u16(45);
  t.u32(0);
  t.u32(0);
  t.u64(n);
  t.u64(n);
  t.u64(cd_size);
  t.u64(cd_start);
  t.u32(kSigLocator64);
  t.u32(0);
  t.u64(end64);
  t.u32(1);
  const bool f = force_zip64_;
  t.u32(kSigEnd);
  t.u16(0);
  t.u16(0);
  t.u16(f || n >= kMax16 ? kMax16 : n);
  t.u16(f || n >= kMax16 ? kMax16 : n);
  t.u32(f || cd_size >= kMax32 ? kMax32 : cd_size);
  t.u32(f || cd_start >= kMax32 ? kMax32 : cd_start);
  t.u16(0);
  put(t.b.data(), t.b.size());
}

}  // namespace rwkvl::zip
