/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests of discovery: a kubelet /pods answer built from the fixture Deployment's template
 * (data/podlist-cli.json: pods on two nodes, a two-container pod, a terminating, a
 * not-ready and a pending pod, another namespace, another service), single pods and
 * watch-event objects, the order, the local pick, container ids, and garbage; and
 * runtime_state_find() on fake containerd and CRI-O state directories. */

#include <sys/stat.h>
#include <sys/wait.h>

#include "discovery.h"
#include "fs-util.h"
#include "runtime-state.h"
#include "tests.h"

#define NS "example-project-main"

static char *datadir(void) {
        const char *d = getenv("TEST_DATADIR");
        char *s;

        if (d)
                s = strdup(d);
        else {
                /* Run by hand from the build directory: the source path as compiled. */
                s = strdup(__FILE__);
                ASSERT(s && strrchr(s, '/'));
                strcpy(strrchr(s, '/'), "/../data");
        }
        ASSERT(s);
        return s;
}

static void load(const char *name, char **ret, size_t *ret_size) {
        _cleanup_free_ char *d = datadir(), *path = path_join(d, name);

        ASSERT(path);
        ASSERT_OK(read_full_file(path, 1 << 22, ret, ret_size));
}

static int
parse(const char *json, const char *ns, const char *service, ServicePod **ret, size_t *ret_n, char **ret_error) {
        return discovery_parse_pod_list(json, strlen(json), ns, service, ret, ret_n, ret_error);
}

TEST(podlist) {
        _cleanup_free_ char *data = NULL, *error = NULL;
        ServicePod *pods = NULL;
        size_t size = 0, n = 0;

        load("podlist-cli.json", &data, &size);
        ASSERT_OK(discovery_parse_pod_list(data, size, NS, "cli", &pods, &n, &error));
        ASSERT(!error);
        /* Not: the terminating, the not-ready, the pending pod, the other namespace, the
         * nginx-php pod. Oldest first. */
        ASSERT_EQ(n, 3U);
        ASSERT_STREQ(pods[0].name, "cli-7d9f8c6b5-n2old");
        ASSERT_STREQ(pods[0].node_name, "node-2");
        ASSERT_STREQ(pods[0].container_id, "cri-o://b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2");
        ASSERT_STREQ(pods[1].name, "cli-7d9f8c6b5-n1abc");
        ASSERT_STREQ(pods[1].namespace, NS);
        ASSERT_STREQ(pods[1].node_name, "node-1");
        ASSERT_STREQ(pods[1].container_name, "cli");
        ASSERT_STREQ(pods[1].container_id,
                     "containerd://a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1");
        ASSERT(pods[1].uid && pods[1].pod_ip && pods[1].image);
        ASSERT(startswith(pods[1].image, "harbor.example/example-project/main/cli@sha256:"));
        ASSERT(pods[1].ready);
        ASSERT_EQ(pods[1].start_time, 1795773600); /* 2026-11-27T10:00:00Z */
        /* Two containers: the one named like the service, not the first. */
        ASSERT_STREQ(pods[2].name, "cli-7d9f8c6b5-n1two");
        ASSERT_STREQ(pods[2].container_name, "cli");
        ASSERT_STREQ(pods[2].container_id,
                     "containerd://c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4");

        ASSERT_EQ(discovery_pick_local(pods, n, "node-1"), 1);
        ASSERT_EQ(discovery_pick_local(pods, n, "node-2"), 0);
        ASSERT_EQ(discovery_pick_local(pods, n, "node-3"), -ENOENT);
        ASSERT_EQ(discovery_pick_local(pods, n, ""), -EINVAL);
        pods = service_pods_free(pods, n);

        /* Any namespace: the other project's pod too (it is the oldest). */
        ASSERT_OK(discovery_parse_pod_list(data, size, NULL, "cli", &pods, &n, NULL));
        ASSERT_EQ(n, 4U);
        ASSERT_STREQ(pods[0].namespace, "other-project-main");
        pods = service_pods_free(pods, n);

        /* No container named like the service: the first. */
        ASSERT_OK(discovery_parse_pod_list(data, size, NS, "nginx-php", &pods, &n, NULL));
        ASSERT_EQ(n, 1U);
        ASSERT_STREQ(pods[0].container_name, "nginx");
        ASSERT_STREQ(pods[0].container_id,
                     "containerd://e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6");
        pods = service_pods_free(pods, n);

        /* No match is no error. */
        ASSERT_OK(discovery_parse_pod_list(data, size, NS, "solr", &pods, &n, NULL));
        ASSERT_EQ(n, 0U);
        pods = service_pods_free(pods, n);
        ASSERT_OK(discovery_parse_pod_list(data, size, "nope", "cli", &pods, &n, NULL));
        ASSERT_EQ(n, 0U);
        pods = service_pods_free(pods, n);
}

/* The items one by one, as a watch would deliver them: the not-ready pod is reported
 * (ready false), the others that are not usable are not. */
TEST(single_pods) {
        _cleanup_free_ char *data = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        const JsonValue *items;
        unsigned matched = 0, not_ready = 0;
        size_t size = 0;

        load("podlist-cli.json", &data, &size);
        ASSERT_OK(json_parse(data, size, 64, &v, NULL));
        items = json_get(v, "items");
        ASSERT(json_length(items) == 8);
        for (size_t i = 0; i < json_length(items); i++) {
                _cleanup_(service_pod_done) ServicePod p = {};
                int r = discovery_parse_pod(json_array_at(items, i), NS, "cli", &p, NULL);

                ASSERT_OK(r);
                if (r == 0) {
                        ASSERT(!p.name);
                        continue;
                }
                matched++;
                if (!p.ready) {
                        not_ready++;
                        ASSERT_STREQ(p.name, "cli-7d9f8c6b5-n1nrd");
                }
        }
        ASSERT_EQ(matched, 4U);
        ASSERT_EQ(not_ready, 1U);

        /* A single Pod document through the list parser. */
        {
                _cleanup_free_ char *text = NULL;
                ServicePod *pods = NULL;
                size_t n = 0;

                ASSERT_OK(json_object_set_string(json_array_at(items, 0), "kind", "Pod"));
                ASSERT_OK(json_format(json_array_at(items, 0), false, &text, NULL));
                ASSERT_OK(parse(text, NS, "cli", &pods, &n, NULL));
                ASSERT_EQ(n, 1U);
                ASSERT_STREQ(pods[0].name, "cli-7d9f8c6b5-n1abc");
                service_pods_free(pods, n);
        }
}

TEST(sort) {
        ServicePod pods[] = {
                {.name = (char *) "d", .ready = false, .start_time = 1},
                {.name = (char *) "c", .ready = true, .start_time = INT64_MAX},
                {.name = (char *) "b", .ready = true, .start_time = 5},
                {.name = (char *) "a", .ready = true, .start_time = 5},
                {.name = (char *) "e", .ready = true, .start_time = 2},
        };

        discovery_sort_pods(pods, ELEMENTSOF(pods));
        ASSERT_STREQ(pods[0].name, "e");
        ASSERT_STREQ(pods[1].name, "a");
        ASSERT_STREQ(pods[2].name, "b");
        ASSERT_STREQ(pods[3].name, "c");
        ASSERT_STREQ(pods[4].name, "d");
        discovery_sort_pods(NULL, 0);
        /* The not-ready one is never picked. */
        pods[4].node_name = (char *) "n";
        ASSERT_EQ(discovery_pick_local(pods, ELEMENTSOF(pods), "n"), -ENOENT);
}

/* A minimal pod with the given fragments. */
static char *mini_pod(const char *metadata_extra, const char *start, const char *state) {
        return strf("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\",\"namespace\":\"ns\",\"labels\":"
                    "{\"lagoon.sh/service\":\"cli\"}%s},\"spec\":{\"nodeName\":\"n\",\"containers\":[{\"name\":"
                    "\"cli\"}]},\"status\":{\"phase\":\"Running\",\"startTime\":%s,\"conditions\":[{\"type\":"
                    "\"Ready\",\"status\":\"True\"}],\"containerStatuses\":[{\"name\":\"cli\",\"containerID\":"
                    "\"containerd://x\",\"state\":%s}]}}",
                    metadata_extra, start, state);
}

TEST(timestamps_and_states) {
        static const struct {
                const char *start;
                int64_t expect;
        } times[] = {
                {"\"1970-01-01T00:00:00Z\"", 0},
                {"\"2026-11-27T10:00:00Z\"", 1795773600},
                {"\"2026-11-27T10:00:00.123456Z\"", 1795773600},
                {"\"2026-11-27T12:00:00+02:00\"", 1795773600},
                {"\"2026-11-27T08:30:00-01:30\"", 1795773600},
                {"null", INT64_MAX},
                {"\"yesterday\"", INT64_MAX},
                {"\"2026-11-27T10:00:00\"", INT64_MAX},
                {"\"2026-11-27T10:00:00Zjunk\"", INT64_MAX},
                {"\"2026-11-27T10:00:00+2:00\"", INT64_MAX},
        };

        for (size_t i = 0; i < ELEMENTSOF(times); i++) {
                _cleanup_free_ char *text = mini_pod("", times[i].start, "{\"running\":{}}");
                ServicePod *pods = NULL;
                size_t n = 0;

                ASSERT_OK(parse(text, "ns", "cli", &pods, &n, NULL));
                ASSERT_EQ(n, 1U);
                if (pods[0].start_time != times[i].expect) {
                        fprintf(stderr, "%s → %lld\n", times[i].start, (long long) pods[0].start_time);
                        ASSERT(false);
                }
                service_pods_free(pods, n);
        }

        /* Not running, or terminating: not a candidate. */
        static const char *const states[] = {"{\"waiting\":{}}", "{\"terminated\":{\"exitCode\":0}}", "null", "{}"};
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                _cleanup_free_ char *text = mini_pod("", "null", states[i]);
                ServicePod *pods = NULL;
                size_t n = 7;

                ASSERT_OK(parse(text, "ns", "cli", &pods, &n, NULL));
                ASSERT_EQ(n, 0U);
                service_pods_free(pods, n);
        }
        {
                _cleanup_free_ char *text =
                        mini_pod(",\"deletionTimestamp\":\"2026-11-28T06:00:00Z\"", "null", "{\"running\":{}}");
                ServicePod *pods = NULL;
                size_t n = 7;

                ASSERT_OK(parse(text, "ns", "cli", &pods, &n, NULL));
                ASSERT_EQ(n, 0U);
        }
}

TEST(container_ids) {
        _cleanup_free_ char *rt = NULL, *id = NULL;

        ASSERT_OK(discovery_split_container_id("containerd://abc", &rt, &id));
        ASSERT_STREQ(rt, "containerd");
        ASSERT_STREQ(id, "abc");
        rt = mfree(rt);
        id = mfree(id);
        ASSERT_OK(discovery_split_container_id("cri-o://a://b", &rt, &id));
        ASSERT_STREQ(rt, "cri-o");
        ASSERT_STREQ(id, "a://b");
        ASSERT_EQ(discovery_split_container_id("abc", &rt, &id), -EINVAL);
        ASSERT_EQ(discovery_split_container_id("://abc", &rt, &id), -EINVAL);
        ASSERT_EQ(discovery_split_container_id("docker://", &rt, &id), -EINVAL);
        ASSERT_EQ(discovery_split_container_id("", &rt, &id), -EINVAL);
}

TEST(garbage) {
        static const struct {
                const char *json;
                const char *error; /* a substring */
        } bad[] = {
                {"", "not JSON"},
                {"{", "not JSON"},
                {"\xff", "not JSON"},
                {"[]", "not an object"},
                {"\"PodList\"", "not an object"},
                {"null", "not an object"},
                {"{}", "no items"},
                {"{\"kind\":\"PodList\"}", "no items"},
                {"{\"kind\":\"Deployment\",\"items\":[]}", "a Deployment"},
                {"{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"pods is forbidden\"}", "pods is forbidden"},
                {"{\"items\":{}}", "items is object"},
                {"{\"items\":\"x\"}", "items is string"},
                {"{\"items\":[1]}", "items[0]: pod is number"},
                {"{\"items\":[{\"metadata\":[]}]}", "items[0]: pod.metadata is array"},
                {"{\"items\":[{\"metadata\":{\"labels\":[]},\"spec\":{},\"status\":{}}]}", "labels is array"},
                {"{\"items\":[{\"metadata\":{\"labels\":{\"lagoon.sh/service\":1}},\"spec\":{},\"status\":{}}]}",
                 "lagoon.sh/service is number"},
                {"{\"items\":[{\"metadata\":{\"name\":7},\"spec\":{},\"status\":{}}]}", "name is number"},
                {"{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"ns\",\"labels\":{\"lagoon.sh/"
                 "service\":\"cli\"}},"
                 "\"spec\":{\"containers\":{}},\"status\":{\"phase\":\"Running\"}}]}",
                 "containers is object"},
                {"{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"ns\",\"labels\":{\"lagoon.sh/"
                 "service\":\"cli\"}},"
                 "\"spec\":{\"containers\":[1]},\"status\":{\"phase\":\"Running\"}}]}",
                 "containers[0] is not an object"},
                {"{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"ns\",\"labels\":{\"lagoon.sh/"
                 "service\":\"cli\"}},"
                 "\"spec\":{\"containers\":[{\"name\":\"cli\"}]},\"status\":{\"phase\":\"Running\","
                 "\"containerStatuses\":[{\"name\":\"cli\",\"state\":{\"running\":3}}]}}]}",
                 "running is number"},
                {"{\"items\":[{\"metadata\":{\"name\":\"p\",\"namespace\":\"ns\",\"labels\":{\"lagoon.sh/"
                 "service\":\"cli\"}},"
                 "\"spec\":{\"containers\":[{\"name\":\"cli\"}]},\"status\":{\"phase\":\"Running\","
                 "\"containerStatuses\":[{\"name\":\"cli\",\"containerID\":\"c://x\",\"state\":{\"running\":{}}}],"
                 "\"conditions\":[\"Ready\"]}}]}",
                 "conditions[0] is not an object"},
                {"{\"items\":[{\"metadata\":{},\"spec\":{},\"status\":{\"phase\":true}}]}", "phase is boolean"},
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *error = NULL;
                ServicePod *pods = (ServicePod *) 0x1;
                size_t n = 42;
                int r = parse(bad[i].json, "ns", "cli", &pods, &n, &error);

                if (r != -EBADMSG || !error || !strstr(error, bad[i].error)) {
                        fprintf(stderr, "%s → %d %s\n", bad[i].json, r, strna(error));
                        ASSERT(false);
                }
                ASSERT(pods == (ServicePod *) 0x1 && n == 42);
                ASSERT_EQ(parse(bad[i].json, "ns", "cli", &pods, &n, NULL), -EBADMSG);
        }

        /* Accepted shapes with nothing in them. */
        static const char *const empty[] = {
                "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{},\"items\":[]}",
                "{\"items\":null}",
                "{\"items\":[{}]}",
                "{\"items\":[{\"metadata\":null,\"spec\":null,\"status\":null}]}",
                "{\"items\":[{\"metadata\":{\"labels\":null},\"spec\":{},\"status\":{}}]}",
                "{\"kind\":\"Pod\"}",
        };
        for (size_t i = 0; i < ELEMENTSOF(empty); i++) {
                ServicePod *pods = NULL;
                size_t n = 42;

                ASSERT_OK(parse(empty[i], "ns", "cli", &pods, &n, NULL));
                ASSERT_EQ(n, 0U);
                service_pods_free(pods, n);
        }

        {
                ServicePod p = {};
                _cleanup_free_ char *error = NULL;

                ASSERT_EQ(discovery_parse_pod(NULL, "ns", "cli", &p, &error), -EBADMSG);
                ASSERT(error);
                ASSERT_EQ(discovery_parse_pod(NULL, "ns", NULL, &p, NULL), -EINVAL);
        }
}

/* dir/name in a static buffer, for one use at a time. */
static const char *in(const char *dir, const char *name) {
        static char buf[4096];

        ASSERT((size_t) snprintf(buf, sizeof(buf), "%s/%s", dir, name) < sizeof(buf));
        return buf;
}

static void put(const char *dir, const char *name, const char *content) {
        _cleanup_free_ char *p = path_join(dir, name);

        ASSERT(p);
        ASSERT_OK(mkdir_p(dir, 0755));
        ASSERT_OK(write_file_atomic(p, content, strlen(content), 0644));
}

static void expect_find_error(const RuntimeStateRoots *roots, const char *id, int error, const char *needle) {
        RuntimeServiceBundle b = {};
        _cleanup_free_ char *e = NULL;
        int r = runtime_state_find(roots, id, &b, &e);

        if (r != error || !e || !strstr(e, needle)) {
                fprintf(stderr, "%s → %d (%s), expected %d (%s)\n", id, r, strna(e), error, needle);
                ASSERT(false);
        }
        ASSERT(!b.bundle_dir && !b.rootfs && !b.netns_path);
        ASSERT_EQ(runtime_state_find(roots, id, &b, NULL), error);
}

TEST(runtime_state) {
        _cleanup_free_ char *tmp = strdup("/tmp/test-runtime-state-XXXXXX"), *ctd = NULL, *crio = NULL,
                            *ctd_bundle = NULL, *crio_bundle = NULL, *merged = NULL, *pid = NULL, *cfg = NULL,
                            *expect = NULL, *dead = NULL;
        RuntimeServiceBundle b = {};
        RuntimeStateRoots roots;
        pid_t child;

        ASSERT(tmp && mkdtemp(tmp));
        ctd = path_join(tmp, "containerd");
        crio = path_join(tmp, "storage");
        merged = path_join(tmp, "overlay/l1/merged");
        ASSERT(ctd && crio && merged);
        roots = (RuntimeStateRoots){.containerd_state = ctd, .containerd_namespace = "k8s.io", .crio_run_root = crio};
        pid = strf("%d\n", (int) getpid());

        ctd_bundle = strf("%s/io.containerd.runtime.v2.task/k8s.io/abc123", ctd);
        put(ctd_bundle, "config.json", "{\"ociVersion\":\"1.0.2\",\"root\":{\"path\":\"rootfs\"}}");
        put(ctd_bundle, "init.pid", pid);
        ASSERT_OK(mkdir_p(in(ctd_bundle, "rootfs"), 0755));

        ASSERT_OK(runtime_state_find(&roots, "containerd://abc123", &b, NULL));
        ASSERT_STREQ(b.runtime, "containerd");
        ASSERT_STREQ(b.id, "abc123");
        ASSERT_STREQ(b.bundle_dir, ctd_bundle);
        expect = strf("%s/rootfs", ctd_bundle);
        ASSERT_STREQ(b.rootfs, expect);
        ASSERT_EQ(b.pid, getpid());
        expect = mfree(expect);
        expect = strf("/proc/%d/ns/net", (int) getpid());
        ASSERT_STREQ(b.netns_path, expect);
        {
                /* The namespace itself is held, not only its path. */
                struct stat held, mine;
                ASSERT(b.netns_fd > STDERR_FILENO);
                ASSERT(fstat(b.netns_fd, &held) == 0 && stat("/proc/self/ns/net", &mine) == 0);
                ASSERT(held.st_dev == mine.st_dev && held.st_ino == mine.st_ino);
        }
        runtime_service_bundle_done(&b);
        ASSERT(!b.bundle_dir);

        /* Another namespace has no such container. */
        roots.containerd_namespace = "moby";
        expect_find_error(&roots, "containerd://abc123", -ENOENT, "not on this node (no bundle in ");
        roots.containerd_namespace = "..";
        expect_find_error(&roots, "containerd://abc123", -EINVAL, "namespace");
        roots.containerd_namespace = NULL; /* default k8s.io */
        ASSERT_OK(runtime_state_find(&roots, "containerd://abc123", &b, NULL));
        runtime_service_bundle_done(&b);

        /* CRI-O: an absolute root.path outside the bundle. */
        crio_bundle = strf("%s/overlay-containers/def456/userdata", crio);
        cfg = strf("{\"ociVersion\":\"1.0.2\",\"root\":{\"path\":\"%s\"}}", merged);
        put(crio_bundle, "config.json", cfg);
        put(crio_bundle, "pidfile", pid);
        ASSERT_OK(mkdir_p(merged, 0755));
        ASSERT_OK(runtime_state_find(&roots, "cri-o://def456", &b, NULL));
        ASSERT_STREQ(b.runtime, "cri-o");
        ASSERT_STREQ(b.bundle_dir, crio_bundle);
        ASSERT_STREQ(b.rootfs, merged);
        runtime_service_bundle_done(&b);
        /* The runtime prefix decides where to look. */
        expect_find_error(&roots, "containerd://def456", -ENOENT, "container def456: not on this node");
        expect_find_error(&roots, "cri-o://abc123", -ENOENT, "not on this node");

        expect_find_error(&roots, "docker://abc123", -EPROTONOSUPPORT, "unsupported runtime docker://");
        expect_find_error(&roots, "abc123", -EINVAL, "<runtime>://<id>");
        expect_find_error(&roots, "://abc123", -EINVAL, "<runtime>://<id>");
        expect_find_error(&roots, "containerd://", -EINVAL, "not valid");
        expect_find_error(&roots, "containerd://../abc123", -EINVAL, "not valid");
        expect_find_error(&roots, "containerd://..", -EINVAL, "not valid");
        expect_find_error(&roots, "containerd://a/b", -EINVAL, "not valid");
        expect_find_error(&roots, "containerd://a b", -EINVAL, "not valid");

        /* A dead process, a broken pid file, no pid file, no root, bad config. */
        child = fork();
        ASSERT(child >= 0);
        if (child == 0)
                _exit(0);
        ASSERT(waitpid(child, NULL, 0) == child);
        dead = strf("%d", (int) child);
        put(ctd_bundle, "init.pid", dead);
        expect_find_error(&roots, "containerd://abc123", -ESRCH, "is not running");
        put(ctd_bundle, "init.pid", "12x");
        expect_find_error(&roots, "containerd://abc123", -EBADMSG, "unusable pid file");
        put(ctd_bundle, "init.pid", "");
        expect_find_error(&roots, "containerd://abc123", -EBADMSG, "unusable pid file");
        put(ctd_bundle, "init.pid", "1");
        expect_find_error(&roots, "containerd://abc123", -EBADMSG, "unusable pid file");
        ASSERT_OK(unlink(in(ctd_bundle, "init.pid")));
        expect_find_error(&roots, "containerd://abc123", -ESRCH, "not running (no ");

        put(crio_bundle, "config.json", "{\"root\":{\"path\":\"/nonexistent/merged\"}}");
        expect_find_error(&roots, "cri-o://def456", -ENOENT, "its root /nonexistent/merged is not there");
        put(crio_bundle, "config.json", "{\"root\":{}}");
        expect_find_error(&roots, "cri-o://def456", -EBADMSG, "root.path is missing");
        put(crio_bundle, "config.json", "{\"root\":");
        expect_find_error(&roots, "cri-o://def456", -EBADMSG, "not valid JSON");
        put(crio_bundle, "config.json", "[]");
        expect_find_error(&roots, "cri-o://def456", -EBADMSG, "root.path is missing");
        ASSERT_OK(unlink(in(crio_bundle, "config.json")));
        expect_find_error(&roots, "cri-o://def456", -ENOENT, "config.json");

        ASSERT_OK(rm_rf(tmp));
}

int main(void) {
        RUN(podlist);
        RUN(single_pods);
        RUN(sort);
        RUN(timestamps_and_states);
        RUN(container_ids);
        RUN(garbage);
        RUN(runtime_state);
        return 0;
}
