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

// A small PKI minted with the openssl CLI into `dir` (fresh keys every call):
//   ca.pem / ca.key        test CA
//   server.pem/server.key  verifier certificate for "localhost" and 127.0.0.1, signed by ca
//   client.pem/client.key  client certificate (CN=edge-test), signed by ca
//   rogue_ca.pem, rogue_client.pem/.key   a second CA and a client certificate it signed
struct TestPki {
  std::string dir, ca, server_cert, server_key, client_cert, client_key;
  std::string rogue_ca, rogue_client_cert, rogue_client_key;
};
TestPki MintTestPki(const std::string& dir);

// Runs `command` with /bin/sh; returns its exit status (-1 if it could not run).
int RunShell(const std::string& command);

// A child process started by Spawn: its pid, and the read end of its stdout when piped.
struct Child {
  int pid = -1;
  int out = -1;
};
// Starts args[0] (a path) with args; stderr goes to `err_file`, stdout to a pipe (`pipe_out`)
// or /dev/null.
Child Spawn(const std::vector<std::string>& args, const std::string& err_file, bool pipe_out = false);
// Reads the child's stdout into `text` until it holds `min_bytes`, EOF, or `seconds` pass.
void ReadSome(const Child& c, std::string* text, size_t min_bytes, double seconds);
// Waits up to `seconds` for `pid` to exit: its exit code, -1 if killed by a signal, -2 if it did
// not exit in time (it is then killed).
int WaitExit(int pid, int seconds);

}  // namespace tandem::testing

#endif  // TANDEM_TESTS_TEST_UTIL_H_
