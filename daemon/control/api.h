/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The control API: HTTP/1.1 + JSON on a unix socket, served by libmicrohttpd on
 * the event loop. The socket comes from systemd (sd_listen_fds_with_names, name
 * "api") or is bound at ListenSocket= (mode 0660, group SocketGroup=). Peers are
 * checked with SO_PEERCRED: root or members of SocketGroup=.
 *
 *   POST /v1/tasks                 submit         201 (new) / 200 (same id again)
 *   GET  /v1/tasks                 list           200 {"tasks":[…]}
 *   GET  /v1/tasks/{id}            one task       200
 *   DELETE /v1/tasks/{id}          remove         200 with the task as it was (finished tasks only, else 409)
 *   GET  /v1/tasks/{id}/logs       text/plain     200 (?follow=1 streams until the task ends)
 *   POST /v1/tasks/{id}/cancel     cancel         202
 *   GET  /v1/health                health         200 / 503 while stopping
 *   GET  /metrics                  Prometheus     200 text/plain; version=0.0.4 (metrics.h)
 * Errors: {"error": CODE, "message": TEXT} with 400, 403, 404, 405 (with Allow:), 409,
 * 413 (body over 1 MiB), 415 (Content-Type other than application/json; curl's
 * default application/x-www-form-urlencoded is accepted too), 500, 503.
 * The caller wires manager_set_task_callback() to api_task_changed(). */

#include <systemd/sd-event.h>

#include "macro.h"
#include "lagoon.h"
#include "manager.h"

typedef struct Api Api;

int api_new(sd_event *e, Manager *m, Api **ret);
Api *api_free(Api *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(Api *, api_free);

/* The Lagoon integration whose state /metrics shows (main.c, once it exists). */
void api_set_lagoon(Api *a, Lagoon *l);

/* Wakes streaming log followers of this task (new output or status change). */
void api_task_changed(Api *a, const Task *t);

/* The route of a request path, exposed for tests. */
typedef enum ApiRoute {
        API_ROUTE_TASKS,       /* /v1/tasks */
        API_ROUTE_TASK,        /* /v1/tasks/{id} */
        API_ROUTE_TASK_LOGS,   /* /v1/tasks/{id}/logs */
        API_ROUTE_TASK_CANCEL, /* /v1/tasks/{id}/cancel */
        API_ROUTE_HEALTH,      /* /v1/health */
        API_ROUTE_METRICS,     /* /metrics */
        _API_ROUTE_INVALID = -EINVAL,
} ApiRoute;
/* Splits a URL path (already percent-decoded, without the query); *ret_id is set
 * for the per-task routes (malloc'd), NULL for the others. -ENOENT for an unknown
 * path; -EINVAL for a per-task route whose id fails task_id_is_valid() (the API
 * answers 400 "bad-request" for that, 404 "not-found" for unknown paths). */
int api_route(const char *path, ApiRoute *ret, char **ret_id);
/* Parses a POST /v1/tasks body into a TaskRequest whose strings point into *ret_json
 * (the caller frees it). Body: {"id","name","service","project","environment",
 * "command" (required, string), "timeout" (seconds as number, or a duration string)}.
 * Strings must be non-empty; null stands for "not given" in optional members; id must
 * pass task_id_is_valid(); timeout must be positive ("infinity" allowed). Unknown
 * members are an error. -EINVAL with a message in *ret_error (which may be NULL),
 * -ENOMEM. */
int api_parse_task_request(const char *body, size_t size, TaskRequest *ret, JsonValue **ret_json, char **ret_error);
