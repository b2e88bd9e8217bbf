// Utf8Stream: generate() streams only complete UTF-8 characters.
#include <gtest/gtest.h>

#include "runtime/generation.h"

namespace qf {
namespace {

TEST(Utf8Stream, HoldsBackIncompleteCharacters) {
  Utf8Stream s;
  EXPECT_EQ(s.push("ab"), "ab");
  // "é" = C3 A9, "€" = E2 82 AC, "😀" = F0 9F 98 80, split across pushes.
  EXPECT_EQ(s.push("c\xC3"), "c");
  EXPECT_EQ(s.push("\xA9"), "\xC3\xA9");
  EXPECT_EQ(s.push("\xE2\x82"), "");
  EXPECT_EQ(s.push("\xAC!"), "\xE2\x82\xAC!");
  EXPECT_EQ(s.push("\xF0"), "");
  EXPECT_EQ(s.push("\x9F\x98"), "");
  EXPECT_EQ(s.push("\x80x\xF0\x9F"), "\xF0\x9F\x98\x80x");
  EXPECT_EQ(s.flush(), "\xF0\x9F");  // what never completed comes out at the end
  EXPECT_EQ(s.flush(), "");
}

TEST(Utf8Stream, ReleasesBytesThatCanNeverComplete) {
  Utf8Stream s;
  EXPECT_EQ(s.push("\x80\x80"), "\x80\x80");  // stray continuation bytes
  EXPECT_EQ(s.push("\xFF"), "\xFF");          // not a UTF-8 lead byte
}

}  // namespace
}  // namespace qf
