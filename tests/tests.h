/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Helpers every C test shares: a failed check prints where and aborts the test binary;
 * a growing buffer; whole-file append and read. */

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"

/* A test that started servers defines TEST_FAIL_HOOK() to stop them before it aborts. */
#ifndef TEST_FAIL_HOOK
#define TEST_FAIL_HOOK() \
        do { \
        } while (0)
#endif

#define ASSERT(expr) \
        do { \
                if (!(expr)) { \
                        fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", __FILE__, __LINE__, __func__, #expr); \
                        TEST_FAIL_HOOK(); \
                        abort(); \
                } \
        } while (0)
#define ASSERT_OK(expr) \
        do { \
                long _r_ = (long) (expr); \
                if (_r_ < 0) { \
                        fprintf(stderr, "%s:%d: %s: %s failed: %s\n", __FILE__, __LINE__, __func__, #expr, \
                                strerror((int) -_r_)); \
                        TEST_FAIL_HOOK(); \
                        abort(); \
                } \
        } while (0)
#define ASSERT_EQ(a, b) ASSERT((a) == (b))
#define ASSERT_STREQ(a, b) \
        do { \
                const char *_a_ = (a), *_b_ = (b); \
                if (!_a_ || !_b_ || strcmp(_a_, _b_) != 0) { \
                        fprintf(stderr, "%s:%d: %s: \"%s\" != \"%s\" (%s)\n", __FILE__, __LINE__, __func__, \
                                _a_ ?: "(null)", _b_ ?: "(null)", #a); \
                        TEST_FAIL_HOOK(); \
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

/* A growing byte buffer, always NUL-terminated once anything was added. */
typedef struct Buf {
        char *p;
        size_t len;
        size_t alloc;
} Buf;

static inline void buf_add(Buf *b, const void *data, size_t len) {
        if (b->len + len + 1 > b->alloc) {
                b->alloc = (b->len + len + 1) * 2;
                b->p = realloc(b->p, b->alloc);
                ASSERT(b->p);
        }
        memcpy(b->p + b->len, data, len);
        b->len += len;
        b->p[b->len] = 0;
}

static inline void buf_printf(Buf *b, const char *format, ...) _printf_(2, 3);
static inline void buf_printf(Buf *b, const char *format, ...) {
        va_list ap;
        char *s = NULL;
        int n;

        va_start(ap, format);
        n = vasprintf(&s, format, ap);
        va_end(ap);
        ASSERT(n >= 0);
        buf_add(b, s, (size_t) n);
        free(s);
}

static inline void buf_done(Buf *b) {
        free(b->p);
        *b = (Buf){};
}

/* Appends to a file, creating it. */
static inline void file_append(const char *path, const void *data, size_t len) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

        ASSERT(fd >= 0);
        ASSERT(write(fd, data, len) == (ssize_t) len);
        close(fd);
}

/* A whole file; an empty one is "" (never NULL). */
static inline Buf file_slurp(const char *path) {
        Buf b = {};
        char tmp[65536];
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        ASSERT(fd >= 0);
        for (;;) {
                ssize_t n = read(fd, tmp, sizeof(tmp));
                ASSERT(n >= 0);
                if (n == 0)
                        break;
                buf_add(&b, tmp, (size_t) n);
        }
        close(fd);
        if (!b.p)
                buf_add(&b, "", 0);
        return b;
}

/* Whether a file holds a string; a file that cannot be opened holds nothing. */
static inline bool file_contains(const char *path, const char *needle) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        Buf b;
        bool found;

        if (fd < 0)
                return false;
        close(fd);
        b = file_slurp(path);
        found = strstr(b.p, needle) != NULL;
        buf_done(&b);
        return found;
}

/* Whether anything is mounted at or below dir, for clean-up checks. */
static inline bool mounted_under(const char *dir) {
        return file_contains("/proc/self/mountinfo", dir);
}
