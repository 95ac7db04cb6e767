// A small command-line flag parser for the tools: `--name value` and `--name=value`, typed
// getters with clear errors, and a check that no unknown flag was given.
// Thread-safety: single-threaded use in main().
#ifndef TANDEM_COMMON_UTIL_FLAGS_H_
#define TANDEM_COMMON_UTIL_FLAGS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tandem {

class Flags {
 public:
  // Splits args into --flags and positional arguments. `boolean` flags take no value.
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args,
                                     const std::set<std::string>& known,
                                     const std::set<std::string>& boolean = {}) {
    Flags f;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a.size() < 3 || a.rfind("--", 0) != 0) {
        f.positional_.push_back(a);
        continue;
      }
      std::string name = a.substr(2), value;
      bool has_value = false;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (!known.count(name) && !boolean.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (known: --",
                                                       absl::StrJoin(known, ", --"), ")"));
      }
      if (boolean.count(name)) {
        f.values_[name] = has_value ? value : "true";
        continue;
      }
      if (!has_value) {
        if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
        value = args[++i];
      }
      f.values_[name] = value;
    }
    return f;
  }

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string String(const std::string& name, const std::string& def = "") const {
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t def, int64_t lo, int64_t hi) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    int64_t v;
    if (!absl::SimpleAtoi(it->second, &v) || v < lo || v > hi) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer in [", lo,
                                                     ", ", hi, "], got '", it->second, "'"));
    }
    return v;
  }
  absl::StatusOr<uint64_t> Uint64(const std::string& name, uint64_t def) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    uint64_t v;
    if (!absl::SimpleAtoi(it->second, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a non-negative integer, got '", it->second, "'"));
    }
    return v;
  }
  absl::StatusOr<double> Double(const std::string& name, double def) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    double v;
    if (!absl::SimpleAtod(it->second, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a number, got '", it->second, "'"));
    }
    return v;
  }
  bool Bool(const std::string& name) const {
    auto it = values_.find(name);
    return it != values_.end() && it->second != "false" && it->second != "0";
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace tandem

#endif  // TANDEM_COMMON_UTIL_FLAGS_H_
