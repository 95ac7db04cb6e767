// libFuzzer target: arbitrary bytes as a split-mode hidden-state payload -> codec::Decode. The
// first byte picks the codec and zstd flag, the next two the shape (1..16 rows, 1..128 dims); the
// rest is the payload. Aborts if a decode succeeds with a non-finite value or fails with anything
// but InvalidArgument; ASan/UBSan catch the rest. Build and run: see README.md.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "common/codec/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tandem::codec;
  if (size < 3) return 0;
  const CodecKind kinds[] = {CodecKind::kF32, CodecKind::kF16, CodecKind::kBf16, CodecKind::kInt8,
                             CodecKind::kInt4};
  const CodecSpec spec{kinds[(data[0] & 0x7f) % 5], (data[0] & 0x80) != 0};
  const int rows = 1 + data[1] % 16, dim = 1 + data[2] % 128;
  std::vector<float> out(static_cast<size_t>(rows) * dim);
  const std::string_view payload(reinterpret_cast<const char*>(data + 3), size - 3);
  absl::Status s = Decode(spec, payload, rows, dim, out);
  if (s.ok()) {
    for (float v : out) {
      if (!std::isfinite(v)) {
        std::fprintf(stderr, "decode returned a non-finite value\n");
        std::abort();
      }
    }
  } else if (!absl::IsInvalidArgument(s)) {
    std::fprintf(stderr, "unexpected status: %s\n", s.ToString().c_str());
    std::abort();
  }
  return 0;
}
