/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "ctl-journal.h"
#include "macro.h"
#include "parse-util.h"

/* While following: how long one wait for new entries lasts before the API is asked
 * whether the task has ended, and how long stragglers are waited for after it has. */
#define FOLLOW_POLL_USEC (1000 * 1000ULL)
#define FINAL_GRACE_USEC (1000 * 1000ULL)

static int parse_time(const char *s, uint64_t *ret_usec) {
        struct tm tm = {};
        const char *p;
        uint64_t frac = 0, scale = 1000000;
        long offset = 0;
        bool local = false;
        time_t t;

        p = strptime(s, "%Y-%m-%d", &tm);
        if (!p || (*p != 'T' && *p != 't' && *p != ' '))
                return -EINVAL;
        p = strptime(p + 1, "%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                for (; *p >= '0' && *p <= '9'; p++)
                        if (scale > 1) {
                                scale /= 10;
                                frac += (uint64_t) (*p - '0') * scale;
                        }
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                int sign = *p == '-' ? -1 : 1;
                if (!(p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' && p[3] == ':' && p[4] >= '0' &&
                      p[4] <= '9' && p[5] >= '0' && p[5] <= '9'))
                        return -EINVAL;
                int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
                if (hh > 23 || mm > 59)
                        return -EINVAL;
                offset = sign * (hh * 3600L + mm * 60L);
                p += 6;
        } else
                local = true;
        if (*p != '\0')
                return -EINVAL;

        if (local) {
                tm.tm_isdst = -1;
                t = mktime(&tm);
        } else
                t = timegm(&tm) - offset;
        if (t == (time_t) -1 || t < 0)
                return -EINVAL;
        *ret_usec = (uint64_t) t * 1000000ULL + frac;
        return 0;
}

int ctl_journal_parse_since(const char *s, uint64_t now_usec, uint64_t *ret_usec) {
        _cleanup_free_ char *copy = NULL;
        uint64_t d;
        size_t n;

        if (!s || !*s)
                return -EINVAL;
        if (parse_time(s, ret_usec) == 0)
                return 0;

        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        n = strlen(copy);
        if (n > 4 && strcmp(copy + n - 4, " ago") == 0)
                copy[n - 4] = '\0';
        if (parse_duration(copy, &d) < 0 || d == UINT64_MAX || d > now_usec)
                return -EINVAL;
        *ret_usec = now_usec - d;
        return 0;
}

/* Task output lies in the system journal, which only root and the groups journald
 * grants it to (systemd-journal, adm, wheel) may read; others would see nothing. */
static bool may_read_system_journal(void) {
        static const char *const groups[] = {"systemd-journal", "adm", "wheel"};
        gid_t list[256];
        int n;

        if (geteuid() == 0)
                return true;
        n = getgroups((int) ELEMENTSOF(list), list);
        for (size_t g = 0; g < ELEMENTSOF(groups); g++) {
                struct group *gr = getgrnam(groups[g]);
                if (!gr)
                        continue;
                if (getegid() == gr->gr_gid)
                        return true;
                for (int i = 0; i < n; i++)
                        if (list[i] == gr->gr_gid)
                                return true;
        }
        return false;
}

static bool parse_line_number(const void *data, size_t len, uint64_t *ret) {
        static const char prefix[] = "LAGOON_LINE=";
        _cleanup_free_ char *s = NULL;

        if (len <= sizeof(prefix) - 1 || memcmp(data, prefix, sizeof(prefix) - 1) != 0 || len > 64)
                return false;
        s = strndup((const char *) data + sizeof(prefix) - 1, len - (sizeof(prefix) - 1));
        return s && parse_uint64(s, ret) == 0;
}

/* Entries of a task looked past for its last LAGOON_LINE: the daemon sets it on the
 * first entry of every datagram and every 256th after (daemon/output/journal.c). */
#define LOOKBACK_MAX 1024U

/* The number of the line at j's position, from the entry's LAGOON_LINE or, for an entry
 * without one, the last LAGOON_LINE before it plus the entries in between (a datagram is
 * stored whole, in order). prev: the number of the task entry before this one, when the
 * reader just came from there; UINT64_MAX when not known (then the entries before are
 * looked at, and j is put back). 0 when it cannot be told. */
static int entry_line(sd_journal *j, uint64_t prev, uint64_t *ret) {
        _cleanup_free_ char *cursor = NULL;
        const void *data;
        size_t len;
        uint64_t line = 0;
        int r;

        r = sd_journal_get_data(j, "LAGOON_LINE", &data, &len);
        if (r >= 0 && parse_line_number(data, len, &line)) {
                *ret = line;
                return 0;
        }
        if (r < 0 && r != -ENOENT && r != -EBADMSG)
                return r;
        if (prev != UINT64_MAX) {
                *ret = prev + 1;
                return 0;
        }

        r = sd_journal_get_cursor(j, &cursor);
        if (r < 0)
                return r;
        *ret = 0;
        for (unsigned i = 1; i <= LOOKBACK_MAX; i++) {
                r = sd_journal_previous(j);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (sd_journal_get_data(j, "LAGOON_LINE", &data, &len) >= 0 && parse_line_number(data, len, &line)) {
                        *ret = line + i;
                        break;
                }
        }
        r = sd_journal_seek_cursor(j, cursor);
        if (r < 0)
                return r;
        r = sd_journal_next(j);
        return r < 0 ? r : 0;
}

static bool entry_in_stream(sd_journal *j, const CtlJournalQuery *q) {
        const void *data;
        size_t len, n = strlen("LAGOON_STREAM=");

        if (!q->stream)
                return true;
        return sd_journal_get_data(j, "LAGOON_STREAM", &data, &len) >= 0 && len == n + strlen(q->stream) &&
               memcmp((const char *) data + n, q->stream, len - n) == 0;
}

/* Prints the entry at j's position if it is a task line not printed yet. prev: the
 * number of the entry before (see entry_line()), set to this one's. */
static int print_entry(sd_journal *j, const CtlJournalQuery *q, uint64_t *prev, uint64_t *last_line) {
        const void *data;
        size_t len;
        uint64_t line, realtime;
        int r;

        /* Lines are numbered per task: a line journald holds twice (sent again after a
         * daemon restart) is shown once. */
        r = entry_line(j, *prev, &line);
        if (r < 0)
                return r;
        *prev = line == 0 ? UINT64_MAX : line;
        if (line == 0 || (*last_line != UINT64_MAX && line <= *last_line))
                return 0;
        if (!entry_in_stream(j, q))
                return 0;

        r = sd_journal_get_realtime_usec(j, &realtime);
        if (r < 0)
                return r;
        if (realtime < q->since_usec)
                return 0;
        *last_line = line;

        if (q->timestamps) {
                uint64_t ts = realtime;
                char buf[64];
                struct tm tm;
                time_t t;

                r = sd_journal_get_data(j, "_SOURCE_REALTIME_TIMESTAMP", &data, &len);
                if (r >= 0 && len > strlen("_SOURCE_REALTIME_TIMESTAMP=") && len < 64) {
                        _cleanup_free_ char *s = strndup((const char *) data + strlen("_SOURCE_REALTIME_TIMESTAMP="),
                                                         len - strlen("_SOURCE_REALTIME_TIMESTAMP="));
                        uint64_t v;
                        if (s && parse_uint64(s, &v) == 0 && v > 0)
                                ts = v;
                }
                t = (time_t) (ts / 1000000ULL);
                if (!gmtime_r(&t, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
                        return -EINVAL;
                printf("%s.%06" PRIu64 "Z ", buf, (uint64_t) (ts % 1000000));
        }

        r = sd_journal_get_data(j, "MESSAGE", &data, &len);
        if (r == -ENOENT)
                data = "MESSAGE=", len = strlen("MESSAGE=");
        else if (r < 0)
                return r;
        fwrite((const char *) data + strlen("MESSAGE="), 1, len - strlen("MESSAGE="), stdout);
        fputc('\n', stdout);
        return 0;
}

static int print_new(sd_journal *j, const CtlJournalQuery *q, uint64_t *prev, uint64_t *last_line) {
        int r;

        for (;;) {
                r = sd_journal_next(j);
                if (r <= 0)
                        break;
                r = print_entry(j, q, prev, last_line);
                if (r < 0)
                        break;
        }
        if (fflush(stdout) != 0 || ferror(stdout))
                return -errno ?: -EIO;
        return r;
}

/* Places j before the first entry to print: the later of --since and the last N lines. */
static int seek_start(sd_journal *j, const CtlJournalQuery *q) {
        uint64_t n = 0, t;
        int r;

        if (q->tail == UINT64_MAX)
                return q->since_usec > 0 ? sd_journal_seek_realtime_usec(j, q->since_usec) : sd_journal_seek_head(j);

        r = sd_journal_seek_tail(j);
        if (r < 0)
                return r;
        while (n < q->tail) {
                r = sd_journal_previous(j);
                if (r < 0)
                        return r;
                if (r == 0)
                        return sd_journal_seek_head(j);
                if (!entry_in_stream(j, q))
                        continue;
                r = sd_journal_get_realtime_usec(j, &t);
                if (r < 0)
                        return r;
                if (t < q->since_usec)
                        break;
                n++;
        }
        /* The next sd_journal_next() returns the entry after this one. */
        return n == 0 ? sd_journal_seek_tail(j) : sd_journal_previous(j) < 0 ? -EIO : 0;
}

int ctl_journal_print(const CtlJournalQuery *q) {
        _cleanup_(sd_journal_closep) sd_journal *j = NULL;
        _cleanup_free_ char *id_match = NULL;
        uint64_t last_line = UINT64_MAX, prev = UINT64_MAX;
        int r;

        if (!may_read_system_journal()) {
                fprintf(stderr,
                        "%s: cannot read the journal, where --since, --timestamps, --stdout and --stderr take "
                        "the output from: run as root or as a member of group 'systemd-journal' (without them, "
                        "logs prints the task log)\n",
                        program_invocation_short_name);
                return -EACCES;
        }

        r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0) {
                fprintf(stderr, "%s: cannot open the journal: %s\n", program_invocation_short_name, strerror(-r));
                return r;
        }
        if (asprintf(&id_match, "LAGOON_TASK_ID=%s", q->task_id) < 0)
                return -ENOMEM;
        /* Different fields: AND. SYSLOG_IDENTIFIER leaves out the daemon's own entries. The
         * stream is not matched but picked here: entries without LAGOON_LINE are numbered
         * by those before them, of both streams. */
        if ((r = sd_journal_add_match(j, id_match, 0)) < 0 ||
            (r = sd_journal_add_match(j, "SYSLOG_IDENTIFIER=lagoon-task", 0)) < 0)
                goto fail;

        r = seek_start(j, q);
        if (r < 0)
                goto fail;

        r = print_new(j, q, &prev, &last_line);
        if (r < 0)
                goto fail;
        if (!q->is_final)
                return 0;

        for (;;) {
                r = sd_journal_wait(j, FOLLOW_POLL_USEC);
                if (r < 0)
                        goto fail;
                r = print_new(j, q, &prev, &last_line);
                if (r < 0)
                        goto fail;
                r = q->is_final(q->userdata);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
        }

        /* journald may not have stored the last lines when the task is reported ended. */
        r = sd_journal_wait(j, FINAL_GRACE_USEC);
        if (r < 0)
                goto fail;
        r = print_new(j, q, &prev, &last_line);
        if (r < 0)
                goto fail;
        return 0;

fail:
        if (r == -EPIPE)
                return r;
        fprintf(stderr, "%s: cannot read the journal: %s\n", program_invocation_short_name, strerror(-r));
        return r;
}
