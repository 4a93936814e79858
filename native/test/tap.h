/* Minimal TAP output for the C tests: ok/not ok lines, a plan at the end, exit status. */
#ifndef OVL_TEST_TAP_H
#define OVL_TEST_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TAP_FN static __attribute__((unused))
static int tap_n, tap_failed;

__attribute__((format(printf, 2, 3))) TAP_FN int tap_ok(int cond, const char *fmt, ...) {
  va_list ap;
  tap_n++;
  printf("%sok %d - ", cond ? "" : "not ", tap_n);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  if (!cond) tap_failed++;
  fflush(stdout);
  return cond;
}

__attribute__((format(printf, 1, 2))) TAP_FN void tap_diag(const char *fmt, ...) {
  va_list ap;
  printf("# ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
}

/* Stops the test at once: for failures after which the rest cannot run meaningfully. */
#define TAP_REQUIRE(cond, ...)                    \
  do {                                            \
    if (!tap_ok((cond), __VA_ARGS__)) {           \
      printf("Bail out! requirement failed\n");   \
      exit(1);                                    \
    }                                             \
  } while (0)

/* Like TAP_REQUIRE, but silent when it holds: for setup steps and checks inside loops. */
#define TAP_ASSERT(cond, ...)                     \
  do {                                            \
    if (!(cond)) {                                \
      tap_ok(0, __VA_ARGS__);                     \
      printf("Bail out! assertion failed\n");     \
      exit(1);                                    \
    }                                             \
  } while (0)

/* Prints the plan and returns the exit status for main(). */
TAP_FN int tap_done(void) {
  printf("1..%d\n", tap_n);
  if (tap_failed) printf("# FAILED %d of %d\n", tap_failed, tap_n);
  else printf("# all %d passed\n", tap_n);
  return tap_failed ? 1 : 0;
}

TAP_FN double now_sec(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) abort();
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
