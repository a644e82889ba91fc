/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Sending task output lines to journald with the task's fields (sd_journal_sendv,
 * explicit fields, so no attribution race):
 *   MESSAGE, PRIORITY (6 stdout, 4 stderr), SYSLOG_IDENTIFIER=lagoon-task,
 *   LAGOON_TASK_ID, LAGOON_TASK_NAME, LAGOON_PROJECT, LAGOON_ENVIRONMENT,
 *   LAGOON_NAMESPACE, LAGOON_SERVICE, LAGOON_STREAM (stdout|stderr). */

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"
#include "task.h"

typedef struct JournalContext JournalContext;

/* Pre-formats the per-task fields once. */
int journal_context_new(const Task *t, JournalContext **ret);
JournalContext *journal_context_free(JournalContext *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(JournalContext *, journal_context_free);

/* line: len bytes, no trailing newline, may contain NUL bytes and invalid UTF-8 (sent
 * as they are). Returns what sd_journal_sendv returns (0 also when journald is absent).
 * When journald pushes back (-EAGAIN, -ENOBUFS) it retries a few times with short
 * sleeps (at most ~60 ms per line, and not again while journald stays congested),
 * then returns the error; the caller logs it at debug and goes on. */
int journal_send_line(JournalContext *c, const char *line, size_t len, bool is_stderr);
