#include "pyopt/npz.hpp"

#include "pyopt/json.hpp"

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
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

std::size_t Array::itemsize() const {
  if (descr.size() < 3) throw std::runtime_error("npy: bad dtype '" + descr + "'");
  const std::size_t n = std::stoul(descr.substr(2));
  return descr[1] == 'U' ? 4 * n : n;
}

std::vector<double> Array::to_doubles() const {
  const std::size_t n = size();
  std::vector<double> out(n);
  const char* p = data.data();
  auto load = [&](auto tag) {
    using T = decltype(tag);
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
  else throw std::runtime_error("npy: cannot read dtype '" + descr + "' as numbers");
  return out;
}

Array Array::string(const std::string& utf8) {
  std::vector<uint32_t> cps;
  for (std::size_t i = 0; i < utf8.size();) {
    const uint8_t c = uint8_t(utf8[i]);
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    uint32_t cp = extra == 3 ? (c & 0x07) : extra == 2 ? (c & 0x0F) : extra == 1 ? (c & 0x1F) : c;
    ++i;
    for (int k = 0; k < extra && i < utf8.size(); ++k, ++i) cp = (cp << 6) | (uint8_t(utf8[i]) & 0x3F);
    cps.push_back(cp);
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
  if (a.data.size() != a.size() * a.itemsize())
    throw std::runtime_error("npy: data holds " + std::to_string(a.data.size()) + " bytes, shape and dtype need " +
                             std::to_string(a.size() * a.itemsize()));
  std::string shape = "(";
  for (std::size_t i = 0; i < a.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(a.shape[i]);
  shape += a.shape.size() == 1 ? ",)" : ")";  // () for 0-d, (5,) for 1-d, (2, 3)
  std::string header = "{'descr': '" + a.descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
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
  if (start + header_len > b.size()) fail(where, "truncated .npy header");
  const std::string h = b.substr(start, header_len);
  Array a;
  a.descr = header_field(h, "descr", where);
  const std::string fortran = header_field(h, "fortran_order", where);
  const std::string shape = header_field(h, "shape", where);
  for (std::size_t i = 1; i < shape.size();) {
    while (i < shape.size() && (shape[i] == ' ' || shape[i] == ',')) ++i;
    if (i >= shape.size() || shape[i] == ')') break;
    std::size_t e = i;
    while (e < shape.size() && shape[e] >= '0' && shape[e] <= '9') ++e;
    if (e == i) fail(where, "bad shape " + shape);
    a.shape.push_back(std::stoull(shape.substr(i, e - i)));
    i = e;
  }
  if (a.descr == "<u1" || a.descr == "|i1" || a.descr == "<b1") a.descr[0] = '|';
  const bool known = a.descr == "<f4" || a.descr == "<f8" || a.descr == "<i4" || a.descr == "<i8" ||
                     a.descr == "|u1" || a.descr == "|b1" || (a.descr.size() > 2 && a.descr.compare(0, 2, "<U") == 0);
  if (!known) fail(where, "unsupported dtype '" + a.descr + "' (little-endian float, int, bool and str only)");
  if (fortran == "True" && a.shape.size() > 1) fail(where, "Fortran-order arrays are not supported");
  const std::size_t bytes = a.size() * a.itemsize();
  const std::size_t data_start = start + header_len;
  if (b.size() - data_start < bytes)
    fail(where, "truncated data: " + std::to_string(b.size() - data_start) + " bytes, need " + std::to_string(bytes));
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

std::vector<std::pair<std::string, std::string>> unzip(const std::string& b, const std::string& where) {
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
  if (cd_offset == 0xFFFFFFFFu || count == 0xFFFF) {  // zip64: locator just before the EOCD
    if (eocd < 20 || rd32(b, eocd - 20) != 0x07064b50) fail(where, "zip64 archive without a locator");
    const uint64_t rec = rd64(b, eocd - 20 + 8);
    if (rec + 56 > b.size() || rd32(b, std::size_t(rec)) != 0x06064b50) fail(where, "bad zip64 end record");
    count = rd64(b, std::size_t(rec) + 32);
    cd_offset = rd64(b, std::size_t(rec) + 48);
  }
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t p = std::size_t(cd_offset);
  for (uint64_t k = 0; k < count; ++k) {
    if (p + 46 > b.size() || rd32(b, p) != 0x02014b50) fail(where, "corrupt central directory");
    const uint16_t flags = rd16(b, p + 8);
    const uint16_t method = rd16(b, p + 10);
    const uint32_t crc = rd32(b, p + 16);
    uint64_t csize = rd32(b, p + 20);
    uint64_t usize = rd32(b, p + 24);
    const uint16_t name_len = rd16(b, p + 28), extra_len = rd16(b, p + 30), comment_len = rd16(b, p + 32);
    uint64_t local = rd32(b, p + 42);
    if (p + 46 + name_len + extra_len > b.size()) fail(where, "corrupt central directory");
    const std::string name = b.substr(p + 46, name_len);
    // zip64 extra field: the 8-byte values present are those whose 32-bit field is 0xFFFFFFFF.
    for (std::size_t e = p + 46 + name_len; e + 4 <= p + 46 + name_len + extra_len;) {
      const uint16_t id = rd16(b, e), len = rd16(b, e + 2);
      if (id == 0x0001) {
        std::size_t q = e + 4;
        if (usize == 0xFFFFFFFFu) { usize = rd64(b, q); q += 8; }
        if (csize == 0xFFFFFFFFu) { csize = rd64(b, q); q += 8; }
        if (local == 0xFFFFFFFFu) { local = rd64(b, q); q += 8; }
      }
      e += 4 + len;
    }
    p += 46 + name_len + extra_len + comment_len;
    if (flags & 1) fail(where, "entry '" + name + "' is encrypted");
    if (method != 0)
      fail(where, "entry '" + name + "' is compressed (method " + std::to_string(method) +
                      "); only stored entries are supported (np.savez, not np.savez_compressed)");
    if (csize != usize) fail(where, "entry '" + name + "': stored sizes differ");
    if (local + 30 > b.size() || rd32(b, std::size_t(local)) != 0x04034b50) fail(where, "corrupt local header of '" + name + "'");
    const std::size_t data = std::size_t(local) + 30 + rd16(b, std::size_t(local) + 26) + rd16(b, std::size_t(local) + 28);
    if (data + usize > b.size()) fail(where, "entry '" + name + "' is truncated");
    std::string content = b.substr(data, std::size_t(usize));
    if (crc32(content.data(), content.size()) != crc) fail(where, "entry '" + name + "' fails its CRC-32 check");
    out.emplace_back(name, std::move(content));
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
  Archive out;
  for (auto& [name, content] : unzip(ss.str(), path)) {
    std::string key = name;
    if (key.size() > 4 && key.compare(key.size() - 4, 4, ".npy") == 0) key.resize(key.size() - 4);
    out.emplace_back(key, from_npy(content, path + ": " + name));
  }
  return out;
}

}  // namespace npz
}  // namespace pyopt
