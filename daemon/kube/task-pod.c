/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Task pods as JSON: building the pod of a standard task from its service's Deployment
 * and the pod of an advanced task, and reading a pod's status back into what the task
 * needs (started, exit code, why it failed, taskData). Pure: no I/O, no logging. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task-pod.h"

static int env_entry(const char *kv, JsonValue **ret) {
        _cleanup_(json_freep) JsonValue *e = NULL;
        _cleanup_free_ char *key = NULL;
        const char *eq = strchr(kv, '=');
        int r;

        if (!eq || eq == kv)
                return -EINVAL;
        key = strndup(kv, eq - kv);
        e = json_new_object();
        if (!key || !e)
                return -ENOMEM;
        r = json_object_set_string(e, "name", key);
        if (r >= 0)
                r = json_object_set_string(e, "value", eq + 1);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(e);
        return 0;
}

static bool env_key_is(const JsonValue *entry, const char *kv) {
        const char *name = json_get_string(entry, "name"), *eq = strchr(kv, '=');
        size_t n = eq ? (size_t) (eq - kv) : strlen(kv);

        return name && strlen(name) == n && strncmp(name, kv, n) == 0;
}

/* Drops env_remove keys, then sets each "K=V": in place when K exists, else appended. */
static int container_edit_env(JsonValue *container, char *const *env, char *const *env_remove) {
        JsonValue *list = json_get(container, "env");
        int r;

        if (!list) {
                r = json_object_set(container, "env", json_new_array());
                if (r < 0)
                        return r;
                list = json_get(container, "env");
        }
        if (!json_is_array(list))
                return -EINVAL;

        for (size_t i = json_length(list); i > 0; i--) {
                JsonValue *e = json_array_at(list, i - 1);

                if (!json_is_object(e))
                        return -EINVAL;
                for (char *const *k = env_remove; k && *k; k++)
                        if (env_key_is(e, *k)) {
                                r = json_array_remove_at(list, i - 1);
                                if (r < 0)
                                        return r;
                                break;
                        }
        }

        for (char *const *kv = env; kv && *kv; kv++) {
                _cleanup_(json_freep) JsonValue *entry = NULL;
                bool replaced = false;

                r = env_entry(*kv, &entry);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < json_length(list); i++) {
                        JsonValue *e = json_array_at(list, i);
                        if (env_key_is(e, *kv)) {
                                /* valueFrom and value exclude each other */
                                (void) json_object_remove(e, "valueFrom");
                                r = json_object_set_string(e, "value", strchr(*kv, '=') + 1);
                                if (r < 0)
                                        return r;
                                replaced = true;
                                break;
                        }
                }
                if (!replaced) {
                        r = json_array_append(list, TAKE_PTR(entry));
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int set_string_map(JsonValue *obj, const char *key, const char *const *pairs) {
        JsonValue *map = NULL;
        int r;

        r = json_object_ensure_object(obj, key, &map);
        if (r < 0)
                return r;
        for (const char *const *p = pairs; p[0]; p += 2)
                if (p[1]) {
                        r = json_object_set_string(map, p[0], p[1]);
                        if (r < 0)
                                return r;
                }
        return 0;
}

/* The pod around spec (taken, also on failure): its name, namespace, labels and annotations. */
static int pod_make(const TaskPodParams *p, JsonValue *spec, JsonValue **ret) {
        _cleanup_(json_freep) JsonValue *pod = json_new_object(), *spec_owned = spec;
        JsonValue *meta = NULL;
        int r;

        if (!pod)
                return -ENOMEM;
        if ((r = json_object_set_string(pod, "apiVersion", "v1")) < 0 ||
            (r = json_object_set_string(pod, "kind", "Pod")) < 0 ||
            (r = json_object_ensure_object(pod, "metadata", &meta)) < 0 ||
            (r = json_object_set_string(meta, "name", p->name)) < 0 ||
            (r = json_object_set_string(meta, "namespace", p->namespace)) < 0)
                return r;
        r = set_string_map(meta, "labels",
                           (const char *const[]){TASK_POD_LABEL_JOB_TYPE, "task", TASK_POD_LABEL_TASK_NAME, p->name,
                                                 TASK_POD_LABEL_MANAGED_BY, TASK_POD_MANAGED_BY, TASK_POD_LABEL_NODE,
                                                 p->node_name, NULL});
        if (r < 0)
                return r;
        for (char *const *kv = p->labels; kv && *kv; kv++) {
                _cleanup_free_ char *key = NULL;
                const char *eq = strchr(*kv, '=');

                if (!eq || eq == *kv)
                        return -EINVAL;
                key = strndup(*kv, eq - *kv);
                if (!key)
                        return -ENOMEM;
                r = json_object_set_string(json_get(meta, "labels"), key, eq + 1);
                if (r < 0)
                        return r;
        }
        /* Like remote-controller: the autoscaler must not evict a task half way. */
        r = set_string_map(meta, "annotations",
                           (const char *const[]){"cluster-autoscaler.kubernetes.io/safe-to-evict", "false",
                                                 TASK_POD_ANNOTATION_TASK_ID, p->task_id, NULL});
        if (r < 0)
                return r;
        r = json_object_set(pod, "spec", TAKE_PTR(spec_owned));
        if (r < 0)
                return r;
        *ret = TAKE_PTR(pod);
        return 0;
}

static int fail(char **ret_error, int r, const char *what) {
        if (ret_error) {
                free(*ret_error);
                *ret_error = strdup(what);
        }
        return r;
}

static bool label_value_ok(const char *s) {
        size_t n = s ? strlen(s) : 0;
        return n <= 63 && strspn(s ?: "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") == n;
}

static int check_params(const TaskPodParams *p, char **ret_error) {
        if (isempty(p->name) || strlen(p->name) > 253 || !label_value_ok(p->name))
                return fail(ret_error, -EINVAL, "pod name: 1-63 characters [A-Za-z0-9_.-] needed");
        if (isempty(p->namespace) || isempty(p->task_id) || isempty(p->node_name) || !label_value_ok(p->node_name))
                return fail(ret_error, -EINVAL, "namespace, task id and node name are required");
        return 0;
}

int task_pod_standard(const JsonValue *deployment, const TaskPodParams *p, JsonValue **ret, char **ret_error) {
        _cleanup_(json_freep) JsonValue *spec = NULL;
        const JsonValue *template_spec;
        JsonValue *containers;
        int r;

        r = check_params(p, ret_error);
        if (r < 0)
                return r;
        if (isempty(p->command))
                return fail(ret_error, -EINVAL, "a standard task needs a command");
        template_spec = json_get_path(deployment, "spec", "template", "spec", NULL);
        if (!json_is_object(template_spec))
                return fail(ret_error, -EINVAL, "deployment: spec.template.spec is missing");
        spec = json_copy(template_spec);
        if (!spec)
                return -ENOMEM;
        containers = json_get(spec, "containers");
        if (!json_is_array(containers) || json_length(containers) == 0)
                return fail(ret_error, -EINVAL, "deployment: spec.template.spec.containers is missing or empty");

        for (size_t i = 0; i < json_length(containers); i++) {
                JsonValue *c = json_array_at(containers, i);

                if (!json_is_object(c))
                        return fail(ret_error, -EINVAL, "deployment: a container is not an object");
                r = json_object_set(
                        c, "command",
                        json_new_strv((char *const *) (const char *const[]){
                                "/sbin/tini", "--", "/lagoon/entrypoints.sh", "/bin/sh", "-c", p->command, NULL}));
                if (r < 0)
                        return r;
                (void) json_object_remove(c, "args");
                /* The probes judge a server; a task that fails them would only be restarted
                 * or marked unready for nothing. */
                (void) json_object_remove(c, "readinessProbe");
                (void) json_object_remove(c, "livenessProbe");
                (void) json_object_remove(c, "startupProbe");
                r = container_edit_env(c, p->env, p->env_remove);
                if (r == -EINVAL)
                        return fail(ret_error, r, "deployment: a container's env is not a list of objects");
                if (r < 0)
                        return r;
        }
        r = json_object_set_string(spec, "restartPolicy", "Never");
        if (r < 0)
                return r;

        return pod_make(p, TAKE_PTR(spec), ret);
}

static char *concat(const char *a, const char *b) {
        char *s = NULL;

        return asprintf(&s, "%s%s", a, b) < 0 ? NULL : s;
}

/* A volume of a secret (mode: its files' mode) or, with secret NULL, of the claim named
 * name, and its mount. */
static int add_volume(JsonValue *volumes,
                      JsonValue *mounts,
                      const char *name,
                      const char *secret,
                      int mode,
                      const char *mount_path) {
        _cleanup_(json_freep) JsonValue *v = json_new_object(), *m = json_new_object();
        JsonValue *src = NULL;
        int r;

        if (!v || !m)
                return -ENOMEM;
        if ((r = json_object_set_string(v, "name", name)) < 0 || (r = json_object_set_string(m, "name", name)) < 0 ||
            (r = json_object_set_string(m, "mountPath", mount_path)) < 0)
                return r;
        if (secret) {
                if ((r = json_object_ensure_object(v, "secret", &src)) < 0 ||
                    (r = json_object_set_string(src, "secretName", secret)) < 0 ||
                    (r = json_object_set_int64(src, "defaultMode", mode)) < 0 ||
                    (r = json_object_set_boolean(m, "readOnly", true)) < 0)
                        return r;
        } else if ((r = json_object_ensure_object(v, "persistentVolumeClaim", &src)) < 0 ||
                   (r = json_object_set_string(src, "claimName", name)) < 0)
                return r;
        r = json_array_append(volumes, TAKE_PTR(v));
        if (r < 0)
                return r;
        return json_array_append(mounts, TAKE_PTR(m));
}

static int add_env_from(JsonValue *list, const char *kind, char *const *names) {
        int r;

        for (char *const *n = names; n && *n; n++) {
                _cleanup_(json_freep) JsonValue *e = json_new_object();
                JsonValue *ref = NULL;

                if (!e)
                        return -ENOMEM;
                if ((r = json_object_ensure_object(e, kind, &ref)) < 0 ||
                    (r = json_object_set_string(ref, "name", *n)) < 0)
                        return r;
                r = json_array_append(list, TAKE_PTR(e));
                if (r < 0)
                        return r;
        }
        return 0;
}

int task_pod_advanced(const TaskPodParams *p, JsonValue **ret, char **ret_error) {
        _cleanup_(json_freep) JsonValue *spec = json_new_object(), *container = json_new_object(),
                                        *volumes = json_new_array(), *mounts = json_new_array(),
                                        *env = json_new_array(), *env_from = json_new_array(),
                                        *containers = json_new_array();
        int r;

        if (!spec || !container || !volumes || !mounts || !env || !env_from || !containers)
                return -ENOMEM;
        r = check_params(p, ret_error);
        if (r < 0)
                return r;
        if (isempty(p->image))
                return fail(ret_error, -EINVAL, "an advanced task needs a runner image");

        for (char *const *kv = p->env; kv && *kv; kv++) {
                _cleanup_(json_freep) JsonValue *e = NULL;

                r = env_entry(*kv, &e);
                if (r == -EINVAL)
                        return fail(ret_error, r, "env: an entry is not KEY=VALUE");
                if (r < 0)
                        return r;
                r = json_array_append(env, TAKE_PTR(e));
                if (r < 0)
                        return r;
        }
        if (p->ssh_key) {
                r = add_volume(volumes, mounts, "lagoon-sshkey", "lagoon-sshkey", 0644, "/var/run/secrets/lagoon/ssh");
                if (r < 0)
                        return r;
        }
        /* remote-controller's order: the ssh key, the bulk claims, the deployer token,
         * the dynamic secrets last. */
        for (char *const *c = p->bulk_volumes; c && *c; c++) {
                _cleanup_free_ char *path = concat("/storage/", *c);

                if (!path)
                        return -ENOMEM;
                r = add_volume(volumes, mounts, *c, NULL, 0, path);
                if (r < 0)
                        return r;
        }
        if (p->deployer_token && p->deployer_token_secret) {
                /* Legacy token secrets; projected tokens come with the service account. */
                r = add_volume(volumes, mounts, p->deployer_token_secret, p->deployer_token_secret, 0644,
                               "/var/run/secrets/lagoon/deployer");
                if (r < 0)
                        return r;
        }
        for (char *const *sec = p->dynamic_secrets; sec && *sec; sec++) {
                _cleanup_free_ char *name = concat("dynamic-", *sec),
                                    *path = concat("/var/run/secrets/lagoon/dynamic/", *sec);

                if (!name || !path)
                        return -ENOMEM;
                /* remote-controller writes DefaultMode 444 in decimal (0674); read-only for
                 * everyone is what it means, and all a task needs. */
                r = add_volume(volumes, mounts, name, *sec, 0444, path);
                if (r < 0)
                        return r;
        }
        if ((r = add_env_from(env_from, "secretRef", p->env_from_secrets)) < 0 ||
            (r = add_env_from(env_from, "configMapRef", p->env_from_config_maps)) < 0)
                return r;

        if ((r = json_object_set_string(container, "name", TASK_POD_CONTAINER_ADVANCED)) < 0 ||
            (r = json_object_set_string(container, "image", p->image)) < 0 ||
            (r = json_object_set_string(container, "imagePullPolicy", p->image_pull_policy ?: "Always")) < 0 ||
            (r = json_object_set(container, "env", TAKE_PTR(env))) < 0)
                return r;
        if (json_length(env_from) > 0 && (r = json_object_set(container, "envFrom", TAKE_PTR(env_from))) < 0)
                return r;
        if (json_length(mounts) > 0 && (r = json_object_set(container, "volumeMounts", TAKE_PTR(mounts))) < 0)
                return r;
        if ((r = json_array_append(containers, TAKE_PTR(container))) < 0 ||
            (r = json_object_set_string(spec, "restartPolicy", "Never")) < 0 ||
            (r = json_object_set(spec, "containers", TAKE_PTR(containers))) < 0 ||
            /* Like Lagoon's cli pods: no *_SERVICE_HOST variables for every service. */
            (r = json_object_set_boolean(spec, "enableServiceLinks", false)) < 0)
                return r;
        if (json_length(volumes) > 0 && (r = json_object_set(spec, "volumes", TAKE_PTR(volumes))) < 0)
                return r;
        if (p->deployer_token && (r = json_object_set_string(spec, "serviceAccountName", "lagoon-deployer")) < 0)
                return r;
        if (p->rootless) {
                JsonValue *sc = NULL;

                if ((r = json_object_ensure_object(spec, "securityContext", &sc)) < 0 ||
                    (r = json_object_set_int64(sc, "runAsUser", 10000)) < 0 ||
                    (r = json_object_set_int64(sc, "runAsGroup", 0)) < 0 ||
                    (r = json_object_set_int64(sc, "fsGroup", 10001)) < 0)
                        return r;
        }

        return pod_make(p, TAKE_PTR(spec), ret);
}

void task_pod_state_done(TaskPodState *s) {
        if (!s)
                return;
        s->failure = mfree(s->failure);
        s->task_data = mfree(s->task_data);
        s->resource_version = mfree(s->resource_version);
}

static TaskPodPhase phase_from_string(const char *s) {
        static const char *const names[] = {
                [TASK_POD_PENDING] = "Pending", [TASK_POD_RUNNING] = "Running", [TASK_POD_SUCCEEDED] = "Succeeded",
                [TASK_POD_FAILED] = "Failed",   [TASK_POD_UNKNOWN] = "Unknown",
        };
        for (size_t i = 0; s && i < ELEMENTSOF(names); i++)
                if (streq(s, names[i]))
                        return (TaskPodPhase) i;
        return s ? TASK_POD_UNKNOWN : TASK_POD_PENDING; /* a new pod has no phase yet */
}

static char *reason_text(const char *prefix, const char *reason, const char *message) {
        char *s = NULL;

        if (asprintf(&s, "%s%s%s%s", prefix, strempty(reason), !isempty(reason) && !isempty(message) ? ": " : "",
                     strempty(message)) < 0)
                return NULL;
        return s;
}

/* Waiting reasons that end a task: the prefix of its failure reason, NULL for others. */
static const char *waiting_failure_prefix(const char *reason) {
        if (!reason)
                return NULL;
        if (streq(reason, "ErrImagePull") || streq(reason, "ImagePullBackOff") || streq(reason, "InvalidImageName") ||
            streq(reason, "ErrImageNeverPull"))
                return "image-pull: ";
        if (streq(reason, "CrashLoopBackOff"))
                return "crash-loop: ";
        if (streq(reason, "CreateContainerConfigError") || streq(reason, "CreateContainerError") ||
            streq(reason, "RunContainerError"))
                return "launch-error: ";
        return NULL;
}

static const JsonValue *find_container_status(const JsonValue *pod, const char *container) {
        const JsonValue *list = json_get_path(pod, "status", "containerStatuses", NULL);

        for (size_t i = 0; i < json_length(list); i++) {
                const JsonValue *cs = json_array_at(list, i);
                if (!container || streq_ptr(json_get_string(cs, "name"), container))
                        return cs;
        }
        return NULL;
}

int task_pod_state(const JsonValue *pod, const char *container, TaskPodState *ret) {
        TaskPodState s = {.exit_code = -1};
        const JsonValue *cs, *state, *annotations;
        const char *phase;

        if (!json_is_object(pod) || !json_is_object(json_get(pod, "metadata")))
                return -EBADMSG;
        if (json_get(pod, "status") && !json_is_object(json_get(pod, "status")))
                return -EBADMSG;

        phase = json_get_string(json_get(pod, "status"), "phase");
        s.phase = phase_from_string(phase);
        s.deleting = json_get_path(pod, "metadata", "deletionTimestamp", NULL) != NULL;
        if (json_get_string(json_get(pod, "metadata"), "resourceVersion") &&
            !(s.resource_version = strdup(json_get_string(json_get(pod, "metadata"), "resourceVersion"))))
                goto oom;

        annotations = json_get_path(pod, "metadata", "annotations", NULL);
        if (json_get_string(annotations, TASK_POD_ANNOTATION_TASK_DATA) &&
            !(s.task_data = strdup(json_get_string(annotations, TASK_POD_ANNOTATION_TASK_DATA))))
                goto oom;

        cs = find_container_status(pod, container);
        state = json_get(cs, "state");
        if (json_get(state, "running"))
                s.started = true;
        else if (json_get(state, "terminated")) {
                const JsonValue *term = json_get(state, "terminated");
                int64_t code;

                s.started = s.terminated = true;
                if (json_int64(json_get(term, "exitCode"), &code) >= 0 && code >= 0 && code <= 255)
                        s.exit_code = (int) code;
                else
                        s.exit_code = 255;
        } else if (json_get(state, "waiting")) {
                const char *reason = json_get_string(json_get(state, "waiting"), "reason");
                const char *message = json_get_string(json_get(state, "waiting"), "message");
                const char *prefix = waiting_failure_prefix(reason);

                /* Other reasons (ContainerCreating, PodInitializing) are the normal way up. */
                if (prefix && !(s.failure = reason_text(prefix, reason, message)))
                        goto oom;
        }
        /* restartPolicy Never: a container that ran once and waits again crashed */
        if (cs && json_get_path(cs, "lastState", "terminated", NULL) && !s.failure && !s.terminated &&
            !(s.failure = reason_text("crash-loop: ", "restarted", NULL)))
                goto oom;

        if (s.phase == TASK_POD_FAILED && !s.failure) {
                const char *reason = json_get_string(json_get(pod, "status"), "reason");
                const char *message = json_get_string(json_get(pod, "status"), "message");

                /* An eviction kills the containers too (137): the eviction is the reason. */
                if (streq_ptr(reason, "Evicted")) {
                        if (!(s.failure = reason_text("evicted: ", NULL, message ?: "Evicted")))
                                goto oom;
                } else if (!s.terminated && !(s.failure = reason_text("pod-failed: ", reason ?: "Failed", message)))
                        goto oom;
        }

        *ret = s;
        return 0;
oom:
        task_pod_state_done(&s);
        return -ENOMEM;
}
