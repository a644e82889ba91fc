/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* kube.c on a real sd-event loop against a small API server this test forks (TCP on
 * 127.0.0.1, one process per connection, counters in files so answers can change from
 * one request to the next, every request line and Authorization header logged):
 * retries on 500/429 (Retry-After), attempts and deadline, 401/403 texts, Status
 * errors, token file re-read, escaping; a watch with events split across chunks,
 * bookmarks, ERROR 410 and HTTP 410 → relist, stream end → re-watch from the right
 * resourceVersion, 403 on LIST; log follow with partial lines, long lines, sinceTime
 * and "waiting to start". TLS runs against `openssl s_server -WWW` with a CA, server
 * and client certificates made by the openssl CLI at test time (kubeconfig with
 * *-data blobs), and a server certificate from another CA refused. Without openssl
 * that part is skipped and the test exits 77 after the rest passed. */

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
#include <sys/wait.h>
#include <time.h>
#include <arpa/inet.h>

#include "fs-util.h"
#include "http.h"
#include "json.h"
#include "kube.h"
#include "kubeconfig.h"
#include "log.h"
#include "macro.h"
#include "http-peer.h"
#include "loop.h"
#include "tests.h"

static sd_event *event = NULL;
static HttpClient *http = NULL;
static pid_t server_pid = 0;
static uint16_t server_port = 0;
static char tmpdir[] = "/tmp/test-kube-XXXXXX";
static bool in_start = false;
static unsigned skipped = 0;

/* ---- the forked server ---------------------------------------------------------- */

/* Every answer of this API server is JSON. */
static void respond(int fd, int status, const char *extra_headers, const char *body) {
        _cleanup_free_ char *headers = strf("Content-Type: application/json\r\n%s", extra_headers ?: "");

        peer_respond(fd, status, headers, body, strlen(body));
}

static void chunked_start(int fd) {
        const char *head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                           "Connection: close\r\n\r\n";
        (void) peer_write_all(fd, head, strlen(head));
}

static void chunk(int fd, const char *data, size_t size) {
        char line[32];
        int k = snprintf(line, sizeof(line), "%zx\r\n", size);
        (void) peer_write_all(fd, line, (size_t) k);
        (void) peer_write_all(fd, data, size);
        (void) peer_write_all(fd, "\r\n", 2);
}

static void chunks(int fd, const char *s) {
        chunk(fd, s, strlen(s));
        usleep(50 * 1000);
}

static void chunked_end(int fd) {
        (void) peer_write_all(fd, "0\r\n\r\n", 5);
}

/* A counter shared by the connection processes: returns how many times name was
 * counted before. */
static unsigned count(const char *name) {
        char p[PATH_MAX];
        struct stat st;

        snprintf(p, sizeof(p), "%s/count-%s", tmpdir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
                _exit(1);
        (void) write(fd, "x", 1);
        (void) fstat(fd, &st);
        close(fd);
        return (unsigned) st.st_size - 1;
}

#define STATUS(code, reason, msg) \
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"" msg \
        "\",\"reason\":\"" reason "\",\"code\":" #code "}"
#define POD(name, rv) \
        "{\"metadata\":{\"name\":\"" name "\",\"namespace\":\"w1\",\"resourceVersion\":\"" rv "\"},\"status\":{}}"
#define EVENT(type, obj) "{\"type\":\"" type "\",\"object\":" obj "}\n"

static void serve_watch(int fd, const char *query) {
        if (!strstr(query, "watch=1")) {
                unsigned n = count("w1-list");
                if (n == 0)
                        respond(fd, 200, NULL,
                                "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"100\"}"
                                ","
                                "\"items\":[" POD("a", "90") "," POD("b", "95") "]}");
                else if (n == 1)
                        respond(fd, 200, NULL,
                                "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"200\"},\"items\":[" POD(
                                        "a", "150") "," POD("c", "160") "]}");
                else
                        respond(fd, 200, NULL,
                                "{\"kind\":\"PodList\",\"metadata\":{\"resourceVersion\":\"300\"},\"items\":[]}");
                return;
        }

        unsigned n = count("w1-watch");
        if (n == 0) {
                /* One event split in the middle of a string, then two events and a
                 * bookmark in one chunk, then the normal end. */
                static const char added_c[] = EVENT("ADDED", POD("c", "101"));
                chunked_start(fd);
                chunk(fd, added_c, 30);
                usleep(100 * 1000);
                chunks(fd, added_c + 30);
                chunks(fd,
                       EVENT("MODIFIED", POD("a", "102")) EVENT(
                               "BOOKMARK",
                               "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"110\"}}"));
                chunked_end(fd);
        } else if (n == 1) {
                /* Too old: an ERROR event with a 410 Status, stream left open. */
                chunked_start(fd);
                chunks(fd, EVENT("ERROR", STATUS(410, "Expired", "too old resource version: 110 (150)")));
                sleep(30);
        } else if (n == 2) {
                respond(fd, 410, NULL, STATUS(410, "Gone", "too old resource version: 200 (250)"));
        } else {
                chunked_start(fd);
                chunks(fd, EVENT("DELETED", POD("c", "301")));
                sleep(30);
        }
}

static void serve_log(int fd, const char *pod) {
        if (streq(pod, "p1")) {
                chunked_start(fd);
                chunks(fd, "2024-05-01T10:00:00.000000001Z line one\n2024-05-01T10:00:0");
                chunks(fd, "1.5Z line two\n");
                chunks(fd, "no timestamp here\n2024-05-01T12:00:01+02:00 offset\n\n");
                chunks(fd, "2024-05-01T10:00:02Z last without newline");
                chunked_end(fd);
        } else if (streq(pod, "long")) {
                /* 2.5 MiB in one line, in uneven chunks. */
                size_t total = 5 * KUBE_LOG_LINE_MAX / 2, sent = 0;
                char *b = malloc(100000);
                memset(b, 'x', 100000);
                chunked_start(fd);
                chunks(fd, "2024-05-01T10:00:00Z ");
                while (sent < total) {
                        size_t n = MIN((size_t) 99999, total - sent);
                        chunk(fd, b, n);
                        sent += n;
                }
                chunks(fd, "\n2024-05-01T10:00:05Z short\n");
                chunked_end(fd);
                free(b);
        } else if (streq(pod, "waiting"))
                respond(fd, 400, NULL,
                        STATUS(400, "BadRequest",
                               "container \\\"task\\\" in pod \\\"waiting\\\" is waiting to start: ContainerCreating"));
        else if (streq(pod, "denied"))
                respond(fd, 403, NULL,
                        STATUS(403, "Forbidden", "pods \\\"denied\\\" is forbidden: cannot get pods/log"));
        else
                respond(fd, 404, NULL, STATUS(404, "NotFound", "pods \\\"x\\\" not found"));
}

static void serve_connection(int fd) {
        static PeerRequest req;
        char auth[512];

        if (!peer_read_request(fd, &req))
                return;
        peer_header(&req, "Authorization: ", auth, sizeof(auth), "-");
        char *method = req.method, *target = req.target, *body = req.body;
        size_t body_have = req.body_size;

        /* The request log: "METHOD target auth". */
        char logp[PATH_MAX], line[4096];
        snprintf(logp, sizeof(logp), "%s/requests.log", tmpdir);
        int lfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        int ln = snprintf(line, sizeof(line), "%s %s %s\n", method, target, auth);
        if (lfd >= 0) {
                (void) write(lfd, line, (size_t) MIN(ln, (int) sizeof(line) - 1));
                close(lfd);
        }

        char *query = strchr(target, '?');
        if (query)
                *query++ = 0;
        else
                query = (char *) "";
        const char *path = target;

        if (streq(path, "/api/v1/namespaces/ns/pods/retry500")) {
                if (count("retry500") < 2)
                        respond(fd, 500, NULL, STATUS(500, "InternalError", "etcd is sad"));
                else
                        respond(fd, 200, NULL, "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"retry500\"}}");
        } else if (streq(path, "/api/v1/namespaces/ns/pods/retry429")) {
                if (count("retry429") < 1)
                        respond(fd, 429, "Retry-After: 1\r\n", STATUS(429, "TooManyRequests", "slow down"));
                else
                        respond(fd, 200, NULL, "{\"kind\":\"Pod\"}");
        } else if (streq(path, "/api/v1/namespaces/ns/pods/always500")) {
                (void) count("always500");
                respond(fd, 503, NULL, "service unavailable");
        } else if (streq(path, "/api/v1/namespaces/ns/pods") && streq(method, "POST"))
                respond(fd, 403, NULL,
                        STATUS(403, "Forbidden",
                               "pods is forbidden: User \\\"system:serviceaccount:lagoon:taskd\\\" cannot create "
                               "resource \\\"pods\\\" in API group \\\"\\\" in the namespace \\\"ns\\\""));
        else if (streq(path, "/apis/apps/v1/namespaces/ns/deployments/cli")) {
                (void) count("forbidden-get");
                respond(fd, 403, NULL, STATUS(403, "Forbidden", "deployments.apps \\\"cli\\\" is forbidden"));
        } else if (streq(path, "/api/v1/nodes"))
                respond(fd, 401, NULL, STATUS(401, "Unauthorized", "Unauthorized"));
        else if (streq(path, "/api/v1/namespaces/ns/pods/missing"))
                respond(fd, 404, NULL, STATUS(404, "NotFound", "pods \\\"missing\\\" not found"));
        else if (streq(path, "/api/v1/namespaces/ns/pods/exists"))
                respond(fd, 409, NULL, STATUS(409, "AlreadyExists", "pods \\\"exists\\\" already exists"));
        else if (streq(path, "/api/v1/namespaces/ns/pods/notjson"))
                respond(fd, 200, NULL, "<html>hello</html>");
        else if (streq(path, "/api/v1/namespaces/ns/pods/echo")) {
                char out[8192];
                snprintf(out, sizeof(out), "{\"method\":\"%s\",\"query\":\"%s\",\"auth\":\"%s\",\"body\":%s}", method,
                         query, auth, body_have > 0 ? body : "null");
                respond(fd, 200, NULL, out);
        } else if (streq(path, "/api/v1/namespaces/ns/pods/empty"))
                respond(fd, 200, NULL, "");
        else if (streq(path, "/api/v1/namespaces/ns/pods/slow")) {
                sleep(3);
                respond(fd, 200, NULL, "{}");
        } else if (streq(path, "/api/v1/namespaces/w1/pods"))
                serve_watch(fd, query);
        else if (streq(path, "/api/v1/namespaces/denied/pods"))
                respond(fd, 403, NULL, STATUS(403, "Forbidden", "pods is forbidden: cannot list pods"));
        else if (startswith(path, "/api/v1/namespaces/ns/pods/") && endswith(path, "/log")) {
                char pod[64] = "";
                (void) sscanf(path + strlen("/api/v1/namespaces/ns/pods/"), "%63[^/]", pod);
                serve_log(fd, pod);
        } else
                respond(fd, 404, NULL, STATUS(404, "NotFound", "no such path"));
}

static void start_server(void) {
        int tcp_fd = peer_listen_tcp(&server_port);

        server_pid = fork();
        ASSERT(server_pid >= 0);
        if (server_pid == 0)
                peer_serve(&tcp_fd, 1, serve_connection);
        close(tcp_fd);
}

static uint16_t free_port(void) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &a, sizeof(a)));
        ASSERT_OK(getsockname(fd, (struct sockaddr *) &a, &len));
        close(fd);
        return ntohs(a.sin_port);
}

static unsigned counted(const char *name) {
        _cleanup_free_ char *p = strf("%s/count-%s", tmpdir, name);
        struct stat st;
        return stat(p, &st) < 0 ? 0 : (unsigned) st.st_size;
}

static char *requests_log(void) {
        _cleanup_free_ char *p = strf("%s/requests.log", tmpdir);
        char *t = NULL;
        if (read_full_file(p, 1 << 20, &t, NULL) < 0)
                return strdup("");
        return t;
}

/* ---- driving the client ---------------------------------------------------------- */

static void run_until(bool *done, uint64_t max_usec) {
        loop_run_until(event, done, max_usec);
}

static void run_for(uint64_t usec) {
        loop_run_for(event, usec);
}

typedef struct Result {
        bool done;
        int error;
        long status;
        JsonValue *body;
        char *text;
        unsigned calls;
} Result;

static void result_clear(Result *r) {
        json_free(r->body);
        free(r->text);
        *r = (Result){};
}

static void on_done(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Result *r = userdata;

        ASSERT(!in_start);
        r->calls++;
        r->done = true;
        r->error = error;
        r->status = status;
        r->body = kube_call_take_body(call);
        ASSERT(body == r->body);
        ASSERT(!kube_call_take_body(call));
        ASSERT(!kube_call_cancel(call)); /* a no-op inside the callback */
        if (error < 0) {
                ASSERT(text && text[0]);
                r->text = strdup(text);
        } else
                ASSERT(!text);
}

static void request(KubeClient *k, const char *method, const char *path, const char *ct, const char *body, Result *r) {
        result_clear(r);
        in_start = true;
        ASSERT_OK(kube_request(k, method, path, ct, body, on_done, r, NULL));
        in_start = false;
        ASSERT(!r->done);
        run_until(&r->done, 30 * USEC_PER_SEC);
        ASSERT_EQ(r->calls, 1u);
}

static KubeClient *new_client(const char *server, const KubeCredentials *base) {
        _cleanup_(kube_credentials_freep) KubeCredentials *c =
                base ? kube_credentials_copy(base) : kube_credentials_new();
        KubeClient *k = NULL;

        ASSERT(c);
        if (server)
                ASSERT_OK(free_and_strdup(&c->server, server));
        ASSERT_OK(kube_client_new(event, http, c, &k));
        kube_client_set_limits(k, &(KubeLimits){
                                          .backoff_min_usec = 50 * USEC_PER_MSEC,
                                          .backoff_max_usec = 200 * USEC_PER_MSEC,
                                          .retry_attempts_max = 4,
                                          .auth_retry_usec = 300 * USEC_PER_MSEC,
                                          .request_timeout_usec = 2 * USEC_PER_SEC,
                                  });
        return k;
}

/* ---- requests ---- */

TEST(helpers) {
        _cleanup_free_ char *e = kube_escape("lagoon.sh/jobType=task,app!=x y~_-.");
        ASSERT_STREQ(e, "lagoon.sh%2FjobType%3Dtask%2Capp%21%3Dx%20y~_-.");
        _cleanup_free_ char *p = strdup("/api/v1/pods");
        ASSERT_OK(kube_path_append_query(&p, "labelSelector", "a=b,c"));
        ASSERT_OK(kube_path_append_query(&p, "fieldSelector", NULL));
        ASSERT_OK(kube_path_append_query(&p, "limit", "5"));
        ASSERT_STREQ(p, "/api/v1/pods?labelSelector=a%3Db%2Cc&limit=5");

        uint64_t t = 0;
        ASSERT_OK(kube_parse_timestamp("2024-05-01T10:00:00Z", 20, &t));
        ASSERT_EQ(t, UINT64_C(1714557600) * USEC_PER_SEC);
        ASSERT_OK(kube_parse_timestamp("2024-05-01T10:00:00.123456789Z", 30, &t));
        ASSERT_EQ(t, UINT64_C(1714557600) * USEC_PER_SEC + 123456);
        ASSERT_OK(kube_parse_timestamp("2024-05-01T12:00:00.5+02:00", 27, &t));
        ASSERT_EQ(t, UINT64_C(1714557600) * USEC_PER_SEC + 500000);
        ASSERT_EQ(kube_parse_timestamp("2024-05-01T10:00:00", 19, &t), -EINVAL);
        ASSERT_EQ(kube_parse_timestamp("2024-05-01 10:00:00Z", 20, &t), -EINVAL);
        ASSERT_EQ(kube_parse_timestamp("2024-13-01T10:00:00Z", 20, &t), -EINVAL);
        ASSERT_EQ(kube_parse_timestamp("2024-05-01T10:00:00.Z", 21, &t), -EINVAL);
        ASSERT_EQ(kube_parse_timestamp("2024-05-01T10:00:00Zx", 21, &t), -EINVAL);

        ASSERT_STREQ(kube_watch_event_type_to_string(KUBE_WATCH_SYNCED), "SYNCED");
        ASSERT(!kube_watch_event_type_to_string(_KUBE_WATCH_EVENT_MAX));
}

TEST(retries) {
        _cleanup_free_ char *server = strf("http://127.0.0.1:%u", server_port);
        _cleanup_(kube_client_freep) KubeClient *k = new_client(server, NULL);
        Result r = {};

        /* Two 500s, then the answer. */
        request(k, "GET", "/api/v1/namespaces/ns/pods/retry500", NULL, NULL, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_STREQ(json_get_string(json_get(r.body, "metadata"), "name"), "retry500");
        ASSERT_EQ(counted("retry500"), 3u);

        /* 429 with Retry-After: 1 is honoured even though the backoff is 50 ms. */
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        request(k, "GET", "/api/v1/namespaces/ns/pods/retry429", NULL, NULL, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT(now_usec(CLOCK_MONOTONIC) - t0 >= 900 * USEC_PER_MSEC);
        ASSERT_EQ(counted("retry429"), 2u);

        /* Always 503: at most retry_attempts_max attempts, then the error. */
        request(k, "GET", "/api/v1/namespaces/ns/pods/always500", NULL, NULL, &r);
        ASSERT_EQ(r.error, -EREMOTEIO);
        ASSERT_EQ(r.status, 503);
        ASSERT(!r.body);
        ASSERT(strstr(r.text, "HTTP 503"));
        ASSERT(strstr(r.text, "service unavailable"));
        ASSERT_EQ(counted("always500"), 4u);

        /* The deadline ends retries before the attempts do. */
        kube_client_set_limits(k, &(KubeLimits){.retry_attempts_max = 100, .retry_deadline_usec = 500 * USEC_PER_MSEC});
        t0 = now_usec(CLOCK_MONOTONIC);
        request(k, "GET", "/api/v1/namespaces/ns/pods/always500", NULL, NULL, &r);
        ASSERT_EQ(r.error, -EREMOTEIO);
        ASSERT(now_usec(CLOCK_MONOTONIC) - t0 < 2 * USEC_PER_SEC);
        ASSERT(counted("always500") < 4u + 10u);
        result_clear(&r);

        /* Connection refused is retried too, then reported. */
        _cleanup_free_ char *closed = strf("http://127.0.0.1:%u", free_port());
        _cleanup_(kube_client_freep) KubeClient *k2 = new_client(closed, NULL);
        t0 = now_usec(CLOCK_MONOTONIC);
        request(k2, "GET", "/api/v1/pods", NULL, NULL, &r);
        ASSERT_EQ(r.error, -ECONNREFUSED);
        ASSERT_EQ(r.status, 0);
        ASSERT(now_usec(CLOCK_MONOTONIC) - t0 >= 50 * USEC_PER_MSEC + 100 * USEC_PER_MSEC);
        result_clear(&r);
}

TEST(errors) {
        _cleanup_free_ char *server = strf("http://127.0.0.1:%u/", server_port);
        _cleanup_(kube_client_freep) KubeClient *k = new_client(server, NULL);
        Result r = {};

        request(k, "POST", "/api/v1/namespaces/ns/pods", NULL, "{\"kind\":\"Pod\"}", &r);
        ASSERT_EQ(r.error, -EPERM);
        ASSERT_EQ(r.status, 403);
        printf("  403: %s\n", r.text);
        ASSERT(startswith(r.text, "forbidden: cannot create pods in namespace \"ns\" (Kubernetes: pods is forbidden: "
                                  "User \"system:serviceaccount:lagoon:taskd\" cannot create"));
        ASSERT_STREQ(json_get_string(r.body, "reason"), "Forbidden");

        /* Never retried; group and name in the text. */
        request(k, "GET", "/apis/apps/v1/namespaces/ns/deployments/cli", NULL, NULL, &r);
        ASSERT_EQ(r.error, -EPERM);
        ASSERT(startswith(r.text, "forbidden: cannot get deployments.apps \"cli\" in namespace \"ns\""));
        ASSERT_EQ(counted("forbidden-get"), 1u);

        request(k, "GET", "/api/v1/nodes?watch=1", NULL, NULL, &r);
        ASSERT_EQ(r.error, -EACCES);
        printf("  401: %s\n", r.text);
        ASSERT(startswith(r.text, "unauthorized: the API server rejected the credentials to watch nodes at the "
                                  "cluster scope (Kubernetes: Unauthorized)"));

        request(k, "GET", "/api/v1/namespaces/ns/pods/missing", NULL, NULL, &r);
        ASSERT_EQ(r.error, -ENOENT);
        ASSERT_EQ(r.status, 404);
        ASSERT_STREQ(json_get_string(r.body, "kind"), "Status");
        ASSERT(strstr(r.text, "not found"));

        request(k, "PUT", "/api/v1/namespaces/ns/pods/exists", NULL, "{}", &r);
        ASSERT_EQ(r.error, -EEXIST);

        request(k, "GET", "/api/v1/namespaces/ns/pods/notjson", NULL, NULL, &r);
        ASSERT_EQ(r.error, -EBADMSG);
        ASSERT(!r.body);

        request(k, "DELETE", "/api/v1/namespaces/ns/pods/empty", NULL, NULL, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT(!r.body);

        /* The per-attempt timeout (2 s here) ends a hanging answer; retried, then reported. */
        kube_client_set_limits(k, &(KubeLimits){.request_timeout_usec = 500 * USEC_PER_MSEC, .retry_attempts_max = 2});
        request(k, "GET", "/api/v1/namespaces/ns/pods/slow", NULL, NULL, &r);
        ASSERT_EQ(r.error, -ETIMEDOUT);

        ASSERT_EQ(kube_request(k, "GET", "no-slash", NULL, NULL, on_done, &r, NULL), -EINVAL);
        result_clear(&r);
}

TEST(tokens_and_bodies) {
        _cleanup_free_ char *server = strf("http://127.0.0.1:%u", server_port), *tf = strf("%s/token", tmpdir);
        _cleanup_(kube_credentials_freep) KubeCredentials *c = kube_credentials_new();
        Result r = {};

        ASSERT(c);
        ASSERT_OK(write_file_atomic(tf, "first-token\n", 12, 0600));
        c->token_file = strdup(tf);
        _cleanup_(kube_client_freep) KubeClient *k = new_client(server, c);

        request(k, "PATCH", "/api/v1/namespaces/ns/pods/echo?labelSelector=a%3Db", "application/merge-patch+json",
                "{\"metadata\":{\"labels\":{\"x\":\"y\"}}}", &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_STREQ(json_get_string(r.body, "method"), "PATCH");
        ASSERT_STREQ(json_get_string(r.body, "auth"), "Bearer first-token");
        ASSERT_STREQ(json_get_string(r.body, "query"), "labelSelector=a%3Db");
        ASSERT_STREQ(json_get_string(json_get_path(r.body, "body", "metadata", "labels", NULL), "x"), "y");

        /* Rotated: the next request carries the new token. */
        ASSERT_OK(write_file_atomic(tf, "second-token", 12, 0600));
        request(k, "DELETE", "/api/v1/namespaces/ns/pods/echo", NULL, "{\"gracePeriodSeconds\":0}", &r);
        ASSERT_STREQ(json_get_string(r.body, "auth"), "Bearer second-token");
        ASSERT_STREQ(json_get_string(r.body, "method"), "DELETE");

        /* A token file that disappeared: the request cannot start. */
        ASSERT_OK(unlink(tf));
        ASSERT_EQ(kube_request(k, "GET", "/api/v1/namespaces/ns/pods/echo", NULL, NULL, on_done, &r, NULL), -ENOENT);

        /* A static token. */
        _cleanup_(kube_credentials_freep) KubeCredentials *c2 = kube_credentials_new();
        c2->token = strdup("static");
        _cleanup_(kube_client_freep) KubeClient *k2 = new_client(server, c2);
        request(k2, "GET", "/api/v1/namespaces/ns/pods/echo", NULL, NULL, &r);
        ASSERT_STREQ(json_get_string(r.body, "auth"), "Bearer static");
        ASSERT(json_type(json_get(r.body, "body")) == JSON_NULL);
        result_clear(&r);
}

TEST(cancel) {
        _cleanup_free_ char *server = strf("http://127.0.0.1:%u", server_port);
        _cleanup_(kube_client_freep) KubeClient *k = new_client(server, NULL);
        Result r1 = {}, r2 = {};
        KubeCall *c1 = NULL, *c2 = NULL;

        kube_client_set_limits(k, &(KubeLimits){.backoff_min_usec = 300 * USEC_PER_MSEC});
        ASSERT_OK(kube_request(k, "GET", "/api/v1/namespaces/ns/pods/always500", NULL, NULL, on_done, &r1, &c1));
        ASSERT_OK(kube_request(k, "GET", "/api/v1/namespaces/ns/pods/slow", NULL, NULL, on_done, &r2, &c2));
        run_for(200 * USEC_PER_MSEC);
        /* One between attempts, one in flight. */
        ASSERT(!kube_call_cancel(c1));
        ASSERT(!kube_call_cancel(c2));
        run_for(800 * USEC_PER_MSEC);
        ASSERT(!r1.done && !r2.done);

        /* Freeing the client cancels what is pending, silently. */
        ASSERT_OK(kube_request(k, "GET", "/api/v1/namespaces/ns/pods/slow", NULL, NULL, on_done, &r2, NULL));
        k = kube_client_free(k);
        run_for(100 * USEC_PER_MSEC);
        ASSERT(!r2.done);
        ASSERT_EQ(http_client_n_pending(http), 0u);
}

/* ---- watches ---- */

typedef struct WatchLog {
        char text[8192]; /* "ADDED a 90;" … */
        unsigned synced, errors, deleted;
        int last_error;
        char *last_error_text;
        bool free_on_delete;
        KubeWatch *w;
} WatchLog;

static void
on_watch(KubeWatch *w, KubeWatchEventType type, JsonValue *object, int error, const char *text, void *userdata) {
        WatchLog *l = userdata;
        size_t n = strlen(l->text);

        ASSERT(!in_start);
        if (type == KUBE_WATCH_ERROR) {
                ASSERT(error < 0 && text);
                l->errors++;
                l->last_error = error;
                free(l->last_error_text);
                l->last_error_text = strdup(text);
                return;
        }
        if (type == KUBE_WATCH_SYNCED) {
                ASSERT(!object);
                l->synced++;
                snprintf(l->text + n, sizeof(l->text) - n, "SYNCED;");
                return;
        }
        ASSERT(json_is_object(object));
        snprintf(l->text + n, sizeof(l->text) - n, "%s %s %s;", kube_watch_event_type_to_string(type),
                 json_get_string(json_get(object, "metadata"), "name"),
                 json_get_string(json_get(object, "metadata"), "resourceVersion"));
        if (type == KUBE_WATCH_DELETED) {
                l->deleted++;
                if (l->free_on_delete) {
                        /* Freed from its own callback, in the middle of a stream. */
                        ASSERT(!kube_watch_free(w));
                        l->w = NULL;
                }
        }
}

TEST(watch) {
        _cleanup_free_ char *server = strf("http://127.0.0.1:%u", server_port);
        _cleanup_(kube_client_freep) KubeClient *k = new_client(server, NULL);
        WatchLog l = {.free_on_delete = true};

        in_start = true;
        ASSERT_OK(kube_watch_new(k, "/api/v1/namespaces/w1/pods", "lagoon.sh/jobType=task", "spec.nodeName=node-1",
                                 on_watch, &l, &l.w));
        in_start = false;
        ASSERT(!kube_watch_resource_version(l.w));

        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 20 * USEC_PER_SEC;
        while (l.deleted == 0) {
                ASSERT(now_usec(CLOCK_MONOTONIC) < deadline);
                ASSERT_OK(sd_event_run(event, 100 * USEC_PER_MSEC));
        }
        printf("  events: %s\n", l.text);
        ASSERT_STREQ(l.text, "ADDED a 90;ADDED b 95;SYNCED;"   /* first LIST */
                             "ADDED c 101;MODIFIED a 102;"     /* WATCH from 100, bookmark 110, end */
                             "ADDED a 150;ADDED c 160;SYNCED;" /* WATCH from 110: ERROR 410 → LIST */
                             "SYNCED;"                         /* WATCH from 200: HTTP 410 → LIST */
                             "DELETED c 301;");                /* WATCH from 300 */
        ASSERT_EQ(l.errors, 0u);
        ASSERT(!l.w);
        ASSERT_EQ(counted("w1-list"), 3u);
        ASSERT_EQ(counted("w1-watch"), 4u);

        _cleanup_free_ char *log = requests_log();
        ASSERT(strstr(log, "GET /api/v1/namespaces/w1/pods?labelSelector=lagoon.sh%2FjobType%3Dtask&fieldSelector="
                           "spec.nodeName%3Dnode-1 -"));
        ASSERT(strstr(log, "GET /api/v1/namespaces/w1/pods?labelSelector=lagoon.sh%2FjobType%3Dtask&fieldSelector="
                           "spec.nodeName%3Dnode-1&watch=1&resourceVersion=100&allowWatchBookmarks=true&"
                           "timeoutSeconds=290 -"));
        ASSERT(strstr(log, "&watch=1&resourceVersion=110&"));
        ASSERT(strstr(log, "&watch=1&resourceVersion=200&"));
        ASSERT(strstr(log, "&watch=1&resourceVersion=300&"));

        /* The freed watch's stream is gone from the HTTP client. */
        run_for(200 * USEC_PER_MSEC);
        ASSERT_EQ(http_client_n_pending(http), 0u);
        free(l.last_error_text);
}

TEST(watch_forbidden) {
        _cleanup_free_ char *server = strf("http://127.0.0.1:%u", server_port);
        _cleanup_(kube_client_freep) KubeClient *k = new_client(server, NULL);
        _cleanup_(kube_watch_freep) KubeWatch *w = NULL;
        WatchLog l = {};

        ASSERT_OK(kube_watch_new(k, "/api/v1/namespaces/denied/pods", NULL, NULL, on_watch, &l, &w));
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 10 * USEC_PER_SEC;
        while (l.errors < 2) {
                ASSERT(now_usec(CLOCK_MONOTONIC) < deadline);
                ASSERT_OK(sd_event_run(event, 100 * USEC_PER_MSEC));
        }
        printf("  watch 403: %s\n", l.last_error_text);
        ASSERT_EQ(l.last_error, -EPERM);
        ASSERT(startswith(l.last_error_text, "forbidden: cannot list pods in namespace \"denied\""));
        ASSERT_EQ(l.synced, 0u);
        free(l.last_error_text);

        ASSERT_EQ(kube_watch_new(k, "/api/v1/pods?x=1", NULL, NULL, on_watch, &l, &w), -EINVAL);
}

/* ---- log follow ---- */

typedef struct LogResult {
        char *lines[16];
        uint64_t ts[16];
        size_t sizes[16];
        unsigned n;
        bool ended;
        int error;
        char *text;
} LogResult;

static void log_result_clear(LogResult *r) {
        for (unsigned i = 0; i < r->n; i++)
                free(r->lines[i]);
        free(r->text);
        *r = (LogResult){};
}

static void on_line(KubeLog *l, uint64_t ts, const char *text, size_t size, void *userdata) {
        LogResult *r = userdata;

        ASSERT(!in_start);
        ASSERT(!r->ended);
        ASSERT_EQ(text[size], 0);
        ASSERT(r->n < ELEMENTSOF(r->lines));
        r->lines[r->n] = memdup(text, size + 1);
        r->sizes[r->n] = size;
        r->ts[r->n++] = ts;
}

static void on_log_end(KubeLog *l, int error, const char *text, void *userdata) {
        LogResult *r = userdata;

        ASSERT(!r->ended);
        r->ended = true;
        r->error = error;
        r->text = text ? strdup(text) : NULL;
        ASSERT(!error == !text);
}

static void follow(KubeClient *k, const char *pod, uint64_t since, LogResult *r) {
        _cleanup_(kube_log_freep) KubeLog *l = NULL;

        log_result_clear(r);
        in_start = true;
        ASSERT_OK(kube_log_follow(k, "ns", pod, "task", since, on_line, on_log_end, r, &l));
        in_start = false;
        run_until(&r->ended, 20 * USEC_PER_SEC);
}

TEST(log_follow) {
        _cleanup_free_ char *server = strf("http://127.0.0.1:%u", server_port);
        _cleanup_(kube_client_freep) KubeClient *k = new_client(server, NULL);
        uint64_t base = UINT64_C(1714557600) * USEC_PER_SEC;
        LogResult r = {};

        follow(k, "p1", 0, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.n, 6u);
        ASSERT_STREQ(r.lines[0], "line one");
        ASSERT_EQ(r.ts[0], base);
        ASSERT_STREQ(r.lines[1], "line two");
        ASSERT_EQ(r.ts[1], base + USEC_PER_SEC + 500000);
        ASSERT_STREQ(r.lines[2], "no timestamp here");
        ASSERT_EQ(r.ts[2], 0u);
        ASSERT_STREQ(r.lines[3], "offset");
        ASSERT_EQ(r.ts[3], base + USEC_PER_SEC);
        ASSERT_STREQ(r.lines[4], "");
        ASSERT_STREQ(r.lines[5], "last without newline");
        ASSERT_EQ(r.ts[5], base + 2 * USEC_PER_SEC);

        _cleanup_free_ char *log = requests_log();
        ASSERT(strstr(log, "GET /api/v1/namespaces/ns/pods/p1/log?container=task&follow=true&timestamps=true -\n"));

        /* Resumed: sinceTime in whole seconds, earlier lines dropped here. */
        follow(k, "p1", base + USEC_PER_SEC + 200000, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_STREQ(r.lines[0], "line two");
        ASSERT_STREQ(r.lines[1], "no timestamp here");
        ASSERT_EQ(r.n, 4u);
        free(log);
        log = requests_log();
        ASSERT(strstr(log, "&timestamps=true&sinceTime=2024-05-01T10%3A00%3A01Z -\n"));

        /* A 2.5 MiB line in pieces of at most 1 MiB with the line's timestamp. */
        follow(k, "long", 0, &r);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.n, 4u);
        ASSERT_EQ(r.sizes[0], KUBE_LOG_LINE_MAX);
        ASSERT_EQ(r.sizes[1], KUBE_LOG_LINE_MAX);
        ASSERT_EQ(r.sizes[2], KUBE_LOG_LINE_MAX / 2);
        ASSERT(r.ts[0] == base && r.ts[1] == base && r.ts[2] == base);
        ASSERT(r.lines[1][0] == 'x' && r.lines[2][KUBE_LOG_LINE_MAX / 2 - 1] == 'x');
        ASSERT_STREQ(r.lines[3], "short");
        ASSERT_EQ(r.ts[3], base + 5 * USEC_PER_SEC);

        follow(k, "waiting", 0, &r);
        ASSERT_EQ(r.error, -EAGAIN);
        ASSERT_EQ(r.n, 0u);
        ASSERT(strstr(r.text, "waiting to start"));

        follow(k, "denied", 0, &r);
        ASSERT_EQ(r.error, -EPERM);
        printf("  log 403: %s\n", r.text);
        ASSERT(startswith(r.text, "forbidden: cannot get pods/log \"denied\" in namespace \"ns\""));

        follow(k, "gone", 0, &r);
        ASSERT_EQ(r.error, -ENOENT);

        /* Freed while streaming: no end callback. */
        log_result_clear(&r);
        KubeLog *l = NULL;
        ASSERT_OK(kube_log_follow(k, "ns", "long", NULL, 0, on_line, on_log_end, &r, &l));
        run_for(30 * USEC_PER_MSEC);
        ASSERT(!kube_log_free(l));
        run_for(300 * USEC_PER_MSEC);
        ASSERT(!r.ended);
        ASSERT_EQ(http_client_n_pending(http), 0u);
        log_result_clear(&r);
}

/* ---- TLS ---- */

static bool have_openssl(void) {
        return system("openssl version >/dev/null 2>&1") == 0;
}

static void sh(const char *dir, const char *cmd) {
        _cleanup_free_ char *c = strf("cd %s && (%s) >/dev/null 2>&1", dir, cmd);
        if (system(c) != 0) {
                fprintf(stderr, "failed: %s\n", cmd);
                abort();
        }
}

static char *b64_file(const char *path) {
        _cleanup_free_ char *c = strf("base64 -w0 %s", path);
        FILE *f = popen(c, "r");
        char *line = NULL;
        size_t n = 0;
        ASSERT(f);
        ASSERT(getline(&line, &n, f) > 0);
        pclose(f);
        line[strcspn(line, "\n")] = 0;
        return line;
}

TEST(tls) {
        _cleanup_free_ char *dir = strf("%s/tls", tmpdir), *www = NULL;
        pid_t pid = 0;
        Result r = {};

        if (!have_openssl()) {
                printf("  skipped: needs openssl\n");
                skipped++;
                return;
        }
        ASSERT_OK(mkdir_p(dir, 0755));
        /* A CA, a server certificate for 127.0.0.1 and a client certificate from it, and
         * an unrelated CA. */
        sh(dir, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=test-ca "
                "-keyout ca.key -out ca.crt");
        sh(dir, "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=other-ca "
                "-keyout other.key -out other.crt");
        sh(dir, "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 "
                "-keyout server.key -out server.csr && "
                "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
                "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext "
                "-out server.crt");
        sh(dir, "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "
                "/CN=system:node:n1/O=system:nodes "
                "-keyout client.key -out client.csr && "
                "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out client.crt");
        /* What -WWW serves: ./api/v1/namespaces/ns/pods/p */
        www = strf("%s/api/v1/namespaces/ns/pods", dir);
        ASSERT_OK(mkdir_p(www, 0755));
        _cleanup_free_ char *pod = strf("%s/p", www);
        ASSERT_OK(write_file_atomic(pod, "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}", 38, 0644));

        uint16_t port = free_port();
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                char accept[32];
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                snprintf(accept, sizeof(accept), "127.0.0.1:%u", port);
                if (chdir(dir) < 0)
                        _exit(1);
                int null = open("/dev/null", O_RDWR);
                dup2(null, 0);
                dup2(null, 1);
                dup2(null, 2);
                execlp("openssl", "openssl", "s_server", "-accept", accept, "-cert", "server.crt", "-key", "server.key",
                       "-CAfile", "ca.crt", "-Verify", "1", "-WWW", "-quiet", NULL);
                _exit(127);
        }
        /* Wait until it listens. */
        for (unsigned i = 0;; i++) {
                struct sockaddr_in a = {
                        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                bool ok = connect(fd, (struct sockaddr *) &a, sizeof(a)) == 0;
                close(fd);
                if (ok)
                        break;
                ASSERT(i < 100);
                usleep(50 * 1000);
        }

        /* Credentials from a kind-style kubeconfig with embedded blobs. */
        _cleanup_free_ char *ca = strf("%s/ca.crt", dir), *crt = strf("%s/client.crt", dir),
                            *key = strf("%s/client.key", dir), *other = strf("%s/other.crt", dir);
        _cleanup_free_ char *ca64 = b64_file(ca), *crt64 = b64_file(crt), *key64 = b64_file(key);
        _cleanup_free_ char *kc = strf("apiVersion: v1\nkind: Config\ncurrent-context: t\n"
                                       "clusters:\n- name: t\n  cluster:\n    server: https://127.0.0.1:%u\n"
                                       "    certificate-authority-data: %s\n"
                                       "contexts:\n- name: t\n  context: {cluster: t, user: t}\n"
                                       "users:\n- name: t\n  user:\n    client-certificate-data: %s\n"
                                       "    client-key-data: %s\n",
                                       port, ca64, crt64, key64);
        _cleanup_free_ char *kc_path = strf("%s/kubeconfig", dir), *data = strf("%s/data", dir);
        ASSERT_OK(write_file_atomic(kc_path, kc, strlen(kc), 0600));
        _cleanup_(kube_credentials_freep) KubeCredentials *cred = NULL;
        ASSERT_OK(kube_credentials_from_kubeconfig(kc_path, NULL, data, &cred, NULL));

        _cleanup_(kube_client_freep) KubeClient *k = new_client(NULL, cred);
        request(k, "GET", "/api/v1/namespaces/ns/pods/p", NULL, NULL, &r);
        if (r.error < 0)
                fprintf(stderr, "TLS request failed: %s\n", r.text);
        ASSERT_EQ(r.error, 0);
        ASSERT_EQ(r.status, 200);
        ASSERT_STREQ(json_get_string(json_get(r.body, "metadata"), "name"), "p");

        /* A server certificate from a CA we do not trust: refused, not retried. */
        _cleanup_(kube_credentials_freep) KubeCredentials *bad = kube_credentials_copy(cred);
        ASSERT_OK(free_and_strdup(&bad->ca_file, other));
        _cleanup_(kube_client_freep) KubeClient *kb = new_client(NULL, bad);
        /* A retry would wait 2 s first. */
        kube_client_set_limits(
                kb, &(KubeLimits){.backoff_min_usec = 2 * USEC_PER_SEC, .backoff_max_usec = 2 * USEC_PER_SEC});
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        request(kb, "GET", "/api/v1/namespaces/ns/pods/p", NULL, NULL, &r);
        printf("  untrusted server: %s\n", r.text);
        ASSERT_EQ(r.error, -EPROTO);
        ASSERT(now_usec(CLOCK_MONOTONIC) - t0 < 1500 * USEC_PER_MSEC);

        /* No client certificate: the server requires one. */
        _cleanup_(kube_credentials_freep) KubeCredentials *anon = kube_credentials_copy(cred);
        anon->client_cert_file = mfree(anon->client_cert_file);
        anon->client_key_file = mfree(anon->client_key_file);
        _cleanup_(kube_client_freep) KubeClient *ka = new_client(NULL, anon);
        kube_client_set_limits(ka, &(KubeLimits){.retry_attempts_max = 1});
        request(ka, "GET", "/api/v1/namespaces/ns/pods/p", NULL, NULL, &r);
        printf("  without client certificate: %d %s\n", r.error, strna(r.text));
        ASSERT(r.error < 0);

        result_clear(&r);
        peer_stop(&pid, SIGTERM);
}

int main(int argc, char *argv[]) {
        ASSERT(mkdtemp(tmpdir));
        peer_unset_proxies();
        log_set_max_level(LOG_INFO);

        ASSERT_OK(sd_event_new(&event));
        ASSERT_OK(http_client_new(event, &http));
        start_server();

        RUN(helpers);
        RUN(retries);
        RUN(errors);
        RUN(tokens_and_bodies);
        RUN(cancel);
        RUN(watch);
        RUN(watch_forbidden);
        RUN(log_follow);
        RUN(tls);

        peer_stop(&server_pid, SIGKILL);
        http = http_client_free(http);
        event = sd_event_unref(event);
        ASSERT_OK(rm_rf(tmpdir));
        if (skipped > 0) {
                printf("%u part(s) skipped\n", skipped);
                return 77;
        }
        return 0;
}
