/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The HTTP(S) client on the daemon's event loop. One libcurl multi handle per
 * HttpClient; libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION → one
 * sd-event io source per socket) and when to wake it up (CURLMOPT_TIMERFUNCTION → one
 * sd-event time source), and every wake-up is handed back with
 * curl_multi_socket_action(). Finished transfers are collected with
 * curl_multi_info_read() and reported to their callbacks from there, so a callback
 * always runs from the event loop: http_request() only adds the easy handle, and
 * libcurl's first action comes from the timer it asks for (timeout 0 → next loop
 * iteration). TLS verification is always on; only http and https are allowed, also for
 * redirects (which are not followed). The response is collected in memory up to a
 * limit, or handed to an on_data callback piece by piece (streaming; that callback runs
 * inside curl_multi_socket_action(), where libcurl forbids removing handles, so a
 * cancel from there only marks the call and aborts it from the write callback). A
 * client freed from inside one of its callbacks is torn down when that callback
 * returns. libcurl is loaded by the first http_client_new() (dlopen-curl.h): a daemon
 * that makes no HTTP client never maps it. */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include "dlopen-curl.h"
#include "list.h"
#include "http.h"
#include "log.h"

#define HTTP_TIMEOUT_DEFAULT_USEC (30 * USEC_PER_SEC)
#define HTTP_MAX_RESPONSE_DEFAULT ((size_t) 16U * 1024U * 1024U)

typedef struct HttpSocket HttpSocket;

struct HttpSocket {
        HttpClient *client;
        curl_socket_t fd;
        sd_event_source *source;
        HttpSocket *prev, *next;
};

struct HttpCall {
        HttpClient *client;
        CURL *easy;
        struct curl_slist *headers;
        char *body; /* owned copy of the request body */

        char *response;
        size_t response_size;
        size_t response_allocated;
        size_t max_response_size;
        bool too_big;

        char error_buffer[CURL_ERROR_SIZE];

        http_done_cb_t callback;
        http_data_cb_t on_data;
        void *userdata;
        bool in_callback;
        bool cancelled; /* cancelled inside libcurl: freed when libcurl reports it done */
        /* Our own idle timer: libcurl's low-speed check averages over seconds and cannot
         * tell "quiet for N s" from "slow". */
        sd_event_source *idle_timer;
        uint64_t idle_timeout_usec;
        int data_error; /* on_data's error */

        HttpCall *prev, *next;
};

struct HttpClient {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        HttpSocket *sockets;
        HttpCall *calls;
        unsigned n_pending;

        unsigned dispatching; /* nesting depth of process_done() and socket actions */
        unsigned in_curl;     /* inside curl_multi_socket_action(): no handle removal */
        bool freed;           /* http_client_free() was called while dispatching */
};

static int curl_global_initialized = 0;

static HttpSocket *http_socket_free(HttpSocket *s) {
        if (!s)
                return NULL;
        if (s->client)
                LIST_REMOVE(s->client->sockets, s);
        sd_event_source_disable_unref(s->source);
        return mfree(s);
}

/* Detaches the call from curl and the client and frees it; no callback. */
static HttpCall *http_call_free(HttpCall *call) {
        if (!call)
                return NULL;

        if (call->client) {
                if (call->easy)
                        (void) sym_curl_multi_remove_handle(call->client->multi, call->easy);
                LIST_REMOVE(call->client->calls, call);
                call->client->n_pending--;
        }
        if (call->easy)
                sym_curl_easy_cleanup(call->easy);
        sd_event_source_disable_unref(call->idle_timer);
        /* They may hold a token. */
        for (struct curl_slist *h = call->headers; h; h = h->next)
                explicit_bzero(h->data, strlen(h->data));
        sym_curl_slist_free_all(call->headers);
        free(call->body);
        free(call->response);
        return mfree(call);
}

static int curl_global(void) {
        int r;

        /* Not thread-safe, but the daemon has one thread; curl_global_init is
         * reference-counted and never undone here (it is process-wide state). */
        if (curl_global_initialized)
                return 0;
        r = dlopen_curl();
        if (r < 0)
                return r;
        if (sym_curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -EIO;
        curl_global_initialized = 1;
        return 0;
}

static int errno_from_curl(CURLcode code, long os_errno, bool too_big) {
        switch (code) {
        case CURLE_OK:
                return 0;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
                switch (os_errno) {
                case ECONNREFUSED:
                case ENOENT: /* unix socket path that nothing listens on */
                        return -ECONNREFUSED;
                case EHOSTUNREACH:
                case ENETUNREACH:
                case EADDRNOTAVAIL:
                        return -EHOSTUNREACH;
                case ETIMEDOUT:
                        return -ETIMEDOUT;
                default:
                        return -EIO;
                }
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_FILESIZE_EXCEEDED:
                return -E2BIG;
        case CURLE_WRITE_ERROR:
                return too_big ? -E2BIG : -EIO;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_SHUTDOWN_FAILED:
        case CURLE_SSL_ENGINE_NOTFOUND:
        case CURLE_SSL_ENGINE_SETFAILED:
        case CURLE_SSL_ENGINE_INITFAILED:
        case CURLE_SSL_CLIENTCERT:
        case CURLE_USE_SSL_FAILED:
                return -EPROTO;
        default:
                return too_big ? -E2BIG : -EIO;
        }
}

static void process_done(HttpClient *c);
static void client_destroy(HttpClient *c);

static void socket_action(HttpClient *c, curl_socket_t fd, int mask) {
        int running = 0;

        c->dispatching++;
        c->in_curl++;
        CURLMcode m = sym_curl_multi_socket_action(c->multi, fd, mask, &running);
        c->in_curl--;
        if (m != CURLM_OK)
                log_debug("curl_multi_socket_action(%d) failed: %s", (int) fd, sym_curl_multi_strerror(m));
        if (!c->freed)
                process_done(c);
        /* Calls cancelled from inside libcurl that it did not finish yet (no more data
         * arrived for them): out of libcurl now, they can go. */
        for (HttpCall *call = c->calls, *next; !c->freed && call; call = next) {
                next = call->next;
                if (call->cancelled)
                        http_call_free(call);
        }
        c->dispatching--;
        if (c->freed && c->dispatching == 0)
                client_destroy(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HttpClient *c = userdata;
        int mask = 0;

        if (revents & EPOLLIN)
                mask |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                mask |= CURL_CSELECT_ERR;

        socket_action(c, fd, mask);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        socket_action(userdata, CURL_SOCKET_TIMEOUT, 0);
        return 0;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        HttpClient *c = userp;
        HttpSocket *s = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (s) {
                        (void) sym_curl_multi_assign(c->multi, fd, NULL);
                        http_socket_free(s);
                }
                return 0;
        }

        if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
                events |= EPOLLIN;
        if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
                events |= EPOLLOUT;

        if (s) {
                r = sd_event_source_set_io_events(s->source, events);
                if (r < 0) {
                        log_debug_errno(r, "Failed to change events of HTTP socket %d: %m", fd);
                        return -1;
                }
                return 0;
        }

        s = calloc(1, sizeof(HttpSocket));
        if (!s)
                return -1;
        s->fd = fd;
        r = sd_event_add_io(c->event, &s->source, fd, events, on_io, c);
        if (r < 0) {
                log_debug_errno(r, "Failed to watch HTTP socket %d: %m", fd);
                free(s);
                return -1;
        }
        (void) sd_event_source_set_description(s->source, "http-socket");
        s->client = c;
        LIST_PREPEND(c->sockets, s);
        if (sym_curl_multi_assign(c->multi, fd, s) != CURLM_OK) {
                http_socket_free(s);
                return -1;
        }
        return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        HttpClient *c = userp;
        uint64_t when = 0;
        int r;

        if (timeout_ms < 0) {
                if (c->timer)
                        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
                return 0;
        }

        /* Never call curl_multi_socket_action() from here (libcurl forbids it): even a
         * 0 timeout only arms the timer, which also keeps callbacks out of
         * http_request(). */
        if (timeout_ms > 0) {
                r = sd_event_now(c->event, CLOCK_MONOTONIC, &when);
                if (r < 0)
                        return -1;
                when += (uint64_t) timeout_ms * USEC_PER_MSEC;
        }

        if (!c->timer) {
                r = sd_event_add_time(c->event, &c->timer, CLOCK_MONOTONIC, when, USEC_PER_MSEC, on_timer, c);
                if (r < 0) {
                        log_debug_errno(r, "Failed to add HTTP timer: %m");
                        return -1;
                }
                (void) sd_event_source_set_description(c->timer, "http-timer");
                return 0;
        }

        r = sd_event_source_set_time(c->timer, when);
        if (r < 0)
                return -1;
        r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                return -1;
        return 0;
}

static void client_destroy(HttpClient *c) {
        c->freed = true;
        while (c->calls)
                http_call_free(c->calls);

        /* Cleaning up the multi handle may still report sockets to remove. */
        if (c->multi)
                sym_curl_multi_cleanup(c->multi);
        c->multi = NULL;
        while (c->sockets)
                http_socket_free(c->sockets);
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c);
}

static void finish_call(HttpCall *call, CURLcode code) {
        HttpClient *c = call->client;
        long status = 0, os_errno = 0;
        int error;

        (void) sym_curl_easy_getinfo(call->easy, CURLINFO_OS_ERRNO, &os_errno);
        error = errno_from_curl(code, os_errno, call->too_big);
        if (call->data_error < 0)
                error = call->data_error;
        if (error == 0)
                (void) sym_curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);

        /* Out of curl and out of the pending list before the callback runs, so the
         * callback may start new calls or cancel others freely. */
        (void) sym_curl_multi_remove_handle(c->multi, call->easy);
        LIST_REMOVE(c->calls, call);
        c->n_pending--;
        call->client = NULL;

        if (call->callback && !call->cancelled) {
                char text[CURL_ERROR_SIZE + 64];
                const char *error_text = NULL;

                if (call->data_error < 0)
                        (void) snprintf(text, sizeof(text), "Aborted while receiving the body: %s",
                                        strerror(-call->data_error));
                else if (error == -E2BIG)
                        (void) snprintf(text, sizeof(text), "Response larger than %zu bytes", call->max_response_size);
                else if (error < 0)
                        (void) snprintf(text, sizeof(text), "%s",
                                        call->error_buffer[0] ? call->error_buffer : sym_curl_easy_strerror(code));
                if (error < 0)
                        error_text = text;

                bool collected = error == 0 && !call->on_data;
                HttpResult result = {
                        .error = error,
                        .status = status,
                        .body = collected ? strempty(call->response) : NULL,
                        .size = collected ? call->response_size : 0,
                        .error_text = error_text,
                };

                call->in_callback = true;
                call->callback(call, &result, call->userdata);
        }

        http_call_free(call);
}

static void process_done(HttpClient *c) {
        CURLMsg *msg;
        int left = 0;

        c->dispatching++;
        while (!c->freed && (msg = sym_curl_multi_info_read(c->multi, &left))) {
                HttpCall *call = NULL;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                if (sym_curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &call) != CURLE_OK || !call)
                        continue;
                finish_call(call, msg->data.result);
        }
        c->dispatching--;

        if (c->freed && c->dispatching == 0)
                client_destroy(c);
}

int http_client_new(sd_event *e, HttpClient **ret) {
        HttpClient *c = NULL;
        int r;

        if (!e || !ret)
                return -EINVAL;

        r = curl_global();
        if (r < 0)
                return r;

        c = calloc(1, sizeof(HttpClient));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);

        c->multi = sym_curl_multi_init();
        if (!c->multi) {
                client_destroy(c);
                return -ENOMEM;
        }
        if (sym_curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK ||
            sym_curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
            sym_curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
            sym_curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK) {
                client_destroy(c);
                return -EIO;
        }

        *ret = c;
        return 0;
}

HttpClient *http_client_free(HttpClient *c) {
        if (!c)
                return NULL;

        if (c->dispatching > 0) {
                /* Called from a callback: cancel everything now, tear down once the
                 * dispatch loop unwinds (it still uses c). Inside libcurl the calls can
                 * only be silenced; they are freed with the client. */
                if (c->in_curl > 0)
                        for (HttpCall *call = c->calls; call; call = call->next)
                                call->cancelled = true;
                else
                        while (c->calls)
                                http_call_free(c->calls);
                if (c->timer)
                        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
                c->freed = true;
                return NULL;
        }

        client_destroy(c);
        return NULL;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata) {
        HttpCall *call = userdata;
        size_t n = size * nmemb;

        if (call->cancelled)
                return 0;
        if (call->idle_timer && call->client) {
                uint64_t now = 0;
                if (sd_event_now(call->client->event, CLOCK_MONOTONIC, &now) >= 0)
                        (void) sd_event_source_set_time(call->idle_timer, now + call->idle_timeout_usec);
        }
        if (call->on_data) {
                long status = 0;
                int r;

                (void) sym_curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
                r = call->on_data(call, status, data, n, call->userdata);
                if (call->cancelled)
                        return 0;
                if (r < 0) {
                        call->data_error = r;
                        return 0;
                }
                return n;
        }

        if (n > call->max_response_size - call->response_size) {
                call->too_big = true;
                return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
        }

        if (call->response_size + n + 1 > call->response_allocated) {
                size_t a = MAX(call->response_allocated * 2, call->response_size + n + 1);
                a = MAX(a, (size_t) 4096);
                a = MIN(a, call->max_response_size + 1);
                char *p = realloc(call->response, a);
                if (!p)
                        return 0;
                call->response = p;
                call->response_allocated = a;
        }

        memcpy(call->response + call->response_size, data, n);
        call->response_size += n;
        call->response[call->response_size] = 0;
        return n;
}

static bool url_is_http(const char *url) {
        CURLU *u = sym_curl_url();
        char *scheme = NULL;
        bool ok = false;

        if (!u)
                return false;
        if (sym_curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            sym_curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK)
                ok = streq(scheme, "http") || streq(scheme, "https");
        sym_curl_free(scheme);
        sym_curl_url_cleanup(u);
        return ok;
}

#define SETOPT(easy, opt, val) \
        do { \
                if (sym_curl_easy_setopt((easy), (opt), (val)) != CURLE_OK) \
                        return -EIO; \
        } while (0)

static int header_append(HttpCall *call, const char *header) {
        struct curl_slist *l = sym_curl_slist_append(call->headers, header);

        if (!l)
                return -ENOMEM;
        call->headers = l;
        return 0;
}

static int call_setup(HttpCall *call, const HttpRequest *req) {
        CURL *e = call->easy;
        int r;
        uint64_t timeout_usec = req->timeout_usec > 0 ? req->timeout_usec : HTTP_TIMEOUT_DEFAULT_USEC;
        long timeout_ms = (long) MIN(MAX(timeout_usec / USEC_PER_MSEC, (uint64_t) 1), (uint64_t) LONG_MAX);

        SETOPT(e, CURLOPT_PRIVATE, call);
        SETOPT(e, CURLOPT_ERRORBUFFER, call->error_buffer);
        SETOPT(e, CURLOPT_NOSIGNAL, 1L);
        SETOPT(e, CURLOPT_URL, req->url);
        SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
        SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
        SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
        SETOPT(e, CURLOPT_TIMEOUT_MS, req->no_timeout ? 0L : timeout_ms);
        SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
        SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
        SETOPT(e, CURLOPT_TCP_KEEPIDLE, 30L);
        SETOPT(e, CURLOPT_TCP_KEEPINTVL, 10L);
        SETOPT(e, CURLOPT_WRITEFUNCTION, write_cb);
        SETOPT(e, CURLOPT_WRITEDATA, call);
        if (!req->on_data)
                SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) call->max_response_size);

        if (req->ca_file)
                SETOPT(e, CURLOPT_CAINFO, req->ca_file);
        if (req->client_cert) {
                SETOPT(e, CURLOPT_SSLCERT, req->client_cert);
                SETOPT(e, CURLOPT_SSLCERTTYPE, "PEM");
        }
        if (req->client_key) {
                SETOPT(e, CURLOPT_SSLKEY, req->client_key);
                SETOPT(e, CURLOPT_SSLKEYTYPE, "PEM");
        }
        if (req->unix_socket)
                SETOPT(e, CURLOPT_UNIX_SOCKET_PATH, req->unix_socket);

        const char *method = req->method ?: "GET";
        if (streq(method, "GET"))
                SETOPT(e, CURLOPT_HTTPGET, 1L);
        else if (streq(method, "HEAD"))
                SETOPT(e, CURLOPT_NOBODY, 1L);
        else {
                if (!streq(method, "POST"))
                        SETOPT(e, CURLOPT_CUSTOMREQUEST, method);
        }

        if (req->body || streq(method, "POST")) {
                /* Our own copy, so the caller's buffer need not outlive the call. */
                call->body = malloc(req->body_size + 1);
                if (!call->body)
                        return -ENOMEM;
                if (req->body_size > 0)
                        memcpy(call->body, req->body, req->body_size);
                call->body[req->body_size] = 0;
                SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_size);
                SETOPT(e, CURLOPT_POSTFIELDS, call->body);
        }

        for (char *const *h = req->headers; h && *h; h++) {
                r = header_append(call, *h);
                if (r < 0)
                        return r;
        }
        if (req->bearer_token) {
                char *auth = NULL;

                if (strpbrk(req->bearer_token, "\r\n"))
                        return -EINVAL;
                if (asprintf(&auth, "Authorization: Bearer %s", req->bearer_token) < 0)
                        return -ENOMEM;
                r = header_append(call, auth);
                explicit_bzero(auth, strlen(auth));
                free(auth);
                if (r < 0)
                        return r;
        }
        /* No "Expect: 100-continue" round trip for larger bodies. */
        r = header_append(call, "Expect:");
        if (r < 0)
                return r;
        SETOPT(e, CURLOPT_HTTPHEADER, call->headers);

        return 0;
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpCall *call = userdata;
        HttpClient *c = call->client;

        if (!c)
                return 0;
        c->dispatching++;
        (void) snprintf(call->error_buffer, sizeof(call->error_buffer), "No data received for %" PRIu64 " ms",
                        call->idle_timeout_usec / USEC_PER_MSEC);
        finish_call(call, CURLE_OPERATION_TIMEDOUT);
        c->dispatching--;
        if (c->freed && c->dispatching == 0)
                client_destroy(c);
        return 0;
}

int http_request(HttpClient *c, const HttpRequest *req, http_done_cb_t cb, void *userdata, HttpCall **ret) {
        HttpCall *call = NULL;
        int r;

        if (!c || !req || !req->url || c->freed)
                return -EINVAL;
        if (!url_is_http(req->url))
                return -EINVAL;

        call = calloc(1, sizeof(HttpCall));
        if (!call)
                return -ENOMEM;
        call->callback = cb;
        call->on_data = req->on_data;
        call->userdata = userdata;
        call->max_response_size = req->max_response_size > 0 ? req->max_response_size : HTTP_MAX_RESPONSE_DEFAULT;

        call->easy = sym_curl_easy_init();
        if (!call->easy) {
                http_call_free(call);
                return -ENOMEM;
        }

        r = call_setup(call, req);
        if (r < 0) {
                http_call_free(call);
                return r;
        }

        /* This arms the timer (timeout 0) at the latest; libcurl starts the transfer
         * from the event loop. */
        if (sym_curl_multi_add_handle(c->multi, call->easy) != CURLM_OK) {
                http_call_free(call);
                return -EIO;
        }
        call->client = c;
        LIST_PREPEND(c->calls, call);
        c->n_pending++;

        if (req->idle_timeout_usec > 0) {
                uint64_t now = 0;
                call->idle_timeout_usec = req->idle_timeout_usec;
                r = sd_event_now(c->event, CLOCK_MONOTONIC, &now);
                if (r >= 0)
                        r = sd_event_add_time(c->event, &call->idle_timer, CLOCK_MONOTONIC,
                                              now + req->idle_timeout_usec, USEC_PER_MSEC * 10, on_idle_timer, call);
                if (r < 0) {
                        http_call_free(call);
                        return r;
                }
                (void) sd_event_source_set_description(call->idle_timer, "http-idle");
        }

        if (ret)
                *ret = call;
        return 0;
}

HttpCall *http_call_cancel(HttpCall *call) {
        if (!call)
                return NULL;
        /* Inside its own callback the call is already finished and is freed after it. */
        if (call->in_callback)
                return NULL;
        /* Inside libcurl (an on_data callback): the write callback aborts the transfer
         * and the call is freed, silently, once libcurl reports it done. */
        if (call->client && call->client->in_curl > 0) {
                call->cancelled = true;
                return NULL;
        }
        http_call_free(call);
        return NULL;
}

unsigned http_client_n_pending(HttpClient *c) {
        return c ? c->n_pending : 0;
}

const char *http_call_header(HttpCall *call, const char *name) {
        struct curl_header *h = NULL;

        if (!call || !call->easy || !name)
                return NULL;
        if (sym_curl_easy_header(call->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
                return NULL;
        return h->value;
}
