/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* lagoon-taskctl's reader of task output in journald: the task log served by the API
 * has no per-line time or stream, the journal entries lagoon-taskd writes for every
 * line (daemon/output/journal.c) have both. */

#include <stdbool.h>
#include <stdint.h>

/* --since: "10m", "2h ago" (a duration before now), RFC 3339 ("2026-12-04T22:30:00Z",
 * with fraction and offset) or "YYYY-MM-DD HH:MM:SS" (local time). Returns the realtime
 * in µs, or -EINVAL. now_usec: the realtime "ago" counts from. */
int ctl_journal_parse_since(const char *s, uint64_t now_usec, uint64_t *ret_usec);

/* Whether the task has ended, asked of the API; negative errno when it cannot be told. */
typedef int (*ctl_journal_final_t)(void *userdata);

typedef struct CtlJournalQuery {
        const char *task_id;
        const char *stream;  /* "stdout", "stderr" or NULL for both */
        uint64_t since_usec; /* 0: from the first line */
        uint64_t tail;       /* UINT64_MAX: all lines */
        bool timestamps;
        ctl_journal_final_t is_final; /* non-NULL: follow until it says so */
        void *userdata;
} CtlJournalQuery;

/* Prints the task's lines to stdout. Errors are reported on stderr; returns a negative errno. */
int ctl_journal_print(const CtlJournalQuery *q);
