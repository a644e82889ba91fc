/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* task-pod.c: the pods of the API-pod path, built from the real Lagoon cli Deployment
 * fixture, and pod states as the kubelet reports them. */

#include <errno.h>
#include <string.h>

#include "fs-util.h"
#include "task-pod.h"
#include "tests.h"

static JsonValue *parse(const char *text) {
        JsonValue *v = NULL;
        ASSERT_OK(json_parse(text, strlen(text), JSON_DEPTH_MAX_DEFAULT, &v, NULL));
        return v;
}

static JsonValue *load_fixture(const char *name) {
        _cleanup_free_ char *path = NULL, *data = NULL;
        JsonValue *v = NULL;
        size_t size = 0;

        path = strf("%s/tests/fixtures/kubernetes/%s", getenv("TEST_SRCDIR") ?: ".", name);
        ASSERT_OK(read_full_file(path, 1 << 20, &data, &size));
        ASSERT_OK(json_parse(data, size, JSON_DEPTH_MAX_DEFAULT, &v, NULL));
        return v;
}

static const char *env_value(const JsonValue *container, const char *name) {
        const JsonValue *env = json_get(container, "env");
        for (size_t i = 0; i < json_length(env); i++)
                if (streq_ptr(json_get_string(json_array_at(env, i), "name"), name))
                        return json_get_string(json_array_at(env, i), "value") ?: "";
        return NULL;
}

static size_t env_count(const JsonValue *container, const char *name) {
        const JsonValue *env = json_get(container, "env");
        size_t n = 0;
        for (size_t i = 0; i < json_length(env); i++)
                if (streq_ptr(json_get_string(json_array_at(env, i), "name"), name))
                        n++;
        return n;
}

#define STRV(...) ((char *const *) (const char *const[]){__VA_ARGS__, NULL})

TEST(standard_from_fixture) {
        _cleanup_(json_freep) JsonValue *dep = load_fixture("deployment-cli.json"), *pod = NULL;
        _cleanup_free_ char *error = NULL;
        const JsonValue *spec, *tspec, *c, *labels, *annotations;

        TaskPodParams p = {
                .name = "lagoon-task-abc123",
                .namespace = "example-project-main",
                .task_id = "42",
                .node_name = "node-1",
                .command = "drush cr && echo 'done'",
                .env = STRV("TASK_API_HOST=api.lagoon.example", "TASK_DATA_ID=42", "LAGOON_PROJECT_ID=18",
                            "SERVICE_NAME=overridden"),
                .env_remove = STRV("CRONJOBS"),
        };
        ASSERT_OK(task_pod_standard(dep, &p, &pod, &error));

        ASSERT_STREQ(json_get_string(pod, "apiVersion"), "v1");
        ASSERT_STREQ(json_get_string(pod, "kind"), "Pod");
        ASSERT_STREQ(json_get_string(json_get(pod, "metadata"), "name"), "lagoon-task-abc123");
        ASSERT_STREQ(json_get_string(json_get(pod, "metadata"), "namespace"), "example-project-main");

        labels = json_get_path(pod, "metadata", "labels", NULL);
        ASSERT_STREQ(json_get_string(labels, "lagoon.sh/jobType"), "task");
        ASSERT_STREQ(json_get_string(labels, "lagoon.sh/taskName"), "lagoon-task-abc123");
        ASSERT_STREQ(json_get_string(labels, "app.kubernetes.io/managed-by"), "lagoon-taskd");
        ASSERT_STREQ(json_get_string(labels, "taskd.lagoon.sh/node"), "node-1");
        /* Not the template's labels: the Service and discovery select lagoon.sh/service. */
        ASSERT(!json_get(labels, "lagoon.sh/service"));
        ASSERT(json_length(labels) == 4);
        annotations = json_get_path(pod, "metadata", "annotations", NULL);
        ASSERT_STREQ(json_get_string(annotations, "cluster-autoscaler.kubernetes.io/safe-to-evict"), "false");
        ASSERT_STREQ(json_get_string(annotations, "taskd.lagoon.sh/task-id"), "42");

        /* The template spec is copied whole, with the overrides. */
        spec = json_get(pod, "spec");
        tspec = json_get_path(dep, "spec", "template", "spec", NULL);
        ASSERT_STREQ(json_get_string(spec, "restartPolicy"), "Never");
        ASSERT_STREQ(json_get_string(spec, "priorityClassName"), json_get_string(tspec, "priorityClassName"));
        ASSERT(json_boolean(json_get(spec, "enableServiceLinks")) == 0);
        ASSERT(json_boolean(json_get(spec, "automountServiceAccountToken")) == 0);
        ASSERT(json_length(json_get(spec, "volumes")) == json_length(json_get(tspec, "volumes")));
        ASSERT_STREQ(json_get_string(json_array_at(json_get(spec, "imagePullSecrets"), 0), "name"),
                     "lagoon-internal-registry-secret");

        c = json_array_at(json_get(spec, "containers"), 0);
        ASSERT_STREQ(json_get_string(c, "image"),
                     json_get_string(json_array_at(json_get(tspec, "containers"), 0), "image"));
        ASSERT(json_length(json_get(c, "command")) == 6);
        ASSERT_STREQ(json_string(json_array_at(json_get(c, "command"), 0)), "/sbin/tini");
        ASSERT_STREQ(json_string(json_array_at(json_get(c, "command"), 1)), "--");
        ASSERT_STREQ(json_string(json_array_at(json_get(c, "command"), 2)), "/lagoon/entrypoints.sh");
        ASSERT_STREQ(json_string(json_array_at(json_get(c, "command"), 3)), "/bin/sh");
        ASSERT_STREQ(json_string(json_array_at(json_get(c, "command"), 4)), "-c");
        ASSERT_STREQ(json_string(json_array_at(json_get(c, "command"), 5)), "drush cr && echo 'done'");
        ASSERT(!json_get(c, "readinessProbe"));
        ASSERT(json_length(json_get(c, "volumeMounts")) == 3);
        ASSERT(json_length(json_get(c, "envFrom")) == 2);
        ASSERT(!env_value(c, "CRONJOBS"));
        ASSERT_STREQ(env_value(c, "LAGOON_GIT_SHA"), "0000000000000000000000000000000000000000");
        ASSERT_STREQ(env_value(c, "SERVICE_NAME"), "overridden");
        ASSERT(env_count(c, "SERVICE_NAME") == 1);
        ASSERT_STREQ(env_value(c, "TASK_API_HOST"), "api.lagoon.example");
        ASSERT_STREQ(env_value(c, "TASK_DATA_ID"), "42");
        ASSERT_STREQ(env_value(c, "LAGOON_PROJECT_ID"), "18");

        /* The Deployment itself is untouched. */
        ASSERT(json_get(json_array_at(json_get(tspec, "containers"), 0), "readinessProbe"));
}

TEST(standard_bad_deployments) {
        static const char *const bad[] = {
                "{}",
                "{\"spec\":{\"template\":{\"spec\":[]}}}",
                "{\"spec\":{\"template\":{\"spec\":{}}}}",
                "{\"spec\":{\"template\":{\"spec\":{\"containers\":[]}}}}",
                "{\"spec\":{\"template\":{\"spec\":{\"containers\":[1]}}}}",
                "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"env\":5}]}}}}",
                "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"env\":[\"x\"]}]}}}}",
                "[]",
                "null",
        };
        TaskPodParams p = {.name = "t", .namespace = "ns", .task_id = "1", .node_name = "n", .command = "true"};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(json_freep) JsonValue *dep = parse(bad[i]), *pod = NULL;
                _cleanup_free_ char *error = NULL;

                ASSERT_EQ(task_pod_standard(dep, &p, &pod, &error), -EINVAL);
                ASSERT(error && startswith(error, "deployment: "));
                ASSERT(!pod);
        }

        /* Bad parameters. */
        _cleanup_(json_freep) JsonValue *dep = load_fixture("deployment-cli.json"), *pod = NULL;
        _cleanup_free_ char *error = NULL;
        p.command = NULL;
        ASSERT_EQ(task_pod_standard(dep, &p, &pod, &error), -EINVAL);
        p.command = "true";
        p.name = "has space";
        ASSERT_EQ(task_pod_standard(dep, &p, &pod, &error), -EINVAL);
        p.name = "t";
        p.node_name = NULL;
        ASSERT_EQ(task_pod_standard(dep, &p, &pod, &error), -EINVAL);
        p.node_name = "n";
        p.env = STRV("NOEQUALS");
        ASSERT_EQ(task_pod_standard(dep, &p, &pod, &error), -EINVAL);
}

TEST(advanced) {
        _cleanup_(json_freep) JsonValue *pod = NULL, *pod2 = NULL;
        _cleanup_free_ char *error = NULL;
        const JsonValue *spec, *c, *vols, *mounts;

        TaskPodParams p = {
                .name = "lagoon-advanced-task-x1",
                .namespace = "example-project-main",
                .task_id = "43",
                .node_name = "node-1",
                .image = "uselagoon/task-activestandby:latest",
                .ssh_key = true,
                .deployer_token = true,
                .deployer_token_secret = "lagoon-deployer-token-abcde",
                .env_from_secrets = STRV("lagoon-platform-env", "lagoon-env"),
                .env = STRV("JSON_PAYLOAD=eyJ4IjoxfQ==", "NAMESPACE=example-project-main",
                            "PODNAME=lagoon-advanced-task-x1", "TASK_DATA_ID=43"),
        };
        ASSERT_OK(task_pod_advanced(&p, &pod, &error));
        spec = json_get(pod, "spec");
        ASSERT_STREQ(json_get_string(spec, "restartPolicy"), "Never");
        ASSERT(json_boolean(json_get(spec, "enableServiceLinks")) == 0);
        ASSERT_STREQ(json_get_string(spec, "serviceAccountName"), "lagoon-deployer");
        ASSERT(json_length(json_get(spec, "containers")) == 1);
        c = json_array_at(json_get(spec, "containers"), 0);
        ASSERT_STREQ(json_get_string(c, "name"), "lagoon-task");
        ASSERT_STREQ(json_get_string(c, "image"), "uselagoon/task-activestandby:latest");
        ASSERT_STREQ(json_get_string(c, "imagePullPolicy"), "Always");
        ASSERT(!json_get(c, "command"));
        ASSERT(json_length(json_get(c, "env")) == 4);
        ASSERT_STREQ(env_value(c, "JSON_PAYLOAD"), "eyJ4IjoxfQ==");
        ASSERT_STREQ(env_value(c, "PODNAME"), "lagoon-advanced-task-x1");
        ASSERT(json_length(json_get(c, "envFrom")) == 2);
        ASSERT_STREQ(json_get_string(json_get(json_array_at(json_get(c, "envFrom"), 1), "secretRef"), "name"),
                     "lagoon-env");

        vols = json_get(spec, "volumes");
        mounts = json_get(c, "volumeMounts");
        ASSERT(json_length(vols) == 2 && json_length(mounts) == 2);
        ASSERT_STREQ(json_get_string(json_get(json_array_at(vols, 0), "secret"), "secretName"), "lagoon-sshkey");
        ASSERT_STREQ(json_get_string(json_array_at(mounts, 0), "mountPath"), "/var/run/secrets/lagoon/ssh");
        ASSERT(json_boolean(json_get(json_array_at(mounts, 0), "readOnly")) == 1);
        ASSERT_STREQ(json_get_string(json_get(json_array_at(vols, 1), "secret"), "secretName"),
                     "lagoon-deployer-token-abcde");
        ASSERT_STREQ(json_get_string(json_array_at(mounts, 1), "mountPath"), "/var/run/secrets/lagoon/deployer");

        /* Neither key nor token: no volumes, the namespace's default service account. */
        p.ssh_key = p.deployer_token = false;
        p.env_from_secrets = NULL;
        ASSERT_OK(task_pod_advanced(&p, &pod2, &error));
        ASSERT(!json_get(json_get(pod2, "spec"), "volumes"));
        ASSERT(!json_get(json_get(pod2, "spec"), "serviceAccountName"));
        ASSERT(!json_get(json_array_at(json_get(json_get(pod2, "spec"), "containers"), 0), "envFrom"));

        p.image = NULL;
        json_free(TAKE_PTR(pod2));
        ASSERT_EQ(task_pod_advanced(&p, &pod2, &error), -EINVAL);
}

/* What remote-controller adds for volumeMounts, dynamic secrets, the rootless flag and
 * the organization, in its order: ssh key, bulk claims, deployer token, dynamic secrets. */
TEST(advanced_volumes_secrets_rootless_labels) {
        _cleanup_(json_freep) JsonValue *pod = NULL, *pod2 = NULL;
        _cleanup_free_ char *error = NULL;
        const JsonValue *spec, *c, *vols, *mounts, *v, *labels, *sc;

        TaskPodParams p = {
                .name = "lagoon-task-21",
                .namespace = "proj-main",
                .task_id = "21",
                .node_name = "node-1",
                .image = "uselagoon/task-projectclone:v2",
                .ssh_key = true,
                .deployer_token = true,
                .deployer_token_secret = "lagoon-deployer-token-abcde",
                .bulk_volumes = STRV("nginx", "files"),
                .dynamic_secrets = STRV("api-keys"),
                .rootless = true,
                .labels = STRV("organization.lagoon.sh/id=5", "organization.lagoon.sh/name=acme"),
        };
        ASSERT_OK(task_pod_advanced(&p, &pod, &error));
        spec = json_get(pod, "spec");
        c = json_array_at(json_get(spec, "containers"), 0);
        vols = json_get(spec, "volumes");
        mounts = json_get(c, "volumeMounts");
        ASSERT(json_length(vols) == 5 && json_length(mounts) == 5);
        ASSERT_STREQ(json_get_string(json_array_at(vols, 0), "name"), "lagoon-sshkey");
        v = json_array_at(vols, 1);
        ASSERT_STREQ(json_get_string(v, "name"), "nginx");
        ASSERT_STREQ(json_get_string(json_get(v, "persistentVolumeClaim"), "claimName"), "nginx");
        ASSERT(!json_get(v, "secret"));
        ASSERT_STREQ(json_get_string(json_array_at(mounts, 1), "mountPath"), "/storage/nginx");
        ASSERT(!json_get(json_array_at(mounts, 1), "readOnly")); /* read-write, as omitempty leaves it */
        ASSERT_STREQ(json_get_string(json_array_at(mounts, 2), "mountPath"), "/storage/files");
        ASSERT_STREQ(json_get_string(json_array_at(vols, 3), "name"), "lagoon-deployer-token-abcde");
        v = json_array_at(vols, 4);
        ASSERT_STREQ(json_get_string(v, "name"), "dynamic-api-keys");
        ASSERT_STREQ(json_get_string(json_get(v, "secret"), "secretName"), "api-keys");
        {
                int64_t mode = 0;
                ASSERT_OK(json_int64(json_get(json_get(v, "secret"), "defaultMode"), &mode));
                ASSERT_EQ(mode, 0444);
        }
        ASSERT_STREQ(json_get_string(json_array_at(mounts, 4), "name"), "dynamic-api-keys");
        ASSERT_STREQ(json_get_string(json_array_at(mounts, 4), "mountPath"),
                     "/var/run/secrets/lagoon/dynamic/api-keys");
        ASSERT(json_boolean(json_get(json_array_at(mounts, 4), "readOnly")) == 1);

        sc = json_get(spec, "securityContext");
        {
                int64_t u = -1, g = -1, fs = -1;
                ASSERT_OK(json_int64(json_get(sc, "runAsUser"), &u));
                ASSERT_OK(json_int64(json_get(sc, "runAsGroup"), &g));
                ASSERT_OK(json_int64(json_get(sc, "fsGroup"), &fs));
                ASSERT(u == 10000 && g == 0 && fs == 10001);
        }
        labels = json_get(json_get(pod, "metadata"), "labels");
        ASSERT_STREQ(json_get_string(labels, "organization.lagoon.sh/id"), "5");
        ASSERT_STREQ(json_get_string(labels, "organization.lagoon.sh/name"), "acme");
        ASSERT_STREQ(json_get_string(labels, "lagoon.sh/jobType"), "task");

        /* not rootless: no securityContext; a label without "=" is refused */
        p.rootless = false;
        p.labels = STRV("nokey");
        ASSERT_EQ(task_pod_advanced(&p, &pod2, &error), -EINVAL);
        p.labels = NULL;
        ASSERT_OK(task_pod_advanced(&p, &pod2, &error));
        ASSERT(!json_get(json_get(pod2, "spec"), "securityContext"));
}

static void state_of(const char *pod_json, TaskPodState *s) {
        _cleanup_(json_freep) JsonValue *pod = parse(pod_json);
        ASSERT_OK(task_pod_state(pod, NULL, s));
}

TEST(states) {
        TaskPodState s = {};

        state_of("{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"7\"}}", &s);
        ASSERT(s.phase == TASK_POD_PENDING && !s.started && !s.terminated && !s.failure);
        ASSERT_STREQ(s.resource_version, "7");
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\"},\"status\":{\"phase\":\"Pending\",\"containerStatuses\":[{\"name\":"
                 "\"lagoon-task\",\"state\":{\"waiting\":{\"reason\":\"ContainerCreating\"}}}]}}",
                 &s);
        ASSERT(s.phase == TASK_POD_PENDING && !s.started && !s.failure);
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\"},\"status\":{\"phase\":\"Pending\",\"containerStatuses\":[{\"name\":"
                 "\"lagoon-task\",\"state\":{\"waiting\":{\"reason\":\"ImagePullBackOff\",\"message\":\"Back-off "
                 "pulling image \\\"x:y\\\"\"}}}]}}",
                 &s);
        ASSERT_STREQ(s.failure, "image-pull: ImagePullBackOff: Back-off pulling image \"x:y\"");
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\"},\"status\":{\"phase\":\"Pending\",\"containerStatuses\":[{\"name\":"
                 "\"c\",\"state\":{\"waiting\":{\"reason\":\"ErrImagePull\"}}}]}}",
                 &s);
        ASSERT_STREQ(s.failure, "image-pull: ErrImagePull");
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\"},\"status\":{\"phase\":\"Running\",\"containerStatuses\":[{\"name\":"
                 "\"c\",\"state\":{\"waiting\":{\"reason\":\"CrashLoopBackOff\",\"message\":\"back-off 10s\"}}}]}}",
                 &s);
        ASSERT_STREQ(s.failure, "crash-loop: CrashLoopBackOff: back-off 10s");
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\"},\"status\":{\"phase\":\"Running\",\"containerStatuses\":[{\"name\":"
                 "\"c\",\"state\":{\"running\":{\"startedAt\":\"2026-11-28T10:00:00Z\"}}}]}}",
                 &s);
        ASSERT(s.phase == TASK_POD_RUNNING && s.started && !s.terminated && !s.failure);
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\",\"annotations\":{\"lagoon.sh/taskData\":\"eyJ4IjoxfQ==\"}},"
                 "\"status\":{\"phase\":\"Failed\",\"containerStatuses\":[{\"name\":\"c\",\"state\":{\"terminated\":"
                 "{\"exitCode\":3,\"reason\":\"Error\"}}}]}}",
                 &s);
        ASSERT(s.phase == TASK_POD_FAILED && s.terminated && s.exit_code == 3 && !s.failure);
        ASSERT_STREQ(s.task_data, "eyJ4IjoxfQ==");
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\",\"deletionTimestamp\":\"2026-11-28T10:00:00Z\"},\"status\":{"
                 "\"phase\":\"Failed\",\"reason\":\"Evicted\",\"message\":\"The node was low on resource: memory.\"}}",
                 &s);
        ASSERT(s.deleting);
        ASSERT_STREQ(s.failure, "evicted: The node was low on resource: memory.");
        task_pod_state_done(&s);

        /* evicted with the container killed: still the eviction */
        state_of("{\"metadata\":{\"name\":\"p\"},\"status\":{\"phase\":\"Failed\",\"reason\":\"Evicted\",\"message\":"
                 "\"low on "
                 "memory\",\"containerStatuses\":[{\"name\":\"c\",\"state\":{\"terminated\":{\"exitCode\":137}}}]}}",
                 &s);
        ASSERT(s.terminated && s.exit_code == 137);
        ASSERT_STREQ(s.failure, "evicted: low on memory");
        task_pod_state_done(&s);

        state_of("{\"metadata\":{\"name\":\"p\"},\"status\":{\"phase\":\"Failed\",\"reason\":\"NodeLost\"}}", &s);
        ASSERT_STREQ(s.failure, "pod-failed: NodeLost");
        task_pod_state_done(&s);

        /* Container selected by name; a bad exit code does not pass as success. */
        _cleanup_(json_freep) JsonValue *pod =
                parse("{\"metadata\":{},\"status\":{\"phase\":\"Succeeded\",\"containerStatuses\":[{\"name\":\"side\","
                      "\"state\":{\"running\":{}}},{\"name\":\"lagoon-task\",\"state\":{\"terminated\":{\"exitCode\":"
                      "\"zero\"}}}]}}");
        ASSERT_OK(task_pod_state(pod, "lagoon-task", &s));
        ASSERT(s.terminated && s.exit_code == 255);
        task_pod_state_done(&s);

        /* Not a pod. */
        static const char *const bad[] = {"[]", "{}", "{\"metadata\":1}", "{\"metadata\":{},\"status\":[]}", "3"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(json_freep) JsonValue *v = parse(bad[i]);
                ASSERT_EQ(task_pod_state(v, NULL, &s), -EBADMSG);
        }
}

int main(void) {
        RUN(standard_from_fixture);
        RUN(standard_bad_deployments);
        RUN(advanced);
        RUN(advanced_volumes_secrets_rootless_labels);
        RUN(states);
        return 0;
}
