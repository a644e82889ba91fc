/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The Kubernetes API client: REST calls with retries, LIST+WATCH of a collection kept
 * alive for ever, and log follow, all on http.c's curl-multi event loop integration.
 * It owns the API-server side of the wire: URLs and escaping, bearer tokens (re-read
 * from the token file for every request), what a Status error says and which
 * permission was missing, watch resourceVersion/bookmark/410 handling, and splitting a
 * streamed log into timestamped lines. Watch bodies are parsed incrementally with
 * json_stream. Objects that call back (KubeCall, KubeWatch, KubeLog) may be freed from
 * their own callbacks: each entry point counts itself in `dispatching`, and a free
 * during dispatch only marks the object, which the entry point destroys on its way out.
 * Library-like: no logging above debug. */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include "list.h"
#include "fs-util.h"
#include "kube.h"
#include "log.h"

#define TOKEN_SIZE_MAX ((size_t) 64U * 1024U)
#define ERROR_BODY_MAX ((size_t) 64U * 1024U)
#define RETRY_AFTER_MAX_USEC (60 * USEC_PER_SEC)
#define WATCH_VALUE_MAX ((size_t) 32U * 1024U * 1024U)
#define WATCH_IDLE_GRACE_USEC (60 * USEC_PER_SEC)

#define IS_AUTH_ERROR(e) ((e) == -EACCES || (e) == -EPERM)

struct KubeClient {
        sd_event *event;
        HttpClient *http;
        KubeCredentials *cred;
        KubeLimits limits;
        KubeCall *calls;
};

struct KubeCall {
        KubeClient *client;
        char *method, *path, *content_type, *body;
        kube_done_cb_t cb;
        void *userdata;

        unsigned attempt;
        uint64_t first_usec;
        HttpCall *http_call;
        sd_event_source *retry_timer;

        JsonValue *result; /* during the callback, unless taken */
        bool in_callback;
        KubeCall *prev, *next;
};

typedef enum WatchAction {
        WATCH_DO_LIST,
        WATCH_DO_WATCH,
} WatchAction;

struct KubeWatch {
        KubeClient *client;
        char *collection, *label_selector, *field_selector;
        kube_watch_cb_t cb;
        void *userdata;

        char *resource_version;
        KubeCall *list_call;
        HttpCall *watch_call;
        JsonStream *stream;
        uint64_t watch_started_usec;
        unsigned watch_events;
        long watch_status;
        char *error_body;
        size_t error_size;

        sd_event_source *timer;
        WatchAction action;
        unsigned failures;

        unsigned dispatching;
        bool freed;
};

struct KubeLog {
        KubeClient *client;
        char *path;
        HttpCall *call;
        kube_log_line_cb_t line_cb;
        kube_log_end_cb_t end_cb;
        void *userdata;
        uint64_t since_usec;

        char *buf; /* the unfinished line */
        size_t size, allocated;
        bool continuation; /* buf continues a line delivered in pieces */
        uint64_t continuation_usec;

        long status;
        char *error_body;
        size_t error_size;

        unsigned dispatching;
        bool freed;
};

/* ---- small helpers ---- */

char *kube_escape(const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        char *out, *p;

        if (!s)
                return NULL;
        out = malloc(strlen(s) * 3 + 1);
        if (!out)
                return NULL;
        p = out;
        for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
                if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
                    strchr("-._~", *c))
                        *p++ = (char) *c;
                else {
                        *p++ = '%';
                        *p++ = hex[*c >> 4];
                        *p++ = hex[*c & 15];
                }
        }
        *p = 0;
        return out;
}

int kube_path_append_query(char **path, const char *key, const char *value) {
        _cleanup_free_ char *k = NULL, *v = NULL;
        char *n = NULL;

        if (!path || !*path || !key)
                return -EINVAL;
        if (!value)
                return 0;
        k = kube_escape(key);
        v = kube_escape(value);
        if (!k || !v)
                return -ENOMEM;
        if (asprintf(&n, "%s%c%s=%s", *path, strchr(*path, '?') ? '&' : '?', k, v) < 0)
                return -ENOMEM;
        free(*path);
        *path = n;
        return 0;
}

static int digits(const char *s, size_t n, int *ret) {
        int v = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (s[i] - '0');
        }
        *ret = v;
        return 0;
}

int kube_format_microtime(uint64_t usec, char ret[static KUBE_MICROTIME_MAX]) {
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&sec, &tm))
                return -EINVAL;
        if (strftime(ret, KUBE_MICROTIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
                return -EINVAL;
        snprintf(ret + strlen(ret), KUBE_MICROTIME_MAX - strlen(ret), ".%06uZ", (unsigned) (usec % USEC_PER_SEC));
        return 0;
}

int kube_parse_timestamp(const char *s, size_t len, uint64_t *ret) {
        struct tm tm = {};
        int year, mon, day, hour, min, sec, off_h = 0, off_m = 0;
        uint64_t frac_usec = 0;
        int64_t offset = 0;
        size_t i;
        time_t t;

        if (!s || len < 20)
                return -EINVAL;
        if (digits(s, 4, &year) < 0 || s[4] != '-' || digits(s + 5, 2, &mon) < 0 || s[7] != '-' ||
            digits(s + 8, 2, &day) < 0 || (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &hour) < 0 ||
            s[13] != ':' || digits(s + 14, 2, &min) < 0 || s[16] != ':' || digits(s + 17, 2, &sec) < 0)
                return -EINVAL;
        if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
                return -EINVAL;
        i = 19;
        if (s[i] == '.') {
                unsigned n = 0;
                uint64_t scale = 100000;
                for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, n++) {
                        frac_usec += (uint64_t) (s[i] - '0') * scale;
                        scale /= 10;
                }
                if (n == 0)
                        return -EINVAL;
        }
        if (i < len && (s[i] == 'Z' || s[i] == 'z'))
                i++;
        else if (i + 6 <= len && (s[i] == '+' || s[i] == '-')) {
                if (digits(s + i + 1, 2, &off_h) < 0 || s[i + 3] != ':' || digits(s + i + 4, 2, &off_m) < 0 ||
                    off_h > 23 || off_m > 59)
                        return -EINVAL;
                offset = (int64_t) (off_h * 3600 + off_m * 60) * (s[i] == '+' ? 1 : -1);
                i += 6;
        } else
                return -EINVAL;
        if (i != len)
                return -EINVAL;

        tm.tm_year = year - 1900;
        tm.tm_mon = mon - 1;
        tm.tm_mday = day;
        tm.tm_hour = hour;
        tm.tm_min = min;
        tm.tm_sec = sec;
        t = timegm(&tm);
        if (t == (time_t) -1 || (int64_t) t - offset < 0)
                return -EINVAL;
        *ret = (uint64_t) ((int64_t) t - offset) * USEC_PER_SEC + frac_usec;
        return 0;
}

static int read_token(const KubeCredentials *c, char **ret, char **ret_error) {
        _cleanup_free_ char *t = NULL;
        int r;

        if (c->token_file) {
                r = read_full_file(c->token_file, TOKEN_SIZE_MAX, &t, NULL);
                if (r < 0)
                        return error_message(ret_error, r, "Failed to read the API token %s: %s", c->token_file,
                                             strerror(-r));
                /* Files usually end with a newline. */
                t[strcspn(t, "\r\n")] = 0;
                if (isempty(t))
                        return error_message(ret_error, -EINVAL, "API token file %s is empty", c->token_file);
        } else if (c->token) {
                t = strdup(c->token);
                if (!t)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

/* Starts one HTTP request to the API server with the client's credentials. */
static int start_http(KubeClient *k,
                      const char *method,
                      const char *path,
                      const char *content_type,
                      const char *body,
                      http_data_cb_t on_data,
                      uint64_t idle_timeout_usec,
                      http_done_cb_t done,
                      void *userdata,
                      HttpCall **ret,
                      char **ret_error) {
        _cleanup_free_ char *url = NULL, *token = NULL, *ct = NULL;
        char *headers[4] = {};
        size_t n = 0;
        int r;

        if (asprintf(&url, "%s%s", k->cred->server, path) < 0)
                return -ENOMEM;
        r = read_token(k->cred, &token, ret_error);
        if (r < 0)
                return r;
        headers[n++] = (char *) "Accept: application/json";
        headers[n++] = (char *) "User-Agent: lagoon-taskd/" PACKAGE_VERSION;
        if (body) {
                if (asprintf(&ct, "Content-Type: %s", content_type ?: "application/json") < 0)
                        return -ENOMEM;
                headers[n++] = ct;
        }

        r = http_request(k->http,
                         &(HttpRequest){
                                 .method = method,
                                 .url = url,
                                 .headers = headers,
                                 .bearer_token = token,
                                 .body = body,
                                 .body_size = body ? strlen(body) : 0,
                                 .timeout_usec = k->limits.request_timeout_usec,
                                 .ca_file = k->cred->ca_file,
                                 .client_cert = k->cred->client_cert_file,
                                 .client_key = k->cred->client_key_file,
                                 .on_data = on_data,
                                 .no_timeout = !!on_data,
                                 .idle_timeout_usec = idle_timeout_usec,
                         },
                         done, userdata, ret);
        if (token)
                explicit_bzero(token, strlen(token));
        if (r < 0)
                return error_message(ret_error, r, "Failed to start %s %s: %s", method, path, strerror(-r));
        return 0;
}

/* "create pods in namespace \"ns\"", "get pods/log \"p\" in namespace \"ns\"",
 * "list nodes at the cluster scope": what RBAC would have to allow. */
static char *describe_access(const char *method, const char *path) {
        _cleanup_free_ char *p = strdup(path ?: ""), *resource = NULL;
        char *segs[16] = {}, *save = NULL, *q, *tok;
        const char *ns = NULL, *name = NULL, *verb, *group = NULL;
        bool watch = false;
        size_t n = 0, i = 0;
        char *out = NULL;

        if (!p)
                return NULL;
        q = strchr(p, '?');
        if (q) {
                *q++ = 0;
                watch = strstr(q, "watch=1") || strstr(q, "watch=true");
        }
        for (tok = strtok_r(p, "/", &save); tok && n < ELEMENTSOF(segs); tok = strtok_r(NULL, "/", &save))
                segs[n++] = tok;

        if (n >= 2 && streq(segs[0], "api"))
                i = 2;
        else if (n >= 3 && streq(segs[0], "apis")) {
                group = segs[1];
                i = 3;
        }
        if (n - i >= 3 && streq(segs[i], "namespaces")) {
                ns = segs[i + 1];
                i += 2;
        }
        if (i >= n)
                return strdup(path);
        if (asprintf(&resource, "%s%s%s%s%s", segs[i], i + 2 < n ? "/" : "", i + 2 < n ? segs[i + 2] : "",
                     group ? "." : "", strempty(group)) < 0)
                return NULL;
        if (i + 1 < n)
                name = segs[i + 1];

        if (streq(method, "GET"))
                verb = name ? "get" : watch ? "watch" : "list";
        else if (streq(method, "POST"))
                verb = "create";
        else if (streq(method, "PUT"))
                verb = "update";
        else if (streq(method, "PATCH"))
                verb = "patch";
        else if (streq(method, "DELETE"))
                verb = name ? "delete" : "deletecollection";
        else
                verb = method;

        if (asprintf(&out, "%s %s%s%s%s %s%s%s", verb, resource, name && !streq(verb, "create") ? " \"" : "",
                     name && !streq(verb, "create") ? name : "", name && !streq(verb, "create") ? "\"" : "",
                     ns ? "in namespace \"" : "at the cluster scope", strempty(ns), ns ? "\"" : "") < 0)
                return NULL;
        return out;
}

/* The message of a Status object, or the start of a non-JSON body. */
static char *status_message(JsonValue *status, const char *raw, size_t raw_size) {
        const char *m = json_get_string(status, "message");
        if (m)
                return strdup(m);
        if (raw && raw_size > 0) {
                size_t n = MIN(raw_size, (size_t) 200);
                char *s = strndup(raw, n);
                if (s)
                        s[strcspn(s, "\r\n")] = 0;
                return s;
        }
        return strdup("no details");
}

static int error_from_status(long status) {
        switch (status) {
        case 400:
        case 422:
                return -EINVAL;
        case 401:
                return -EACCES;
        case 403:
                return -EPERM;
        case 404:
                return -ENOENT;
        case 409:
                return -EEXIST;
        case 410:
                return -ESTALE;
        case 429:
                return -EBUSY;
        default:
                return status >= 200 && status < 300 ? 0 : -EREMOTEIO;
        }
}

static char *status_error_text(const char *method,
                               const char *path,
                               long status,
                               JsonValue *body,
                               const char *raw,
                               size_t raw_size) {
        _cleanup_free_ char *access = describe_access(method, path), *msg = status_message(body, raw, raw_size);
        const char *reason = json_get_string(body, "reason");
        char *out = NULL;
        int r;

        if (!access || !msg)
                return NULL;
        if (status == 403)
                r = asprintf(&out, "forbidden: cannot %s (Kubernetes: %s)", access, msg);
        else if (status == 401)
                r = asprintf(&out, "unauthorized: the API server rejected the credentials to %s (Kubernetes: %s)",
                             access, msg);
        else
                r = asprintf(&out, "%s %s: HTTP %ld%s%s (Kubernetes: %s)", method, path, status, reason ? " " : "",
                             strempty(reason), msg);
        return r < 0 ? NULL : out;
}

/* ---- client ---- */

int kube_client_new(sd_event *e, HttpClient *http, const KubeCredentials *cred, KubeClient **ret) {
        _cleanup_(kube_client_freep) KubeClient *k = NULL;

        if (!e || !http || !cred || !cred->server || !ret)
                return -EINVAL;
        k = calloc(1, sizeof(KubeClient));
        if (!k)
                return -ENOMEM;
        k->event = sd_event_ref(e);
        k->http = http;
        k->cred = kube_credentials_copy(cred);
        if (!k->cred)
                return -ENOMEM;
        /* No trailing slash: paths start with one. */
        for (size_t l = strlen(k->cred->server); l > 0 && k->cred->server[l - 1] == '/'; l--)
                k->cred->server[l - 1] = 0;
        k->limits = (KubeLimits){
                .request_timeout_usec = KUBE_REQUEST_TIMEOUT_USEC,
                .retry_attempts_max = KUBE_RETRY_ATTEMPTS_MAX,
                .retry_deadline_usec = KUBE_RETRY_DEADLINE_USEC,
                .backoff_min_usec = KUBE_BACKOFF_MIN_USEC,
                .backoff_max_usec = KUBE_BACKOFF_MAX_USEC,
                .auth_retry_usec = KUBE_AUTH_RETRY_USEC,
                .watch_timeout_sec = KUBE_WATCH_TIMEOUT_SEC,
        };
        *ret = TAKE_PTR(k);
        return 0;
}

static void kube_call_free(KubeCall *call);

KubeClient *kube_client_free(KubeClient *k) {
        if (!k)
                return NULL;
        while (k->calls)
                kube_call_free(k->calls);
        kube_credentials_free(k->cred);
        sd_event_unref(k->event);
        return mfree(k);
}

void kube_client_set_limits(KubeClient *k, const KubeLimits *l) {
        if (!k || !l)
                return;
#define SET(f) \
        if (l->f > 0) \
        k->limits.f = l->f
        SET(request_timeout_usec);
        SET(retry_attempts_max);
        SET(retry_deadline_usec);
        SET(backoff_min_usec);
        SET(backoff_max_usec);
        SET(auth_retry_usec);
        SET(watch_timeout_sec);
#undef SET
}

const KubeCredentials *kube_client_credentials(KubeClient *k) {
        return k ? k->cred : NULL;
}

static uint64_t backoff_usec(KubeClient *k, unsigned failures) {
        uint64_t d = k->limits.backoff_min_usec;
        for (unsigned i = 1; i < failures && d < k->limits.backoff_max_usec; i++)
                d *= 2;
        return MIN(d, k->limits.backoff_max_usec);
}

static int arm_timer(KubeClient *k,
                     sd_event_source **s,
                     uint64_t delay,
                     sd_event_time_handler_t handler,
                     void *userdata,
                     const char *description) {
        uint64_t now = 0;
        int r;

        r = sd_event_now(k->event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        if (*s) {
                r = sd_event_source_set_time(*s, now + delay);
                if (r < 0)
                        return r;
                return sd_event_source_set_enabled(*s, SD_EVENT_ONESHOT);
        }
        r = sd_event_add_time(k->event, s, CLOCK_MONOTONIC, now + delay, USEC_PER_MSEC, handler, userdata);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(*s, description);
        return 0;
}

/* ---- requests ---- */

static void kube_call_free(KubeCall *call) {
        if (!call)
                return;
        if (call->client)
                LIST_REMOVE(call->client->calls, call);
        http_call_cancel(call->http_call);
        sd_event_source_disable_unref(call->retry_timer);
        json_free(call->result);
        free(call->method);
        free(call->path);
        free(call->content_type);
        free(call->body);
        free(call);
}

static void call_finish(KubeCall *call, int error, long status, JsonValue *body, const char *text) {
        KubeClient *k = call->client;

        /* Out of the client's list first, so the callback may free the client. */
        LIST_REMOVE(k->calls, call);
        call->client = NULL;
        call->http_call = NULL;
        call->result = body;
        call->in_callback = true;
        if (call->cb)
                call->cb(call, error, status, call->result, text, call->userdata);
        kube_call_free(call);
}

static void on_call_http_done(HttpCall *hc, const HttpResult *res, void *userdata);

static int call_attempt(KubeCall *call, char **ret_error) {
        call->attempt++;
        return start_http(call->client, call->method, call->path, call->content_type, call->body, NULL, 0,
                          on_call_http_done, call, &call->http_call, ret_error);
}

static int on_call_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        KubeCall *call = userdata;
        _cleanup_free_ char *err = NULL;
        int r;

        r = call_attempt(call, &err);
        if (r < 0)
                call_finish(call, r, 0, NULL, err ?: strerror(-r));
        return 0;
}

/* Whether another attempt fits, and when. */
static bool call_may_retry(KubeCall *call, uint64_t delay) {
        KubeClient *k = call->client;
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (call->attempt >= k->limits.retry_attempts_max)
                return false;
        return now + delay <= call->first_usec + k->limits.retry_deadline_usec;
}

static uint64_t retry_after_usec(HttpCall *hc) {
        const char *h = http_call_header(hc, "Retry-After");
        char *end = NULL;
        unsigned long v;

        /* Seconds only; the API server never sends an HTTP date here. */
        if (!h)
                return 0;
        errno = 0;
        v = strtoul(h, &end, 10);
        if (errno != 0 || end == h)
                return 0;
        return MIN((uint64_t) v * USEC_PER_SEC, RETRY_AFTER_MAX_USEC);
}

static void on_call_http_done(HttpCall *hc, const HttpResult *res, void *userdata) {
        KubeCall *call = userdata;
        _cleanup_json_ JsonValue *v = NULL;
        _cleanup_free_ char *text = NULL;
        bool retry;
        int r;

        call->http_call = NULL;

        /* Transient: no answer (except TLS problems, which another try does not fix),
         * throttling, server errors. */
        if (res->error < 0)
                retry = res->error != -EPROTO && res->error != -ENOMEM && res->error != -EINVAL;
        else
                retry = res->status == 429 || res->status >= 500;
        if (retry) {
                uint64_t delay = backoff_usec(call->client, call->attempt);
                if (res->error == 0)
                        delay = MAX(delay, retry_after_usec(hc));
                if (call_may_retry(call, delay)) {
                        log_debug("Kubernetes %s %s: %s, retrying in %" PRIu64 " ms", call->method, call->path,
                                  res->error < 0 ? strna(res->error_text) : "server error", delay / USEC_PER_MSEC);
                        r = arm_timer(call->client, &call->retry_timer, delay, on_call_retry, call, "kube-retry");
                        if (r >= 0)
                                return;
                }
        }

        if (res->error < 0) {
                call_finish(call, res->error, 0, NULL, res->error_text);
                return;
        }

        if (res->size > 0) {
                r = json_parse(res->body, res->size, 0, &v, NULL);
                if (r < 0 && res->status >= 200 && res->status < 300) {
                        _cleanup_free_ char *t = NULL;
                        if (asprintf(&t, "%s %s: the answer (HTTP %ld) is not JSON", call->method, call->path,
                                     res->status) < 0)
                                t = NULL;
                        call_finish(call, -EBADMSG, res->status, NULL, t ?: "answer is not JSON");
                        return;
                }
        }
        r = error_from_status(res->status);
        if (r < 0) {
                text = status_error_text(call->method, call->path, res->status, v, res->body, res->size);
                call_finish(call, r, res->status, TAKE_PTR(v), text ?: "API error");
                return;
        }
        call_finish(call, 0, res->status, TAKE_PTR(v), NULL);
}

int kube_request(KubeClient *k,
                 const char *method,
                 const char *path_and_query,
                 const char *content_type,
                 const char *body,
                 kube_done_cb_t cb,
                 void *userdata,
                 KubeCall **ret) {
        KubeCall *call = NULL;
        int r;

        if (!k || !method || !path_and_query || path_and_query[0] != '/')
                return -EINVAL;

        call = calloc(1, sizeof(KubeCall));
        if (!call)
                return -ENOMEM;
        call->cb = cb;
        call->userdata = userdata;
        call->method = strdup(method);
        call->path = strdup(path_and_query);
        if (!call->method || !call->path || free_and_strdup(&call->content_type, content_type) < 0 ||
            free_and_strdup(&call->body, body) < 0) {
                kube_call_free(call);
                return -ENOMEM;
        }
        call->client = k;
        LIST_PREPEND(k->calls, call);
        call->first_usec = now_usec(CLOCK_MONOTONIC);

        r = call_attempt(call, NULL);
        if (r < 0) {
                kube_call_free(call);
                return r;
        }
        if (ret)
                *ret = call;
        return 0;
}

KubeCall *kube_call_cancel(KubeCall *call) {
        if (!call || call->in_callback)
                return NULL;
        kube_call_free(call);
        return NULL;
}

JsonValue *kube_call_take_body(KubeCall *call) {
        return call && call->in_callback ? TAKE_PTR(call->result) : NULL;
}

/* ---- watches ---- */

static const char *const watch_event_names[_KUBE_WATCH_EVENT_MAX] = {
        [KUBE_WATCH_ADDED] = "ADDED",   [KUBE_WATCH_MODIFIED] = "MODIFIED", [KUBE_WATCH_DELETED] = "DELETED",
        [KUBE_WATCH_SYNCED] = "SYNCED", [KUBE_WATCH_ERROR] = "ERROR",       [KUBE_WATCH_BOOKMARK] = "BOOKMARK",
};

const char *kube_watch_event_type_to_string(KubeWatchEventType t) {
        return (unsigned) t < _KUBE_WATCH_EVENT_MAX ? watch_event_names[t] : NULL;
}

int kube_watch_event_parse(JsonValue *v, KubeWatchEvent *ret) {
        KubeWatchEvent e = {};
        const char *type = json_get_string(v, "type");
        JsonValue *object = json_get(v, "object");

        if (!type || !json_is_object(object))
                return -EBADMSG;
        if (streq(type, "ADDED"))
                e.type = KUBE_WATCH_ADDED;
        else if (streq(type, "MODIFIED"))
                e.type = KUBE_WATCH_MODIFIED;
        else if (streq(type, "DELETED"))
                e.type = KUBE_WATCH_DELETED;
        else if (streq(type, "BOOKMARK"))
                e.type = KUBE_WATCH_BOOKMARK;
        else if (streq(type, "ERROR"))
                e.type = KUBE_WATCH_ERROR;
        else
                return -EBADMSG;

        e.object = object;
        e.resource_version = json_get_string(json_get(object, "metadata"), "resourceVersion");
        if (e.type == KUBE_WATCH_ERROR) {
                int64_t code = 0;
                if (json_int64(json_get(object, "code"), &code) >= 0)
                        e.status_code = code;
                e.message = json_get_string(object, "message");
        }
        *ret = e;
        return 0;
}

static void watch_destroy(KubeWatch *w) {
        kube_call_cancel(w->list_call);
        http_call_cancel(w->watch_call);
        sd_event_source_disable_unref(w->timer);
        json_stream_free(w->stream);
        free(w->collection);
        free(w->label_selector);
        free(w->field_selector);
        free(w->resource_version);
        free(w->error_body);
        free(w);
}

/* Every entry point brackets itself with these; leave() returns true when the watch
 * was freed meanwhile (and destroys it when this was the outermost entry). */
static void watch_enter(KubeWatch *w) {
        w->dispatching++;
}
static bool watch_leave(KubeWatch *w) {
        bool freed = w->freed;
        if (--w->dispatching == 0 && freed)
                watch_destroy(w);
        return freed;
}

static void watch_emit(KubeWatch *w, KubeWatchEventType type, JsonValue *object, int error, const char *text) {
        if (w->freed)
                return;
        w->cb(w, type, object, error, text, w->userdata);
}

static int watch_start_list(KubeWatch *w);
static int watch_start_watch(KubeWatch *w);

static int on_watch_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KubeWatch *w = userdata;

        watch_enter(w);
        if (w->action == WATCH_DO_LIST)
                (void) watch_start_list(w);
        else
                (void) watch_start_watch(w);
        (void) watch_leave(w);
        return 0;
}

static void watch_schedule(KubeWatch *w, WatchAction action, uint64_t delay) {
        int r;

        w->action = action;
        r = arm_timer(w->client, &w->timer, delay, on_watch_timer, w, "kube-watch");
        if (r < 0)
                /* Without a timer the watch would silently stop; say so. */
                watch_emit(w, KUBE_WATCH_ERROR, NULL, r, "Failed to arm the watch retry timer");
}

static char *watch_path(KubeWatch *w, bool watch) {
        _cleanup_free_ char *p = strdup(w->collection);
        char timeout[16];

        if (!p)
                return NULL;
        if (kube_path_append_query(&p, "labelSelector", w->label_selector) < 0 ||
            kube_path_append_query(&p, "fieldSelector", w->field_selector) < 0)
                return NULL;
        if (watch) {
                (void) snprintf(timeout, sizeof(timeout), "%u", w->client->limits.watch_timeout_sec);
                if (kube_path_append_query(&p, "watch", "1") < 0 ||
                    kube_path_append_query(&p, "resourceVersion", w->resource_version) < 0 ||
                    kube_path_append_query(&p, "allowWatchBookmarks", "true") < 0 ||
                    kube_path_append_query(&p, "timeoutSeconds", timeout) < 0)
                        return NULL;
        }
        return TAKE_PTR(p);
}

static void on_list_done(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        KubeWatch *w = userdata;
        JsonValue *items;
        const char *rv;

        w->list_call = NULL;
        watch_enter(w);

        if (error < 0) {
                bool auth = IS_AUTH_ERROR(error);
                w->failures++;
                watch_emit(w, KUBE_WATCH_ERROR, NULL, error, text);
                if (!w->freed)
                        watch_schedule(w, WATCH_DO_LIST,
                                       auth ? w->client->limits.auth_retry_usec : backoff_usec(w->client, w->failures));
                goto out;
        }

        items = json_get(body, "items");
        rv = json_get_string(json_get(body, "metadata"), "resourceVersion");
        if (!rv || (items && !json_is_array(items))) {
                w->failures++;
                watch_emit(w, KUBE_WATCH_ERROR, NULL, -EBADMSG, "LIST answer without resourceVersion or items");
                if (!w->freed)
                        watch_schedule(w, WATCH_DO_LIST, backoff_usec(w->client, w->failures));
                goto out;
        }
        if (free_and_strdup(&w->resource_version, rv) < 0) {
                watch_schedule(w, WATCH_DO_LIST, backoff_usec(w->client, ++w->failures));
                goto out;
        }

        for (size_t i = 0; i < json_length(items) && !w->freed; i++) {
                JsonValue *item = json_array_at(items, i);
                if (json_is_object(item))
                        watch_emit(w, KUBE_WATCH_ADDED, item, 0, NULL);
        }
        watch_emit(w, KUBE_WATCH_SYNCED, NULL, 0, NULL);
        if (!w->freed)
                (void) watch_start_watch(w);
out:
        (void) watch_leave(w);
}

static int watch_start_list(KubeWatch *w) {
        _cleanup_free_ char *p = watch_path(w, false);
        int r;

        if (!p)
                r = -ENOMEM;
        else
                r = kube_request(w->client, "GET", p, NULL, NULL, on_list_done, w, &w->list_call);
        if (r < 0) {
                w->failures++;
                watch_emit(w, KUBE_WATCH_ERROR, NULL, r, "Failed to start the LIST");
                if (!w->freed)
                        watch_schedule(w, WATCH_DO_LIST, backoff_usec(w->client, w->failures));
        }
        return r;
}

/* Collects the start of an error answer (a Status object, mostly) for the error text:
 * at most ERROR_BODY_MAX bytes, NUL-terminated. */
static int error_body_append(char **body, size_t *size, const void *data, size_t n) {
        char *b;

        n = MIN(n, ERROR_BODY_MAX - *size);
        b = realloc(*body, *size + n + 1);
        if (!b)
                return -ENOMEM;
        memcpy(b + *size, data, n);
        *size += n;
        b[*size] = 0;
        *body = b;
        return 0;
}

static int watch_handle_value(KubeWatch *w, JsonValue *v) {
        KubeWatchEvent e;

        if (kube_watch_event_parse(v, &e) < 0)
                return -EBADMSG;
        w->watch_events++;
        if (e.type == KUBE_WATCH_ERROR) {
                log_debug("Kubernetes watch %s: ERROR event, code %" PRIi64 ": %s", w->collection, e.status_code,
                          strna(e.message));
                /* 410: our resourceVersion is too old to resume from: relist. */
                return e.status_code == 410 ? -ESTALE : -EREMOTEIO;
        }
        if (e.resource_version && free_and_strdup(&w->resource_version, e.resource_version) < 0)
                return -ENOMEM;
        if (e.type == KUBE_WATCH_BOOKMARK)
                return 0;
        watch_emit(w, e.type, e.object, 0, NULL);
        return w->freed ? -ECANCELED : 0;
}

static int on_watch_value(JsonValue *v, void *userdata) {
        int r = watch_handle_value(userdata, v);
        json_free(v);
        return r;
}

static int on_watch_data(HttpCall *hc, long status, const void *data, size_t size, void *userdata) {
        KubeWatch *w = userdata;
        int r;

        w->watch_status = status;
        if (status != 200) {
                /* An error answer: keep (the start of) its Status for the text. */
                return error_body_append(&w->error_body, &w->error_size, data, size);
        }

        watch_enter(w);
        r = json_stream_feed(w->stream, data, size, on_watch_value, w);
        if (watch_leave(w))
                return -ECANCELED;
        return r;
}

static void on_watch_http_done(HttpCall *hc, const HttpResult *res, void *userdata) {
        KubeWatch *w = userdata;
        KubeClient *k = w->client;

        w->watch_call = NULL;
        watch_enter(w);

        if (res->error == -ESTALE || res->status == 410) {
                /* Too old: everything since may be lost, so list again (the consumer
                 * sees SYNCED again and can find what vanished). */
                log_debug("Kubernetes watch %s: resourceVersion %s expired, relisting", w->collection,
                          strna(w->resource_version));
                w->failures = 0;
                watch_schedule(w, WATCH_DO_LIST, 0);
        } else if (res->error < 0) {
                w->failures++;
                log_debug("Kubernetes watch %s interrupted: %s", w->collection, strna(res->error_text));
                watch_schedule(w, WATCH_DO_WATCH, backoff_usec(k, w->failures));
        } else if (res->status == 200) {
                /* The normal end (timeoutSeconds): resume from the last resourceVersion,
                 * at once unless the server keeps closing streams at once. */
                bool quick = now_usec(CLOCK_MONOTONIC) - w->watch_started_usec < USEC_PER_SEC && w->watch_events == 0;
                if (quick)
                        w->failures++;
                else
                        w->failures = 0;
                watch_schedule(w, WATCH_DO_WATCH, quick ? backoff_usec(k, w->failures) : 0);
        } else {
                _cleanup_json_ JsonValue *st = NULL;
                _cleanup_free_ char *path = watch_path(w, true), *text = NULL;
                int r = error_from_status(res->status);

                (void) json_parse(strempty(w->error_body), w->error_size, 0, &st, NULL);
                text = status_error_text("GET", strempty(path), res->status, st, w->error_body, w->error_size);
                w->failures++;
                if (IS_AUTH_ERROR(r)) {
                        watch_emit(w, KUBE_WATCH_ERROR, NULL, r, text ?: "access denied");
                        if (!w->freed)
                                watch_schedule(w, WATCH_DO_LIST, k->limits.auth_retry_usec);
                } else if (res->status == 429 || res->status >= 500) {
                        log_debug("Kubernetes watch %s: %s", w->collection, strna(text));
                        watch_schedule(w, WATCH_DO_WATCH, backoff_usec(k, w->failures));
                } else {
                        log_debug("Kubernetes watch %s: %s, relisting", w->collection, strna(text));
                        watch_schedule(w, WATCH_DO_LIST, backoff_usec(k, w->failures));
                }
        }

        (void) watch_leave(w);
}

static int watch_start_watch(KubeWatch *w) {
        _cleanup_free_ char *p = watch_path(w, true), *err = NULL;
        int r;

        w->stream = json_stream_free(w->stream);
        w->stream = json_stream_new(WATCH_VALUE_MAX, 0);
        w->error_body = mfree(w->error_body);
        w->error_size = 0;
        w->watch_status = 0;
        w->watch_events = 0;
        w->watch_started_usec = now_usec(CLOCK_MONOTONIC);
        if (!p || !w->stream)
                r = -ENOMEM;
        else
                r = start_http(w->client, "GET", p, NULL, NULL, on_watch_data,
                               w->client->limits.watch_timeout_sec * USEC_PER_SEC + WATCH_IDLE_GRACE_USEC,
                               on_watch_http_done, w, &w->watch_call, &err);
        if (r < 0) {
                w->failures++;
                watch_emit(w, KUBE_WATCH_ERROR, NULL, r, err ?: "Failed to start the WATCH");
                if (!w->freed)
                        watch_schedule(w, WATCH_DO_WATCH, backoff_usec(w->client, w->failures));
        }
        return r;
}

int kube_watch_new(KubeClient *k,
                   const char *collection_path,
                   const char *label_selector,
                   const char *field_selector,
                   kube_watch_cb_t cb,
                   void *userdata,
                   KubeWatch **ret) {
        KubeWatch *w = NULL;
        int r;

        if (!k || !collection_path || collection_path[0] != '/' || strchr(collection_path, '?') || !cb || !ret)
                return -EINVAL;
        w = calloc(1, sizeof(KubeWatch));
        if (!w)
                return -ENOMEM;
        w->client = k;
        w->cb = cb;
        w->userdata = userdata;
        w->collection = strdup(collection_path);
        if (!w->collection || free_and_strdup(&w->label_selector, label_selector) < 0 ||
            free_and_strdup(&w->field_selector, field_selector) < 0) {
                watch_destroy(w);
                return -ENOMEM;
        }
        /* The LIST starts from the event loop, so the first events never arrive before
         * the caller has the handle. */
        w->action = WATCH_DO_LIST;
        r = arm_timer(k, &w->timer, 0, on_watch_timer, w, "kube-watch");
        if (r < 0) {
                watch_destroy(w);
                return r;
        }
        *ret = w;
        return 0;
}

KubeWatch *kube_watch_free(KubeWatch *w) {
        if (!w)
                return NULL;
        if (w->dispatching > 0) {
                /* Stop everything now; the memory goes when the entry point leaves. */
                w->list_call = kube_call_cancel(w->list_call);
                w->watch_call = http_call_cancel(w->watch_call);
                if (w->timer)
                        (void) sd_event_source_set_enabled(w->timer, SD_EVENT_OFF);
                w->freed = true;
                return NULL;
        }
        watch_destroy(w);
        return NULL;
}

const char *kube_watch_resource_version(KubeWatch *w) {
        return w ? w->resource_version : NULL;
}

/* ---- log follow ---- */

static void log_destroy(KubeLog *l) {
        http_call_cancel(l->call);
        free(l->path);
        free(l->buf);
        free(l->error_body);
        free(l);
}

static bool log_leave(KubeLog *l) {
        bool freed = l->freed;
        if (--l->dispatching == 0 && freed)
                log_destroy(l);
        return freed;
}

/* One line (or piece of one) without its newline; text[size] may be overwritten. */
static void log_deliver(KubeLog *l, char *text, size_t size, bool piece) {
        uint64_t ts = 0;

        if (l->continuation)
                ts = l->continuation_usec;
        else {
                char *sp = memchr(text, ' ', size);
                if (sp && kube_parse_timestamp(text, (size_t) (sp - text), &ts) >= 0) {
                        size -= (size_t) (sp + 1 - text);
                        text = sp + 1;
                } else
                        ts = 0;
        }
        l->continuation = piece;
        l->continuation_usec = ts;

        if (ts > 0 && ts < l->since_usec)
                return;
        char saved = text[size];
        text[size] = 0;
        l->line_cb(l, ts, text, size, l->userdata);
        if (!l->freed)
                text[size] = saved;
}

/* The length of the "<timestamp> " in front of a line (0 for a continuation). */
static size_t log_prefix_len(KubeLog *l, const char *text, size_t size) {
        const char *sp;
        uint64_t ts;

        if (l->continuation)
                return 0;
        sp = memchr(text, ' ', MIN(size, (size_t) 64));
        if (!sp || kube_parse_timestamp(text, (size_t) (sp - text), &ts) < 0)
                return 0;
        return (size_t) (sp + 1 - text);
}

static int on_log_data(HttpCall *hc, long status, const void *data, size_t size, void *userdata) {
        KubeLog *l = userdata;
        size_t start = 0;

        l->status = status;
        if (status != 200) {
                return error_body_append(&l->error_body, &l->error_size, data, size);
        }

        if (l->size + size + 1 > l->allocated) {
                size_t a = MAX(l->allocated * 2, l->size + size + 1);
                char *b = realloc(l->buf, a);
                if (!b)
                        return -ENOMEM;
                l->buf = b;
                l->allocated = a;
        }
        memcpy(l->buf + l->size, data, size);
        l->size += size;

        l->dispatching++;
        for (;;) {
                char *nl = memchr(l->buf + start, '\n', l->size - start);
                size_t n = nl ? (size_t) (nl - (l->buf + start)) : l->size - start;

                /* The limit is on the text, without the timestamp in front. */
                size_t limit = KUBE_LOG_LINE_MAX + log_prefix_len(l, l->buf + start, l->size - start);

                if (!nl && n < limit)
                        break;
                if (n > limit) {
                        /* Too long: a piece now, the rest continues it. */
                        log_deliver(l, l->buf + start, limit, true);
                        start += limit;
                } else {
                        log_deliver(l, l->buf + start, n, !nl);
                        start += n + !!nl;
                }
                if (l->freed)
                        break;
        }
        if (log_leave(l))
                return -ECANCELED;
        memmove(l->buf, l->buf + start, l->size - start);
        l->size -= start;
        return 0;
}

static void on_log_http_done(HttpCall *hc, const HttpResult *res, void *userdata) {
        KubeLog *l = userdata;
        _cleanup_free_ char *text = NULL;

        l->call = NULL;
        l->dispatching++;

        if (res->error == 0 && res->status == 200) {
                /* A last line without a newline. */
                if (l->size > 0) {
                        if (l->size + 1 > l->allocated) {
                                char *b = realloc(l->buf, l->size + 1);
                                if (b) {
                                        l->buf = b;
                                        l->allocated = l->size + 1;
                                }
                        }
                        if (l->size + 1 <= l->allocated)
                                log_deliver(l, l->buf, l->size, false);
                        l->size = 0;
                }
                if (!l->freed)
                        l->end_cb(l, 0, NULL, l->userdata);
        } else if (res->error < 0) {
                if (res->error != -ECANCELED)
                        l->end_cb(l, res->error, res->error_text, l->userdata);
        } else {
                _cleanup_json_ JsonValue *st = NULL;
                const char *m;
                int r = error_from_status(res->status);

                (void) json_parse(strempty(l->error_body), l->error_size, 0, &st, NULL);
                m = json_get_string(st, "message") ?: strempty(l->error_body);
                if (res->status == 400 &&
                    (strstr(m, "waiting to start") || strstr(m, "PodInitializing") || strstr(m, "ContainerCreating")))
                        r = -EAGAIN;
                text = status_error_text("GET", l->path, res->status, st, l->error_body, l->error_size);
                l->end_cb(l, r, text ?: "log request failed", l->userdata);
        }

        (void) log_leave(l);
}

int kube_log_follow(KubeClient *k,
                    const char *namespace,
                    const char *pod,
                    const char *container,
                    uint64_t since_usec,
                    kube_log_line_cb_t line_cb,
                    kube_log_end_cb_t end_cb,
                    void *userdata,
                    KubeLog **ret) {
        _cleanup_free_ char *ns_e = NULL, *pod_e = NULL;
        KubeLog *l = NULL;
        int r;

        if (!k || isempty(namespace) || isempty(pod) || !line_cb || !end_cb || !ret)
                return -EINVAL;

        l = calloc(1, sizeof(KubeLog));
        if (!l)
                return -ENOMEM;
        l->client = k;
        l->line_cb = line_cb;
        l->end_cb = end_cb;
        l->userdata = userdata;
        l->since_usec = since_usec;

        ns_e = kube_escape(namespace);
        pod_e = kube_escape(pod);
        if (!ns_e || !pod_e || asprintf(&l->path, "/api/v1/namespaces/%s/pods/%s/log", ns_e, pod_e) < 0) {
                l->path = NULL;
                log_destroy(l);
                return -ENOMEM;
        }
        r = kube_path_append_query(&l->path, "container", container);
        if (r >= 0)
                r = kube_path_append_query(&l->path, "follow", "true");
        if (r >= 0)
                r = kube_path_append_query(&l->path, "timestamps", "true");
        if (r >= 0 && since_usec > 0) {
                char since[64];
                struct tm tm;
                time_t t = (time_t) (since_usec / USEC_PER_SEC);
                /* Whole seconds, which every API server version accepts; the lines
                 * before since_usec within that second are dropped in log_deliver(). */
                if (!gmtime_r(&t, &tm) || strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                        r = -EINVAL;
                else
                        r = kube_path_append_query(&l->path, "sinceTime", since);
        }
        if (r >= 0)
                r = start_http(k, "GET", l->path, NULL, NULL, on_log_data, 0, on_log_http_done, l, &l->call, NULL);
        if (r < 0) {
                log_destroy(l);
                return r;
        }
        *ret = l;
        return 0;
}

KubeLog *kube_log_free(KubeLog *l) {
        if (!l)
                return NULL;
        l->call = http_call_cancel(l->call);
        if (l->dispatching > 0) {
                l->freed = true;
                return NULL;
        }
        log_destroy(l);
        return NULL;
}
