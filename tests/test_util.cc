#include "tests/test_util.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

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

Child Spawn(const std::vector<std::string>& args, const std::string& err_file, bool pipe_out) {
  int fds[2] = {-1, -1};
  if (pipe_out && pipe(fds) != 0) throw std::runtime_error("pipe failed");
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    const int err = open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(err, 2);
    if (pipe_out) {
      dup2(fds[1], 1);
      close(fds[0]);
    } else {
      dup2(open("/dev/null", O_WRONLY), 1);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (pipe_out) {
    close(fds[1]);
    c.out = fds[0];
  }
  return c;
}

void ReadSome(const Child& c, std::string* text, size_t min_bytes, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  char buf[4096];
  while (text->size() < min_bytes && std::chrono::steady_clock::now() < end) {
    pollfd p{c.out, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const ssize_t got = read(c.out, buf, sizeof(buf));
    if (got <= 0) return;
    text->append(buf, static_cast<size_t>(got));
  }
}

int WaitExit(int pid, int seconds) {
  for (int i = 0; i < seconds * 100; ++i) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;
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
