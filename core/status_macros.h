// Early-return helpers for absl::Status and absl::StatusOr. The Abseil on
// Debian 12 (20220623) ships none.
#ifndef CASEBRIDGE_CORE_STATUS_MACROS_H_
#define CASEBRIDGE_CORE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CB_STATUS_CONCAT_INNER_(a, b) a##b
#define CB_STATUS_CONCAT_(a, b) CB_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define CB_RETURN_IF_ERROR(expr) \
  CB_RETURN_IF_ERROR_IMPL_(CB_STATUS_CONCAT_(cb_status_, __COUNTER__), expr)

#define CB_RETURN_IF_ERROR_IMPL_(status, expr) \
  do {                                         \
    ::absl::Status status = (expr);            \
    if (!status.ok()) return status;           \
  } while (false)

// `lhs = value of expr`, or returns its status from the enclosing function.
// `lhs` may declare a variable: CB_ASSIGN_OR_RETURN(auto x, MakeX());
// NOLINTNEXTLINE(bugprone-macro-parentheses): lhs may be a declaration.
#define CB_ASSIGN_OR_RETURN(lhs, expr)                                         \
  CB_ASSIGN_OR_RETURN_IMPL_(CB_STATUS_CONCAT_(cb_statusor_, __COUNTER__), lhs, \
                            expr)

// NOLINTNEXTLINE(bugprone-macro-parentheses): lhs may be a declaration.
#define CB_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)     \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // CASEBRIDGE_CORE_STATUS_MACROS_H_
