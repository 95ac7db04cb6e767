#include "tests/test_util.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <sys/wait.h>
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

int RunShell(const std::string& command) {
  int rc = std::system(command.c_str());
  if (rc == -1) return -1;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

TestPki MintTestPki(const std::string& dir) {
  TestPki p;
  p.dir = dir;
  auto f = [&](const char* name) { return dir + "/" + name; };
  p.ca = f("ca.pem");
  p.server_cert = f("server.pem");
  p.server_key = f("server.key");
  p.client_cert = f("client.pem");
  p.client_key = f("client.key");
  p.rogue_ca = f("rogue_ca.pem");
  p.rogue_client_cert = f("rogue_client.pem");
  p.rogue_client_key = f("rogue_client.key");
  const std::string q = " 2>>" + f("openssl.log");
  auto run = [&](const std::string& cmd) {
    if (RunShell("cd '" + dir + "' && " + cmd + q) != 0) {
      throw std::runtime_error("openssl failed: " + cmd + " (see " + f("openssl.log") + ")");
    }
  };
  auto ca = [&](const std::string& name, const std::string& cn) {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj '/CN=" +
        cn + "' -keyout " + name + ".key -out " + name + ".pem");
  };
  auto leaf = [&](const std::string& name, const std::string& cn, const std::string& ca_name,
                  const std::string& ext) {
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=" + cn +
        "' -keyout " + name + ".key -out " + name + ".csr");
    std::ofstream(f((name + ".ext").c_str())) << ext << "\n";
    run("openssl x509 -req -in " + name + ".csr -CA " + ca_name + ".pem -CAkey " + ca_name +
        ".key -CAcreateserial -days 2 -extfile " + name + ".ext -out " + name + ".pem");
  };
  ca("ca", "Tandem Test CA");
  ca("rogue_ca", "Rogue Test CA");
  leaf("server", "localhost", "ca",
       "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth");
  leaf("client", "edge-test", "ca", "extendedKeyUsage=clientAuth");
  leaf("rogue_client", "edge-rogue", "rogue_ca", "extendedKeyUsage=clientAuth");
  return p;
}

}  // namespace tandem::testing
