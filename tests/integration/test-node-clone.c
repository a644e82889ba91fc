/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Integration test of the node clone (root only): a private containerd
 * (tests/harness/containerd.sh) runs a busybox "cli" service container in namespace
 * k8s.io that wrote /app/file, joined by path to a "sandbox" container's network, ipc
 * and uts namespaces (as a CRI pod), with the kubelet's kind of /etc/hosts and
 * termination-log mounts; a PodList naming it goes through discovery, runtime-state
 * and the runtime launcher (real conmon + runc). Checks: the task sees the service's
 * files, its writes stay out of the service (its rootfs and what it sees through
 * `ctr task exec`), exit codes pass through, the task is in the service's network
 * namespace with its own hostname, adoption by a "restarted daemon" works on a clone, the
 * service keeps running with the same pid and an unchanged rootfs, and remove leaves no
 * mount behind. Skips (77) without root, containerd, ctr, umoci, runc, conmon or
 * busybox-static. */

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "discovery.h"
#include "fs-util.h"
#include "json.h"
#include "launcher-runtime.h"
#include "log.h"
#include "runtime-state.h"
#include "task.h"

static char *tmpdir, *ctd_dir, *harness;

static void emergency_stop(void);

#define TEST_FAIL_HOOK() emergency_stop()
#include "launch.h"
#include "loop.h"
#include "tests.h"

#define NAMESPACE "example-project-main"
#define NODE "node-1"

static Config *config;
static sd_event *event;
static char service_id[64], sandbox_id[80];
static char *sandbox_ipc;  /* readlink of the sandbox's ipc namespace */
static char *termlog_path; /* the host file behind the service's /dev/termination-log */

typedef struct Result {
        bool called;
        unsigned count;
        int status;
        bool started;
} Result;

/* Output of a shell command, trailing newline removed; NULL when it failed. */
static _printf_(1, 2) char *sh_output(const char *fmt, ...) {
        _cleanup_free_ char *cmd = NULL;
        char buf[4096];
        size_t n;
        va_list ap;
        FILE *f;

        va_start(ap, fmt);
        cmd = strfv(fmt, ap);
        va_end(ap);
        f = popen(cmd, "re");
        ASSERT(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        if (pclose(f) != 0)
                return NULL;
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = 0;
        return strdup(buf);
}

/* Stops the private containerd when an assertion fails, so nothing is left running. */
static void emergency_stop(void) {
        static bool once;

        if (once || !ctd_dir || !harness)
                return;
        once = true;
        (void) shell("sh '%s' stop '%s' >/dev/null 2>&1", harness, ctd_dir);
        for (unsigned i = 0; i < 4; i++)
                (void) shell("awk -v d='%s/' 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | "
                             "xargs -r -n1 umount -l 2>/dev/null",
                             tmpdir);
}

static void on_exit_cb(RuntimeContainer *c, int status, const char *error, void *userdata) {
        Result *res = userdata;

        if (error)
                fprintf(stderr, "launch failed: %s\n", error);
        res->called = true;
        res->count++;
        res->status = status;
}

static void on_step_cb(RuntimeContainer *c, TaskLaunchStep step, void *userdata) {
        Result *res = userdata;
        res->started = step >= TASK_LAUNCH_STARTED;
}

/* The exit callback, exactly once: a second one would come within the extra 30 ms. */
static void run_until(Result *res, unsigned timeout_s) {
        loop_run_until(event, &res->called, timeout_s * USEC_PER_SEC);
        loop_run_for(event, 30 * USEC_PER_MSEC);
        ASSERT(res->count == 1);
}

static char *container_dir(const char *id) {
        char *d = NULL;

        ASSERT(asprintf(&d, "%s/state/containers/%s", tmpdir, id) >= 0);
        return d;
}

static Task *make_task(const char *id, const char *command) {
        return launch_test_task(id, command, "example-project", NAMESPACE);
}

static char *readlink_str(const char *path) {
        char buf[256];
        ssize_t k = readlink(path, buf, sizeof(buf) - 1);

        ASSERT(k > 0);
        buf[k] = 0;
        return strdup(buf);
}

/* What the kubelet's /pods would say about the service's pod on this node. */
static char *pod_list_json(void) {
        char *s = NULL;

        ASSERT(asprintf(&s,
                        "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{},\"items\":["
                        "{\"metadata\":{\"name\":\"cli-7d9f8c6b5-n1abc\",\"namespace\":\"" NAMESPACE "\","
                        "\"uid\":\"6c1f0b9e-3a57-4d2c-9e8b-1f2a3b4c5d6e\",\"labels\":{\"lagoon.sh/service\":\"cli\"}},"
                        "\"spec\":{\"nodeName\":\"" NODE "\",\"containers\":[{\"name\":\"cli\","
                        "\"image\":\"lagoon-test/busybox:latest\"}]},"
                        "\"status\":{\"phase\":\"Running\",\"startTime\":\"2026-11-28T06:00:00Z\","
                        "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}],"
                        "\"containerStatuses\":[{\"name\":\"cli\",\"ready\":true,\"containerID\":\"containerd://%s\","
                        "\"state\":{\"running\":{\"startedAt\":\"2026-11-28T06:00:01Z\"}}}]}},"
                        /* The same service's pod on another node. */
                        "{\"metadata\":{\"name\":\"cli-7d9f8c6b5-n2xyz\",\"namespace\":\"" NAMESPACE "\","
                        "\"labels\":{\"lagoon.sh/service\":\"cli\"}},"
                        "\"spec\":{\"nodeName\":\"node-2\",\"containers\":[{\"name\":\"cli\"}]},"
                        "\"status\":{\"phase\":\"Running\",\"startTime\":\"2026-11-27T06:00:00Z\","
                        "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}],"
                        "\"containerStatuses\":[{\"name\":\"cli\",\"containerID\":\"containerd://elsewhere\","
                        "\"state\":{\"running\":{}}}]}}]}",
                        service_id) >= 0);
        return s;
}

/* Everything a task may not change in the service's rootfs: names, types, sizes, modes,
 * mtimes, and the content of its file. */
static char *rootfs_fingerprint(const char *rootfs) {
        char *s = sh_output("cd '%s' && find . -xdev -printf '%%p %%y %%s %%m %%T@\\n' | sort | md5sum && cat app/file",
                            rootfs);
        ASSERT(s);
        return s;
}

typedef struct Clone {
        RuntimeServiceBundle bundle;
        char *netns; /* readlink of the service's /proc/<pid>/ns/net */
} Clone;

/* Discovery → runtime state, as the manager will do it. */
static void find_service(Clone *ret) {
        _cleanup_free_ char *json = pod_list_json(), *error = NULL;
        ServicePod *pods = NULL;
        size_t n = 0;
        char buf[256];
        ssize_t k;
        int i;

        ASSERT_OK(discovery_parse_pod_list(json, strlen(json), NAMESPACE, "cli", &pods, &n, &error));
        ASSERT(n == 2);
        i = discovery_pick_local(pods, n, NODE);
        ASSERT(i == 1); /* the other node's pod is older */

        RuntimeStateRoots roots = {.containerd_state = NULL, .containerd_namespace = "k8s.io"};
        _cleanup_free_ char *state = path_join(ctd_dir, "state");
        ASSERT(state);
        roots.containerd_state = state;
        *ret = (Clone){};
        if (runtime_state_find(&roots, pods[i].container_id, &ret->bundle, &error) < 0) {
                fprintf(stderr, "runtime_state_find: %s\n", strna(error));
                ASSERT(false);
        }
        /* The other pod's container is not here. */
        {
                RuntimeServiceBundle b = {};
                _cleanup_free_ char *e = NULL;

                ASSERT(runtime_state_find(&roots, pods[0].container_id, &b, &e) == -ENOENT);
                ASSERT(e && strstr(e, "container elsewhere: not on this node"));
        }
        service_pods_free(pods, n);

        k = readlink(ret->bundle.netns_path, buf, sizeof(buf) - 1);
        ASSERT(k > 0);
        buf[k] = 0;
        ret->netns = strdup(buf);
        ASSERT(ret->netns);
        /* A container of its own: not the host's network. */
        k = readlink("/proc/self/ns/net", buf, sizeof(buf) - 1);
        ASSERT(k > 0);
        buf[k] = 0;
        ASSERT(!streq(buf, ret->netns));
}

static int start_clone(const Clone *clone, Task *t, Result *res, RuntimeContainer **ret, char **ret_error) {
        _cleanup_free_ char *dir = container_dir(t->id), *env1 = NULL;
        uint64_t t0;
        int r;

        ASSERT(asprintf(&env1, "TASK_DATA_ID=%s", t->id) >= 0);
        char *env[] = {env1, (char *) "LAGOON_PROJECT=example-project", NULL};
        RuntimeSpec spec = {
                .config = config,
                .service = NULL, /* a Kubernetes service has no [Service] section */
                .task = t,
                .env = env,
                .container_dir = dir,
                .service_bundle_dir = clone->bundle.bundle_dir,
                .service_rootfs = clone->bundle.rootfs,
                .netns_path = clone->bundle.netns_path,
        };
        *res = (Result){};
        t0 = now_ms();
        r = runtime_container_start(event, &spec, on_exit_cb, res, ret, ret_error);
        if (r < 0)
                return r;
        runtime_container_set_step_callback(*ret, on_step_cb);
        for (uint64_t end = now_ms() + 30000; !res->started && !res->called;) {
                ASSERT(now_ms() < end);
                ASSERT_OK(sd_event_run(event, 100 * USEC_PER_MSEC));
        }
        printf("  start of %s took %" PRIu64 " ms\n", t->id, now_ms() - t0);
        return 0;
}

static void remove_and_check(Task *t) {
        _cleanup_free_ char *dir = container_dir(t->id);

        ASSERT_OK(runtime_container_remove(config, t->id, dir));
        ASSERT(access(dir, F_OK) < 0 && errno == ENOENT);
        ASSERT(!mounted_under(dir));
        ASSERT(shell("runc state lagoon-task-%s >/dev/null 2>&1", t->id) != 0);
}

static int run_clone(const Clone *clone, const char *id, const char *command, char **ret_log) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_(task_freep) Task *t = make_task(id, command);
        _cleanup_free_ char *error = NULL;
        Result res;
        int r;

        r = start_clone(clone, t, &res, &c, &error);
        if (r < 0)
                fprintf(stderr, "start failed: %s\n", strna(error));
        ASSERT_OK(r);
        run_until(&res, 30);
        if (ret_log)
                ASSERT_OK(read_full_file(runtime_container_log_path(c), 1 << 20, ret_log, NULL));
        c = runtime_container_free(c);
        remove_and_check(t);
        return res.status;
}

static void test_clone(const Clone *clone) {
        _cleanup_free_ char *log = NULL, *expect_net = NULL, *seen = NULL;

        printf("clone: files, isolation, network, hostname\n");
        ASSERT(run_clone(clone, "clone-1",
                         "echo \"file=$(cat /app/file)\"; echo \"net=$(readlink /proc/self/ns/net)\"; "
                         "echo \"ipc=$(readlink /proc/self/ns/ipc)\"; echo \"hosts=$(grep -c n1abc /etc/hosts)\"; "
                         "echo \"host=$(hostname)\"; echo \"env=$SERVICE_NAME/$TASK_DATA_ID\"; "
                         "echo last words > /dev/termination-log && echo tl=ok; "
                         "echo task > /app/task-file && echo changed > /app/file && rm /app/from-image && "
                         "echo \"after=$(cat /app/file)\"",
                         &log) == 0);
        printf("%s", log);
        ASSERT(strstr(log, "stdout F file=data\n"));
        ASSERT(asprintf(&expect_net, "stdout F net=%s\n", clone->netns) >= 0);
        ASSERT(strstr(log, expect_net));
        ASSERT(strstr(log, "stdout F host=task-clone-1\n"));
        ASSERT(strstr(log, "stdout F env=cli/clone-1\n")); /* the service's env, plus ours */
        ASSERT(strstr(log, "stdout F after=changed\n"));
        /* The pod's ipc and /etc/hosts are shared; the service's termination-log is not. */
        {
                _cleanup_free_ char *ipc = NULL, *tl = NULL;

                ASSERT(asprintf(&ipc, "stdout F ipc=%s\n", sandbox_ipc) >= 0);
                ASSERT(strstr(log, ipc));
                ASSERT(strstr(log, "stdout F hosts=1\n"));
                ASSERT(strstr(log, "stdout F tl=ok\n"));
                ASSERT_OK(read_full_file(termlog_path, 64, &tl, NULL));
                ASSERT(isempty(tl));
        }

        /* The service saw none of it, in its rootfs on the host or from inside. */
        {
                _cleanup_free_ char *p = path_join(clone->bundle.rootfs, "app/task-file"),
                                    *q = path_join(clone->bundle.rootfs, "app/from-image"), *data = NULL;
                ASSERT(p && q);
                ASSERT(access(p, F_OK) < 0 && errno == ENOENT);
                ASSERT(access(q, F_OK) == 0);
                free(p);
                p = path_join(clone->bundle.rootfs, "app/file");
                ASSERT_OK(read_full_file(p, 64, &data, NULL));
                ASSERT(streq(data, "data\n"));
        }
        seen = sh_output("sh '%s' ctr '%s' task exec --exec-id check-1 %s "
                         "sh -c 'test ! -e /app/task-file && test -e /app/from-image && cat /app/file && hostname'",
                         harness, ctd_dir, service_id);
        ASSERT(seen);
        printf("  service sees: %s\n", seen);
        ASSERT(startswith(seen, "data\n"));
        ASSERT(!strstr(seen, "task-clone-1")); /* its hostname is its own */

        printf("clone: exit codes\n");
        ASSERT(run_clone(clone, "clone-0", "true", NULL) == 0);
        ASSERT(run_clone(clone, "clone-3", "exit 3", NULL) == 3);
}

static void test_adopt(const Clone *clone) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_(task_freep) Task *t = make_task("clone-adopt", "sleep 1; cat /app/file; exit 5");
        _cleanup_free_ char *error = NULL, *dir = container_dir(t->id);
        Result res, res2 = {};

        printf("clone: adoption\n");
        ASSERT_OK(start_clone(clone, t, &res, &c, &error));
        c = runtime_container_free(c); /* the "daemon" goes away */
        /* What the clone's config says, read while it runs: see bundle_derive(). */
        {
                _cleanup_free_ char *path = path_join(dir, "config.json"), *text = NULL, *expect = NULL,
                                    *ns_text = NULL;
                _cleanup_(json_freep) JsonValue *cfg = NULL;
                const JsonValue *ann, *mounts;

                ASSERT(path);
                ASSERT_OK(read_full_file(path, 1 << 20, &text, NULL));
                ASSERT_OK(json_parse(text, strlen(text), 64, &cfg, NULL));
                ann = json_get(cfg, "annotations");
                for (size_t i = 0; i < json_length(ann); i++)
                        ASSERT(!startswith(json_object_key_at(ann, i), "io.kubernetes."));
                ASSERT(streq_ptr(json_get_string(ann, "lagoon.sh/taskId"), "clone-adopt"));
                mounts = json_get(cfg, "mounts");
                for (size_t i = 0; i < json_length(mounts); i++)
                        ASSERT(!streq_ptr(json_get_string(json_array_at(mounts, i), "destination"),
                                          "/dev/termination-log"));
                ASSERT_OK(json_format(json_get_path(cfg, "linux", "namespaces", NULL), false, &ns_text, NULL));
                printf("  clone namespaces: %s\n", ns_text);
                ASSERT(strstr(ns_text, "{\"type\":\"uts\"}"));
                ASSERT(asprintf(&expect, "{\"type\":\"network\",\"path\":\"%s\"}", clone->bundle.netns_path) >= 0);
                ASSERT(strstr(ns_text, expect));
                ASSERT(strstr(ns_text, "{\"type\":\"ipc\",\"path\":\"/proc/"));
        }
        ASSERT_OK(runtime_container_adopt(event, config, t, dir, on_exit_cb, &res2, &c));
        run_until(&res2, 30);
        ASSERT(res2.status == 5);
        ASSERT(!res.called);
        ASSERT(file_contains(runtime_container_log_path(c), "stdout F data"));
        c = runtime_container_free(c);
        remove_and_check(t);
}

static char *find_harness(void) {
        const char *src = getenv("TEST_SRCDIR");
        char *p;

        if (src)
                p = path_join(src, "tests/harness/containerd.sh");
        else {
                /* Run by hand from the build directory: the source path as compiled. */
                _cleanup_free_ char *f = strdup(__FILE__);
                ASSERT(f && strrchr(f, '/'));
                *strrchr(f, '/') = 0;
                p = path_join(f, "../harness/containerd.sh");
        }
        ASSERT(p);
        return p;
}

int main(void) {
        _cleanup_free_ char *pid_before = NULL, *pid_after = NULL, *fp_before = NULL, *fp_after = NULL, *pidfile = NULL,
                            *net_after = NULL, *host_before = NULL, *host_after = NULL;
        static const char *const tools[] = {"containerd", "ctr", "umoci", "runc", "conmon"};
        Clone clone = {};
        uint64_t t0 = now_ms();

        if (geteuid() != 0) {
                printf("skipped: needs root (containerd, mounts, runc)\n");
                return 77;
        }
        for (size_t i = 0; i < ELEMENTSOF(tools); i++) {
                _cleanup_free_ char *p = NULL;
                if (find_executable(tools[i], &p) < 0) {
                        printf("skipped: %s not found (needs containerd, ctr, umoci, runc, conmon)\n", tools[i]);
                        return 77;
                }
        }
        if (access("/bin/busybox", X_OK) < 0) {
                printf("skipped: needs busybox-static (/bin/busybox)\n");
                return 77;
        }
        if (getenv("TEST_DEBUG"))
                log_set_max_level(LOG_DEBUG);
        signals_as_daemon();

        harness = find_harness();
        ASSERT(access(harness, R_OK) == 0);
        tmpdir = strdup("/var/tmp/test-node-clone-XXXXXX");
        ASSERT(tmpdir && mkdtemp(tmpdir));
        ctd_dir = path_join(tmpdir, "containerd");
        ASSERT(ctd_dir);
        snprintf(service_id, sizeof(service_id), "cli-%08x%08x", (unsigned) getpid(), (unsigned) time(NULL));
        snprintf(sandbox_id, sizeof(sandbox_id), "%s-sandbox", service_id);

        printf("containerd: start, image, service container %s\n", service_id);
        ASSERT(shell("sh '%s' start '%s'", harness, ctd_dir) == 0);
        /* A pod as the CRI plugin makes it: a sandbox holding the network, ipc and uts
         * namespaces, the service container joining them by path, with the kubelet's
         * /etc/hosts and termination-log mounts and CRI annotations. */
        {
                _cleanup_free_ char *sb_pidfile = NULL, *pid = NULL, *hosts = path_join(tmpdir, "etc-hosts");

                ASSERT(hosts);
                termlog_path = path_join(tmpdir, "termination-log");
                ASSERT(termlog_path);
                const char *hosts_text = "127.0.0.1 localhost\n10.244.1.5 cli-7d9f8c6b5-n1abc\n";

                ASSERT_OK(write_file_atomic(hosts, hosts_text, strlen(hosts_text), 0644));
                ASSERT_OK(write_file_atomic(termlog_path, "", 0, 0644));
                ASSERT(shell("sh '%s' run '%s' %s 'exec sleep 600'", harness, ctd_dir, sandbox_id) == 0);
                ASSERT(asprintf(&sb_pidfile, "%s/state/io.containerd.runtime.v2.task/k8s.io/%s/init.pid", ctd_dir,
                                sandbox_id) >= 0);
                ASSERT_OK(read_full_file(sb_pidfile, 64, &pid, NULL));
                pid[strcspn(pid, "\n")] = 0;
                ASSERT(shell("sh '%s' run '%s' %s 'echo data > /app/file; exec sleep 600' "
                             "--with-ns network:/proc/%s/ns/net --with-ns ipc:/proc/%s/ns/ipc --with-ns "
                             "uts:/proc/%s/ns/uts "
                             "--annotation io.kubernetes.cri.container-type=container "
                             "--annotation io.kubernetes.cri.sandbox-id=%s "
                             "--mount type=bind,src=%s,dst=/etc/hosts,options=rbind:ro "
                             "--mount type=bind,src=%s,dst=/dev/termination-log,options=rbind:rw",
                             harness, ctd_dir, service_id, pid, pid, pid, sandbox_id, hosts, termlog_path) == 0);
                free(sb_pidfile);
                ASSERT(asprintf(&sb_pidfile, "/proc/%s/ns/ipc", pid) >= 0);
                sandbox_ipc = readlink_str(sb_pidfile);
        }
        printf("  containerd ready after %" PRIu64 " ms\n", now_ms() - t0);

        /* The service wrote its file before we look. */
        for (unsigned i = 0;; i++) {
                _cleanup_free_ char *f = NULL;
                ASSERT(i < 50);
                free(clone.netns);
                runtime_service_bundle_done(&clone.bundle);
                find_service(&clone);
                f = path_join(clone.bundle.rootfs, "app/file");
                ASSERT(f);
                if (file_contains(f, "data"))
                        break;
                usleep(100 * 1000);
        }
        ASSERT(streq(clone.bundle.runtime, "containerd"));
        ASSERT(streq(clone.bundle.id, service_id));
        pidfile = path_join(clone.bundle.bundle_dir, "init.pid");
        ASSERT(pidfile);
        ASSERT_OK(read_full_file(pidfile, 64, &pid_before, NULL));
        fp_before = rootfs_fingerprint(clone.bundle.rootfs);
        host_before =
                sh_output("sh '%s' ctr '%s' task exec --exec-id host-1 %s hostname", harness, ctd_dir, service_id);
        ASSERT(host_before);

        config = launch_test_config(tmpdir);
        ASSERT_OK(sd_event_new(&event));

        test_clone(&clone);
        test_adopt(&clone);

        /* The service is untouched: same process, same network, same files, running. */
        printf("service: untouched\n");
        ASSERT_OK(read_full_file(pidfile, 64, &pid_after, NULL));
        ASSERT(streq(pid_before, pid_after));
        ASSERT(kill(clone.bundle.pid, 0) == 0);
        {
                char buf[256];
                ssize_t k = readlink(clone.bundle.netns_path, buf, sizeof(buf) - 1);
                ASSERT(k > 0);
                buf[k] = 0;
                ASSERT(streq(buf, clone.netns));
        }
        fp_after = rootfs_fingerprint(clone.bundle.rootfs);
        ASSERT(streq(fp_before, fp_after));
        host_after = sh_output("sh '%s' ctr '%s' task exec --exec-id host-2 %s hostname", harness, ctd_dir, service_id);
        ASSERT(host_after && streq(host_before, host_after)); /* the pod's uts was not ours to rename */
        net_after =
                sh_output("sh '%s' ctr '%s' task ls | awk '$1 == \"%s\" { print $3 }'", harness, ctd_dir, service_id);
        ASSERT(net_after && streq(net_after, "RUNNING"));

        event = sd_event_unref(event);
        config = config_free(config);

        printf("containerd: stop\n");
        ASSERT(shell("sh '%s' stop '%s'", harness, ctd_dir) == 0);
        ASSERT(kill(clone.bundle.pid, 0) < 0);
        ASSERT(!mounted_under(tmpdir));
        ASSERT(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
        ASSERT_OK(rm_rf(tmpdir));

        free(clone.netns);
        free(sandbox_ipc);
        free(termlog_path);
        runtime_service_bundle_done(&clone.bundle);
        printf("OK (%" PRIu64 " ms)\n", now_ms() - t0);
        free(ctd_dir);
        free(harness);
        free(tmpdir);
        return 0;
}
