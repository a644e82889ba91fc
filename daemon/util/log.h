/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Logging of the daemon's own messages (not task output, see journal.h).
 * Writes to stderr; when stderr is connected to journald (JOURNAL_STREAM matches)
 * each line carries a "<N>" syslog priority prefix so journald keeps the level.
 * Every log_*_errno() returns -abs(error) so callers can log and return in one
 * statement, and sets errno so "%m" prints the error. */

#include <syslog.h>

#include "macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);
int log_level_from_string(const char *s); /* "debug", "info", …, or -EINVAL */

int log_internal(int level, int error, const char *file, int line, const char *func, const char *format, ...)
        _printf_(6, 7);

#define log_full_errno(level, error, ...) \
        ({ \
                int _level_ = (level), _e_ = (error); \
                _level_ <= log_get_max_level() ? log_internal(_level_, _e_, __FILE__, __LINE__, __func__, __VA_ARGS__) \
                                               : -abs(_e_); \
        })
#define log_full(level, ...) (void) log_full_errno(level, 0, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...) log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
