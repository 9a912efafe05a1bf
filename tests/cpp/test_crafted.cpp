// Crafted and malformed inputs for the readers (zip, .npy, JSON, checkpoints): each must end in a
// clear exception — never a read past a buffer, undefined behaviour or an allocation larger than
// the file justifies. The sanitizer build (docs/fuzzing.md) runs these under ASan/UBSan.
#include <pyopt/pyopt.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/resource.h>
#endif
#if defined(__SANITIZE_ADDRESS__)  // GCC
#define PYOPT_TEST_ASAN 1
#elif defined(__has_feature)  // Clang
#if __has_feature(address_sanitizer)
#define PYOPT_TEST_ASAN 1
#endif
#endif

#include "harness.hpp"

namespace {

namespace json = pyopt::json;
namespace npz = pyopt::npz;
using Files = std::vector<std::pair<std::string, std::string>>;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/pyopt_cpp_crafted_" + name;
}

void put16(std::string& b, std::size_t at, uint16_t v) {
  for (int k = 0; k < 2; ++k) b[at + k] = char((v >> (8 * k)) & 0xFF);
}
void put32(std::string& b, std::size_t at, uint32_t v) {
  for (int k = 0; k < 4; ++k) b[at + k] = char((v >> (8 * k)) & 0xFF);
}
void add16(std::string& b, uint16_t v) { b.append(2, '\0'), put16(b, b.size() - 2, v); }
void add32(std::string& b, uint32_t v) { b.append(4, '\0'), put32(b, b.size() - 4, v); }
void add64(std::string& b, uint64_t v) {
  add32(b, uint32_t(v & 0xFFFFFFFFu));
  add32(b, uint32_t(v >> 32));
}

// Offsets inside a one-entry zip_stored() archive.
std::size_t eocd_of(const std::string& zip) { return zip.size() - 22; }
std::size_t central_of(const std::string& zip) { return zip.find(std::string("PK\x01\x02", 4)); }

// One central directory entry (46 bytes + name + extra), as zip_stored writes them.
std::string central_entry(const std::string& name, uint32_t crc, uint32_t size, uint32_t local,
                          const std::string& extra = "") {
  std::string c;
  add32(c, 0x02014b50);
  add16(c, 45), add16(c, 45), add16(c, 0), add16(c, 0), add16(c, 0), add16(c, 0x21);
  add32(c, crc), add32(c, size), add32(c, size);
  add16(c, uint16_t(name.size())), add16(c, uint16_t(extra.size())), add16(c, 0), add16(c, 0), add16(c, 0);
  add32(c, 0), add32(c, local);
  return c + name + extra;
}

std::string end_record(uint16_t count, uint32_t cd_size, uint32_t cd_offset) {
  std::string e;
  add32(e, 0x06054b50);
  add16(e, 0), add16(e, 0), add16(e, count), add16(e, count);
  add32(e, cd_size), add32(e, cd_offset), add16(e, 0);
  return e;
}

// A zip64 extra field (id 1) holding the given 8-byte values, its length field as given.
std::string zip64_extra(const std::vector<uint64_t>& values, uint16_t declared_length) {
  std::string x;
  add16(x, 0x0001), add16(x, declared_length);
  for (uint64_t v : values) add64(x, v);
  return x;
}

std::string unzip_error(const std::string& bytes) {
  return CHECK_THROWS(std::runtime_error, npz::unzip(bytes, "crafted.zip"));
}

// A .npy v1.0 of `data` with the header dict given literally.
std::string npy_with_header(const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  add16(out, uint16_t(header.size()));
  return out + header + data;
}

// Saves a one-param adam checkpoint (param of `shape`) after one step and returns its path.
std::string adam_checkpoint(const std::string& name, const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  std::vector<double> w(n, 0.5), g(n, 0.25);
  pyopt::Optimizer opt("adam");
  opt.add_param(w.data(), shape);
  opt.step({g.data()});
  const std::string path = temp_path(name);
  opt.save(path);
  return path;
}

// Rewrites the JSON meta of a checkpoint with `edit` applied.
template <class Edit>
void edit_meta(const std::string& path, Edit edit) {
  npz::Archive archive = npz::load(path);
  for (auto& [key, array] : archive)
    if (key == "__pyopt_meta__") {
      json::Value meta = json::parse(array.as_string());
      edit(meta);
      array = npz::Array::string(json::dump(meta));
    }
  npz::save(path, archive);
}

// An optimizer that has stepped once (lr 0.5), to check that a failed load leaves it untouched.
struct Stepped {
  std::vector<double> w, g;
  pyopt::Optimizer opt{"adam", {{"lr", 0.5}}};
  explicit Stepped(const std::vector<std::size_t>& shape) {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    w.assign(n, 1.0);
    g.assign(n, -1.0);
    opt.add_param(w.data(), shape);
    opt.step({g.data()});
  }
  bool untouched() const { return opt.get("lr") == 0.5 && opt.step_count(0) == 1 && opt.state(0, "exp_avg")[0] != 0.0; }
};

}  // namespace

// ------------------------------------------------------------------------------------------ zip
PYOPT_TEST(zip_zip64_locator_out_of_range) {
  const std::string zip = npz::zip_stored({{"a.npy", "hello"}});
  const std::size_t eocd = eocd_of(zip);
  // count 0xFFFF says "see the zip64 record"; the locator's record offset is past the end, or so
  // large that offset + 56 wraps around.
  for (uint64_t rec : {uint64_t(zip.size()), uint64_t(zip.size() - 30), ~uint64_t(0) - 20, uint64_t(1) << 63}) {
    std::string locator;
    add32(locator, 0x07064b50), add32(locator, 0), add64(locator, rec), add32(locator, 1);
    std::string bad = zip.substr(0, eocd) + locator + zip.substr(eocd);
    put16(bad, bad.size() - 22 + 8, 0xFFFF);
    put16(bad, bad.size() - 22 + 10, 0xFFFF);
    const std::string msg = unzip_error(bad);
    CHECK_MSG(contains(msg, "crafted.zip") && contains(msg, "zip64"), rec << ": " << msg);
  }
}

PYOPT_TEST(zip_zip64_extra_field_out_of_range) {
  const std::string payload = "hello";
  const uint32_t crc = npz::crc32(payload.data(), payload.size());
  std::string local;
  add32(local, 0x04034b50), add16(local, 20), add16(local, 0), add16(local, 0), add16(local, 0), add16(local, 0x21);
  add32(local, crc), add32(local, 5), add32(local, 5), add16(local, 5), add16(local, 0);
  local += "a.npy" + payload;
  struct Case {
    std::string extra;
    const char* what;
  };
  const std::vector<Case> cases = {
      {zip64_extra({}, 16), "field longer than the extra area"},
      {zip64_extra({5}, 8), "8 bytes for the two sizes the entry needs"},
      {zip64_extra({5, 5}, 40), "length past the extra area"},
      {std::string("\x01\x00\x10", 3), "truncated field header"},
  };
  for (const Case& c : cases) {
    // As a zip is laid out: the field's bad length points into the end record.
    const std::string central = central_entry("a.npy", crc, 0xFFFFFFFFu, 0, c.extra);
    std::string msg = unzip_error(local + central + end_record(1, uint32_t(central.size()), uint32_t(local.size())));
    CHECK_MSG(contains(msg, "crafted.zip") && contains(msg, "extra field"), c.what << ": " << msg);
    // The central directory after the end record, its extra field the last bytes of the file: a
    // read past the field is a read past the buffer.
    msg = unzip_error(local + end_record(1, uint32_t(central.size()), uint32_t(local.size() + 22)) + central);
    CHECK_MSG(contains(msg, "crafted.zip") && contains(msg, "central directory"), c.what << ": " << msg);
  }
}

PYOPT_TEST(zip_local_offset_out_of_range) {
  const std::string zip = npz::zip_stored({{"a.npy", "hello"}});
  const std::size_t central = central_of(zip);
  for (uint32_t local : {0xFFFFFFF0u, 0xFFFFFFFEu, uint32_t(zip.size() - 29)}) {
    std::string bad = zip;
    put32(bad, central + 42, local);
    const std::string msg = unzip_error(bad);
    CHECK_MSG(contains(msg, "local header"), local << ": " << msg);
  }
  // Through a zip64 extra field: offsets near 2^64, where offset + 30 wraps around.
  const uint32_t crc = npz::crc32("hello", 5);
  for (uint64_t local : {~uint64_t(0), ~uint64_t(0) - 29, ~uint64_t(0) - 4, uint64_t(1) << 32}) {
    const std::string entry = central_entry("a.npy", crc, 5, 0xFFFFFFFFu, zip64_extra({local}, 8));
    const std::string head = zip.substr(0, central);
    const std::string bad = head + entry + end_record(1, uint32_t(entry.size()), uint32_t(head.size()));
    const std::string msg = unzip_error(bad);
    CHECK_MSG(contains(msg, "local header"), local << ": " << msg);
  }
}

PYOPT_TEST(zip_central_directory_out_of_range) {
  const std::string zip = npz::zip_stored({{"a.npy", "hello"}});
  const std::size_t eocd = eocd_of(zip);
  std::string bad = zip;
  put32(bad, eocd + 16, 0xFFFFFFF0u);  // central directory offset past the end
  CHECK_MSG(contains(unzip_error(bad), "central directory"), unzip_error(bad));
  bad = zip;
  put16(bad, eocd + 8, 60000), put16(bad, eocd + 10, 60000);  // more entries than the file can hold
  const std::string msg = unzip_error(bad);
  CHECK_MSG(contains(msg, "60000 entries"), msg);
  bad = zip;
  put16(bad, central_of(zip) + 28, 0xFFFF);  // name length past the end
  CHECK_MSG(contains(unzip_error(bad), "central directory"), unzip_error(bad));
}

// 20,000 central entries all pointing at one 1 MiB payload (a 2.3 MB file): reading them would
// allocate ~20 GiB. Entries must not overlap, so the reader fails at once.
PYOPT_TEST(zip_entries_sharing_one_payload_fail_fast) {
  const std::string payload(1 << 20, 'x');
  std::string zip = npz::zip_stored({{"state/0/exp_avg_00000.npy", payload}});
  const std::size_t central = central_of(zip);
  const std::string entry = zip.substr(central, eocd_of(zip) - central);
  std::string directory;
  for (int k = 0; k < 20000; ++k) {
    std::string e = entry;
    char digits[8];
    std::snprintf(digits, sizeof digits, "%05d", k);
    e.replace(e.size() - 9, 5, digits);  // distinct names, same local offset
    directory += e;
  }
  const std::string bad = zip.substr(0, central) + directory + end_record(20000, uint32_t(directory.size()), uint32_t(central));
  CHECK(bad.size() > 2'000'000 && bad.size() < 3'000'000);
#if defined(__linux__) && !defined(PYOPT_TEST_ASAN)
  // Without ASan (which reserves terabytes of address space), cap this process's address space
  // so a reader that allocates per entry fails here instead of exhausting the machine.
  long pages = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  if (pages > 0) {
    const rlim_t cap = rlim_t(pages) * rlim_t(4096) + (rlim_t(1) << 30);
    rlimit limit{cap, cap};
    setrlimit(RLIMIT_AS, &limit);
  }
#endif
  const std::string msg = unzip_error(bad);
  CHECK_MSG(contains(msg, "overlap"), msg);
  // The same entries, each with its own copy of the payload, would be a 20 GiB file: a reader
  // that checks the central directory first fails before reading any of them.
}

// ------------------------------------------------------------------------------------------ npy
PYOPT_TEST(npy_shape_and_dtype_overflow) {
  const std::string six_doubles(6 * 8, '\0');
  // (2^63 + 3) * 2 wraps to 6 elements; (2^62 + 1) * 4 bytes per '<U' char wraps to 4 bytes.
  for (const char* dict : {"{'descr': '<f8', 'fortran_order': False, 'shape': (9223372036854775811, 2), }",
                           "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 6148914691236517206, 0, 3), }",
                           "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
                           "{'descr': '<U4611686018427387905', 'fortran_order': False, 'shape': (), }",
                           "{'descr': '<U99999999999999999999999', 'fortran_order': False, 'shape': (), }",
                           "{'descr': '<U99999999999999', 'fortran_order': False, 'shape': (), }",
                           "{'descr': '<Uxyz', 'fortran_order': False, 'shape': (), }",
                           "{'descr': '<f8', 'fortran_order': False, 'shape': 6, }",
                           "{'descr': '<f8', 'fortran_order': False, 'shape': (6,, }"}) {
    const std::string msg = CHECK_THROWS(std::runtime_error, npz::from_npy(npy_with_header(dict, six_doubles), "x.npy"));
    CHECK_MSG(contains(msg, "x.npy"), dict << ": " << msg);
  }
  // A header length past the end (v1 and v2), and a truncated v2 preamble.
  std::string npy = npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }", six_doubles);
  CHECK(npz::from_npy(npy).size() == 6);
  put16(npy, 8, 0xFFFF);
  CHECK_THROWS(std::runtime_error, npz::from_npy(npy));
  CHECK_THROWS(std::runtime_error, npz::from_npy(std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff", 12)));
  CHECK_THROWS(std::runtime_error, npz::from_npy(std::string("\x93NUMPY\x02\x00\x01\x00\x00", 11)));
}

PYOPT_TEST(npy_arrays_built_by_hand_are_checked) {
  npz::Array a;
  a.descr = "<f8";
  a.shape = {std::size_t(1) << 63, 2};  // the element count wraps to 0
  CHECK_THROWS(std::runtime_error, a.size());
  CHECK_THROWS(std::runtime_error, npz::to_npy(a));
  a.shape = {4};
  a.data.assign(8, '\0');  // one double for four elements
  CHECK_THROWS(std::runtime_error, a.to_doubles());
  a.descr = "<U";
  CHECK_THROWS(std::runtime_error, a.itemsize());
  a.descr = "<U99999999999999999999";
  CHECK_THROWS(std::runtime_error, a.itemsize());
  npz::Array s = npz::Array::string("ok");
  CHECK(s.as_string() == "ok");
  s.data[2] = 0x11;  // U+110000: not a code point
  CHECK_THROWS(std::runtime_error, s.as_string());
  const std::string msg = CHECK_THROWS(std::invalid_argument, npz::Array::string("bad \xff utf-8"));
  CHECK_MSG(contains(msg, "UTF-8"), msg);
  CHECK_THROWS(std::invalid_argument, npz::Array::string("truncated \xe2\x82"));
}

// ------------------------------------------------------------------------------------------ JSON
PYOPT_TEST(json_hostile_text) {
  std::string deep(100000, '[');
  std::string msg = CHECK_THROWS(json::ParseError, json::parse(deep));
  CHECK_MSG(contains(msg, "nesting too deep"), msg);
  deep.clear();
  for (int i = 0; i < 100000; ++i) deep += "{\"a\": ";
  msg = CHECK_THROWS(json::ParseError, json::parse(deep));
  CHECK_MSG(contains(msg, "nesting too deep"), msg);
  std::string nested_ok;
  for (int i = 0; i < 500; ++i) nested_ok += "[";
  for (int i = 0; i < 500; ++i) nested_ok += "]";
  CHECK(json::parse(nested_ok).is_array());
  for (const std::string bad : {"\"\\u", "\"\\ud800\\u", "\"\\ud800\\u12", "\"\\", "[\"a\", ", "{\"a\":", "-", "-I",
                          "1e+", "[1e", "\"\\udc00\\", "tr", "\"a\x01b\""}) {
    msg = CHECK_THROWS(json::ParseError, json::parse(bad));
    CHECK_MSG(contains(msg, "line 1"), bad << " -> " << msg);
  }
  CHECK_THROWS(json::ParseError, json::parse(std::string("[1]\0", 4)));
  CHECK(json::parse("\"\\ud83d\\ude00\"").as_string() == "\xf0\x9f\x98\x80");
  CHECK(json::parse("\"\\ud800x\"").as_string() == "\xed\xa0\x80x");  // a lone surrogate kept, as Python
  CHECK(json::parse("1e999").as_number() == std::numeric_limits<double>::infinity());
  CHECK(json::parse("-1e-999").as_number() == 0.0);
  CHECK(json::parse(std::string(5000, '1')).as_number() > 1e300);
  // Strings that are not UTF-8 (overlong, past U+10FFFF, stray bytes) dump as U+FFFD, so a dump
  // reads back to text that dumps the same (found by fuzz_json: an overlong '^' dumped as \u005e).
  for (const std::string raw : {"\xc1\x9e", "\xe0\x80\xaf", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80", "\xbb", "\xdf\xdd"}) {
    const std::string once = json::dump(json::Value(raw));
    CHECK_MSG(json::dump(json::parse(once)) == once, once);
  }
  CHECK(json::dump(json::Value("\xc1\x9e")) == "\"\\ufffd\"");
}

// ------------------------------------------------------------------------------------------ checkpoints
PYOPT_TEST(checkpoint_step_out_of_range) {
  const std::string path = adam_checkpoint("step.npz", {4});
  for (const char* step : {"1e30", "Infinity", "-Infinity", "NaN", "1.5", "-1", "9223372036854775808", "1e300", "true", "\"3\""}) {
    edit_meta(path, [&](json::Value& meta) {
      json::Value state = meta["state"]["0"];
      state.set("step", json::parse(step));
      json::Value all = json::Value::object();
      all.set("0", state);
      meta.set("state", all);
    });
    Stepped s({4});
    const std::string msg = CHECK_THROWS(std::invalid_argument, s.opt.load(path));
    CHECK_MSG(contains(msg, path) && contains(msg, "step"), step << ": " << msg);
    CHECK_MSG(s.untouched(), step);
  }
  std::remove(path.c_str());
}

PYOPT_TEST(checkpoint_state_shape_must_match) {
  const std::string path = adam_checkpoint("shape.npz", {2, 3});
  {
    Stepped s({3, 2});  // six elements, another shape
    const std::string msg = CHECK_THROWS(std::invalid_argument, s.opt.load(path));
    CHECK_MSG(contains(msg, "shape (2, 3)") && contains(msg, "(3, 2)"), msg);
    CHECK(s.untouched());
    Stepped flat({6});
    CHECK_THROWS(std::invalid_argument, flat.opt.load(path));
    CHECK(flat.untouched());
    Stepped same({2, 3});
    same.opt.load(path);
    CHECK(same.opt.step_count(0) == 1 && same.opt.get("lr") != 0.5);
  }
  // A state array whose header shape (2^63 + 3, 2) wraps to the param's 6 elements.
  npz::Archive archive = npz::load(path);
  Files files;
  for (const auto& [key, array] : archive) {
    std::string npy = npz::to_npy(array);
    if (key == "state/0/exp_avg") npy.replace(npy.find("(2, 3)"), 6, "(9223372036854775811, 2)");
    files.emplace_back(key + ".npy", npy);
  }
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    const std::string zip = npz::zip_stored(files);
    f.write(zip.data(), std::streamsize(zip.size()));
  }
  Stepped s({2, 3});
  const std::string msg = CHECK_THROWS(std::runtime_error, s.opt.load(path));
  CHECK_MSG(contains(msg, path) && contains(msg, "state/0/exp_avg"), msg);
  CHECK(s.untouched());
  std::remove(path.c_str());
}

PYOPT_TEST(checkpoint_malformed_meta_changes_nothing) {
  const std::string path = adam_checkpoint("meta.npz", {4});
  const std::vector<std::pair<const char*, const char*>> edits = {
      {"state", "{\"+0\": {\"step\": 1}}"},
      {"state", "{\" 0\": {\"step\": 1}}"},
      {"state", "{\"18446744073709551616\": {\"step\": 1}}"},
      {"state", "{\"0\": {\"step\": 1, \"bogus\": 2}}"},
      {"state", "{\"0\": [1]}"},
      {"param_groups", "[{\"lr\": 0.1}]"},
      {"param_groups", "[{\"lr\": -1, \"params\": [0]}]"},
      {"param_groups", "[{\"lr\": [1], \"params\": [0]}]"},
      {"param_groups", "[{\"params\": [0, 1]}]"},
      {"param_groups", "[]"},
      {"format", "2"},
      {"optimizer", "7"},
  };
  for (const auto& edit : edits) {
    const std::string key = edit.first, value = edit.second;
    edit_meta(path, [&](json::Value& meta) { meta.set(key, json::parse(value)); });
    Stepped s({4});
    const std::string msg = CHECK_THROWS(std::invalid_argument, s.opt.load(path));
    CHECK_MSG(contains(msg, path), key << "=" << value << ": " << msg);
    CHECK_MSG(s.untouched(), key << "=" << value);
    std::remove(path.c_str());
    adam_checkpoint("meta.npz", {4});
  }
  std::remove(path.c_str());
}

PYOPT_TEST(checkpoint_duplicate_entries_rejected) {
  const std::string path = adam_checkpoint("duplicate.npz", {4});
  Files files;
  for (const auto& [key, array] : npz::load(path)) {
    files.emplace_back(key + ".npy", npz::to_npy(array));
    if (key == "state/0/exp_avg") files.emplace_back(key + ".npy", npz::to_npy(array));
  }
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    const std::string zip = npz::zip_stored(files);
    f.write(zip.data(), std::streamsize(zip.size()));
  }
  Stepped s({4});
  const std::string msg = CHECK_THROWS(std::invalid_argument, s.opt.load(path));
  CHECK_MSG(contains(msg, "'state/0/exp_avg' appears twice"), msg);
  CHECK(s.untouched());
  std::remove(path.c_str());
}
