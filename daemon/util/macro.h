/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Cleanup attributes and small helpers in the style of systemd's macro.h.
 * libsystemd does not export these, so the project keeps its own copy. */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define _noreturn_ __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define USEC_PER_SEC ((uint64_t) 1000000ULL)
#define USEC_PER_MSEC ((uint64_t) 1000ULL)
#define NSEC_PER_USEC ((uint64_t) 1000ULL)
#define USEC_INFINITY ((uint64_t) UINT64_MAX)

#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define CLAMP(x, lo, hi) MIN(MAX((x), (lo)), (hi))

static inline uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        (void) clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* Take ownership of a pointer or fd: the variable is reset so its cleanup does nothing. */
#define TAKE_PTR(p) \
        ({ \
                typeof(p) *_pp_ = &(p); \
                typeof(p) _p_ = *_pp_; \
                *_pp_ = NULL; \
                _p_; \
        })
#define TAKE_FD(fd) \
        ({ \
                int *_fdp_ = &(fd); \
                int _fd_ = *_fdp_; \
                *_fdp_ = -EBADF; \
                _fd_; \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void *memdup(const void *p, size_t n) {
        void *q = malloc(n ?: 1);
        if (q && n > 0)
                memcpy(q, p, n);
        return q;
}

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -EBADF;
}
static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* NULL-terminated string vectors. */
char **strv_free(char **l);
static inline void strv_freep(char ***l) {
        strv_free(*l);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)
size_t strv_length(char *const *l);
int strv_push(char ***l, char *value);         /* takes ownership of value, also on failure */
int strv_extend(char ***l, const char *value); /* copies value */
char **strv_copy(char *const *l);
bool strv_contains(char *const *l, const char *s);

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func) \
        static inline void func##p(type *p) { \
                if (*p) \
                        *p = func(*p); \
        }

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}
static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
static inline const char *strempty(const char *s) {
        return s ?: "";
}
static inline const char *strna(const char *s) {
        return s ?: "n/a";
}
static inline bool isempty(const char *s) {
        return !s || !s[0];
}
/* Returns the rest of s after prefix, or NULL. */
static inline const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);
        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}
static inline const char *endswith(const char *s, const char *suffix) {
        size_t sl = strlen(s), l = strlen(suffix);
        return sl >= l && memcmp(s + sl - l, suffix, l) == 0 ? s + sl - l : NULL;
}

/* For functions that explain a failure to their caller: formats a message into
 * *ret_error (freeing what it held; nothing when ret_error is NULL) and returns
 * error (a negative errno), or -ENOMEM when the message cannot be made. */
int error_message(char **ret_error, int error, const char *format, ...) _printf_(3, 4);

/* Replace *p with a copy of s (NULL allowed). Returns 0 or -ENOMEM. */
int free_and_strdup(char **p, const char *s);

#define RET_NERRNO(expr) \
        ({ \
                int _r_ = (expr); \
                _r_ < 0 ? -errno : _r_; \
        })
