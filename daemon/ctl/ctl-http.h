/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* lagoon-taskctl's HTTP client: HTTP/1.1 requests to lagoon-taskd's control API over
 * its unix socket, through one libcurl easy handle (the connection is kept alive
 * between requests). A 2xx response body is either buffered or handed to a sink as it
 * arrives (streamed log output); an error response body is always buffered so the
 * caller can show the API's {"error","message"}. */

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

typedef struct CtlHttp CtlHttp;

/* Called with each piece of a streamed 2xx body; a negative errno aborts the transfer
 * and is what ctl_http_request() returns. */
typedef int (*ctl_http_sink_t)(const void *data, size_t size, void *userdata);

typedef struct CtlResponse {
        long status; /* HTTP status code */
        char *body;  /* NUL-terminated; NULL when the body went to a sink */
        size_t size;
} CtlResponse;

void ctl_response_done(CtlResponse *r);

int ctl_http_new(const char *socket_path, CtlHttp **ret);
CtlHttp *ctl_http_free(CtlHttp *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(CtlHttp *, ctl_http_free);

/* One request: method "GET", "POST" or "DELETE", path like "/v1/tasks" (may carry a query),
 * body (JSON) or NULL. stream=true means the request may stay open indefinitely
 * (log following): no idle limit. Returns 0 when a response arrived (any status), or
 * a negative errno when none did: the connect errno (-ENOENT, -ECONNREFUSED, -EACCES…)
 * with ctl_http_connect_failed() true, -ECONNRESET/-EPROTO when the connection broke,
 * -ETIMEDOUT, or the sink's error. ctl_http_error() describes the last failure. */
int ctl_http_request(CtlHttp *h,
                     const char *method,
                     const char *path,
                     const char *body,
                     bool stream,
                     ctl_http_sink_t sink,
                     void *userdata,
                     CtlResponse *ret);

/* While a streamed request (stream=true) runs, tick is called about every
 * CTL_HTTP_TICK_USEC, the first time as it starts (run --wait's progress, which asks on
 * another CtlHttp: never on this one); a negative errno aborts the request with it. */
#define CTL_HTTP_TICK_USEC (500 * USEC_PER_MSEC)
typedef int (*ctl_http_tick_t)(void *userdata);
void ctl_http_set_tick(CtlHttp *h, ctl_http_tick_t tick, void *userdata);

/* The Lagoon-Log-Offset header of the last request's answer (where a log answer starts
 * in the task log), UINT64_MAX without one; known as soon as the headers are in, so
 * also after a stream that broke. */
uint64_t ctl_http_log_offset(const CtlHttp *h);

bool ctl_http_connect_failed(const CtlHttp *h);
/* Whether any request got a response: a later connect failure is then a daemon restart. */
bool ctl_http_ever_answered(const CtlHttp *h);
const char *ctl_http_error(const CtlHttp *h);
const char *ctl_http_socket_path(const CtlHttp *h);
