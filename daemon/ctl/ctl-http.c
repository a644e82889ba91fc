/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lagoon-taskctl's HTTP client over the control API's unix socket. It owns the libcurl
 * easy handle (reused, so one connection serves a whole command), the translation of
 * libcurl's results into -errno (keeping "could not connect" apart from "connection
 * broke", which the follow loop retries), and the buffering or streaming of bodies. */

#include <curl/curl.h>
#include <strings.h>
#include <sys/un.h>

#include "ctl-http.h"
#include "parse-util.h"

/* A task list or a whole log read without following: generous, but bounded. */
#define BODY_MAX (256U * 1024U * 1024U)
/* Error bodies are a short JSON object; keep the start of anything bigger. */
#define ERROR_BODY_MAX (64U * 1024U)
/* Without streaming, a daemon that accepts but never answers is given this long. */
#define IDLE_LIMIT_SEC 120L

struct CtlHttp {
        CURL *curl;
        char *socket_path;
        bool connect_failed;
        bool ever_answered;
        char error[CURL_ERROR_SIZE];
        ctl_http_tick_t tick;
        void *tick_userdata;
        uint64_t tick_next; /* CLOCK_MONOTONIC */
        uint64_t log_offset;
};

typedef struct Transfer {
        CtlHttp *http;
        ctl_http_sink_t sink;
        void *userdata;
        int sink_error;
        char *buf;
        size_t size;
        size_t allocated;
        bool too_big;
} Transfer;

void ctl_response_done(CtlResponse *r) {
        if (!r)
                return;
        r->body = mfree(r->body);
        r->size = 0;
        r->status = 0;
}

int ctl_http_new(const char *socket_path, CtlHttp **ret) {
        _cleanup_(ctl_http_freep) CtlHttp *h = NULL;
        struct sockaddr_un sa;

        /* libcurl would fail later with a vague message. */
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;

        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->socket_path = strdup(socket_path);
        if (!h->socket_path)
                return -ENOMEM;
        h->curl = curl_easy_init();
        if (!h->curl)
                return -ENOMEM;

        *ret = TAKE_PTR(h);
        return 0;
}

CtlHttp *ctl_http_free(CtlHttp *h) {
        if (!h)
                return NULL;
        if (h->curl)
                curl_easy_cleanup(h->curl);
        free(h->socket_path);
        return mfree(h);
}

bool ctl_http_connect_failed(const CtlHttp *h) {
        return h->connect_failed;
}

bool ctl_http_ever_answered(const CtlHttp *h) {
        return h->ever_answered;
}

const char *ctl_http_error(const CtlHttp *h) {
        return h->error;
}

const char *ctl_http_socket_path(const CtlHttp *h) {
        return h->socket_path;
}

static int buffer_append(Transfer *t, const char *data, size_t size, size_t max) {
        if (t->too_big)
                return 0;
        if (t->size + size > max) {
                t->too_big = true;
                size = max - t->size;
        }
        if (t->size + size + 1 > t->allocated) {
                size_t n = MAX(t->allocated * 2, t->size + size + 1);
                char *p = realloc(t->buf, MAX(n, (size_t) 4096));

                if (!p)
                        return -ENOMEM;
                t->buf = p;
                t->allocated = MAX(n, (size_t) 4096);
        }
        memcpy(t->buf + t->size, data, size);
        t->size += size;
        t->buf[t->size] = 0;
        return 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata) {
        Transfer *t = userdata;
        size_t n = size * nmemb;
        long status = 0;
        int r;

        /* The status line and headers are in by the time the body arrives. */
        (void) curl_easy_getinfo(t->http->curl, CURLINFO_RESPONSE_CODE, &status);

        if (t->sink && status >= 200 && status < 300) {
                r = t->sink(data, n, t->userdata);
                if (r < 0) {
                        t->sink_error = r;
                        return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
                }
                return n;
        }

        if (status >= 200 && status < 300) {
                r = buffer_append(t, data, n, BODY_MAX);
                if (r >= 0 && t->too_big) {
                        t->sink_error = -EFBIG;
                        return 0;
                }
        } else
                r = buffer_append(t, data, n, ERROR_BODY_MAX);
        if (r < 0) {
                t->sink_error = r;
                return 0;
        }
        return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *userdata) {
        CtlHttp *h = userdata;
        size_t n = size * nmemb;
        static const char name[] = "lagoon-log-offset:";
        char value[32];
        size_t k;

        if (n <= strlen(name) || strncasecmp(data, name, strlen(name)) != 0)
                return n;
        data += strlen(name);
        k = n - strlen(name);
        while (k > 0 && strchr(" \t", *data))
                data++, k--;
        while (k > 0 && strchr(" \t\r\n", data[k - 1]))
                k--;
        if (k > 0 && k < sizeof(value)) {
                memcpy(value, data, k);
                value[k] = 0;
                if (parse_uint64(value, &h->log_offset) < 0)
                        h->log_offset = UINT64_MAX;
        }
        return n;
}

uint64_t ctl_http_log_offset(const CtlHttp *h) {
        return h->log_offset;
}

static int xferinfo_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
        Transfer *t = userdata;
        CtlHttp *h = t->http;
        uint64_t n = now_usec(CLOCK_MONOTONIC);
        int r;

        if (n < h->tick_next)
                return 0;
        h->tick_next = n + CTL_HTTP_TICK_USEC;
        r = h->tick(h->tick_userdata);
        if (r < 0) {
                t->sink_error = r;
                return 1; /* CURLE_ABORTED_BY_CALLBACK */
        }
        return 0;
}

void ctl_http_set_tick(CtlHttp *h, ctl_http_tick_t tick, void *userdata) {
        h->tick = tick;
        h->tick_userdata = userdata;
}

static int map_curl_error(CtlHttp *h, CURLcode c, const Transfer *t) {
        long os_errno = 0, status = 0;

        /* A stream that broke after its headers still proves the daemon was there. */
        (void) curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status > 0)
                h->ever_answered = true;

        if (isempty(h->error))
                snprintf(h->error, sizeof(h->error), "%s", curl_easy_strerror(c));

        switch (c) {
        case CURLE_COULDNT_CONNECT:
                h->connect_failed = true;
                (void) curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &os_errno);
                return os_errno > 0 ? -(int) os_errno : -ECONNREFUSED;
        case CURLE_WRITE_ERROR:
        case CURLE_ABORTED_BY_CALLBACK:
                return t->sink_error < 0 ? t->sink_error : -EIO;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        default:
                return -EPROTO;
        }
}

int ctl_http_request(CtlHttp *h,
                     const char *method,
                     const char *path,
                     const char *body,
                     bool stream,
                     ctl_http_sink_t sink,
                     void *userdata,
                     CtlResponse *ret) {
        struct curl_slist *headers = NULL;
        _cleanup_free_ char *url = NULL;
        Transfer t = {
                .http = h,
                .sink = sink,
                .userdata = userdata,
        };
        CURLcode c;
        long status = 0;
        int r;

        h->connect_failed = false;
        h->error[0] = 0;
        h->log_offset = UINT64_MAX;

        if (asprintf(&url, "http://localhost%s", path) < 0)
                return -ENOMEM;

        /* Keeps the open connection, drops the previous request's options. */
        curl_easy_reset(h->curl);

        /* libcurl's own SIGPIPE juggling is not needed: it sends with MSG_NOSIGNAL, and
         * a closed stdout should end us the usual way. */
        if (curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_UNIX_SOCKET_PATH, h->socket_path) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_URL, url) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->error) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, write_cb) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &t) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_HEADERFUNCTION, header_cb) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, h) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "lagoon-taskctl/" PACKAGE_VERSION) != CURLE_OK ||
            curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT, 10L) != CURLE_OK)
                return -ENOMEM;

        if (!stream && (curl_easy_setopt(h->curl, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
                        curl_easy_setopt(h->curl, CURLOPT_LOW_SPEED_TIME, IDLE_LIMIT_SEC) != CURLE_OK))
                return -ENOMEM;
        if (stream && h->tick) {
                h->tick_next = 0;
                if (curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, xferinfo_cb) != CURLE_OK ||
                    curl_easy_setopt(h->curl, CURLOPT_XFERINFODATA, &t) != CURLE_OK ||
                    curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L) != CURLE_OK)
                        return -ENOMEM;
        }

        if (streq(method, "POST")) {
                /* No "Expect: 100-continue" round trip for bigger bodies. */
                headers = curl_slist_append(headers, "Expect:");
                if (!headers)
                        return -ENOMEM;
                if (body) {
                        struct curl_slist *l = curl_slist_append(headers, "Content-Type: application/json");
                        if (!l) {
                                curl_slist_free_all(headers);
                                return -ENOMEM;
                        }
                        headers = l;
                }
                if (curl_easy_setopt(h->curl, CURLOPT_POST, 1L) != CURLE_OK ||
                    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, strempty(body)) != CURLE_OK ||
                    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(strempty(body))) !=
                            CURLE_OK ||
                    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers) != CURLE_OK) {
                        curl_slist_free_all(headers);
                        return -ENOMEM;
                }
        } else if (streq(method, "GET")) {
                if (curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L) != CURLE_OK)
                        return -ENOMEM;
        } else if (streq(method, "DELETE")) {
                if (curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, "DELETE") != CURLE_OK)
                        return -ENOMEM;
        } else
                return -EINVAL;

        c = curl_easy_perform(h->curl);
        curl_slist_free_all(headers);
        if (c != CURLE_OK) {
                r = map_curl_error(h, c, &t);
                free(t.buf);
                return r;
        }

        h->ever_answered = true;
        (void) curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
        if (!t.buf && !(sink && status >= 200 && status < 300)) {
                /* Empty body: hand out "" so callers need not check for NULL. */
                t.buf = strdup("");
                if (!t.buf)
                        return -ENOMEM;
        }

        *ret = (CtlResponse){
                .status = status,
                .body = TAKE_PTR(t.buf),
                .size = t.size,
        };
        return 0;
}
