/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Lagoon API sink: POSTs GraphQL request bodies (from lagoon_report_update_task())
 * to <APIURL> with "Authorization: Bearer <token>", the token read from APITokenFile=
 * or an HS256 JWT minted per request from JWTSecretFile= (jwt.h, 60 s life, audience
 * JWTAudience=). One request at a time is the caller's business (the outbox sends in
 * order); this module only sends one and classifies the answer. */

#include <systemd/sd-event.h>

#include "config.h"
#include "http.h"
#include "macro.h"

typedef enum LagoonApiResult {
        LAGOON_API_DELIVERED, /* 2xx and no GraphQL "errors" */
        LAGOON_API_RETRY,     /* network error, timeout, 5xx, 429: try again later */
        LAGOON_API_REJECTED,  /* 4xx (but 429) or a GraphQL "errors" answer: do not retry */
} LagoonApiResult;

typedef struct LagoonApi LagoonApi;

/* detail: a one-line description for the log on RETRY/REJECTED (status, the API's
 * error message, the first 512 bytes of an unexpected body), NULL on DELIVERED. */
typedef void (*lagoon_api_done_cb_t)(LagoonApi *a, LagoonApiResult result, const char *detail, void *userdata);

/* NULL *ret (and 0) when the configuration has no APIURL=. */
int lagoon_api_new(HttpClient *http, const Config *c, LagoonApi **ret);
LagoonApi *lagoon_api_free(LagoonApi *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(LagoonApi *, lagoon_api_free);

/* Sends one request body. -EBUSY while a request is pending. The callback runs from
 * the event loop. */
int lagoon_api_send(LagoonApi *a, const char *body, size_t size, lagoon_api_done_cb_t cb, void *userdata);
bool lagoon_api_busy(LagoonApi *a);
