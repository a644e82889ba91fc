/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* HTTP(S) client on the event loop: libcurl's multi interface driven by sd-event io
 * and time sources (curl_multi_socket_action), no threads, no blocking. TLS through
 * libcurl/OpenSSL with peer and host verification always on (a CA file may be given).
 * Used by the Lagoon API sink now and by the Kubernetes client later (which will add
 * streaming bodies). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct HttpClient HttpClient;
typedef struct HttpCall HttpCall;

typedef struct HttpRequest {
        const char *method; /* "GET", "POST", … */
        const char *url;
        char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
        const char *body;     /* may be NULL */
        size_t body_size;
        uint64_t timeout_usec;    /* whole request; 0 → 30 s */
        const char *ca_file;      /* NULL → system CAs */
        const char *client_cert;  /* PEM file, may be NULL */
        const char *client_key;   /* PEM file, may be NULL */
        const char *unix_socket;  /* connect through this socket instead, may be NULL */
        size_t max_response_size; /* 0 → 16 MiB; larger responses fail with -E2BIG */
} HttpRequest;

/* Called once per call from the event loop (never from inside http_request()).
 * error < 0: no HTTP answer (-ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -E2BIG,
 * -EPROTO for TLS failures incl. certificate verification, -EIO otherwise), with a
 * readable error_text (curl's message). error == 0: status is the HTTP status and
 * body/size the response body (NUL-terminated). The call is freed after the callback
 * returns. */
typedef void (*http_done_cb_t)(HttpCall *call,
                               int error,
                               long status,
                               const char *body,
                               size_t size,
                               const char *error_text,
                               void *userdata);

int http_client_new(sd_event *e, HttpClient **ret);
/* Cancels every pending call without calling their callbacks. */
HttpClient *http_client_free(HttpClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpClient *, http_client_free);

/* Starts a request; all request strings are copied. *ret (may be NULL) is a handle
 * valid until the callback ran or http_call_cancel(). */
int http_request(HttpClient *c, const HttpRequest *req, http_done_cb_t cb, void *userdata, HttpCall **ret);
/* Aborts a pending call; its callback is not called. Returns NULL. */
HttpCall *http_call_cancel(HttpCall *call);
unsigned http_client_n_pending(HttpClient *c);
