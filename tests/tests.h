/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Helpers every C test shares: a failed check prints where and aborts the test binary;
 * a growing buffer; whole-file append and read; shell commands; the daemon's signal
 * set-up; CRI log records. */

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

/* vasprintf() and asprintf() that cannot fail (the test aborts). */
static inline char *strfv(const char *format, va_list ap) _printf_(1, 0);
static inline char *strfv(const char *format, va_list ap) {
        char *s = NULL;

        ASSERT(vasprintf(&s, format, ap) >= 0);
        return s;
}

static inline char *strf(const char *format, ...) _printf_(1, 2);
static inline char *strf(const char *format, ...) {
        va_list ap;
        char *s;

        va_start(ap, format);
        s = strfv(format, ap);
        va_end(ap);
        return s;
}

/* Runs a shell command made from format; its exit status, 255 when it did not exit. */
static inline int shell(const char *format, ...) _printf_(1, 2);
static inline int shell(const char *format, ...) {
        va_list ap;
        char *cmd;
        int r;

        va_start(ap, format);
        cmd = strfv(format, ap);
        va_end(ap);
        r = system(cmd);
        free(cmd);
        return WIFEXITED(r) ? WEXITSTATUS(r) : 255;
}

/* As in the daemon: the signals sd-event handles blocked, SIGPIPE ignored, so a test sees
 * what its children would inherit. */
static inline void signals_as_daemon(void) {
        sigset_t ss;

        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGCHLD);
        ASSERT(sigprocmask(SIG_BLOCK, &ss, NULL) == 0);
        signal(SIGPIPE, SIG_IGN);
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
        char *s;

        va_start(ap, format);
        s = strfv(format, ap);
        va_end(ap);
        buf_add(b, s, strlen(s));
        free(s);
}

static inline void buf_done(Buf *b) {
        free(b->p);
        *b = (Buf){};
}

static inline size_t buf_count_lines(const Buf *b) {
        size_t n = 0;

        for (size_t i = 0; i < b->len; i++)
                n += b->p[i] == '\n';
        return n;
}

/* Aborts, showing where they part, unless got holds the bytes of expect. */
static inline void buf_expect_eq(const char *what, const Buf *got, const Buf *expect) {
        size_t i = 0, from;

        if (got->len == expect->len && memcmp(got->p, expect->p, got->len) == 0)
                return;
        while (i < got->len && i < expect->len && got->p[i] == expect->p[i])
                i++;
        from = i > 60 ? i - 60 : 0;
        fprintf(stderr, "%s differs at byte %zu (got %zu bytes, expected %zu)\n got: \"%.*s\"\nwant: \"%.*s\"\n", what,
                i, got->len, expect->len, (int) MIN(got->len - from, (size_t) 160), got->p + from,
                (int) MIN(expect->len - from, (size_t) 160), expect->p + from);
        TEST_FAIL_HOOK();
        abort();
}

/* conmon's CRI log records for lines [from, to) to cri, their text to expect: every 5th
 * line on stderr, every 7th in three P pieces, the others "line N" + tail. */
#define CRI_TS "2026-11-28T00:44:13.123456789+00:00"
static inline void cri_records(Buf *cri, Buf *expect, unsigned from, unsigned to, const char *tail) {
        for (unsigned i = from; i < to; i++) {
                const char *stream = i % 5 == 0 ? "stderr" : "stdout";
                if (i % 7 == 0) {
                        buf_printf(cri, CRI_TS " %s P line %u ", stream, i);
                        buf_printf(cri, "\n" CRI_TS " %s P part two ", stream);
                        buf_printf(cri, "\n" CRI_TS " %s F part three\n", stream);
                        buf_printf(expect, "line %u part two part three\n", i);
                } else {
                        buf_printf(cri, CRI_TS " %s F line %u%s\n", stream, i, tail);
                        buf_printf(expect, "line %u%s\n", i, tail);
                }
        }
}

/* dir/name (the test aborts on OOM). */
static inline char *path_in(const char *dir, const char *name) {
        return strf("%s/%s", dir, name);
}

/* Appends to a file, creating it. */
static inline void file_append(const char *path, const void *data, size_t len) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

        ASSERT(fd >= 0);
        ASSERT(write(fd, data, len) == (ssize_t) len);
        close(fd);
}

static inline void file_append_in(const char *dir, const char *name, const void *data, size_t len) {
        char *p = path_in(dir, name);

        file_append(p, data, len);
        free(p);
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

static inline Buf file_slurp_in(const char *dir, const char *name) {
        char *p = path_in(dir, name);
        Buf b = file_slurp(p);

        free(p);
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
