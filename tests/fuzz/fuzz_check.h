// What a fuzz target asserts: a property that must hold for every input.
// A failure prints the property and aborts, which libFuzzer and the corpus
// replayer both report as a crash with the input that caused it.
#ifndef CASEBRIDGE_TESTS_FUZZ_FUZZ_CHECK_H_
#define CASEBRIDGE_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition)                                          \
  do {                                                                 \
    if (!(condition)) {                                                \
      std::fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, \
                   __LINE__, #condition);                              \
      std::abort();                                                    \
    }                                                                  \
  } while (false)

#endif  // CASEBRIDGE_TESTS_FUZZ_FUZZ_CHECK_H_
