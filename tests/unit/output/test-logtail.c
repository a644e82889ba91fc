/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests for following a CRI log into the task log and journald (logtail.h): a file
 * that appears late, records split across writes, P pieces joined per stream, secrets
 * masked, malformed records kept, finish; restart from the cursor, from a stale,
 * missing or corrupt cursor and from a torn task log, each time with every line exactly
 * once; restart with journald behind, level with or ahead of the task log (per-sink
 * skipping); kill -9 of a LogTail at random instants, with a fake journald in a file;
 * and a 200 000-record run to see that it is fast.
 *
 * journald is not running here. The journald side is checked through the test hooks of
 * journal.h: the lines a LogTail sends are captured (with their LAGOON_LINE) instead
 * of going to sd_journal_sendv(), and journal_last_line() is faked where a test needs a
 * journald that is ahead; elsewhere the real one runs and, finding no journald, makes
 * the LogTail fall back to the task log's count. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs-util.h"
#include "journal.h"
#include "logtail.h"
#include "tests.h"

#define TS CRI_TS

static char dir[] = "/tmp/test-logtail-XXXXXX";
static Task task = {
        .id = (char *) "task-1",
        .name = (char *) "lagoon-task-abc",
        .project = (char *) "proj",
        .environment = (char *) "main",
        .namespace = (char *) "proj-main",
        .service = NULL, /* omitted from the journal fields */
};
static char *secrets[] = {(char *) "s3cr3t", (char *) "", NULL};

static char *path(const char *name) {
        return path_in(dir, name);
}

static void append(const char *name, const void *data, size_t len) {
        file_append_in(dir, name, data, len);
}

static Buf slurp(const char *name) {
        return file_slurp_in(dir, name);
}

static void appends(const char *name, const char *s) {
        append(name, s, strlen(s));
}

static void put(const char *name, const void *data, size_t len) {
        _cleanup_free_ char *p = path(name);
        (void) unlink(p);
        append(name, data, len);
}

/* A child killed before it created the task log leaves none: that is an empty log. */
static Buf slurp_if_exists(const char *name) {
        _cleanup_free_ char *p = path(name);
        Buf b = {};

        if (access(p, F_OK) < 0 && errno == ENOENT)
                return b;
        return slurp(name);
}

static bool exists(const char *name) {
        _cleanup_free_ char *p = path(name);
        return access(p, F_OK) == 0;
}

static void remove_file(const char *name) {
        _cleanup_free_ char *p = path(name);
        (void) unlink(p);
}

static void expect_file(const char *name, const Buf *expect) {
        Buf got = slurp(name);
        buf_expect_eq(name, &got, expect);
        buf_done(&got);
}

/* The lines of a Buf of '\n'-terminated lines (they may contain NUL bytes). */
typedef struct Lines {
        const char **p;
        size_t *len;
        size_t n;
} Lines;

static Lines split_lines(const Buf *b) {
        Lines l = {};
        size_t alloc = 0;

        for (const char *p = b->p, *e = b->p + b->len; p < e;) {
                const char *nl = memchr(p, '\n', e - p);
                ASSERT(nl);
                if (l.n >= alloc) {
                        alloc = MAX(alloc * 2, (size_t) 64);
                        l.p = realloc(l.p, alloc * sizeof(char *));
                        l.len = realloc(l.len, alloc * sizeof(size_t));
                        ASSERT(l.p && l.len);
                }
                l.p[l.n] = p;
                l.len[l.n] = nl - p;
                l.n++;
                p = nl + 1;
        }
        return l;
}

static void lines_done(Lines *l) {
        free(l->p);
        free(l->len);
        *l = (Lines){};
}

/* journald, as the captured entries of the sendv hook. */
typedef struct Entry {
        uint64_t line_no;
        bool is_stderr;
        char *msg;
        size_t len;
} Entry;

static Entry *entries;
static size_t n_entries, entries_alloc;
static uint64_t entries_last_line; /* with capture_count: the count of lines only */

static void entries_reset(void) {
        for (size_t i = 0; i < n_entries; i++)
                free(entries[i].msg);
        n_entries = 0;
        entries_last_line = 0;
}

static bool iov_field(const struct iovec *v, const char *name, const char **ret, size_t *ret_len) {
        size_t l = strlen(name);

        if (v->iov_len <= l || memcmp(v->iov_base, name, l) != 0 || ((const char *) v->iov_base)[l] != '=')
                return false;
        *ret = (const char *) v->iov_base + l + 1;
        *ret_len = v->iov_len - l - 1;
        return true;
}

static uint64_t parse_u64(const char *p, size_t len) {
        uint64_t n = 0;
        ASSERT(len > 0 && len <= 20);
        for (size_t i = 0; i < len; i++) {
                ASSERT(p[i] >= '0' && p[i] <= '9');
                n = n * 10 + (uint64_t) (p[i] - '0');
        }
        return n;
}

/* Checks the fields of one entry; returns its line number, message and stream. */
static uint64_t parse_entry(const struct iovec *iov, int n, const char **ret_msg, size_t *ret_len, bool *ret_stderr) {
        const char *msg = NULL, *v;
        size_t msg_len = 0, l;
        uint64_t line_no = 0;
        bool have_line = false, have_id = false, have_prio = false, is_stderr = false;

        for (int i = 0; i < n; i++) {
                if (iov_field(iov + i, "MESSAGE", &v, &l)) {
                        msg = v;
                        msg_len = l;
                } else if (iov_field(iov + i, "LAGOON_LINE", &v, &l)) {
                        line_no = parse_u64(v, l);
                        have_line = true;
                } else if (iov_field(iov + i, "LAGOON_TASK_ID", &v, &l)) {
                        ASSERT(l == strlen(task.id) && memcmp(v, task.id, l) == 0);
                        have_id = true;
                } else if (iov_field(iov + i, "PRIORITY", &v, &l)) {
                        ASSERT(l == 1 && (v[0] == '4' || v[0] == '6'));
                        is_stderr = v[0] == '4';
                        have_prio = true;
                } else if (iov_field(iov + i, "LAGOON_STREAM", &v, &l))
                        ASSERT(l == 6 && memcmp(v, is_stderr ? "stderr" : "stdout", 6) == 0);
        }
        ASSERT(msg && have_line && have_id && have_prio && line_no > 0);
        *ret_msg = msg;
        *ret_len = msg_len;
        *ret_stderr = is_stderr;
        return line_no;
}

static int capture_sendv(const struct iovec *iov, int n) {
        const char *msg;
        size_t len;
        bool is_stderr;
        uint64_t line_no = parse_entry(iov, n, &msg, &len, &is_stderr);

        if (n_entries >= entries_alloc) {
                entries_alloc = MAX(entries_alloc * 2, (size_t) 1024);
                entries = realloc(entries, entries_alloc * sizeof(Entry));
                ASSERT(entries);
        }
        entries[n_entries] = (Entry){.line_no = line_no, .is_stderr = is_stderr, .msg = malloc(len + 1), .len = len};
        ASSERT(entries[n_entries].msg);
        memcpy(entries[n_entries].msg, msg, len);
        n_entries++;
        return 0;
}

/* For the big run: only checks that the numbers go up one by one. */
static int capture_count(const struct iovec *iov, int n) {
        const char *msg;
        size_t len;
        bool is_stderr;
        uint64_t line_no = parse_entry(iov, n, &msg, &len, &is_stderr);

        ASSERT(line_no == entries_last_line + 1);
        entries_last_line = line_no;
        return 0;
}

/* journald holds exactly lines from+1..all of expect, in order, with their numbers. */
static void expect_journal(const Buf *expect, uint64_t from) {
        Lines l = split_lines(expect);

        if (n_entries + from != l.n) {
                fprintf(stderr, "journald has %zu entries, expected %zu (lines %" PRIu64 "..%zu)\n", n_entries,
                        l.n - (size_t) from, from + 1, l.n);
                for (size_t i = 0; i < n_entries && i < 5; i++)
                        fprintf(stderr, "  entry %zu: LAGOON_LINE=%" PRIu64 "\n", i, entries[i].line_no);
                abort();
        }
        for (size_t i = 0; i < n_entries; i++) {
                size_t k = (size_t) from + i;
                if (entries[i].line_no != k + 1 || entries[i].len != l.len[k] ||
                    memcmp(entries[i].msg, l.p[k], l.len[k]) != 0) {
                        fprintf(stderr, "journald entry %zu: LAGOON_LINE=%" PRIu64 " \"%.*s\", expected %zu \"%.*s\"\n",
                                i, entries[i].line_no, (int) MIN(entries[i].len, (size_t) 100), entries[i].msg, k + 1,
                                (int) MIN(l.len[k], (size_t) 100), l.p[k]);
                        abort();
                }
        }
        lines_done(&l);
}

/* journal_last_line() as the test wants it. */
static int fake_result;
static uint64_t fake_line;
static unsigned fake_calls;

static int fake_last_line(const char *task_id, uint64_t timeout_usec, uint64_t *ret) {
        ASSERT(streq(task_id, task.id));
        ASSERT(timeout_usec > 0);
        fake_calls++;
        if (fake_result < 0)
                return fake_result;
        *ret = fake_line;
        return 0;
}

/* Runs the loop until the task log has `lines` lines, then a little longer to see
 * that nothing more comes. */
static void run_until(sd_event *e, LogTail *t, uint64_t lines) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 20 * USEC_PER_SEC;

        while (logtail_lines(t) < lines) {
                if (now_usec(CLOCK_MONOTONIC) >= deadline) {
                        fprintf(stderr, "timeout: expected %" PRIu64 " lines, have %" PRIu64 "\n", lines,
                                logtail_lines(t));
                        abort();
                }
                ASSERT(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
        }
        for (int i = 0; i < 5; i++)
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        if (logtail_lines(t) != lines) {
                fprintf(stderr, "expected %" PRIu64 " lines, have %" PRIu64 "\n", lines, logtail_lines(t));
                abort();
        }
}

static unsigned n_callbacks;
static void on_output(LogTail *t, void *userdata) {
        n_callbacks++;
        ASSERT(userdata == &n_callbacks);
}

static void test_follow(sd_event *e) {
        _cleanup_(logtail_freep) LogTail *t = NULL;
        _cleanup_free_ char *cri = path("follow.log"), *log = path("follow.task.log");
        Buf expect = {};

        entries_reset();
        journal_set_test_hooks(capture_sendv, fake_last_line);
        fake_calls = 0;

        /* The CRI log does not exist yet: the directory watch must pick it up. A new task
         * (no task log yet): journald is not asked. */
        ASSERT(logtail_new(e, &task, cri, log, secrets, on_output, &n_callbacks, &t) == 0);
        ASSERT(fake_calls == 0);
        journal_set_test_hooks(capture_sendv, NULL);
        for (int i = 0; i < 3; i++)
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        ASSERT(logtail_lines(t) == 0);

        appends("follow.log", TS " stdout F hello world\n" TS " stderr F an error\n");
        buf_printf(&expect, "hello world\nan error\n");
        run_until(e, t, 2);
        expect_file("follow.task.log", &expect);
        ASSERT(n_callbacks > 0);
        expect_journal(&expect, 0);
        ASSERT(!entries[0].is_stderr && entries[1].is_stderr);

        /* A record split mid-line across two writes. */
        appends("follow.log", TS " stdout F first ha");
        for (int i = 0; i < 3; i++)
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        ASSERT(logtail_lines(t) == 2);
        appends("follow.log", "lf, second half\n");
        buf_printf(&expect, "first half, second half\n");
        run_until(e, t, 3);
        expect_file("follow.task.log", &expect);

        /* P pieces across writes, stdout and stderr interleaved, each joined on its own. */
        appends("follow.log", TS " stdout P out-1 ");
        appends("follow.log", "\n" TS " stderr P err-1 ");
        appends("follow.log", "\n" TS " stdout P out-2 \n" TS " stderr F err-2\n");
        buf_printf(&expect, "err-1 err-2\n");
        run_until(e, t, 4);
        expect_file("follow.task.log", &expect);
        appends("follow.log", TS " stdout P out-3 with \ttab \n" TS " std");
        appends("follow.log", "out F end\n");
        buf_printf(&expect, "out-1 out-2 out-3 with \ttab end\n");
        run_until(e, t, 5);
        expect_file("follow.task.log", &expect);

        /* Secrets, also across P pieces; empty lines; malformed records kept raw. */
        appends("follow.log", TS " stdout F token=s3cr3t and s3cr3t\n" TS " stderr P half s3c\n" TS
                                 " stderr F r3t done\n" TS " stdout F \n"
                                 "this is not a CRI record\n" TS " stdin F bad stream\n"
                                 "\n" TS " stdout F binary \x01\xff\xfe ok\n");
        buf_printf(&expect,
                   "token=*** and ***\nhalf *** done\n\nthis is not a CRI record\n" TS " stdin F bad stream\n\n"
                   "binary \x01\xff\xfe ok\n");
        run_until(e, t, 12);
        expect_file("follow.task.log", &expect);

        /* NUL bytes in the text are kept. */
        const char nul[] = TS " stdout F a\0b\n";
        append("follow.log", nul, sizeof(nul) - 1);
        buf_add(&expect, "a\0b\n", 4);
        run_until(e, t, 13);
        expect_file("follow.task.log", &expect);

        /* Live: a cursor exists (written at most once a second, the first right away). */
        ASSERT(exists("follow.task.log.cursor"));

        /* finish: a dangling partial line is emitted, the cursor left at the end (the
         * store removes it with the record). */
        appends("follow.log", TS " stderr F last\n" TS " stdout P dangling");
        buf_printf(&expect, "last\ndangling\n");
        unsigned before = n_callbacks;
        ASSERT(logtail_finish(t) == 0);
        ASSERT(logtail_lines(t) == 15);
        ASSERT(n_callbacks > before);
        expect_file("follow.task.log", &expect);
        ASSERT(exists("follow.task.log.cursor"));
        ASSERT(logtail_finish(t) == 0); /* idempotent */

        /* No more following after finish. */
        appends("follow.log", TS " stdout F too late\n");
        for (int i = 0; i < 3; i++)
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        ASSERT(logtail_lines(t) == 15);
        t = logtail_free(t);
        expect_file("follow.task.log", &expect);
        ASSERT(exists("follow.task.log.cursor"));
        /* journald got the same lines, masked the same, numbered 1..15. */
        expect_journal(&expect, 0);
        buf_done(&expect);
}

/* Runs the loop until stream's view is text (or fails after 20 s). */
static void run_until_partial(sd_event *e, LogTail *t, bool is_stderr, const char *text) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 20 * USEC_PER_SEC, id;
        const char *p;
        size_t len;

        for (;;) {
                logtail_partial(t, is_stderr, &id, &p, &len);
                if (len == strlen(text) && memcmp(p, text, len) == 0 && (len == 0 || id != 0))
                        return;
                if (now_usec(CLOCK_MONOTONIC) >= deadline) {
                        fprintf(stderr, "timeout: view is \"%.*s\", expected \"%s\"\n", (int) len, p, text);
                        abort();
                }
                ASSERT(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
        }
}

/* Lines written in pieces: each stream's view grows with its P records, is a prefix of
 * the line as the task log gets it, holds back what could begin a secret, and once the
 * line is complete says where in the task log it begins. */
static void test_partial(sd_event *e) {
        _cleanup_(logtail_freep) LogTail *t = NULL;
        _cleanup_free_ char *cri = path("partial.log"), *log = path("partial.task.log");
        uint64_t id, id2, id_err, offset;
        const char *text;
        size_t len;
        unsigned before;
        Buf expect = {};

        entries_reset();
        journal_set_test_hooks(capture_sendv, NULL);
        appends("partial.log", TS " stdout F first\n");
        ASSERT(logtail_new(e, &task, cri, log, secrets, on_output, &n_callbacks, &t) == 0);
        buf_printf(&expect, "first\n");
        run_until(e, t, 1);
        logtail_partial(t, false, &id, &text, &len);
        ASSERT(id == 0 && len == 0);

        /* A piece: shown at once, with a callback though no line was written. */
        before = n_callbacks;
        appends("partial.log", TS " stdout P progress 10%\n");
        run_until_partial(e, t, false, "progress 10%");
        ASSERT(n_callbacks > before);
        ASSERT(logtail_lines(t) == 1);
        logtail_partial(t, false, &id, &text, &len);
        ASSERT(id != 0);
        ASSERT(logtail_partial_landed(t, id, &offset) == -EAGAIN);
        appends("partial.log", TS " stdout P \r20%\n");
        run_until_partial(e, t, false, "progress 10%\r20%");
        logtail_partial(t, false, &id2, &text, &len);
        ASSERT(id2 == id); /* the same line */

        /* The other stream: its own view; a line of it goes to the task log first. */
        appends("partial.log", TS " stderr P warn\n");
        run_until_partial(e, t, true, "warn");
        logtail_partial(t, true, &id_err, &text, &len);
        ASSERT(id_err != 0 && id_err != id);
        appends("partial.log", TS " stderr F ing\n");
        buf_printf(&expect, "warning\n");
        run_until(e, t, 2);
        ASSERT(logtail_partial_landed(t, id_err, &offset) == 0);
        ASSERT(offset == strlen("first\n"));
        run_until_partial(e, t, true, "");
        ASSERT(logtail_partial_landed(t, id, &offset) == -EAGAIN);

        /* Completed: it begins where the view said, the view is gone. */
        appends("partial.log", TS " stdout F \r100%\n");
        buf_printf(&expect, "progress 10%%\r20%%\r100%%\n");
        run_until(e, t, 3);
        ASSERT(logtail_partial_landed(t, id, &offset) == 0);
        ASSERT(offset == strlen("first\nwarning\n"));
        run_until_partial(e, t, false, "");
        expect_file("partial.task.log", &expect);

        /* A piece that could be the start of the secret "s3cr3t" is held back. */
        appends("partial.log", TS " stdout P key=s3c\n");
        run_until_partial(e, t, false, "key=");
        appends("partial.log", TS " stdout P r\n");
        for (int i = 0; i < 5; i++)
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        run_until_partial(e, t, false, "key=");
        appends("partial.log", TS " stdout P 3t and s3\n");
        run_until_partial(e, t, false, "key=*** and ");
        /* Not a secret after all: shown as it is. */
        appends("partial.log", TS " stdout P x\n");
        run_until_partial(e, t, false, "key=*** and s3x");
        logtail_partial(t, false, &id, &text, &len);
        appends("partial.log", TS " stdout F  end\n");
        buf_printf(&expect, "key=*** and s3x end\n");
        run_until(e, t, 4);
        ASSERT(logtail_partial_landed(t, id, &offset) == 0);
        expect_file("partial.task.log", &expect);

        /* A long piece (its masked copy is let go once the line is complete), then a short one. */
        {
                _cleanup_free_ char *big = malloc(100 * 1024 + 1), *rec = NULL;
                ASSERT(big);
                memset(big, 'y', 100 * 1024);
                big[100 * 1024] = 0;
                ASSERT(asprintf(&rec, TS " stdout P %s\n", big) > 0);
                appends("partial.log", rec);
                run_until_partial(e, t, false, big);
                appends("partial.log", TS " stdout F !\n");
                buf_printf(&expect, "%s!\n", big);
                run_until(e, t, 5);
                appends("partial.log", TS " stdout P short s3\n");
                run_until_partial(e, t, false, "short ");
                appends("partial.log", TS " stdout F \n");
                buf_printf(&expect, "short s3\n");
                run_until(e, t, 6);
                expect_file("partial.task.log", &expect);
        }

        /* finish() completes a dangling piece. */
        appends("partial.log", TS " stdout P dangling\n");
        run_until_partial(e, t, false, "dangling");
        logtail_partial(t, false, &id, &text, &len);
        ASSERT(logtail_finish(t) == 0);
        buf_printf(&expect, "dangling\n");
        expect_file("partial.task.log", &expect);
        ASSERT(logtail_partial_landed(t, id, &offset) == 0);
        logtail_partial(t, false, &id, &text, &len);
        ASSERT(id == 0 && len == 0);
        t = logtail_free(t);
        expect_journal(&expect, 0);
        buf_done(&expect);
}

/* Appends records for lines [from, to) to the CRI log and their text to expect
 * (cri_records(): P pieces, both streams). */
static void gen_to(const char *name, unsigned from, unsigned to, Buf *expect) {
        Buf cri = {};

        cri_records(&cri, expect, from, to, "");
        append(name, cri.p, cri.len);
        buf_done(&cri);
}

static void gen(unsigned from, unsigned to, Buf *expect) {
        gen_to("resume.log", from, to, expect);
}

static void save(const char *from, const char *to) {
        Buf b = slurp(from);
        put(to, b.p, b.len);
        buf_done(&b);
}

static void restore(const char *from, const char *to) {
        save(from, to);
}

static void test_resume(sd_event *e) {
        _cleanup_free_ char *cri = path("resume.log"), *log = path("resume.task.log");
        Buf expect = {};
        LogTail *t = NULL;
        uint64_t lines;

        /* The real journal_last_line(): journald is not running, so J falls back to N. */
        journal_set_test_hooks(capture_sendv, NULL);
        entries_reset();

        /* First daemon: follows part of the log. */
        gen(0, 1000, &expect);
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        run_until(e, t, 1000);
        expect_file("resume.task.log", &expect);
        ASSERT(exists("resume.task.log.cursor"));
        save("resume.task.log.cursor", "stale.cursor"); /* an old cursor, as a crash leaves it */

        gen(1000, 1500, &expect);
        /* a stdout line left half-written (P) when the daemon dies */
        appends("resume.log", TS " stdout P half a \n");
        run_until(e, t, 1500);
        expect_file("resume.task.log", &expect);
        t = logtail_free(t);
        expect_journal(&expect, 0);
        save("resume.task.log", "snapshot.task.log");
        save("resume.task.log.cursor", "fresh.cursor");
        lines = 1500;

        /* While it was down, more output. */
        appends("resume.log", TS " stderr F meanwhile on stderr\n" TS " stdout F line\n");
        buf_printf(&expect, "meanwhile on stderr\nhalf a line\n");
        gen(1500, 2000, &expect);
        lines += 2;
        lines += 500;

        static const struct {
                const char *name;
                const char *cursor; /* file to restore as the cursor, or literal content with '=' */
                bool torn;
                bool live;
        } variants[] = {
                {"fresh cursor, live", "fresh.cursor", false, true},
                {"fresh cursor, finish", "fresh.cursor", false, false},
                {"stale cursor", "stale.cursor", false, true},
                {"no cursor", NULL, false, false},
                {"no cursor, live", NULL, false, true},
                {"corrupt cursor", "=garbage\n", false, false},
                {"empty cursor", "=", false, false},
                {"cursor with too many lines", "=0 999999\n", false, false},
                {"cursor offset not at a record", "=5 0\n", false, false},
                {"cursor offset past the end", "=99999999999 10\n", false, false},
                {"negative cursor", "=-1 5\n", false, false},
                {"torn task log", "fresh.cursor", true, false},
                {"torn task log, no cursor", NULL, true, true},
        };

        for (size_t i = 0; i < ELEMENTSOF(variants); i++) {
                fprintf(stderr, "resume: %s\n", variants[i].name);

                restore("snapshot.task.log", "resume.task.log");
                remove_file("resume.task.log.cursor");
                if (variants[i].cursor && variants[i].cursor[0] == '=')
                        put("resume.task.log.cursor", variants[i].cursor + 1, strlen(variants[i].cursor + 1));
                else if (variants[i].cursor)
                        restore(variants[i].cursor, "resume.task.log.cursor");
                if (variants[i].torn)
                        appends("resume.task.log", "line 1500 torn wri");
                entries_reset();

                ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
                if (variants[i].live) {
                        run_until(e, t, lines);
                        expect_file("resume.task.log", &expect);
                }
                ASSERT(logtail_finish(t) == 0);
                ASSERT(logtail_lines(t) == lines);
                expect_file("resume.task.log", &expect);
                t = logtail_free(t);
                expect_journal(&expect, 1500);
        }

        /* Twice in a row: the cursor a resumed LogTail writes is good for the next one. */
        restore("snapshot.task.log", "resume.task.log");
        remove_file("resume.task.log.cursor");
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        run_until(e, t, lines);
        t = logtail_free(t);
        ASSERT(exists("resume.task.log.cursor"));
        appends("resume.log", TS " stdout F after second restart\n");
        buf_printf(&expect, "after second restart\n");
        entries_reset();
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        run_until(e, t, lines + 1);
        expect_file("resume.task.log", &expect);
        t = logtail_free(t);
        expect_journal(&expect, lines);

        buf_done(&expect);
}

/* The first n lines of full, as a task log a killed daemon left behind. */
static void put_lines(const char *name, const Buf *full, uint64_t n) {
        Lines l = split_lines(full);
        ASSERT(n <= l.n);
        size_t len = n == 0 ? 0 : (size_t) (l.p[n - 1] + l.len[n - 1] + 1 - full->p);
        put(name, full->p, len);
        lines_done(&l);
}

/* Restart where the two sinks got different distances: each must get exactly the lines
 * it misses, journald with the right numbers. */
static void test_journal_ahead(sd_event *e) {
        _cleanup_free_ char *cri = path("ahead.log"), *log = path("ahead.task.log");
        Buf expect = {};
        LogTail *t = NULL;

        journal_set_test_hooks(capture_sendv, fake_last_line);
        entries_reset();

        gen_to("ahead.log", 0, 2500, &expect);
        ASSERT(logtail_new(e, &task, cri, log, secrets, NULL, NULL, &t) == 0);
        run_until(e, t, 2500);
        t = logtail_free(t);
        expect_journal(&expect, 0);
        save("ahead.task.log.cursor", "ahead.cursor"); /* 2500 lines: unusable below that */
        gen_to("ahead.log", 2500, 3000, &expect);      /* output while the daemon was down */

        static const struct {
                const char *name;
                uint64_t n; /* lines left in the task log */
                int j_result;
                uint64_t j; /* what journald holds */
                bool torn;
                bool cursor;
                bool no_task_log;
        } variants[] = {
                {"level", 2500, 0, 2500, false, true, false},
                {"level, no cursor", 2500, 0, 2500, false, false, false},
                {"journald ahead by a batch", 1400, 0, 2500, false, false, false},
                {"journald ahead, torn task log", 1234, 0, 1300, true, false, false},
                {"journald ahead, stale cursor", 1400, 0, 2500, false, true, false},
                {"journald ahead, empty task log", 0, 0, 2500, false, false, false},
                {"journald ahead by one", 2000, 0, 2001, false, false, false},
                {"journald behind", 2000, 0, 1500, false, false, false},
                {"journald has nothing", 2000, 0, 0, false, false, false},
                {"journald not running", 2000, -ENOTCONN, 0, false, false, false},
                {"journald not answering", 2000, -ETIMEDOUT, 0, false, false, false},
                {"only a cursor left", 0, 0, 777, false, true, true},
        };

        for (size_t i = 0; i < ELEMENTSOF(variants); i++) {
                uint64_t journal_from;

                fprintf(stderr, "journal: %s\n", variants[i].name);
                remove_file("ahead.task.log.cursor");
                if (variants[i].no_task_log)
                        remove_file("ahead.task.log");
                else
                        put_lines("ahead.task.log", &expect, variants[i].n);
                if (variants[i].torn)
                        appends("ahead.task.log", "line 1234 half of i");
                if (variants[i].cursor)
                        restore("ahead.cursor", "ahead.task.log.cursor");
                fake_result = variants[i].j_result;
                fake_line = variants[i].j;
                fake_calls = 0;
                entries_reset();

                ASSERT(logtail_new(e, &task, cri, log, secrets, NULL, NULL, &t) == 0);
                ASSERT(fake_calls == 1);
                ASSERT(logtail_lines(t) == variants[i].n);
                run_until(e, t, 3000);
                ASSERT(logtail_finish(t) == 0);
                t = logtail_free(t);

                expect_file("ahead.task.log", &expect);
                journal_from = variants[i].j_result < 0 ? variants[i].n : MAX(variants[i].j, variants[i].n);
                expect_journal(&expect, journal_from);
        }

        journal_set_test_hooks(capture_sendv, NULL);
        buf_done(&expect);
}

/* A fake journald for the kill test: every entry one O_APPEND write() of
 * "<line> <len> <text>\n" to a file, shared by the killed children and the parent. */
static char *fake_journal_path;

static int file_sendv(const struct iovec *iov, int n) {
        const char *msg;
        size_t len;
        bool is_stderr;
        uint64_t line_no = parse_entry(iov, n, &msg, &len, &is_stderr);
        char head[64];
        int k = snprintf(head, sizeof(head), "%" PRIu64 " %zu ", line_no, len);

        struct iovec out[] = {
                {.iov_base = head, .iov_len = (size_t) k},
                {.iov_base = (char *) msg, .iov_len = len},
                {.iov_base = (char *) "\n", .iov_len = 1},
        };
        int fd = open(fake_journal_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        ASSERT(fd >= 0);
        ASSERT(writev(fd, out, 3) == (ssize_t) (k + len + 1));
        close(fd);
        return 0;
}

/* Parses the fake journal into entries; a torn last record (a datagram journald never
 * got) is cut off. */
static void file_journal_load(void) {
        Buf b = slurp_if_exists("kill.journal");
        size_t good = 0;

        entries_reset();
        for (const char *p = b.p, *e = b.p + b.len; p < e;) {
                uint64_t line_no = 0, len = 0;
                const char *q = p;

                /* By hand: sscanf() would strlen() the rest of the file every time. */
                while (q < e && *q >= '0' && *q <= '9')
                        line_no = line_no * 10 + (uint64_t) (*q++ - '0');
                if (q >= e || *q++ != ' ')
                        break;
                while (q < e && *q >= '0' && *q <= '9')
                        len = len * 10 + (uint64_t) (*q++ - '0');
                if (q >= e || *q++ != ' ')
                        break;
                size_t consumed = q - p;
                if ((size_t) (e - p) < consumed + len + 1)
                        break;
                ASSERT(p[consumed + len] == '\n');
                const char *msg = p + consumed;
                if (n_entries >= entries_alloc) {
                        entries_alloc = MAX(entries_alloc * 2, (size_t) 1024);
                        entries = realloc(entries, entries_alloc * sizeof(Entry));
                        ASSERT(entries);
                }
                entries[n_entries] = (Entry){.line_no = line_no, .msg = malloc(len + 1), .len = len};
                ASSERT(entries[n_entries].msg);
                memcpy(entries[n_entries].msg, msg, len);
                n_entries++;
                p += consumed + len + 1;
                good = p - b.p;
        }
        if (good < b.len) {
                _cleanup_free_ char *pth = path("kill.journal");
                ASSERT(truncate(pth, (off_t) good) == 0);
        }
        buf_done(&b);
}

static int file_last_line(const char *task_id, uint64_t timeout_usec, uint64_t *ret) {
        ASSERT(streq(task_id, task.id));
        file_journal_load();
        *ret = n_entries > 0 ? entries[n_entries - 1].line_no : 0;
        return 0;
}

static uint64_t count_lines(const char *name) {
        Buf b = slurp_if_exists(name);
        uint64_t n = buf_count_lines(&b);
        buf_done(&b);
        return n;
}

/* kill -9 of a LogTail at random instants during heavy output, restarted on the same
 * files each time: in the end both sinks have every line exactly once. */
static void test_kill(sd_event *e) {
        _cleanup_free_ char *cri = path("kill.log"), *log = path("kill.task.log");
        const unsigned rounds = 24, per_round = 8000;
        unsigned ahead = 0, torn = 0;
        Buf expect = {};
        LogTail *t = NULL;

        fake_journal_path = path("kill.journal");
        journal_set_test_hooks(file_sendv, file_last_line);
        srand((unsigned) now_usec(CLOCK_MONOTONIC));

        for (unsigned round = 0; round < rounds; round++) {
                gen_to("kill.log", round * per_round, (round + 1) * per_round, &expect);

                pid_t pid = fork();
                ASSERT(pid >= 0);
                if (pid == 0) {
                        sd_event *ce = NULL; /* sd-event objects do not survive fork */
                        LogTail *ct = NULL;

                        if (sd_event_new(&ce) < 0 || logtail_new(ce, &task, cri, log, secrets, NULL, NULL, &ct) < 0)
                                _exit(1);
                        for (;;)
                                if (sd_event_run(ce, UINT64_MAX) < 0)
                                        _exit(2);
                }
                (void) usleep((useconds_t) (rand() % 60000));
                ASSERT(kill(pid, SIGKILL) == 0);
                int status;
                ASSERT(waitpid(pid, &status, 0) == pid);
                ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

                /* What the kill left: journald ahead of the task log is the case that lost lines. */
                Buf tl = slurp_if_exists("kill.task.log");
                torn += tl.len > 0 && tl.p[tl.len - 1] != '\n';
                buf_done(&tl);
                uint64_t j = 0, n = count_lines("kill.task.log");
                ASSERT(file_last_line(task.id, 1, &j) == 0);
                ASSERT(j >= n);
                ahead += j > n;

                if (round % 6 == 5) {
                        /* An orderly restart in between, in this process. */
                        ASSERT(logtail_new(e, &task, cri, log, secrets, NULL, NULL, &t) == 0);
                        run_until(e, t, (round + 1) * per_round);
                        t = logtail_free(t);
                }
        }

        ASSERT(logtail_new(e, &task, cri, log, secrets, NULL, NULL, &t) == 0);
        ASSERT(logtail_finish(t) == 0);
        t = logtail_free(t);
        fprintf(stderr, "%u kills: journald ahead of the task log after %u, task log torn after %u\n", rounds, ahead,
                torn);

        expect_file("kill.task.log", &expect);
        file_journal_load();
        expect_journal(&expect, 0);

        entries_reset();
        journal_set_test_hooks(capture_sendv, NULL);
        fake_journal_path = mfree(fake_journal_path);
        buf_done(&expect);
}

static void test_many(sd_event *e) {
        _cleanup_free_ char *cri = path("many.log"), *log = path("many.task.log");
        _cleanup_(logtail_freep) LogTail *t = NULL;
        /* TEST_LOGTAIL_LINES=1000000 for a bigger run by hand. */
        const char *env = getenv("TEST_LOGTAIL_LINES");
        const unsigned n = env ? (unsigned) strtoul(env, NULL, 10) : 200000;
        Buf in = {}, expect = {};

        for (unsigned i = 0; i < n; i++) {
                buf_printf(&in, TS " %s F this is output line number %u of the task\n", i % 3 ? "stdout" : "stderr", i);
                buf_printf(&expect, "this is output line number %u of the task\n", i);
        }
        put("many.log", in.p, in.len);

        journal_set_test_hooks(capture_count, NULL);
        entries_reset();

        uint64_t start = now_usec(CLOCK_MONOTONIC);
        ASSERT(logtail_new(e, &task, cri, log, secrets, NULL, NULL, &t) == 0);
        run_until(e, t, n);
        uint64_t followed = now_usec(CLOCK_MONOTONIC);
        ASSERT(logtail_finish(t) == 0);
        fprintf(stderr, "%u records followed in %.3f s (finish %.3f s)\n", n, (followed - start) / 1e6,
                (now_usec(CLOCK_MONOTONIC) - followed) / 1e6);
        expect_file("many.task.log", &expect);
        ASSERT(entries_last_line == n);

        journal_set_test_hooks(NULL, NULL);
        buf_done(&in);
        buf_done(&expect);
}

static void test_errors(sd_event *e) {
        LogTail *t = NULL;
        _cleanup_free_ char *cri = path("x.log");

        ASSERT(logtail_new(e, &task, cri, "/nonexistent-dir/task.log", NULL, NULL, NULL, &t) < 0);
        ASSERT(!t);
        ASSERT(logtail_new(NULL, &task, cri, "/tmp/x", NULL, NULL, NULL, &t) == -EINVAL);
        ASSERT(logtail_free(NULL) == NULL);

        /* CRI log in a directory that does not exist (yet): timer fallback, finish works. */
        _cleanup_free_ char *log = path("nodir.task.log");
        _cleanup_free_ char *sub = path("late-dir");
        _cleanup_free_ char *cri2 = path("late-dir/ctr.log");
        ASSERT(logtail_new(e, &task, cri2, log, NULL, NULL, NULL, &t) == 0);
        ASSERT(mkdir(sub, 0755) == 0);
        appends("late-dir/ctr.log", TS " stdout F found by the timer\n");
        run_until(e, t, 1);
        ASSERT(logtail_finish(t) == 0);
        t = logtail_free(t);
        Buf expect = {};
        buf_printf(&expect, "found by the timer\n");
        expect_file("nodir.task.log", &expect);
        buf_done(&expect);

        /* finish without any CRI log: nothing, no error */
        _cleanup_free_ char *log3 = path("never.task.log");
        _cleanup_free_ char *cri3 = path("never.log");
        ASSERT(logtail_new(e, &task, cri3, log3, NULL, NULL, NULL, &t) == 0);
        ASSERT(logtail_finish(t) == 0);
        ASSERT(logtail_lines(t) == 0);
        t = logtail_free(t);
}

/* TaskLogSizeMax=: the task log keeps the lines that fit and a marker, journald all of
 * them; a resumed LogTail sees the marker and writes nothing more to the file. */
static void test_cap(sd_event *e) {
        _cleanup_free_ char *cri = path("cap.log"), *log = path("cap.task.log");
        LogTail *t = NULL;
        Buf all = {}, in = {}, head = {};
        const uint64_t cap = 64 * 1024;

        for (unsigned i = 1; i <= 3000; i++) {
                buf_printf(&in, TS " stdout F capped output line %05u\n", i);
                buf_printf(&all, "capped output line %05u\n", i);
                if (head.len + 25 <= cap)
                        buf_printf(&head, "capped output line %05u\n", i);
        }
        put("cap.log", in.p, in.len);
        buf_printf(&head, "lagoon-taskd: the task log stops here, at TaskLogSizeMax=65536 bytes; journald holds the "
                          "whole output (journalctl LAGOON_TASK_ID=task-1)\n");

        journal_set_test_hooks(capture_sendv, NULL);
        entries_reset();
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        logtail_set_max_bytes(t, cap);
        run_until(e, t, cap / 25 + 1);
        expect_file("cap.task.log", &head);
        expect_journal(&all, 0);
        t = logtail_free(t); /* leaves a cursor at line 3000 */

        appends("cap.log", TS " stdout F after the restart\n");
        buf_printf(&all, "after the restart\n");
        for (int with_cursor = 1; with_cursor >= 0; with_cursor--) {
                Buf c = with_cursor ? slurp("cap.task.log.cursor") : (Buf){};
                if (!with_cursor)
                        remove_file("cap.task.log.cursor");
                /* journald has the 3000 (J), or only the cursor knows: J unknown. */
                fake_result = with_cursor ? -ETIMEDOUT : 0;
                fake_line = 3000;
                journal_set_test_hooks(capture_sendv, fake_last_line);
                entries_reset();
                ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
                logtail_set_max_bytes(t, cap);
                ASSERT(logtail_finish(t) == 0);
                t = logtail_free(t);
                expect_file("cap.task.log", &head);
                expect_journal(&all, 3000);
                if (with_cursor)
                        put("cap.task.log.cursor", c.p, c.len);
                buf_done(&c);
        }

        journal_set_test_hooks(NULL, NULL);
        buf_done(&all);
        buf_done(&in);
        buf_done(&head);
}

/* The forwarded part of a long CRI log is punched out while the LogTail follows it;
 * a restart at the cursor does not need it. Should the cursor be lost after all, the
 * restart resumes after the hole (no NULs read as output), repeating a few lines. */
static void test_trim(sd_event *e) {
        _cleanup_free_ char *cri = path("trim.log"), *log = path("trim.task.log");
        LogTail *t = NULL;
        Buf in = {}, expect = {};
        struct stat st;
        const unsigned n = 20000;

        for (unsigned i = 1; i <= n; i++) {
                buf_printf(&in, TS " stdout F trimmed output line %06u ..............................\n", i);
                buf_printf(&expect, "trimmed output line %06u ..............................\n", i);
        }
        put("trim.log", in.p, in.len);
        ASSERT(stat(cri, &st) == 0);
        ASSERT(st.st_size > 1024 * 1024);

        journal_set_test_hooks(capture_sendv, NULL);
        entries_reset();
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        run_until(e, t, n);
        expect_file("trim.task.log", &expect);
        expect_journal(&expect, 0);
        t = logtail_free(t);

        ASSERT(stat(cri, &st) == 0);
        bool punched = (uint64_t) st.st_blocks * 512 < (uint64_t) st.st_size / 2;
        if (!punched) {
                fprintf(stderr, "trim: the file system of %s does not punch holes, skipped\n", dir);
                goto done;
        }

        /* Restart at the cursor: the rest, exactly once. */
        appends("trim.log", TS " stdout F after the restart\n");
        buf_printf(&expect, "after the restart\n");
        entries_reset();
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        ASSERT(logtail_finish(t) == 0);
        t = logtail_free(t);
        expect_file("trim.task.log", &expect);
        expect_journal(&expect, n);

        /* Killed after the end was drained but before it was recorded: the task is adopted
         * again and its output finished again, from the cursor the finish left, so nothing
         * twice (without it, the restart resumed after the hole and repeated a tail). */
        entries_reset();
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        ASSERT(logtail_finish(t) == 0);
        t = logtail_free(t);
        expect_file("trim.task.log", &expect);
        ASSERT(n_entries == 0);

        /* Cursor gone: resumes after the hole, with the lines from there again. */
        remove_file("trim.task.log.cursor");
        appends("trim.log", TS " stdout F after losing the cursor\n");
        entries_reset();
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        ASSERT(logtail_finish(t) == 0);
        t = logtail_free(t);
        Buf got = slurp("trim.task.log");
        ASSERT(got.len > expect.len);
        ASSERT(memcmp(got.p, expect.p, expect.len) == 0);
        ASSERT(!memchr(got.p, 0, got.len));
        static const char last[] = "after the restart\nafter losing the cursor\n";
        ASSERT(got.len >= expect.len + strlen(last));
        ASSERT(memcmp(got.p + got.len - strlen(last), last, strlen(last)) == 0);
        /* The repeated part is a tail of the old lines. */
        size_t rep = got.len - expect.len - strlen("after losing the cursor\n");
        ASSERT(rep > 0 && rep < expect.len);
        ASSERT(memcmp(got.p + expect.len, expect.p + expect.len - rep, rep) == 0);
        size_t rep_lines = 0;
        for (size_t i = expect.len; i < expect.len + rep; i++)
                rep_lines += got.p[i] == '\n';
        ASSERT(n_entries == rep_lines + 1); /* journald: the same repeated lines and the new one */
        buf_done(&got);

done:
        journal_set_test_hooks(NULL, NULL);
        buf_done(&in);
        buf_done(&expect);
}

int main(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;

        ASSERT(mkdtemp(dir));
        ASSERT(sd_event_new(&e) >= 0);

        test_follow(e);
        test_partial(e);
        test_resume(e);
        test_journal_ahead(e);
        test_errors(e);
        test_kill(e);
        test_many(e);
        test_cap(e);
        test_trim(e);

        entries_reset();
        free(entries);

        ASSERT(rm_rf(dir) >= 0);
        printf("test-logtail: all passed\n");
        return 0;
}
