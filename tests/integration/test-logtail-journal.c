/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Exactly once into a real journald across kill -9 (root only, else skipped). In a
 * private mount namespace (tmpfs on /run/systemd/journal and /run/log, our own
 * journald.conf: volatile, no rate limit) it starts systemd-journald, then feeds a CRI
 * log in rounds of heavy output; each round a LogTail runs in a forked child that is
 * SIGKILLed at a random moment, and the next one resumes on the same files (now and
 * then an orderly one in this process). At the end, read back with sd-journal: every
 * LAGOON_LINE 1..total is there exactly once, in order, with its text, and none of the
 * resume markers carries LAGOON_TASK_ID; the task log has every line exactly once.
 * Then the same without journald (stopped: a stale socket; then no socket at all): the
 * task log still gets every line exactly once. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-id128.h>
#include <systemd/sd-journal.h>

#include "fs-util.h"
#include "journal.h"
#include "logtail.h"
#include "tests.h"

#define TS CRI_TS

static const char JOURNALD_CONF[] = "[Journal]\n"
                                    "Storage=volatile\n"
                                    "RateLimitIntervalSec=0\n"
                                    "RateLimitBurst=0\n"
                                    "ForwardToSyslog=no\n"
                                    "ForwardToKMsg=no\n"
                                    "ForwardToConsole=no\n"
                                    "ForwardToWall=no\n"
                                    "ReadKMsg=no\n"
                                    "RuntimeMaxUse=512M\n";

static char dir[] = "/tmp/test-logtail-journal-XXXXXX";
static pid_t journald_pid = -1;

/* Lines [from, to) of heavy output: the CRI log gets the records, expect the text. */
static void gen(const char *cri_name, unsigned from, unsigned to, Buf *expect) {
        Buf cri = {};

        cri_records(&cri, expect, from, to, " of the task's heavy output");
        file_append_in(dir, cri_name, cri.p, cri.len);
        buf_done(&cri);
}

static uint64_t count_lines(const char *name) {
        Buf b = file_slurp_in(dir, name);
        uint64_t n = buf_count_lines(&b);
        buf_done(&b);
        return n;
}

static void expect_file(const char *name, const Buf *expect) {
        Buf got = file_slurp_in(dir, name);
        buf_expect_eq(name, &got, expect);
        buf_done(&got);
}

static void run_until(sd_event *e, LogTail *t, uint64_t lines) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 60 * USEC_PER_SEC;

        while (logtail_lines(t) < lines) {
                ASSERT(now_usec(CLOCK_MONOTONIC) < deadline);
                ASSERT(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
        }
        ASSERT(logtail_lines(t) == lines);
}

/* Sets up the namespace and starts journald. 0, or 77 when this cannot run here. */
static int start_journald(void) {
        const char *journald = NULL;
        static const char *const candidates[] = {"/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"};

        for (size_t i = 0; i < ELEMENTSOF(candidates); i++)
                if (access(candidates[i], X_OK) == 0) {
                        journald = candidates[i];
                        break;
                }
        if (!journald) {
                printf("SKIP: systemd-journald not found\n");
                return 77;
        }

        if (unshare(CLONE_NEWNS) < 0) {
                printf("SKIP: unshare(CLONE_NEWNS): %s\n", strerror(errno));
                return 77;
        }
        ASSERT(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
        static const char *const dirs[] = {"/run/systemd/journal", "/run/log"};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                ASSERT(mkdir_p(dirs[i], 0755) >= 0);
                ASSERT(mount("tmpfs", dirs[i], "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") == 0);
        }
        /* Our settings over the host's file, in this namespace only. */
        _cleanup_free_ char *conf = path_in(dir, "journald.conf");
        file_append_in(dir, "journald.conf", JOURNALD_CONF, strlen(JOURNALD_CONF));
        if (access("/etc/systemd/journald.conf", F_OK) == 0)
                ASSERT(mount(conf, "/etc/systemd/journald.conf", NULL, MS_BIND, NULL) == 0);

        _cleanup_free_ char *logp = path_in(dir, "journald.log");
        journald_pid = fork();
        ASSERT(journald_pid >= 0);
        if (journald_pid == 0) {
                int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
                        _exit(127);
                (void) setsid();
                /* Not left behind when this test dies on a failed check. */
                if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() == 1)
                        _exit(127);
                execl(journald, journald, (char *) NULL);
                _exit(127);
        }

        /* Up when a marker sent to it can be read back. */
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 20 * USEC_PER_SEC, n;
        for (;;) {
                if (access("/run/systemd/journal/socket", F_OK) == 0 &&
                    journal_last_line("startup-probe", 2 * USEC_PER_SEC, &n) == 0)
                        break;
                if (waitpid(journald_pid, NULL, WNOHANG) == journald_pid || now_usec(CLOCK_MONOTONIC) > deadline) {
                        Buf l = file_slurp_in(dir, "journald.log");
                        fprintf(stderr, "journald did not start:\n%s\n", l.p);
                        abort();
                }
                (void) usleep(50 * 1000);
        }
        return 0;
}

static void stop_journald(void) {
        if (journald_pid <= 0)
                return;
        (void) kill(journald_pid, SIGTERM);
        ASSERT(waitpid(journald_pid, NULL, 0) == journald_pid);
        journald_pid = -1;
}

/* The task's entries, in journal order: lines 1..n exactly once each, in order (by
 * LAGOON_LINE and the entries after it), with the expected text and stream. */
static void expect_journal(const char *task_id, const Buf *expect) {
        _cleanup_(sd_journal_closep) sd_journal *j = NULL;
        _cleanup_free_ char *match = NULL, *resume = NULL;
        uint64_t n = 0, markers = 0, last_numbered = 0;
        const char *p = expect->p, *end = expect->p + expect->len;
        int r;

        /* journald has written all we sent once it shows a marker sent after it. */
        ASSERT(journal_last_line(task_id, 10 * USEC_PER_SEC, &n) == 0);

        ASSERT(sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY) >= 0);
        ASSERT(asprintf(&match, "LAGOON_TASK_ID=%s", task_id) > 0);
        ASSERT(sd_journal_add_match(j, match, 0) >= 0);
        n = 0;
        SD_JOURNAL_FOREACH(j) {
                const void *d;
                size_t l;

                const char *nl = memchr(p, '\n', end - p);
                if (!nl) {
                        fprintf(stderr, "journald has more than %" PRIu64 " entries for the task\n", n);
                        abort();
                }
                n++;

                /* LAGOON_LINE where there is one (the first entry of each datagram, every
                 * 256th after): the entry's number; the others follow the one before. */
                char want[64];
                int k = snprintf(want, sizeof(want), "LAGOON_LINE=%" PRIu64, n);
                r = sd_journal_get_data(j, "LAGOON_LINE", &d, &l);
                ASSERT(r >= 0 || (r == -ENOENT && n > 1 && n - last_numbered < 256));
                if (r >= 0 && (l != (size_t) k || memcmp(d, want, l) != 0)) {
                        fprintf(stderr, "journal entry %" PRIu64 ": %.*s, expected %s\n", n, (int) l, (const char *) d,
                                want);
                        abort();
                }
                if (r >= 0)
                        last_numbered = n;
                ASSERT(sd_journal_get_data(j, "MESSAGE", &d, &l) >= 0);
                if (l != 8 + (size_t) (nl - p) || memcmp((const char *) d + 8, p, nl - p) != 0) {
                        fprintf(stderr, "journal entry %" PRIu64 ": \"%.*s\", expected \"%.*s\"\n", n, (int) l,
                                (const char *) d, (int) (nl - p), p);
                        abort();
                }
                ASSERT(sd_journal_get_data(j, "SYSLOG_IDENTIFIER", &d, &l) >= 0);
                ASSERT(l == strlen("SYSLOG_IDENTIFIER=lagoon-task") &&
                       memcmp(d, "SYSLOG_IDENTIFIER=lagoon-task", l) == 0);
                p = nl + 1;
        }
        if (p != end) {
                fprintf(stderr, "journald has %" PRIu64 " entries for the task, fewer than expected\n", n);
                abort();
        }

        /* The resume markers are there, under their own field. */
        sd_journal_flush_matches(j);
        ASSERT(asprintf(&resume, "LAGOON_TASK_ID_RESUME=%s", task_id) > 0);
        ASSERT(sd_journal_add_match(j, resume, 0) >= 0);
        SD_JOURNAL_FOREACH(j) {
                const void *d;
                size_t l;
                ASSERT(sd_journal_get_data(j, "LAGOON_TASK_ID", &d, &l) == -ENOENT);
                markers++;
        }
        ASSERT(markers > 0);
        fprintf(stderr, "journald: %" PRIu64 " entries, LAGOON_LINE 1..%" PRIu64 " once each; %" PRIu64 " markers\n", n,
                n, markers);
}

/* Rounds of output, each followed (partly) by a LogTail in a child killed at a random
 * moment; every few rounds an orderly one here; a final one here finishes. Returns
 * the number of kills after which journald was ahead of the task log.
 *
 * With journald, every 4th kill happens while journald is stopped (SIGSTOP): the child
 * fills journald's socket queue and blocks, is killed, and the next child starts
 * before journald continues, so the dead one's lines are still queued, unprocessed,
 * when the new one asks how far journald got: the race the resume marker is for. */
static unsigned kill_rounds(sd_event *e,
                            Task *task,
                            const char *name,
                            unsigned rounds,
                            unsigned per_round,
                            unsigned max_delay_ms,
                            bool with_journald,
                            Buf *expect) {
        _cleanup_free_ char *cri_name = NULL, *log_name = NULL, *cri = NULL, *log = NULL;
        unsigned ahead = 0;
        bool stopped = false;
        LogTail *t = NULL;

        ASSERT(asprintf(&cri_name, "%s.cri.log", name) > 0);
        ASSERT(asprintf(&log_name, "%s.task.log", name) > 0);
        cri = path_in(dir, cri_name);
        log = path_in(dir, log_name);

        for (unsigned round = 0; round < rounds; round++) {
                gen(cri_name, round * per_round, (round + 1) * per_round, expect);

                pid_t pid = fork();
                ASSERT(pid >= 0);
                if (pid == 0) {
                        sd_event *ce = NULL; /* sd-event objects do not survive fork */
                        LogTail *ct = NULL;

                        if (sd_event_new(&ce) < 0 || logtail_new(ce, task, cri, log, NULL, NULL, NULL, &ct) < 0)
                                _exit(1);
                        for (;;)
                                if (sd_event_run(ce, UINT64_MAX) < 0)
                                        _exit(2);
                }
                if (stopped) {
                        /* The new child is starting up and waiting for its marker. */
                        (void) usleep(50 * 1000);
                        ASSERT(kill(journald_pid, SIGCONT) == 0);
                        stopped = false;
                }
                (void) usleep((useconds_t) (rand() % (max_delay_ms * 1000)));
                if (with_journald && round % 4 == 2 && round + 1 < rounds) {
                        ASSERT(kill(journald_pid, SIGSTOP) == 0);
                        (void) usleep(30 * 1000); /* the child fills the queue and blocks */
                        stopped = true;
                }
                ASSERT(kill(pid, SIGKILL) == 0);
                int status;
                ASSERT(waitpid(pid, &status, 0) == pid);
                ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

                if (stopped) {
                        fprintf(stderr, "round %u: killed with journald stopped, task log at %" PRIu64 "\n", round,
                                count_lines(log_name));
                        continue;
                }
                if (with_journald) {
                        uint64_t j = 0, n = count_lines(log_name), t0 = now_usec(CLOCK_MONOTONIC);
                        ASSERT(journal_last_line(task->id, 10 * USEC_PER_SEC, &j) == 0);
                        ASSERT(j >= n);
                        ahead += j > n;
                        fprintf(stderr,
                                "round %u: killed with task log at %" PRIu64 ", journald at %" PRIu64
                                " (asked in %.1f ms)\n",
                                round, n, j, (now_usec(CLOCK_MONOTONIC) - t0) / 1e3);
                }

                if (round % 5 == 4) {
                        ASSERT(logtail_new(e, task, cri, log, NULL, NULL, NULL, &t) == 0);
                        run_until(e, t, (round + 1) * per_round);
                        t = logtail_free(t);
                }
        }

        ASSERT(logtail_new(e, task, cri, log, NULL, NULL, NULL, &t) == 0);
        ASSERT(logtail_finish(t) == 0);
        ASSERT(logtail_lines(t) == (uint64_t) rounds * per_round);
        t = logtail_free(t);
        expect_file(log_name, expect);
        return ahead;
}

static void make_task(Task *t, char *id) {
        sd_id128_t r;
        char s[SD_ID128_STRING_MAX];

        ASSERT(sd_id128_randomize(&r) >= 0);
        sd_id128_to_string(r, s);
        snprintf(id, 64, "it-%s", s);
        *t = (Task){
                .id = id,
                .name = (char *) "lagoon-task-it",
                .project = (char *) "proj",
                .environment = (char *) "main",
                .namespace = (char *) "proj-main",
                .service = (char *) "cli",
        };
}

int main(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        char id1[64], id2[64];
        Task task1, task2;
        Buf expect = {};
        int r;

        if (geteuid() != 0) {
                printf("SKIP: needs root (mount namespace, journald)\n");
                return 77;
        }
        ASSERT(mkdtemp(dir));
        r = start_journald();
        if (r != 0) {
                (void) rm_rf(dir);
                return r;
        }
        srand((unsigned) now_usec(CLOCK_MONOTONIC));
        ASSERT(sd_event_new(&e) >= 0);

        /* Heavy output: a real journald takes ~20 µs a line, so a round of 6000 lines keeps
         * the child busy for ~100 ms and the kill lands mid-batch most of the time. */
        make_task(&task1, id1);
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        unsigned ahead = kill_rounds(e, &task1, "with", 20, 6000, 150, true, &expect);
        fprintf(stderr, "20 kills with journald: journald ahead of the task log after %u (%.1f s)\n", ahead,
                (now_usec(CLOCK_MONOTONIC) - start) / 1e6);
        expect_journal(task1.id, &expect);
        buf_done(&expect);

        /* journald stopped: its socket is still there, sending fails. */
        stop_journald();
        make_task(&task2, id2);
        uint64_t n;
        ASSERT(journal_last_line(task2.id, USEC_PER_SEC, &n) < 0);
        (void) kill_rounds(e, &task2, "stale", 6, 6000, 100, false, &expect);
        fprintf(stderr, "journald stopped (stale socket): task log complete\n");

        /* No journald at all. */
        ASSERT(umount2("/run/systemd/journal", MNT_DETACH) == 0);
        ASSERT(journal_last_line(task2.id, USEC_PER_SEC, &n) == -ENOTCONN);
        buf_done(&expect);
        (void) kill_rounds(e, &task2, "absent", 6, 6000, 100, false, &expect);
        fprintf(stderr, "journald absent: task log complete\n");
        buf_done(&expect);

        ASSERT(rm_rf(dir) >= 0);
        printf("test-logtail-journal: all passed\n");
        return 0;
}
