#include "tests/test_util.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

namespace tandem::testing {

std::string ModelsDir() {
  if (const char* env = std::getenv("TANDEM_MODELS_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return TANDEM_MODELS_DIR;
}

std::string ModelPath(const std::string& file) { return ModelsDir() + "/" + file; }

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tandem_test_XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

}  // namespace tandem::testing
