/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A forked HTTP/1.1 peer for the C tests of the HTTP, Kubernetes and Lagoon API
 * clients: listening sockets, one process per connection (so a handler may sleep or
 * hang without stopping the others), the request read whole, answers written whole.
 * The test supplies only what its peer answers. */

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>

#include "tests.h"

static inline bool peer_write_all(int fd, const void *data, size_t size) {
        const char *p = data;

        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return false;
                p += n;
                size -= (size_t) n;
        }
        return true;
}

/* A whole answer with Content-Length; extra_headers end each line with "\r\n". */
static inline void peer_respond(int fd, int status, const char *extra_headers, const void *body, size_t size) {
        char head[512];
        int n = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
                         status, size, extra_headers ?: "");

        if (peer_write_all(fd, head, (size_t) n))
                (void) peer_write_all(fd, body, size);
}

typedef struct PeerRequest {
        char buf[65536];
        const char *head_end; /* the blank line ending the head, inside buf */
        char method[16];
        char target[2048];
        char *body; /* NUL-terminated, inside buf */
        size_t body_size;
} PeerRequest;

/* Reads the head and the Content-Length body; false if the client went away or the
 * request does not fit. */
static inline bool peer_read_request(int fd, PeerRequest *req) {
        size_t have = 0, content_length = 0;
        char *end = NULL;
        const char *cl;

        for (;;) {
                ssize_t n = read(fd, req->buf + have, sizeof(req->buf) - 1 - have);
                if (n <= 0)
                        return false;
                have += (size_t) n;
                req->buf[have] = 0;
                end = strstr(req->buf, "\r\n\r\n");
                if (end)
                        break;
                if (have >= sizeof(req->buf) - 1)
                        return false;
        }
        req->head_end = end;
        if (sscanf(req->buf, "%15s %2047s", req->method, req->target) != 2)
                return false;
        cl = strcasestr(req->buf, "\r\nContent-Length:");
        if (cl && cl < end)
                content_length = strtoul(cl + 17, NULL, 10);
        req->body = end + 4;
        req->body_size = have - (size_t) (req->body - req->buf);
        while (req->body_size < content_length &&
               (size_t) (req->body - req->buf) + content_length < sizeof(req->buf) - 1) {
                ssize_t n = read(fd, req->body + req->body_size, content_length - req->body_size);
                if (n <= 0)
                        return false;
                req->body_size += (size_t) n;
        }
        req->body[req->body_size] = 0;
        return true;
}

/* A header's value ("Name: " included in name, e.g. "Authorization: "), or def. */
static inline void peer_header(const PeerRequest *req, const char *name, char *ret, size_t size, const char *def) {
        _cleanup_free_ char *needle = strf("\r\n%s", name);
        const char *h = strcasestr(req->buf, needle);
        size_t n;

        snprintf(ret, size, "%s", def);
        if (!h || h >= req->head_end)
                return;
        h += strlen(needle);
        n = strcspn(h, "\r");
        snprintf(ret, size, "%.*s", (int) MIN(n, size - 1), h);
}

/* A listening TCP socket on 127.0.0.1, its port in *ret_port. */
static inline int peer_listen_tcp(uint16_t *ret_port) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        int one = 1;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ASSERT(fd >= 0);
        ASSERT_OK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
        ASSERT_OK(bind(fd, (struct sockaddr *) &a, sizeof(a)));
        ASSERT_OK(listen(fd, 128));
        ASSERT_OK(getsockname(fd, (struct sockaddr *) &a, &len));
        *ret_port = ntohs(a.sin_port);
        return fd;
}

/* The server process: accepts on every fd and serves each connection in a child of
 * its own; dies with its parent. */
static inline _noreturn_ void peer_serve(const int *fds, size_t n_fds, void (*serve)(int fd)) {
        struct pollfd p[4];

        ASSERT(n_fds <= ELEMENTSOF(p));
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGCHLD, SIG_IGN); /* connection handlers reap themselves */

        for (;;) {
                for (size_t i = 0; i < n_fds; i++)
                        p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
                if (poll(p, n_fds, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        _exit(1);
                }
                for (size_t i = 0; i < n_fds; i++) {
                        if (!(p[i].revents & POLLIN))
                                continue;
                        int fd = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC);
                        if (fd < 0)
                                continue;
                        pid_t pid = fork();
                        if (pid == 0) {
                                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                                for (size_t j = 0; j < n_fds; j++)
                                        close(fds[j]);
                                serve(fd);
                                shutdown(fd, SHUT_WR);
                                close(fd);
                                _exit(0);
                        }
                        close(fd);
                }
        }
}

/* Ends a process this test started, by its PID. */
static inline void peer_stop(pid_t *pid, int sig) {
        if (*pid <= 0)
                return;
        (void) kill(*pid, sig);
        (void) waitpid(*pid, NULL, 0);
        *pid = 0;
}

/* The peers are on loopback: keep any proxy of the environment out of the way. */
static inline void peer_unset_proxies(void) {
        static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                           "ALL_PROXY",  "all_proxy",   "no_proxy"};

        for (size_t i = 0; i < ELEMENTSOF(vars); i++)
                unsetenv(vars[i]);
}
