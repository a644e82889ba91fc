/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* HTTP(S) client on the event loop: libcurl's multi interface driven by sd-event io
 * and time sources (curl_multi_socket_action), no threads, no blocking. TLS through
 * libcurl/OpenSSL with peer and host verification always on (a CA file may be given).
 * Used by the Lagoon API sink and by the Kubernetes client (streaming bodies for
 * watches and log follow). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct HttpClient HttpClient;
typedef struct HttpCall HttpCall;

/* Streaming: called with each piece of the response body as it arrives (status is the
 * HTTP status, known by then), from the event loop. Returning < 0 aborts the transfer;
 * the done callback then gets that error. It must not free the client; it may cancel
 * its own or other calls (a call cancelled from here gets no further callbacks). */
typedef int (*http_data_cb_t)(HttpCall *call, long status, const void *data, size_t size, void *userdata);

typedef struct HttpRequest {
        const char *method; /* "GET", "POST", … */
        const char *url;
        char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
        /* Sent as "Authorization: Bearer <token>" (no line breaks: -EINVAL); may be NULL.
         * The call's copies of its headers are wiped when it ends. */
        const char *bearer_token;
        const char *body; /* may be NULL */
        size_t body_size;
        uint64_t timeout_usec;    /* whole request; 0 → 30 s */
        const char *ca_file;      /* NULL → system CAs */
        const char *client_cert;  /* PEM file, may be NULL */
        const char *client_key;   /* PEM file, may be NULL */
        const char *unix_socket;  /* connect through this socket instead, may be NULL */
        size_t max_response_size; /* 0 → 16 MiB; larger responses fail with -E2BIG */
        /* Streaming (watches, log follow): when set, the body goes to on_data and is not
         * collected (no size limit); the done callback still ends the call, with body NULL. */
        http_data_cb_t on_data;
        /* No whole-request timeout (timeout_usec then only bounds connecting). Dead peers
         * are still noticed: TCP keepalive probes after 30 s idle, and idle_timeout_usec. */
        bool no_timeout;
        uint64_t idle_timeout_usec; /* > 0: fail with -ETIMEDOUT when no byte arrived for this long */
} HttpRequest;

/* How a call ended, handed to its done callback.
 * error < 0: no HTTP answer (-ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -E2BIG,
 * -EPROTO for TLS failures incl. certificate verification, -EIO otherwise), or the
 * error a streaming call's on_data returned, with a readable error_text (curl's
 * message). error == 0: status is the HTTP status and body/size the response body
 * (NUL-terminated; NULL/0 for streaming calls). */
typedef struct HttpResult {
        int error;
        long status;
        const char *body;
        size_t size;
        const char *error_text; /* NULL when error == 0 */
} HttpResult;

/* Called once per call from the event loop (never from inside http_request()).
 * Any method may carry a body (POST, PUT, PATCH, DELETE). The call and the result are
 * freed after the callback returns. */
typedef void (*http_done_cb_t)(HttpCall *call, const HttpResult *result, void *userdata);

int http_client_new(sd_event *e, HttpClient **ret);
/* Cancels every pending call without calling their callbacks. */
HttpClient *http_client_free(HttpClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpClient *, http_client_free);

/* Starts a request; all request strings are copied. *ret (may be NULL) is a handle
 * valid until the callback ran or http_call_cancel(). */
int http_request(HttpClient *c, const HttpRequest *req, http_done_cb_t cb, void *userdata, HttpCall **ret);
/* Aborts a pending call; its callbacks are not called again. Returns NULL. Allowed from
 * any callback, also from a streaming call's own on_data. */
HttpCall *http_call_cancel(HttpCall *call);
unsigned http_client_n_pending(HttpClient *c);
/* A response header of the call (the first of that name), only from inside its
 * callbacks; NULL when absent. E.g. "Retry-After". */
const char *http_call_header(HttpCall *call, const char *name);
