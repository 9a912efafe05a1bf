// libFuzzer target: the checkpoint reader on arbitrary bytes — the zip and .npy readers in memory
// (npz::read), then checkpoint_meta and Optimizer::load from a file into a small optimizer (params
// float32 (3,), float64 (2, 2) and bfloat16 (16, 256) — large enough for 8-bit states — as the seed
// corpus of tests/fuzz/make_corpus.py, which also covers the storage options). A failed load must
// leave the optimizer exactly as it was; a successful one (which takes the file's storage options)
// must leave state that steps.
#include <pyopt/pyopt.hpp>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_util.hpp"

namespace {

using pyopt_fuzz::accepted;
using pyopt_fuzz::require;

std::string temp_file(const char* what) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/pyopt_fuzz_" + std::to_string(getpid()) + "_" + what + ".npz";
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Everything load() may change, as the bytes save() writes.
std::string snapshot(const pyopt::Optimizer& opt) {
  static const std::string path = temp_file("snapshot");
  opt.save(path);
  return read_file(path);
}

struct Model {
  std::vector<float> w0 = {0.5f, -1.0f, 2.0f};
  std::vector<double> w1 = {1.0, -0.25, 0.125, 3.0};
  std::vector<float> g0 = {0.1f, 0.2f, -0.3f};
  std::vector<double> g1 = {-0.5, 0.25, 1.0, -2.0};
  std::vector<uint16_t> w2 = std::vector<uint16_t>(4096, 0x3f00);  // bfloat16 0.5
  std::vector<float> g2 = std::vector<float>(4096, 0.25f);
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  namespace npz = pyopt::npz;
  const std::string bytes(reinterpret_cast<const char*>(data), size);

  // The readers in memory: every array's bytes match its shape and dtype. (This build skips the
  // zip CRC-32 check, so mutated entries reach the .npy and JSON readers.)
  accepted([&] { npz::from_npy(bytes, "fuzz.npy"); });
  accepted([&] {
    for (const auto& entry : npz::read(bytes, "fuzz.npz")) {
      const npz::Array& array = entry.second;
      require(array.data.size() == array.size() * array.itemsize(), "array bytes differ from shape x itemsize");
      if (array.descr.compare(0, 2, "<U") == 0) accepted([&] { array.as_string(); });
      else require(array.to_doubles().size() == array.size(), "to_doubles() count");
    }
  });

  static const std::string path = temp_file("input");
  write_file(path, bytes);
  std::string name = "adam";
  accepted([&] { name = pyopt::checkpoint_optimizer(path); });
  accepted([&] {
    Model m;
    pyopt::Optimizer opt(name);
    opt.add_param(m.w0.data(), std::vector<std::size_t>{3});
    opt.add_param(m.w1.data(), std::vector<std::size_t>{2, 2});
    opt.add_param(m.w2.data(), std::vector<std::size_t>{16, 256}, pyopt::Storage::BFloat16);
    opt.step({m.g0.data(), m.g1.data(), m.g2.data()});
    const std::string before = snapshot(opt);
    const std::vector<float> w0 = m.w0;
    const std::vector<double> w1 = m.w1;
    const std::vector<uint16_t> w2 = m.w2;
    if (accepted([&] { opt.load(path); })) {
      // The loaded state (8-bit codes and scales, bfloat16 words, masters) has the params' sizes (ASan checks).
      opt.step({m.g0.data(), m.g1.data(), m.g2.data()});
      snapshot(opt);
    } else {
      require(snapshot(opt) == before, "a failed load changed the optimizer");
      require(m.w0 == w0 && m.w1 == w1 && m.w2 == w2, "a failed load changed the params");
    }
  });
  return 0;
}
