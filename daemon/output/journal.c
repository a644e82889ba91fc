/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Task output to journald: one sd_journal_sendv() per line with the task's fields given
 * explicitly (no attribution by PID, so no race with a finished container). The fixed
 * fields are formatted once per task; the MESSAGE field is built in a buffer reused
 * from line to line, so sending allocates nothing in the common path. MESSAGE is
 * passed as one "MESSAGE=" + bytes iovec: sd_journal_sendv() takes lengths, not C
 * strings, so NUL bytes and non-UTF-8 data arrive intact (it switches to the binary
 * field encoding by itself when a value contains '\n'). LAGOON_LINE is formatted into a
 * fixed buffer of the context.
 *
 * Lines are not sent one datagram each: journald's native protocol takes several
 * entries in one datagram, separated by an empty line, and its cost per datagram
 * (receive, credentials, parse set-up: measured ~7 us of journald CPU of the ~20 us an
 * entry took) is then paid once per batch, which brings journald's CPU per line to that
 * of systemd-cat's stream transport. journal_send_line() appends the entry to the
 * context's datagram; journal_flush() (or a full datagram) sends it. A datagram is
 * taken or refused whole, so entries still reach journald in order and a kill leaves
 * journald with a prefix of the lines. Entries too big for a datagram go alone through
 * sd_journal_sendv(), which passes them in a memfd.
 *
 * journal_last_line() is the read side, used once per task when the daemon resumes
 * following it: a marker entry sent through the native socket and read back proves
 * that journald has written every datagram queued before it (a killed daemon may have
 * left some), then the task's last entry gives the highest LAGOON_LINE. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-id128.h>
#include <systemd/sd-journal.h>

#include "journal.h"

/* iovec slots: MESSAGE, PRIORITY, LAGOON_STREAM, LAGOON_LINE, then the fixed fields. */
enum {
        SLOT_MESSAGE,
        SLOT_PRIORITY,
        SLOT_STREAM,
        SLOT_LINE,
        _SLOT_FIXED,
};
#define N_FIXED_MAX 8

/* journald pushing back: a few short retries, then give up on the line (the task log
 * still has it). While it keeps failing we do not sleep again for every line, or a
 * chatty task would stall the whole event loop. */
#define SEND_RETRIES 5
#define SEND_RETRY_SLEEP_USEC (2 * USEC_PER_MSEC)
#define IN_SET_PUSHBACK(r) ((r) == -EAGAIN || (r) == -ENOBUFS)

/* A datagram is sent once it holds this much; well below the default socket send buffer
 * (208 KiB), so it never needs the raised one. Entries above DIRECT_MIN go alone. */
#define DGRAM_FLUSH ((size_t) 64U * 1024U)
#define DIRECT_MIN ((size_t) 16U * 1024U)
#define SNDBUF_SIZE (8 * 1024 * 1024)
/* At most this many entries of a datagram in a row lack LAGOON_LINE. */
#define LINE_EVERY 256U

struct JournalContext {
        char *fixed[N_FIXED_MAX];
        struct iovec iov[_SLOT_FIXED + N_FIXED_MAX];
        size_t n_iov;

        char *msg; /* "MESSAGE=" + line */
        size_t msg_alloc;
        char line_field[sizeof("LAGOON_LINE=") + 20]; /* room for UINT64_MAX */
        bool congested;

        char *dgram; /* entries in the native protocol, each ended by an empty line */
        size_t dgram_len;
        size_t dgram_alloc;
        size_t dgram_entries; /* entries in dgram */
};

static journal_sendv_func_t sendv_hook;
static journal_last_line_func_t last_line_hook;

void journal_set_test_hooks(journal_sendv_func_t sendv, journal_last_line_func_t last_line) {
        sendv_hook = sendv;
        last_line_hook = last_line;
}

static void append_field(JournalContext *c, const char *f, size_t len);
static int send_retrying(JournalContext *c, const char *p, size_t len, int prev);

static const char MESSAGE_PREFIX[] = "MESSAGE=";
#define MESSAGE_PREFIX_LEN (sizeof(MESSAGE_PREFIX) - 1)

JournalContext *journal_context_free(JournalContext *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < N_FIXED_MAX; i++)
                free(c->fixed[i]);
        free(c->msg);
        free(c->dgram);
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

/* "LAGOON_LINE=<n>" into c->line_field without printf: this runs for every line. */
static size_t format_line_field(JournalContext *c, uint64_t n) {
        static const char prefix[] = "LAGOON_LINE=";
        char digits[20];
        size_t k = 0;

        do {
                digits[k++] = (char) ('0' + n % 10);
                n /= 10;
        } while (n > 0);

        memcpy(c->line_field, prefix, sizeof(prefix) - 1);
        for (size_t i = 0; i < k; i++)
                c->line_field[sizeof(prefix) - 1 + i] = digits[k - 1 - i];
        return sizeof(prefix) - 1 + k;
}

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/* Sends journald refused (after retries; an entry or a batch of them), for the metrics;
 * one loop, no lock. */
static uint64_t n_send_failures = 0;

int journal_send_line(JournalContext *c, uint64_t line_no, const char *line, size_t len, bool is_stderr) {
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
        c->iov[SLOT_LINE] = (struct iovec){.iov_base = c->line_field, .iov_len = format_line_field(c, line_no)};

        if (sendv_hook)
                return sendv_hook(c->iov, (int) c->n_iov);

        size_t need = 0;
        for (size_t i = 0; i < c->n_iov; i++)
                need += c->iov[i].iov_len + 1 + 8 + 1; /* worst case: binary encoding */
        if (need > DIRECT_MIN) {
                r = journal_flush(c);
                return send_retrying(c, NULL, 0, r);
        }

        if (c->dgram_len + need + 1 > c->dgram_alloc) {
                size_t n = MAX(c->dgram_len + need + 1, DGRAM_FLUSH + DIRECT_MIN);
                char *d = realloc(c->dgram, n);
                if (!d)
                        return -ENOMEM;
                c->dgram = d;
                c->dgram_alloc = n;
        }
        /* LAGOON_LINE only on the first entry of a datagram and every LINE_EVERY-th after
         * it: a value unique to each line cost journald a data object per line, 2.2 of
         * the 9.7 us of journald CPU an entry took. A datagram is stored whole or not
         * at all, in order, so every entry's number is the last LAGOON_LINE before it
         * plus the entries in between (journal_last_line() counts them). */
        bool with_line = c->dgram_entries % LINE_EVERY == 0;
        for (size_t i = 0; i < c->n_iov; i++)
                if (i != SLOT_LINE || with_line)
                        append_field(c, c->iov[i].iov_base, c->iov[i].iov_len);
        c->dgram[c->dgram_len++] = '\n'; /* end of entry */
        c->dgram_entries++;

        if (c->dgram_len >= DGRAM_FLUSH)
                return journal_flush(c);
        return 0;
}

/* "NAME=value\n", or, when the value holds a newline, "NAME\n" + le64 length + value + "\n". */
static void append_field(JournalContext *c, const char *f, size_t len) {
        const char *eq = memchr(f, '=', len);
        size_t nl = eq ? (size_t) (eq - f) : len;
        char *d = c->dgram + c->dgram_len;

        if (!eq || !memchr(eq + 1, '\n', len - nl - 1)) {
                memcpy(d, f, len);
                d[len] = '\n';
                c->dgram_len += len + 1;
                return;
        }

        uint64_t vl = len - nl - 1;
        memcpy(d, f, nl);
        d[nl] = '\n';
        for (unsigned i = 0; i < 8; i++)
                d[nl + 1 + i] = (char) ((vl >> (8 * i)) & 0xff);
        memcpy(d + nl + 9, eq + 1, vl);
        d[nl + 9 + vl] = '\n';
        c->dgram_len += nl + 9 + vl + 1;
}

static int journal_socket(void) {
        static int fd = -EBADF;

        if (fd >= 0)
                return fd;
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* As sd-journal does: a large buffer rides out short stalls of journald. */
        int v = SNDBUF_SIZE;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0)
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
        return fd;
}

static int send_dgram(const char *p, size_t len) {
        static const struct sockaddr_un sa = {
                .sun_family = AF_UNIX,
                .sun_path = JOURNAL_SOCKET,
        };
        int fd = journal_socket();

        if (fd < 0)
                return fd;
        for (;;) {
                if (sendto(fd, p, len, MSG_NOSIGNAL, (const struct sockaddr *) &sa, sizeof(sa)) >= 0)
                        return 0;
                if (errno == EINTR)
                        continue;
                /* No journald: dropped, as sd_journal_sendv() does. */
                if (errno == ENOENT || errno == ECONNREFUSED)
                        return 0;
                return -errno;
        }
}

/* Sends the datagram (p != NULL) or, with p NULL, the context's single entry through
 * sd_journal_sendv(); retries pushback as described in journal.h. prev: an earlier error
 * to return if this send succeeds. */
static int send_retrying(JournalContext *c, const char *p, size_t len, int prev) {
        int r;

        for (unsigned attempt = 0;; attempt++) {
                r = p ? send_dgram(p, len) : sd_journal_sendv(c->iov, (int) c->n_iov);
                if (r >= 0) {
                        c->congested = false;
                        return prev < 0 ? prev : r;
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
        n_send_failures++;
        return r;
}

int journal_flush(JournalContext *c) {
        size_t len;

        if (!c || c->dgram_len == 0)
                return 0;
        /* Emptied whatever happens: a datagram is sent once, never again after a failure. */
        len = c->dgram_len;
        c->dgram_len = 0;
        c->dgram_entries = 0;
        return send_retrying(c, c->dgram, len, 0);
}

uint64_t journal_send_failures(void) {
        return n_send_failures;
}

bool journal_reachable(void) {
        static const struct sockaddr_un sa = {
                .sun_family = AF_UNIX,
                .sun_path = JOURNAL_SOCKET,
        };
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        return fd >= 0 && connect(fd, (const struct sockaddr *) &sa, sizeof(sa)) >= 0;
}

/* sd_journal_wait() wakes on inotify, but journald signals appends only every few
 * hundred ms: poll in between. */
#define MARKER_POLL_USEC (20 * USEC_PER_MSEC)
#define DEGRADED_TIMEOUT_USEC (1 * USEC_PER_SEC)
/* Entries of the task without LAGOON_LINE looked past: more than a datagram has in a
 * row (LINE_EVERY). */
#define LOOKBACK_MAX (4U * LINE_EVERY)

static bool journald_unresponsive;

static char *field(const char *name, const char *value) {
        char *s = NULL;

        if (asprintf(&s, "%s=%s", name, value) < 0)
                return NULL;
        return s;
}

static int send_marker(const char *task_id, const char *marker) {
        _cleanup_free_ char *message = NULL, *resume = NULL, *mark = NULL;

        if (asprintf(&message, "MESSAGE=lagoon-taskd: resuming output of task %s", task_id) < 0)
                return -ENOMEM;
        resume = field("LAGOON_TASK_ID_RESUME", task_id);
        mark = field("LAGOON_RESUME_MARKER", marker);
        if (!resume || !mark)
                return -ENOMEM;

        struct iovec iov[] = {
                {.iov_base = message, .iov_len = strlen(message)},
                {.iov_base = (char *) "PRIORITY=6", .iov_len = strlen("PRIORITY=6")},
                {.iov_base = (char *) "SYSLOG_IDENTIFIER=lagoon-taskd",
                 .iov_len = strlen("SYSLOG_IDENTIFIER=lagoon-taskd")},
                {.iov_base = resume, .iov_len = strlen(resume)},
                {.iov_base = mark, .iov_len = strlen(mark)},
        };
        return sd_journal_sendv(iov, (int) ELEMENTSOF(iov));
}

/* Waits until the entry with LAGOON_RESUME_MARKER=marker is readable. */
static int wait_for_marker(sd_journal *j, const char *marker, uint64_t timeout_usec) {
        _cleanup_free_ char *match = NULL;
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + timeout_usec;
        int r;

        match = field("LAGOON_RESUME_MARKER", marker);
        if (!match)
                return -ENOMEM;
        r = sd_journal_add_match(j, match, 0);
        if (r < 0)
                return r;

        for (;;) {
                /* The match is unique: at most one entry, found through the field's hash. */
                r = sd_journal_seek_head(j);
                if (r < 0)
                        return r;
                r = sd_journal_next(j);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 0;

                uint64_t now = now_usec(CLOCK_MONOTONIC);
                if (now >= deadline)
                        return -ETIMEDOUT;
                r = sd_journal_wait(j, MIN(deadline - now, MARKER_POLL_USEC));
                if (r < 0)
                        return r;
        }
}

static bool parse_line_field(const void *data, size_t len, uint64_t *ret) {
        static const char prefix[] = "LAGOON_LINE=";
        const char *p = data;
        uint64_t n = 0;

        if (len <= sizeof(prefix) - 1 || memcmp(p, prefix, sizeof(prefix) - 1) != 0)
                return false;
        for (size_t i = sizeof(prefix) - 1; i < len; i++) {
                if (p[i] < '0' || p[i] > '9' || n > (UINT64_MAX - 9) / 10)
                        return false;
                n = n * 10 + (uint64_t) (p[i] - '0');
        }
        *ret = n;
        return true;
}

/* The number of the task's last line in journald: the LAGOON_LINE of its last entry that
 * has one plus the entries after it, 0 if there is none. */
static int read_last_line(sd_journal *j, const char *task_id, uint64_t *ret) {
        _cleanup_free_ char *match = NULL;
        int r;

        match = field("LAGOON_TASK_ID", task_id);
        if (!match)
                return -ENOMEM;

        sd_journal_flush_matches(j);
        /* Two fields: AND. Leaves out anything else that might carry the task's id. */
        r = sd_journal_add_match(j, match, 0);
        if (r < 0)
                return r;
        r = sd_journal_add_match(j, "SYSLOG_IDENTIFIER=lagoon-task", 0);
        if (r < 0)
                return r;
        r = sd_journal_seek_tail(j);
        if (r < 0)
                return r;

        for (unsigned i = 0; i < LOOKBACK_MAX; i++) {
                const void *data;
                size_t len;
                uint64_t n;

                r = sd_journal_previous(j);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;

                r = sd_journal_get_data(j, "LAGOON_LINE", &data, &len);
                if (r == -ENOENT)
                        continue;
                if (r < 0)
                        return r;
                if (parse_line_field(data, len, &n)) {
                        *ret = n + i;
                        return 0;
                }
        }

        *ret = 0;
        return 0;
}

int journal_last_line(const char *task_id, uint64_t timeout_usec, uint64_t *ret_line) {
        _cleanup_(sd_journal_closep) sd_journal *j = NULL;
        char marker[SD_ID128_STRING_MAX];
        sd_id128_t id;
        uint64_t n = 0;
        int r;

        if (!task_id || !ret_line)
                return -EINVAL;
        if (last_line_hook)
                return last_line_hook(task_id, timeout_usec, ret_line);

        if (access(JOURNAL_SOCKET, F_OK) < 0)
                return errno == ENOENT ? -ENOTCONN : -errno;

        /* Opened before the marker is sent, so the directory watches cover its write. */
        r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0)
                return r;

        r = sd_id128_randomize(&id);
        if (r < 0)
                return r;
        sd_id128_to_string(id, marker);

        r = send_marker(task_id, marker);
        if (r < 0)
                return r == -ENOENT ? -ENOTCONN : r;

        if (journald_unresponsive)
                timeout_usec = MIN(timeout_usec, DEGRADED_TIMEOUT_USEC);
        r = wait_for_marker(j, marker, timeout_usec);
        if (r == -ETIMEDOUT)
                journald_unresponsive = true;
        if (r < 0)
                return r;
        journald_unresponsive = false;

        r = read_last_line(j, task_id, &n);
        if (r < 0)
                return r;

        *ret_line = n;
        return 0;
}
