/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Follows a task's CRI log file (written by conmon) on the event loop: inotify plus a
 * slow fallback timer. Joins partial (P) records per stream, masks secrets, and for
 * each complete line: sends it to journald (journal.h) with its 1-based line number as
 * LAGOON_LINE, then appends it (plus '\n') to the task log file (one write() per read
 * pass). So journald is always at or ahead of the task log.
 *
 * Restart-safe, also across kill -9 at any instant: a new LogTail on the same files
 * counts the task log's lines (N) and, when a LogTail ran before (the task log file
 * or its cursor exists), asks journald for the task's highest LAGOON_LINE (J,
 * journal_last_line(): synchronous, normally milliseconds, at most ~10 s). It then
 * skips lines 1..N for the task log and 1..max(J, N) for journald, so no line is lost
 * or doubled in either. Without a journald that answers, J is taken as N (logged at
 * warning when journald runs but does not answer). A cursor file "<task_log>.cursor"
 * (CRI log offset and line count at a line boundary) spares re-reading the CRI log,
 * whose blocks before the cursor are then freed (punched out): the task log is the
 * record, the CRI log's forwarded part is not needed again. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "task.h"

typedef struct LogTail LogTail;

/* Called after a read pass wrote lines to the task log or grew a partial line's view
 * (for streaming followers), and from logtail_finish() if it wrote any. */
typedef void (*logtail_output_cb_t)(LogTail *t, void *userdata);

int logtail_new(sd_event *e,
                const Task *task, /* fields copied for journald */
                const char *cri_log_path,
                const char *task_log_path,
                char *const *secrets, /* NULL-terminated, copied; empty ones ignored */
                logtail_output_cb_t cb,
                void *userdata,
                LogTail **ret);

/* Reads everything the CRI log holds now, emits it, emits a trailing partial line
 * as a line, fsyncs the task log and leaves the cursor at the end (a restart before
 * the task's end is recorded resumes there; the store removes it). Call once the container
 * exited; the LogTail stops watching. A CRI log that never appeared is not an error.
 * On failure (e.g. the task log's disk is full) it may be called again; once it
 * returned 0, further calls do nothing. */
int logtail_finish(LogTail *t);

/* Caps the task log file at max_bytes (0: no cap, the default; call before the loop runs
 * the LogTail): the line that would pass it is replaced by a marker line saying so, and
 * later lines go to journald only. A restart that finds the marker at the end keeps it so. */
void logtail_set_max_bytes(LogTail *t, uint64_t max_bytes);

uint64_t logtail_lines(LogTail *t); /* lines in the task log so far, the marker included */
/* A line a task writes in pieces (a progress bar, printf without '\n') reaches journald
 * and the task log once complete, as one line (or cut at CRI_LOG_LINE_MAX). Followers may
 * show it earlier: the view of a stream's pending line is a prefix of that line as the
 * task log will hold it, secrets masked, holding back a tail that could be the start of
 * a secret. id 0: no pending line (or nothing to show yet); else the text (valid until
 * the loop runs the LogTail again) grows with the same id until the line completes. */
void logtail_partial(LogTail *t, bool is_stderr, uint64_t *ret_id, const char **ret_text, size_t *ret_len);
/* Where in the task log the line whose view had this id begins, once it completed: 0 and
 * the offset (its first bytes are what the view showed); -EAGAIN still pending; -ENOENT
 * unknown, or not in the task log (its cap). Known for the last such line of each stream,
 * that is until the callback after its completion returned. */
int logtail_partial_landed(LogTail *t, uint64_t id, uint64_t *ret_offset);

/* Stops following. Without a preceding logtail_finish() (daemon shutdown) it leaves an
 * up-to-date cursor behind, so the next LogTail resumes without re-reading. */
LogTail *logtail_free(LogTail *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(LogTail *, logtail_free);
