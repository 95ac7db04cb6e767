// YAML + flags configuration of tandem-verifier (see verifier_config.h).
#include "cloud/verifier_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/obs/logging.h"
#include "common/util/status_macros.h"

namespace tandem::cloud {
namespace {

// A numeric setting: its YAML key (inside `section`), its flag, range and where it lives.
struct IntSetting {
  const char* section;  // "" = top level
  const char* key;
  const char* flag;
  int64_t lo, hi;
  int* (*field)(VerifierConfig&);
};
struct DoubleSetting {
  const char* section;
  const char* key;
  const char* flag;
  double lo, hi;
  bool lo_open;  // lo excluded
  double* (*field)(VerifierConfig&);
};
struct StringSetting {
  const char* section;
  const char* key;
  const char* flag;
  bool is_path;
  std::string* (*field)(VerifierConfig&);
};

constexpr int64_t kMillion = 1 << 20;
const IntSetting kInts[] = {
    {"", "threads", "threads", 1, 256, [](VerifierConfig& c) { return &c.threads; }},
    {"limits", "max_sessions", "max-sessions", 1, kMillion,
     [](VerifierConfig& c) { return &c.limits.max_sessions; }},
    {"limits", "max_sessions_per_tenant", "max-sessions-per-tenant", 1, kMillion,
     [](VerifierConfig& c) { return &c.limits.max_sessions_per_tenant; }},
    {"limits", "max_tokens_per_session", "max-tokens-per-session", 1, 1 << 24,
     [](VerifierConfig& c) { return &c.limits.max_tokens_per_session; }},
    {"limits", "max_draft_tokens", "max-draft-tokens", 0, 1024,
     [](VerifierConfig& c) { return &c.limits.max_draft_tokens; }},
    {"limits", "max_tree_nodes", "max-tree-nodes", 0, 4096,
     [](VerifierConfig& c) { return &c.limits.max_tree_nodes; }},
    {"limits", "max_message_bytes", "max-message-bytes", 1024, 1 << 30,
     [](VerifierConfig& c) { return &c.limits.max_message_bytes; }},
    {"limits", "kv_budget_mb", "kv-budget-mb", 0, 1 << 24,
     [](VerifierConfig& c) { return &c.kv_budget_mb; }},
    {"batching", "max_batch_tokens", "max-batch-tokens", 1, 1 << 16,
     [](VerifierConfig& c) { return &c.batching.max_batch_tokens; }},
    {"batching", "prefill_chunk", "prefill-chunk", 1, 1 << 16,
     [](VerifierConfig& c) { return &c.batching.prefill_chunk; }},
};
const DoubleSetting kDoubles[] = {
    {"", "grace_s", "grace-s", 0, 3600, false, [](VerifierConfig& c) { return &c.grace_s; }},
    {"limits", "idle_ttl_s", "idle-ttl-s", 0.01, 7 * 86400, false,
     [](VerifierConfig& c) { return &c.limits.idle_ttl_s; }},
    {"limits", "max_queue_delay_s", "max-queue-delay-s", 0, 3600, false,
     [](VerifierConfig& c) { return &c.limits.max_queue_delay_s; }},
    {"batching", "window_ms", "batch-window-ms", 0, 1000, false,
     [](VerifierConfig& c) { return &c.batch_window_ms; }},
    {"", "drain_handback_delay_s", "drain-handback-delay-s", 0, 3600, false,
     [](VerifierConfig& c) { return &c.drain_handback_delay_s; }},
};
const StringSetting kStrings[] = {
    {"", "listen", "listen", false, [](VerifierConfig& c) { return &c.listen; }},
    {"", "model", "model", true, [](VerifierConfig& c) { return &c.model; }},
    {"", "tokenizer", "tokenizer", true, [](VerifierConfig& c) { return &c.tokenizer; }},
    {"", "name", "name", false, [](VerifierConfig& c) { return &c.name; }},
    {"", "metrics_listen", "metrics-listen", false, [](VerifierConfig& c) { return &c.metrics_listen; }},
    {"", "port_file", "port-file", true, [](VerifierConfig& c) { return &c.port_file; }},
    {"", "metrics_port_file", "metrics-port-file", true,
     [](VerifierConfig& c) { return &c.metrics_port_file; }},
    {"", "log_level", "log-level", false, [](VerifierConfig& c) { return &c.log_level; }},
    {"tls", "cert", "tls-cert", true, [](VerifierConfig& c) { return &c.tls_cert; }},
    {"tls", "key", "tls-key", true, [](VerifierConfig& c) { return &c.tls_key; }},
    {"tls", "client_ca", "tls-client-ca", true, [](VerifierConfig& c) { return &c.tls_client_ca; }},
    {"auth", "tokens_file", "auth-tokens-file", true,
     [](VerifierConfig& c) { return &c.auth_tokens_file; }},
    {"batching", "mode", "batching", false, [](VerifierConfig& c) { return &c.batching_mode; }},
};

std::string KeyPath(const char* section, const std::string& key) {
  return *section ? absl::StrCat(section, ".", key) : key;
}

class YamlReader {
 public:
  YamlReader(std::string source, std::string base_dir)
      : source_(std::move(source)), base_dir_(std::move(base_dir)) {}

  absl::Status Error(const YAML::Node& node, const std::string& what) const {
    const YAML::Mark m = node.Mark();
    if (m.line >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(source_, ":", m.line + 1, ": ", what));
    }
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", what));
  }

  absl::Status Read(const YAML::Node& root, VerifierConfig* c) {
    if (root.IsNull()) return absl::OkStatus();  // an empty file
    if (!root.IsMap()) return Error(root, "the configuration must be a mapping of keys to values");
    std::set<std::string> top = {"tls", "auth", "limits", "tenants", "batching"};
    for (const auto& s : kInts) if (!*s.section) top.insert(s.key);
    for (const auto& s : kDoubles) if (!*s.section) top.insert(s.key);
    for (const auto& s : kStrings) if (!*s.section) top.insert(s.key);
    RETURN_IF_ERROR(Section(root, "", top, c));
    for (const char* section : {"tls", "auth", "limits", "batching"}) {
      if (!root[section] || root[section].IsNull()) continue;
      const YAML::Node node = root[section];
      if (!node.IsMap()) return Error(node, absl::StrCat("'", section, "' must be a mapping"));
      std::set<std::string> keys;
      for (const auto& s : kInts) if (std::string(s.section) == section) keys.insert(s.key);
      for (const auto& s : kDoubles) if (std::string(s.section) == section) keys.insert(s.key);
      for (const auto& s : kStrings) if (std::string(s.section) == section) keys.insert(s.key);
      RETURN_IF_ERROR(Section(node, section, keys, c));
    }
    if (root["tenants"] && !root["tenants"].IsNull()) RETURN_IF_ERROR(Tenants(root["tenants"], c));
    return absl::OkStatus();
  }

 private:
  absl::Status Section(const YAML::Node& map, const char* section, const std::set<std::string>& known,
                       VerifierConfig* c) {
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) return Error(kv.first, "keys must be plain names");
      const std::string key = kv.first.Scalar();
      if (!known.count(key)) {
        return Error(kv.first, absl::StrCat("unknown key '", KeyPath(section, key), "' (known: ",
                                            absl::StrJoin(known, ", "), ")"));
      }
      const YAML::Node& value = kv.second;
      if (value.IsNull()) continue;  // unset: the default stays
      if (!*section && (key == "tls" || key == "auth" || key == "limits" || key == "tenants" ||
                        key == "batching")) {
        continue;  // a nested section, read by the caller
      }
      const std::string path = KeyPath(section, key);
      bool done = false;
      for (const auto& s : kInts) {
        if (std::string(s.section) != section || key != s.key) continue;
        ASSIGN_OR_RETURN(int64_t v, Int(value, path, s.lo, s.hi));
        *s.field(*c) = static_cast<int>(v);
        done = true;
      }
      for (const auto& s : kDoubles) {
        if (done || std::string(s.section) != section || key != s.key) continue;
        if (!value.IsScalar()) return Error(value, absl::StrCat("'", path, "' must be a number"));
        double v;
        try {
          v = value.as<double>();
        } catch (const YAML::Exception&) {
          return Error(value, absl::StrCat("'", path, "' must be a number, got '", value.Scalar(), "'"));
        }
        if (!std::isfinite(v) || v < s.lo || v > s.hi) {
          return Error(value, absl::StrCat("'", path, "' must be in [", s.lo, ", ", s.hi, "], got ",
                                           value.Scalar()));
        }
        *s.field(*c) = v;
        done = true;
      }
      for (const auto& s : kStrings) {
        if (done || std::string(s.section) != section || key != s.key) continue;
        if (!value.IsScalar()) return Error(value, absl::StrCat("'", path, "' must be a string"));
        std::string v = value.Scalar();
        if (s.is_path && !v.empty() && std::filesystem::path(v).is_relative() && !base_dir_.empty()) {
          v = (std::filesystem::path(base_dir_) / v).lexically_normal().string();
        }
        *s.field(*c) = v;
        done = true;
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> Int(const YAML::Node& value, const std::string& path, int64_t lo,
                              int64_t hi) const {
    if (!value.IsScalar()) return Error(value, absl::StrCat("'", path, "' must be an integer"));
    int64_t v;
    try {
      v = value.as<int64_t>();
    } catch (const YAML::Exception&) {
      return Error(value, absl::StrCat("'", path, "' must be an integer, got '", value.Scalar(), "'"));
    }
    if (v < lo || v > hi) {
      return Error(value, absl::StrCat("'", path, "' must be in [", lo, ", ", hi, "], got ", v));
    }
    return v;
  }

  absl::Status Tenants(const YAML::Node& tenants, VerifierConfig* c) {
    if (!tenants.IsMap()) {
      return Error(tenants, "'tenants' must map tenant names to {max_sessions: N}");
    }
    for (const auto& kv : tenants) {
      if (!kv.first.IsScalar() || kv.first.Scalar().empty()) {
        return Error(kv.first, "tenant names must be non-empty strings");
      }
      const std::string name = kv.first.Scalar();
      const YAML::Node& t = kv.second;
      if (!t.IsMap()) return Error(kv.first, absl::StrCat("tenant '", name, "' must be a mapping {max_sessions: N}"));
      for (const auto& f : t) {
        const std::string key = f.first.IsScalar() ? f.first.Scalar() : "";
        if (key != "max_sessions") {
          return Error(f.first, absl::StrCat("unknown key 'tenants.", name, ".", key,
                                             "' (known: max_sessions)"));
        }
        ASSIGN_OR_RETURN(int64_t v, Int(f.second, absl::StrCat("tenants.", name, ".max_sessions"), 0, kMillion));
        c->limits.tenant_max_sessions[name] = static_cast<int>(v);
      }
    }
    return absl::OkStatus();
  }

  std::string source_, base_dir_;
};

}  // namespace

absl::StatusOr<VerifierConfig> ParseVerifierConfigYaml(std::string_view text,
                                                       const std::string& source,
                                                       const std::string& base_dir) {
  VerifierConfig c;
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  }
  try {
    RETURN_IF_ERROR(YamlReader(source, base_dir).Read(root, &c));
  } catch (const YAML::Exception& e) {  // anything the reader did not foresee
    return absl::InvalidArgumentError(absl::StrCat(source, ":", e.mark.line + 1, ": ", e.msg));
  }
  return c;
}

absl::StatusOr<VerifierConfig> LoadVerifierConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the config file '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseVerifierConfigYaml(ss.str(), path,
                                 std::filesystem::path(path).parent_path().string());
}

std::set<std::string> VerifierFlagNames() {
  std::set<std::string> names = {"config"};
  for (const auto& s : kInts) names.insert(s.flag);
  for (const auto& s : kDoubles) names.insert(s.flag);
  for (const auto& s : kStrings) names.insert(s.flag);
  return names;
}

absl::Status ApplyVerifierFlags(const Flags& flags, VerifierConfig* c) {
  for (const auto& s : kInts) {
    int* field = s.field(*c);
    ASSIGN_OR_RETURN(int64_t v, flags.Int(s.flag, *field, s.lo, s.hi));
    *field = static_cast<int>(v);
  }
  for (const auto& s : kDoubles) {
    double* field = s.field(*c);
    ASSIGN_OR_RETURN(double v, flags.Double(s.flag, *field));
    if (!std::isfinite(v) || v < s.lo || v > s.hi) {
      return absl::InvalidArgumentError(absl::StrCat("--", s.flag, " must be in [", s.lo, ", ",
                                                     s.hi, "], got ", flags.String(s.flag)));
    }
    *field = v;
  }
  for (const auto& s : kStrings) {
    if (flags.Has(s.flag)) *s.field(*c) = flags.String(s.flag);
  }
  return absl::OkStatus();
}

absl::Status ValidateVerifierConfig(const VerifierConfig& c) {
  if (c.model.empty()) {
    return absl::InvalidArgumentError("--model FILE is required (or 'model:' in the config file)");
  }
  if (c.listen.empty()) return absl::InvalidArgumentError("'listen' must be HOST:PORT");
  if (c.tls_cert.empty() != c.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  RETURN_IF_ERROR(obs::ValidateLogLevel(c.log_level));
  if (c.batching_mode != "on" && c.batching_mode != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("batching must be 'on' or 'off', got '", c.batching_mode, "'"));
  }
  return absl::OkStatus();
}

BatchingOptions VerifierConfig::Batching() const {
  BatchingOptions b = batching;
  b.enabled = batching_mode == "on";
  b.window_s = batch_window_ms / 1000.0;
  b.prefill_chunk = std::min(b.prefill_chunk, b.max_batch_tokens);
  return b;
}

VerifierLimits VerifierConfig::Limits() const {
  VerifierLimits l = limits;
  l.kv_budget_bytes = static_cast<uint64_t>(kv_budget_mb) << 20;
  return l;
}

absl::StatusOr<VerifierConfig> VerifierConfigFromArgs(const std::vector<std::string>& args) {
  ASSIGN_OR_RETURN(Flags flags, Flags::Parse(args, VerifierFlagNames()));
  if (!flags.positional().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument '", flags.positional().front(), "'"));
  }
  VerifierConfig c;
  if (flags.Has("config")) {
    ASSIGN_OR_RETURN(c, LoadVerifierConfigFile(flags.String("config")));
  }
  RETURN_IF_ERROR(ApplyVerifierFlags(flags, &c));
  RETURN_IF_ERROR(ValidateVerifierConfig(c));
  return c;
}

}  // namespace tandem::cloud
