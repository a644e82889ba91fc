/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Task output to journald: one sd_journal_sendv() per line with the task's fields given
 * explicitly (no attribution by PID, so no race with a finished container). The fixed
 * fields are formatted once per task; the MESSAGE field is built in a buffer reused
 * from line to line, so sending allocates nothing in the common path. MESSAGE is
 * passed as one "MESSAGE=" + bytes iovec: sd_journal_sendv() takes lengths, not C
 * strings, so NUL bytes and non-UTF-8 data arrive intact (it switches to the binary
 * field encoding by itself when a value contains '\n'). */

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <systemd/sd-journal.h>

#include "journal.h"

/* iovec slots: MESSAGE, PRIORITY, LAGOON_STREAM, then the fixed fields. */
enum {
        SLOT_MESSAGE,
        SLOT_PRIORITY,
        SLOT_STREAM,
        _SLOT_FIXED,
};
#define N_FIXED_MAX 8

/* journald pushing back: a few short retries, then give up on the line (the task log
 * still has it). While it keeps failing we do not sleep again for every line, or a
 * chatty task would stall the whole event loop. */
#define SEND_RETRIES 5
#define SEND_RETRY_SLEEP_USEC (2 * USEC_PER_MSEC)
#define IN_SET_PUSHBACK(r) ((r) == -EAGAIN || (r) == -ENOBUFS)

struct JournalContext {
        char *fixed[N_FIXED_MAX];
        struct iovec iov[_SLOT_FIXED + N_FIXED_MAX];
        size_t n_iov;

        char *msg; /* "MESSAGE=" + line */
        size_t msg_alloc;
        bool congested;
};

static const char MESSAGE_PREFIX[] = "MESSAGE=";
#define MESSAGE_PREFIX_LEN (sizeof(MESSAGE_PREFIX) - 1)

JournalContext *journal_context_free(JournalContext *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < N_FIXED_MAX; i++)
                free(c->fixed[i]);
        free(c->msg);
        return mfree(c);
}

static int add_fixed(JournalContext *c, size_t *n, const char *field, const char *value) {
        char *s;

        if (!value)
                return 0; /* NULL fields are left out */
        if (*n >= N_FIXED_MAX)
                return -E2BIG;

        size_t fl = strlen(field), vl = strlen(value);
        s = malloc(fl + 1 + vl + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, field, fl);
        s[fl] = '=';
        memcpy(s + fl + 1, value, vl + 1);

        c->fixed[*n] = s;
        c->iov[_SLOT_FIXED + *n] = (struct iovec){.iov_base = s, .iov_len = fl + 1 + vl};
        (*n)++;
        return 0;
}

int journal_context_new(const Task *t, JournalContext **ret) {
        _cleanup_(journal_context_freep) JournalContext *c = NULL;
        size_t n = 0;
        int r;

        if (!t || !ret)
                return -EINVAL;

        c = calloc(1, sizeof(JournalContext));
        if (!c)
                return -ENOMEM;

        const struct {
                const char *field;
                const char *value;
        } fields[] = {
                {"SYSLOG_IDENTIFIER", "lagoon-task"},   {"LAGOON_TASK_ID", t->id},
                {"LAGOON_TASK_NAME", t->name},          {"LAGOON_PROJECT", t->project},
                {"LAGOON_ENVIRONMENT", t->environment}, {"LAGOON_NAMESPACE", t->namespace},
                {"LAGOON_SERVICE", t->service},
        };
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                r = add_fixed(c, &n, fields[i].field, fields[i].value);
                if (r < 0)
                        return r;
        }
        c->n_iov = _SLOT_FIXED + n;

        *ret = TAKE_PTR(c);
        return 0;
}

int journal_send_line(JournalContext *c, const char *line, size_t len, bool is_stderr) {
        int r;

        if (!c || (!line && len > 0))
                return -EINVAL;

        if (MESSAGE_PREFIX_LEN + len > c->msg_alloc) {
                size_t n = MAX(MESSAGE_PREFIX_LEN + len, MAX(c->msg_alloc * 2, (size_t) 4096));
                char *m = realloc(c->msg, n);
                if (!m)
                        return -ENOMEM;
                c->msg = m;
                c->msg_alloc = n;
        }
        memcpy(c->msg, MESSAGE_PREFIX, MESSAGE_PREFIX_LEN);
        if (len > 0)
                memcpy(c->msg + MESSAGE_PREFIX_LEN, line, len);

        c->iov[SLOT_MESSAGE] = (struct iovec){.iov_base = c->msg, .iov_len = MESSAGE_PREFIX_LEN + len};
        c->iov[SLOT_PRIORITY] = is_stderr ? (struct iovec){.iov_base = (char *) "PRIORITY=4", .iov_len = 10}
                                          : (struct iovec){.iov_base = (char *) "PRIORITY=6", .iov_len = 10};
        c->iov[SLOT_STREAM] = is_stderr ? (struct iovec){.iov_base = (char *) "LAGOON_STREAM=stderr", .iov_len = 20}
                                        : (struct iovec){.iov_base = (char *) "LAGOON_STREAM=stdout", .iov_len = 20};

        for (unsigned attempt = 0;; attempt++) {
                r = sd_journal_sendv(c->iov, (int) c->n_iov);
                if (r >= 0) {
                        c->congested = false;
                        return r;
                }
                if (!IN_SET_PUSHBACK(r) || c->congested || attempt >= SEND_RETRIES)
                        break;

                struct timespec ts = {
                        .tv_sec = 0,
                        .tv_nsec = (long) ((SEND_RETRY_SLEEP_USEC << attempt) * NSEC_PER_USEC),
                };
                (void) nanosleep(&ts, NULL);
        }

        if (IN_SET_PUSHBACK(r))
                c->congested = true;
        return r;
}
