// libFuzzer target: a llama2.c checkpoint and its tokenizer.bin packed into one input (u32
// checkpoint length, checkpoint, tokenizer; see PackLlama2c) -> Model::FromMemory. Aborts when a
// loaded model breaks an invariant or an error is unclear; ASan/UBSan catch the rest.
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string problem = tandem::fuzz::FuzzPackedLlama2c({data, size});
  if (!problem.empty()) {
    std::fprintf(stderr, "invariant violated: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
