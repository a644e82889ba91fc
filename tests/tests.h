/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Minimal test helpers: a failed check prints where and aborts the test binary. */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "macro.h"

#define ASSERT(expr) \
        do { \
                if (!(expr)) { \
                        fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", __FILE__, __LINE__, __func__, #expr); \
                        abort(); \
                } \
        } while (0)
#define ASSERT_OK(expr) \
        do { \
                long _r_ = (long) (expr); \
                if (_r_ < 0) { \
                        fprintf(stderr, "%s:%d: %s: %s failed: %s\n", __FILE__, __LINE__, __func__, #expr, \
                                strerror((int) -_r_)); \
                        abort(); \
                } \
        } while (0)
#define ASSERT_EQ(a, b) ASSERT((a) == (b))
#define ASSERT_STREQ(a, b) \
        do { \
                const char *_a_ = (a), *_b_ = (b); \
                if (!_a_ || !_b_ || strcmp(_a_, _b_) != 0) { \
                        fprintf(stderr, "%s:%d: %s: \"%s\" != \"%s\"\n", __FILE__, __LINE__, __func__, \
                                _a_ ?: "(null)", _b_ ?: "(null)"); \
                        abort(); \
                } \
        } while (0)
#define TEST(name) static void test_##name(void)
#define RUN(name) \
        do { \
                test_##name(); \
                printf("ok - %s\n", #name); \
        } while (0)

/* asprintf() that cannot fail (the test aborts). */
static inline char *strf(const char *format, ...) _printf_(1, 2);
static inline char *strf(const char *format, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, format);
        ASSERT(vasprintf(&s, format, ap) >= 0);
        va_end(ap);
        return s;
}
