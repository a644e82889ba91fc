/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The AMQP client (amqp-client.h) against a real rabbitmq-server, started and stopped through
 * tests/harness/rabbitmq.sh, on the test's own sd-event loop: topology, publisher
 * confirms in order, consuming (routing key and body intact, 4 MiB body), ack, reject
 * with and without requeue, prefetch, a channel error reported and recovered, a silent
 * (SIGSTOPped) broker detected by heartbeats, a stopped broker and the reconnect once it
 * is back, and connection refused with backoff. Skips (77) when not root or without
 * rabbitmq-server. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "amqp-client.h"
#include "log.h"
#include "macro.h"

static void fail_cleanup(void);
#define TEST_FAIL_HOOK() fail_cleanup()
#include "tests.h"

#define EXCHANGE "taskd-test-x"
#define HEARTBEAT 2

typedef struct Delivery {
        char *queue;
        char *routing_key;
        uint64_t tag;
        char *body;
        size_t size;
} Delivery;

typedef struct Confirm {
        uint64_t tag;
        bool ack;
} Confirm;

typedef struct Peer {
        const char *name;
        Delivery deliveries[256];
        size_t n_deliveries;
        Confirm confirms[256];
        size_t n_confirms;
        bool connected;
        unsigned n_up, n_down;
        char *last_reason;
        char *reasons[64];
        uint64_t down_at[16];
        bool auto_ack;
        AmqpClient **free_me; /* freed from inside its first delivery callback */
        unsigned n_returns;
        char *return_key, *return_body;
        size_t confirms_at_return; /* n_confirms when the last return came */
} Peer;

static char harness[PATH_MAX];
static char broker_dir[PATH_MAX];
static bool broker_running;
static sd_event *event;

static void remove_broker_dir(void) {
        char cmd[PATH_MAX + 64];

        if (strncmp(broker_dir, "/tmp/test-amqp.", 15) != 0)
                return;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", broker_dir);
        (void) system(cmd);
        broker_dir[0] = 0;
}

static void fail_cleanup(void) {
        if (broker_running) {
                char cmd[2 * PATH_MAX + 64];

                snprintf(cmd, sizeof(cmd), "'%s' stop '%s' >&2", harness, broker_dir);
                (void) system(cmd);
                broker_running = false;
        }
        remove_broker_dir();
}

static double seconds(uint64_t usec) {
        return (double) usec / USEC_PER_SEC;
}

/* Runs harness cmd, keeping the event loop running meanwhile (a client must be able to
 * answer the broker, e.g. its connection.close on shutdown). Returns its exit status,
 * the first stdout line in out. */
static int run_harness(const char *cmd, const char *extra, char *out, size_t out_size) {
        int pipefd[2], status = 0;
        char buf[4096];
        ssize_t n = 0;
        pid_t pid;

        ASSERT(pipe2(pipefd, O_CLOEXEC) == 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                dup2(pipefd[1], STDOUT_FILENO);
                execl(harness, harness, cmd, broker_dir, extra, (char *) NULL);
                _exit(127);
        }
        close(pipefd[1]);
        for (;;) {
                pid_t r = waitpid(pid, &status, WNOHANG);

                ASSERT(r >= 0);
                if (r == pid)
                        break;
                ASSERT(sd_event_run(event, 50 * USEC_PER_MSEC) >= 0);
        }
        n = read(pipefd[0], buf, sizeof(buf) - 1);
        close(pipefd[0]);
        buf[n > 0 ? n : 0] = 0;
        if (out) {
                buf[strcspn(buf, "\n")] = 0;
                ASSERT(strlen(buf) < out_size);
                strcpy(out, buf);
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 255;
}

static void find_harness(void) {
        const char *srcdir = getenv("TEST_SRCDIR");
        char exe[PATH_MAX], path[PATH_MAX + 256];
        ssize_t n;

        if (srcdir) {
                snprintf(harness, sizeof(harness), "%s/tests/harness/rabbitmq.sh", srcdir);
                return;
        }
        /* __FILE__ is relative to the build root, which is two levels above this binary. */
        if (__FILE__[0] == '/') {
                snprintf(path, sizeof(path), "%s", __FILE__);
        } else {
                n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
                ASSERT(n > 0);
                exe[n] = 0;
                for (int i = 0; i < 3; i++)
                        *strrchr(exe, '/') = 0;
                snprintf(path, sizeof(path), "%s/%s", exe, __FILE__);
        }
        *strrchr(path, '/') = 0;
        ASSERT(realpath(path, exe));
        ASSERT(strlen(exe) + 32 < sizeof(harness));
        strcat(strcpy(harness, exe), "/../harness/rabbitmq.sh");
}

/* ---- callbacks ---- */

static void on_delivery(AmqpClient *c,
                        const char *queue,
                        const char *routing_key,
                        uint64_t tag,
                        const void *body,
                        size_t size,
                        const AmqpProperties *props,
                        void *userdata) {
        Peer *p = userdata;
        Delivery *d;

        if (p->free_me) {
                ASSERT(*p->free_me == c);
                *p->free_me = amqp_client_free(c);
                p->n_deliveries++;
                return;
        }

        ASSERT(p->n_deliveries < ELEMENTSOF(p->deliveries));
        ASSERT(body);
        d = &p->deliveries[p->n_deliveries++];
        d->queue = strdup(queue);
        d->routing_key = strdup(routing_key);
        d->tag = tag;
        d->body = malloc(size + 1);
        ASSERT(d->queue && d->routing_key && d->body);
        memcpy(d->body, body, size);
        d->body[size] = 0;
        d->size = size;
        if (p->auto_ack)
                ASSERT_OK(amqp_client_ack(c, tag));
}

static void on_confirm(AmqpClient *c, uint64_t tag, bool ack, void *userdata) {
        Peer *p = userdata;

        ASSERT(p->n_confirms < ELEMENTSOF(p->confirms));
        p->confirms[p->n_confirms++] = (Confirm){tag, ack};
}

static void
on_return(AmqpClient *c, const char *exchange, const char *routing_key, const void *body, size_t size, void *userdata) {
        Peer *p = userdata;

        ASSERT(strcmp(exchange, EXCHANGE) == 0);
        p->n_returns++;
        free(p->return_key);
        free(p->return_body);
        p->return_key = strdup(routing_key);
        p->return_body = strndup(body, size);
        ASSERT(p->return_key && p->return_body);
        p->confirms_at_return = p->n_confirms;
}

static void on_state(AmqpClient *c, bool connected, const char *reason, void *userdata) {
        Peer *p = userdata;

        fprintf(stderr, "[%s] %s%s%s\n", p->name, connected ? "connected" : "down", reason ? ": " : "", reason ?: "");
        ASSERT(connected == amqp_client_is_connected(c));
        p->connected = connected;
        if (connected) {
                ASSERT(!reason);
                p->n_up++;
        } else {
                ASSERT(reason && reason[0]);
                if (p->n_down < ELEMENTSOF(p->down_at))
                        p->down_at[p->n_down] = now_usec(CLOCK_MONOTONIC);
                p->n_down++;
                free(p->last_reason);
                p->last_reason = strdup(reason);
                if (p->n_down <= ELEMENTSOF(p->reasons))
                        p->reasons[p->n_down - 1] = strdup(reason);
        }
}

static void peer_clear(Peer *p) {
        for (size_t i = 0; i < p->n_deliveries; i++) {
                free(p->deliveries[i].queue);
                free(p->deliveries[i].routing_key);
                free(p->deliveries[i].body);
        }
        p->n_deliveries = 0;
        p->n_confirms = 0;
}

static void peer_done(Peer *p) {
        peer_clear(p);
        p->last_reason = mfree(p->last_reason);
        p->return_key = mfree(p->return_key);
        p->return_body = mfree(p->return_body);
        for (size_t i = 0; i < ELEMENTSOF(p->reasons); i++)
                p->reasons[i] = mfree(p->reasons[i]);
}

/* ---- loop helpers ---- */

static bool run_until(bool (*cond)(void *), void *userdata, uint64_t timeout) {
        uint64_t end = now_usec(CLOCK_MONOTONIC) + timeout;

        while (!cond(userdata)) {
                if (now_usec(CLOCK_MONOTONIC) >= end)
                        return false;
                ASSERT_OK(sd_event_run(event, 100 * USEC_PER_MSEC));
        }
        return true;
}

static void run_for(uint64_t usec) {
        uint64_t end = now_usec(CLOCK_MONOTONIC) + usec;

        while (now_usec(CLOCK_MONOTONIC) < end)
                ASSERT_OK(sd_event_run(event, 50 * USEC_PER_MSEC));
}

static bool is_up(void *p) {
        return ((Peer *) p)->connected;
}
static bool is_down(void *p) {
        return !((Peer *) p)->connected;
}

static size_t want;
static bool have_deliveries(void *p) {
        return ((Peer *) p)->n_deliveries >= want;
}
static bool have_confirms(void *p) {
        return ((Peer *) p)->n_confirms >= want;
}
static bool have_downs(void *p) {
        return ((Peer *) p)->n_down >= want;
}

static AmqpClient *client_new_full(Peer *p, const AmqpSettings *settings, const AmqpQueue *queues, size_t n_queues) {
        AmqpExchange x = {.name = EXCHANGE, .type = "direct"};
        AmqpCallbacks cb = {
                .delivery = on_delivery,
                .confirm = on_confirm,
                .state = on_state,
                .returned = on_return,
                .userdata = p,
        };
        AmqpClient *c = NULL;

        ASSERT_OK(amqp_client_new(event, settings, &x, 1, queues, n_queues, &cb, &c));
        ASSERT(!amqp_client_is_connected(c));
        ASSERT(amqp_client_publish(c, EXCHANGE, "k", "x", 1, true, NULL, NULL) == -ENOTCONN);
        ASSERT_OK(amqp_client_start(c));
        return c;
}

static AmqpClient *client_new(Peer *p, uint16_t port, unsigned prefetch, const AmqpQueue *queues, size_t n_queues) {
        char url[128];
        AmqpSettings s = {
                .url = url,
                .heartbeat_sec = HEARTBEAT,
                .prefetch = prefetch,
                .connect_timeout_usec = 3 * USEC_PER_SEC,
        };

        snprintf(url, sizeof(url), "amqp://guest:guest@127.0.0.1:%u/%%2f", port);
        return client_new_full(p, &s, queues, n_queues);
}

static void publish(AmqpClient *c, const char *rk, const void *body, size_t size, uint64_t *ret_tag) {
        ASSERT_OK(amqp_client_publish(c, EXCHANGE, rk, body, size, true, "id-1", ret_tag));
}

/* ---- tests ---- */

static void test_refused_backoff(void) {
        Peer p = {.name = "refused"};
        _cleanup_(amqp_client_freep) AmqpClient *c = NULL;
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        int fd;

        /* A port nobody listens on. */
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(fd >= 0);
        ASSERT(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT(getsockname(fd, (struct sockaddr *) &sa, &len) == 0);
        close(fd);

        c = client_new(&p, ntohs(sa.sin_port), 0, NULL, 0);
        want = 4;
        ASSERT(run_until(have_downs, &p, 15 * USEC_PER_SEC));
        ASSERT(strstr(p.last_reason, "refused"));
        ASSERT(p.n_up == 0);
        /* attempts at 0, 1, 3, 7 s */
        for (unsigned i = 1; i < 4; i++) {
                double gap = seconds(p.down_at[i] - p.down_at[i - 1]), expect = (double) (1U << (i - 1));

                fprintf(stderr, "[refused] gap %u: %.2f s (expected %.0f s)\n", i, gap, expect);
                ASSERT(gap >= expect * 0.9 && gap < expect + 1.0);
        }
        peer_done(&p);
        printf("ok - connection refused, backoff 1 s, 2 s, 4 s\n");
}

/* A CA, a server certificate for "localhost" and a client certificate, for the
 * harness's TLS listener. Returns false when the openssl tool is missing. */
static bool make_certs(void) {
        char cmd[2 * PATH_MAX + 2048];

        if (system("command -v openssl >/dev/null") != 0)
                return false;
        snprintf(
                cmd, sizeof(cmd),
                "set -e; mkdir -p '%s/tls'; cd '%s/tls'; exec >/dev/null 2>&1; "
                "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=taskd-test-ca; "
                "for n in server client; do "
                "  openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj /CN=localhost; "
                "  printf 'subjectAltName=DNS:localhost\\n' >$n.ext; "
                "  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 -extfile "
                "$n.ext; "
                "done",
                broker_dir, broker_dir);
        ASSERT(system(cmd) == 0);
        return true;
}

static void test_tls(uint16_t tls_port, AmqpClient *publisher) {
        char url[128], ca[PATH_MAX + 32], cert[PATH_MAX + 32], key[PATH_MAX + 32];
        AmqpSettings s = {
                .url = url,
                .heartbeat_sec = HEARTBEAT,
                .ca_file = ca,
                .cert_file = cert,
                .key_file = key,
                .connect_timeout_usec = 5 * USEC_PER_SEC,
        };
        AmqpQueue q4 = {.name = "taskd-test-q4", .exchange = EXCHANGE, .routing_key = "k4"};

        snprintf(ca, sizeof(ca), "%s/tls/ca.pem", broker_dir);
        snprintf(cert, sizeof(cert), "%s/tls/client.pem", broker_dir);
        snprintf(key, sizeof(key), "%s/tls/client.key", broker_dir);

        /* verified: the name in the URL matches the certificate */
        {
                Peer pt = {.name = "tls", .auto_ack = true};
                _cleanup_(amqp_client_freep) AmqpClient *c = NULL;

                snprintf(url, sizeof(url), "amqps://localhost:%u", tls_port);
                c = client_new_full(&pt, &s, &q4, 1);
                ASSERT(run_until(is_up, &pt, 20 * USEC_PER_SEC));
                publish(c, "k4", "over-tls", 8, NULL);
                want = 1;
                ASSERT(run_until(have_deliveries, &pt, 5 * USEC_PER_SEC));
                ASSERT(strcmp(pt.deliveries[0].body, "over-tls") == 0);
                ASSERT(run_until(have_confirms, &pt, 5 * USEC_PER_SEC));
                ASSERT(pt.confirms[0].ack);
                peer_done(&pt);
                printf("ok - amqps with CA, client certificate, host name verified\n");
        }

        /* the certificate names localhost, not 127.0.0.1: refused */
        {
                Peer pt = {.name = "tls-mismatch"};
                _cleanup_(amqp_client_freep) AmqpClient *c = NULL;

                snprintf(url, sizeof(url), "amqps://127.0.0.1:%u", tls_port);
                c = client_new_full(&pt, &s, &q4, 1);
                want = 1;
                ASSERT(run_until(have_downs, &pt, 10 * USEC_PER_SEC));
                ASSERT(pt.n_up == 0 && strstr(pt.last_reason, "TLS"));
                printf("ok - amqps host name mismatch refused (%s)\n", pt.last_reason);
                peer_done(&pt);
        }

        /* no CA given: the system bundle does not know our CA */
        {
                Peer pt = {.name = "tls-unknown-ca"};
                _cleanup_(amqp_client_freep) AmqpClient *c = NULL;
                AmqpSettings s2 = s;

                s2.ca_file = NULL;
                snprintf(url, sizeof(url), "amqps://localhost:%u", tls_port);
                c = client_new_full(&pt, &s2, &q4, 1);
                want = 1;
                ASSERT(run_until(have_downs, &pt, 10 * USEC_PER_SEC));
                ASSERT(pt.n_up == 0);
                printf("ok - amqps with an unknown CA refused (%s)\n", pt.last_reason);
                peer_done(&pt);
        }
        (void) publisher;
}

int main(void) {
        _cleanup_(amqp_client_freep) AmqpClient *c = NULL;
        Peer p = {.name = "main", .auto_ack = false};
        char out[256], *big = NULL;
        const size_t N = 50, BIG = 4 * 1024 * 1024;
        AmqpQueue queues[] = {
                {.name = "taskd-test-q1", .exchange = EXCHANGE, .routing_key = "k1"},
                {.name = "taskd-test-q2", .exchange = EXCHANGE, .routing_key = "k2"},
                /* declared and bound, never consumed: another consumer's queue */
                {.name = "taskd-test-q5", .exchange = EXCHANGE, .routing_key = "k5", .no_consume = true},
        };
        uint64_t tag, t0;
        uint16_t port;
        bool with_tls;
        int r;

        log_set_max_level(getenv("TEST_DEBUG") ? LOG_DEBUG : LOG_WARNING);
        setvbuf(stdout, NULL, _IOLBF, 0);

        if (geteuid() != 0) {
                printf("skipped: needs root (runs rabbitmq-server as user rabbitmq)\n");
                return 77;
        }
        if (access("/usr/sbin/rabbitmq-server", X_OK) < 0) {
                printf("skipped: rabbitmq-server not installed\n");
                return 77;
        }
        find_harness();
        ASSERT(access(harness, X_OK) == 0);

        ASSERT_OK(sd_event_default(&event));

        test_refused_backoff();

        snprintf(broker_dir, sizeof(broker_dir), "/tmp/test-amqp.XXXXXX");
        ASSERT(mkdtemp(broker_dir));
        with_tls = make_certs();
        t0 = now_usec(CLOCK_MONOTONIC);
        broker_running = true;
        r = run_harness("start", NULL, out, sizeof(out));
        if (r == 77) {
                broker_running = false;
                remove_broker_dir();
                printf("skipped: harness cannot run rabbitmq-server\n");
                return 77;
        }
        ASSERT(r == 0);
        port = (uint16_t) atoi(out);
        ASSERT(port > 0);
        printf("# rabbitmq-server started in %.1f s, port %u\n", seconds(now_usec(CLOCK_MONOTONIC) - t0), port);

        /* connect, topology */
        c = client_new(&p, port, 10, queues, ELEMENTSOF(queues));
        ASSERT(run_until(is_up, &p, 20 * USEC_PER_SEC));
        printf("ok - connected, topology declared\n");

        /* publish N with confirms, all confirmed in order; consume them back */
        for (size_t i = 0; i < N; i++) {
                char body[64];

                snprintf(body, sizeof(body), "{\"n\":%zu}", i);
                publish(c, i % 2 ? "k2" : "k1", body, strlen(body), &tag);
                ASSERT(tag == i + 1);
        }
        ASSERT(amqp_client_n_unconfirmed(c) <= N);
        want = N;
        ASSERT(run_until(have_confirms, &p, 10 * USEC_PER_SEC));
        for (size_t i = 0; i < N; i++)
                fprintf(stderr, "%" PRIu64 "%s ", p.confirms[i].tag, p.confirms[i].ack ? "" : "(nack)");
        fprintf(stderr, "\n");
        for (size_t i = 0; i < N; i++)
                ASSERT(p.confirms[i].tag == i + 1 && p.confirms[i].ack);
        ASSERT(amqp_client_n_unconfirmed(c) == 0);
        printf("ok - %zu publishes confirmed in order\n", N);

        /* prefetch 10 (per consumer) and no acks yet: 10 from each queue arrive */
        want = N;
        ASSERT(!run_until(have_deliveries, &p, 1 * USEC_PER_SEC));
        ASSERT(p.n_deliveries == 20);
        p.auto_ack = true;
        for (size_t i = 0; i < p.n_deliveries; i++)
                ASSERT_OK(amqp_client_ack(c, p.deliveries[i].tag));
        ASSERT(run_until(have_deliveries, &p, 10 * USEC_PER_SEC));
        {
                size_t next1 = 0, next2 = 1;
                for (size_t i = 0; i < N; i++) {
                        Delivery *d = &p.deliveries[i];
                        bool q1 = strcmp(d->queue, "taskd-test-q1") == 0;
                        size_t *next = q1 ? &next1 : &next2;
                        char body[64];

                        snprintf(body, sizeof(body), "{\"n\":%zu}", *next);
                        ASSERT(strcmp(d->body, body) == 0 && d->size == strlen(body));
                        ASSERT(strcmp(d->routing_key, q1 ? "k1" : "k2") == 0);
                        *next += 2;
                }
                ASSERT(next1 == N && next2 == N + 1);
        }
        /* already acked: refused, not sent */
        ASSERT(amqp_client_ack(c, p.deliveries[0].tag) == -ESTALE);
        printf("ok - consumed %zu (routing keys, bodies, order per queue; prefetch 10 per consumer respected)\n", N);
        peer_clear(&p);

        /* a 4 MiB body */
        big = malloc(BIG);
        ASSERT(big);
        for (size_t i = 0; i < BIG; i++)
                big[i] = (char) ('a' + (i * 7 + i / 4099) % 26);
        publish(c, "k1", big, BIG, &tag);
        want = 1;
        ASSERT(run_until(have_deliveries, &p, 20 * USEC_PER_SEC));
        ASSERT(p.deliveries[0].size == BIG && memcmp(p.deliveries[0].body, big, BIG) == 0);
        ASSERT(run_until(have_confirms, &p, 5 * USEC_PER_SEC));
        ASSERT(p.confirms[0].tag == tag && p.confirms[0].ack);
        printf("ok - 4 MiB body intact\n");
        peer_clear(&p);

        /* mandatory: a publish no queue takes is returned, then confirmed; one routed to a
         * declare-only queue is neither returned nor delivered here */
        ASSERT_OK(amqp_client_publish_as(c, EXCHANGE, "k-nobody", "lost?", 5, NULL, true, &tag));
        want = 1;
        ASSERT(run_until(have_confirms, &p, 5 * USEC_PER_SEC));
        ASSERT(p.confirms[0].tag == tag && p.confirms[0].ack);
        ASSERT(p.n_returns == 1 && p.confirms_at_return == 0);
        ASSERT(strcmp(p.return_key, "k-nobody") == 0 && strcmp(p.return_body, "lost?") == 0);
        ASSERT_OK(amqp_client_publish_as(c, EXCHANGE, "k5", "kept", 4, NULL, true, &tag));
        want = 2;
        ASSERT(run_until(have_confirms, &p, 5 * USEC_PER_SEC));
        ASSERT(p.confirms[1].tag == tag && p.confirms[1].ack);
        run_for(500 * USEC_PER_MSEC);
        ASSERT(p.n_returns == 1 && p.n_deliveries == 0);
        printf("ok - a mandatory publish no queue takes is returned before its confirm; declare-only queue not "
               "consumed\n");
        peer_clear(&p);

        /* reject without requeue: gone; with requeue: delivered again */
        p.auto_ack = false;
        publish(c, "k1", "drop", 4, NULL);
        want = 1;
        ASSERT(run_until(have_deliveries, &p, 5 * USEC_PER_SEC));
        ASSERT_OK(amqp_client_reject(c, p.deliveries[0].tag, false));
        ASSERT(amqp_client_reject(c, p.deliveries[0].tag, false) == -ESTALE);
        publish(c, "k2", "again", 5, NULL);
        want = 2;
        ASSERT(run_until(have_deliveries, &p, 5 * USEC_PER_SEC));
        ASSERT(strcmp(p.deliveries[1].body, "again") == 0);
        ASSERT_OK(amqp_client_reject(c, p.deliveries[1].tag, true));
        want = 3;
        ASSERT(run_until(have_deliveries, &p, 5 * USEC_PER_SEC));
        ASSERT(strcmp(p.deliveries[2].body, "again") == 0 && strcmp(p.deliveries[2].queue, "taskd-test-q2") == 0);
        ASSERT(p.deliveries[2].tag != p.deliveries[1].tag);
        ASSERT_OK(amqp_client_ack(c, p.deliveries[2].tag));
        want = 4;
        ASSERT(!run_until(have_deliveries, &p, 1 * USEC_PER_SEC));
        printf("ok - reject(requeue=false) dropped, reject(requeue=true) redelivered\n");
        peer_clear(&p);

        /* prefetch 2 on a second client, nothing acked: only 2 arrive */
        {
                Peer p2 = {.name = "prefetch2"};
                AmqpQueue q3 = {.name = "taskd-test-q3", .exchange = EXCHANGE, .routing_key = "k3"};
                _cleanup_(amqp_client_freep) AmqpClient *c2 = client_new(&p2, port, 2, &q3, 1);

                ASSERT(run_until(is_up, &p2, 20 * USEC_PER_SEC));
                for (int i = 0; i < 5; i++)
                        publish(c, "k3", "p", 1, NULL);
                want = 5;
                ASSERT(!run_until(have_deliveries, &p2, 2 * USEC_PER_SEC));
                ASSERT(p2.n_deliveries == 2);
                ASSERT_OK(amqp_client_ack(c2, p2.deliveries[0].tag));
                want = 3;
                ASSERT(run_until(have_deliveries, &p2, 5 * USEC_PER_SEC));
                want = 4;
                ASSERT(!run_until(have_deliveries, &p2, 1 * USEC_PER_SEC));
                p2.auto_ack = true;
                ASSERT_OK(amqp_client_ack(c2, p2.deliveries[1].tag));
                ASSERT_OK(amqp_client_ack(c2, p2.deliveries[2].tag));
                want = 5;
                ASSERT(run_until(have_deliveries, &p2, 5 * USEC_PER_SEC));
                peer_done(&p2);
                printf("ok - prefetch 2 respected\n");
        }

        /* the owner frees the client from inside a delivery callback */
        {
                AmqpClient *c5 = NULL;
                Peer p5 = {.name = "free-in-callback", .free_me = &c5};
                AmqpQueue q3 = {.name = "taskd-test-q3", .exchange = EXCHANGE, .routing_key = "k3"};

                c5 = client_new(&p5, port, 0, &q3, 1);
                ASSERT(run_until(is_up, &p5, 20 * USEC_PER_SEC));
                for (int i = 0; i < 3; i++)
                        publish(c, "k3", "f", 1, NULL);
                want = 1;
                ASSERT(run_until(have_deliveries, &p5, 5 * USEC_PER_SEC));
                ASSERT(!c5);
                run_for(500 * USEC_PER_MSEC);
                ASSERT(p5.n_deliveries == 1);
                peer_done(&p5);
                printf("ok - client freed from its own delivery callback\n");
        }

        /* more than 16 MiB: rejected without requeue, never delivered, later ones are */
        {
                const size_t HUGE = 16 * 1024 * 1024 + 1;
                char *huge = calloc(1, HUGE);

                ASSERT(huge);
                p.auto_ack = true;
                publish(c, "k1", huge, HUGE, NULL);
                free(huge);
                publish(c, "k1", "small", 5, NULL);
                want = 1;
                ASSERT(run_until(have_deliveries, &p, 20 * USEC_PER_SEC));
                ASSERT(strcmp(p.deliveries[0].body, "small") == 0);
                want = 2;
                ASSERT(!run_until(have_deliveries, &p, 1 * USEC_PER_SEC));
                ASSERT(p.connected);
                printf("ok - a 16 MiB + 1 body is rejected, the next message delivered\n");
                peer_clear(&p);
                p.auto_ack = false;
        }

        if (with_tls) {
                ASSERT(run_harness("tls-port", NULL, out, sizeof(out)) == 0);
                test_tls((uint16_t) atoi(out), c);
        } else
                printf("# skipped TLS tests: no openssl tool\n");

        /* channel error: publish to a missing exchange → reported, reconnected */
        {
                unsigned downs = p.n_down, ups = p.n_up;

                ASSERT_OK(amqp_client_publish(c, "taskd-no-such-exchange", "k", "x", 1, true, NULL, NULL));
                want = downs + 1;
                ASSERT(run_until(have_downs, &p, 5 * USEC_PER_SEC));
                ASSERT(strstr(p.last_reason, "404") && strstr(p.last_reason, "NOT_FOUND") &&
                       strstr(p.last_reason, "taskd-no-such-exchange"));
                ASSERT(amqp_client_publish(c, EXCHANGE, "k1", "x", 1, true, NULL, NULL) == -ENOTCONN);
                ASSERT(amqp_client_n_unconfirmed(c) == 0);
                ASSERT(run_until(is_up, &p, 10 * USEC_PER_SEC));
                ASSERT(p.n_up == ups + 1);
                publish(c, "k1", "after-404", 9, &tag);
                ASSERT(tag == 1);
                want = 1;
                ASSERT(run_until(have_deliveries, &p, 5 * USEC_PER_SEC));
                ASSERT(strcmp(p.deliveries[0].body, "after-404") == 0);
                ASSERT_OK(amqp_client_ack(c, p.deliveries[0].tag));
                printf("ok - channel error reported (%s) and reconnected\n", p.last_reason);
                peer_clear(&p);
        }

        /* a silent broker: heartbeats notice it within 2.5 heartbeat intervals (+ slack) */
        {
                uint64_t paused;

                ASSERT(run_harness("pause", NULL, NULL, 0) == 0);
                paused = now_usec(CLOCK_MONOTONIC);
                ASSERT(run_until(is_down, &p, (HEARTBEAT * 5 / 2 + 3) * USEC_PER_SEC));
                printf("ok - silent broker detected after %.1f s (%s)\n", seconds(now_usec(CLOCK_MONOTONIC) - paused),
                       p.last_reason);
                ASSERT(strstr(p.last_reason, "heartbeat"));
                ASSERT(run_harness("resume", NULL, NULL, 0) == 0);
                ASSERT(run_until(is_up, &p, 30 * USEC_PER_SEC));
                printf("ok - reconnected after resume\n");
        }

        /* broker stopped: reported at once (it says goodbye); started again: back by itself */
        {
                uint64_t stopped;
                unsigned downs = p.n_down;

                p.auto_ack = true;
                ASSERT(run_harness("stop", "--keep", NULL, 0) == 0);
                stopped = now_usec(CLOCK_MONOTONIC);
                ASSERT(run_until(is_down, &p, (HEARTBEAT * 5 / 2 + 3) * USEC_PER_SEC));
                ASSERT(downs < ELEMENTSOF(p.reasons) && p.reasons[downs]);
                printf("ok - broker stop noticed (%s)\n", p.reasons[downs]);
                ASSERT(strstr(p.reasons[downs], "320 CONNECTION_FORCED"));
                ASSERT(amqp_client_publish(c, EXCHANGE, "k1", "x", 1, true, NULL, NULL) == -ENOTCONN);
                run_for(3 * USEC_PER_SEC);
                ASSERT(!p.connected);

                t0 = now_usec(CLOCK_MONOTONIC);
                ASSERT(run_harness("start", NULL, out, sizeof(out)) == 0);
                ASSERT(atoi(out) == port);
                printf("# rabbitmq-server restarted in %.1f s\n", seconds(now_usec(CLOCK_MONOTONIC) - t0));
                ASSERT(run_until(is_up, &p, 70 * USEC_PER_SEC));
                printf("ok - reconnected by itself %.1f s after the stop\n",
                       seconds(now_usec(CLOCK_MONOTONIC) - stopped));

                publish(c, "k2", "after-restart", 13, &tag);
                want = 1;
                ASSERT(run_until(have_deliveries, &p, 10 * USEC_PER_SEC));
                ASSERT(strcmp(p.deliveries[0].body, "after-restart") == 0);
                ASSERT(run_until(have_confirms, &p, 5 * USEC_PER_SEC));
                ASSERT(p.confirms[p.n_confirms - 1].tag == tag && p.confirms[p.n_confirms - 1].ack);
                printf("ok - consuming and publishing again after restart\n");
                peer_clear(&p);
        }

        c = amqp_client_free(c);
        ASSERT(run_harness("stop", NULL, NULL, 0) == 0);
        broker_running = false;
        remove_broker_dir();
        free(big);
        peer_done(&p);
        event = sd_event_unref(event);
        return 0;
}
