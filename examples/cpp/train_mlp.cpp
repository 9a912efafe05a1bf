// Trains a small MLP (2 -> 32 tanh -> 1, logistic loss) on a generated dataset, two concentric
// rings that no line separates, with the optimizer a best.json names (as `pyopt tune` writes it):
//
//   train_mlp best.json [checkpoint.npz]
//
// prints the loss and accuracy falling / rising, and optionally saves the optimizer's state in
// pyopt.save's format (load it in Python with pyopt.load(path, params)).
#include <pyopt/pyopt.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <random>
#include <vector>

namespace {

constexpr int kIn = 2, kHidden = 32, kSamples = 512, kEpochs = 400;

struct Data {
  std::vector<float> x;  // kSamples x kIn
  std::vector<float> y;  // 0 / 1
};

Data rings(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  std::uniform_real_distribution<float> angle(0.0f, 6.2831853f);
  Data d;
  for (int i = 0; i < kSamples; ++i) {
    const int label = i % 2;
    const float r = (label ? 1.0f : 0.4f) + noise(rng), a = angle(rng);
    d.x.push_back(r * std::cos(a));
    d.x.push_back(r * std::sin(a));
    d.y.push_back(float(label));
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s best.json [checkpoint.npz]\n", argv[0]);
    return 2;
  }
  try {
    const Data data = rings(0);
    std::mt19937 rng(1);
    std::normal_distribution<float> init(0.0f, 1.0f);
    std::vector<float> w1(kHidden * kIn), b1(kHidden, 0.0f), w2(kHidden), b2(1, 0.0f);
    for (float& w : w1) w = init(rng) / std::sqrt(float(kIn));
    for (float& w : w2) w = init(rng) / std::sqrt(float(kHidden));
    std::vector<float> gw1(w1.size()), gb1(b1.size()), gw2(w2.size()), gb2(1);

    pyopt::Optimizer opt = pyopt::make_optimizer_from_file(argv[1]);
    opt.add_param(w1.data(), {std::size_t(kHidden), std::size_t(kIn)});
    opt.add_param(b1.data(), b1.size());
    opt.add_param(w2.data(), {1, std::size_t(kHidden)});
    opt.add_param(b2.data(), b2.size());
    std::printf("pyopt %s, optimizer %s (lr %g), ISA %s, %d threads\n", pyopt::version(), opt.name().c_str(),
                opt.get("lr"), pyopt::isa().c_str(), pyopt::num_threads());

    std::vector<float> h(kHidden);
    for (int epoch = 0; epoch <= kEpochs; ++epoch) {
      std::fill(gw1.begin(), gw1.end(), 0.0f);
      std::fill(gb1.begin(), gb1.end(), 0.0f);
      std::fill(gw2.begin(), gw2.end(), 0.0f);
      gb2[0] = 0.0f;
      double loss = 0.0;
      int correct = 0;
      for (int n = 0; n < kSamples; ++n) {  // full batch: forward and backward per sample
        const float* x = &data.x[std::size_t(n) * kIn];
        float z = b2[0];
        for (int j = 0; j < kHidden; ++j) {
          float a = b1[j];
          for (int i = 0; i < kIn; ++i) a += w1[j * kIn + i] * x[i];
          h[j] = std::tanh(a);
          z += w2[j] * h[j];
        }
        const float p = 1.0f / (1.0f + std::exp(-z)), y = data.y[n];
        loss += -(y * std::log(p + 1e-7f) + (1 - y) * std::log(1 - p + 1e-7f));
        correct += (p > 0.5f) == (y > 0.5f);
        const float dz = (p - y) / kSamples;
        gb2[0] += dz;
        for (int j = 0; j < kHidden; ++j) {
          gw2[j] += dz * h[j];
          const float da = dz * w2[j] * (1 - h[j] * h[j]);
          gb1[j] += da;
          for (int i = 0; i < kIn; ++i) gw1[j * kIn + i] += da * x[i];
        }
      }
      if (epoch % 50 == 0)
        std::printf("epoch %3d  loss %.4f  accuracy %.3f\n", epoch, loss / kSamples, double(correct) / kSamples);
      if (epoch < kEpochs) opt.step({gw1.data(), gb1.data(), gw2.data(), gb2.data()});
    }
    if (argc > 2) {
      opt.save(argv[2]);
      std::printf("saved the optimizer state to %s\n", argv[2]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
