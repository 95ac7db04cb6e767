// Helpers shared by the test executables.
#ifndef TANDEM_TESTS_TEST_UTIL_H_
#define TANDEM_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::testing {

// Directory with the shared model files (../shared/models): $TANDEM_MODELS_DIR, else the path
// configured at build time.
std::string ModelsDir();
std::string ModelPath(const std::string& file);  // ModelsDir() + "/" + file
std::string ReadFileOrDie(const std::string& path);
// A fresh directory under $TEST_TMPDIR or /tmp, removed by nobody (tests are short-lived).
std::string TempDir();

}  // namespace tandem::testing

#endif  // TANDEM_TESTS_TEST_UTIL_H_
