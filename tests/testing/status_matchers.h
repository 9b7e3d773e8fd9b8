// gtest matchers for absl::Status / StatusOr (Abseil 20220623 ships none).
//   EXPECT_OK(status_or_statusor);
//   ASSERT_OK_AND_ASSIGN(auto value, MakeValue());
//   EXPECT_THAT(result, StatusIs(absl::StatusCode::kNotFound, HasSubstr("x")));
#ifndef CASEBRIDGE_TESTS_TESTING_STATUS_MATCHERS_H_
#define CASEBRIDGE_TESTS_TESTING_STATUS_MATCHERS_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace casebridge::testing {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + ::testing::PrintToString(code)) {
  const absl::Status& status = ::casebridge::testing::GetStatus(arg);
  *result_listener << "status is " << status.ToString();
  return status.code() == code &&
         ::testing::ExplainMatchResult(
             message_matcher, std::string(status.message()), result_listener);
}

MATCHER(IsOk, "is OK") {
  const absl::Status& status = ::casebridge::testing::GetStatus(arg);
  *result_listener << "status is " << status.ToString();
  return status.ok();
}

}  // namespace casebridge::testing

#define EXPECT_OK(expr) EXPECT_THAT((expr), ::casebridge::testing::IsOk())
#define ASSERT_OK(expr) ASSERT_THAT((expr), ::casebridge::testing::IsOk())

#define CB_TEST_CONCAT_INNER_(a, b) a##b
#define CB_TEST_CONCAT_(a, b) CB_TEST_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(CB_TEST_CONCAT_(statusor_, __COUNTER__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  ASSERT_TRUE(statusor.ok()) << statusor.status();      \
  lhs = std::move(statusor).value()

#endif  // CASEBRIDGE_TESTS_TESTING_STATUS_MATCHERS_H_
