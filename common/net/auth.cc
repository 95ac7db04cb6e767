// Bearer tokens mapped to tenants (see auth.h).
#include "common/net/auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tandem::net {
namespace {

std::array<uint8_t, 32> Digest(absl::string_view token) {
  std::array<uint8_t, 32> d;
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), d.data());
  return d;
}

}  // namespace

std::string BearerValue(absl::string_view token) {
  return absl::StrCat(kBearerPrefix, std::string(token));
}

absl::StatusOr<TokenAuthenticator> TokenAuthenticator::Parse(absl::string_view text,
                                                             const std::string& source) {
  TokenAuthenticator auth;
  std::set<std::array<uint8_t, 32>> seen;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line.front() == '#') continue;
    auto where = [&] { return absl::StrCat(source, ":", line_no, ": "); };
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "expected 'tenant:token' (no ':' on the line)"));
    }
    absl::string_view tenant = absl::StripAsciiWhitespace(line.substr(0, colon));
    absl::string_view token = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (tenant.empty()) return absl::InvalidArgumentError(absl::StrCat(where(), "empty tenant"));
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "empty token for tenant '", std::string(tenant), "'"));
    }
    for (char c : token) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c)) || !absl::ascii_isprint(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(
            absl::StrCat(where(), "the token holds whitespace or a control character"));
      }
    }
    Entry e{Digest(token), std::string(tenant)};
    if (!seen.insert(e.digest).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), "duplicate token (already given to a tenant on an earlier line)"));
    }
    auth.entries_.push_back(std::move(e));
  }
  return auth;
}

absl::StatusOr<TokenAuthenticator> TokenAuthenticator::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the auth tokens file '", path, "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

absl::StatusOr<std::string> TokenAuthenticator::AuthenticateToken(absl::string_view token) const {
  const std::array<uint8_t, 32> d = Digest(token);
  const Entry* match = nullptr;
  for (const Entry& e : entries_) {  // no early exit: every entry is compared
    const bool equal = CRYPTO_memcmp(d.data(), e.digest.data(), d.size()) == 0;
    if (equal) match = &e;
  }
  if (match == nullptr) return absl::UnauthenticatedError("invalid bearer token");
  return match->tenant;
}

absl::StatusOr<std::string> TokenAuthenticator::Authenticate(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  auto it = metadata.find(kAuthorizationMetadata);
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "missing credentials: send the metadata 'authorization: Bearer <token>'");
  }
  absl::string_view value(it->second.data(), it->second.size());
  const absl::string_view prefix = kBearerPrefix;
  if (value.size() < prefix.size() || !absl::EqualsIgnoreCase(value.substr(0, prefix.size()), prefix)) {
    return absl::UnauthenticatedError("the 'authorization' metadata must read 'Bearer <token>'");
  }
  return AuthenticateToken(absl::StripAsciiWhitespace(value.substr(prefix.size())));
}

std::vector<std::string> TokenAuthenticator::tenants() const {
  std::set<std::string> s;
  for (const Entry& e : entries_) s.insert(e.tenant);
  return {s.begin(), s.end()};
}

}  // namespace tandem::net
