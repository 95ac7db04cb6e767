// Bearer-token authentication: the tokens file format and its errors (with line numbers), and
// matching a token from gRPC metadata to its tenant.
#include "common/net/auth.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace tandem::net {
namespace {

using ::testing::HasSubstr;
using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

TEST(AuthTest, ParsesTenantsTokensCommentsAndBlankLines) {
  auto auth = TokenAuthenticator::Parse(
      "# tokens for the POP\n\nacme:tok-1\r\n  globex : tok:with:colons  \nacme:tok-2\n# end\n");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(auth->size(), 3u);
  EXPECT_EQ(auth->tenants(), (std::vector<std::string>{"acme", "globex"}));
  EXPECT_EQ(*auth->AuthenticateToken("tok-1"), "acme");
  EXPECT_EQ(*auth->AuthenticateToken("tok-2"), "acme");
  EXPECT_EQ(*auth->AuthenticateToken("tok:with:colons"), "globex");
  EXPECT_TRUE(absl::IsUnauthenticated(auth->AuthenticateToken("tok-3").status()));
  EXPECT_TRUE(absl::IsUnauthenticated(auth->AuthenticateToken("tok-").status()));
  EXPECT_TRUE(absl::IsUnauthenticated(auth->AuthenticateToken("").status()));
}

TEST(AuthTest, MalformedLinesAreErrorsWithTheirLineNumber) {
  struct Case {
    const char* text;
    const char* want;
  } cases[] = {
      {"acme:t1\nno-colon-here\n", "f:2: expected 'tenant:token'"},
      {"\n\n:t1\n", "f:3: empty tenant"},
      {"acme:\n", "f:1: empty token for tenant 'acme'"},
      {"acme:   \n", "f:1: empty token"},
      {"acme:t1\n#\nglobex:t1\n", "f:3: duplicate token"},
      {"acme:t 1\n", "f:1: the token holds whitespace"},
  };
  for (const Case& c : cases) {
    auto auth = TokenAuthenticator::Parse(c.text, "f");
    ASSERT_FALSE(auth.ok()) << c.text;
    EXPECT_TRUE(absl::IsInvalidArgument(auth.status()));
    EXPECT_THAT(std::string(auth.status().message()), HasSubstr(c.want)) << c.text;
  }
}

TEST(AuthTest, LoadsAFileAndReportsAMissingOne) {
  const std::string path = testing::TempDir() + "/tokens";
  std::ofstream(path) << "acme:secret\n";
  auto auth = TokenAuthenticator::LoadFile(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(*auth->AuthenticateToken("secret"), "acme");
  auto missing = TokenAuthenticator::LoadFile(path + ".nope");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(path + ".nope"));
  std::ofstream(path) << "acme:a\nbad line\n";
  EXPECT_THAT(std::string(TokenAuthenticator::LoadFile(path).status().message()),
              HasSubstr(path + ":2:"));
}

TEST(AuthTest, BearerMetadata) {
  auto auth = TokenAuthenticator::Parse("acme:secret\n");
  ASSERT_TRUE(auth.ok());
  auto check = [&](const std::vector<std::pair<std::string, std::string>>& kv) {
    Metadata md;
    for (const auto& [k, v] : kv) md.emplace(grpc::string_ref(k), grpc::string_ref(v));
    return auth->Authenticate(md);
  };
  EXPECT_EQ(BearerValue("secret"), "Bearer secret");
  EXPECT_EQ(*check({{"authorization", "Bearer secret"}}), "acme");
  EXPECT_EQ(*check({{"x-other", "1"}, {"authorization", "bearer secret"}}), "acme");
  auto none = check({});
  EXPECT_TRUE(absl::IsUnauthenticated(none.status()));
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("authorization: Bearer <token>"));
  auto wrong = check({{"authorization", "Bearer secreT"}});
  EXPECT_TRUE(absl::IsUnauthenticated(wrong.status()));
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("invalid bearer token"));
  EXPECT_THAT(std::string(wrong.status().message()), ::testing::Not(HasSubstr("secreT")));
  auto basic = check({{"authorization", "Basic c2VjcmV0"}});
  EXPECT_TRUE(absl::IsUnauthenticated(basic.status()));
  EXPECT_THAT(std::string(basic.status().message()), HasSubstr("must read 'Bearer <token>'"));
}

}  // namespace
}  // namespace tandem::net
