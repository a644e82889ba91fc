/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The task record, its state machine, its JSON forms (API and persisted record), and
 * Lagoon's namespace rule. Pure: no I/O. */

#include <ctype.h>
#include <inttypes.h>
#include <time.h>

#include <sys/random.h>

#include "task.h"
#include "sha1.h"

static const char *const status_names[_TASK_STATUS_MAX] = {
        [TASK_NEW] = "new",           [TASK_PENDING] = "pending", [TASK_RUNNING] = "running",
        [TASK_COMPLETE] = "complete", [TASK_FAILED] = "failed",   [TASK_CANCELLED] = "cancelled",
};

const char *task_status_to_string(TaskStatus s) {
        return s >= 0 && s < _TASK_STATUS_MAX ? status_names[s] : NULL;
}

TaskStatus task_status_from_string(const char *s) {
        if (s)
                for (int i = 0; i < _TASK_STATUS_MAX; i++)
                        if (streq(s, status_names[i]))
                                return (TaskStatus) i;
        return _TASK_STATUS_INVALID;
}

Task *task_new(void) {
        Task *t = calloc(1, sizeof(Task));
        if (!t)
                return NULL;
        t->status = TASK_NEW;
        t->reported = TASK_NEW;
        t->exit_code = -1;
        t->timeout_usec = USEC_INFINITY;
        return t;
}

Task *task_free(Task *t) {
        if (!t)
                return NULL;
        free(t->id);
        free(t->name);
        free(t->project);
        free(t->environment);
        free(t->namespace);
        free(t->service);
        free(t->command);
        free(t->command_digest);
        free(t->reason);
        free(t->container_id);
        free(t->pod);
        free(t->image);
        strv_free(t->env);
        strv_free(t->pod_labels);
        free(t->rb_namespace);
        free(t->rb_source);
        strv_free(t->secrets);
        json_free(t->lagoon);
        free(t->remote_id);
        free(t->task_data);
        free(t);
        return NULL;
}

bool task_id_is_valid(const char *id) {
        size_t n;

        if (isempty(id) || id[0] == '.' || id[0] == '-')
                return false;
        n = strlen(id);
        if (n > TASK_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isascii(id[i]) || !(isalnum(id[i]) || strchr("_.-", id[i])))
                        return false;
        return true;
}

static void sanitize_dns(char *s) {
        for (; *s; s++) {
                *s = (char) tolower((unsigned char) *s);
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
                        *s = '-';
        }
}

static int sha1_hex4(const char *s, char ret[static 5]) {
        uint8_t md[SHA1_DIGEST_SIZE];

        sha1(s, strlen(s), md);
        snprintf(ret, 5, "%02x%02x", md[0], md[1]);
        return 0;
}

static int replace_all(const char *s, const char *what, const char *with, char **ret) {
        size_t lw = strlen(what), lr = strlen(with), n = 0;
        const char *p;
        char *out, *o;

        for (p = s; (p = strstr(p, what)); p += lw)
                n++;
        out = malloc(strlen(s) + n * lr + 1);
        if (!out)
                return -ENOMEM;
        for (o = out, p = s;;) {
                const char *q = strstr(p, what);

                if (!q) {
                        strcpy(o, p);
                        break;
                }
                memcpy(o, p, (size_t) (q - p));
                o += q - p;
                memcpy(o, with, lr);
                o += lr;
                p = q + lw;
        }
        *ret = out;
        return 0;
}

int task_make_namespace(const char *project,
                        const char *environment,
                        const char *pattern,
                        const char *prefix,
                        char **ret) {
        _cleanup_free_ char *e = NULL, *with_env = NULL, *ns = NULL;
        char hash[5];
        size_t lp;
        int r;

        if (isempty(project) || isempty(environment))
                return -EINVAL;
        e = strdup(environment);
        if (!e)
                return -ENOMEM;
        sanitize_dns(e);
        lp = strlen(project);

        /* Lagoon's truncateEnvironmentName (commons tasks.ts) and remote-controller's
         * ShortenEnvironment: over 58 - len(project), keep 53 - len(project) characters of the
         * made-safe name, '-', and 4 hex digits of the sha1 of the made-safe name. */
        if (strlen(e) + lp > 58) {
                size_t keep = lp < 53 ? 53 - lp : 0;

                r = sha1_hex4(e, hash);
                if (r < 0)
                        return r;
                e[keep] = 0;
                if (asprintf(&with_env, "%s-%s", e, hash) < 0)
                        return -ENOMEM;
                free(e);
                e = TAKE_PTR(with_env);
        }

        /* The pattern (project.namespacePattern; Lagoon itself never sends one), then the
         * whole name made safe, as GenerateNamespaceName does. */
        r = replace_all(isempty(pattern) ? "${project}-${environment}" : pattern, "${environment}", e, &with_env);
        if (r < 0)
                return r;
        r = replace_all(with_env, "${project}", project, &ns);
        if (r < 0)
                return r;
        sanitize_dns(ns);
        if (!isempty(prefix)) {
                char *p = NULL;

                if (asprintf(&p, "%s-%s", prefix, ns) < 0)
                        return -ENOMEM;
                free(ns);
                ns = p;
        }
        if (strlen(ns) > 63) {
                r = sha1_hex4(ns, hash);
                if (r < 0)
                        return r;
                memcpy(ns + 58, "-", 1);
                memcpy(ns + 59, hash, 5);
        }

        *ret = TAKE_PTR(ns);
        return 0;
}

bool task_transition_allowed(TaskStatus from, TaskStatus to) {
        switch (from) {
        case TASK_NEW:
                return IN_SET_STATUS(to, TASK_PENDING, TASK_RUNNING, TASK_FAILED, TASK_CANCELLED);
        case TASK_PENDING:
                return IN_SET_STATUS(to, TASK_RUNNING, TASK_FAILED, TASK_CANCELLED);
        case TASK_RUNNING:
                return IN_SET_STATUS(to, TASK_COMPLETE, TASK_FAILED, TASK_CANCELLED);
        default:
                return false;
        }
}

static const char *const launch_step_table[_TASK_LAUNCH_STEP_MAX] = {
        [TASK_LAUNCH_NONE] = "none",
        [TASK_LAUNCH_PREPARED] = "prepared",
        [TASK_LAUNCH_CREATED] = "created",
        [TASK_LAUNCH_STARTED] = "started",
};

const char *task_launch_step_to_string(TaskLaunchStep s) {
        return s >= 0 && s < _TASK_LAUNCH_STEP_MAX ? launch_step_table[s] : NULL;
}

TaskLaunchStep task_launch_step_from_string(const char *s) {
        for (int i = 0; s && i < _TASK_LAUNCH_STEP_MAX; i++)
                if (streq(launch_step_table[i], s))
                        return (TaskLaunchStep) i;
        return _TASK_LAUNCH_STEP_INVALID;
}

bool task_launching(const Task *t) {
        return t->status == TASK_PENDING && t->launch_step != TASK_LAUNCH_NONE;
}

bool task_queued(const Task *t) {
        return t->status == TASK_PENDING && t->launch_step == TASK_LAUNCH_NONE;
}

int task_requeue(Task *t) {
        if (t->status != TASK_RUNNING && !task_launching(t))
                return -EINVAL;
        t->status = TASK_PENDING;
        t->started_usec = 0;
        t->launch_step = TASK_LAUNCH_NONE;
        t->container_id = mfree(t->container_id);
        t->reason = mfree(t->reason);
        return 0;
}

int task_transition(Task *t, TaskStatus to, const char *reason, uint64_t now) {
        int r;

        if (!task_transition_allowed(t->status, to))
                return -EINVAL;
        r = free_and_strdup(&t->reason, reason);
        if (r < 0)
                return r;
        t->status = to;
        if (to == TASK_RUNNING && t->started_usec == 0)
                t->started_usec = now;
        if (task_status_is_final(to))
                t->finished_usec = now;
        return 0;
}

int format_timestamp_rfc3339(uint64_t usec, char **ret) {
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;
        char buf[64];

        if (!gmtime_r(&sec, &tm))
                return -EINVAL;
        if (strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
                return -EINVAL;
        if (asprintf(ret, "%s.%06" PRIu64 "Z", buf, usec % USEC_PER_SEC) < 0)
                return -ENOMEM;
        return 0;
}

int parse_timestamp_rfc3339(const char *s, uint64_t *ret_usec) {
        struct tm tm = {};
        const char *p;
        uint64_t frac = 0;
        time_t sec;

        if (!s)
                return -EINVAL;
        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                unsigned digits = 0;
                for (p++; *p >= '0' && *p <= '9'; p++, digits++)
                        if (digits < 6)
                                frac = frac * 10 + (uint64_t) (*p - '0');
                if (digits == 0)
                        return -EINVAL;
                for (; digits < 6; digits++)
                        frac *= 10;
        }
        if (!streq(p, "Z"))
                return -EINVAL;
        sec = timegm(&tm);
        if (sec < 0)
                return -ERANGE;
        *ret_usec = (uint64_t) sec * USEC_PER_SEC + frac;
        return 0;
}

static int set_time(JsonValue *o, const char *key, uint64_t usec) {
        _cleanup_free_ char *s = NULL;
        int r;

        if (usec == 0)
                return json_object_set(o, key, json_new_null());
        r = format_timestamp_rfc3339(usec, &s);
        if (r < 0)
                return r;
        return json_object_set_string(o, key, s);
}

int task_to_json(const Task *t, unsigned queue_position, JsonValue **ret) {
        _cleanup_json_ JsonValue *o = json_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        if ((r = json_object_set_string(o, "id", t->id)) < 0 || (r = json_object_set_string(o, "name", t->name)) < 0 ||
            (r = json_object_set_string(o, "project", t->project)) < 0 ||
            (r = json_object_set_string(o, "environment", t->environment)) < 0 ||
            (r = json_object_set_string(o, "namespace", t->namespace)) < 0 ||
            (r = json_object_set_string(o, "service", t->service)) < 0 ||
            (r = json_object_set_string(o, "command", t->command)) < 0 ||
            (r = json_object_set_string(o, "status", task_status_to_string(t->status))) < 0 ||
            (r = json_object_set_string(o, "reason", t->reason)) < 0)
                return r;
        if ((t->image && (r = json_object_set_string(o, "image", t->image)) < 0) ||
            (t->remote_id && (r = json_object_set_string(o, "remoteId", t->remote_id)) < 0) ||
            (t->pod && (r = json_object_set_string(o, "pod", t->pod)) < 0) ||
            (t->task_data && (r = json_object_set_string(o, "taskData", t->task_data)) < 0))
                return r;
        r = json_object_set(o, "exitCode", t->exit_code >= 0 ? json_new_int64(t->exit_code) : json_new_null());
        if (r < 0)
                return r;
        if ((r = set_time(o, "createdAt", t->created_usec)) < 0 ||
            (r = set_time(o, "startedAt", t->started_usec)) < 0 ||
            (r = set_time(o, "finishedAt", t->finished_usec)) < 0)
                return r;
        /* SIGTERM sent (cancel or timeout), SIGKILL follows after KillGraceSec=: still
         * running for Lagoon and the state machine, "stopping" for an operator. */
        if (t->status == TASK_RUNNING && t->kill_usec > 0 && (r = set_time(o, "stoppingAt", t->kill_usec)) < 0)
                return r;
        r = json_object_set(o, "timeout",
                            t->timeout_usec == USEC_INFINITY ? json_new_null()
                                                             : json_new_uint64(t->timeout_usec / USEC_PER_SEC));
        if (r < 0)
                return r;
        if (queue_position > 0) {
                r = json_object_set(o, "queuePosition", json_new_uint64(queue_position));
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(o);
        return 0;
}

int task_to_record(const Task *t, JsonValue **ret) {
        _cleanup_json_ JsonValue *o = NULL;
        int r;

        r = task_to_json(t, 0, &o);
        if (r < 0)
                return r;
        if ((r = json_object_set(o, "seq", json_new_uint64(t->seq))) < 0 ||
            (r = json_object_set(o, "createdUsec", json_new_uint64(t->created_usec))) < 0 ||
            (r = json_object_set(o, "startedUsec", json_new_uint64(t->started_usec))) < 0 ||
            (r = json_object_set(o, "finishedUsec", json_new_uint64(t->finished_usec))) < 0 ||
            (r = json_object_set(o, "timeoutUsec", json_new_uint64(t->timeout_usec))) < 0 ||
            (r = json_object_set(o, "killUsec", json_new_uint64(t->kill_usec))) < 0 ||
            (r = json_object_set(o, "killAtUsec", json_new_uint64(t->kill_at_usec))) < 0 ||
            (r = json_object_set_boolean(o, "cancelRequested", t->cancel_requested)) < 0 ||
            (r = json_object_set_boolean(o, "timedOut", t->timed_out)) < 0 ||
            (r = json_object_set_string(o, "containerId", t->container_id)) < 0)
                return r;
        if (t->command_digest && (r = json_object_set_string(o, "commandDigest", t->command_digest)) < 0)
                return r;
        if (t->launch_step != TASK_LAUNCH_NONE &&
            (r = json_object_set_string(o, "launchStep", task_launch_step_to_string(t->launch_step))) < 0)
                return r;
        if (t->image && ((r = json_object_set_boolean(o, "deployerToken", t->deployer_token)) < 0 ||
                         (r = json_object_set_boolean(o, "sshKey", t->ssh_key)) < 0 ||
                         (r = json_object_set_boolean(o, "volumeMounts", t->volume_mounts)) < 0 ||
                         (r = json_object_set_boolean(o, "rootless", t->rootless)) < 0))
                return r;
        if (t->rb_namespace && ((r = json_object_set_string(o, "roleBindingNamespace", t->rb_namespace)) < 0 ||
                                (r = json_object_set_string(o, "roleBindingSource", t->rb_source)) < 0 ||
                                (r = json_object_set_boolean(o, "roleBindingCreated", t->rb_created)) < 0))
                return r;
        if ((t->pod_labels && (r = json_object_set(o, "podLabels", json_new_strv(t->pod_labels))) < 0) ||
            (t->env && (r = json_object_set(o, "env", json_new_strv(t->env))) < 0) ||
            (t->secrets && (r = json_object_set(o, "secrets", json_new_strv(t->secrets))) < 0))
                return r;
        if (t->lagoon && ((r = json_object_set(o, "lagoon", json_copy(t->lagoon))) < 0 ||
                          (r = json_object_set_string(o, "reported", task_status_to_string(t->reported))) < 0))
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

/* Copies an optional string member; -EBADMSG when present but not a string/null. */
static int get_str(const JsonValue *o, const char *key, bool required, char **ret) {
        JsonValue *v = json_get(o, key);

        if (!v || json_type(v) == JSON_NULL)
                return required ? -EBADMSG : 0;
        if (!json_is_string(v))
                return -EBADMSG;
        return free_and_strdup(ret, json_string(v));
}

static int get_u64(const JsonValue *o, const char *key, uint64_t *ret) {
        JsonValue *v = json_get(o, key);

        if (!v)
                return -EBADMSG;
        return json_uint64(v, ret) < 0 ? -EBADMSG : 0;
}

static int get_strv(const JsonValue *o, const char *key, char ***ret) {
        JsonValue *v = json_get(o, key);
        int r;

        if (!v)
                return 0;
        r = json_to_strv(v, ret);
        return r == -ENOMEM ? r : r < 0 ? -EBADMSG : 0;
}

static int get_bool(const JsonValue *o, const char *key, bool *ret) {
        int b = json_boolean(json_get(o, key));

        if (b < 0)
                return -EBADMSG;
        *ret = b;
        return 0;
}

int task_from_json(const JsonValue *v, Task **ret) {
        _cleanup_(task_freep) Task *t = NULL;
        JsonValue *ec;
        int r;

        if (!json_is_object(v))
                return -EBADMSG;
        t = task_new();
        if (!t)
                return -ENOMEM;
        if ((r = get_str(v, "id", true, &t->id)) < 0 || (r = get_str(v, "name", false, &t->name)) < 0 ||
            (r = get_str(v, "project", true, &t->project)) < 0 ||
            (r = get_str(v, "environment", true, &t->environment)) < 0 ||
            (r = get_str(v, "namespace", true, &t->namespace)) < 0 || (r = get_str(v, "image", false, &t->image)) < 0 ||
            (r = get_str(v, "service", !t->image, &t->service)) < 0 ||
            (r = get_str(v, "command", !t->image, &t->command)) < 0 ||
            (r = get_str(v, "commandDigest", false, &t->command_digest)) < 0 ||
            (r = get_str(v, "reason", false, &t->reason)) < 0 ||
            (r = get_str(v, "containerId", false, &t->container_id)) < 0 ||
            (r = get_str(v, "pod", false, &t->pod)) < 0 || (r = get_str(v, "remoteId", false, &t->remote_id)) < 0 ||
            (r = get_str(v, "taskData", false, &t->task_data)) < 0 || (r = get_strv(v, "env", &t->env)) < 0 ||
            (r = get_strv(v, "secrets", &t->secrets)) < 0)
                return r;
        if (t->image && ((r = get_bool(v, "deployerToken", &t->deployer_token)) < 0 ||
                         (r = get_bool(v, "sshKey", &t->ssh_key)) < 0))
                return r;
        /* Records written before these existed have none. */
        if (t->image && ((json_get(v, "volumeMounts") && (r = get_bool(v, "volumeMounts", &t->volume_mounts)) < 0) ||
                         (json_get(v, "rootless") && (r = get_bool(v, "rootless", &t->rootless)) < 0)))
                return r;
        r = get_strv(v, "podLabels", &t->pod_labels);
        if (r < 0)
                return r;
        if ((r = get_str(v, "roleBindingNamespace", false, &t->rb_namespace)) < 0 ||
            (r = get_str(v, "roleBindingSource", !!t->rb_namespace, &t->rb_source)) < 0 ||
            (t->rb_namespace && (r = get_bool(v, "roleBindingCreated", &t->rb_created)) < 0))
                return r;
        if (json_get(v, "launchStep")) {
                t->launch_step = task_launch_step_from_string(json_get_string(v, "launchStep"));
                if (t->launch_step < 0)
                        return -EBADMSG;
        }
        if (json_get(v, "lagoon")) {
                const char *rep = json_get_string(v, "reported");

                if (!json_is_object(json_get(v, "lagoon")) || !rep)
                        return -EBADMSG;
                t->reported = task_status_from_string(rep);
                if (t->reported < 0)
                        return -EBADMSG;
                t->lagoon = json_copy(json_get(v, "lagoon"));
                if (!t->lagoon)
                        return -ENOMEM;
        }
        if (!task_id_is_valid(t->id))
                return -EBADMSG;
        t->status = task_status_from_string(json_get_string(v, "status"));
        if (t->status < 0)
                return -EBADMSG;
        ec = json_get(v, "exitCode");
        if (ec && json_type(ec) != JSON_NULL) {
                int64_t i;
                if (json_int64(ec, &i) < 0 || i < 0 || i > 255)
                        return -EBADMSG;
                t->exit_code = (int) i;
        }
        if ((r = get_u64(v, "seq", &t->seq)) < 0 || (r = get_u64(v, "createdUsec", &t->created_usec)) < 0 ||
            (r = get_u64(v, "startedUsec", &t->started_usec)) < 0 ||
            (r = get_u64(v, "finishedUsec", &t->finished_usec)) < 0 ||
            (r = get_u64(v, "timeoutUsec", &t->timeout_usec)) < 0 || (r = get_u64(v, "killUsec", &t->kill_usec)) < 0 ||
            (r = get_u64(v, "killAtUsec", &t->kill_at_usec)) < 0 ||
            (r = get_bool(v, "cancelRequested", &t->cancel_requested)) < 0 ||
            (r = get_bool(v, "timedOut", &t->timed_out)) < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

int task_new_remote_id(char **ret) {
        uint8_t b[16];
        char *s;

        if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                return -errno ?: -EIO;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        if (asprintf(&s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
                     b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}
