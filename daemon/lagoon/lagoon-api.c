/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The Lagoon API sink: sends one GraphQL request body at a time to APIURL= with a
 * bearer token and sorts the answer into delivered / retry / rejected. The token is
 * minted per request as an HS256 JWT from JWTSecretFile= (60 s life, so a request
 * that waited in the outbox never carries a stale token) or, without a secret, the
 * ready token of APITokenFile=. The token never reaches a log line: the detail texts
 * only quote the API's answer, and http.c wipes its copies of the headers after use.
 *
 * Classification (lagoon-api.h): transport errors, 5xx, 429 and 401/403 (Lagoon's auth
 * middleware: a token refused, retried with a new one) are worth another try; other 4xx
 * (400 from Apollo for a request it cannot coerce) and 2xx answers carrying GraphQL
 * "errors" (resolver failures) are not.
 * Status codes outside those ranges (1xx, 3xx) are retried: the request may not have
 * reached the API, and updateTask is idempotent. */

#include <errno.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "jwt.h"
#include "lagoon-api.h"
#include "log.h"

#define LAGOON_API_ISSUER "lagoon-taskd"
#define IN_SET_LONG(x, a, b, c) ((x) == (a) || (x) == (b) || (x) == (c))
#define LAGOON_API_TOKEN_LIFETIME_SEC 60U
#define LAGOON_API_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define LAGOON_API_MAX_RESPONSE ((size_t) 1024U * 1024U)
#define DETAIL_BODY_MAX 512U

struct LagoonApi {
        HttpClient *http;
        char *url;
        char *token;      /* APITokenFile= content, used when there is no secret */
        char *jwt_secret; /* JWTSecretFile= content */
        char *audience;
        char *ca_file;

        HttpCall *call;
        lagoon_api_done_cb_t callback;
        void *userdata;
};

static char *erase_and_free(char *s) {
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
        return NULL;
}

static void erase_and_freep(char **s) {
        erase_and_free(*s);
}

int lagoon_api_new(HttpClient *http, const Config *c, LagoonApi **ret) {
        LagoonApi *a = NULL;

        if (!http || !c || !ret)
                return -EINVAL;

        if (isempty(c->api_url)) {
                *ret = NULL;
                return 0;
        }
        if (isempty(c->jwt_secret) && isempty(c->api_token))
                return log_error_errno(EINVAL, "APIURL= is set, but neither JWTSecretFile= nor APITokenFile= is.");

        /* It goes into a header line as it is. */
        if (!isempty(c->api_token) && strpbrk(c->api_token, "\r\n"))
                return log_error_errno(EINVAL, "The token of APITokenFile= contains a line break.");

        a = calloc(1, sizeof(LagoonApi));
        if (!a)
                return log_oom();
        a->http = http;

        if (free_and_strdup(&a->url, c->api_url) < 0 ||
            free_and_strdup(&a->audience, isempty(c->jwt_audience) ? "api.dev" : c->jwt_audience) < 0 ||
            free_and_strdup(&a->ca_file, c->api_ca_file) < 0 ||
            free_and_strdup(&a->jwt_secret, isempty(c->jwt_secret) ? NULL : c->jwt_secret) < 0 ||
            free_and_strdup(&a->token, isempty(c->api_token) ? NULL : c->api_token) < 0) {
                lagoon_api_free(a);
                return log_oom();
        }

        if (a->jwt_secret && a->token)
                log_debug("Lagoon API: both JWTSecretFile= and APITokenFile= are set, minting tokens from the secret.");

        *ret = a;
        return 0;
}

LagoonApi *lagoon_api_free(LagoonApi *a) {
        if (!a)
                return NULL;

        a->call = http_call_cancel(a->call);
        free(a->url);
        erase_and_free(a->token);
        erase_and_free(a->jwt_secret);
        free(a->audience);
        free(a->ca_file);
        return mfree(a);
}

bool lagoon_api_busy(LagoonApi *a) {
        return a && a->call;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if there is none. */
static size_t utf8_sequence_length(const unsigned char *s, size_t n) {
        size_t len;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if ((s[0] & 0xE0) == 0xC0)
                len = 2, cp = s[0] & 0x1F;
        else if ((s[0] & 0xF0) == 0xE0)
                len = 3, cp = s[0] & 0x0F;
        else if ((s[0] & 0xF8) == 0xF0)
                len = 4, cp = s[0] & 0x07;
        else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3F);
        }
        /* No overlong forms, surrogates or code points past U+10FFFF. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
                return 0;
        return len;
}

/* One line for the log: at most DETAIL_BODY_MAX bytes of the body, control
 * characters blanked, invalid UTF-8 as '?', never cut inside a character. */
static int format_body_excerpt(const char *body, size_t size, char **ret) {
        const unsigned char *p = (const unsigned char *) body;
        size_t n = MIN(size, (size_t) DETAIL_BODY_MAX), i = 0, o = 0;
        char *s = NULL;

        if (size == 0) {
                s = strdup("(empty body)");
                if (!s)
                        return -ENOMEM;
                *ret = s;
                return 0;
        }

        s = malloc(n + strlen("…") + 1);
        if (!s)
                return -ENOMEM;
        while (i < n) {
                size_t l = utf8_sequence_length(p + i, size - i);
                if (l == 0) {
                        s[o++] = '?';
                        i++;
                } else if (l == 1) {
                        s[o++] = p[i] < 0x20 || p[i] == 0x7F ? ' ' : (char) p[i];
                        i++;
                } else if (i + l > n)
                        break; /* would cross the limit */
                else {
                        memcpy(s + o, p + i, l);
                        o += l;
                        i += l;
                }
        }
        s[o] = 0;
        if (i < size)
                strcat(s, "…");

        *ret = s;
        return 0;
}

/* The first errors[].message of a GraphQL answer, NULL when it has no errors (no
 * "errors" member, null or an empty array). A malformed "errors" member still counts
 * as an error answer. *ret_count is the number of errors. */
static const char *graphql_first_error(const JsonValue *answer, size_t *ret_count) {
        JsonValue *errors = json_get(answer, "errors");

        *ret_count = 0;
        if (!errors || json_type(errors) == JSON_NULL || (json_is_array(errors) && json_length(errors) == 0))
                return NULL;
        *ret_count = json_is_array(errors) ? json_length(errors) : 1;
        return json_get_string(json_array_at(errors, 0), "message") ?: "(no message)";
}

static LagoonApiResult
classify(int error, long status, const char *body, size_t size, const char *error_text, char **ret_detail) {
        _cleanup_(json_freep) JsonValue *answer = NULL;
        _cleanup_free_ char *excerpt = NULL;
        const char *message;
        size_t n_errors = 0;
        int r;

        *ret_detail = NULL;

        if (error < 0) {
                (void) error_message(ret_detail, error, "Request failed: %s", error_text ?: strerror(-error));
                return LAGOON_API_RETRY;
        }

        if (status >= 200 && status < 300) {
                r = json_parse(body, size, JSON_DEPTH_MAX_DEFAULT, &answer, NULL);
                if (r < 0 || !json_is_object(answer)) {
                        /* Lagoon always answers JSON; say so, but the header's rule is
                         * "2xx and no errors": it was delivered. */
                        log_debug("Lagoon API answered HTTP %ld with a body that is not a JSON object.", status);
                        return LAGOON_API_DELIVERED;
                }
                message = graphql_first_error(answer, &n_errors);
                if (!message)
                        return LAGOON_API_DELIVERED;
                if (n_errors > 1)
                        (void) error_message(ret_detail, -EINVAL, "GraphQL error: %s (and %zu more)", message,
                                             n_errors - 1);
                else
                        (void) error_message(ret_detail, -EINVAL, "GraphQL error: %s", message);
                return LAGOON_API_REJECTED;
        }

        if (format_body_excerpt(body ?: "", body ? size : 0, &excerpt) >= 0)
                (void) error_message(ret_detail, -EIO, "HTTP %ld: %s", status, excerpt);

        /* 401/403: the token (clock skew past its 60 s, a secret being rotated), not the
         * update, was refused: another try with a new token may pass. */
        if (status >= 400 && status < 500 && !IN_SET_LONG(status, 401, 403, 429))
                return LAGOON_API_REJECTED;
        return LAGOON_API_RETRY;
}

static void on_http_done(HttpCall *call, const HttpResult *res, void *userdata) {
        LagoonApi *a = userdata;
        _cleanup_free_ char *detail = NULL;
        lagoon_api_done_cb_t cb = a->callback;
        void *cb_userdata = a->userdata;
        LagoonApiResult result;

        a->call = NULL;
        a->callback = NULL;
        a->userdata = NULL;

        result = classify(res->error, res->status, res->body, res->size, res->error_text, &detail);
        if (result != LAGOON_API_DELIVERED && !detail)
                detail = strdup("(out of memory formatting the answer)");
        log_debug("Lagoon API request: %s%s%s",
                  result == LAGOON_API_DELIVERED ? "delivered"
                  : result == LAGOON_API_RETRY   ? "to be retried"
                                                 : "rejected",
                  detail ? ": " : "", strempty(detail));

        /* a may be freed by the callback: nothing touches it afterwards. */
        if (cb)
                cb(a, result, result == LAGOON_API_DELIVERED ? NULL : detail, cb_userdata);
}

static int make_token(LagoonApi *a, char **ret) {
        struct timespec ts = {};

        if (!a->jwt_secret) {
                char *t = strdup(a->token);
                if (!t)
                        return -ENOMEM;
                *ret = t;
                return 0;
        }

        if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
                return -errno;

        return jwt_lagoon_token(a->jwt_secret, strlen(a->jwt_secret), LAGOON_API_ISSUER, a->audience,
                                (uint64_t) ts.tv_sec, LAGOON_API_TOKEN_LIFETIME_SEC, ret);
}

int lagoon_api_send(LagoonApi *a, const char *body, size_t size, lagoon_api_done_cb_t cb, void *userdata) {
        _cleanup_(erase_and_freep) char *token = NULL;
        HttpCall *call = NULL;
        int r;

        if (!a || (!body && size > 0))
                return -EINVAL;
        if (a->call)
                return -EBUSY;

        r = make_token(a, &token);
        if (r < 0)
                return log_error_errno(r, "Failed to make a token for Lagoon's API: %m");

        char *headers[] = {
                (char *) "Content-Type: application/json",
                (char *) "Accept: application/json",
                (char *) "User-Agent: lagoon-taskd/" PACKAGE_VERSION,
                NULL,
        };
        HttpRequest req = {
                .method = "POST",
                .url = a->url,
                .headers = headers,
                .bearer_token = token,
                .body = body ?: "",
                .body_size = size,
                .timeout_usec = LAGOON_API_TIMEOUT_USEC,
                .ca_file = a->ca_file,
                .max_response_size = LAGOON_API_MAX_RESPONSE,
        };

        r = http_request(a->http, &req, on_http_done, a, &call);
        if (r < 0)
                return log_error_errno(r, "Failed to start a request to Lagoon's API at %s: %m", a->url);

        a->call = call;
        a->callback = cb;
        a->userdata = userdata;
        return 0;
}
