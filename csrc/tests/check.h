// Minimal assertion helpers for the host-side tests (no test framework needed): CHECK records a failure with
// its location and keeps going; main() returns report().
#pragma once

#include <cstdio>
#include <functional>
#include <stdexcept>

namespace fastvdm_test {

inline int& failures() {
  static int n = 0;
  return n;
}

inline void fail(const char* file, int line, const char* what) {
  std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
  ++failures();
}

// True if f() throws std::invalid_argument (the launch planners' error for unsupported inputs).
inline bool throws_invalid(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return true;
  }
  return false;
}

inline int report(const char* name) {
  if (failures() == 0) {
    std::printf("%s: all checks passed\n", name);
    return 0;
  }
  std::fprintf(stderr, "%s: %d check(s) failed\n", name, failures());
  return 1;
}

}  // namespace fastvdm_test

#define CHECK(cond)                                                 \
  do {                                                              \
    if (!(cond)) fastvdm_test::fail(__FILE__, __LINE__, #cond);     \
  } while (0)
