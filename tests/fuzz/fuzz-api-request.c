/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for the POST /v1/tasks body parser (api_parse_task_request), the
 * request path router (api_route) and the parsers of query arguments (?tail=, ?offset=,
 * ?time=), all fed outside input by the control API. */

#include <stdint.h>
#include <string.h>

#include "api.h"
#include "parse-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_freep) JsonValue *json = NULL;
        _cleanup_free_ char *error = NULL, *path = NULL, *id = NULL;
        TaskRequest req = {};
        ApiRoute route;
        int r;

        r = api_parse_task_request((const char *) data, size, &req, &json, &error);
        if (r >= 0) {
                /* on success every string is usable and the command is there */
                if (!json || !req.command || strlen(req.command) == 0 || error)
                        __builtin_trap();
                (void) strlen(req.id ?: "");
                (void) strlen(req.name ?: "");
                (void) strlen(req.service ?: "");
                (void) strlen(req.project ?: "");
                (void) strlen(req.environment ?: "");
        } else if (r == -EINVAL && (!error || json))
                __builtin_trap();

        /* the same bytes as a URL path */
        path = strndup((const char *) data, size);
        if (path && api_route(path, &route, &id) >= 0 &&
            (route == API_ROUTE_TASK || route == API_ROUTE_TASK_LOGS || route == API_ROUTE_TASK_CANCEL) &&
            !task_id_is_valid(id))
                __builtin_trap();

        /* and as a query argument's value */
        if (path) {
                uint64_t v, d;

                if (parse_uint64(path, &v) >= 0 && (isempty(path) || strspn(path, "0123456789") != strlen(path)))
                        __builtin_trap();
                (void) parse_duration(path, &d);
        }

        return 0;
}
