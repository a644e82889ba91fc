/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* http.c on a real sd-event loop against a small HTTP server this test forks (TCP on
 * 127.0.0.1 and a unix socket, one process per connection): status codes and bodies,
 * connection refused, timeouts, size limits, cancellation, many calls at once, freeing
 * the client from a callback. HTTPS and lagoon-api.c run against
 * tests/harness/fake-lagoon-api.py (python3) with a certificate made by `openssl req`
 * at test time; without python3 or openssl those sections are skipped and the test
 * exits 77 after the rest passed. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <arpa/inet.h>

#include "config.h"
#include "fs-util.h"
#include "http.h"
#include "json.h"
#include "lagoon-api.h"
#include "log.h"
#include "macro.h"
#include "http-peer.h"
#include "loop.h"
#include "tests.h"

#define BIG_SIZE ((size_t) 2U * 1024U * 1024U)

static sd_event *event = NULL;
static HttpClient *client = NULL;
static pid_t server_pid = 0;
static uint16_t server_port = 0;
static char tmpdir[] = "/tmp/test-http-XXXXXX";
static char unix_path[PATH_MAX];
static bool in_request = false;
static unsigned skipped = 0;

/* ---- the forked server ---------------------------------------------------------- */

static void serve_connection(int fd) {
        static PeerRequest req;
        char xtest[64];

        if (!peer_read_request(fd, &req))
                return;
        peer_header(&req, "X-Test: ", xtest, sizeof(xtest), "-");
        const char *method = req.method, *path = req.target, *body = req.body;
        size_t body_have = req.body_size;
        char *buf = req.buf;
        const size_t buf_size = sizeof(req.buf);

        if (streq(path, "/ok"))
                peer_respond(fd, 200, "Content-Type: text/plain\r\n", "hello", 5);
        else if (streq(path, "/empty"))
                peer_respond(fd, 204, NULL, "", 0);
        else if (streq(path, "/404"))
                peer_respond(fd, 404, NULL, "not found", 9);
        else if (streq(path, "/500"))
                peer_respond(fd, 500, NULL, "boom", 4);
        else if (streq(path, "/auth")) {
                char auth[256];
                peer_header(&req, "Authorization: ", auth, sizeof(auth), "(none)");
                peer_respond(fd, 200, NULL, auth, strlen(auth));
        } else if (streq(path, "/echo")) {
                char out[65536 + 128];
                int k = snprintf(out, sizeof(out), "%s %s %s", method, xtest, body);
                peer_respond(fd, 200, NULL, out, (size_t) MIN(k, (int) sizeof(out) - 1));
        } else if (startswith(path, "/slow/")) {
                usleep(500 * 1000);
                peer_respond(fd, 200, NULL, path + 6, strlen(path + 6));
        } else if (startswith(path, "/mirror/")) {
                /* The request body comes back as the answer, with the status in the path. */
                peer_respond(fd, atoi(path + 8), NULL, body, body_have);
        } else if (streq(path, "/hang")) {
                /* Never answer; leave when the client gives up. */
                while (read(fd, buf, buf_size) > 0)
                        ;
        } else if (streq(path, "/big")) {
                char *big = malloc(BIG_SIZE);
                if (!big)
                        return;
                memset(big, 'x', BIG_SIZE);
                peer_respond(fd, 200, NULL, big, BIG_SIZE);
                free(big);
        } else if (streq(path, "/big-chunked")) {
                /* No Content-Length: only the running count can stop it. */
                static char chunk[65536];
                const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                memset(chunk, 'y', sizeof(chunk));
                if (!peer_write_all(fd, head, strlen(head)))
                        return;
                for (size_t sent = 0; sent < BIG_SIZE; sent += sizeof(chunk)) {
                        char line[32];
                        int k = snprintf(line, sizeof(line), "%zx\r\n", sizeof(chunk));
                        if (!peer_write_all(fd, line, (size_t) k) || !peer_write_all(fd, chunk, sizeof(chunk)) ||
                            !peer_write_all(fd, "\r\n", 2))
                                return;
                }
                (void) peer_write_all(fd, "0\r\n\r\n", 5);
        } else if (startswith(path, "/stream/")) {
                /* Chunked, n pieces 100 ms apart ("piece 0\n" …), then quiet for the
                 * given seconds (the watch-like idle case), then the end. */
                unsigned n = 0, quiet = 0;
                (void) sscanf(path + 8, "%u/%u", &n, &quiet);
                const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                if (!peer_write_all(fd, head, strlen(head)))
                        return;
                for (unsigned i = 0; i < n; i++) {
                        char piece[64], line[96];
                        int k = snprintf(piece, sizeof(piece), "piece %u\n", i);
                        int m = snprintf(line, sizeof(line), "%x\r\n%s\r\n", k, piece);
                        if (!peer_write_all(fd, line, (size_t) m))
                                return;
                        usleep(100 * 1000);
                }
                sleep(quiet);
                (void) peer_write_all(fd, "0\r\n\r\n", 5);
        } else
                peer_respond(fd, 400, NULL, "unknown path", 12);
}

static _noreturn_ void server_main(int tcp_fd, int unix_fd) {
        peer_serve((const int[]){tcp_fd, unix_fd}, 2, serve_connection);
}

static void start_server(void) {
        struct sockaddr_un u = {.sun_family = AF_UNIX};
        int tcp_fd = peer_listen_tcp(&server_port);

        snprintf(unix_path, sizeof(unix_path), "%s/http.sock", tmpdir);
        ASSERT(strlen(unix_path) < sizeof(u.sun_path));
        memcpy(u.sun_path, unix_path, strlen(unix_path) + 1);
        int unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(unix_fd >= 0);
        ASSERT_OK(bind(unix_fd, (struct sockaddr *) &u, sizeof(u)));
        ASSERT_OK(listen(unix_fd, 128));

        /* The server runs as a fresh exec of this binary, so tools wrapped around the
         * test (valgrind) do not slow down its per-connection forks. */
        server_pid = fork();
        ASSERT(server_pid >= 0);
        if (server_pid == 0) {
                if (dup2(tcp_fd, 3) < 0 || dup2(unix_fd, 4) < 0)
                        _exit(1);
                execl(program_invocation_name, program_invocation_name, "--serve", NULL);
                server_main(3, 4);
        }
        close(tcp_fd);
        close(unix_fd);
}

/* ---- driving the client ---------------------------------------------------------- */

typedef struct Result {
        bool done;
        int error;
        long status;
        char *body;
        size_t size;
        char *error_text;
        unsigned calls;
} Result;

static void result_clear(Result *r) {
        free(r->body);
        free(r->error_text);
        *r = (Result){};
}

static void on_done(HttpCall *call, const HttpResult *res, void *userdata) {
        Result *r = userdata;

        ASSERT(!in_request);
        ASSERT(call);
        r->calls++;
        r->done = true;
        r->error = res->error;
        r->status = res->status;
        if (res->error == 0 && !res->body) {
                /* Streaming calls: the body went to on_data. */
                ASSERT_EQ(res->size, 0u);
                ASSERT(!res->error_text);
        } else if (res->error == 0) {
                ASSERT_EQ(res->body[res->size], 0);
                r->body = malloc(res->size + 1);
                ASSERT(r->body);
                memcpy(r->body, res->body, res->size + 1);
                r->size = res->size;
                ASSERT(!res->error_text);
        } else {
                ASSERT(res->error_text && res->error_text[0]);
                r->error_text = strdup(res->error_text);
        }
}

static void run_until(bool *done, uint64_t max_usec) {
        loop_run_until(event, done, max_usec);
}

static void run_for(uint64_t usec) {
        loop_run_for(event, usec);
}

static int start(const HttpRequest *req, Result *r, HttpCall **ret) {
        in_request = true;
        int k = http_request(client, req, on_done, r, ret);
        in_request = false;
        return k;
}

static void do_request(const HttpRequest *req, Result *r) {
        result_clear(r);
        ASSERT_OK(start(req, r, NULL));
        ASSERT(!r->done);
        run_until(&r->done, 20 * USEC_PER_SEC);
        ASSERT_EQ(r->calls, 1u);
}

static char *url(const char *path) {
        char *u = NULL;
        ASSERT(asprintf(&u, "http://127.0.0.1:%u%s", server_port, path) > 0);
        return u;
}

/* ---- tests against the forked server --------------------------------------------- */

TEST(status_and_body) {
        _cleanup_free_ char *u_ok = url("/ok"), *u_404 = url("/404"), *u_500 = url("/500"), *u_empty = url("/empty");
        Result r = {};

        do_request(&(HttpRequest){.method = "GET", .url = u_ok}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_EQ(r.size, 5u);
        ASSERT_STREQ(r.body, "hello");

        do_request(&(HttpRequest){.url = u_404}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 404);
        ASSERT_STREQ(r.body, "not found");

        do_request(&(HttpRequest){.method = "POST", .url = u_500, .body = "x", .body_size = 1}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 500);
        ASSERT_STREQ(r.body, "boom");

        do_request(&(HttpRequest){.url = u_empty}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 204);
        ASSERT_EQ(r.size, 0u);
        ASSERT_STREQ(r.body, "");

        result_clear(&r);
        ASSERT_EQ(http_client_n_pending(client), 0u);
}

/* bearer_token: one Authorization header; a token that would break the header line is refused. */
TEST(bearer_token) {
        _cleanup_free_ char *u = url("/auth");
        char *headers[] = {(char *) "X-Test: yes", NULL};
        Result r = {};

        do_request(&(HttpRequest){.url = u, .headers = headers, .bearer_token = "t0k.en-1"}, &r);
        ASSERT_EQ(r.status, 200);
        ASSERT_STREQ(r.body, "Bearer t0k.en-1");
        do_request(&(HttpRequest){.url = u}, &r);
        ASSERT_STREQ(r.body, "(none)");
        result_clear(&r);
        ASSERT_EQ(start(&(HttpRequest){.url = u, .bearer_token = "a\r\nX-Injected: 1"}, &r, NULL), -EINVAL);
        ASSERT_EQ(start(&(HttpRequest){.url = u, .bearer_token = "a\nb"}, &r, NULL), -EINVAL);
        ASSERT_EQ(http_client_n_pending(client), 0u);
        ASSERT(!r.done);
        result_clear(&r);
}

TEST(post_body_and_headers) {
        _cleanup_free_ char *u = url("/echo");
        char *headers[] = {(char *) "X-Test: yes", (char *) "Content-Type: application/json", NULL};
        Result r = {};

        /* The body is copied: the caller's buffer may go away right after the call. */
        char *body = strdup("{\"a\":1}");
        ASSERT(body);
        result_clear(&r);
        ASSERT_OK(start(&(HttpRequest){.method = "POST", .url = u, .headers = headers, .body = body, .body_size = 7},
                        &r, NULL));
        memset(body, 'Z', 7);
        free(body);
        run_until(&r.done, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_STREQ(r.body, "POST yes {\"a\":1}");

        do_request(&(HttpRequest){.method = "PUT", .url = u, .body = "put", .body_size = 3}, &r);
        ASSERT_STREQ(r.body, "PUT - put");

        do_request(&(HttpRequest){.method = "DELETE", .url = u}, &r);
        ASSERT_STREQ(r.body, "DELETE - ");

        /* Larger than one socket buffer and than curl's Expect threshold. */
        size_t n = 60000;
        char *large = malloc(n);
        ASSERT(large);
        memset(large, 'q', n);
        do_request(&(HttpRequest){.method = "POST", .url = u, .body = large, .body_size = n}, &r);
        ASSERT_EQ(r.status, 200);
        ASSERT_EQ(r.size, n + strlen("POST - "));
        free(large);
        result_clear(&r);
}

TEST(unix_socket) {
        Result r = {};
        _cleanup_free_ char *missing = NULL;

        do_request(&(HttpRequest){.url = "http://localhost/ok", .unix_socket = unix_path}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_STREQ(r.body, "hello");

        ASSERT(asprintf(&missing, "%s/nothing.sock", tmpdir) > 0);
        do_request(&(HttpRequest){.url = "http://localhost/ok", .unix_socket = missing}, &r);
        ASSERT_EQ(r.error, -ECONNREFUSED);
        result_clear(&r);
}

TEST(connection_refused) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        _cleanup_free_ char *u = NULL;
        Result r = {};

        /* A port that was just free: nothing listens there. */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &a, sizeof(a)));
        ASSERT_OK(getsockname(fd, (struct sockaddr *) &a, &len));
        close(fd);
        ASSERT(asprintf(&u, "http://127.0.0.1:%u/ok", ntohs(a.sin_port)) > 0);

        /* Fails at once, but the callback still comes from the loop. */
        do_request(&(HttpRequest){.url = u}, &r);
        ASSERT_EQ(r.error, -ECONNREFUSED);
        ASSERT(r.error_text);
        printf("  refused: %s\n", r.error_text);
        result_clear(&r);
}

TEST(timeout) {
        _cleanup_free_ char *u = url("/hang");
        Result r = {};

        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        do_request(&(HttpRequest){.url = u, .timeout_usec = 300 * USEC_PER_MSEC}, &r);
        uint64_t took = now_usec(CLOCK_MONOTONIC) - t0;
        ASSERT_EQ(r.error, -ETIMEDOUT);
        ASSERT(took >= 250 * USEC_PER_MSEC);
        ASSERT(took < 5 * USEC_PER_SEC);
        printf("  timeout after %" PRIu64 " ms: %s\n", took / 1000, r.error_text);
        result_clear(&r);
}

TEST(too_big) {
        _cleanup_free_ char *u = url("/big"), *uc = url("/big-chunked");
        Result r = {};

        /* Announced length over the limit. */
        do_request(&(HttpRequest){.url = u, .max_response_size = BIG_SIZE / 2}, &r);
        ASSERT_EQ(r.error, -E2BIG);
        printf("  too big: %s\n", r.error_text);

        /* No length: stopped while receiving. */
        do_request(&(HttpRequest){.url = uc, .max_response_size = BIG_SIZE / 2}, &r);
        ASSERT_EQ(r.error, -E2BIG);

        /* Exactly at the limit is fine; the default (16 MiB) takes it too. */
        do_request(&(HttpRequest){.url = u, .max_response_size = BIG_SIZE}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.size, BIG_SIZE);
        do_request(&(HttpRequest){.url = uc}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.size, BIG_SIZE);
        ASSERT(r.body[0] == 'y' && r.body[BIG_SIZE - 1] == 'y');
        result_clear(&r);
}

TEST(cancel) {
        _cleanup_free_ char *u = url("/slow/x"), *u2 = url("/hang");
        Result r1 = {}, r2 = {}, r3 = {};
        HttpCall *c1 = NULL, *c2 = NULL, *c3 = NULL;

        ASSERT_OK(start(&(HttpRequest){.url = u}, &r1, &c1));
        ASSERT_OK(start(&(HttpRequest){.url = u2}, &r2, &c2));
        ASSERT_OK(start(&(HttpRequest){.url = u}, &r3, &c3));
        ASSERT(c1 && c2 && c3);
        ASSERT_EQ(http_client_n_pending(client), 3u);

        /* One before it even started, one while connected. */
        ASSERT(!http_call_cancel(c1));
        run_for(50 * USEC_PER_MSEC);
        ASSERT(!http_call_cancel(c2));
        ASSERT_EQ(http_client_n_pending(client), 1u);

        run_until(&r3.done, 10 * USEC_PER_SEC);
        ASSERT_EQ(r3.error, 0);
        ASSERT_STREQ(r3.body, "x");
        run_for(300 * USEC_PER_MSEC);
        ASSERT(!r1.done && !r2.done);
        ASSERT_EQ(http_client_n_pending(client), 0u);
        ASSERT(!http_call_cancel(NULL));
        result_clear(&r3);
}

/* ---- streaming bodies ---------------------------------------------------------- */

typedef struct Stream {
        char data[4096];
        size_t size;
        unsigned pieces;
        long status;
        int fail_after; /* on_data returns -EUCLEAN after this many pieces */
        bool cancel_after;
        HttpCall *call;
} Stream;

static Stream stream_state;

static int on_stream_data(HttpCall *call, long status, const void *data, size_t size, void *userdata) {
        Stream *st = &stream_state;

        ASSERT(!in_request);
        ASSERT(size > 0);
        ASSERT(status == 200);
        st->status = status;
        ASSERT(st->size + size < sizeof(st->data));
        memcpy(st->data + st->size, data, size);
        st->size += size;
        st->pieces++;
        if (st->fail_after > 0 && st->pieces >= (unsigned) st->fail_after)
                return -EUCLEAN;
        if (st->cancel_after && st->pieces >= 2) {
                ASSERT(!http_call_cancel(call));
                /* Only once: there is no further callback anyway. */
                st->cancel_after = false;
        }
        return 0;
}

TEST(streaming) {
        _cleanup_free_ char *u = url("/stream/5/0"), *u_ok = url("/ok"), *u_quiet = url("/stream/1/3");
        Result r = {};

        /* Every piece as it arrives, nothing collected, done with body NULL. */
        stream_state = (Stream){};
        result_clear(&r);
        ASSERT_OK(start(&(HttpRequest){.url = u, .on_data = on_stream_data}, &r, NULL));
        run_until(&r.done, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT(!r.body || r.size == 0);
        ASSERT_EQ(stream_state.size, 5u * 8u);
        ASSERT(stream_state.pieces >= 2); /* 100 ms apart: not one read */
        ASSERT(strncmp(stream_state.data, "piece 0\npiece 1\npiece 2\npiece 3\npiece 4\n", 40) == 0);

        /* A plain (Content-Length) body goes through on_data as well. */
        stream_state = (Stream){};
        result_clear(&r);
        ASSERT_OK(start(&(HttpRequest){.url = u_ok, .on_data = on_stream_data}, &r, NULL));
        run_until(&r.done, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(stream_state.size, 5u);

        /* on_data fails: the transfer stops, the done callback gets the error. */
        stream_state = (Stream){.fail_after = 2};
        result_clear(&r);
        ASSERT_OK(start(&(HttpRequest){.url = u, .on_data = on_stream_data}, &r, NULL));
        run_until(&r.done, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.error, -EUCLEAN);
        ASSERT(r.error_text);
        ASSERT_EQ(stream_state.pieces, 2u);

        /* Cancelled from its own on_data: no more callbacks, gone from the client. */
        stream_state = (Stream){.cancel_after = true};
        result_clear(&r);
        ASSERT_OK(start(&(HttpRequest){.url = u, .on_data = on_stream_data}, &r, NULL));
        run_for(900 * USEC_PER_MSEC);
        ASSERT(!r.done);
        ASSERT_EQ(stream_state.pieces, 2u);
        ASSERT_EQ(http_client_n_pending(client), 0u);

        /* No overall timeout: a stream quiet for 3 s outlives a 1 s timeout... */
        stream_state = (Stream){};
        result_clear(&r);
        ASSERT_OK(start(
                &(HttpRequest){
                        .url = u_quiet, .on_data = on_stream_data, .no_timeout = true, .timeout_usec = USEC_PER_SEC},
                &r, NULL));
        run_until(&r.done, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(stream_state.pieces, 1u);
        /* ...unless it is idle longer than idle_timeout_usec. */
        stream_state = (Stream){};
        result_clear(&r);
        ASSERT_OK(start(&(HttpRequest){.url = u_quiet,
                                       .on_data = on_stream_data,
                                       .no_timeout = true,
                                       .idle_timeout_usec = USEC_PER_SEC},
                        &r, NULL));
        run_until(&r.done, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.error, -ETIMEDOUT);

        result_clear(&r);
}

TEST(methods_with_body) {
        _cleanup_free_ char *u = url("/echo");
        Result r = {};

        do_request(&(HttpRequest){.method = "PATCH", .url = u, .body = "{\"a\":1}", .body_size = 7}, &r);
        ASSERT_EQ(r.status, 200);
        ASSERT_STREQ(r.body, "PATCH - {\"a\":1}");
        do_request(&(HttpRequest){.method = "DELETE", .url = u, .body = "{\"g\":0}", .body_size = 7}, &r);
        ASSERT_STREQ(r.body, "DELETE - {\"g\":0}");
        do_request(&(HttpRequest){.method = "DELETE", .url = u}, &r);
        ASSERT_STREQ(r.body, "DELETE - ");
        do_request(&(HttpRequest){.method = "PUT", .url = u, .body = "x", .body_size = 1}, &r);
        ASSERT_STREQ(r.body, "PUT - x");
        result_clear(&r);
}

TEST(many_concurrent) {
        enum { N = 40 };
        Result r[N] = {};
        char *urls[N] = {};

        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        for (unsigned i = 0; i < N; i++) {
                char path[32];
                snprintf(path, sizeof(path), "/slow/%u", i);
                urls[i] = url(path);
                ASSERT_OK(start(&(HttpRequest){.url = urls[i]}, &r[i], NULL));
        }
        ASSERT_EQ(http_client_n_pending(client), (unsigned) N);

        for (unsigned i = 0; i < N; i++)
                run_until(&r[i].done, 20 * USEC_PER_SEC);
        uint64_t took = now_usec(CLOCK_MONOTONIC) - t0;

        for (unsigned i = 0; i < N; i++) {
                char expect[16];
                snprintf(expect, sizeof(expect), "%u", i);
                ASSERT_EQ(r[i].error, 0);
                ASSERT_EQ(r[i].calls, 1u);
                ASSERT_STREQ(r[i].body, expect);
                result_clear(&r[i]);
                free(urls[i]);
        }
        /* Each answer takes 500 ms: serially that would be 20 s. */
        printf("  %d requests in %" PRIu64 " ms\n", N, took / 1000);
        ASSERT(took < 10 * USEC_PER_SEC);
        ASSERT_EQ(http_client_n_pending(client), 0u);
}

TEST(invalid_requests) {
        Result r = {};

        ASSERT_EQ(start(&(HttpRequest){.url = "ftp://127.0.0.1/x"}, &r, NULL), -EINVAL);
        ASSERT_EQ(start(&(HttpRequest){.url = "file:///etc/passwd"}, &r, NULL), -EINVAL);
        ASSERT_EQ(start(&(HttpRequest){.url = "not a url"}, &r, NULL), -EINVAL);
        ASSERT_EQ(start(&(HttpRequest){.url = NULL}, &r, NULL), -EINVAL);
        ASSERT_EQ(http_request(NULL, &(HttpRequest){.url = "http://x/"}, on_done, &r, NULL), -EINVAL);
        ASSERT_EQ(http_client_n_pending(client), 0u);
        ASSERT(!r.done);
        ASSERT_EQ(http_client_n_pending(NULL), 0u);
        ASSERT(!http_client_free(NULL));
}

/* A callback that frees its client while other calls are pending: the rest are
 * dropped without callbacks, and the loop goes on safely. */
static HttpClient *doomed = NULL;
static unsigned doomed_calls = 0;

static void on_done_free_client(HttpCall *call, const HttpResult *res, void *userdata) {
        doomed_calls++;
        ASSERT(!http_client_free(doomed));
        ASSERT(*(bool *) userdata == false);
        *(bool *) userdata = true;
}

/* Callbacks may start the next request right away (the outbox does). */
static unsigned chain_left = 0;
static char *chain_url = NULL;

static void on_done_chain(HttpCall *call, const HttpResult *res, void *userdata) {
        ASSERT(!in_request);
        ASSERT_EQ(res->error, 0);
        ASSERT_STREQ(res->body, "hello");
        if (--chain_left > 0) {
                in_request = true;
                ASSERT_OK(http_request(client, &(HttpRequest){.url = chain_url}, on_done_chain, userdata, NULL));
                in_request = false;
                /* Cancelling itself from inside its callback is harmless. */
                ASSERT(!http_call_cancel(call));
        } else
                *(bool *) userdata = true;
}

TEST(chain_from_callback) {
        bool done = false;

        chain_url = url("/ok");
        chain_left = 5;
        ASSERT_OK(http_request(client, &(HttpRequest){.url = chain_url}, on_done_chain, &done, NULL));
        run_until(&done, 10 * USEC_PER_SEC);
        ASSERT_EQ(chain_left, 0u);
        ASSERT_EQ(http_client_n_pending(client), 0u);
        chain_url = mfree(chain_url);
}

TEST(free_from_callback) {
        _cleanup_free_ char *fast = url("/ok"), *slow = url("/slow/1");
        bool done = false;

        ASSERT_OK(http_client_new(event, &doomed));
        ASSERT_OK(http_request(doomed, &(HttpRequest){.url = fast}, on_done_free_client, &done, NULL));
        for (unsigned i = 0; i < 5; i++)
                ASSERT_OK(http_request(doomed, &(HttpRequest){.url = slow}, on_done_free_client, &done, NULL));
        run_until(&done, 10 * USEC_PER_SEC);
        run_for(400 * USEC_PER_MSEC);
        ASSERT_EQ(doomed_calls, 1u);

        /* And freeing a client with calls in flight calls nothing. */
        HttpClient *c = NULL;
        Result r = {};
        ASSERT_OK(http_client_new(event, &c));
        ASSERT_OK(http_request(c, &(HttpRequest){.url = slow}, on_done, &r, NULL));
        run_for(50 * USEC_PER_MSEC);
        ASSERT(!http_client_free(c));
        run_for(300 * USEC_PER_MSEC);
        ASSERT(!r.done);
}

/* ---- lagoon-api.c's reading of answers, garbage included (no python needed) ------- */

typedef struct ApiResult {
        bool done;
        LagoonApiResult result;
        char *detail;
} ApiResult;

static void on_api_done(LagoonApi *a, LagoonApiResult result, const char *detail, void *userdata) {
        ApiResult *r = userdata;

        ASSERT(!in_request);
        ASSERT(!r->done);
        ASSERT(!lagoon_api_busy(a));
        r->done = true;
        r->result = result;
        free(r->detail);
        r->detail = detail ? strdup(detail) : NULL;
        ASSERT((result == LAGOON_API_DELIVERED) == !detail);
}

static const char *result_name(LagoonApiResult r) {
        return r == LAGOON_API_DELIVERED ? "DELIVERED" : r == LAGOON_API_RETRY ? "RETRY" : "REJECTED";
}

static void api_send_n(LagoonApi *a, const char *body, size_t size, ApiResult *r) {
        free(r->detail);
        *r = (ApiResult){};
        in_request = true;
        ASSERT_OK(lagoon_api_send(a, body, size, on_api_done, r));
        in_request = false;
        ASSERT(lagoon_api_busy(a));
        ASSERT_EQ(lagoon_api_send(a, body, size, on_api_done, r), -EBUSY);
        ASSERT(!r->done);
        run_until(&r->done, 20 * USEC_PER_SEC);
        if (r->detail && strlen(r->detail) > 200)
                printf("  -> %s: %.200s[…]\n", result_name(r->result), r->detail);
        else
                printf("  -> %s%s%s\n", result_name(r->result), r->detail ? ": " : "", strempty(r->detail));
}

static void api_send(LagoonApi *a, const char *body, ApiResult *r) {
        api_send_n(a, body, strlen(body), r);
}

/* The forked server answers with status and the body we send. */
static void check_answer(int status, const char *answer, size_t size, LagoonApiResult expect, const char *detail) {
        _cleanup_(config_freep) Config *c = config_new();
        _cleanup_(lagoon_api_freep) LagoonApi *a = NULL;
        ApiResult r = {};
        char path[32];

        ASSERT(c);
        snprintf(path, sizeof(path), "/mirror/%d", status);
        c->api_url = url(path);
        ASSERT_OK(free_and_strdup(&c->api_token, "ready-token"));
        ASSERT_OK(lagoon_api_new(client, c, &a));
        api_send_n(a, answer, size, &r);
        ASSERT_EQ(r.result, expect);
        if (detail)
                ASSERT_STREQ(r.detail, detail);
        if (r.detail) {
                ASSERT(strlen(r.detail) <= 512 + 64);
                ASSERT(!strchr(r.detail, '\n'));
                ASSERT(!strstr(r.detail, "ready-token"));
        }
        free(r.detail);
}

#define CHECK_ANSWER(status, answer, expect, detail) check_answer(status, answer, strlen(answer), expect, detail)

TEST(lagoon_api_answers) {
        CHECK_ANSWER(200, "{\"data\":{\"updateTask\":{\"id\":1}}}", LAGOON_API_DELIVERED, NULL);
        CHECK_ANSWER(200, "{\"data\":{\"updateTask\":null},\"errors\":null}", LAGOON_API_DELIVERED, NULL);
        CHECK_ANSWER(200, "{\"errors\":[]}", LAGOON_API_DELIVERED, NULL);
        CHECK_ANSWER(201, "", LAGOON_API_DELIVERED, NULL);
        /* Not GraphQL at all: 2xx without errors is delivered, whatever the body. */
        CHECK_ANSWER(200, "<html>ok</html>", LAGOON_API_DELIVERED, NULL);
        CHECK_ANSWER(200, "[1,2,3]", LAGOON_API_DELIVERED, NULL);
        CHECK_ANSWER(200, "{\"errors\":[{\"message\":\"x\"", LAGOON_API_DELIVERED, NULL);
        char deep[300];
        memset(deep, '[', sizeof(deep) - 1);
        deep[sizeof(deep) - 1] = 0;
        CHECK_ANSWER(200, deep, LAGOON_API_DELIVERED, NULL);
        check_answer(200, "{\"a\":\"\0\"}", 9, LAGOON_API_DELIVERED, NULL);

        CHECK_ANSWER(200,
                     "{\"errors\":[{\"message\":\"first\",\"path\":[\"updateTask\"]},{\"message\":\"second\"}],"
                     "\"data\":{\"updateTask\":null}}",
                     LAGOON_API_REJECTED, "GraphQL error: first (and 1 more)");
        CHECK_ANSWER(200, "{\"errors\":[{}]}", LAGOON_API_REJECTED, "GraphQL error: (no message)");
        CHECK_ANSWER(200, "{\"errors\":[42]}", LAGOON_API_REJECTED, "GraphQL error: (no message)");
        CHECK_ANSWER(200, "{\"errors\":\"bad\"}", LAGOON_API_REJECTED, "GraphQL error: (no message)");
        CHECK_ANSWER(200, "{\"errors\":[{\"message\":7}]}", LAGOON_API_REJECTED, "GraphQL error: (no message)");

        /* 401/403: the token was refused (skew, rotation), not the update: tried again. */
        CHECK_ANSWER(401, "{\"errors\":[{\"message\":\"Unauthorized - Bearer token required\"}]}", LAGOON_API_RETRY,
                     "HTTP 401: {\"errors\":[{\"message\":\"Unauthorized - Bearer token required\"}]}");
        CHECK_ANSWER(403, "", LAGOON_API_RETRY, "HTTP 403: (empty body)");
        CHECK_ANSWER(404, "Cannot POST /x\r\n", LAGOON_API_REJECTED, "HTTP 404: Cannot POST /x  ");
        CHECK_ANSWER(429, "slow down", LAGOON_API_RETRY, "HTTP 429: slow down");
        CHECK_ANSWER(500, "{\"errors\":[{\"message\":\"boom\"}]}", LAGOON_API_RETRY, NULL);
        CHECK_ANSWER(502, "<html>\n<h1>Bad Gateway</h1>\n</html>", LAGOON_API_RETRY,
                     "HTTP 502: <html> <h1>Bad Gateway</h1> </html>");
        CHECK_ANSWER(302, "", LAGOON_API_RETRY, "HTTP 302: (empty body)");

        /* Long bodies are cut at 512 bytes, never inside a UTF-8 sequence. */
        char long_body[2000];
        memset(long_body, 'a', sizeof(long_body) - 1);
        long_body[sizeof(long_body) - 1] = 0;
        long_body[511] = '\xc3';
        long_body[512] = '\xa9';
        _cleanup_free_ char *expected = NULL;
        ASSERT(asprintf(&expected, "HTTP 400: %.*s…", 511, long_body) > 0);
        CHECK_ANSWER(400, long_body, LAGOON_API_REJECTED, expected);

        /* Binary garbage with NULs. */
        char garbage[256];
        for (unsigned i = 0; i < sizeof(garbage); i++)
                garbage[i] = (char) (i * 7);
        check_answer(418, garbage, sizeof(garbage), LAGOON_API_REJECTED, NULL);
        /* Invalid UTF-8 becomes '?', valid multi-byte characters stay. */
        CHECK_ANSWER(400, "a\xff\xc3\xa9\xed\xa0\x80z\xc3", LAGOON_API_REJECTED, "HTTP 400: a?\xc3\xa9???z?");
        check_answer(200, garbage, sizeof(garbage), LAGOON_API_DELIVERED, NULL);
}

/* ---- python3 peers: HTTPS and the Lagoon API ------------------------------------- */

static char *find_fake(void) {
        const char *src = getenv("TEST_SRCDIR");
        char *p = NULL;

        if (src) {
                p = path_join(src, "tests/harness/fake-lagoon-api.py");
                if (p && access(p, R_OK) == 0)
                        return p;
                free(p);
        }
        if (access("tests/harness/fake-lagoon-api.py", R_OK) == 0)
                return strdup("tests/harness/fake-lagoon-api.py");
        return NULL;
}

static bool have_fake(void) {
        _cleanup_free_ char *p = find_fake();
        return p;
}

static bool have_program(const char *name) {
        _cleanup_free_ char *p = NULL;
        return find_executable(name, &p) >= 0;
}

/* Starts fake-lagoon-api.py with the given extra arguments; returns its port. */
static uint16_t start_fake(pid_t *ret_pid, char **extra) {
        _cleanup_free_ char *script = find_fake();
        char *argv[32] = {(char *) "python3", script, (char *) "--lifetime", (char *) "120"};
        size_t n = 4;
        int pipefd[2];

        ASSERT(script);
        for (char **e = extra; e && *e; e++) {
                ASSERT(n < ELEMENTSOF(argv) - 1);
                argv[n++] = *e;
        }
        argv[n] = NULL;

        ASSERT_OK(pipe2(pipefd, O_CLOEXEC));
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                dup2(pipefd[1], STDOUT_FILENO);
                execvp("python3", argv);
                _exit(127);
        }
        close(pipefd[1]);

        char line[32] = "";
        size_t have = 0;
        while (have < sizeof(line) - 1 && !strchr(line, '\n')) {
                struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
                ASSERT(poll(&p, 1, 15000) == 1);
                ssize_t k = read(pipefd[0], line + have, sizeof(line) - 1 - have);
                ASSERT(k > 0);
                have += (size_t) k;
                line[have] = 0;
        }
        close(pipefd[0]);
        unsigned port = 0;
        ASSERT(sscanf(line, "%u", &port) == 1 && port > 0 && port < 65536);
        *ret_pid = pid;
        return (uint16_t) port;
}

TEST(https) {
        _cleanup_free_ char *cert = NULL, *key = NULL, *cmd = NULL, *u = NULL, *u_name = NULL;
        pid_t pid = 0;
        Result r = {};

        if (!have_program("python3") || !have_program("openssl") || !have_fake()) {
                printf("  skipped: needs python3, openssl and tests/harness/fake-lagoon-api.py\n");
                skipped++;
                return;
        }

        cert = path_join(tmpdir, "cert.pem");
        key = path_join(tmpdir, "key.pem");
        ASSERT(asprintf(&cmd,
                        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                        "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
                        key, cert) > 0);
        ASSERT_EQ(system(cmd), 0);

        uint16_t port = start_fake(&pid, (char *[]){(char *) "--secret", (char *) "x", (char *) "--tls-cert", cert,
                                                    (char *) "--tls-key", key, NULL});
        ASSERT(asprintf(&u, "https://127.0.0.1:%u/status", port) > 0);
        ASSERT(asprintf(&u_name, "https://localhost:%u/status", port) > 0);

        /* Self-signed and not in the system store: verification fails. */
        do_request(&(HttpRequest){.url = u}, &r);
        ASSERT_EQ(r.error, -EPROTO);
        printf("  untrusted: %s\n", r.error_text);

        /* Trusted through ca_file. */
        do_request(&(HttpRequest){.url = u, .ca_file = cert}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_STREQ(r.body, "{\"status\": \"ok\"}");

        /* Trusted, but the name does not match the certificate: host verification. */
        do_request(&(HttpRequest){.url = u_name, .ca_file = cert}, &r);
        ASSERT_EQ(r.error, -EPROTO);
        printf("  wrong name: %s\n", r.error_text);

        /* A client certificate that cannot be read. */
        do_request(&(HttpRequest){.url = u, .ca_file = cert, .client_cert = "/nonexistent.pem"}, &r);
        ASSERT_EQ(r.error, -EPROTO);

        /* Plain HTTP to the TLS port gets no HTTP answer. */
        _cleanup_free_ char *plain = NULL;
        ASSERT(asprintf(&plain, "http://127.0.0.1:%u/status", port) > 0);
        do_request(&(HttpRequest){.url = plain, .timeout_usec = 2 * USEC_PER_SEC}, &r);
        ASSERT(r.error < 0 || r.status >= 400);

        result_clear(&r);
        peer_stop(&pid, SIGTERM);
}

static void control(uint16_t port, const char *body) {
        _cleanup_free_ char *u = NULL;
        Result r = {};

        ASSERT(asprintf(&u, "http://127.0.0.1:%u/control", port) > 0);
        do_request(&(HttpRequest){.method = "POST", .url = u, .body = body, .body_size = strlen(body)}, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        result_clear(&r);
}

#define UPDATE_QUERY \
        "\"mutation updateTask($id: Int!, $patch: UpdateTaskPatchInput!) " \
        "{ updateTask(input: {id: $id, patch: $patch}) { id status } }\""

TEST(lagoon_api) {
        _cleanup_free_ char *record = NULL, *api_url = NULL, *data = NULL;
        _cleanup_(config_freep) Config *c = NULL, *c_bad = NULL, *c_token = NULL, *c_none = NULL;
        _cleanup_(lagoon_api_freep) LagoonApi *api = NULL, *api_bad = NULL, *api_token = NULL;
        LagoonApi *none = NULL;
        ApiResult r = {};
        pid_t pid = 0;
        size_t size = 0;

        if (!have_program("python3") || !have_fake()) {
                printf("  skipped: needs python3 and tests/harness/fake-lagoon-api.py\n");
                skipped++;
                return;
        }

        record = path_join(tmpdir, "updates.jsonl");
        uint16_t port = start_fake(
                &pid, (char *[]){(char *) "--secret", (char *) "jwt-s3cret", (char *) "--record", record, NULL});
        ASSERT(asprintf(&api_url, "http://127.0.0.1:%u/graphql", port) > 0);

        /* No APIURL=: no sink, no error. */
        c_none = config_new();
        ASSERT(c_none);
        none = (LagoonApi *) 1;
        ASSERT_OK(lagoon_api_new(client, c_none, &none));
        ASSERT(!none);
        /* APIURL= without credentials is an error, so is a token that would break the header. */
        ASSERT_OK(free_and_strdup(&c_none->api_url, api_url));
        ASSERT_EQ(lagoon_api_new(client, c_none, &none), -EINVAL);
        ASSERT_OK(free_and_strdup(&c_none->api_token, "abc\r\nX-Injected: 1"));
        ASSERT_EQ(lagoon_api_new(client, c_none, &none), -EINVAL);

        c = config_new();
        ASSERT(c);
        ASSERT_OK(free_and_strdup(&c->api_url, api_url));
        ASSERT_OK(free_and_strdup(&c->jwt_secret, "jwt-s3cret"));
        ASSERT_OK(lagoon_api_new(client, c, &api));
        ASSERT(api);
        ASSERT(!lagoon_api_busy(api));

        const char *running = "{\"query\":" UPDATE_QUERY ",\"variables\":{\"id\":42,\"patch\":{\"status\":\"RUNNING\","
                              "\"started\":\"2026-11-28 03:00:00\",\"remoteId\":\"r-1\"}}}";
        const char *complete =
                "{\"query\":" UPDATE_QUERY ",\"variables\":{\"id\":42,\"patch\":{\"status\":\"COMPLETE\","
                "\"completed\":\"2026-11-28 03:01:00\",\"remoteId\":\"r-1\"}}}";

        /* Delivered: the peer verified the JWT and recorded the update. */
        api_send(api, running, &r);
        ASSERT_EQ(r.result, LAGOON_API_DELIVERED);

        /* 500 and 429: try again later. */
        control(port, "{\"fail\":[500, 429, 503]}");
        api_send(api, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_RETRY);
        ASSERT(startswith(r.detail, "HTTP 500: "));
        api_send(api, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_RETRY);
        ASSERT(startswith(r.detail, "HTTP 429: "));
        api_send(api, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_RETRY);

        /* A GraphQL error answer (HTTP 200): rejected, with the API's message. */
        control(port, "{\"fail\":[\"errors\"]}");
        api_send(api, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_REJECTED);
        ASSERT_STREQ(r.detail, "GraphQL error: Scripted GraphQL error");

        /* A real resolver error from the peer: an empty patch. */
        const char *empty = "{\"query\":" UPDATE_QUERY ",\"variables\":{\"id\":42,\"patch\":{}}}";
        api_send(api, empty, &r);
        ASSERT_EQ(r.result, LAGOON_API_REJECTED);
        ASSERT_STREQ(r.detail, "GraphQL error: Input patch requires at least 1 attribute");

        /* An unknown patch member: Apollo's 400 with graphql-js' coercion message. */
        const char *unknown = "{\"query\":" UPDATE_QUERY ",\"variables\":{\"id\":42,\"patch\":{\"bogus\":\"x\"}}}";
        api_send(api, unknown, &r);
        ASSERT_EQ(r.result, LAGOON_API_REJECTED);
        ASSERT(startswith(r.detail, "HTTP 400: "));
        ASSERT(strstr(r.detail, "is not defined by type"));

        /* Now the update goes through. */
        api_send(api, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_DELIVERED);

        /* Wrong secret: the peer's signature check answers 401. */
        c_bad = config_new();
        ASSERT(c_bad);
        ASSERT_OK(free_and_strdup(&c_bad->api_url, api_url));
        ASSERT_OK(free_and_strdup(&c_bad->jwt_secret, "not-the-secret"));
        ASSERT_OK(lagoon_api_new(client, c_bad, &api_bad));
        api_send(api_bad, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_RETRY);
        ASSERT_STREQ(r.detail, "HTTP 401: {\"errors\": [{\"message\": \"Unauthorized - Legacy token invalid: invalid "
                               "signature\"}]}");

        /* Wrong audience. */
        ASSERT_OK(free_and_strdup(&c_bad->jwt_secret, "jwt-s3cret"));
        ASSERT_OK(free_and_strdup(&c_bad->jwt_audience, "api.prod"));
        api_bad = lagoon_api_free(api_bad);
        ASSERT_OK(lagoon_api_new(client, c_bad, &api_bad));
        api_send(api_bad, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_RETRY);
        ASSERT(strstr(r.detail, "Token audience mismatch."));

        /* A ready token (APITokenFile=) is sent as it is, and never shows in the detail. */
        c_token = config_new();
        ASSERT(c_token);
        ASSERT_OK(free_and_strdup(&c_token->api_url, api_url));
        ASSERT_OK(free_and_strdup(&c_token->api_token, "opaque-token-value"));
        ASSERT_OK(lagoon_api_new(client, c_token, &api_token));
        api_send(api_token, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_RETRY);
        ASSERT(strstr(r.detail, "HTTP 401: "));
        ASSERT(strstr(r.detail, "Bearer token malformed"));
        ASSERT(!strstr(r.detail, "opaque-token-value"));

        /* Freeing the sink with a request in flight calls nothing. */
        control(port, "{\"fail\":[\"hang\"]}");
        free(r.detail);
        r = (ApiResult){};
        ASSERT_OK(lagoon_api_send(api, complete, strlen(complete), on_api_done, &r));
        run_for(100 * USEC_PER_MSEC);
        api = lagoon_api_free(api);
        run_for(100 * USEC_PER_MSEC);
        ASSERT(!r.done);

        /* The peer is gone: network errors are retried. */
        peer_stop(&pid, SIGTERM);
        ASSERT_OK(lagoon_api_new(client, c, &api));
        api_send(api, complete, &r);
        ASSERT_EQ(r.result, LAGOON_API_RETRY);
        ASSERT(startswith(r.detail, "Request failed: "));

        /* The peer recorded exactly the two accepted updates, in order, with the claims
         * of our token. */
        ASSERT_OK(read_full_file(record, 1024 * 1024, &data, &size));
        char *nl = strchr(data, '\n');
        ASSERT(nl);
        *nl = 0;
        ASSERT(strlen(nl + 1) > 0 && strchr(nl + 1, '\n') == data + size - 1);
        data[size - 1] = 0;
        const char *lines[2] = {data, nl + 1};
        const char *statuses[2] = {"RUNNING", "COMPLETE"};
        for (unsigned i = 0; i < 2; i++) {
                _cleanup_(json_freep) JsonValue *v = NULL;
                int64_t id = 0, iat = 0, exp = 0;

                ASSERT_OK(json_parse(lines[i], strlen(lines[i]), 16, &v, NULL));
                ASSERT_OK(json_int64(json_get(v, "id"), &id));
                ASSERT_EQ(id, 42);
                ASSERT_STREQ(json_get_string(json_get(v, "patch"), "status"), statuses[i]);
                ASSERT_STREQ(json_get_string(json_get(v, "patch"), "remoteId"), "r-1");
                JsonValue *t = json_get(v, "token");
                ASSERT_STREQ(json_get_string(t, "role"), "admin");
                ASSERT_STREQ(json_get_string(t, "iss"), "lagoon-taskd");
                ASSERT_STREQ(json_get_string(t, "sub"), "lagoon-taskd");
                ASSERT_STREQ(json_get_string(t, "aud"), "api.dev");
                ASSERT_OK(json_int64(json_get(t, "iat"), &iat));
                ASSERT_OK(json_int64(json_get(t, "exp"), &exp));
                ASSERT_EQ(exp - iat, 60);
        }

        free(r.detail);
}

int main(int argc, char *argv[]) {
        if (argc == 2 && streq(argv[1], "--serve"))
                server_main(3, 4);

        ASSERT(mkdtemp(tmpdir));
        peer_unset_proxies();
        log_set_max_level(LOG_DEBUG);

        ASSERT_OK(sd_event_new(&event));
        ASSERT_OK(http_client_new(event, &client));
        start_server();

        RUN(status_and_body);
        RUN(post_body_and_headers);
        RUN(bearer_token);
        RUN(unix_socket);
        RUN(connection_refused);
        RUN(timeout);
        RUN(too_big);
        RUN(cancel);
        RUN(streaming);
        RUN(methods_with_body);
        RUN(many_concurrent);
        RUN(invalid_requests);
        RUN(chain_from_callback);
        RUN(free_from_callback);
        RUN(lagoon_api_answers);
        RUN(https);
        RUN(lagoon_api);

        client = http_client_free(client);
        event = sd_event_unref(event);
        peer_stop(&server_pid, SIGKILL);
        (void) rm_rf(tmpdir);

        if (skipped > 0) {
                printf("%u section(s) skipped (see above)\n", skipped);
                return 77;
        }
        return 0;
}
