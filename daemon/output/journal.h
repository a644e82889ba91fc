/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Sending task output lines to journald with the task's fields (sd_journal_sendv,
 * explicit fields, so no attribution race):
 *   MESSAGE, PRIORITY (6 stdout, 4 stderr), SYSLOG_IDENTIFIER=lagoon-task,
 *   LAGOON_TASK_ID, LAGOON_TASK_NAME, LAGOON_PROJECT, LAGOON_ENVIRONMENT,
 *   LAGOON_NAMESPACE, LAGOON_SERVICE, LAGOON_STREAM (stdout|stderr),
 *   LAGOON_LINE (decimal, 1-based number of the line within the task's output: the
 *   same as its line number in the task log file), only on the first entry of each
 *   datagram and every 256th after it: an entry without it is the line after the entry
 *   before it. Entries of a task are sent in line order.
 * And finding, after a restart, how far journald got with a task (journal_last_line). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "macro.h"
#include "task.h"

typedef struct JournalContext JournalContext;

/* Pre-formats the per-task fields once. */
int journal_context_new(const Task *t, JournalContext **ret);
JournalContext *journal_context_free(JournalContext *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(JournalContext *, journal_context_free);

/* line: len bytes, no trailing newline, may contain NUL bytes and invalid UTF-8 (sent
 * as they are); line_no: its LAGOON_LINE. Returns what sd_journal_sendv returns (0 also
 * when journald is absent). When journald pushes back (-EAGAIN, -ENOBUFS) it retries a
 * few times with short sleeps (at most ~60 ms per line, and not again while journald
 * stays congested), then returns the error; the caller logs it at debug and goes on. */
int journal_send_line(JournalContext *c, uint64_t line_no, const char *line, size_t len, bool is_stderr);

/* journal_send_line() collects entries in one datagram (sent when ~64 KiB are pending,
 * or at once for an entry above 16 KiB, and then its result is what journal_send_line()
 * returns); journal_flush() sends what is pending. Same returns as journal_send_line(). The
 * pending entries are dropped on failure, never sent twice. Call it before anything that
 * relies on journald having the lines (the task log is written after it). */
int journal_flush(JournalContext *c);

/* Sends (an entry or a datagram of several) given up on since the start (metrics). */
uint64_t journal_send_failures(void);
/* Whether journald's socket accepts a connection now (health, the start-up notice). */
bool journal_reachable(void);
/* The highest LAGOON_LINE journald holds for task_id (0 if none), after making sure
 * journald has processed every entry sent before the call, by any process (a daemon
 * killed a moment ago may have left datagrams in journald's socket queue): it sends a
 * marker entry (PRIORITY=6, so MaxLevelStore= rarely hides it, SYSLOG_IDENTIFIER=lagoon-taskd,
 * LAGOON_TASK_ID_RESUME=<id>, LAGOON_RESUME_MARKER=<random>; deliberately without LAGOON_TASK_ID) through the same
 * socket and waits, at most timeout_usec, until it can read it back: journald handles its socket queue in order. Reads
 * the local journal files (SD_JOURNAL_LOCAL_ONLY). Does not log above debug. Errors, for the caller to fall back on:
 * -ENOTCONN journald is not running (no socket), -ETIMEDOUT the marker did not show up in time, other -errno from
 * sd-journal. After one timeout, later calls in the process wait at most 1 s until one succeeds again, so a hung
 * journald does not hold up the daemon's start for every adopted task. */
int journal_last_line(const char *task_id, uint64_t timeout_usec, uint64_t *ret_line);

/* For unit tests only: replace sd_journal_sendv() for task lines and the whole of
 * journal_last_line(). NULL restores the real ones. */
typedef int (*journal_sendv_func_t)(const struct iovec *iov, int n);
typedef int (*journal_last_line_func_t)(const char *task_id, uint64_t timeout_usec, uint64_t *ret_line);
void journal_set_test_hooks(journal_sendv_func_t sendv, journal_last_line_func_t last_line);
