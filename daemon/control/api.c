/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The control API: HTTP/1.1 + JSON on a unix socket, served by libmicrohttpd in
 * "external epoll" mode on the daemon's sd-event loop. This module owns the listening
 * socket (from systemd, or bound at ListenSocket=), the peer check (SO_PEERCRED: root
 * or members of SocketGroup=), routing, request body limits, the JSON request and
 * response forms, and the streaming of task logs, including followers that wait
 * (suspended connections) for a task's new output until it ends. Task state itself
 * belongs to the manager; this module only calls manager.h. */

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "api.h"
#include "fs-util.h"
#include "journal.h"
#include "json.h"
#include "log.h"
#include "logtail.h"
#include "metrics.h"
#include "parse-util.h"
#include "redact.h"
#include "task.h"
#include "user-util.h"

#define API_BODY_MAX ((size_t) 1024 * 1024)
/* A chunked upload that passes API_BODY_MAX cannot be answered before it ends
 * (MHD 0.9.75 refuses to queue a response while the body is being received), so it is
 * discarded without buffering and answered with 413; beyond this much more the
 * connection is dropped. */
#define API_BODY_DISCARD_MAX ((uint64_t) 16 * 1024 * 1024)
#define API_JSON_DEPTH_MAX 16U
#define API_CONNECTION_LIMIT 256U
/* One user (followers included) cannot take them all: a non-root peer's share, and the
 * slots only root's connections may take. */
#define API_CONNECTIONS_PER_UID 32U
#define API_CONNECTIONS_ROOT_RESERVED 16U
/* A follower waiting for output is let go after this (MHD never times out a suspended
 * connection); the stream ends and clients reconnect (lagoon-taskctl does). */
#define API_FOLLOWER_LIFETIME_USEC (600 * USEC_PER_SEC)
#define API_ACCEPT_BATCH 64U
#define API_CONNECTION_TIMEOUT_SEC 60U
#define GROUP_RETRY_USEC (10 * USEC_PER_SEC) /* a SocketGroup= that did not exist yet */
#define API_READ_BLOCK_SIZE ((size_t) 64 * 1024)
/* Suspended followers are not watched by MHD; check for clients that went away. */
#define API_FOLLOWER_CHECK_USEC (5 * USEC_PER_SEC)
#define API_SOCKET_NAME "api"

typedef struct Follower Follower;
typedef struct Peer Peer;

typedef struct UidCount {
        uid_t uid;
        unsigned n;
        bool warned; /* refused once: logged */
} UidCount;

struct Api {
        sd_event *event;
        Manager *manager;
        Lagoon *lagoon; /* for /metrics, NULL without [Lagoon] */
        struct MHD_Daemon *daemon;

        sd_event_source *io_source;    /* MHD's epoll fd */
        sd_event_source *time_source;  /* MHD_get_timeout() */
        sd_event_source *check_source; /* periodic check of suspended followers */

        char *bound_path; /* socket we bound ourselves: unlinked on free */
        int listen_fd;    /* accepted from here, then handed to MHD */
        sd_event_source *listen_source;
        Peer *accepted; /* from on_accept() to on_connection() */
        UidCount *uids; /* open connections per peer uid */
        size_t n_uids;
        unsigned n_non_root;

        /* SocketGroup='s gid, looked up when the name changes (a reload), not per
         * connection: NSS (LDAP, sssd) may block, and this runs on the one loop. A
         * missing group is looked up again after GROUP_RETRY_USEC. */
        char *group_name;
        gid_t group_gid;
        int group_r;
        uint64_t group_usec;

        Follower *followers;
        bool run_pending; /* a connection was resumed: MHD_run() must come soon */
        bool at_limit;    /* API_CONNECTION_LIMIT reached */
        bool running;     /* MHD started: its messages are then per-connection noise */
        bool stopping;
};

/* Per connection, from MHD_OPTION_NOTIFY_CONNECTION: the peer check, done once. */
struct Peer {
        uid_t uid;
        gid_t gid;
        pid_t pid;
        bool allowed;
};

/* Per request (MHD's con_cls). */
typedef struct Request {
        ApiRoute route;
        int route_error; /* from api_route() */
        char *id;
        bool want_body; /* POST /v1/tasks: collecting the body */
        char *body;
        size_t body_size;
        size_t body_allocated;
        bool too_large;
        uint64_t discarded;
} Request;

/* A line of one stream that this follower showed the start of before it was complete
 * (logtail_partial()): once the task log has it, the bytes shown are not sent again. */
typedef struct FollowerPartial {
        uint64_t id; /* the LogTail's id of the line; 0: none */
        size_t shown;
        uint64_t skip_at; /* where the line begins in the task log, UINT64_MAX: not there yet */
} FollowerPartial;

/* The content reader state of a "logs?follow=1" response; freed with the response. */
struct Follower {
        Api *api;
        struct MHD_Connection *connection;
        int connection_fd;
        char *task_id;
        char *log_path;
        int fd;                     /* the task log, opened once it exists */
        uint64_t offset;            /* next byte of the task log to send */
        FollowerPartial partial[2]; /* stdout, stderr */
        bool suspended;
        bool gone;           /* client went away while suspended */
        bool expired;        /* API_FOLLOWER_LIFETIME_USEC passed */
        uint64_t since_usec; /* CLOCK_MONOTONIC of its start */
        Follower *prev, *next;
};

typedef struct FileReader {
        int fd;
        uint64_t base; /* where in the log the body starts (?tail=, ?offset=) */
} FileReader;

/* clang-format off */
static const char *const route_allow[] = {
        [API_ROUTE_TASKS]       = "GET, HEAD, POST",
        [API_ROUTE_TASK]        = "GET, HEAD, DELETE",
        [API_ROUTE_TASK_LOGS]   = "GET, HEAD",
        [API_ROUTE_TASK_CANCEL] = "POST",
        [API_ROUTE_HEALTH]      = "GET, HEAD",
        [API_ROUTE_METRICS]     = "GET, HEAD",
};
/* clang-format on */

/* ---- pure parts: routing and the submit body ---------------------------------- */

int api_route(const char *path, ApiRoute *ret, char **ret_id) {
        _cleanup_free_ char *id = NULL;
        const char *p, *slash;
        ApiRoute route;

        assert(ret);

        if (!path)
                return -ENOENT;

        if (streq(path, "/v1/health") || streq(path, "/v1/tasks") || streq(path, "/metrics")) {
                *ret = streq(path, "/v1/health") ? API_ROUTE_HEALTH
                       : streq(path, "/metrics") ? API_ROUTE_METRICS
                                                 : API_ROUTE_TASKS;
                if (ret_id)
                        *ret_id = NULL;
                return 0;
        }

        p = startswith(path, "/v1/tasks/");
        if (!p)
                return -ENOENT;

        slash = strchr(p, '/');
        if (slash == p || *p == '\0') /* "/v1/tasks/", "/v1/tasks//logs" */
                return -ENOENT;
        if (!slash)
                route = API_ROUTE_TASK;
        else if (streq(slash, "/logs"))
                route = API_ROUTE_TASK_LOGS;
        else if (streq(slash, "/cancel"))
                route = API_ROUTE_TASK_CANCEL;
        else
                return -ENOENT;

        /* The shape is known, so a bad id is a bad request rather than an unknown path. */
        if ((slash ? (size_t) (slash - p) : strlen(p)) > TASK_ID_MAX)
                return -EINVAL;
        id = slash ? strndup(p, slash - p) : strdup(p);
        if (!id)
                return -ENOMEM;
        if (!task_id_is_valid(id))
                return -EINVAL;

        *ret = route;
        if (ret_id)
                *ret_id = TAKE_PTR(id);
        return 0;
}

static int parse_timeout(const JsonValue *v, uint64_t *ret, char **ret_error) {
        static const char *const expected =
                "member 'timeout' must be a non-negative integer number of seconds (0: none) or a duration string "
                "like \"5min\"";
        uint64_t usec;
        int64_t sec;
        int r;

        switch (json_type(v)) {
        case JSON_NUMBER:
                r = json_int64(v, &sec);
                if (r == -ERANGE || (r >= 0 && sec > (int64_t) ((USEC_INFINITY - 1) / USEC_PER_SEC)))
                        return error_message(ret_error, -EINVAL, "member 'timeout' is too large");
                if (r < 0 || sec < 0)
                        return error_message(ret_error, -EINVAL, "%s", expected);
                usec = (uint64_t) sec * USEC_PER_SEC;
                break;

        case JSON_STRING:
                r = parse_duration(json_string(v), &usec);
                if (r == -ERANGE)
                        return error_message(ret_error, -EINVAL, "member 'timeout' is too large");
                if (r < 0)
                        return error_message(ret_error, -EINVAL, "%s, got \"%.64s\"", expected, json_string(v));
                break;

        default:
                return error_message(ret_error, -EINVAL, "%s, got %s", expected, json_type_to_string(json_type(v)));
        }

        /* As DefaultTimeoutSec=0: no time limit (0 in a TaskRequest means the default). */
        *ret = usec == 0 ? USEC_INFINITY : usec;
        return 0;
}

int api_parse_task_request(const char *body, size_t size, TaskRequest *ret, JsonValue **ret_json, char **ret_error) {
        static const struct {
                const char *name;
                size_t offset;
        } fields[] = {
                {"id", offsetof(TaskRequest, id)},
                {"name", offsetof(TaskRequest, name)},
                {"service", offsetof(TaskRequest, service)},
                {"project", offsetof(TaskRequest, project)},
                {"environment", offsetof(TaskRequest, environment)},
                {"command", offsetof(TaskRequest, command)},
        };
        _cleanup_(json_freep) JsonValue *v = NULL;
        _cleanup_free_ char *parse_error = NULL;
        TaskRequest req = {};
        int r;

        assert(ret);
        assert(ret_json);

        if (!body || size == 0)
                return error_message(ret_error, -EINVAL, "request body is empty, expected a JSON object");

        r = json_parse(body, size, API_JSON_DEPTH_MAX, &v, &parse_error);
        if (r == -ENOMEM)
                return r;
        if (r == -E2BIG)
                return error_message(ret_error, -EINVAL, "request body is nested too deeply");
        if (r < 0)
                return error_message(ret_error, -EINVAL, "request body is not valid JSON: %s", strna(parse_error));

        if (!json_is_object(v))
                return error_message(ret_error, -EINVAL, "request body must be a JSON object, got %s",
                                     json_type_to_string(json_type(v)));
        /* A command cut short at a NUL would run something else than what was sent. */
        if (json_has_nul(v))
                return error_message(ret_error, -EINVAL, "request body holds a NUL byte (\\u0000) in a string");

        for (size_t i = 0; i < json_length(v); i++) {
                const char *key = json_object_key_at(v, i);
                const JsonValue *value = json_object_value_at(v, i);
                size_t f;

                if (streq(key, "timeout")) {
                        if (json_type(value) == JSON_NULL)
                                continue;
                        r = parse_timeout(value, &req.timeout_usec, ret_error);
                        if (r < 0)
                                return r;
                        continue;
                }

                for (f = 0; f < ELEMENTSOF(fields); f++)
                        if (streq(key, fields[f].name))
                                break;
                if (f >= ELEMENTSOF(fields))
                        return error_message(ret_error, -EINVAL,
                                             "unknown member '%.64s' (known: id, name, service, project, "
                                             "environment, command, timeout)",
                                             key);

                /* null reads as "not given" for optional members: serializers emit it */
                if (json_type(value) == JSON_NULL && !streq(key, "command"))
                        continue;
                if (!json_is_string(value))
                        return error_message(ret_error, -EINVAL, "member '%s' must be a string, got %s", key,
                                             json_type_to_string(json_type(value)));
                if (isempty(json_string(value)))
                        return error_message(ret_error, -EINVAL, "member '%s' must not be empty", key);

                *(const char **) ((uint8_t *) &req + fields[f].offset) = json_string(value);
        }

        if (!req.command)
                return error_message(ret_error, -EINVAL, "member 'command' is required");
        /* sh -c would run nothing and report success: refused as lagoon-taskctl does. */
        if (req.command[strspn(req.command, " \t\n\r\v\f")] == 0)
                return error_message(ret_error, -EINVAL, "member 'command' holds only white space");
        if (req.id && !task_id_is_valid(req.id))
                return error_message(
                        ret_error, -EINVAL,
                        "member 'id' must be 1-%u characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                        TASK_ID_MAX);

        *ret = req;
        *ret_json = TAKE_PTR(v);
        return 0;
}

/* ---- responses ----------------------------------------------------------------- */

static enum MHD_Result
queue_and_destroy(struct MHD_Connection *connection, unsigned status, struct MHD_Response *response) {
        enum MHD_Result ret;

        if (!response)
                return MHD_NO;
        ret = MHD_queue_response(connection, status, response);
        MHD_destroy_response(response);
        return ret;
}

static struct MHD_Response *response_from_string(char *s, size_t n, const char *content_type) {
        struct MHD_Response *response;

        /* takes s, also on failure */
        response = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
        if (!response) {
                free(s);
                return NULL;
        }
        if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES) {
                MHD_destroy_response(response);
                return NULL;
        }
        return response;
}

static enum MHD_Result respond_json_extra(struct MHD_Connection *connection,
                                          unsigned status,
                                          const JsonValue *v,
                                          const char *header,
                                          const char *header_value) {
        _cleanup_free_ char *s = NULL;
        struct MHD_Response *response;
        size_t n = 0;
        char *t;

        if (json_format(v, false, &s, &n) < 0)
                return MHD_NO;

        /* a trailing newline keeps shells and line-based clients happy */
        t = realloc(s, n + 2);
        if (!t)
                return MHD_NO;
        s = t;
        s[n++] = '\n';
        s[n] = '\0';

        response = response_from_string(TAKE_PTR(s), n, "application/json");
        if (response && header && MHD_add_response_header(response, header, header_value) != MHD_YES) {
                MHD_destroy_response(response);
                return MHD_NO;
        }
        return queue_and_destroy(connection, status, response);
}

static enum MHD_Result respond_json(struct MHD_Connection *connection, unsigned status, const JsonValue *v) {
        return respond_json_extra(connection, status, v, NULL, NULL);
}

static enum MHD_Result respond_error_full(struct MHD_Connection *connection,
                                          unsigned status,
                                          const char *code,
                                          const char *header,
                                          const char *header_value,
                                          const char *message) {
        _cleanup_(json_freep) JsonValue *v = NULL;

        v = json_new_object();
        if (!v || json_object_set_string(v, "error", code) < 0 || json_object_set_string(v, "message", message) < 0)
                return MHD_NO;

        return respond_json_extra(connection, status, v, header, header_value);
}

static enum MHD_Result
respond_error(struct MHD_Connection *connection, unsigned status, const char *code, const char *format, ...)
        _printf_(4, 5);
static enum MHD_Result
respond_error(struct MHD_Connection *connection, unsigned status, const char *code, const char *format, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&message, format, ap);
        va_end(ap);
        if (r < 0)
                return MHD_NO;

        log_debug("API: %u %s: %s", status, code, message);
        return respond_error_full(connection, status, code, NULL, NULL, message);
}

static enum MHD_Result respond_oom(struct MHD_Connection *connection) {
        log_oom();
        return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error", "out of memory");
}

/* A task as the API shows it: the secrets in force (Secret=, the task's own) masked in its
 * command, as they are in its output. */
static int api_task_json(Api *a, const Task *t, unsigned position, JsonValue **ret) {
        _cleanup_(json_freep) JsonValue *v = NULL;
        _cleanup_strv_free_ char **secrets = NULL, **forms = NULL;
        _cleanup_free_ char *masked = NULL;
        int r;

        r = task_to_json(t, position, &v);
        if (r < 0)
                return r;
        if (position > 0) {
                _cleanup_free_ char *why = NULL;

                r = manager_wait_reason(a->manager, t, &why);
                if (r < 0 || (why && (r = json_object_set_string(v, "waitReason", why)) < 0))
                        return r;
        }
        /* Starting: how far its launch got (run --wait says so while it takes). */
        if (task_launching(t) &&
            (r = json_object_set_string(v, "launchStep", task_launch_step_to_string(t->launch_step))) < 0)
                return r;
        /* Stopping: when SIGKILL follows (KillGraceSec=, or the cancel's own time). */
        if (t->status == TASK_RUNNING && t->kill_usec > 0) {
                _cleanup_free_ char *at = NULL;

                r = format_timestamp_rfc3339(manager_kill_at(a->manager, t), &at);
                if (r < 0 || (r = json_object_set_string(v, "killAt", at)) < 0)
                        return r;
        }
        if (t->command) {
                secrets = strv_copy(manager_get_config(a->manager)->secrets);
                if (!secrets)
                        return -ENOMEM;
                for (char *const *s = t->secrets; s && *s; s++)
                        if (strv_extend(&secrets, *s) < 0)
                                return -ENOMEM;
                r = redact_secret_forms(secrets, &forms);
                if (r < 0)
                        return r;
                if (redact_needed(t->command, strlen(t->command), forms)) {
                        masked = redact(t->command, strlen(t->command), forms, NULL);
                        if (!masked || json_object_set_string(v, "command", masked) < 0)
                                return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(v);
        return 0;
}

static enum MHD_Result respond_task(Api *a, struct MHD_Connection *connection, unsigned status, const Task *t) {
        _cleanup_(json_freep) JsonValue *v = NULL;
        int r;

        r = api_task_json(a, t, manager_queue_position(a->manager, t), &v);
        if (r < 0)
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to format task: %s", strerror(-r));
        return respond_json(connection, status, v);
}

/* ---- handlers ------------------------------------------------------------------ */

static enum MHD_Result handle_health(Api *a, struct MHD_Connection *connection) {
        _cleanup_(json_freep) JsonValue *v = NULL;
        _cleanup_free_ char *reload_at = NULL;
        bool stopping = manager_is_shutting_down(a->manager);
        const ManagerStats *st = manager_get_stats(a->manager);
        bool reloaded = st->last_reload_usec > 0;

        if (reloaded && format_timestamp_rfc3339(st->last_reload_usec, &reload_at) < 0)
                return respond_oom(connection);
        v = json_new_object();
        if (!v || json_object_set_string(v, "status", stopping ? "stopping" : "ok") < 0 ||
            json_object_set_string(v, "version", PACKAGE_VERSION) < 0 ||
            json_object_set_int64(v, "running", manager_n_running(a->manager)) < 0 ||
            json_object_set_int64(v, "queued", manager_n_queued(a->manager)) < 0 ||
            /* Task output then reaches only the task logs. */
            json_object_set_string(v, "journal", journal_reachable() ? "ok" : "unreachable") < 0 ||
            json_object_set_string(v, "lastReload",
                                   !reloaded            ? NULL
                                   : st->last_reload_ok ? "ok"
                                                        : "refused") < 0 ||
            json_object_set_string(v, "lastReloadAt", reload_at) < 0 ||
            /* Launches stop while a record could not be written or space is low. */
            json_object_set_string(v, "state",
                                   st->store_error < 0 ? "write-failed"
                                   : st->low_space     ? "low-space"
                                                       : "ok") < 0 ||
            (st->store_error < 0 && json_object_set_string(v, "stateError", strerror(-st->store_error)) < 0) ||
            (reloaded && !st->last_reload_ok &&
             json_object_set_string(v, "lastReloadError", st->last_reload_error) < 0))
                return respond_oom(connection);

        return respond_json(connection, stopping ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, v);
}

static enum MHD_Result handle_metrics(Api *a, struct MHD_Connection *connection) {
        _cleanup_free_ char *text = NULL;
        size_t n = 0;

        if (metrics_render(a->manager, a->lagoon, &text, &n) < 0)
                return respond_oom(connection);
        return queue_and_destroy(connection, MHD_HTTP_OK,
                                 response_from_string(TAKE_PTR(text), n, METRICS_CONTENT_TYPE));
}

/* ?status=S[,S...]: a bit per status; 0 when absent, -EINVAL naming the bad word. */
static int parse_status_filter(const char *value, unsigned *ret, char **ret_error) {
        unsigned mask = 0;

        if (!value) {
                *ret = 0;
                return 0;
        }
        for (const char *p = value;;) {
                size_t k = strcspn(p, ",");
                char word[32];
                TaskStatus s = _TASK_STATUS_INVALID;

                if (k > 0 && k < sizeof(word)) {
                        memcpy(word, p, k);
                        word[k] = 0;
                        s = task_status_from_string(word);
                }
                if (s < 0)
                        return error_message(ret_error, -EINVAL,
                                             "invalid status filter '%.*s' (expected new, pending, running, "
                                             "complete, failed or cancelled, comma-separated)",
                                             (int) MIN(k, (size_t) 64), p);
                mask |= 1U << s;
                if (!p[k])
                        break;
                p += k + 1;
        }
        *ret = mask;
        return 0;
}

static const char *get_argument(struct MHD_Connection *connection, const char *key) {
        return MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, key);
}

/* A query argument that must be text: -EBADMSG when it holds a NUL (%00), which would
 * cut it short unseen. *ret is NULL when it is not given. */
static int get_text_argument(struct MHD_Connection *connection, const char *key, const char **ret) {
        const char *v = NULL;
        size_t n = 0;

        if (MHD_lookup_connection_value_n(connection, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v, &n) != MHD_YES)
                v = NULL;
        if (v && strlen(v) != n)
                return -EBADMSG;
        *ret = v;
        return 0;
}

static enum MHD_Result handle_list(Api *a, struct MHD_Connection *connection) {
        _cleanup_(json_freep) JsonValue *v = NULL;
        _cleanup_free_ const Task **tasks = NULL;
        _cleanup_free_ char *error = NULL;
        const char *project = get_argument(connection, "project"),
                   *environment = get_argument(connection, "environment");
        JsonValue *array = NULL;
        unsigned statuses = 0;
        size_t n = 0;
        int r;

        if (parse_status_filter(get_argument(connection, "status"), &statuses, &error) < 0)
                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "bad-request", "%s", strna(error));

        r = manager_list_tasks(a->manager, &tasks, &n);
        if (r < 0)
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to list tasks: %s", strerror(-r));

        v = json_new_object();
        if (!v)
                return respond_oom(connection);
        r = json_object_set(v, "tasks", array = json_new_array());
        if (r < 0)
                return respond_oom(connection);

        for (size_t i = 0; i < n; i++) {
                JsonValue *item = NULL;

                if ((statuses != 0 && !(statuses & (1U << tasks[i]->status))) ||
                    (project && !streq_ptr(tasks[i]->project, project)) ||
                    (environment && !streq_ptr(tasks[i]->environment, environment)))
                        continue;
                r = api_task_json(a, tasks[i], manager_queue_position(a->manager, tasks[i]), &item);
                if (r < 0)
                        return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                             "failed to format task: %s", strerror(-r));
                r = json_array_append(array, item);
                if (r < 0)
                        return respond_oom(connection);
        }

        return respond_json(connection, MHD_HTTP_OK, v);
}

static enum MHD_Result respond_not_found(struct MHD_Connection *connection, const char *id) {
        return respond_error(connection, MHD_HTTP_NOT_FOUND, "not-found", "no task with id '%s'", id);
}

static enum MHD_Result handle_get(Api *a, struct MHD_Connection *connection, const char *id) {
        const Task *t;

        t = manager_get_task(a->manager, id);
        if (!t)
                return respond_not_found(connection, id);
        return respond_task(a, connection, MHD_HTTP_OK, t);
}

static enum MHD_Result handle_cancel(Api *a, struct MHD_Connection *connection, const char *id) {
        const char *time_arg = NULL;
        uint64_t grace = UINT64_MAX;
        const Task *t;
        int r;

        /* ?time=DURATION: SIGKILL that long after SIGTERM instead of KillGraceSec= (0: at once). */
        if (get_text_argument(connection, "time", &time_arg) < 0 ||
            (time_arg && (parse_duration(time_arg, &grace) < 0 || grace == USEC_INFINITY)))
                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "bad-request",
                                     "invalid value for 'time', expected a duration (e.g. 0, 5, 30s, 2min)");

        r = manager_cancel_with_grace(a->manager, id, grace);
        if (r == -ENOENT)
                return respond_not_found(connection, id);
        if (r == -EALREADY)
                return respond_error(connection, MHD_HTTP_CONFLICT, "conflict", "task '%s' already finished", id);
        if (r < 0)
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to cancel task '%s': %s", id, strerror(-r));

        t = manager_get_task(a->manager, id);
        if (!t) /* removed right away by retention: still accepted */
                return respond_not_found(connection, id);
        return respond_task(a, connection, MHD_HTTP_ACCEPTED, t);
}

static enum MHD_Result handle_delete(Api *a, struct MHD_Connection *connection, const char *id) {
        _cleanup_(json_freep) JsonValue *v = NULL;
        const Task *t = manager_get_task(a->manager, id);
        int r;

        if (!t)
                return respond_not_found(connection, id);
        /* The answer is the task as it was: formatted before it goes. */
        r = api_task_json(a, t, 0, &v);
        if (r < 0)
                return respond_oom(connection);
        r = manager_remove_task(a->manager, id);
        if (r == -EBUSY)
                return respond_error(connection, MHD_HTTP_CONFLICT, "conflict",
                                     "task '%s' is %s: cancel it first, only finished tasks can be removed", id,
                                     task_status_to_string(t->status));
        if (r == -EAGAIN)
                return respond_error(connection, MHD_HTTP_CONFLICT, "conflict",
                                     "task '%s': its final status is not yet queued for Lagoon, try again", id);
        if (r == -ENOENT)
                return respond_not_found(connection, id);
        if (r < 0)
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to remove task '%s': %s", id, strerror(-r));
        return respond_json(connection, MHD_HTTP_OK, v);
}

static enum MHD_Result handle_submit(Api *a, struct MHD_Connection *connection, Request *req) {
        _cleanup_(json_freep) JsonValue *json = NULL;
        _cleanup_free_ char *error = NULL;
        const Task *t = NULL;
        TaskRequest tr = {};
        bool existing = false;
        int r;

        if (req->too_large)
                return respond_error(connection, MHD_HTTP_CONTENT_TOO_LARGE, "payload-too-large",
                                     "request body exceeds %zu bytes", API_BODY_MAX);

        r = api_parse_task_request(req->body, req->body_size, &tr, &json, &error);
        if (r == -ENOMEM)
                return respond_oom(connection);
        if (r < 0)
                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "bad-request", "%s", error ?: "invalid request");

        r = manager_submit(a->manager, &tr, &t, &existing, &error);
        switch (r) {
        case 0:
                break;
        case -EINVAL:
                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "bad-request", "%s", error ?: "invalid request");
        case -ENOENT:
                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "unknown-service", "%s",
                                     error ?: "unknown service");
        case -EEXIST:
                return respond_error(connection, MHD_HTTP_CONFLICT, "conflict", "%s",
                                     error ?: "a different task with this id exists");
        case -EPERM:
                return respond_error(connection, MHD_HTTP_FORBIDDEN, "forbidden", "%s", error ?: "not allowed");
        case -EBUSY:
                return respond_error(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "queue-full", "%s",
                                     error ?: "the task queue is full");
        case -ESHUTDOWN:
                return respond_error(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable", "%s",
                                     error ?: "the daemon is stopping");
        default:
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to submit task: %s", error ?: strerror(-r));
        }

        if (!existing)
                log_info("Task %s submitted through the API.", t->id);
        return respond_task(a, connection, existing ? MHD_HTTP_OK : MHD_HTTP_CREATED, t);
}

/* Plain log download: the file as it is now, read in blocks with pread. */
static ssize_t file_reader(void *userdata, uint64_t pos, char *buf, size_t max) {
        FileReader *f = userdata;
        ssize_t n;

        do
                n = pread(f->fd, buf, max, (off_t) (f->base + pos));
        while (n < 0 && errno == EINTR);
        if (n <= 0) /* error, or the file shrank below the announced size */
                return MHD_CONTENT_READER_END_WITH_ERROR;
        return n;
}

static void file_reader_free(void *userdata) {
        FileReader *f = userdata;

        if (!f)
                return;
        safe_close(f->fd);
        free(f);
}

static void follower_check_arm(Api *a);

static Follower *follower_free(Follower *f) {
        if (!f)
                return NULL;

        if (f->api) {
                if (f->prev)
                        f->prev->next = f->next;
                else
                        f->api->followers = f->next;
                if (f->next)
                        f->next->prev = f->prev;
                follower_check_arm(f->api);
        }
        safe_close(f->fd);
        free(f->task_id);
        free(f->log_path);
        return mfree(f);
}

static void follower_free_cb(void *userdata) {
        follower_free(userdata);
}

static int open_log(const char *path, int *ret) {
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        *ret = fd;
        return 0;
}

/* Notes where the lines this follower showed partly have gone in the task log; with the
 * LogTail gone or the line not in the task log, it is sent whole. */
static void follower_resolve(Follower *f, LogTail *lt) {
        for (size_t s = 0; s < ELEMENTSOF(f->partial); s++) {
                FollowerPartial *p = &f->partial[s];
                uint64_t offset;
                int r;

                if (p->id == 0 || p->skip_at != UINT64_MAX)
                        continue;
                r = logtail_partial_landed(lt, p->id, &offset);
                if (r == -EAGAIN)
                        continue;
                if (r < 0 || offset < f->offset)
                        *p = (FollowerPartial){};
                else
                        p->skip_at = offset;
        }
}

/* The task log from f->offset, short of the next line begun by a partial one shown,
 * whose shown bytes are skipped. */
static ssize_t follow_read_log(Follower *f, char *buf, size_t max) {
        for (;;) {
                FollowerPartial *next = NULL;
                size_t want = max;
                ssize_t n;

                for (size_t s = 0; s < ELEMENTSOF(f->partial); s++)
                        if (f->partial[s].id != 0 && f->partial[s].skip_at != UINT64_MAX &&
                            (!next || f->partial[s].skip_at < next->skip_at))
                                next = &f->partial[s];
                if (next && next->skip_at <= f->offset) {
                        f->offset += next->shown;
                        *next = (FollowerPartial){};
                        continue;
                }
                if (next)
                        want = (size_t) MIN((uint64_t) max, next->skip_at - f->offset);

                do
                        n = pread(f->fd, buf, want, (off_t) f->offset);
                while (n < 0 && errno == EINTR);
                if (n > 0)
                        f->offset += n;
                return n < 0 ? -errno : n;
        }
}

/* At the end of the task log: what a stream's line not complete yet adds to what this
 * follower showed of it. */
static size_t follow_read_partial(Follower *f, LogTail *lt, char *buf, size_t max) {
        for (size_t s = 0; s < ELEMENTSOF(f->partial); s++) {
                FollowerPartial *p = &f->partial[s];
                const char *text;
                uint64_t id;
                size_t len, n;

                if (p->id != 0 && p->skip_at != UINT64_MAX)
                        continue; /* its line is in the task log, this follower is not there yet */
                logtail_partial(lt, s, &id, &text, &len);
                if (id == 0)
                        continue;
                if (p->id != id)
                        *p = (FollowerPartial){.id = id, .skip_at = UINT64_MAX};
                if (len <= p->shown)
                        continue;
                n = MIN(max, len - p->shown);
                memcpy(buf, text + p->shown, n);
                p->shown += n;
                return n;
        }
        return 0;
}

/* Streams the log; at EOF of a task that is still going, first what its lines not
 * complete yet add (a progress bar), then the connection is suspended from here (allowed
 * in a content reader) and 0 returned; api_task_changed() resumes it and MHD calls us
 * again. A final (or vanished) task at EOF ends the stream. MHD's pos is not a task log
 * offset: partial lines are sent ahead of it. */
static ssize_t follow_reader(void *userdata, uint64_t pos, char *buf, size_t max) {
        Follower *f = userdata;
        const Task *t;
        LogTail *lt;
        ssize_t n;
        int r;

        if (f->gone || f->api->stopping)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        if (f->expired)
                return MHD_CONTENT_READER_END_OF_STREAM;

        if (f->fd < 0) {
                r = open_log(f->log_path, &f->fd);
                if (r < 0 && r != -ENOENT) {
                        log_warning_errno(r, "Failed to open task log %s: %m", f->log_path);
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                }
        }

        lt = manager_task_logtail(f->api->manager, f->task_id);
        follower_resolve(f, lt);

        if (f->fd >= 0) {
                n = follow_read_log(f, buf, max);
                if (n < 0) {
                        log_warning_errno((int) n, "Failed to read task log %s: %m", f->log_path);
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                }
                if (n > 0)
                        return n;
        }

        t = manager_get_task(f->api->manager, f->task_id);
        if (!t || task_status_is_final(t->status))
                return MHD_CONTENT_READER_END_OF_STREAM;

        n = (ssize_t) follow_read_partial(f, lt, buf, max);
        if (n > 0)
                return n;

        MHD_suspend_connection(f->connection);
        f->suspended = true;
        follower_check_arm(f->api);
        return 0;
}

/* Where the last n lines of a task log begin, read backwards in blocks. The log holds
 * whole lines; its final newline starts none. */
static int log_tail_offset(int fd, uint64_t size, uint64_t n, uint64_t *ret) {
        char buf[64 * 1024];
        uint64_t end = size, seen = 0;

        while (n > 0 && end > 0) {
                size_t k = (size_t) MIN((uint64_t) sizeof(buf), end);
                ssize_t got = pread(fd, buf, k, (off_t) (end - k));

                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return -errno;
                if ((size_t) got != k)
                        return -EIO; /* a log only grows */
                for (size_t i = k; i > 0; i--) {
                        uint64_t after = end - k + i;

                        if (buf[i - 1] == '\n' && after != size && ++seen == n) {
                                *ret = after;
                                return 0;
                        }
                }
                end -= k;
        }
        *ret = n == 0 ? size : 0;
        return 0;
}

/* ?tail=N (the last N lines) or ?offset=BYTES (from there: a follower resuming) into the
 * log's start offset, clamped to its size. The answer names it (Lagoon-Log-Offset). */
static int logs_start(struct MHD_Connection *connection, int fd, uint64_t size, uint64_t *ret, char **ret_error) {
        const char *tail = NULL, *offset = NULL;
        uint64_t v = 0;

        if (get_text_argument(connection, "tail", &tail) < 0 || get_text_argument(connection, "offset", &offset) < 0)
                return error_message(ret_error, -EINVAL, "a query argument holds a NUL byte");
        if (tail && offset)
                return error_message(ret_error, -EINVAL, "'tail' and 'offset' do not go together");
        if (tail && parse_uint64(tail, &v) < 0)
                return error_message(ret_error, -EINVAL, "invalid value for 'tail', expected a number of lines");
        if (offset && parse_uint64(offset, &v) < 0)
                return error_message(ret_error, -EINVAL, "invalid value for 'offset', expected a byte offset");
        if (tail && fd >= 0)
                return log_tail_offset(fd, size, v, ret);
        *ret = offset ? MIN(v, size) : 0;
        return 0;
}

static enum MHD_Result handle_logs(Api *a, struct MHD_Connection *connection, const char *id) {
        _cleanup_free_ char *path = NULL, *error = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct MHD_Response *response;
        const char *follow_arg;
        bool follow = false;
        uint64_t base = 0;
        struct stat st = {};
        char base_text[32];
        int r;

        if (!manager_get_task(a->manager, id))
                return respond_not_found(connection, id);

        /* "?follow" with no value counts as yes */
        if (MHD_lookup_connection_value_n(connection, MHD_GET_ARGUMENT_KIND, "follow", strlen("follow"), &follow_arg,
                                          NULL) == MHD_YES) {
                if (isempty(follow_arg))
                        follow = true;
                else {
                        r = parse_boolean(follow_arg);
                        if (r < 0)
                                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "bad-request",
                                                     "invalid value for 'follow', expected 1/0/true/false");
                        follow = r > 0;
                }
        }

        r = manager_task_log_path(a->manager, id, &path);
        if (r < 0)
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to find the log of task '%s': %s", id, strerror(-r));
        r = open_log(path, &fd);
        if (r >= 0 && fstat(fd, &st) < 0)
                r = -errno;
        if (r < 0 && r != -ENOENT) /* ENOENT: no output yet */
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to open the log of task '%s': %s", id, strerror(-r));
        r = logs_start(connection, fd, (uint64_t) st.st_size, &base, &error);
        if (r == -ENOMEM)
                return respond_oom(connection);
        if (r == -EINVAL)
                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "bad-request", "%s", error);
        if (r < 0)
                return respond_error(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal-error",
                                     "failed to read the log of task '%s': %s", id, strerror(-r));

        if (follow) {
                const union MHD_ConnectionInfo *info;
                Follower *f;

                f = calloc(1, sizeof(Follower));
                if (!f)
                        return respond_oom(connection);
                f->fd = TAKE_FD(fd);
                f->offset = base;
                f->connection = connection;
                info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
                f->connection_fd = info ? info->connect_fd : -EBADF;
                f->task_id = strdup(id);
                f->log_path = TAKE_PTR(path);
                f->since_usec = now_usec(CLOCK_MONOTONIC);
                if (!f->task_id) {
                        follower_free(f);
                        return respond_oom(connection);
                }

                response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, API_READ_BLOCK_SIZE, follow_reader, f,
                                                             follower_free_cb);
                if (!response) {
                        follower_free(f);
                        return respond_oom(connection);
                }
                /* linked only now, so that follower_free() of a failed setup needs no unlinking */
                f->api = a;
                f->next = a->followers;
                if (f->next)
                        f->next->prev = f;
                a->followers = f;
        } else if (fd < 0)
                response = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        else {
                FileReader *reader;

                reader = calloc(1, sizeof(FileReader));
                if (!reader)
                        return respond_oom(connection);
                reader->fd = TAKE_FD(fd);
                reader->base = base;

                response = MHD_create_response_from_callback((uint64_t) st.st_size - base, API_READ_BLOCK_SIZE,
                                                             file_reader, reader, file_reader_free);
                if (!response) {
                        file_reader_free(reader);
                        return respond_oom(connection);
                }
        }

        if (!response)
                return respond_oom(connection);
        snprintf(base_text, sizeof(base_text), "%" PRIu64, base);
        if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8") != MHD_YES ||
            MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
            MHD_add_response_header(response, "Lagoon-Log-Offset", base_text) != MHD_YES) {
                MHD_destroy_response(response);
                return MHD_NO;
        }
        return queue_and_destroy(connection, MHD_HTTP_OK, response);
}

/* ---- access control ------------------------------------------------------------ */

/* The peer process's own groups at connect time (Linux ≥ 4.13). */
static int peer_in_group(int fd, gid_t gid) {
        _cleanup_free_ gid_t *groups = NULL;
        socklen_t len = 64 * sizeof(gid_t);

        for (unsigned attempt = 0; attempt < 2; attempt++) {
                free(groups);
                groups = malloc(len);
                if (!groups)
                        return -ENOMEM;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) >= 0) {
                        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                                if (groups[i] == gid)
                                        return 1;
                        return 0;
                }
                if (errno != ERANGE)
                        return -errno;
        }
        return -ERANGE;
}

static int socket_group_gid(Api *a, const char *name, gid_t *ret) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (!streq_ptr(name, a->group_name) || (a->group_r < 0 && now >= a->group_usec + GROUP_RETRY_USEC)) {
                if (free_and_strdup(&a->group_name, name) < 0)
                        return -ENOMEM;
                a->group_r = group_lookup_gid(name, &a->group_gid);
                a->group_usec = now;
        }
        if (a->group_r < 0)
                return a->group_r;
        *ret = a->group_gid;
        return 0;
}

static int peer_check(Api *a, int fd, Peer *ret) {
        const Config *c = manager_get_config(a->manager);
        struct ucred uc = {};
        socklen_t len = sizeof(uc);
        gid_t gid;
        int r;

        *ret = (Peer){.uid = (uid_t) -1, .gid = (gid_t) -1};

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                return log_warning_errno(errno, "Failed to get API peer credentials: %m");
        ret->uid = uc.uid;
        ret->gid = uc.gid;
        ret->pid = uc.pid;

        if (uc.uid == 0) {
                ret->allowed = true;
                return 0;
        }

        r = socket_group_gid(a, c ? c->socket_group : NULL, &gid);
        if (r < 0) /* no such group: root only */
                return 0;

        if (uc.gid == gid) {
                ret->allowed = true;
                return 0;
        }
        /* The peer process's own groups, from the kernel, as the socket file's mode
         * judges them. */
        r = peer_in_group(fd, gid);
        if (r >= 0) {
                ret->allowed = r > 0;
                return 0;
        }
        log_debug_errno(r, "Failed to get the API peer's groups: %m");
        if (r != -ENOPROTOOPT)
                return 0;
        /* Only without SO_PEERGROUPS (Linux < 4.13): the account's groups, through NSS. */
        r = user_in_group(uc.uid, gid);
        if (r < 0)
                log_debug_errno(r, "Failed to look up the groups of uid %u, ignoring: %m", (unsigned) uc.uid);
        ret->allowed = r > 0;
        return 0;
}

static UidCount *uid_count(Api *a, uid_t uid, bool add) {
        UidCount *l;

        for (size_t i = 0; i < a->n_uids; i++)
                if (a->uids[i].uid == uid)
                        return a->uids + i;
        if (!add)
                return NULL;
        l = reallocarray(a->uids, a->n_uids + 1, sizeof(UidCount));
        if (!l)
                return NULL;
        a->uids = l;
        l[a->n_uids] = (UidCount){.uid = uid};
        return l + a->n_uids++;
}

static void uid_count_change(Api *a, uid_t uid, int delta) {
        UidCount *c = uid_count(a, uid, delta > 0);

        if (uid != 0)
                a->n_non_root = delta > 0 ? a->n_non_root + 1 : a->n_non_root - (a->n_non_root > 0);
        if (!c)
                return;
        if (delta > 0)
                c->n++;
        else if (c->n > 0 && --c->n == 0)
                *c = a->uids[--a->n_uids]; /* the last one moves here */
}

/* NULL: let it in; else why not. Root is bounded by MHD's limit only, so it always
 * finds API_CONNECTIONS_ROOT_RESERVED slots. */
static const char *api_admit(Api *a, const Peer *p, unsigned *ret_n) {
        const UidCount *c;

        if (p->uid == 0)
                return NULL;
        c = uid_count(a, p->uid, false);
        *ret_n = c ? c->n : 0;
        if (*ret_n >= API_CONNECTIONS_PER_UID)
                return "too many connections from this user";
        if (a->n_non_root >= API_CONNECTION_LIMIT - API_CONNECTIONS_ROOT_RESERVED)
                return "too many connections (the rest are kept for root)";
        return NULL;
}

/* A short answer written before anything is read; AF_UNIX keeps it for the client
 * across our close(). */
static void api_refuse(int fd, const char *why) {
        char body[256], buf[512];
        int nb, n;

        nb = snprintf(body, sizeof(body), "{\"error\":\"too-many-connections\",\"message\":\"%s\"}\n", why);
        n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     "Retry-After: 1\r\nConnection: close\r\n\r\n%s",
                     nb, body);
        if (n > 0 && (size_t) n < sizeof(buf))
                (void) send(fd, buf, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void api_run(Api *a);

/* Accepted here rather than by MHD: the peer is checked and counted before MHD gives
 * it a slot, so one user cannot hold them all. */
static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Api *a = userdata;

        for (unsigned i = 0; i < API_ACCEPT_BATCH; i++) {
                struct sockaddr_un sa = {};
                socklen_t len = sizeof(sa);
                _cleanup_close_ int cfd = -EBADF;
                _cleanup_free_ Peer *p = NULL;
                const char *why;
                unsigned n = 0;

                cfd = accept4(fd, (struct sockaddr *) &sa, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (cfd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno != EAGAIN)
                                log_warning_errno(errno, "Failed to accept an API connection: %m");
                        break;
                }
                p = malloc(sizeof(Peer));
                if (!p)
                        continue; /* closed */
                (void) peer_check(a, cfd, p);
                why = api_admit(a, p, &n);
                if (why) {
                        UidCount *c = uid_count(a, p->uid, false);

                        if (c && !c->warned)
                                log_notice("API: refusing connections of uid %u (pid %u): %s (%u open).",
                                           (unsigned) p->uid, (unsigned) p->pid, why, n);
                        if (c)
                                c->warned = true;
                        api_refuse(cfd, why);
                        continue;
                }
                a->accepted = TAKE_PTR(p);
                /* MHD closes the socket itself when it refuses it. */
                if (MHD_add_connection(a->daemon, TAKE_FD(cfd), (const struct sockaddr *) &sa, sizeof(sa)) != MHD_YES)
                        log_debug_errno(errno, "API: the HTTP server refused a connection: %m");
                a->accepted = mfree(a->accepted); /* not taken: refused */
        }
        api_run(a);
        return 0;
}

static void on_connection(void *userdata,
                          struct MHD_Connection *connection,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        Api *a = userdata;
        const union MHD_ConnectionInfo *info;
        Peer *p;

        if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
                p = *socket_context;
                if (p)
                        uid_count_change(a, p->uid, -1);
                *socket_context = mfree(*socket_context);
                return;
        }
        if (code != MHD_CONNECTION_NOTIFY_STARTED)
                return;

        /* Checked as it was accepted; a connection MHD took by another way is checked now. */
        p = TAKE_PTR(a->accepted);
        if (!p) {
                info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
                p = malloc(sizeof(Peer));
                if (!info || !p) {
                        free(p); /* the handler then denies */
                        return;
                }
                (void) peer_check(a, info->connect_fd, p);
        }
        uid_count_change(a, p->uid, +1);
        if (!p->allowed)
                log_notice("Denied API access to uid %u (pid %u): not root and not in group %s.", (unsigned) p->uid,
                           (unsigned) p->pid, strna(manager_get_config(a->manager)->socket_group));
        *socket_context = p;
}

/* ---- the MHD access handler ---------------------------------------------------- */

static Request *request_free(Request *r) {
        if (!r)
                return NULL;
        free(r->id);
        free(r->body);
        return mfree(r);
}

static void
on_completed(void *userdata, struct MHD_Connection *connection, void **con_cls, enum MHD_RequestTerminationCode code) {
        *con_cls = request_free(*con_cls);
}

static bool method_is(const char *method, const char *m) {
        return streq(method, m) || (streq(m, MHD_HTTP_METHOD_GET) && streq(method, MHD_HTTP_METHOD_HEAD));
}

static bool media_type_is(const char *ct, size_t n, const char *type) {
        return n == strlen(type) && strncasecmp(ct, type, n) == 0;
}

/* application/json; also curl's default for "-d" (x-www-form-urlencoded), so that
 * "curl -d '{…}'" works: the body is parsed as JSON either way. */
static bool content_type_acceptable(const char *ct) {
        size_t n = strcspn(ct, ";");

        while (n > 0 && strchr(" \t", ct[n - 1]))
                n--;
        while (n > 0 && strchr(" \t", *ct)) {
                ct++;
                n--;
        }
        return media_type_is(ct, n, "application/json") || media_type_is(ct, n, "application/x-www-form-urlencoded");
}

/* First call, the headers are complete. Only refusals that must not read the body
 * (403, and 413/415 for a submission) are answered here: MHD closes the connection
 * after an answer queued this early, so everything else waits for the final call and
 * keeps the connection alive. */
static enum MHD_Result
request_begin(Api *a, struct MHD_Connection *connection, Request *req, const char *url, const char *method) {
        const union MHD_ConnectionInfo *info;
        const Peer *peer = NULL;
        const char *v;

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        if (info)
                peer = info->socket_context;
        if (!peer || !peer->allowed)
                return respond_error(connection, MHD_HTTP_FORBIDDEN, "forbidden",
                                     "access denied: uid %u is not root and not in group %s",
                                     peer ? (unsigned) peer->uid : (unsigned) -1,
                                     strna(manager_get_config(a->manager)->socket_group));

        req->route_error = api_route(url, &req->route, &req->id);
        if (req->route_error < 0 || req->route != API_ROUTE_TASKS || !method_is(method, MHD_HTTP_METHOD_POST))
                return MHD_YES;

        v = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (v && !content_type_acceptable(v))
                return respond_error(connection, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type",
                                     "Content-Type must be application/json");

        /* a declared oversized body is refused before any of it is read (and before
         * "100 Continue") */
        v = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (v && strtoull(v, NULL, 10) > API_BODY_MAX)
                return respond_error(connection, MHD_HTTP_CONTENT_TOO_LARGE, "payload-too-large",
                                     "request body exceeds %zu bytes", API_BODY_MAX);

        req->want_body = true;
        return MHD_YES;
}

/* Final call: the whole request is in. */
static enum MHD_Result request_dispatch(Api *a, struct MHD_Connection *connection, Request *req, const char *method) {
        if (req->route_error == -ENOMEM)
                return respond_oom(connection);
        if (req->route_error == -EINVAL)
                return respond_error(connection, MHD_HTTP_BAD_REQUEST, "bad-request",
                                     "invalid task id in path: expected 1-%u characters of [A-Za-z0-9_.-], "
                                     "not starting with '.' or '-'",
                                     TASK_ID_MAX);
        if (req->route_error < 0)
                return respond_error(connection, MHD_HTTP_NOT_FOUND, "not-found", "unknown path");

        switch (req->route) {
        case API_ROUTE_HEALTH:
                if (method_is(method, MHD_HTTP_METHOD_GET))
                        return handle_health(a, connection);
                break;
        case API_ROUTE_METRICS:
                if (method_is(method, MHD_HTTP_METHOD_GET))
                        return handle_metrics(a, connection);
                break;
        case API_ROUTE_TASK:
                if (method_is(method, MHD_HTTP_METHOD_GET))
                        return handle_get(a, connection, req->id);
                if (method_is(method, MHD_HTTP_METHOD_DELETE))
                        return handle_delete(a, connection, req->id);
                break;
        case API_ROUTE_TASK_LOGS:
                if (method_is(method, MHD_HTTP_METHOD_GET))
                        return handle_logs(a, connection, req->id);
                break;
        case API_ROUTE_TASK_CANCEL:
                if (method_is(method, MHD_HTTP_METHOD_POST))
                        return handle_cancel(a, connection, req->id);
                break;
        case API_ROUTE_TASKS:
                if (method_is(method, MHD_HTTP_METHOD_GET))
                        return handle_list(a, connection);
                if (method_is(method, MHD_HTTP_METHOD_POST))
                        return handle_submit(a, connection, req);
                break;
        default:
                assert(false);
        }

        log_debug("API: 405 for %s on route %d", method, (int) req->route);
        return respond_error_full(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "method-not-allowed", MHD_HTTP_HEADER_ALLOW,
                                  route_allow[req->route], "method not allowed for this path");
}

static enum MHD_Result request_body(Request *req, const char *data, size_t size) {
        /* bodies of other requests, and the rest of an oversized one, are dropped unread */
        if (!req->want_body || req->too_large) {
                req->discarded += size;
                return req->discarded > API_BODY_DISCARD_MAX ? MHD_NO : MHD_YES;
        }

        if (size > API_BODY_MAX - req->body_size) {
                req->too_large = true;
                req->discarded = req->body_size + size;
                req->body = mfree(req->body);
                req->body_size = req->body_allocated = 0;
                return MHD_YES;
        }

        if (req->body_size + size + 1 > req->body_allocated) {
                size_t n = MAX(req->body_allocated * 2, req->body_size + size + 1);
                char *b;

                n = MIN(n, API_BODY_MAX + 1);
                b = realloc(req->body, n);
                if (!b)
                        return MHD_NO;
                req->body = b;
                req->body_allocated = n;
        }
        memcpy(req->body + req->body_size, data, size);
        req->body_size += size;
        req->body[req->body_size] = '\0';
        return MHD_YES;
}

static enum MHD_Result on_request(void *userdata,
                                  struct MHD_Connection *connection,
                                  const char *url,
                                  const char *method,
                                  const char *version,
                                  const char *upload_data,
                                  size_t *upload_data_size,
                                  void **con_cls) {
        Api *a = userdata;
        Request *req = *con_cls;

        if (!req) {
                req = calloc(1, sizeof(Request));
                if (!req)
                        return MHD_NO;
                *con_cls = req;
                log_debug("API: %s %s", method, url);
                return request_begin(a, connection, req, url, method);
        }

        if (*upload_data_size > 0) {
                enum MHD_Result ret = request_body(req, upload_data, *upload_data_size);

                *upload_data_size = 0;
                return ret;
        }

        return request_dispatch(a, connection, req, method);
}

/* ---- event loop glue ----------------------------------------------------------- */

static void api_arm_timer(Api *a) {
        MHD_UNSIGNED_LONG_LONG ms = 0;
        uint64_t now = 0, usec;
        int r;

        if (!a->daemon || !a->time_source)
                return;

        /* In external polling mode MHD has no inter-thread channel (MHD_start_daemon()
         * drops MHD_USE_ITC), so MHD_resume_connection() wakes nothing and
         * MHD_get_timeout() does not know about it: we run MHD right away ourselves. */
        if (a->run_pending)
                ms = 0;
        else if (MHD_get_timeout(a->daemon, &ms) != MHD_YES) {
                (void) sd_event_source_set_enabled(a->time_source, SD_EVENT_OFF);
                return;
        }

        r = sd_event_now(a->event, CLOCK_MONOTONIC, &now);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the event loop clock: %m");
                return;
        }
        usec = ms >= (USEC_INFINITY - now) / USEC_PER_MSEC ? USEC_INFINITY - 1 : now + ms * USEC_PER_MSEC;

        r = sd_event_source_set_time(a->time_source, usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->time_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the API timer: %m");
}

static void api_run(Api *a) {
        const union MHD_DaemonInfo *info;

        a->run_pending = false;
        if (MHD_run(a->daemon) != MHD_YES)
                log_debug("MHD_run() failed.");

        /* At the connection limit MHD takes the listening socket out of its epoll set
         * and only puts it back at the start of a later MHD_run(): once below the limit
         * again, make sure that run comes, or waiting clients starve. */
        info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (info) {
                if (info->num_connections >= API_CONNECTION_LIMIT)
                        a->at_limit = true;
                else if (a->at_limit) {
                        a->at_limit = false;
                        a->run_pending = true;
                }
        }

        api_arm_timer(a);
}

static int on_epoll(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        api_run(userdata);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        api_run(userdata);
        return 0;
}

/* MHD does not watch suspended connections: poll their sockets for a hang-up and let
 * the content reader end those, which frees them. */
static int on_follower_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Api *a = userdata;
        bool resumed = false;

        for (Follower *f = a->followers; f; f = f->next) {
                struct pollfd p = {.fd = f->connection_fd, .events = POLLRDHUP};

                if (!f->suspended || f->connection_fd < 0)
                        continue;
                if (usec >= f->since_usec + API_FOLLOWER_LIFETIME_USEC) {
                        log_debug("API: letting the log follower of task %s go (lifetime).", f->task_id);
                        f->expired = true;
                } else if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
                        continue;
                else {
                        log_debug("API: log follower of task %s went away.", f->task_id);
                        f->gone = true;
                }
                f->suspended = false;
                MHD_resume_connection(f->connection);
                resumed = true;
        }

        if (resumed)
                api_run(a);
        follower_check_arm(a);
        return 0;
}

static void follower_check_arm(Api *a) {
        bool any = false;
        uint64_t now = 0;

        if (!a->check_source)
                return;

        for (Follower *f = a->followers; f; f = f->next)
                if (f->suspended) {
                        any = true;
                        break;
                }

        if (!any) {
                (void) sd_event_source_set_enabled(a->check_source, SD_EVENT_OFF);
                return;
        }
        if (sd_event_source_get_enabled(a->check_source, NULL) > 0)
                return;
        if (sd_event_now(a->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        (void) sd_event_source_set_time(a->check_source, now + API_FOLLOWER_CHECK_USEC);
        (void) sd_event_source_set_enabled(a->check_source, SD_EVENT_ONESHOT);
}

void api_set_lagoon(Api *a, Lagoon *l) {
        a->lagoon = l;
}

void api_task_changed(Api *a, const Task *t) {
        bool resumed = false;

        if (!a || !t)
                return;

        for (Follower *f = a->followers; f; f = f->next) {
                if (!streq(f->task_id, t->id))
                        continue;
                /* Now, while the LogTail still knows where the lines shown partly went. */
                follower_resolve(f, manager_task_logtail(a->manager, t->id));
                if (f->suspended) {
                        f->suspended = false;
                        MHD_resume_connection(f->connection);
                        resumed = true;
                }
        }

        if (resumed) {
                /* no MHD_run() from here: we may be inside one (a submission's callbacks) */
                a->run_pending = true;
                api_arm_timer(a);
        }
}

static void on_mhd_log(void *userdata, const char *format, va_list ap) _printf_(2, 0);
static void on_mhd_log(void *userdata, const char *format, va_list ap) {
        Api *a = userdata;
        char buf[512];
        size_t n;

        (void) vsnprintf(buf, sizeof(buf), format, ap);
        n = strlen(buf);
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';

        /* after startup these are about single client connections */
        log_full(a->running ? LOG_DEBUG : LOG_WARNING, "libmicrohttpd: %s", buf);
}

/* ---- the socket ---------------------------------------------------------------- */

static int socket_from_systemd(int *ret) {
        _cleanup_strv_free_ char **names = NULL;
        int n;

        n = sd_listen_fds_with_names(false, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to get sockets from systemd: %m");

        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i, flags, r;

                if (!names || !streq_ptr(names[i], API_SOCKET_NAME))
                        continue;

                r = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);
                if (r < 0)
                        return log_error_errno(r, "Failed to check socket '%s' from systemd: %m", API_SOCKET_NAME);
                if (r == 0)
                        return log_error_errno(EINVAL,
                                               "Socket '%s' from systemd is not a listening unix stream socket.",
                                               API_SOCKET_NAME);

                flags = fcntl(fd, F_GETFL);
                if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                        return log_error_errno(errno, "Failed to set flags on the API socket: %m");

                log_debug("Using API socket from systemd (fd %d).", fd);
                *ret = fd;
                return 1;
        }

        return 0;
}

static int socket_bind(const char *path, const char *group, int *ret) {
        static bool warned_group = false;
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *dir = NULL;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct stat st;
        mode_t old_umask;
        gid_t gid;
        char *slash;
        int r;

        if (isempty(path) || path[0] != '/')
                return log_error_errno(EINVAL, "ListenSocket= must be an absolute path.");
        if (strlen(path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "ListenSocket=%s is too long for a unix socket.", path);
        strcpy(sa.sun_path, path);

        dir = strdup(path);
        if (!dir)
                return log_oom();
        slash = strrchr(dir, '/');
        if (slash != dir) {
                *slash = '\0';
                r = mkdir_p(dir, 0755);
                if (r < 0)
                        return log_error_errno(r, "Failed to create directory %s: %m", dir);
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create API socket: %m");

        if (lstat(path, &st) >= 0) {
                _cleanup_close_ int probe = -EBADF;

                if (!S_ISSOCK(st.st_mode))
                        return log_error_errno(EEXIST, "%s exists and is not a socket, refusing to replace it.", path);

                /* a live socket means another instance is serving it */
                probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (probe >= 0 && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) >= 0)
                        return log_error_errno(EADDRINUSE, "Another process is listening on %s.", path);

                if (unlink(path) < 0 && errno != ENOENT)
                        return log_error_errno(errno, "Failed to remove stale socket %s: %m", path);
        }

        /* created with mode 0660 from the start, so it is never wider than that */
        old_umask = umask(0117);
        r = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
        if (r < 0)
                r = -errno;
        umask(old_umask);
        if (r < 0)
                return log_error_errno(r, "Failed to bind API socket %s: %m", path);

        r = group_lookup_gid(group, &gid);
        if (r < 0) {
                if (!warned_group)
                        log_warning("Group '%s' does not exist: API socket %s is usable by root only.", strna(group),
                                    path);
                warned_group = true;
        } else if (fchownat(AT_FDCWD, path, 0, gid, AT_SYMLINK_NOFOLLOW) < 0) /* never a symlink's target */
                log_warning_errno(errno, "Failed to give API socket %s to group %s, it is usable by root only: %m",
                                  path, group);

        if (listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                (void) unlink(path);
                return log_error_errno(r, "Failed to listen on %s: %m", path);
        }

        *ret = TAKE_FD(fd);
        return 0;
}

/* ---- lifetime ------------------------------------------------------------------ */

int api_new(sd_event *e, Manager *m, Api **ret) {
        _cleanup_(api_freep) Api *a = NULL;
        const union MHD_DaemonInfo *info;
        const Config *c;
        int fd = -EBADF, r;

        assert(e);
        assert(m);
        assert(ret);

        c = manager_get_config(m);
        if (!c)
                return log_error_errno(EINVAL, "No configuration.");

        a = calloc(1, sizeof(Api));
        if (!a)
                return log_oom();
        a->event = sd_event_ref(e);
        a->manager = m;
        a->listen_fd = -EBADF;
        a->group_r = -ENOENT; /* looked up at the first connection */

        r = socket_from_systemd(&fd);
        if (r < 0)
                return r;
        if (r == 0) {
                r = socket_bind(c->listen_socket, c->socket_group, &fd);
                if (r < 0)
                        return r;
                a->bound_path = strdup(c->listen_socket);
                if (!a->bound_path) {
                        (void) unlink(c->listen_socket);
                        safe_close(fd);
                        return log_oom();
                }
        }

        a->listen_fd = fd; /* ours: we accept, MHD serves (MHD_add_connection) */
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
                return log_error_errno(errno, "Failed to make the API socket non-blocking: %m");
        a->daemon = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL,
                on_request, a,
                /* first, so that MHD's own option checks are logged through us too */
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a, MHD_OPTION_CONNECTION_LIMIT, (unsigned) API_CONNECTION_LIMIT,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) API_CONNECTION_TIMEOUT_SEC, MHD_OPTION_NOTIFY_CONNECTION,
                on_connection, a, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_END);
        if (!a->daemon)
                return log_error_errno(EIO, "Failed to start the HTTP server on the API socket.");
        a->running = true;

        r = sd_event_add_io(e, &a->listen_source, fd, EPOLLIN, on_accept, a);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the API socket: %m");
        (void) sd_event_source_set_description(a->listen_source, "api-listen");
        /* Ahead of the launches and exits pending in the same iteration: the loop answers at once. */
        (void) sd_event_source_set_priority(a->listen_source, SD_EVENT_PRIORITY_IMPORTANT);

        info = MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info || info->epoll_fd < 0)
                return log_error_errno(EIO, "Failed to get the epoll fd of the HTTP server.");

        r = sd_event_add_io(e, &a->io_source, info->epoll_fd, EPOLLIN, on_epoll, a);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the HTTP server: %m");
        (void) sd_event_source_set_description(a->io_source, "api-io");
        (void) sd_event_source_set_priority(a->io_source, SD_EVENT_PRIORITY_IMPORTANT);

        r = sd_event_add_time(e, &a->time_source, CLOCK_MONOTONIC, USEC_INFINITY - 1, USEC_PER_MSEC, on_timer, a);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP server timer: %m");
        (void) sd_event_source_set_description(a->time_source, "api-timer");

        r = sd_event_add_time(e, &a->check_source, CLOCK_MONOTONIC, USEC_INFINITY - 1, USEC_PER_SEC, on_follower_check,
                              a);
        if (r < 0)
                return log_error_errno(r, "Failed to add the log follower timer: %m");
        (void) sd_event_source_set_description(a->check_source, "api-followers");
        (void) sd_event_source_set_enabled(a->check_source, SD_EVENT_OFF);

        api_arm_timer(a);

        log_info("Control API listening on %s.", a->bound_path ?: "the socket from systemd");
        *ret = TAKE_PTR(a);
        return 0;
}

Api *api_free(Api *a) {
        if (!a)
                return NULL;

        a->listen_source = sd_event_source_unref(a->listen_source);
        a->listen_fd = safe_close(a->listen_fd);
        a->check_source = sd_event_source_unref(a->check_source);
        a->time_source = sd_event_source_unref(a->time_source);
        /* before MHD closes the epoll fd */
        a->io_source = sd_event_source_unref(a->io_source);

        if (a->daemon) {
                /* MHD_stop_daemon() panics on suspended connections: resume them all; their
                 * readers see a->stopping, and the responses (freeing the followers) go
                 * with the connections. */
                a->stopping = true;
                for (Follower *f = a->followers; f; f = f->next)
                        if (f->suspended) {
                                f->suspended = false;
                                MHD_resume_connection(f->connection);
                        }
                a->running = false;
                MHD_stop_daemon(a->daemon);
        }
        /* MHD_stop_daemon() destroyed every response, and with them the followers;
         * should one survive, it must not reach back into us */
        for (Follower *f = a->followers; f; f = f->next)
                f->api = NULL;

        if (a->bound_path && unlink(a->bound_path) < 0 && errno != ENOENT)
                log_debug_errno(errno, "Failed to remove %s: %m", a->bound_path);
        free(a->bound_path);
        free(a->group_name);
        free(a->uids);
        free(a->accepted);
        sd_event_unref(a->event);
        return mfree(a);
}
