// libFuzzer target: arbitrary bytes as a GGUF file -> GgufFile::Parse (plus its tokenizer) and
// Model::FromMemory. Aborts when a successful parse breaks an invariant or an error is unclear;
// ASan/UBSan catch the rest. Build and run: see README.md.
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string problem = tandem::fuzz::FuzzGguf({data, size});
  if (!problem.empty()) {
    std::fprintf(stderr, "invariant violated: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
