/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests of daemon/core/config.c: defaults, every key, drop-in order and overrides,
 * list append and reset, service sections, continuation lines, SecretFile=, and every
 * kind of broken input. Error messages are captured by pointing stderr at a temporary
 * file, and must name "FILE:LINE:". The sample files are in tests/unit/data/config/:
 * in a broken-*.conf file, a "# error below" comment marks each line that must be
 * reported, and no other line may be. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "config.h"
#include "fs-util.h"
#include "log.h"
#include "macro.h"
#include "tests.h"

#define SEC USEC_PER_SEC

static char *tmp_dir = NULL;

/* ---- stderr capture ---- */

static int capture_fd = -EBADF, saved_stderr = -EBADF;

static void capture_begin(void) {
        char path[] = "/tmp/test-config-stderr-XXXXXX";

        ASSERT(capture_fd < 0);
        fflush(stderr);
        capture_fd = mkostemp(path, O_CLOEXEC);
        ASSERT(capture_fd >= 0);
        ASSERT(unlink(path) == 0);
        saved_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        ASSERT(saved_stderr >= 0);
        ASSERT(dup2(capture_fd, STDERR_FILENO) == STDERR_FILENO);
}

/* Returns what was written to stderr since capture_begin(), and echoes it (indented). */
static char *capture_end(void) {
        char *buf;
        off_t size;
        ssize_t n;

        fflush(stderr);
        ASSERT(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
        saved_stderr = safe_close(saved_stderr);

        size = lseek(capture_fd, 0, SEEK_END);
        ASSERT(size >= 0);
        buf = malloc((size_t) size + 1);
        ASSERT(buf);
        n = pread(capture_fd, buf, (size_t) size, 0);
        ASSERT(n == size);
        buf[n] = '\0';
        capture_fd = safe_close(capture_fd);

        for (const char *p = buf; *p;) {
                const char *e = strchrnul(p, '\n');
                fprintf(stderr, "    | %.*s\n", (int) (e - p), p);
                p = *e ? e + 1 : e;
        }
        return buf;
}

static bool contains(const char *haystack, const char *fmt, ...) _printf_(2, 3);
static bool contains(const char *haystack, const char *fmt, ...) {
        _cleanup_free_ char *needle = NULL;
        va_list ap;

        va_start(ap, fmt);
        needle = strfv(fmt, ap);
        va_end(ap);
        return strstr(haystack, needle) != NULL;
}

static size_t count_lines(const char *s) {
        size_t n = 0;
        for (; *s; s++)
                if (*s == '\n')
                        n++;
        return n;
}

/* ---- files ---- */

static char *write_file(const char *dir, const char *name, const char *content) {
        char *path = path_join(dir, name);
        FILE *f;

        ASSERT(path);
        f = fopen(path, "we");
        ASSERT(f);
        ASSERT(fputs(content, f) >= 0);
        ASSERT(fclose(f) == 0);
        return path;
}

static char *make_dir(const char *parent, const char *name) {
        char *path = path_join(parent, name);
        ASSERT(path);
        ASSERT(mkdir(path, 0755) == 0);
        return path;
}

static const char *data_dir(void) {
        static char buf[4096];
        const char *d = getenv("TEST_DATADIR");

        if (d) {
                snprintf(buf, sizeof(buf), "%s/config", d);
                return buf;
        }
        return "tests/unit/data/config"; /* run from the source root */
}

/* Parses text under a fixed file name, expecting r; returns the captured log. */
static char *parse_expect(Config *c, const char *text, int expected) {
        int r;

        capture_begin();
        r = config_parse_string(c, "test.conf", text, strlen(text));
        char *log = capture_end();
        if (r != expected) {
                fprintf(stderr, "config_parse_string() = %d, expected %d, for:\n%s\n", r, expected, text);
                abort();
        }
        return log;
}

static void parse_ok(Config *c, const char *text) {
        _cleanup_free_ char *log = parse_expect(c, text, 0);
        ASSERT(isempty(log));
}

static void strv_expect(char **l, ...) {
        va_list ap;
        size_t i = 0;

        va_start(ap, l);
        for (;; i++) {
                const char *w = va_arg(ap, const char *);
                if (!w) {
                        if (l && l[i]) {
                                fprintf(stderr, "unexpected extra element \"%s\"\n", l[i]);
                                abort();
                        }
                        break;
                }
                if (!l || !l[i] || !streq(l[i], w)) {
                        fprintf(stderr, "element %zu is \"%s\", expected \"%s\"\n", i, l ? strna(l[i]) : "(null)", w);
                        abort();
                }
        }
        va_end(ap);
}

/* ---- tests ---- */

static void check_defaults(const Config *c) {
        ASSERT_STREQ(c->state_dir, "/var/lib/lagoon-taskd");
        ASSERT_STREQ(c->runtime_dir, "/run/lagoon-taskd");
        ASSERT_STREQ(c->socket_group, "lagoon-task");
        ASSERT(c->log_level == LOG_INFO);
        /* Unset until config_finalize() picks it for this host. */
        ASSERT(!c->runtime || streq(c->runtime, config_default_runtime(CONFIG_CGROUP_UNIFIED, NULL)));
        ASSERT(strv_length(c->runtime_args) == 0);
        ASSERT_STREQ(c->conmon, "conmon");
        ASSERT(strv_length(c->conmon_args) == 0);
        ASSERT(c->max_running == 4);
        ASSERT(c->max_running_per_environment == 0);
        ASSERT(c->max_queued == 1000);
        ASSERT(c->default_timeout_usec == 6 * 3600 * SEC);
        ASSERT(c->kill_grace_usec == 10 * SEC);
        ASSERT(c->keep_finished == 100);
        ASSERT_STREQ(c->default_service, "cli");
        ASSERT_STREQ(c->default_project, "local");
        ASSERT_STREQ(c->default_environment, "local");
        ASSERT(strv_length(c->secrets) == 0);
        ASSERT(c->n_services == 0);
}

static void test_defaults(void) {
        _cleanup_(config_freep) Config *c = config_new();

        ASSERT(c);
        check_defaults(c);
        ASSERT(!c->listen_socket);
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->listen_socket, "/run/lagoon-taskd/api.sock");

        /* An empty text and a text of comments change nothing. */
        parse_ok(c, "");
        parse_ok(c, "# nothing\n; nothing either\n\n   \n\t# indented comment\n");
        check_defaults(c);

        /* ListenSocket= follows RuntimeDirectory= when not set. */
        config_free(TAKE_PTR(c));
        c = config_new();
        ASSERT(c);
        parse_ok(c, "[Daemon]\nRuntimeDirectory=/run/other//\n");
        ASSERT_STREQ(c->runtime_dir, "/run/other");
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->listen_socket, "/run/other/api.sock");
}

static void test_all_keys(void) {
        _cleanup_(config_freep) Config *c = config_new();
        const ServiceConfig *s;

        ASSERT(c);
        parse_ok(c, "[Daemon]\n"
                    "StateDirectory=/srv/state\n"
                    "RuntimeDirectory=/run/rt\n"
                    "ListenSocket=/run/rt/ctl.sock\n"
                    "SocketGroup=ops\n"
                    "LogLevel=warning\n"
                    "[Runtime]\n"
                    "Runtime=crun\n"
                    "RuntimeArguments=--debug '--root=/run/my runc'\n"
                    "Conmon=/usr/local/bin/conmon\n"
                    "ConmonArguments=--syslog\n"
                    "[Tasks]\n"
                    "MaxRunning=1\n"
                    "MaxRunningPerEnvironment=3\n"
                    "MaxQueued=7\n"
                    "DefaultTimeoutSec=90\n"
                    "KillGraceSec=500ms\n"
                    "KeepFinished=0\n"
                    "DefaultService=php\n"
                    "DefaultProject=demo-project\n"
                    "DefaultEnvironment=feature/login\n"
                    "Secret=pa ss word\n"
                    "[Service php]\n"
                    "Bundle=/srv/bundles/php\n"
                    "Seccomp=/etc/profiles//php.json\n");
        ASSERT(config_finalize(c) == 0);

        ASSERT_STREQ(c->state_dir, "/srv/state");
        ASSERT_STREQ(c->runtime_dir, "/run/rt");
        ASSERT_STREQ(c->listen_socket, "/run/rt/ctl.sock");
        ASSERT_STREQ(c->socket_group, "ops");
        ASSERT(c->log_level == LOG_WARNING);
        ASSERT_STREQ(c->runtime, "crun");
        strv_expect(c->runtime_args, "--debug", "--root=/run/my runc", NULL);
        ASSERT_STREQ(c->conmon, "/usr/local/bin/conmon");
        strv_expect(c->conmon_args, "--syslog", NULL);
        ASSERT(c->max_running == 1);
        ASSERT(c->max_running_per_environment == 3);
        ASSERT(c->max_queued == 7);
        ASSERT(c->default_timeout_usec == 90 * SEC);
        ASSERT(c->kill_grace_usec == 500 * USEC_PER_MSEC);
        ASSERT(c->keep_finished == 0);
        ASSERT_STREQ(c->default_service, "php");
        ASSERT_STREQ(c->default_project, "demo-project");
        ASSERT_STREQ(c->default_environment, "feature/login");
        strv_expect(c->secrets, "pa ss word", NULL);

        ASSERT(c->n_services == 1);
        s = config_find_service(c, "php");
        ASSERT(s);
        ASSERT_STREQ(s->bundle, "/srv/bundles/php");
        ASSERT(s->seccomp == SECCOMP_MODE_PROFILE);
        ASSERT_STREQ(s->seccomp_profile, "/etc/profiles/php.json");
        ASSERT(!config_find_service(c, "cli"));
        ASSERT(!config_find_service(c, "PHP"));
        ASSERT(!config_find_service(c, NULL));
        ASSERT(!config_find_service(NULL, "php"));

        /* Seccomp= keywords, and a keyword after a path drops the path. */
        parse_ok(c, "[Service php]\nSeccomp=unconfined\n");
        ASSERT(s->seccomp == SECCOMP_MODE_UNCONFINED && !s->seccomp_profile);
        parse_ok(c, "[Service php]\nSeccomp=default\n");
        ASSERT(s->seccomp == SECCOMP_MODE_DEFAULT);
        parse_ok(c, "[Service php]\nSeccomp=auto\n");
        ASSERT(s->seccomp == SECCOMP_MODE_AUTO);

        /* Init=: a path, "no", or empty for the default. */
        parse_ok(c, "[Runtime]\nInit=/usr/libexec/podman/catatonit\n");
        ASSERT_STREQ(c->init, "/usr/libexec/podman/catatonit");
        parse_ok(c, "[Runtime]\nInit=no\n");
        ASSERT(!c->init);
        parse_ok(c, "[Runtime]\nInit=no\nInit=\n");
        ASSERT_STREQ(c->init, "/usr/bin/catatonit");

        /* Durations: "infinity", 0 = no timeout, combinations. */
        parse_ok(c, "[Tasks]\nDefaultTimeoutSec=infinity\nKillGraceSec=0\n");
        ASSERT(c->default_timeout_usec == USEC_INFINITY);
        ASSERT(c->kill_grace_usec == 0);
        parse_ok(c, "[Tasks]\nDefaultTimeoutSec=0\n");
        ASSERT(c->default_timeout_usec == USEC_INFINITY);
        parse_ok(c, "[Tasks]\nDefaultTimeoutSec=1h 30min\nKillGraceSec=1min 5s\n");
        ASSERT(c->default_timeout_usec == 5400 * SEC);
        ASSERT(c->kill_grace_usec == 65 * SEC);

        /* Every syslog level name. */
        static const char *const levels[] = {"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"};
        for (int i = 0; i < (int) ELEMENTSOF(levels); i++) {
                _cleanup_free_ char *t = NULL;
                ASSERT(asprintf(&t, "[Daemon]\nLogLevel=%s\n", levels[i]) > 0);
                parse_ok(c, t);
                ASSERT(c->log_level == i);
        }
}

static void test_empty_assignment_resets(void) {
        _cleanup_(config_freep) Config *c = config_new();

        ASSERT(c);
        parse_ok(c, "[Daemon]\nStateDirectory=/x\nListenSocket=/y.sock\nLogLevel=debug\n"
                    "[Runtime]\nRuntime=crun\n"
                    "[Tasks]\nMaxRunning=9\nDefaultTimeoutSec=1s\nDefaultService=php\n"
                    "[Service a]\nBundle=/a\nSeccomp=unconfined\n");
        parse_ok(c, "[Daemon]\nStateDirectory=\nListenSocket=\nLogLevel=\n"
                    "[Runtime]\nRuntime=\n"
                    "[Tasks]\nMaxRunning=\nDefaultTimeoutSec=\nDefaultService=\n"
                    "[Service a]\nSeccomp=\n");
        ASSERT_STREQ(c->state_dir, "/var/lib/lagoon-taskd");
        ASSERT(!c->listen_socket);
        ASSERT(c->log_level == LOG_INFO);
        ASSERT(!c->runtime);
        ASSERT(c->max_running == 4);
        ASSERT(c->default_timeout_usec == 6 * 3600 * SEC);
        ASSERT_STREQ(c->default_service, "cli");
        ASSERT(config_find_service(c, "a")->seccomp == SECCOMP_MODE_AUTO);
}

static void test_changes(void) {
        _cleanup_(config_freep) Config *a = config_new(), *b = config_new();
        _cleanup_strv_free_ char **l = NULL, **none = NULL;

        ASSERT(a && b);
        parse_ok(a, "[Tasks]\nMaxRunning=4\nMaxRunning=6\nKeepFinished=7\nSecret=hunter2hunter\n"
                    "[Runtime]\nRuntimeArguments=--a\n[Service a]\nBundle=/a\n[Service gone]\nBundle=/g\n");
        parse_ok(b, "[Tasks]\nMaxRunning=8\nKillGraceSec=30s\nSecret=other-secret-value\n"
                    "[Runtime]\nRuntimeArguments=--a\nRuntimeArguments=--b\n[Service a]\nBundle=/a\n");
        ASSERT(config_changes(a, b, &l) == 0);
        strv_expect(l, "[Tasks] MaxRunning=6 → 8", "[Tasks] KillGraceSec=30s (was the default)",
                    "[Tasks] Secret= changed (values not shown)", "[Runtime] RuntimeArguments=--a → --a --b",
                    "[Tasks] KeepFinished= back to the default (was 7)",
                    "[Service gone] Bundle= back to the default (was /g)",
                    "the secrets to mask changed: 1 now, 1 before (not shown)", NULL);
        for (char **x = l; *x; x++)
                ASSERT(!strstr(*x, "hunter2") && !strstr(*x, "other-secret"));
        /* An empty assignment resets a list: nothing of it is left to compare. */
        parse_ok(b, "[Runtime]\nRuntimeArguments=\n");
        strv_free(l);
        l = NULL;
        ASSERT(config_changes(b, b, &none) == 0 && none && !none[0]);
        ASSERT(config_changes(a, b, &l) == 0);
        ASSERT(strv_contains(l, "[Runtime] RuntimeArguments= back to the default (was --a)"));
}

static void test_lists(void) {
        _cleanup_(config_freep) Config *c = config_new();

        ASSERT(c);
        parse_ok(c, "[Runtime]\n"
                    "RuntimeArguments=--a \"b c\"\n"
                    "RuntimeArguments=--d\n"
                    "ConmonArguments=--x\n"
                    "[Tasks]\n"
                    "Secret=one\n"
                    "Secret=two\n"
                    "Secret=one\n");
        strv_expect(c->runtime_args, "--a", "b c", "--d", NULL);
        strv_expect(c->conmon_args, "--x", NULL);
        strv_expect(c->secrets, "one", "two", NULL); /* no duplicates */

        /* A second file appends; an empty assignment resets, then appends again. */
        parse_ok(c, "[Runtime]\n"
                    "RuntimeArguments=--e\n"
                    "ConmonArguments=\n"
                    "[Tasks]\n"
                    "Secret=\n"
                    "Secret=three\n");
        strv_expect(c->runtime_args, "--a", "b c", "--d", "--e", NULL);
        ASSERT(strv_length(c->conmon_args) == 0);
        strv_expect(c->secrets, "three", NULL);

        parse_ok(c, "[Runtime]\nRuntimeArguments=\nRuntimeArguments='' x\n");
        strv_expect(c->runtime_args, "", "x", NULL);
}

static void test_syntax(void) {
        _cleanup_(config_freep) Config *c = config_new();

        ASSERT(c);
        /* Whitespace around keys, '=' and values; CRLF line ends; no final newline. */
        parse_ok(c, "  [Tasks]  \r\n"
                    "\tMaxRunning   =   6  \r\n"
                    "   KeepFinished=3");
        ASSERT(c->max_running == 6);
        ASSERT(c->keep_finished == 3);

        /* '=' in the value is kept. */
        parse_ok(c, "[Runtime]\nRuntimeArguments=--opt=a=b\n");
        strv_expect(c->runtime_args, "--opt=a=b", NULL);
        parse_ok(c, "[Runtime]\nRuntimeArguments=\n");

        /* Continuation lines: the backslash becomes a space, comments inside are skipped,
         * a blank line ends the continuation. */
        parse_ok(c, "[Runtime]\n"
                    "RuntimeArguments=--a \\\n"
                    "# a comment in between\n"
                    "  --b\\\n"
                    "--c \\\n"
                    "\n"
                    "ConmonArguments=--x\n");
        strv_expect(c->runtime_args, "--a", "--b", "--c", NULL);
        strv_expect(c->conmon_args, "--x", NULL);

        /* An escaped backslash at the end is no continuation. */
        parse_ok(c, "[Runtime]\nRuntimeArguments=\nRuntimeArguments=a\\\\\nConmonArguments=\n");
        strv_expect(c->runtime_args, "a\\", NULL);
        ASSERT(strv_length(c->conmon_args) == 0);

        /* A continuation on the last line of the text. */
        parse_ok(c, "[Tasks]\nMaxQueued=12\\");
        ASSERT(c->max_queued == 12);

        /* A repeated section continues where it was. */
        parse_ok(c, "[Tasks]\nMaxRunning=1\n[Daemon]\nLogLevel=err\n[Tasks]\nMaxRunning=2\n");
        ASSERT(c->max_running == 2);
        ASSERT(c->log_level == LOG_ERR);

        /* Section names are case-sensitive, as in systemd. */
        _cleanup_free_ char *log = parse_expect(c, "[tasks]\nMaxRunning=3\n", -EINVAL);
        ASSERT(contains(log, "test.conf:1:"));
        ASSERT(count_lines(log) == 1);
        ASSERT(c->max_running == 2);
}

static void test_services(void) {
        _cleanup_(config_freep) Config *c = config_new();
        const ServiceConfig *s;

        ASSERT(c);
        parse_ok(c, "[Service cli]\nBundle=/b/cli\n"
                    "[Service  nginx ]\nBundle=/b/nginx\n"
                    "[Service cli]\nSeccomp=default\n");
        parse_ok(c, "[Service nginx]\nBundle=/b/nginx2\n[Service a-b_c.9]\nBundle=/b/x\n");
        ASSERT(config_finalize(c) == 0);

        ASSERT(c->n_services == 3);
        ASSERT_STREQ(c->services[0].name, "cli");
        ASSERT_STREQ(c->services[1].name, "nginx");
        ASSERT_STREQ(c->services[2].name, "a-b_c.9");

        s = config_find_service(c, "cli");
        ASSERT(s && s == &c->services[0]);
        ASSERT_STREQ(s->bundle, "/b/cli");
        ASSERT(s->seccomp == SECCOMP_MODE_DEFAULT);
        s = config_find_service(c, "nginx");
        ASSERT(s);
        ASSERT_STREQ(s->bundle, "/b/nginx2");
        ASSERT(s->seccomp == SECCOMP_MODE_AUTO);
        ASSERT(config_find_service(c, "a-b_c.9"));
}

static void test_missing_bundle(void) {
        _cleanup_(config_freep) Config *c = config_new();
        _cleanup_free_ char *log = NULL;
        int r;

        ASSERT(c);
        parse_ok(c, "[Tasks]\nMaxRunning=2\n\n[Service web]\nSeccomp=default\n");
        /* A later file may still supply it. */
        parse_ok(c, "[Service other]\nBundle=/srv/other\n");

        capture_begin();
        r = config_finalize(c);
        log = capture_end();
        ASSERT(r == -EINVAL);
        ASSERT(contains(log, "test.conf:4:"));
        ASSERT(contains(log, "web"));
        ASSERT(contains(log, "Bundle="));
        ASSERT(count_lines(log) == 1);

        parse_ok(c, "[Service web]\nBundle=/srv/web\n");
        ASSERT(config_finalize(c) == 0);
}

static void test_invalid_values(void) {
        static const struct {
                const char *text;
                unsigned line;
        } table[] = {
                {"[Tasks]\nMaxRunning=0\n", 2},
                {"[Tasks]\nMaxRunning=abc\n", 2},
                {"[Tasks]\nMaxRunning=4294967296\n", 2},
                {"[Tasks]\nMaxQueued=0\n", 2},
                {"[Tasks]\nKeepFinished=-1\n", 2},
                {"[Tasks]\nDefaultTimeoutSec=1 fortnight\n", 2},
                {"[Tasks]\nDefaultTimeoutSec=99999999999999999999w\n", 2},
                {"[Tasks]\nKillGraceSec=infinity\n", 2},
                {"[Runtime]\nInit=catatonit\n", 2},
                {"[Tasks]\nDefaultService=a b\n", 2},
                {"[Tasks]\nDefaultProject=a\tb\n", 2},
                {"[Tasks]\nSecretFile=relative.txt\n", 2},
                {"[Daemon]\nStateDirectory=relative\n", 2},
                {"[Daemon]\nRuntimeDirectory=~/run\n", 2},
                {"[Daemon]\nListenSocket=sock\n", 2},
                {"[Daemon]\nLogLevel=loud\n", 2},
                {"[Daemon]\nLogLevel=INFO\n", 2},
                {"[Daemon]\nSocketGroup=-x\n", 2},
                {"[Daemon]\nSocketGroup=a:b\n", 2},
                {"[Runtime]\nRuntime=./runc\n", 2},
                {"[Runtime]\nConmon=conmon --syslog\n", 2},
                {"[Runtime]\nRuntimeArguments='x\n", 2},
                {"[Service x]\nBundle=rel\n", 2},
                {"[Service x]\nBundle=/b\nSeccomp=none\n", 3},
                {"[Service x]\nBundle=/b\nSeccomp=rel/p.json\n", 3},
                {"\n\nMaxRunning=1\n", 3},
                {"[Tasks]\nMaxRunning\n", 2},
                {"[Tasks]\n = 4\n", 2},
                {"[Tasks]\nmaxrunning=4\n", 2},
                {"[Tasks\n", 1},
                {"[]\n", 1},
                {"[Service]\n", 1},
                {"[Service ]\n", 1},
                {"[Service a/b]\n", 1},
                {"[Servicex]\n", 1},
                {"[Daemon]\n\n[Nope]\nA=b\nc\n", 3},
                {"[Lagoon]\nBrokerURL=http://127.0.0.1/\n", 2},
                {"[Lagoon]\nAPIURL=http://api.example/graphql\n", 2},
                {"[Lagoon]\nAPIURL=amqp://127.0.0.1/\n", 2},
                {"[Kubernetes]\nServer=http://10.0.0.1:8080\n", 2},
                {"[Kubernetes]\nKubeletURL=http://10.0.0.2:10255\n", 2},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(config_freep) Config *c = config_new();
                _cleanup_free_ char *log = NULL;

                ASSERT(c);
                log = parse_expect(c, table[i].text, -EINVAL);
                if (!contains(log, "test.conf:%u: ", table[i].line) || count_lines(log) != 1) {
                        fprintf(stderr, "expected one error at test.conf:%u for:\n%s\n", table[i].line, table[i].text);
                        abort();
                }
        }

        /* An invalid value leaves the previous one in place. */
        _cleanup_(config_freep) Config *c = config_new();
        ASSERT(c);
        free(parse_expect(c, "[Tasks]\nMaxRunning=7\nMaxRunning=0\n", -EINVAL));
        ASSERT(c->max_running == 7);
}

static void test_secret_file(void) {
        _cleanup_(config_freep) Config *c = config_new();
        _cleanup_free_ char *f = NULL, *text = NULL, *log = NULL, *missing = NULL, *sub = NULL;

        ASSERT(c);
        f = write_file(tmp_dir, "secrets.txt", "alpha\n\n  beta with space \r\n\t\nalpha\ngamma");
        ASSERT(asprintf(&text, "[Tasks]\nSecret=zero\nSecretFile=%s\n", f) > 0);
        parse_ok(c, text);
        strv_expect(c->secrets, "zero", "alpha", "beta with space", "gamma", NULL);

        /* Unreadable: missing file, a directory. The message names the file. */
        missing = path_join(tmp_dir, "no-such-secrets");
        ASSERT(missing);
        text = mfree(text);
        ASSERT(asprintf(&text, "[Tasks]\nSecretFile=%s\nSecretFile=%s\n", missing, tmp_dir) > 0);
        log = parse_expect(c, text, -EINVAL);
        ASSERT(contains(log, "test.conf:2: "));
        ASSERT(contains(log, "%s", missing));
        ASSERT(contains(log, "test.conf:3: "));
        ASSERT(contains(log, "%s", tmp_dir));
        ASSERT(count_lines(log) == 2);

        /* A FIFO is refused without blocking. */
        sub = path_join(tmp_dir, "fifo");
        ASSERT(sub);
        ASSERT(mkfifo(sub, 0600) == 0);
        text = mfree(text);
        log = mfree(log);
        ASSERT(asprintf(&text, "[Tasks]\nSecretFile=%s\n", sub) > 0);
        log = parse_expect(c, text, -EINVAL);
        ASSERT(contains(log, "test.conf:2: "));
        ASSERT(contains(log, "%s", sub));

        /* SecretFile= empty resets the secret list too. */
        parse_ok(c, "[Tasks]\nSecretFile=\n");
        ASSERT(strv_length(c->secrets) == 0);
}

static void test_limits(void) {
        _cleanup_(config_freep) Config *c = config_new();
        _cleanup_free_ char *big = NULL, *log = NULL;
        size_t n;

        ASSERT(c);

        /* A line longer than 64 KiB, between good lines that still apply. */
        n = 70 * 1024;
        big = malloc(n + 100);
        ASSERT(big);
        strcpy(big, "[Tasks]\nSecret=");
        memset(big + strlen(big), 'x', n);
        strcpy(big + strlen("[Tasks]\nSecret=") + n, "\nMaxRunning=5\n");
        log = parse_expect(c, big, -EINVAL);
        ASSERT(contains(log, "test.conf:2: "));
        ASSERT(count_lines(log) == 1);
        ASSERT(c->max_running == 5);
        ASSERT(strv_length(c->secrets) == 0);

        /* A line of exactly 64 KiB is fine. */
        big = mfree(big);
        log = mfree(log);
        n = 64 * 1024;
        big = malloc(n + 100);
        ASSERT(big);
        strcpy(big, "[Tasks]\n");
        memset(big + 8, ' ', n);
        memcpy(big + 8 + n - strlen("MaxRunning=6"), "MaxRunning=6", strlen("MaxRunning=6"));
        big[8 + n] = '\0';
        parse_ok(c, big);
        ASSERT(c->max_running == 6);

        /* A continued line that grows beyond 64 KiB. */
        big = mfree(big);
        big = malloc(2 * 40 * 1024 + 100);
        ASSERT(big);
        {
                char *w = stpcpy(big, "[Tasks]\nSecret=");
                memset(w, 'y', 40 * 1024);
                w = stpcpy(w + 40 * 1024, "\\\n");
                memset(w, 'z', 40 * 1024);
                strcpy(w + 40 * 1024, "\n");
        }
        log = parse_expect(c, big, -EINVAL);
        ASSERT(contains(log, "test.conf:2: "));
        ASSERT(strv_length(c->secrets) == 0);

        /* A text larger than 1 MiB. */
        big = mfree(big);
        log = mfree(log);
        n = 1024 * 1024 + 1;
        big = malloc(n + 1);
        ASSERT(big);
        memset(big, '\n', n);
        big[n] = '\0';
        log = parse_expect(c, big, -EINVAL);
        ASSERT(contains(log, "test.conf: "));
        ASSERT(contains(log, "1 MiB"));

        /* A NUL byte inside a line. */
        log = mfree(log);
        static const char with_nul[] = "[Tasks]\nMaxRunning=3\0 junk\nMaxQueued=4\n";
        capture_begin();
        ASSERT(config_parse_string(c, "test.conf", with_nul, sizeof(with_nul) - 1) == -EINVAL);
        log = capture_end();
        ASSERT(contains(log, "test.conf:2: "));
        ASSERT(c->max_queued == 4);

        /* NULL text is an empty text. */
        ASSERT(config_parse_string(c, "test.conf", NULL, 0) == 0);
}

static void test_load_dropins(void) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *dir = NULL, *main_conf = NULL, *dropins = NULL, *other = NULL, *sub = NULL, *link = NULL,
                            *f = NULL, *text = NULL;

        dir = make_dir(tmp_dir, "dropins");
        main_conf = write_file(dir, "taskd.conf",
                               "[Tasks]\nMaxRunning=2\nMaxQueued=10\nSecret=main\n"
                               "[Runtime]\nRuntimeArguments=--main\n"
                               "[Service cli]\nBundle=/b/cli\n");
        dropins = make_dir(dir, "taskd.conf.d");
        /* Written out of order: applied in lexical order. */
        free(write_file(dropins, "20-b.conf", "[Tasks]\nMaxRunning=20\nSecret=b\n[Runtime]\nRuntimeArguments=--b\n"));
        free(write_file(dropins, "10-a.conf",
                        "[Tasks]\nMaxRunning=10\nMaxQueued=11\nSecret=a\n"
                        "[Runtime]\nRuntimeArguments=\nRuntimeArguments=--a\n"
                        "[Service cli]\nSeccomp=unconfined\n"));
        free(write_file(dropins, "30-c.conf", "[Service web]\nBundle=/b/web\n[Service cli]\nBundle=/b/cli2\n"));
        /* Ignored: wrong suffix, hidden, directories, dangling symlinks. */
        free(write_file(dropins, "90-z.conf.bak", "[Tasks]\nMaxRunning=99\n"));
        free(write_file(dropins, "README", "garbage\n"));
        free(write_file(dropins, ".99-hidden.conf", "[Tasks]\nMaxRunning=98\n"));
        free(write_file(dropins, "conf", "garbage\n"));
        sub = make_dir(dropins, "50-dir.conf");
        free(write_file(sub, "x.conf", "garbage\n"));
        link = path_join(dropins, "60-dangling.conf");
        ASSERT(link && symlink("/nonexistent/file.conf", link) == 0);
        /* A symlink to a regular file counts. */
        other = write_file(dir, "elsewhere.conf", "[Tasks]\nKeepFinished=7\n");
        f = path_join(dropins, "40-link.conf");
        ASSERT(f && symlink(other, f) == 0);

        capture_begin();
        ASSERT(config_load(main_conf, &c) == 0);
        free(capture_end());

        ASSERT(c->max_running == 20);
        ASSERT(c->max_queued == 11);
        ASSERT(c->keep_finished == 7);
        strv_expect(c->secrets, "main", "a", "b", NULL);
        strv_expect(c->runtime_args, "--a", "--b", NULL);
        ASSERT(c->n_services == 2);
        ASSERT_STREQ(config_find_service(c, "cli")->bundle, "/b/cli2");
        ASSERT(config_find_service(c, "cli")->seccomp == SECCOMP_MODE_UNCONFINED);
        ASSERT_STREQ(config_find_service(c, "web")->bundle, "/b/web");
        ASSERT_STREQ(c->listen_socket, "/run/lagoon-taskd/api.sock");

        /* Errors in two files: both reported, with their own names, then -EINVAL. */
        config_free(TAKE_PTR(c));
        free(write_file(dropins, "15-bad.conf", "[Tasks]\n\nMaxRunning=zero\n"));
        free(write_file(dropins, "25-bad.conf", "[Service broken]\nSeccomp=auto\n"));
        free(write_file(dir, "taskd.conf", "[Tasks]\nMaxRunning=2\n[Bad]\n"));
        capture_begin();
        ASSERT(config_load(main_conf, &c) == -EINVAL);
        text = capture_end();
        ASSERT(!c);
        ASSERT(contains(text, "%s:3: ", main_conf));
        ASSERT(contains(text, "%s/15-bad.conf:3: ", dropins));
        ASSERT(contains(text, "%s/25-bad.conf:1: ", dropins));
        ASSERT(count_lines(text) == 3);
}

static void test_load_missing(void) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *missing = NULL, *log = NULL, *dir = NULL, *f = NULL;
        int r;

        /* An explicit path must exist. */
        missing = path_join(tmp_dir, "missing.conf");
        ASSERT(missing);
        capture_begin();
        r = config_load(missing, &c);
        log = capture_end();
        ASSERT(r == -ENOENT);
        ASSERT(!c);
        ASSERT(contains(log, "%s", missing));

        /* Drop-ins still apply when the main file of an implicit path is missing; an
         * explicit missing path fails before them. */
        dir = make_dir(tmp_dir, "only-dropins.conf.d");
        free(write_file(dir, "a.conf", "[Tasks]\nMaxRunning=3\n"));
        f = path_join(tmp_dir, "only-dropins.conf");
        ASSERT(f);
        ASSERT(config_load(f, &c) == -ENOENT);

        /* A directory where the file should be. */
        capture_begin();
        r = config_load(tmp_dir, &c);
        free(capture_end());
        ASSERT(r == -EINVAL);

        /* The default path: missing is fine (defaults). Only testable when this machine has
         * no /etc/lagoon-taskd/taskd.conf and no drop-in directory. */
        if (access(CONFIG_PATH_DEFAULT, F_OK) < 0 && errno == ENOENT && access(CONFIG_PATH_DEFAULT ".d", F_OK) < 0 &&
            errno == ENOENT) {
                ASSERT(config_load(NULL, &c) == 0);
                check_defaults(c);
                ASSERT_STREQ(c->listen_socket, "/run/lagoon-taskd/api.sock");
        } else
                printf("note: %s exists here, not testing the missing default path\n", CONFIG_PATH_DEFAULT);
}

static void test_sample_good(void) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *path = NULL, *log = NULL;
        const ServiceConfig *s;
        int r;

        ASSERT(asprintf(&path, "%s/good.conf", data_dir()) > 0);
        capture_begin();
        r = config_load(path, &c);
        log = capture_end();
        ASSERT(r == 0);
        ASSERT(isempty(log));

        ASSERT_STREQ(c->state_dir, "/srv/taskd/state");
        ASSERT_STREQ(c->runtime_dir, "/run/taskd-test");
        ASSERT_STREQ(c->listen_socket, "/run/taskd-test/control.sock");
        ASSERT_STREQ(c->socket_group, "lagoon-ops");
        ASSERT(c->log_level == LOG_DEBUG);
        ASSERT_STREQ(c->runtime, "/usr/bin/crun");
        strv_expect(c->runtime_args, "--systemd-cgroup", NULL);
        ASSERT_STREQ(c->conmon, "conmon");
        strv_expect(c->conmon_args, "--log-level=debug", "--syslog", NULL);
        ASSERT(c->max_running == 16);
        ASSERT(c->max_running_per_environment == 2);
        ASSERT(c->max_queued == 50);
        ASSERT(c->default_timeout_usec == 5400 * SEC);
        ASSERT(c->kill_grace_usec == 5 * SEC);
        ASSERT(c->keep_finished == 20);
        ASSERT_STREQ(c->default_service, "cli");
        ASSERT_STREQ(c->default_project, "demo");
        ASSERT_STREQ(c->default_environment, "main");
        strv_expect(c->secrets, "s3cr3t-one", "s3cr3t-two", "s3cr3t-three", NULL);

        ASSERT(c->n_services == 3);
        s = config_find_service(c, "cli");
        ASSERT(s && s->seccomp == SECCOMP_MODE_AUTO);
        ASSERT_STREQ(s->bundle, "/var/lib/lagoon-taskd/bundles/cli");
        s = config_find_service(c, "nginx");
        ASSERT(s && s->seccomp == SECCOMP_MODE_PROFILE);
        ASSERT_STREQ(s->bundle, "/var/lib/lagoon-taskd/bundles/nginx");
        ASSERT_STREQ(s->seccomp_profile, "/etc/lagoon-taskd/seccomp/nginx.json");
        s = config_find_service(c, "php.fpm-8_2");
        ASSERT(s && s->seccomp == SECCOMP_MODE_AUTO);
        ASSERT_STREQ(s->bundle, "/var/lib/lagoon-taskd/bundles/php");
}

/* Each broken-*.conf: -EINVAL, an error at each line after "# error below", no others. */
static void test_sample_broken_one(const char *path) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *text = NULL, *log = NULL;
        size_t size = 0, n_expected = 0, n_reported = 0;
        unsigned line = 1;
        int r;

        printf("checking %s\n", path);
        ASSERT(read_full_file(path, 1024 * 1024, &text, &size) == 0);

        capture_begin();
        r = config_load(path, &c);
        log = capture_end();
        ASSERT(r == -EINVAL);
        ASSERT(!c);

        for (const char *p = text; *p; line++) {
                const char *e = strchrnul(p, '\n');
                if ((size_t) (e - p) == strlen("# error below") && startswith(p, "# error below")) {
                        n_expected++;
                        if (!contains(log, "%s:%u: ", path, line + 1)) {
                                fprintf(stderr, "%s: no error reported at line %u\n", path, line + 1);
                                abort();
                        }
                }
                p = *e ? e + 1 : e;
        }
        ASSERT(n_expected > 0);

        for (const char *p = log; (p = strstr(p, path)); p += strlen(path))
                n_reported++;
        if (n_reported != n_expected || count_lines(log) != n_expected) {
                fprintf(stderr, "%s: %zu errors expected, %zu reported\n", path, n_expected, n_reported);
                abort();
        }
}

static void test_sample_broken(void) {
        _cleanup_strv_free_ char **names = NULL;
        DIR *d;
        struct dirent *de;

        d = opendir(data_dir());
        ASSERT(d);
        while ((de = readdir(d)))
                if (startswith(de->d_name, "broken-"))
                        ASSERT(strv_extend(&names, de->d_name) == 0);
        closedir(d);
        ASSERT(strv_length(names) >= 10);

        for (char **n = names; *n; n++) {
                _cleanup_free_ char *path = NULL;
                ASSERT(asprintf(&path, "%s/%s", data_dir(), *n) > 0);
                test_sample_broken_one(path);
        }
}

/* docs/taskd.conf.example must load as shipped (all defaults) and with every setting
 * uncommented, so the documentation cannot drift from the parser. */
static void test_example_file(void) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL, *secrets = NULL, *log = NULL;
        _cleanup_free_ char *out = NULL, *copy = NULL;
        size_t size = 0, out_size = 0;
        FILE *f;
        bool continued = false;
        const char *src = getenv("TEST_SRCDIR") ?: ".";

        ASSERT(asprintf(&path, "%s/docs/taskd.conf.example", src) > 0);
        if (access(path, F_OK) < 0) {
                printf("note: %s missing, skipping the example file test\n", path);
                return;
        }
        capture_begin();
        ASSERT(config_load(path, &c) == 0);
        log = capture_end();
        ASSERT(isempty(log));
        check_defaults(c);
        config_free(TAKE_PTR(c));

        /* Uncomment "#Key=…", "#[Section …]" and the continuation lines that follow. */
        ASSERT(read_full_file(path, 1024 * 1024, &text, &size) == 0);
        secrets = write_file(tmp_dir, "example-secrets", "from-file\n");
        f = open_memstream(&out, &out_size);
        ASSERT(f);
        for (char *l = text, *e; *l; l = *e ? e + 1 : e) {
                e = strchrnul(l, '\n');
                size_t n = (size_t) (e - l);
                bool uncomment = l[0] == '#' && (continued || (n > 1 && (l[1] == '[' || (l[1] >= 'A' && l[1] <= 'Z'))));
                const char *line = uncomment ? l + 1 : l;
                size_t len = uncomment ? n - 1 : n;

                if (uncomment && startswith(line, "SecretFile=/"))
                        fprintf(f, "SecretFile=%s\n", secrets);
                else if (uncomment && (startswith(line, "BrokerPasswordFile=/") || startswith(line, "JWTSecretFile=/")))
                        fprintf(f, "%.*s%s\n", (int) (strchr(line, '=') + 1 - line), line, secrets);
                else
                        fprintf(f, "%.*s\n", (int) len, line);
                continued = uncomment && len > 0 && line[len - 1] == '\\';
        }
        ASSERT(fclose(f) == 0);
        copy = write_file(tmp_dir, "example-uncommented.conf", out);

        capture_begin();
        ASSERT(config_load(copy, &c) == 0);
        free(capture_end());
        ASSERT_STREQ(c->state_dir, "/var/lib/lagoon-taskd");
        ASSERT_STREQ(c->listen_socket, "/run/lagoon-taskd/api.sock");
        ASSERT(c->max_running == 4 && c->max_queued == 1000 && c->keep_finished == 100);
        ASSERT(c->default_timeout_usec == 6 * 3600 * SEC && c->kill_grace_usec == 10 * SEC);
        strv_expect(c->runtime_args, "--root=/run/lagoon-taskd/runc", "--debug", NULL);
        strv_expect(c->conmon_args, "--log-level=debug", "--syslog", NULL);
        strv_expect(c->secrets, "example-database-password", "from-file", NULL);
        ASSERT(c->n_services == 2);
        ASSERT(config_find_service(c, "cli")->seccomp == SECCOMP_MODE_AUTO);
        ASSERT(config_find_service(c, "nginx")->seccomp == SECCOMP_MODE_PROFILE);
        ASSERT_STREQ(c->target_name, "my-cluster");
        ASSERT_STREQ(c->broker_password, "from-file");
        ASSERT(c->n_images == 1 && config_find_image(c, "uselagoon/task-activestandby:latest"));
}

static void write_tmp(const char *name, const char *content, char **ret_path) {
        _cleanup_free_ char *p = path_join(tmp_dir, name);

        ASSERT(p);
        ASSERT(write_file_atomic(p, content, strlen(content), 0600) >= 0);
        *ret_path = TAKE_PTR(p);
}

static void test_lagoon(void) {
        _cleanup_(config_freep) Config *c = config_new();
        _cleanup_free_ char *pw = NULL, *jwt = NULL, *text = NULL, *log = NULL;

        ASSERT(c);
        /* Defaults. */
        ASSERT(!c->target_name && !c->broker_url && !c->api_url);
        ASSERT(c->broker_heartbeat_sec == 30 && c->broker_prefetch == 4);
        ASSERT_STREQ(c->jwt_audience, "api.dev");
        ASSERT(c->log_interval_usec == 5 * USEC_PER_SEC);
        ASSERT(c->log_size_max == 8 * 1024 * 1024);
        strv_expect(c->secret_variables, "*PASSWORD*", "*SECRET*", "*TOKEN*", "*_KEY", NULL);

        write_tmp("broker-pw", "hunter2\n\n", &pw);
        write_tmp("jwt", "jwt-secret-value \n", &jwt);
        ASSERT(asprintf(&text,
                        "[Lagoon]\nTargetName=ci-local-controller-kubernetes\n"
                        "BrokerURL=amqps://broker.example:5671/lagoon\nBrokerUser=lagoon\n"
                        "BrokerPasswordFile=%s\nBrokerHeartbeatSec=10\nBrokerPrefetch=8\n"
                        "APIURL=https://api.example/graphql\nJWTSecretFile=%s\nJWTAudience=api.prod\n"
                        "LogUpdateIntervalSec=2s\nLogSizeMax=64K\nSecretVariables=\nSecretVariables=*PASS* X\n"
                        "APIHost=api.example\nSSHHost=ssh.example\nSSHPort=22\nTokenHost=token.example\n"
                        "TokenPort=2222\nSSHKeyFile=/etc/lagoon/key\nDeployerTokenFile=/etc/lagoon/token\n"
                        "HTTPProxy=http://proxy:3128\nHTTPSProxy=http://sproxy:3128\nNoProxy=.local,10.0.0.0/8\n"
                        "[Image example.com/test-task-image:v0.0.1]\nBundle=/b/img\nSeccomp=unconfined\n",
                        pw, jwt) >= 0);
        parse_ok(c, text);
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->target_name, "ci-local-controller-kubernetes");
        ASSERT_STREQ(c->broker_url, "amqps://broker.example:5671/lagoon");
        ASSERT_STREQ(c->broker_user, "lagoon");
        ASSERT_STREQ(c->broker_password, "hunter2");
        ASSERT_STREQ(c->jwt_secret, "jwt-secret-value");
        ASSERT_STREQ(c->jwt_audience, "api.prod");
        ASSERT(c->broker_heartbeat_sec == 10 && c->broker_prefetch == 8);
        ASSERT(c->log_interval_usec == 2 * USEC_PER_SEC && c->log_size_max == 64 * 1024);
        strv_expect(c->secret_variables, "*PASS*", "X", NULL);
        ASSERT_STREQ(c->lagoon_ssh_port, "22");
        ASSERT_STREQ(c->http_proxy, "http://proxy:3128");
        ASSERT_STREQ(c->https_proxy, "http://sproxy:3128");
        ASSERT_STREQ(c->no_proxy, ".local,10.0.0.0/8");
        ASSERT_STREQ(c->deployer_token_file, "/etc/lagoon/token");
        /* Credentials join the secrets, so they are masked in task output. */
        ASSERT(strv_contains(c->secrets, "hunter2") && strv_contains(c->secrets, "jwt-secret-value"));
        ASSERT(c->n_images == 1 && !config_find_service(c, "example.com/test-task-image:v0.0.1"));
        ASSERT(config_find_image(c, "example.com/test-task-image:v0.0.1"));
        ASSERT(config_find_image(c, "example.com/test-task-image:v0.0.1")->seccomp == SECCOMP_MODE_UNCONFINED);

        /* Bad values, each reported as FILE:LINE without echoing a URL or secret. */
        config_free(c);
        c = config_new();
        log = parse_expect(c,
                           "[Lagoon]\nBrokerURL=ftp://user:pw@x\nBrokerPasswordFile=/nonexistent/pw\n"
                           "LogSizeMax=12\nBrokerPrefetch=0\nTargetName=has space\n[Image bad ref!]\n",
                           -EINVAL);
        ASSERT(strstr(log, "test.conf:2: BrokerURL= needs"));
        ASSERT(!strstr(log, "user:pw"));
        ASSERT(strstr(log, "test.conf:3: Failed to read BrokerPasswordFile=/nonexistent/pw: No such file"));
        ASSERT(strstr(log, "test.conf:4: LogSizeMax= must be at least 4096"));
        ASSERT(strstr(log, "test.conf:5:"));
        ASSERT(strstr(log, "test.conf:6: TargetName= needs one word"));
        ASSERT(strstr(log, "test.conf:7: Section [Image REFERENCE]"));

        /* BrokerURL= without TargetName=, APIURL= without credentials. */
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nBrokerURL=amqp://127.0.0.1/\nAPIURL=http://127.0.0.1/graphql\n[Image x/y]\n");
        capture_begin();
        ASSERT(config_finalize(c) == -EINVAL);
        log = mfree(log);
        log = capture_end();
        ASSERT(strstr(log, "need TargetName="));
        ASSERT(strstr(log, "APIURL= needs APITokenFile= or JWTSecretFile="));
        ASSERT(strstr(log, "[Image x/y] has no Bundle="));

        /* The password in BrokerURL= is masked in task output like BrokerPasswordFile='s. */
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nTargetName=t\nBrokerURL=amqps://user:p%40ss%3Aw0rd@rabbit.example:5671/vh\n");
        ASSERT(config_finalize(c) == 0);
        strv_expect(c->secrets, "p@ss:w0rd", NULL);
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nTargetName=t\nBrokerURL=amqp://user@rabbit/\n");
        ASSERT(config_finalize(c) == 0);
        ASSERT(strv_length(c->secrets) == 0);

        /* remote-controller's namespace prefixes */
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nNamespacePrefix=abc\n");
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->namespace_prefix, "abc");
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nNamespacePrefix=abc\nRandomNamespacePrefix=yes\nControllerNamespace=lagoon\n");
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->namespace_prefix, "a30fb066"); /* sha1("lagoon") = a30fb066… */
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nRandomNamespacePrefix=yes\n");
        capture_begin();
        ASSERT(config_finalize(c) == -EINVAL);
        log = mfree(log);
        log = capture_end();
        ASSERT(strstr(log, "RandomNamespacePrefix=yes needs ControllerNamespace="));
        config_free(c);
        c = config_new();
        log = mfree(log);
        log = parse_expect(c, "[Lagoon]\nNamespacePrefix=Ab_c\nControllerNamespace=-x\n", -EINVAL);
        ASSERT(strstr(log, "test.conf:2: NamespacePrefix= must be a DNS label"));
        ASSERT(strstr(log, "test.conf:3: ControllerNamespace= must be a DNS label"));

        /* Coexistence with remote-controller: a second target name, on the bus. */
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nTargetName=t\nBrokerURL=amqp://127.0.0.1/\nRemoteControllerTarget=t-builds\n");
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->rc_target, "t-builds");
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nTargetName=t\nRemoteControllerTarget=t\n");
        capture_begin();
        ASSERT(config_finalize(c) == -EINVAL);
        log = mfree(log);
        log = capture_end();
        ASSERT(strstr(log, "RemoteControllerTarget= needs BrokerURL="));
        ASSERT(strstr(log, "RemoteControllerTarget= must differ from TargetName="));
        config_free(c);
        c = config_new();
        log = mfree(log);
        log = parse_expect(c, "[Lagoon]\nRemoteControllerTarget=two words\n", -EINVAL);
        ASSERT(strstr(log, "test.conf:2: RemoteControllerTarget= needs one word"));

        /* Lagoon's rootless feature flag, as remote-controller's options take it */
        config_free(c);
        c = config_new();
        parse_ok(c, "[Lagoon]\nForceRootlessWorkload=disabled\nDefaultRootlessWorkload=enabled\n");
        ASSERT_STREQ(c->rootless_force, "disabled");
        ASSERT_STREQ(c->rootless_default, "enabled");
        parse_ok(c, "[Lagoon]\nForceRootlessWorkload=\n");
        ASSERT(!c->rootless_force);
        log = mfree(log);
        log = parse_expect(c, "[Lagoon]\nDefaultRootlessWorkload=yes\n", -EINVAL);
        ASSERT(strstr(log, "test.conf:2: DefaultRootlessWorkload= takes enabled or disabled, got 'yes'."));
}

static void test_kubernetes(void) {
        _cleanup_(config_freep) Config *c = config_new();
        _cleanup_free_ char *log = NULL;

        ASSERT(c);
        ASSERT(!config_kube_enabled(c));
        ASSERT(streq(c->containerd_state, "/run/containerd"));
        ASSERT_STREQ(c->containerd_namespace, "k8s.io");
        ASSERT_STREQ(c->crio_run_root, "/run/containers/storage");
        ASSERT(c->keep_task_pods == 1 && !c->kube_in_cluster);

        parse_ok(c, "[Kubernetes]\nKubeconfig=/etc/lagoon-taskd/kubeconfig\nContext=prod\n"
                    "KubeletURL=https://127.0.0.1:10250\nKubeletCAFile=/etc/kubernetes/pki/ca.crt\n"
                    "KubeletTokenFile=/etc/lagoon-taskd/kubelet-token\nContainerdState=/run/k3s/containerd//\n"
                    "KeepTaskPods=3\n");
        ASSERT(config_finalize(c) >= 0);
        ASSERT(config_kube_enabled(c));
        ASSERT_STREQ(c->kubeconfig, "/etc/lagoon-taskd/kubeconfig");
        ASSERT_STREQ(c->kube_context, "prod");
        ASSERT_STREQ(c->kubelet_url, "https://127.0.0.1:10250");
        ASSERT_STREQ(c->containerd_state, "/run/k3s/containerd");
        ASSERT(c->keep_task_pods == 3);
        /* NodeName= defaults to the host name once node mode is on. */
        ASSERT(!isempty(c->node_name));

        /* Conflicting and incomplete credentials are refused after reading everything. */
        config_free(c);
        c = config_new();
        parse_ok(c, "[Kubernetes]\nKubeconfig=/k\nServer=https://10.0.0.1:6443\nInCluster=yes\n"
                    "KubeletCertFile=/c\nNodeName=node-1\n");
        capture_begin();
        ASSERT(config_finalize(c) == -EINVAL);
        log = capture_end();
        ASSERT(strstr(log, "exclude each other"));
        ASSERT(strstr(log, "needs its key"));
        ASSERT_STREQ(c->node_name, "node-1");

        config_free(c);
        c = config_new();
        parse_ok(c, "[Kubernetes]\nTokenFile=/t\nContext=x\n");
        capture_begin();
        ASSERT(config_finalize(c) == -EINVAL);
        log = mfree(log);
        log = capture_end();
        ASSERT(strstr(log, "go with Server="));
        ASSERT(strstr(log, "Context= needs Kubeconfig="));

        log = mfree(log);
        log = parse_expect(c, "[Kubernetes]\nInCluster=maybe\nServer=ftp://x\nKubeletURL=\nCAFile=rel\n", -EINVAL);
        ASSERT(strstr(log, "test.conf:2: InCluster= needs yes or no"));
        ASSERT(strstr(log, "test.conf:3: Server= needs"));
        ASSERT(strstr(log, "test.conf:5: CAFile= needs an absolute path"));
}

/* Runtime= unset: crun when PATH has it, unless the host is a cgroups v1/v2 hybrid
 * (cgroup2 at the unified path), which crun refuses; else runc. */
static void test_default_runtime(void) {
        _cleanup_free_ char *dir = NULL, *crun = NULL, *controllers = NULL, *text = NULL,
                            *old_path = strdup(getenv("PATH") ?: "");
        _cleanup_(config_freep) Config *c = NULL;
        const char *reason = NULL;
        struct statfs sfs;

        ASSERT(old_path);
        dir = path_join(tmp_dir, "bin");
        ASSERT(dir && mkdir(dir, 0755) == 0);
        ASSERT(setenv("PATH", dir, 1) == 0);

        ASSERT_STREQ(config_default_runtime(dir, &reason), "runc");
        ASSERT(strstr(reason, "not installed"));

        crun = write_file(dir, "crun", "#!/bin/sh\n");
        ASSERT(chmod(crun, 0644) == 0);
        ASSERT_STREQ(config_default_runtime(dir, NULL), "runc"); /* not executable: not found */
        ASSERT(chmod(crun, 0755) == 0);
        ASSERT_STREQ(config_default_runtime(dir, &reason), "crun"); /* a plain directory: no cgroup2 */
        ASSERT(strstr(reason, "preferred"));
        ASSERT_STREQ(config_default_runtime("/nonexistent", NULL), "crun"); /* a cgroup2-only host */
        ASSERT_STREQ(config_default_runtime(NULL, NULL), "crun");
        /* A hybrid host: cgroup2 with controllers (this one has hugetlb there), which crun
         * refuses; with none, crun runs. */
        controllers = path_join(CONFIG_CGROUP_UNIFIED, "cgroup.controllers");
        ASSERT(controllers);
        if (statfs(CONFIG_CGROUP_UNIFIED, &sfs) >= 0 && sfs.f_type == CGROUP2_SUPER_MAGIC &&
            read_full_file(controllers, 4096, &text, NULL) >= 0) {
                ASSERT_STREQ(config_default_runtime(CONFIG_CGROUP_UNIFIED, &reason),
                             isempty(text + strspn(text, " \n")) ? "crun" : "runc");
                printf("note: %s/cgroup.controllers: %.*s: %s\n", CONFIG_CGROUP_UNIFIED, (int) strcspn(text, "\n"),
                       text, reason);
        } else
                printf("note: no cgroup2 at %s, not testing a hybrid host\n", CONFIG_CGROUP_UNIFIED);

        /* config_finalize() fills it in and says why; a Runtime= set stays, with no reason. */
        c = config_new();
        ASSERT(c);
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->runtime, config_default_runtime(CONFIG_CGROUP_UNIFIED, NULL));
        ASSERT(c->runtime_default_reason);
        config_free(TAKE_PTR(c));
        c = config_new();
        ASSERT(c);
        parse_ok(c, "[Runtime]\nRuntime=/usr/bin/runc\n");
        ASSERT(config_finalize(c) == 0);
        ASSERT_STREQ(c->runtime, "/usr/bin/runc");
        ASSERT(!c->runtime_default_reason);

        ASSERT(setenv("PATH", old_path, 1) == 0);
        ASSERT(unlink(crun) == 0 && rmdir(dir) == 0);
}

int main(void) {
        char t[] = "/tmp/test-config-XXXXXX";

        /* Errors must print as plain "FILE:LINE: message", whatever the environment says. */
        unsetenv("JOURNAL_STREAM");
        log_set_max_level(LOG_INFO);

        tmp_dir = mkdtemp(t);
        ASSERT(tmp_dir);

        test_defaults();
        test_all_keys();
        test_empty_assignment_resets();
        test_changes();
        test_lists();
        test_syntax();
        test_services();
        test_missing_bundle();
        test_invalid_values();
        test_secret_file();
        test_limits();
        test_load_dropins();
        test_load_missing();
        test_sample_good();
        test_sample_broken();
        test_example_file();
        test_lagoon();
        test_kubernetes();
        test_default_runtime();

        ASSERT(rm_rf(tmp_dir) >= 0);
        printf("test-config: all tests passed\n");
        return 0;
}
