/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests for following a CRI log into the task log (logtail.h): a file that appears
 * late, records split across writes, P pieces joined per stream, secrets masked,
 * malformed records kept, finish; restart from the cursor, from a stale, missing or
 * corrupt cursor and from a torn task log, each time with every line exactly once;
 * and a 200 000-record run to see that it is fast. journald is not running here, so
 * sd_journal_sendv() drops the lines: only the task log is checked. */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs-util.h"
#include "logtail.h"

#define ASSERT(expr) \
        do { \
                if (!(expr)) { \
                        fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #expr); \
                        abort(); \
                } \
        } while (0)

#define TS "2026-11-28T00:44:13.123456789+00:00"

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

typedef struct Buf {
        char *p;
        size_t len;
        size_t alloc;
} Buf;

static void buf_add(Buf *b, const void *data, size_t len) {
        if (b->len + len + 1 > b->alloc) {
                b->alloc = (b->len + len + 1) * 2;
                b->p = realloc(b->p, b->alloc);
                ASSERT(b->p);
        }
        memcpy(b->p + b->len, data, len);
        b->len += len;
        b->p[b->len] = 0;
}

_printf_(2, 3) static void buf_printf(Buf *b, const char *fmt, ...) {
        char tmp[4096];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
        va_end(ap);
        ASSERT(n >= 0 && (size_t) n < sizeof(tmp));
        buf_add(b, tmp, n);
}

static void buf_done(Buf *b) {
        free(b->p);
        *b = (Buf){};
}

static char *path(const char *name) {
        char *p = path_join(dir, name);
        ASSERT(p);
        return p;
}

static void append(const char *name, const void *data, size_t len) {
        _cleanup_free_ char *p = path(name);
        int fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        ASSERT(fd >= 0);
        ASSERT(write(fd, data, len) == (ssize_t) len);
        close(fd);
}

static void appends(const char *name, const char *s) {
        append(name, s, strlen(s));
}

static void put(const char *name, const void *data, size_t len) {
        _cleanup_free_ char *p = path(name);
        (void) unlink(p);
        append(name, data, len);
}

static Buf slurp(const char *name) {
        _cleanup_free_ char *p = path(name);
        Buf b = {};
        char tmp[65536];
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        ASSERT(fd >= 0);
        for (;;) {
                ssize_t n = read(fd, tmp, sizeof(tmp));
                ASSERT(n >= 0);
                if (n == 0)
                        break;
                buf_add(&b, tmp, n);
        }
        close(fd);
        if (!b.p)
                buf_add(&b, "", 0);
        return b;
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
        if (got.len != expect->len || memcmp(got.p, expect->p, got.len) != 0) {
                size_t i = 0;
                while (i < got.len && i < expect->len && got.p[i] == expect->p[i])
                        i++;
                size_t from = i > 60 ? i - 60 : 0;
                fprintf(stderr,
                        "%s differs at byte %zu (got %zu bytes, expected %zu)\n got: \"%.*s\"\nwant: \"%.*s\"\n", name,
                        i, got.len, expect->len, (int) MIN(got.len - from, (size_t) 160), got.p + from,
                        (int) MIN(expect->len - from, (size_t) 160), expect->p + from);
                abort();
        }
        buf_done(&got);
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

/* Runs the loop until the task log has `lines` lines, then a little longer to see
 * that nothing more comes. */
static void run_until(sd_event *e, LogTail *t, uint64_t lines) {
        uint64_t deadline = now_usec() + 20 * USEC_PER_SEC;

        while (logtail_lines(t) < lines) {
                if (now_usec() >= deadline) {
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

        /* The CRI log does not exist yet: the directory watch must pick it up. */
        ASSERT(logtail_new(e, &task, cri, log, secrets, on_output, &n_callbacks, &t) == 0);
        for (int i = 0; i < 3; i++)
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        ASSERT(logtail_lines(t) == 0);

        appends("follow.log", TS " stdout F hello world\n" TS " stderr F an error\n");
        buf_printf(&expect, "hello world\nan error\n");
        run_until(e, t, 2);
        expect_file("follow.task.log", &expect);
        ASSERT(n_callbacks > 0);

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

        /* finish: a dangling partial line is emitted, the cursor removed. */
        appends("follow.log", TS " stderr F last\n" TS " stdout P dangling");
        buf_printf(&expect, "last\ndangling\n");
        unsigned before = n_callbacks;
        ASSERT(logtail_finish(t) == 0);
        ASSERT(logtail_lines(t) == 15);
        ASSERT(n_callbacks > before);
        expect_file("follow.task.log", &expect);
        ASSERT(!exists("follow.task.log.cursor"));
        ASSERT(logtail_finish(t) == 0); /* idempotent */

        /* No more following after finish. */
        appends("follow.log", TS " stdout F too late\n");
        for (int i = 0; i < 3; i++)
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        ASSERT(logtail_lines(t) == 15);
        t = logtail_free(t);
        expect_file("follow.task.log", &expect);
        ASSERT(!exists("follow.task.log.cursor"));
        buf_done(&expect);
}

/* Appends records for lines [from, to) to the CRI log and their text to expect:
 * every 5th line on stderr, every 7th in three P pieces written separately. */
static void gen(unsigned from, unsigned to, Buf *expect) {
        Buf cri = {};

        for (unsigned i = from; i < to; i++) {
                const char *stream = i % 5 == 0 ? "stderr" : "stdout";
                if (i % 7 == 0) {
                        buf_printf(&cri, TS " %s P line %u ", stream, i);
                        buf_printf(&cri, "\n" TS " %s P part two ", stream);
                        buf_printf(&cri, "\n" TS " %s F part three\n", stream);
                        buf_printf(expect, "line %u part two part three\n", i);
                } else {
                        buf_printf(&cri, TS " %s F line %u\n", stream, i);
                        buf_printf(expect, "line %u\n", i);
                }
        }
        append("resume.log", cri.p, cri.len);
        buf_done(&cri);
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

                ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
                if (variants[i].live) {
                        run_until(e, t, lines);
                        expect_file("resume.task.log", &expect);
                }
                ASSERT(logtail_finish(t) == 0);
                ASSERT(logtail_lines(t) == lines);
                expect_file("resume.task.log", &expect);
                t = logtail_free(t);
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
        ASSERT(logtail_new(e, &task, cri, log, NULL, NULL, NULL, &t) == 0);
        run_until(e, t, lines + 1);
        expect_file("resume.task.log", &expect);
        t = logtail_free(t);

        buf_done(&expect);
}

static void test_many(sd_event *e) {
        _cleanup_free_ char *cri = path("many.log"), *log = path("many.task.log");
        _cleanup_(logtail_freep) LogTail *t = NULL;
        const unsigned n = 200000;
        Buf in = {}, expect = {};

        for (unsigned i = 0; i < n; i++) {
                buf_printf(&in, TS " %s F this is output line number %u of the task\n", i % 3 ? "stdout" : "stderr", i);
                buf_printf(&expect, "this is output line number %u of the task\n", i);
        }
        put("many.log", in.p, in.len);

        uint64_t start = now_usec();
        ASSERT(logtail_new(e, &task, cri, log, secrets, NULL, NULL, &t) == 0);
        run_until(e, t, n);
        uint64_t followed = now_usec();
        ASSERT(logtail_finish(t) == 0);
        fprintf(stderr, "%u records followed in %.3f s (finish %.3f s)\n", n, (followed - start) / 1e6,
                (now_usec() - followed) / 1e6);
        expect_file("many.task.log", &expect);

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

int main(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;

        ASSERT(mkdtemp(dir));
        ASSERT(sd_event_new(&e) >= 0);

        test_follow(e);
        test_resume(e);
        test_errors(e);
        test_many(e);

        ASSERT(rm_rf(dir) >= 0);
        printf("test-logtail: all passed\n");
        return 0;
}
