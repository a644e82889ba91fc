/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Integration test of the runtime launcher against the real conmon and runc (root only):
 * a busybox-static service bundle in a temporary directory, tasks run as overlay clones of
 * it on an sd-event loop. Checks exit codes, the CRI log, the overlay's isolation, kill,
 * adoption by a "restarted daemon", a lost conmon, failed starts and that remove leaves
 * nothing behind (mounts, directories, runtime state, child processes, fds). */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "fs-util.h"
#include "json.h"
#include "launcher-runtime.h"
#include "log.h"
#include "task.h"
#include "launch.h"
#include "loop.h"
#include "tests.h"

#define LEAK_FD 100

static char *tmpdir;
static Config *config;
static sd_event *event;
static char *svc_rootfs;

typedef struct Result {
        bool called;
        unsigned count;
        int status;
        char *error;
        TaskLaunchStep step;
} Result;

static void on_exit_cb(RuntimeContainer *c, int status, const char *error, void *userdata) {
        Result *res = userdata;

        res->called = true;
        res->count++;
        res->status = status;
        free(res->error);
        res->error = error ? strdup(error) : NULL;
}

static void on_step_cb(RuntimeContainer *c, TaskLaunchStep step, void *userdata) {
        Result *res = userdata;

        ASSERT(step > res->step);
        res->step = step;
}

/* The exit callback, exactly once: a second one would come within the extra 30 ms. */
static void run_until(Result *res, unsigned timeout_s) {
        loop_run_until(event, &res->called, timeout_s * USEC_PER_SEC);
        loop_run_for(event, 30 * USEC_PER_MSEC);
        ASSERT(res->count == 1);
}

static Task *make_task(const char *id, const char *command) {
        return launch_test_task(id, command, "demo", "demo-main");
}

static char *container_dir(const char *id) {
        char *d = NULL;

        ASSERT(asprintf(&d, "%s/state/containers/%s", tmpdir, id) >= 0);
        return d;
}

static bool exists(const char *path) {
        return access(path, F_OK) == 0;
}

static bool runtime_knows(const char *task_id) {
        return shell("runc state lagoon-task-%s >/dev/null 2>&1", task_id) == 0;
}

static int start_task(const char *service, Task *t, Result *res, RuntimeContainer **ret, char **ret_error) {
        _cleanup_free_ char *dir = container_dir(t->id), *env1 = NULL;
        const ServiceConfig *svc = config_find_service(config, service);
        uint64_t t0;
        int r;

        ASSERT(svc);
        ASSERT(asprintf(&env1, "TASK_DATA_ID=%s", t->id) >= 0);
        char *env[] = {env1, (char *) "LAGOON_PROJECT=demo", NULL};
        RuntimeSpec spec = {
                .config = config,
                .service = svc,
                .task = t,
                .env = env,
                .container_dir = dir,
        };
        *res = (Result){};
        t0 = now_ms();
        r = runtime_container_start(event, &spec, on_exit_cb, res, ret, ret_error);
        if (r < 0)
                return r;
        /* The rest of the launch runs on the loop: created, then started (or failed). */
        runtime_container_set_step_callback(*ret, on_step_cb);
        for (uint64_t end = now_ms() + 30000; res->step < TASK_LAUNCH_STARTED && !res->called;) {
                ASSERT(now_ms() < end);
                ASSERT_OK(sd_event_run(event, 100 * USEC_PER_MSEC));
        }
        if (res->called && res->error) {
                /* A launch failure: reported once, with everything still to clean up. */
                *ret = runtime_container_free(*ret);
                *ret_error = TAKE_PTR(res->error);
                (void) runtime_container_remove(config, t->id, dir); /* a broken runtime cannot delete */
                return res->status;
        }
        printf("  start of %s took %" PRIu64 " ms\n", t->id, now_ms() - t0);
        return 0;
}

static void remove_and_check(Task *t) {
        _cleanup_free_ char *dir = container_dir(t->id);

        ASSERT_OK(runtime_container_remove(config, t->id, dir));
        ASSERT(!exists(dir));
        ASSERT(!mounted_under(dir));
        ASSERT(!runtime_knows(t->id));
        /* Idempotent. */
        ASSERT_OK(runtime_container_remove(config, t->id, dir));
}

/* Runs a command to its end; returns the status and leaves the container dir for checks. */
static int run_task(const char *id, const char *command, Task **ret_task) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_free_ char *error = NULL;
        Task *t = make_task(id, command);
        Result res;
        int r;

        r = start_task("cli", t, &res, &c, &error);
        if (r < 0)
                fprintf(stderr, "start failed: %s\n", strna(error));
        ASSERT_OK(r);
        {
                _cleanup_free_ char *dir = container_dir(id), *log = path_in(dir, "ctr.log");
                ASSERT(streq(runtime_container_log_path(c), log));
        }
        run_until(&res, 30);
        *ret_task = t;
        return res.status;
}

static void test_exit_codes(void) {
        static const int codes[] = {0, 1, 3};

        printf("exit codes, log, overlay isolation, environment\n");
        for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
                _cleanup_(task_freep) Task *t = NULL;
                _cleanup_free_ char *id = NULL, *cmd = NULL, *dir = NULL, *log = NULL, *upper = NULL, *lower = NULL;

                ASSERT(asprintf(&id, "exit-%d", codes[i]) >= 0);
                ASSERT(asprintf(&cmd,
                                "echo out-%d; echo err-%d >&2; cat /svcfile; echo task-data > /written-by-task; "
                                "echo \"id=$TASK_DATA_ID cron=${CRONJOBS:-unset} host=$(hostname)\"; exit %d",
                                codes[i], codes[i], codes[i]) >= 0);
                ASSERT(run_task(id, cmd, &t) == codes[i]);

                dir = container_dir(id);
                log = path_in(dir, "ctr.log");
                ASSERT(file_contains(log, " stdout F out-"));
                ASSERT(file_contains(log, " stderr F err-"));
                ASSERT(file_contains(log, "stdout F service-data"));
                ASSERT(file_contains(log, "cron=unset"));
                ASSERT(file_contains(log, "host=task-exit-"));
                {
                        _cleanup_free_ char *cfg = path_in(dir, "config.json");
                        ASSERT(file_contains(cfg, "\"lagoon.sh/taskId\""));
                        ASSERT(file_contains(cfg, "\"cgroupsPath\""));
                        ASSERT(file_contains(cfg, "\"seccomp\""));
                }
                {
                        _cleanup_free_ char *want = NULL;
                        ASSERT(asprintf(&want, "id=%s ", id) >= 0);
                        ASSERT(file_contains(log, want));
                }
                /* The write went to the task's upper dir, never to the service. */
                upper = path_in(dir, "upper/written-by-task");
                lower = path_in(svc_rootfs, "written-by-task");
                ASSERT(file_contains(upper, "task-data"));
                ASSERT(!exists(lower));
                remove_and_check(t);
        }
}

static pid_t conmon_pid_of(const char *id) {
        _cleanup_free_ char *dir = container_dir(id), *p = path_in(dir, "conmon.pid"), *s = NULL;

        ASSERT_OK(read_full_file(p, 64, &s, NULL));
        return (pid_t) atoi(s);
}

/* SIGTERM to a container's PID 1 is ignored by the kernel unless it has a handler (Lagoon
 * images run tini as PID 1 for that). The "cli-hostpid" service shares the host's PID
 * namespace, so a plain "sleep 1000" dies of SIGTERM and conmon reports 128+15. */
static void test_kill(void) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_(task_freep) Task *t = make_task("kill-term", "sleep 1000");
        _cleanup_free_ char *error = NULL;
        Result res;

        printf("kill\n");
        ASSERT_OK(start_task("cli-hostpid", t, &res, &c, &error));
        for (int i = 0; i < 5; i++)
                ASSERT_OK(sd_event_run(event, 20 * USEC_PER_MSEC));
        ASSERT(!res.called);
        {
                /* The task's cgroup nests under ours in every hierarchy (cgroupfs driver,
                 * relative cgroupsPath). */
                _cleanup_free_ char *dir = container_dir(t->id), *pidfile = path_in(dir, "pidfile"), *s = NULL,
                                    *cg = NULL, *own = NULL;
                ASSERT_OK(read_full_file(pidfile, 64, &s, NULL));
                ASSERT(asprintf(&cg, "/proc/%d/cgroup", atoi(s)) >= 0);
                free(s);
                s = NULL;
                ASSERT_OK(read_full_file(cg, 1 << 16, &s, NULL));
                ASSERT_OK(read_full_file("/proc/self/cgroup", 1 << 16, &own, NULL));
                for (char *l = s, *o = own; l && *l && o && *o;) {
                        char *nl = strchr(l, '\n'), *onl = strchr(o, '\n');
                        size_t ol = onl ? (size_t) (onl - o) : strlen(o);
                        if (nl)
                                *nl = 0;
                        printf("  cgroup %s\n", l);
                        ASSERT(strstr(l, "/lagoon-taskd/lagoon-task-kill-term"));
                        /* Same hierarchy line prefix as ours ("4:memory:/process_api/…"). */
                        ASSERT(strncmp(l, o, ol) == 0);
                        l = nl ? nl + 1 : NULL;
                        o = onl ? onl + 1 : NULL;
                }
        }
        {
                /* The fd main() planted without O_CLOEXEC did not reach conmon. */
                _cleanup_free_ char *p = NULL;
                ASSERT(asprintf(&p, "/proc/%d/fd/%d", (int) conmon_pid_of(t->id), LEAK_FD) >= 0);
                ASSERT(!exists(p));
        }
        ASSERT_OK(runtime_container_kill(c, SIGTERM));
        run_until(&res, 30);
        ASSERT(res.status == 143);
        ASSERT(runtime_container_kill(c, SIGTERM) == -ESRCH); /* ended */
        c = runtime_container_free(c);
        remove_and_check(t);

        /* And SIGKILL on PID 1 of its own PID namespace. */
        task_free(t);
        t = make_task("kill-kill", "sleep 1000");
        ASSERT_OK(start_task("cli", t, &res, &c, &error));
        ASSERT_OK(runtime_container_kill(c, SIGKILL));
        run_until(&res, 30);
        ASSERT(res.status == 137);
        c = runtime_container_free(c);
        remove_and_check(t);
}

static void adopt(Task *t, Result *res, RuntimeContainer **ret) {
        _cleanup_free_ char *dir = container_dir(t->id);

        *res = (Result){};
        ASSERT_OK(runtime_container_adopt(event, config, t, dir, on_exit_cb, res, ret));
}

static void test_adopt(void) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_(task_freep) Task *t = make_task("adopt-running", "sleep 2; exit 7");
        _cleanup_free_ char *error = NULL, *dir = NULL, *exit_file = NULL;
        Result res, res2;

        printf("adoption\n");
        /* Running: the first "daemon" forgets it, a second one adopts it. */
        ASSERT_OK(start_task("cli", t, &res, &c, &error));
        c = runtime_container_free(c);
        adopt(t, &res2, &c);
        run_until(&res2, 30);
        ASSERT(res2.status == 7);
        ASSERT(!res.called);
        c = runtime_container_free(c);
        /* Adopting again after the end gives the same status, from the event loop. */
        adopt(t, &res2, &c);
        ASSERT(!res2.called);
        run_until(&res2, 5);
        ASSERT(res2.status == 7);
        c = runtime_container_free(c);
        remove_and_check(t);

        /* Ended while no daemon watched it. */
        task_free(t);
        t = make_task("adopt-ended", "sleep 1; exit 7");
        ASSERT_OK(start_task("cli", t, &res, &c, &error));
        c = runtime_container_free(c);
        dir = container_dir(t->id);
        exit_file = path_in(dir, "exit/lagoon-task-adopt-ended");
        for (uint64_t end = now_ms() + 30000; !exists(exit_file); usleep(50 * 1000))
                ASSERT(now_ms() < end);
        adopt(t, &res2, &c);
        run_until(&res2, 5);
        ASSERT(res2.status == 7);
        c = runtime_container_free(c);
        remove_and_check(t);

        /* The first daemon died between create and start: a runtime wrapper that ignores
         * "start" leaves the container in "created"; adoption starts it. */
        task_free(t);
        t = make_task("adopt-created", "exit 7");
        {
                _cleanup_free_ char *wrapper = path_in(tmpdir, "runc-no-start"), *saved = strdup(config->runtime);
                ASSERT(shell("printf '#!/bin/sh\n[ \"$1\" = start ] && exit 0\nexec runc \"$@\"\n' > '%s' && "
                             "chmod +x '%s'",
                             wrapper, wrapper) == 0);
                ASSERT_OK(free_and_strdup(&config->runtime, wrapper));
                ASSERT_OK(start_task("cli", t, &res, &c, &error));
                ASSERT_OK(free_and_strdup(&config->runtime, saved));
        }
        for (int i = 0; i < 10; i++)
                ASSERT_OK(sd_event_run(event, 20 * USEC_PER_MSEC));
        ASSERT(!res.called);
        ASSERT(shell("runc state lagoon-task-adopt-created | grep -q '\"created\"'") == 0);
        c = runtime_container_free(c);
        adopt(t, &res2, &c);
        run_until(&res2, 30);
        ASSERT(res2.status == 7);
        c = runtime_container_free(c);
        remove_and_check(t);

        /* Never started. */
        task_free(t);
        t = make_task("adopt-never", "true");
        free(dir);
        dir = container_dir(t->id);
        ASSERT(runtime_container_adopt(event, config, t, dir, on_exit_cb, &res2, &c) == -ENOENT);
        ASSERT_OK(mkdir_p(dir, 0700));
        ASSERT(runtime_container_adopt(event, config, t, dir, on_exit_cb, &res2, &c) == -ENOENT);
        ASSERT(!c);
        remove_and_check(t);
}

static void test_lost(void) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_(task_freep) Task *t = make_task("lost", "sleep 1000");
        _cleanup_free_ char *error = NULL;
        Result res;
        pid_t pid;

        printf("conmon dies without an exit file\n");
        ASSERT_OK(start_task("cli", t, &res, &c, &error));
        pid = conmon_pid_of(t->id);
        ASSERT(pid > 0);
        ASSERT(kill(pid, SIGKILL) == 0);
        run_until(&res, 30);
        ASSERT(res.status < 0);
        c = runtime_container_free(c);

        /* The adoption of a container whose conmon is gone reports it lost, too. */
        adopt(t, &res, &c);
        run_until(&res, 5);
        ASSERT(res.status < 0);
        c = runtime_container_free(c);
        /* remove kills the orphaned container. */
        remove_and_check(t);
}

static void expect_start_failure(const char *service, const char *id, const char *command, const char *needle) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_(task_freep) Task *t = make_task(id, command);
        _cleanup_free_ char *error = NULL, *dir = container_dir(id);
        Result res;
        int r;

        r = start_task(service, t, &res, &c, &error);
        printf("  %s: %s (%s)\n", id, strna(error), strerror(-r));
        ASSERT(r < 0);
        ASSERT(!c);
        ASSERT(error && strstr(error, needle));
        ASSERT(!exists(dir));
        ASSERT(!mounted_under(dir));
        ASSERT(!runtime_knows(id));
        for (int i = 0; i < 3; i++)
                ASSERT_OK(sd_event_run(event, 10 * USEC_PER_MSEC));
        ASSERT(res.count <= 1);
}

static void test_failures(void) {
        printf("failed starts\n");
        /* runc create fails: the rootfs has no /bin/sh. */
        expect_start_failure("empty", "fail-create", "true", "/bin/sh");
        /* A profile that cannot be loaded. */
        expect_start_failure("badseccomp", "fail-seccomp", "true", "no-such-profile.json");
        /* No config.json in the bundle. */
        expect_start_failure("nobundle", "fail-bundle", "true", "nobundle");
        /* A broken runtime. */
        {
                _cleanup_free_ char *saved = strdup(config->runtime);
                ASSERT_OK(free_and_strdup(&config->runtime, "/bin/false"));
                expect_start_failure("cli", "fail-runtime", "true", "create failed");
                ASSERT_OK(free_and_strdup(&config->runtime, saved));
        }
}

static void setup_service(void) {
        _cleanup_free_ char *svc = NULL, *hostpid = NULL, *empty = NULL, *cfg_path = NULL, *data = NULL, *text = NULL,
                            *conf = NULL;
        _cleanup_(json_freep) JsonValue *cfg = NULL;
        JsonValue *env, *ns;
        size_t size;

        svc = path_in(tmpdir, "svc");
        svc_rootfs = path_in(svc, "rootfs");
        ASSERT(shell("set -e; mkdir -p '%s/bin'; cd '%s'; runc spec; cp /bin/busybox rootfs/bin/busybox; "
                     "chroot rootfs /bin/busybox --install -s /bin; echo service-data > rootfs/svcfile",
                     svc_rootfs, svc) == 0);

        /* The service has a CRONJOBS variable, which a task must not inherit. */
        cfg_path = path_in(svc, "config.json");
        ASSERT_OK(read_full_file(cfg_path, 1 << 20, &data, &size));
        ASSERT_OK(json_parse(data, size, 64, &cfg, NULL));
        env = json_get_path(cfg, "process", "env", NULL);
        ASSERT(json_is_array(env));
        ASSERT_OK(json_array_append(env, json_new_string("CRONJOBS=*/5 * * * * drush cron")));
        ASSERT_OK(json_format(cfg, true, &text, &size));
        ASSERT_OK(write_file_atomic(cfg_path, text, size, 0644));

        /* The same without a PID namespace (see test_kill). */
        hostpid = path_in(tmpdir, "svc-hostpid");
        ASSERT(mkdir(hostpid, 0755) == 0);
        ns = json_get_path(cfg, "linux", "namespaces", NULL);
        ASSERT(json_is_array(ns));
        for (size_t i = 0; i < json_length(ns); i++)
                if (streq_ptr(json_get_string(json_array_at(ns, i), "type"), "pid")) {
                        ASSERT_OK(json_array_remove_at(ns, i));
                        break;
                }
        ASSERT_OK(json_object_set_string(json_get(cfg, "root"), "path", svc_rootfs));
        text = mfree(text);
        ASSERT_OK(json_format(cfg, true, &text, &size));
        free(cfg_path);
        cfg_path = path_in(hostpid, "config.json");
        ASSERT_OK(write_file_atomic(cfg_path, text, size, 0644));

        /* A bundle whose rootfs is empty. */
        empty = path_in(tmpdir, "svc-empty");
        ASSERT(shell("set -e; mkdir -p '%s/rootfs'; cd '%s'; runc spec", empty, empty) == 0);

        config = launch_test_config(tmpdir);
        ASSERT(asprintf(&conf,
                        "[Service cli]\nBundle=%s\n"
                        "[Service cli-hostpid]\nBundle=%s\n"
                        "[Service empty]\nBundle=%s\n"
                        "[Service badseccomp]\nBundle=%s\nSeccomp=%s/no-such-profile.json\n"
                        "[Service nobundle]\nBundle=%s/nobundle\n",
                        svc, hostpid, empty, svc, tmpdir, tmpdir) >= 0);
        ASSERT_OK(config_parse_string(config, "test", conf, strlen(conf)));
}

/* The parsers of conmon's and the runtime's output need no root: run them always. */
static void test_parsers(void) {
        static const char *const garbage[] = {
                "",
                "{",
                "}",
                "null",
                "[]",
                "{\"data\": \"x\"}",
                "{\"data\": 1.5}",
                "{\"data\": 99999999999999999999}",
                "{\"message\": \"x\"}",
                "\n{\"data\": 5}",
                "{\"data\": 5",
                "\xff\xfe",
                "{\"data\": [1]}",
        };
        /* What conmon 2.1.6 sent here when runc create failed. */
        const char *failed = "{\"data\": -1, \"message\": \"time=\\\"2026-11-28T01:01:14Z\\\" level=error "
                             "msg=\\\"runc create failed: exec: \\\\\\\"/x\\\\\\\": stat /x: no such file or "
                             "directory\\\"\\n\"}\n";
        char *text = NULL;
        int64_t pid = 0;

        printf("parsers\n");
        ASSERT(runtime_parse_sync_message("{\"data\": 4242}\n", 15, &pid, &text) == 0 && pid == 4242 && !text);
        ASSERT(runtime_parse_sync_message("{\"data\": 17}\ntrailing junk", 26, &pid, &text) == 0 && pid == 17);
        ASSERT(runtime_parse_sync_message(failed, strlen(failed), &pid, &text) == -EIO);
        ASSERT(text && streq(text, "runc create failed: exec: \"/x\": stat /x: no such file or directory"));
        text = mfree(text);
        ASSERT(runtime_parse_sync_message("{\"data\": -1}", 12, &pid, &text) == -EIO && !text);
        for (size_t i = 0; i < ELEMENTSOF(garbage); i++) {
                ASSERT(runtime_parse_sync_message(garbage[i], strlen(garbage[i]), &pid, &text) == -EBADMSG);
                ASSERT(!text);
        }

        ASSERT(!runtime_error_text(""));
        ASSERT(!runtime_error_text(
                "\n \n[conmon:d]: failed to write to /proc/self/oom_score_adj: Permission denied\n"));
        text = runtime_error_text(
                "crun: cannot open `/x`: No such file\n\ntime=\"t\" level=error msg=\"a\\\\b \\\"c\"\n");
        ASSERT(text && streq(text, "crun: cannot open `/x`: No such file; a\\b \"c"));
        text = mfree(text);
        text = runtime_error_text("msg=\"unterminated \\");
        ASSERT(text && streq(text, "unterminated \\"));
        text = mfree(text);
        ASSERT(!runtime_error_text("msg=\"\"\n"));
}

static unsigned count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        unsigned n = 0;

        ASSERT(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

int main(void) {
        _cleanup_free_ char *runc = NULL, *conmon = NULL;
        unsigned fds_before;
        int r;

        test_parsers();

        if (geteuid() != 0) {
                printf("skipped: needs root (mounts, runc)\n");
                return 77;
        }
        if (find_executable("runc", &runc) < 0 || find_executable("conmon", &conmon) < 0 ||
            access("/bin/busybox", X_OK) < 0) {
                printf("skipped: needs runc, conmon and busybox-static (/bin/busybox)\n");
                return 77;
        }
        if (getenv("TEST_DEBUG"))
                log_set_max_level(LOG_DEBUG);

        /* Like the daemon: the signals sd-event handles are blocked, SIGPIPE ignored, and
         * some library left an fd without O_CLOEXEC. None of it may reach a task. */
        signals_as_daemon();
        {
                int fd = open("/dev/null", O_RDONLY);

                ASSERT(fd >= 0 && dup2(fd, LEAK_FD) == LEAK_FD);
                close(fd);
        }
        fds_before = count_fds();
        tmpdir = strdup("/var/tmp/test-launcher-XXXXXX");
        ASSERT(tmpdir && mkdtemp(tmpdir));
        setup_service();
        ASSERT_OK(sd_event_new(&event));

        test_exit_codes();
        test_kill();
        test_adopt();
        test_lost();
        test_failures();

        event = sd_event_unref(event);
        config = config_free(config);

        /* No child left behind (conmon's first process is reaped by the launcher; the
         * monitors were reparented to init). */
        ASSERT(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
        ASSERT(count_fds() == fds_before);

        r = rm_rf(tmpdir);
        ASSERT_OK(r);
        free(svc_rootfs);
        free(tmpdir);
        printf("OK\n");
        return 0;
}
