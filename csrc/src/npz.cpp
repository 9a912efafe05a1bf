#include "pyopt/npz.hpp"

#include "pyopt/json.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace pyopt {
namespace npz {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(where + ": " + what);
}

uint16_t rd16(const std::string& b, std::size_t at) {
  return uint16_t(uint8_t(b[at]) | (uint8_t(b[at + 1]) << 8));
}
uint32_t rd32(const std::string& b, std::size_t at) { return uint32_t(rd16(b, at)) | (uint32_t(rd16(b, at + 2)) << 16); }
uint64_t rd64(const std::string& b, std::size_t at) { return uint64_t(rd32(b, at)) | (uint64_t(rd32(b, at + 4)) << 32); }
void wr16(std::string& b, uint16_t v) {
  b += char(v & 0xFF);
  b += char(v >> 8);
}
void wr32(std::string& b, uint32_t v) {
  wr16(b, uint16_t(v & 0xFFFF));
  wr16(b, uint16_t(v >> 16));
}

// True when the n bytes at `at` lie inside a buffer of `size` bytes. Never overflows: offsets and
// lengths read from a file can be anything.
bool fits(uint64_t size, uint64_t at, uint64_t n) { return at <= size && n <= size - at; }

// a * b, or false when it does not fit in a size_t.
bool multiply(std::size_t a, std::size_t b, std::size_t& out) {
  if (b != 0 && a > SIZE_MAX / b) return false;
  out = a * b;
  return true;
}

// The element count of a shape, or false when it does not fit in a size_t (whatever the
// order of the dimensions, so a zero dimension cannot hide an overflowing product).
bool element_count(const std::vector<std::size_t>& shape, std::size_t& out) {
  bool empty = false;
  std::size_t product = 1;
  for (std::size_t d : shape)
    if (d == 0) empty = true;
    else if (!multiply(product, d, product)) return false;
  out = empty ? 0 : product;
  return true;
}

// Bytes per element of a dtype string "<kind><digits>" ('<U<n>' has 4 bytes per character), or
// false when it is not of that form or does not fit in a size_t.
bool parse_itemsize(const std::string& descr, std::size_t& out) {
  if (descr.size() < 3 || descr.size() > 24) return false;
  std::size_t n = 0;
  for (std::size_t i = 2; i < descr.size(); ++i) {
    const char c = descr[i];
    if (c < '0' || c > '9' || !multiply(n, 10, n) || n > SIZE_MAX - std::size_t(c - '0')) return false;
    n += std::size_t(c - '0');
  }
  return descr[1] == 'U' ? multiply(n, 4, out) : (out = n, true);
}

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

bool host_little_endian() {
  const uint16_t x = 1;
  char c;
  std::memcpy(&c, &x, 1);
  return c == 1;
}

}  // namespace

uint32_t crc32(const void* data, std::size_t size, uint32_t crc) {
  static uint32_t table[256];
  static const bool init = [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return true;
  }();
  (void)init;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// ---------------------------------------------------------------------------------- Array
std::size_t Array::size() const {
  std::size_t n = 0;
  if (!element_count(shape, n)) throw std::runtime_error("npy: shape " + shape_text(shape) + " has more elements than fit in memory");
  return n;
}

std::size_t Array::itemsize() const {
  std::size_t n = 0;
  if (!parse_itemsize(descr, n)) throw std::runtime_error("npy: bad dtype '" + descr + "'");
  return n;
}

std::vector<double> Array::to_doubles() const {
  const std::size_t n = size();
  std::vector<double> out;
  const char* p = data.data();
  auto load = [&](auto tag) {
    using T = decltype(tag);
    if (data.size() % sizeof(T) != 0 || data.size() / sizeof(T) != n)
      throw std::runtime_error("npy: data holds " + std::to_string(data.size()) + " bytes, not " + std::to_string(n) +
                               " elements of '" + descr + "'");
    out.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, p + i * sizeof(T), sizeof(T));
      out[i] = double(v);
    }
  };
  if (descr == "<f4") load(float());
  else if (descr == "<f8") load(double());
  else if (descr == "<i4") load(int32_t());
  else if (descr == "<i8") load(int64_t());
  else if (descr == "|u1" || descr == "<u1" || descr == "|b1") load(uint8_t());
  else if (descr == "<u2") load(uint16_t());
  else throw std::runtime_error("npy: cannot read dtype '" + descr + "' as numbers");
  return out;
}

Array Array::string(const std::string& utf8) {
  auto invalid = [&](std::size_t at) {
    throw std::invalid_argument("npy: invalid UTF-8 at byte " + std::to_string(at) + " of a string");
  };
  std::vector<uint32_t> cps;
  for (std::size_t i = 0; i < utf8.size();) {
    const uint8_t c = uint8_t(utf8[i]);
    const int extra = c < 0x80 ? 0 : c >= 0xC2 && c < 0xE0 ? 1 : c >= 0xE0 && c < 0xF0 ? 2 : c >= 0xF0 && c < 0xF5 ? 3 : -1;
    if (extra < 0 || std::size_t(extra) > utf8.size() - i - 1) invalid(i);
    uint32_t cp = extra == 3 ? (c & 0x07) : extra == 2 ? (c & 0x0F) : extra == 1 ? (c & 0x1F) : c;
    for (int k = 1; k <= extra; ++k) {
      const uint8_t next = uint8_t(utf8[i + std::size_t(k)]);
      if ((next & 0xC0) != 0x80) invalid(i);
      cp = (cp << 6) | (next & 0x3F);
    }
    static const uint32_t lowest[4] = {0, 0x80, 0x800, 0x10000};  // shorter forms are overlong
    if (cp < lowest[extra] || cp > 0x10FFFF) invalid(i);
    cps.push_back(cp);
    i += std::size_t(extra) + 1;
  }
  Array a;
  a.descr = "<U" + std::to_string(cps.empty() ? 1 : cps.size());
  a.data.assign(4 * (cps.empty() ? 1 : cps.size()), 0);
  for (std::size_t i = 0; i < cps.size(); ++i)
    for (int b = 0; b < 4; ++b) a.data[4 * i + b] = char((cps[i] >> (8 * b)) & 0xFF);
  return a;  // shape {}: 0-d
}

std::string Array::as_string() const {
  if (descr.size() < 3 || descr[0] != '<' || descr[1] != 'U') throw std::runtime_error("npy: '" + descr + "' is not a string dtype");
  if (size() != 1) throw std::runtime_error("npy: expected a single string, got " + std::to_string(size()) + " elements");
  std::string out;
  for (std::size_t i = 0; i + 4 <= data.size(); i += 4) {
    uint32_t cp = 0;
    for (int b = 0; b < 4; ++b) cp |= uint32_t(uint8_t(data[i + b])) << (8 * b);
    if (cp == 0) break;  // numpy pads with NUL
    if (cp > 0x10FFFF) throw std::runtime_error("npy: a string holds " + std::to_string(cp) + ", not a Unicode code point");
    json::append_utf8(out, cp);
  }
  return out;
}

const Array* find(const Archive& archive, const std::string& name) {
  for (const auto& e : archive)
    if (e.first == name) return &e.second;
  return nullptr;
}

// ---------------------------------------------------------------------------------- .npy
std::string to_npy(const Array& a) {
  if (!host_little_endian()) throw std::runtime_error("npy: big-endian hosts are not supported");
  std::size_t bytes = 0;
  if (!multiply(a.size(), a.itemsize(), bytes))
    throw std::runtime_error("npy: shape " + shape_text(a.shape) + " of '" + a.descr + "' needs more bytes than fit in memory");
  if (a.data.size() != bytes)
    throw std::runtime_error("npy: data holds " + std::to_string(a.data.size()) + " bytes, shape and dtype need " +
                             std::to_string(bytes));
  // () for 0-d, (5,) for 1-d, (2, 3)
  std::string header = "{'descr': '" + a.descr + "', 'fortran_order': False, 'shape': " + shape_text(a.shape) + ", }";
  // magic (6) + version (2) + length (2) + header + padding + '\n' is a multiple of 64.
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  if (header.size() > 65535) throw std::runtime_error("npy: header too long");
  wr16(out, uint16_t(header.size()));
  out += header;
  out.append(a.data.data(), a.data.size());
  return out;
}

namespace {

// The value of 'key' in numpy's header dict (a Python literal): the text up to the matching end.
std::string header_field(const std::string& h, const std::string& key, const std::string& where) {
  const std::size_t k = h.find("'" + key + "'");
  if (k == std::string::npos) fail(where, "npy header has no '" + key + "'");
  std::size_t p = h.find(':', k);
  if (p == std::string::npos) fail(where, "bad npy header");
  ++p;
  while (p < h.size() && h[p] == ' ') ++p;
  if (p >= h.size()) fail(where, "bad npy header");
  if (h[p] == '\'' || h[p] == '"') {
    const std::size_t e = h.find(h[p], p + 1);
    if (e == std::string::npos) fail(where, "bad npy header");
    return h.substr(p + 1, e - p - 1);
  }
  if (h[p] == '(') {
    const std::size_t e = h.find(')', p);
    if (e == std::string::npos) fail(where, "bad npy header");
    return h.substr(p, e - p + 1);
  }
  std::size_t e = p;
  while (e < h.size() && h[e] != ',' && h[e] != '}') ++e;
  std::string v = h.substr(p, e - p);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

// The dimensions of a shape tuple as numpy writes it: "()", "(5,)", "(2, 3)".
std::vector<std::size_t> parse_shape(const std::string& text, const std::string& where) {
  auto bad = [&](const std::string& why) { fail(where, "bad shape " + text + " in the npy header (" + why + ")"); };
  if (text.size() < 2 || text.front() != '(' || text.back() != ')') bad("not a tuple");
  std::vector<std::size_t> dims;
  std::size_t i = 1;
  const std::size_t end = text.size() - 1;
  for (;;) {
    while (i < end && text[i] == ' ') ++i;
    if (i == end) break;
    std::size_t d = 0, digits = 0;
    for (; i < end && text[i] >= '0' && text[i] <= '9'; ++i, ++digits)
      if (!multiply(d, 10, d) || d > SIZE_MAX - std::size_t(text[i] - '0')) bad("a dimension too large");
      else d += std::size_t(text[i] - '0');
    if (digits == 0) bad("a dimension expected");
    dims.push_back(d);
    while (i < end && text[i] == ' ') ++i;
    if (i == end) break;
    if (text[i] != ',') bad("',' expected");
    ++i;
  }
  if (dims.size() == 1 && text.find(',') == std::string::npos) bad("'(n)' is not a tuple");
  return dims;
}

}  // namespace

Array from_npy(const std::string& b, const std::string& where) {
  if (!host_little_endian()) fail(where, "big-endian hosts are not supported");
  if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0) fail(where, "not a .npy array (bad magic)");
  const int major = uint8_t(b[6]);
  std::size_t header_len, start;
  if (major == 1) {
    header_len = rd16(b, 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) fail(where, "truncated .npy header");
    header_len = rd32(b, 8);
    start = 12;
  } else {
    fail(where, "unsupported .npy version " + std::to_string(major));
  }
  if (!fits(b.size(), start, header_len)) fail(where, "truncated .npy header");
  const std::string h = b.substr(start, header_len);
  Array a;
  a.descr = header_field(h, "descr", where);
  const std::string fortran = header_field(h, "fortran_order", where);
  a.shape = parse_shape(header_field(h, "shape", where), where);
  if (a.descr == "<u1" || a.descr == "|i1" || a.descr == "<b1") a.descr[0] = '|';
  std::size_t itemsize = 0, count = 0, bytes = 0;
  const bool known = a.descr == "<f2" || a.descr == "<f4" || a.descr == "<f8" || a.descr == "<i4" ||
                     a.descr == "<i8" || a.descr == "|u1" || a.descr == "<u2" || a.descr == "|b1" || (a.descr.compare(0, 2, "<U") == 0 && parse_itemsize(a.descr, itemsize));
  if (!known) fail(where, "unsupported dtype '" + a.descr + "' (little-endian float, int, bool and str only)");
  if (fortran == "True" && a.shape.size() > 1) fail(where, "Fortran-order arrays are not supported");
  if (!parse_itemsize(a.descr, itemsize) || !element_count(a.shape, count) || !multiply(count, itemsize, bytes))
    fail(where, "shape " + shape_text(a.shape) + " of '" + a.descr + "' needs more bytes than fit in memory");
  const std::size_t data_start = start + header_len;
  if (!fits(b.size(), data_start, bytes))
    fail(where, "truncated data: " + std::to_string(b.size() - data_start) + " bytes, shape " + shape_text(a.shape) +
                    " of '" + a.descr + "' needs " + std::to_string(bytes));
  a.data.assign(b.begin() + std::ptrdiff_t(data_start), b.begin() + std::ptrdiff_t(data_start + bytes));
  return a;
}

// ---------------------------------------------------------------------------------- zip
std::string zip_stored(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string out, central;
  for (const auto& [name, content] : files) {
    if (content.size() >= 0xFFFFFFFFu || out.size() >= 0xFFFFFFFFu)
      throw std::runtime_error("zip: entries of 4 GiB and more are not supported");
    const uint32_t crc = crc32(content.data(), content.size());
    const uint32_t offset = uint32_t(out.size());
    // local file header
    wr32(out, 0x04034b50);
    wr16(out, 20);  // version needed: 2.0
    wr16(out, 0);   // flags
    wr16(out, 0);   // method: stored
    wr16(out, 0);   // mod time
    wr16(out, 0x21);  // mod date: 1980-01-01
    wr32(out, crc);
    wr32(out, uint32_t(content.size()));
    wr32(out, uint32_t(content.size()));
    wr16(out, uint16_t(name.size()));
    wr16(out, 0);  // extra length
    out += name;
    out += content;
    // central directory entry
    wr32(central, 0x02014b50);
    wr16(central, 20);  // version made by
    wr16(central, 20);  // version needed
    wr16(central, 0);
    wr16(central, 0);
    wr16(central, 0);
    wr16(central, 0x21);
    wr32(central, crc);
    wr32(central, uint32_t(content.size()));
    wr32(central, uint32_t(content.size()));
    wr16(central, uint16_t(name.size()));
    wr16(central, 0);  // extra
    wr16(central, 0);  // comment
    wr16(central, 0);  // disk
    wr16(central, 0);  // internal attributes
    wr32(central, 0);  // external attributes
    wr32(central, offset);
    central += name;
  }
  const uint32_t cd_offset = uint32_t(out.size());
  out += central;
  wr32(out, 0x06054b50);
  wr16(out, 0);
  wr16(out, 0);
  wr16(out, uint16_t(files.size()));
  wr16(out, uint16_t(files.size()));
  wr32(out, uint32_t(central.size()));
  wr32(out, cd_offset);
  wr16(out, 0);
  return out;
}

namespace {

constexpr uint64_t kCentralEntryBytes = 46, kLocalHeaderBytes = 30;

// One entry of the central directory, checked against the buffer: its data is b[data, data + size).
struct ZipEntry {
  std::string name;
  uint32_t crc = 0;
  uint64_t local = 0, data = 0, size = 0;
};

// The central directory's entries, each checked against the buffer, without reading their data.
// Every offset and length comes from the file, so every read is checked with fits() first.
std::vector<ZipEntry> central_directory(const std::string& b, const std::string& where) {
  // End of central directory: the last "PK\5\6" within the final 64 KiB + 22 bytes.
  if (b.size() < 22) fail(where, "not a zip archive (too short)");
  std::size_t eocd = std::string::npos;
  const std::size_t lowest = b.size() > 22 + 65535 ? b.size() - 22 - 65535 : 0;
  for (std::size_t i = b.size() - 22;; --i) {
    if (rd32(b, i) == 0x06054b50) {
      eocd = i;
      break;
    }
    if (i == lowest) break;
  }
  if (eocd == std::string::npos) fail(where, "not a zip archive (no end of central directory)");
  uint64_t count = rd16(b, eocd + 10);
  uint64_t cd_offset = rd32(b, eocd + 16);
  uint64_t cd_limit = eocd;  // the central directory ends before this
  if (cd_offset == 0xFFFFFFFFu || count == 0xFFFF) {  // zip64: locator just before the EOCD
    if (eocd < 20 || rd32(b, eocd - 20) != 0x07064b50) fail(where, "zip64 archive without a locator");
    const uint64_t rec = rd64(b, eocd - 20 + 8);
    if (!fits(eocd - 20, rec, 56) || rd32(b, std::size_t(rec)) != 0x06064b50)
      fail(where, "bad zip64 end record (offset " + std::to_string(rec) + " in a file of " + std::to_string(b.size()) + " bytes)");
    count = rd64(b, std::size_t(rec) + 32);
    cd_offset = rd64(b, std::size_t(rec) + 48);
    cd_limit = rec;
  }
  if (cd_offset > cd_limit)
    fail(where, "corrupt central directory (offset " + std::to_string(cd_offset) + " in a file of " + std::to_string(b.size()) + " bytes)");
  // Each entry takes at least 46 bytes: no allocation for entries the file cannot hold.
  const uint64_t room = (cd_limit - cd_offset) / kCentralEntryBytes;
  if (count > room)
    fail(where, "the central directory lists " + std::to_string(count) + " entries, the file has room for at most " +
                    std::to_string(room));

  std::vector<ZipEntry> entries(static_cast<std::size_t>(count));
  uint64_t p = cd_offset;
  for (ZipEntry& entry : entries) {
    if (!fits(cd_limit, p, kCentralEntryBytes) || rd32(b, std::size_t(p)) != 0x02014b50) fail(where, "corrupt central directory");
    const std::size_t at = std::size_t(p);
    const uint16_t flags = rd16(b, at + 8);
    const uint16_t method = rd16(b, at + 10);
    entry.crc = rd32(b, at + 16);
    uint64_t csize = rd32(b, at + 20);
    uint64_t usize = rd32(b, at + 24);
    const uint16_t name_len = rd16(b, at + 28), extra_len = rd16(b, at + 30), comment_len = rd16(b, at + 32);
    entry.local = rd32(b, at + 42);
    const uint64_t extra_start = p + kCentralEntryBytes + name_len, extra_end = extra_start + extra_len;
    if (!fits(cd_limit, p + kCentralEntryBytes, uint64_t(name_len) + extra_len + comment_len))
      fail(where, "corrupt central directory (an entry runs past its end)");
    entry.name = b.substr(at + std::size_t(kCentralEntryBytes), name_len);
    // zip64 extra field: the 8-byte values present are those whose 32-bit field is 0xFFFFFFFF.
    for (uint64_t e = extra_start; e < extra_end;) {
      if (!fits(extra_end, e, 4)) fail(where, "entry '" + entry.name + "': truncated extra field");
      const uint16_t id = rd16(b, std::size_t(e)), len = rd16(b, std::size_t(e) + 2);
      const uint64_t field_end = e + 4 + len;
      if (field_end > extra_end) fail(where, "entry '" + entry.name + "': extra field runs past the entry");
      if (id == 0x0001) {
        uint64_t q = e + 4;
        auto next64 = [&](uint64_t& value) {
          if (!fits(field_end, q, 8)) fail(where, "entry '" + entry.name + "': zip64 extra field too short");
          value = rd64(b, std::size_t(q));
          q += 8;
        };
        if (usize == 0xFFFFFFFFu) next64(usize);
        if (csize == 0xFFFFFFFFu) next64(csize);
        if (entry.local == 0xFFFFFFFFu) next64(entry.local);
      }
      e = field_end;
    }
    p = extra_end + comment_len;
    if (flags & 1) fail(where, "entry '" + entry.name + "' is encrypted");
    if (method != 0)
      fail(where, "entry '" + entry.name + "' is compressed (method " + std::to_string(method) +
                      "); only stored entries are supported (np.savez, not np.savez_compressed)");
    if (csize != usize) fail(where, "entry '" + entry.name + "': stored sizes differ");
    // The local header and the data lie before the central directory.
    if (!fits(cd_offset, entry.local, kLocalHeaderBytes) || rd32(b, std::size_t(entry.local)) != 0x04034b50)
      fail(where, "corrupt local header of '" + entry.name + "' (offset " + std::to_string(entry.local) + ")");
    const std::size_t local = std::size_t(entry.local);
    const uint64_t local_extras = uint64_t(rd16(b, local + 26)) + rd16(b, local + 28);
    if (!fits(cd_offset, entry.local + kLocalHeaderBytes, local_extras))
      fail(where, "corrupt local header of '" + entry.name + "'");
    entry.data = entry.local + kLocalHeaderBytes + local_extras;
    entry.size = usize;
    if (!fits(cd_offset, entry.data, entry.size))
      fail(where, "entry '" + entry.name + "' is truncated (" + std::to_string(entry.size) + " bytes at offset " +
                      std::to_string(entry.data) + ")");
  }

  // Entries must not share bytes: together they then hold at most the file's size, however many
  // the directory lists.
  std::vector<const ZipEntry*> by_offset;
  by_offset.reserve(entries.size());
  for (const ZipEntry& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const ZipEntry* x, const ZipEntry* y) { return x->local < y->local; });
  for (std::size_t k = 1; k < by_offset.size(); ++k)
    if (by_offset[k]->local < by_offset[k - 1]->data + by_offset[k - 1]->size)
      fail(where, "entries '" + by_offset[k - 1]->name + "' and '" + by_offset[k]->name +
                      "' overlap (a zip's entries each have their own bytes)");
  return entries;
}

}  // namespace

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
bool fuzzing_skips_crc32 = false;
#endif

std::vector<std::pair<std::string, std::string>> unzip(const std::string& b, const std::string& where) {
  std::vector<std::pair<std::string, std::string>> out;
  bool check_crc = true;
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  check_crc = !fuzzing_skips_crc32;
#endif
  for (ZipEntry& entry : central_directory(b, where)) {
    std::string content = b.substr(std::size_t(entry.data), std::size_t(entry.size));
    if (check_crc && crc32(content.data(), content.size()) != entry.crc)
      fail(where, "entry '" + entry.name + "' fails its CRC-32 check");
    out.emplace_back(std::move(entry.name), std::move(content));
  }
  return out;
}

// ---------------------------------------------------------------------------------- .npz
void save(const std::string& path, const Archive& archive) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& [name, array] : archive) files.emplace_back(name + ".npy", to_npy(array));
  const std::string bytes = zip_stored(files);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write " + tmp);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw std::runtime_error("cannot write " + tmp);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path);
  }
}

Archive load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return read(ss.str(), path);
}

Archive read(const std::string& bytes, const std::string& where) {
  Archive out;
  for (auto& [name, content] : unzip(bytes, where)) {
    std::string key = name;
    if (key.size() > 4 && key.compare(key.size() - 4, 4, ".npy") == 0) key.resize(key.size() - 4);
    out.emplace_back(key, from_npy(content, where + ": " + name));
  }
  return out;
}

}  // namespace npz
}  // namespace pyopt
