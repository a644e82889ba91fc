/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The AMQP 0-9-1 client (amqp-client.h): one connection with one channel to a broker, driven
 * by the sd-event loop, with librabbitmq used for framing, login and the short RPCs.
 *
 * Connection: for amqp:// the TCP connect is our own non-blocking socket watched for
 * writability (with a connect timeout); once connected the socket is handed to
 * librabbitmq, which then runs login and the topology RPCs (channel.open,
 * confirm.select, basic.qos, exchange.declare, queue.declare, queue.bind,
 * basic.consume) synchronously, each bounded by the connect timeout (the broker
 * answers these in milliseconds). For amqps:// librabbitmq's TLS socket does the TCP
 * connect and the handshake itself, blocking for at most the connect timeout. Names
 * are resolved with a blocking getaddrinfo() (instant for numeric addresses and
 * localhost; a slow resolver stalls the loop).
 *
 * Reading: frames are pulled with amqp_simple_wait_frame_noblock() and a zero timeout
 * until the library has neither queued frames nor buffered bytes and the socket has
 * nothing more: it returns one complete frame or AMQP_STATUS_TIMEOUT without waiting.
 * Raw frames rather than amqp_consume_message(), so a large message arriving in many
 * body frames over many wake-ups never blocks the loop. The library swallows heartbeat
 * frames and reports a broker silent for two heartbeat intervals as
 * AMQP_STATUS_HEARTBEAT_TIMEOUT; our heartbeat timer (every heartbeat/2) sends a
 * heartbeat and polls, so a dead broker is noticed within 2.5 heartbeat intervals
 * even when nothing else happens. Frames the library reads on its own (during an RPC,
 * or while a send waits) are queued inside it, so after every write we check for them
 * and run the reader from a defer source.
 *
 * Writing: the socket stays non-blocking and librabbitmq writes synchronously: when the
 * kernel buffer is full it poll()s for writability, giving up when the broker has been
 * silent for two heartbeat intervals (it reads, and keeps heartbeat bookkeeping, while
 * it waits). So a write blocks the loop only while a live broker is slower than us, or
 * at most 2 heartbeats for a dead one; a blocking fd with SO_SNDTIMEO would give no
 * better bound and would also make reads block. A failed or partial write leaves the
 * stream unusable, so any write error tears the connection down.
 *
 * Failure handling: any error marks the connection failing (no more reads, writes or
 * callbacks for it) and a defer source then tears it down outside of any callback,
 * reports it through the state callback and arms the reconnect timer (backoff 1 s
 * doubling to 60 s, reset once a connection stayed up 30 s). Deliveries are tracked by
 * tag, so an ack for a delivery of an earlier connection is refused (-ESTALE) instead
 * of acknowledging an unrelated message that got the same tag on the new connection.
 *
 * librabbitmq is loaded by the first amqp_client_new() (dlopen-rabbitmq.h): a daemon
 * without the bus never maps it. */

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>

#include "amqp-client.h"
#include "dlopen-rabbitmq.h"
#include "log.h"
#include "macro.h"

#define AMQP_CHANNEL 1
#define AMQP_FRAME_MAX 131072
#define AMQP_BODY_MAX (16U * 1024U * 1024U)
#define DRAIN_FRAMES_MAX 1024
#define BACKOFF_MIN_USEC (1 * USEC_PER_SEC)
#define BACKOFF_MAX_USEC (60 * USEC_PER_SEC)
#define BACKOFF_RESET_USEC (30 * USEC_PER_SEC)
#define CLOSE_TIMEOUT_USEC (1 * USEC_PER_SEC)

/* librabbitmq's amqp_empty_bytes and amqp_empty_table, without resolving its data. */
static const amqp_bytes_t empty_bytes = {};
static const amqp_table_t empty_table = {};

typedef struct Exchange {
        char *name;
        char *type;
} Exchange;

typedef struct Queue {
        char *name;
        char *exchange;
        char *routing_key;
        bool no_consume;
        char *consumer_tag; /* per connection */
} Queue;

/* A copy of a message's properties in a pool of its own: headers are a table of
 * nested values, which librabbitmq clones into a pool. */
struct AmqpProperties {
        amqp_pool_t pool;
        amqp_basic_properties_t p;
};

typedef enum ConfirmState {
        CONFIRM_PENDING,
        CONFIRM_ACK,
        CONFIRM_NACK,
} ConfirmState;

typedef struct Unconfirmed {
        uint64_t tag;
        ConfirmState state;
} Unconfirmed;

typedef enum ContentState {
        CONTENT_NONE,
        CONTENT_HEADER, /* method seen, waiting for the content header */
        CONTENT_BODY,   /* header seen, body frames pending */
} ContentState;

struct AmqpClient {
        sd_event *event;
        AmqpCallbacks callbacks;

        AmqpUrl url;
        char *user;
        char *password;
        char *ca_file;
        char *cert_file;
        char *key_file;
        unsigned heartbeat_sec;
        unsigned prefetch;
        uint64_t connect_timeout_usec;

        Exchange *exchanges;
        size_t n_exchanges;
        Queue *queues;
        size_t n_queues;

        bool started;
        bool connected;       /* topology declared, consuming, not failing */
        bool failing;         /* teardown pending */
        unsigned dispatching; /* inside client_drain(), which calls the owner */
        bool free_requested;  /* amqp_client_free() was called from a callback */
        bool can_close;       /* the stream is intact: a connection.close may still be sent */
        char *fail_reason;

        /* TCP connect in progress */
        struct addrinfo *addresses;
        struct addrinfo *next_address;
        int connect_fd;
        int connect_error;
        sd_event_source *connect_source;
        sd_event_source *connect_timer;

        amqp_connection_state_t conn;
        sd_event_source *io_source;
        sd_event_source *heartbeat_timer;
        sd_event_source *drain_source;
        sd_event_source *fail_source;
        sd_event_source *reconnect_timer;
        uint64_t backoff_usec;
        uint64_t up_since;

        uint64_t next_publish_tag;
        Unconfirmed *unconfirmed; /* in publish order, i.e. ascending tags */
        size_t n_unconfirmed;
        size_t allocated_unconfirmed;

        uint64_t *unacked; /* deliveries handed to the owner and not yet acked/rejected */
        size_t n_unacked;
        size_t allocated_unacked;

        /* message content being received */
        ContentState content_state;
        bool content_is_delivery; /* false: basic.return */
        uint64_t content_tag;
        const Queue *content_queue;
        char *content_exchange; /* basic.return */
        char *content_routing_key;
        AmqpProperties *content_props;
        uint8_t *body;
        uint64_t body_size;
        uint64_t body_received;
        bool body_oversized;
};

static void client_fail(AmqpClient *c, const char *format, ...) _printf_(2, 3);
static int client_connect(AmqpClient *c);

/* ---- URL ---- */

static int unhexchar(char ch) {
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F')
                return ch - 'A' + 10;
        return -EINVAL;
}

/* Decodes %XX escapes of s[0..n). Rejects raw spaces and control characters, broken
 * escapes and escaped NULs (they cannot be passed on as C strings). */
static int percent_decode(const char *s, size_t n, char **ret) {
        _cleanup_free_ char *out = NULL;
        size_t j = 0;

        out = malloc(n + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char) s[i];

                if (ch <= ' ' || ch == 0x7f)
                        return -EINVAL;
                if (ch == '%') {
                        int hi, lo;

                        if (n - i < 3)
                                return -EINVAL;
                        hi = unhexchar(s[i + 1]);
                        lo = unhexchar(s[i + 2]);
                        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                                return -EINVAL;
                        out[j++] = (char) (hi << 4 | lo);
                        i += 2;
                } else
                        out[j++] = (char) ch;
        }
        out[j] = 0;
        *ret = TAKE_PTR(out);
        return 0;
}

static bool host_valid(const char *h, bool ipv6) {
        if (isempty(h))
                return false;
        for (const char *p = h; *p; p++) {
                unsigned char ch = (unsigned char) *p;

                if (ipv6 ? !(isxdigit(ch) || ch == ':' || ch == '.')
                         : !(isalnum(ch) || strchr(".-_~", ch) || ch >= 0x80))
                        return false;
        }
        return true;
}

void amqp_url_done(AmqpUrl *u) {
        if (!u)
                return;
        u->host = mfree(u->host);
        u->vhost = mfree(u->vhost);
        u->user = mfree(u->user);
        u->password = mfree(u->password);
}

static void amqp_url_donep(AmqpUrl *u) {
        amqp_url_done(u);
}

int amqp_url_parse(const char *url, AmqpUrl *ret) {
        _cleanup_(amqp_url_donep) AmqpUrl u = {};
        const char *p, *authority, *hostport, *at, *port = NULL;
        size_t authority_len, hostport_len, host_len;
        int r;

        if (!url || !ret)
                return -EINVAL;

        if (strncasecmp(url, "amqp://", 7) == 0)
                p = url + 7;
        else if (strncasecmp(url, "amqps://", 8) == 0) {
                p = url + 8;
                u.tls = true;
        } else
                return -EINVAL;

        /* Query parameters (?heartbeat=…) and fragments are not supported: refuse them
         * rather than silently ignoring settings. */
        authority = p;
        if (strpbrk(p, "?#"))
                return -EINVAL;
        authority_len = strcspn(p, "/");
        p += authority_len;

        /* userinfo: the password may contain '@' only percent-encoded, but be lenient
         * and split at the last '@'. */
        at = memrchr(authority, '@', authority_len);
        if (at) {
                const char *colon = memchr(authority, ':', at - authority);

                r = percent_decode(authority, (colon ?: at) - authority, &u.user);
                if (r < 0)
                        return r;
                if (colon) {
                        r = percent_decode(colon + 1, at - colon - 1, &u.password);
                        if (r < 0)
                                return r;
                }
                hostport = at + 1;
        } else
                hostport = authority;
        hostport_len = authority + authority_len - hostport;

        if (hostport_len > 0 && hostport[0] == '[') {
                const char *close = memchr(hostport, ']', hostport_len);

                if (!close)
                        return -EINVAL;
                host_len = close - hostport - 1;
                u.host = strndup(hostport + 1, host_len);
                if (!u.host)
                        return -ENOMEM;
                if (close + 1 < hostport + hostport_len) {
                        if (close[1] != ':')
                                return -EINVAL;
                        port = close + 2;
                }
                if (!host_valid(u.host, true) || !strchr(u.host, ':'))
                        return -EINVAL;
        } else {
                const char *colon = memchr(hostport, ':', hostport_len);

                host_len = colon ? (size_t) (colon - hostport) : hostport_len;
                if (colon)
                        port = colon + 1;
                if (host_len == 0)
                        u.host = strdup("localhost");
                else {
                        r = percent_decode(hostport, host_len, &u.host);
                        if (r < 0)
                                return r;
                }
                if (!u.host)
                        return -ENOMEM;
                if (!host_valid(u.host, false))
                        return -EINVAL;
        }

        u.port = u.tls ? 5671 : 5672;
        if (port) {
                size_t port_len = authority + authority_len - port;
                unsigned v = 0;

                if (port_len > 5)
                        return -EINVAL;
                for (size_t i = 0; i < port_len; i++) {
                        if (port[i] < '0' || port[i] > '9')
                                return -EINVAL;
                        v = v * 10 + (unsigned) (port[i] - '0');
                }
                if (port_len > 0) {
                        if (v == 0 || v > 65535)
                                return -EINVAL;
                        u.port = (uint16_t) v;
                }
        }

        /* "", "/" → the default vhost "/"; otherwise one percent-encoded segment
         * ("%2f" is "/"). */
        if (*p == 0 || streq(p, "/"))
                u.vhost = strdup("/");
        else {
                p++;
                if (strchr(p, '/'))
                        return -EINVAL;
                r = percent_decode(p, strlen(p), &u.vhost);
                if (r < 0)
                        return r;
        }
        if (!u.vhost)
                return -ENOMEM;

        *ret = u;
        u = (AmqpUrl){};
        return 0;
}

/* ---- small helpers ---- */

static int tag_array_push(uint64_t **array, size_t *n, size_t *allocated, uint64_t tag) {
        if (*n >= *allocated) {
                size_t a = MAX(*allocated * 2, (size_t) 16);
                uint64_t *p = reallocarray(*array, a, sizeof(uint64_t));

                if (!p)
                        return -ENOMEM;
                *array = p;
                *allocated = a;
        }
        (*array)[(*n)++] = tag;
        return 0;
}

static bool tag_array_remove(uint64_t *array, size_t *n, uint64_t tag) {
        for (size_t i = 0; i < *n; i++)
                if (array[i] == tag) {
                        memmove(array + i, array + i + 1, (*n - i - 1) * sizeof(uint64_t));
                        (*n)--;
                        return true;
                }
        return false;
}

static amqp_bytes_t bytes_of(const char *s) {
        return sym_amqp_cstring_bytes(s ?: "");
}

static char *strdup_bytes(amqp_bytes_t b) {
        return strndup(b.bytes ?: "", b.len);
}

static struct timeval timeval_of(uint64_t usec) {
        return (struct timeval){
                .tv_sec = (time_t) (usec / USEC_PER_SEC),
                .tv_usec = (suseconds_t) (usec % USEC_PER_SEC),
        };
}

static uint64_t loop_now(AmqpClient *c) {
        uint64_t t = 0;

        (void) sd_event_now(c->event, CLOCK_MONOTONIC, &t);
        return t;
}

/* Describes what a failed librabbitmq RPC returned, e.g.
 * "404 NOT_FOUND - no exchange 'x' in vhost '/'". */
static char *rpc_reply_text(amqp_rpc_reply_t reply) {
        char *s = NULL;

        switch (reply.reply_type) {
        case AMQP_RESPONSE_NORMAL:
                return strdup("no error");
        case AMQP_RESPONSE_NONE:
                return strdup("missing RPC reply");
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
                return strdup(sym_amqp_error_string2(reply.library_error));
        case AMQP_RESPONSE_SERVER_EXCEPTION:
                if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD && reply.reply.decoded) {
                        const amqp_connection_close_t *m = reply.reply.decoded;

                        if (asprintf(&s, "connection closed by broker: %u %.*s", m->reply_code, (int) m->reply_text.len,
                                     (const char *) m->reply_text.bytes) < 0)
                                return NULL;
                        return s;
                }
                if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD && reply.reply.decoded) {
                        const amqp_channel_close_t *m = reply.reply.decoded;

                        if (asprintf(&s, "channel closed by broker: %u %.*s", m->reply_code, (int) m->reply_text.len,
                                     (const char *) m->reply_text.bytes) < 0)
                                return NULL;
                        return s;
                }
                if (asprintf(&s, "unexpected method 0x%08x from broker", reply.reply.id) < 0)
                        return NULL;
                return s;
        }
        return strdup("unknown RPC reply");
}

/* ---- message properties ---- */

AmqpProperties *amqp_properties_free(AmqpProperties *p) {
        if (!p)
                return NULL;
        sym_empty_amqp_pool(&p->pool);
        return mfree(p);
}

static int properties_clone(const amqp_basic_properties_t *from, AmqpProperties **ret) {
        _cleanup_(amqp_properties_freep) AmqpProperties *n = NULL;
        static const amqp_flags_t flags[] = {
                AMQP_BASIC_CONTENT_TYPE_FLAG, AMQP_BASIC_CONTENT_ENCODING_FLAG, AMQP_BASIC_CORRELATION_ID_FLAG,
                AMQP_BASIC_REPLY_TO_FLAG,     AMQP_BASIC_EXPIRATION_FLAG,       AMQP_BASIC_MESSAGE_ID_FLAG,
                AMQP_BASIC_TYPE_FLAG,         AMQP_BASIC_USER_ID_FLAG,          AMQP_BASIC_APP_ID_FLAG,
                AMQP_BASIC_CLUSTER_ID_FLAG,
        };

        int r;

        r = dlopen_rabbitmq();
        if (r < 0)
                return r;
        n = calloc(1, sizeof(AmqpProperties));
        if (!n)
                return -ENOMEM;
        sym_init_amqp_pool(&n->pool, 1024);
        if (!from) {
                *ret = TAKE_PTR(n);
                return 0;
        }
        n->p = *from;

        amqp_bytes_t *fields[] = {
                &n->p.content_type, &n->p.content_encoding, &n->p.correlation_id, &n->p.reply_to,
                &n->p.expiration,   &n->p.message_id,       &n->p.type,           &n->p.user_id,
                &n->p.app_id,       &n->p.cluster_id,
        };
        _Static_assert(ELEMENTSOF(fields) == ELEMENTSOF(flags), "a flag for each field");
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                amqp_bytes_t src = *fields[i];

                if (!(from->_flags & flags[i]) || src.len == 0) {
                        *fields[i] = empty_bytes;
                        continue;
                }
                sym_amqp_pool_alloc_bytes(&n->pool, src.len, fields[i]);
                if (!fields[i]->bytes)
                        return -ENOMEM;
                memcpy(fields[i]->bytes, src.bytes, src.len);
        }
        n->p.headers = empty_table;
        if ((from->_flags & AMQP_BASIC_HEADERS_FLAG) &&
            sym_amqp_table_clone(&from->headers, &n->p.headers, &n->pool) != AMQP_STATUS_OK)
                return -ENOMEM;
        *ret = TAKE_PTR(n);
        return 0;
}

int amqp_properties_copy(const AmqpProperties *p, AmqpProperties **ret) {
        return properties_clone(p ? &p->p : NULL, ret);
}

/* ---- per-connection state ---- */

static void content_reset(AmqpClient *c) {
        c->content_state = CONTENT_NONE;
        c->content_is_delivery = false;
        c->content_tag = 0;
        c->content_queue = NULL;
        c->content_exchange = mfree(c->content_exchange);
        c->content_routing_key = mfree(c->content_routing_key);
        c->content_props = amqp_properties_free(c->content_props);
        c->body = mfree(c->body);
        c->body_size = c->body_received = 0;
        c->body_oversized = false;
}

static void connection_release(AmqpClient *c) {
        c->connect_source = sd_event_source_unref(c->connect_source);
        c->connect_timer = sd_event_source_unref(c->connect_timer);
        c->connect_fd = safe_close(c->connect_fd);
        if (c->addresses) {
                freeaddrinfo(c->addresses);
                c->addresses = c->next_address = NULL;
        }

        c->io_source = sd_event_source_unref(c->io_source);
        c->heartbeat_timer = sd_event_source_unref(c->heartbeat_timer);
        if (c->drain_source)
                (void) sd_event_source_set_enabled(c->drain_source, SD_EVENT_OFF);

        if (c->conn) {
                if (c->can_close) {
                        /* Polite, but without waiting for close-ok: the broker requeues our
                         * unacked deliveries either way. */
                        amqp_connection_close_t m = {
                                .reply_code = AMQP_REPLY_SUCCESS,
                                .reply_text = sym_amqp_cstring_bytes("closing"),
                        };
                        (void) sym_amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_METHOD, &m);
                }
                (void) sym_amqp_destroy_connection(c->conn);
                c->conn = NULL;
        }
        c->can_close = false;
        c->connected = false;

        for (size_t i = 0; i < c->n_queues; i++)
                c->queues[i].consumer_tag = mfree(c->queues[i].consumer_tag);
        content_reset(c);
        c->n_unconfirmed = 0;
        c->n_unacked = 0;
        c->next_publish_tag = 0;
}

static int on_reconnect_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AmqpClient *c = userdata;

        c->reconnect_timer = sd_event_source_unref(c->reconnect_timer);
        (void) client_connect(c);
        return 0;
}

static int schedule_reconnect(AmqpClient *c, uint64_t delay) {
        int r;

        c->reconnect_timer = sd_event_source_unref(c->reconnect_timer);
        r = sd_event_add_time_relative(c->event, &c->reconnect_timer, CLOCK_MONOTONIC, delay, 0, on_reconnect_timer, c);
        if (r < 0)
                return log_debug_errno(r, "amqp: failed to arm reconnect timer: %m");
        (void) sd_event_source_set_description(c->reconnect_timer, "amqp-reconnect");
        return 0;
}

/* Runs from the fail defer source, never inside a callback or a librabbitmq call. */
static int on_fail(sd_event_source *s, void *userdata) {
        AmqpClient *c = userdata;
        _cleanup_free_ char *reason = NULL;
        uint64_t now = loop_now(c), delay;

        if (!c->failing)
                return 0;
        reason = TAKE_PTR(c->fail_reason);

        connection_release(c);
        c->failing = false;

        if (c->up_since > 0 && now >= c->up_since + BACKOFF_RESET_USEC)
                c->backoff_usec = BACKOFF_MIN_USEC;
        c->up_since = 0;
        delay = c->backoff_usec;
        c->backoff_usec = MIN(c->backoff_usec * 2, BACKOFF_MAX_USEC);

        log_debug("amqp: connection to %s:%u lost: %s; reconnecting in %" PRIu64 " ms", c->url.host, c->url.port,
                  strna(reason), delay / USEC_PER_MSEC);
        (void) schedule_reconnect(c, delay);

        if (c->callbacks.state)
                c->callbacks.state(c, false, reason ?: "connection failed", c->callbacks.userdata);
        return 0;
}

static void client_fail(AmqpClient *c, const char *format, ...) {
        va_list ap;

        if (c->failing)
                return;
        c->failing = true;
        c->connected = false;

        va_start(ap, format);
        if (vasprintf(&c->fail_reason, format, ap) < 0)
                c->fail_reason = NULL;
        va_end(ap);

        /* Stop watching at once: librabbitmq may already have closed the fd, and its
         * number must not stay registered while it can be reused. */
        c->io_source = sd_event_source_unref(c->io_source);
        c->heartbeat_timer = sd_event_source_unref(c->heartbeat_timer);
        c->connect_source = sd_event_source_unref(c->connect_source);
        c->connect_timer = sd_event_source_unref(c->connect_timer);
        (void) sd_event_source_set_enabled(c->drain_source, SD_EVENT_OFF);
        if (sd_event_source_set_enabled(c->fail_source, SD_EVENT_ONESHOT) < 0)
                (void) on_fail(c->fail_source, c);
}

/* Fails the connection for a librabbitmq status. Only "closed"-type failures keep the
 * stream usable for a goodbye. */
static void client_fail_status(AmqpClient *c, int status, const char *what) {
        int saved_errno = errno;

        c->can_close = false;
        /* librabbitmq's "a socket error occurred" hides the cause; errno still holds it
         * right after the failed send()/recv(). */
        if (status == AMQP_STATUS_SOCKET_ERROR && saved_errno > 0)
                client_fail(c, "%s: %s (%s)", what, sym_amqp_error_string2(status), strerror(saved_errno));
        else
                client_fail(c, "%s: %s", what, sym_amqp_error_string2(status));
}

static void schedule_drain_if_pending(AmqpClient *c) {
        if (!c->conn || c->failing)
                return;
        if (sym_amqp_frames_enqueued(c->conn) || sym_amqp_data_in_buffer(c->conn))
                (void) sd_event_source_set_enabled(c->drain_source, SD_EVENT_ONESHOT);
}

/* ---- incoming frames ---- */

/* The broker confirms each queue's messages when that queue has them safe, so
 * confirms for messages routed to different queues come in any order. They are
 * reported in publish order: an early one waits for the earlier publishes. */
static void handle_confirm(AmqpClient *c, uint64_t tag, bool multiple, bool ack) {
        ConfirmState state = ack ? CONFIRM_ACK : CONFIRM_NACK;
        bool found = false;

        for (size_t i = 0; i < c->n_unconfirmed; i++) {
                Unconfirmed *u = &c->unconfirmed[i];

                if (multiple ? (tag != 0 && u->tag > tag) : u->tag > tag)
                        break;
                if (u->state != CONFIRM_PENDING)
                        continue;
                if (multiple || u->tag == tag) {
                        u->state = state;
                        found = true;
                }
        }
        if (!found)
                log_debug("amqp: confirm for unknown publish tag %" PRIu64 "%s, ignoring", tag,
                          multiple ? " (multiple)" : "");

        /* The callback may publish, which appends. */
        while (c->n_unconfirmed > 0 && !c->failing && !c->free_requested &&
               c->unconfirmed[0].state != CONFIRM_PENDING) {
                Unconfirmed u = c->unconfirmed[0];

                memmove(c->unconfirmed, c->unconfirmed + 1, (c->n_unconfirmed - 1) * sizeof(Unconfirmed));
                c->n_unconfirmed--;
                if (c->callbacks.confirm)
                        c->callbacks.confirm(c, u.tag, u.state == CONFIRM_ACK, c->callbacks.userdata);
        }
}

static void content_complete(AmqpClient *c) {
        _cleanup_free_ uint8_t *body = TAKE_PTR(c->body);
        _cleanup_free_ char *routing_key = TAKE_PTR(c->content_routing_key), *exchange = TAKE_PTR(c->content_exchange);
        _cleanup_(amqp_properties_freep) AmqpProperties *props = TAKE_PTR(c->content_props);
        const Queue *q = c->content_queue;
        uint64_t tag = c->content_tag, size = c->body_size;
        bool oversized = c->body_oversized, delivery = c->content_is_delivery;
        int r;

        content_reset(c);

        if (!delivery) {
                if (c->callbacks.returned && !oversized)
                        c->callbacks.returned(c, strempty(exchange), strempty(routing_key),
                                              body ? (const void *) body : (const void *) "", (size_t) size,
                                              c->callbacks.userdata);
                else
                        log_debug("amqp: dropped a returned message (%" PRIu64 " bytes)", size);
                return;
        }

        if (oversized || !q) {
                if (oversized)
                        log_warning("amqp: message of %" PRIu64 " bytes on queue %s exceeds %u bytes, rejecting it",
                                    size, q ? q->name : "?", AMQP_BODY_MAX);
                else
                        log_debug("amqp: delivery for an unknown consumer, requeueing it");
                r = sym_amqp_basic_reject(c->conn, AMQP_CHANNEL, tag, /* requeue= */ !oversized);
                if (r < 0)
                        client_fail_status(c, r, "basic.reject failed");
                return;
        }

        r = tag_array_push(&c->unacked, &c->n_unacked, &c->allocated_unacked, tag);
        if (r < 0) {
                /* Cannot track it: give it back rather than lose it. */
                r = sym_amqp_basic_reject(c->conn, AMQP_CHANNEL, tag, /* requeue= */ true);
                if (r < 0)
                        client_fail_status(c, r, "basic.reject failed");
                return;
        }

        if (c->callbacks.delivery)
                c->callbacks.delivery(c, q->name, routing_key, tag, body ? (const void *) body : (const void *) "",
                                      (size_t) size, props, c->callbacks.userdata);
}

static const Queue *queue_by_consumer_tag(AmqpClient *c, amqp_bytes_t tag) {
        for (size_t i = 0; i < c->n_queues; i++) {
                const char *t = c->queues[i].consumer_tag;

                if (t && strlen(t) == tag.len && memcmp(t, tag.bytes, tag.len) == 0)
                        return &c->queues[i];
        }
        return NULL;
}

static void handle_method(AmqpClient *c, const amqp_method_t *m) {
        switch (m->id) {

        case AMQP_BASIC_DELIVER_METHOD: {
                const amqp_basic_deliver_t *d = m->decoded;

                c->content_state = CONTENT_HEADER;
                c->content_is_delivery = true;
                c->content_tag = d->delivery_tag;
                c->content_queue = queue_by_consumer_tag(c, d->consumer_tag);
                c->content_routing_key = strdup_bytes(d->routing_key);
                if (!c->content_routing_key)
                        client_fail(c, "out of memory");
                break;
        }

        case AMQP_BASIC_RETURN_METHOD: {
                const amqp_basic_return_t *ret = m->decoded;

                /* A mandatory publish no queue took; its content follows. */
                c->content_state = CONTENT_HEADER;
                c->content_is_delivery = false;
                c->content_exchange = strdup_bytes(ret->exchange);
                c->content_routing_key = strdup_bytes(ret->routing_key);
                if (!c->content_exchange || !c->content_routing_key)
                        client_fail(c, "out of memory");
                break;
        }

        case AMQP_BASIC_ACK_METHOD: {
                const amqp_basic_ack_t *a = m->decoded;

                handle_confirm(c, a->delivery_tag, a->multiple, true);
                break;
        }

        case AMQP_BASIC_NACK_METHOD: {
                const amqp_basic_nack_t *n = m->decoded;

                handle_confirm(c, n->delivery_tag, n->multiple, false);
                break;
        }

        case AMQP_CHANNEL_CLOSE_METHOD: {
                const amqp_channel_close_t *cl = m->decoded;
                amqp_channel_close_ok_t ok = {};
                int r;

                r = sym_amqp_send_method(c->conn, AMQP_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
                c->can_close = r >= 0;
                client_fail(c, "channel closed by broker: %u %.*s", cl->reply_code, (int) cl->reply_text.len,
                            (const char *) cl->reply_text.bytes);
                break;
        }

        case AMQP_BASIC_CANCEL_METHOD: {
                const amqp_basic_cancel_t *cancel = m->decoded;
                const Queue *q = queue_by_consumer_tag(c, cancel->consumer_tag);

                c->can_close = true;
                client_fail(c, "consumer of queue %s cancelled by broker", q ? q->name : "?");
                break;
        }

        case AMQP_CHANNEL_FLOW_METHOD: {
                const amqp_channel_flow_t *fl = m->decoded;
                amqp_channel_flow_ok_t ok = {.active = fl->active};
                int r;

                r = sym_amqp_send_method(c->conn, AMQP_CHANNEL, AMQP_CHANNEL_FLOW_OK_METHOD, &ok);
                if (r < 0)
                        client_fail_status(c, r, "channel.flow-ok failed");
                break;
        }

        default:
                log_debug("amqp: ignoring method 0x%08x on channel %u", m->id, AMQP_CHANNEL);
        }
}

static void handle_frame(AmqpClient *c, const amqp_frame_t *f) {
        if (f->channel == 0) {
                if (f->frame_type != AMQP_FRAME_METHOD)
                        return;
                if (f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
                        const amqp_connection_close_t *cl = f->payload.method.decoded;
                        amqp_connection_close_ok_t ok = {};

                        (void) sym_amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
                        c->can_close = false;
                        client_fail(c, "connection closed by broker: %u %.*s", cl->reply_code, (int) cl->reply_text.len,
                                    (const char *) cl->reply_text.bytes);
                } else if (f->payload.method.id == AMQP_CONNECTION_BLOCKED_METHOD)
                        log_debug("amqp: broker blocked the connection (resource alarm)");
                else if (f->payload.method.id == AMQP_CONNECTION_UNBLOCKED_METHOD)
                        log_debug("amqp: broker unblocked the connection");
                else
                        log_debug("amqp: ignoring method 0x%08x on channel 0", f->payload.method.id);
                return;
        }
        if (f->channel != AMQP_CHANNEL) {
                log_debug("amqp: ignoring frame on unknown channel %u", f->channel);
                return;
        }

        switch (f->frame_type) {

        case AMQP_FRAME_METHOD:
                if (c->content_state != CONTENT_NONE) {
                        client_fail(c, "protocol error: method frame inside message content");
                        return;
                }
                handle_method(c, &f->payload.method);
                break;

        case AMQP_FRAME_HEADER:
                if (c->content_state != CONTENT_HEADER) {
                        client_fail(c, "protocol error: unexpected content header");
                        return;
                }
                c->body_size = f->payload.properties.body_size;
                c->body_received = 0;
                c->body_oversized = c->body_size > AMQP_BODY_MAX;
                if (c->content_is_delivery && properties_clone(f->payload.properties.decoded, &c->content_props) < 0) {
                        client_fail(c, "out of memory for message properties");
                        return;
                }
                if ((c->content_is_delivery || c->callbacks.returned) && !c->body_oversized && c->body_size > 0) {
                        c->body = malloc(c->body_size);
                        if (!c->body) {
                                client_fail(c, "out of memory for a %" PRIu64 " byte message", c->body_size);
                                return;
                        }
                }
                c->content_state = CONTENT_BODY;
                if (c->body_size == 0)
                        content_complete(c);
                break;

        case AMQP_FRAME_BODY: {
                amqp_bytes_t frag = f->payload.body_fragment;

                if (c->content_state != CONTENT_BODY || frag.len > c->body_size - c->body_received) {
                        client_fail(c, "protocol error: unexpected content body");
                        return;
                }
                if (c->body)
                        memcpy(c->body + c->body_received, frag.bytes, frag.len);
                c->body_received += frag.len;
                if (c->body_received == c->body_size)
                        content_complete(c);
                break;
        }

        default:
                log_debug("amqp: ignoring frame of type %u", f->frame_type);
        }
}

static AmqpClient *client_free_now(AmqpClient *c);

/* Pulls every frame that can be had without waiting. Bounded per call; the defer
 * source continues where it stopped. */
static void client_drain_frames(AmqpClient *c) {
        for (unsigned n = 0; n < DRAIN_FRAMES_MAX; n++) {
                struct timeval zero = {};
                amqp_frame_t f;
                int r;

                if (!c->conn || c->failing || c->free_requested)
                        return;

                r = sym_amqp_simple_wait_frame_noblock(c->conn, &f, &zero);
                if (r == AMQP_STATUS_TIMEOUT) {
                        if (!sym_amqp_frames_enqueued(c->conn))
                                sym_amqp_maybe_release_buffers(c->conn);
                        return;
                }
                if (r == AMQP_STATUS_HEARTBEAT_TIMEOUT) {
                        c->can_close = false;
                        client_fail(c, "broker silent for %d s (heartbeat timeout)",
                                    2 * sym_amqp_get_heartbeat(c->conn));
                        return;
                }
                if (r != AMQP_STATUS_OK) {
                        client_fail_status(c, r, "connection lost");
                        return;
                }

                handle_frame(c, &f);

                /* The frame lives in librabbitmq's pools until released. Everything needed
                 * later was copied. */
                if (c->conn && !c->failing && !c->free_requested && !sym_amqp_frames_enqueued(c->conn))
                        sym_amqp_maybe_release_buffers(c->conn);
        }
        if (c->conn && !c->failing && !c->free_requested)
                (void) sd_event_source_set_enabled(c->drain_source, SD_EVENT_ONESHOT);
}

/* Calls the owner's delivery and confirm callbacks, which may free the client: then the
 * free happens here, after the last use. The caller must not touch c afterwards. */
static void client_drain(AmqpClient *c) {
        c->dispatching++;
        client_drain_frames(c);
        c->dispatching--;
        if (c->free_requested && c->dispatching == 0)
                (void) client_free_now(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AmqpClient *c = userdata;

        /* On EPOLLHUP/EPOLLERR too: read what is left (a connection.close explains why),
         * the library then reports the closed socket. */
        client_drain(c);
        return 0;
}

static int on_drain(sd_event_source *s, void *userdata) {
        client_drain(userdata);
        return 0;
}

static int on_heartbeat(sd_event_source *s, uint64_t usec, void *userdata) {
        AmqpClient *c = userdata;
        amqp_frame_t hb = {.frame_type = AMQP_FRAME_HEARTBEAT, .channel = 0};
        int r;

        if (!c->conn || c->failing)
                return 0;

        r = sym_amqp_send_frame(c->conn, &hb);
        if (r < 0) {
                client_fail_status(c, r, "sending heartbeat failed");
                return 0;
        }
        (void) sd_event_source_set_time_relative(c->heartbeat_timer,
                                                 MAX(sym_amqp_get_heartbeat(c->conn), 1) * USEC_PER_SEC / 2);
        /* Lets librabbitmq notice a broker that stopped talking (and read anything that
         * is there). */
        client_drain(c);
        return 0;
}

/* ---- connecting ---- */

static int rpc_check(AmqpClient *c, const char *what) {
        amqp_rpc_reply_t reply = sym_amqp_get_rpc_reply(c->conn);
        _cleanup_free_ char *text = NULL;

        if (reply.reply_type == AMQP_RESPONSE_NORMAL)
                return 0;

        if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
                amqp_channel_close_ok_t ok = {};
                c->can_close = sym_amqp_send_method(c->conn, AMQP_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) >= 0;
        } else if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
                   reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
                amqp_connection_close_ok_t ok = {};
                (void) sym_amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
                c->can_close = false;
        } else
                c->can_close = false;

        text = rpc_reply_text(reply);
        client_fail(c, "%s: %s", what, strna(text));
        return -EPROTO;
}

static int client_handshake(AmqpClient *c) {
        struct timeval tv = timeval_of(c->connect_timeout_usec);
        amqp_rpc_reply_t reply;
        int r;

        (void) sym_amqp_set_handshake_timeout(c->conn, &tv);
        (void) sym_amqp_set_rpc_timeout(c->conn, &tv);

        reply = sym_amqp_login(c->conn, c->url.vhost, 0, AMQP_FRAME_MAX, (int) c->heartbeat_sec, AMQP_SASL_METHOD_PLAIN,
                               c->user, c->password);
        if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
                _cleanup_free_ char *text = rpc_reply_text(reply);

                if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
                    reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
                        amqp_connection_close_ok_t ok = {};
                        (void) sym_amqp_send_method(c->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
                }
                c->can_close = false;
                client_fail(c, "login to %s:%u vhost %s as %s failed: %s", c->url.host, c->url.port, c->url.vhost,
                            c->user, strna(text));
                return -EPROTO;
        }
        c->can_close = true;

        sym_amqp_channel_open(c->conn, AMQP_CHANNEL);
        r = rpc_check(c, "channel.open failed");
        if (r < 0)
                return r;

        sym_amqp_confirm_select(c->conn, AMQP_CHANNEL);
        r = rpc_check(c, "confirm.select failed");
        if (r < 0)
                return r;

        sym_amqp_basic_qos(c->conn, AMQP_CHANNEL, 0, (uint16_t) MIN(c->prefetch, 65535U), false);
        r = rpc_check(c, "basic.qos failed");
        if (r < 0)
                return r;

        for (size_t i = 0; i < c->n_exchanges; i++) {
                _cleanup_free_ char *what = NULL;

                sym_amqp_exchange_declare(c->conn, AMQP_CHANNEL, bytes_of(c->exchanges[i].name),
                                          bytes_of(c->exchanges[i].type), /* passive= */ false, /* durable= */ true,
                                          /* auto_delete= */ false, /* internal= */ false, empty_table);
                if (asprintf(&what, "declaring exchange %s failed", c->exchanges[i].name) < 0)
                        what = NULL;
                r = rpc_check(c, what ?: "exchange.declare failed");
                if (r < 0)
                        return r;
        }

        for (size_t i = 0; i < c->n_queues; i++) {
                Queue *q = &c->queues[i];
                _cleanup_free_ char *what = NULL;
                amqp_basic_consume_ok_t *ok;

                if (asprintf(&what, "declaring queue %s failed", q->name) < 0)
                        what = NULL;
                sym_amqp_queue_declare(c->conn, AMQP_CHANNEL, bytes_of(q->name), /* passive= */ false,
                                       /* durable= */ true, /* exclusive= */ false, /* auto_delete= */ false,
                                       empty_table);
                r = rpc_check(c, what ?: "queue.declare failed");
                if (r < 0)
                        return r;

                if (!isempty(q->exchange)) {
                        what = mfree(what);
                        if (asprintf(&what, "binding queue %s to %s failed", q->name, q->exchange) < 0)
                                what = NULL;
                        sym_amqp_queue_bind(c->conn, AMQP_CHANNEL, bytes_of(q->name), bytes_of(q->exchange),
                                            bytes_of(q->routing_key), empty_table);
                        r = rpc_check(c, what ?: "queue.bind failed");
                        if (r < 0)
                                return r;
                }

                if (q->no_consume)
                        continue;
                what = mfree(what);
                if (asprintf(&what, "consuming queue %s failed", q->name) < 0)
                        what = NULL;
                ok = sym_amqp_basic_consume(c->conn, AMQP_CHANNEL, bytes_of(q->name), empty_bytes,
                                            /* no_local= */ false, /* no_ack= */ false, /* exclusive= */ false,
                                            empty_table);
                r = rpc_check(c, what ?: "basic.consume failed");
                if (r < 0)
                        return r;
                q->consumer_tag = ok ? strdup_bytes(ok->consumer_tag) : NULL;
                if (!q->consumer_tag) {
                        client_fail(c, "out of memory");
                        return -ENOMEM;
                }
        }
        return 0;
}

/* The socket is connected (and owned by librabbitmq): log in, declare, consume. */
static int client_setup(AmqpClient *c) {
        int fd, r, hb;

        r = client_handshake(c);
        if (r < 0)
                return r;

        fd = sym_amqp_get_sockfd(c->conn);
        r = sd_event_add_io(c->event, &c->io_source, fd, EPOLLIN, on_io, c);
        if (r < 0) {
                client_fail(c, "cannot watch socket: %s", strerror(-r));
                return r;
        }
        (void) sd_event_source_set_description(c->io_source, "amqp-io");

        hb = sym_amqp_get_heartbeat(c->conn);
        if (hb > 0) {
                r = sd_event_add_time_relative(c->event, &c->heartbeat_timer, CLOCK_MONOTONIC,
                                               (uint64_t) hb * USEC_PER_SEC / 2, 0, on_heartbeat, c);
                if (r < 0) {
                        client_fail(c, "cannot arm heartbeat timer: %s", strerror(-r));
                        return r;
                }
                (void) sd_event_source_set_enabled(c->heartbeat_timer, SD_EVENT_ON);
                (void) sd_event_source_set_description(c->heartbeat_timer, "amqp-heartbeat");
        }

        c->connected = true;
        c->up_since = loop_now(c);
        log_debug("amqp: connected to %s:%u vhost %s, heartbeat %d s", c->url.host, c->url.port, c->url.vhost, hb);

        /* Deliveries that arrived during the RPCs are queued inside librabbitmq. */
        (void) sd_event_source_set_enabled(c->drain_source, SD_EVENT_ONESHOT);

        if (c->callbacks.state)
                c->callbacks.state(c, true, NULL, c->callbacks.userdata);
        return 0;
}

static int tcp_connected(AmqpClient *c) {
        amqp_socket_t *sock;
        int one = 1;

        c->connect_source = sd_event_source_unref(c->connect_source);
        c->connect_timer = sd_event_source_unref(c->connect_timer);
        if (c->addresses) {
                freeaddrinfo(c->addresses);
                c->addresses = c->next_address = NULL;
        }

        (void) setsockopt(c->connect_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void) setsockopt(c->connect_fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));

        c->conn = sym_amqp_new_connection();
        if (!c->conn) {
                client_fail(c, "out of memory");
                return -ENOMEM;
        }
        sock = sym_amqp_tcp_socket_new(c->conn);
        if (!sock) {
                client_fail(c, "out of memory");
                return -ENOMEM;
        }
        /* From here on librabbitmq owns and closes the fd. */
        sym_amqp_tcp_socket_set_sockfd(sock, TAKE_FD(c->connect_fd));

        return client_setup(c);
}

static int connect_next(AmqpClient *c);

static int on_connect_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AmqpClient *c = userdata;
        int error = 0;
        socklen_t len = sizeof(error);

        if (getsockopt(c->connect_fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                error = errno;
        if (error != 0) {
                c->connect_error = error;
                c->connect_source = sd_event_source_unref(c->connect_source);
                c->connect_timer = sd_event_source_unref(c->connect_timer);
                c->connect_fd = safe_close(c->connect_fd);
                (void) connect_next(c);
                return 0;
        }
        (void) tcp_connected(c);
        return 0;
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        AmqpClient *c = userdata;

        c->connect_error = ETIMEDOUT;
        c->connect_source = sd_event_source_unref(c->connect_source);
        c->connect_timer = sd_event_source_unref(c->connect_timer);
        c->connect_fd = safe_close(c->connect_fd);
        (void) connect_next(c);
        return 0;
}

/* Tries the resolved addresses in turn. */
static int connect_next(AmqpClient *c) {
        int r;

        while (c->next_address) {
                struct addrinfo *ai = c->next_address;
                _cleanup_close_ int fd = -EBADF;

                c->next_address = ai->ai_next;

                fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
                if (fd < 0) {
                        c->connect_error = errno;
                        continue;
                }
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                        if (errno != EINPROGRESS) {
                                c->connect_error = errno;
                                continue;
                        }
                        r = sd_event_add_io(c->event, &c->connect_source, fd, EPOLLOUT, on_connect_io, c);
                        if (r < 0) {
                                client_fail(c, "cannot watch socket: %s", strerror(-r));
                                return r;
                        }
                        (void) sd_event_source_set_description(c->connect_source, "amqp-connect");
                        r = sd_event_add_time_relative(c->event, &c->connect_timer, CLOCK_MONOTONIC,
                                                       c->connect_timeout_usec, 0, on_connect_timeout, c);
                        if (r < 0) {
                                client_fail(c, "cannot arm connect timer: %s", strerror(-r));
                                return r;
                        }
                        (void) sd_event_source_set_description(c->connect_timer, "amqp-connect-timeout");
                        c->connect_fd = TAKE_FD(fd);
                        return 0;
                }
                c->connect_fd = TAKE_FD(fd);
                return tcp_connected(c);
        }

        client_fail(c, "connecting to %s:%u failed: %s", c->url.host, c->url.port,
                    strerror(c->connect_error ?: ECONNREFUSED));
        return -(c->connect_error ?: ECONNREFUSED);
}

static const char *default_ca_file(void) {
        static const char *const candidates[] = {
                "/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Arch */
                "/etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
                "/etc/ssl/ca-bundle.pem",             /* openSUSE */
                "/etc/ssl/cert.pem",
        };

        for (size_t i = 0; i < ELEMENTSOF(candidates); i++)
                if (access(candidates[i], R_OK) == 0)
                        return candidates[i];
        return NULL;
}

static int tls_connect(AmqpClient *c) {
        struct timeval tv = timeval_of(c->connect_timeout_usec);
        const char *ca = c->ca_file ?: default_ca_file();
        amqp_socket_t *sock;
        int r;

        c->conn = sym_amqp_new_connection();
        if (!c->conn) {
                client_fail(c, "out of memory");
                return -ENOMEM;
        }
        sock = sym_amqp_ssl_socket_new(c->conn);
        if (!sock) {
                client_fail(c, "cannot create TLS socket");
                return -ENOMEM;
        }
        sym_amqp_ssl_socket_set_verify_peer(sock, true);
        sym_amqp_ssl_socket_set_verify_hostname(sock, true);
        (void) sym_amqp_ssl_socket_set_ssl_versions(sock, AMQP_TLSv1_2, AMQP_TLSvLATEST);
        if (!ca) {
                client_fail(c, "no CA bundle found, set the CA file");
                return -ENOENT;
        }
        r = sym_amqp_ssl_socket_set_cacert(sock, ca);
        if (r < 0) {
                client_fail(c, "loading CA file %s failed: %s", ca, sym_amqp_error_string2(r));
                return -EINVAL;
        }
        if (c->cert_file || c->key_file) {
                r = sym_amqp_ssl_socket_set_key(sock, c->cert_file, c->key_file ?: c->cert_file);
                if (r < 0) {
                        client_fail(c, "loading client certificate %s failed: %s", strna(c->cert_file),
                                    sym_amqp_error_string2(r));
                        return -EINVAL;
                }
        }

        /* TCP connect and TLS handshake, blocking for at most the connect timeout:
         * librabbitmq's TLS socket cannot be given an already connected fd. */
        r = sym_amqp_socket_open_noblock(sock, c->url.host, c->url.port, &tv);
        if (r < 0) {
                client_fail(c, "TLS connection to %s:%u failed: %s", c->url.host, c->url.port,
                            sym_amqp_error_string2(r));
                return -ECONNREFUSED;
        }
        return client_setup(c);
}

static int client_connect(AmqpClient *c) {
        struct addrinfo hints = {
                .ai_socktype = SOCK_STREAM,
                .ai_protocol = IPPROTO_TCP,
        };
        char port[16];
        int r;

        assert(!c->conn && !c->failing);

        log_debug("amqp: connecting to %s:%u", c->url.host, c->url.port);

        if (c->url.tls)
                return tls_connect(c);

        (void) snprintf(port, sizeof(port), "%u", c->url.port);
        r = getaddrinfo(c->url.host, port, &hints, &c->addresses);
        if (r != 0) {
                c->addresses = NULL;
                client_fail(c, "cannot resolve %s: %s", c->url.host,
                            r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
                return -EHOSTUNREACH;
        }
        c->next_address = c->addresses;
        c->connect_error = 0;
        return connect_next(c);
}

/* ---- public API ---- */

static void exchanges_free(Exchange *e, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(e[i].name);
                free(e[i].type);
        }
        free(e);
}

static void queues_free(Queue *q, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(q[i].name);
                free(q[i].exchange);
                free(q[i].routing_key);
                free(q[i].consumer_tag);
        }
        free(q);
}

AmqpClient *amqp_client_free(AmqpClient *c) {
        if (!c)
                return NULL;
        if (c->dispatching > 0) {
                /* Called from a delivery or confirm callback: client_drain() frees it
                 * once the callback returned. */
                c->free_requested = true;
                return NULL;
        }
        return client_free_now(c);
}

static AmqpClient *client_free_now(AmqpClient *c) {
        if (c->conn && c->connected && !c->failing) {
                /* A short polite close, so the broker requeues our deliveries at once
                 * and logs a clean close. */
                struct timeval tv = timeval_of(MIN(c->connect_timeout_usec, CLOSE_TIMEOUT_USEC));

                (void) sym_amqp_set_rpc_timeout(c->conn, &tv);
                (void) sym_amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS);
                c->can_close = false;
        }
        connection_release(c);

        c->reconnect_timer = sd_event_source_unref(c->reconnect_timer);
        c->drain_source = sd_event_source_unref(c->drain_source);
        c->fail_source = sd_event_source_unref(c->fail_source);
        c->event = sd_event_unref(c->event);

        free(c->fail_reason);
        amqp_url_done(&c->url);
        free(c->user);
        if (c->password) {
                explicit_bzero(c->password, strlen(c->password));
                free(c->password);
        }
        free(c->ca_file);
        free(c->cert_file);
        free(c->key_file);
        exchanges_free(c->exchanges, c->n_exchanges);
        queues_free(c->queues, c->n_queues);
        free(c->unconfirmed);
        free(c->unacked);
        return mfree(c);
}

static int strdup_opt(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int amqp_client_new(sd_event *e,
                    const AmqpSettings *settings,
                    const AmqpExchange *exchanges,
                    size_t n_exchanges,
                    const AmqpQueue *queues,
                    size_t n_queues,
                    const AmqpCallbacks *callbacks,
                    AmqpClient **ret) {
        _cleanup_(amqp_client_freep) AmqpClient *c = NULL;
        int r;

        if (!e || !settings || !ret || (n_exchanges > 0 && !exchanges) || (n_queues > 0 && !queues))
                return -EINVAL;
        r = dlopen_rabbitmq();
        if (r < 0)
                return r;
        if (n_queues > 1000 || n_exchanges > 1000)
                return -EINVAL;

        c = calloc(1, sizeof(AmqpClient));
        if (!c)
                return -ENOMEM;
        c->connect_fd = -EBADF;
        c->event = sd_event_ref(e);
        if (callbacks)
                c->callbacks = *callbacks;

        r = amqp_url_parse(settings->url, &c->url);
        if (r < 0)
                return r;

        r = strdup_opt(settings->user ?: c->url.user ?: "guest", &c->user);
        if (r < 0)
                return r;
        r = strdup_opt(settings->password ?: c->url.password ?: "guest", &c->password);
        if (r < 0)
                return r;
        if (strdup_opt(settings->ca_file, &c->ca_file) < 0 || strdup_opt(settings->cert_file, &c->cert_file) < 0 ||
            strdup_opt(settings->key_file, &c->key_file) < 0)
                return -ENOMEM;
        c->heartbeat_sec = settings->heartbeat_sec ?: 30;
        c->prefetch = settings->prefetch ?: 4;
        c->connect_timeout_usec = settings->connect_timeout_usec ?: 10 * USEC_PER_SEC;
        c->backoff_usec = BACKOFF_MIN_USEC;

        if (n_exchanges > 0) {
                c->exchanges = calloc(n_exchanges, sizeof(Exchange));
                if (!c->exchanges)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n_exchanges; i++) {
                if (isempty(exchanges[i].name))
                        return -EINVAL;
                c->n_exchanges++;
                if (strdup_opt(exchanges[i].name, &c->exchanges[i].name) < 0 ||
                    strdup_opt(exchanges[i].type ?: "direct", &c->exchanges[i].type) < 0)
                        return -ENOMEM;
        }
        if (n_queues > 0) {
                c->queues = calloc(n_queues, sizeof(Queue));
                if (!c->queues)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n_queues; i++) {
                if (isempty(queues[i].name))
                        return -EINVAL;
                c->n_queues++;
                if (strdup_opt(queues[i].name, &c->queues[i].name) < 0 ||
                    strdup_opt(queues[i].exchange, &c->queues[i].exchange) < 0 ||
                    strdup_opt(queues[i].routing_key ?: "", &c->queues[i].routing_key) < 0)
                        return -ENOMEM;
                c->queues[i].no_consume = queues[i].no_consume;
        }

        r = sd_event_add_defer(e, &c->drain_source, on_drain, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->drain_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->drain_source, "amqp-drain");

        r = sd_event_add_defer(e, &c->fail_source, on_fail, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->fail_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->fail_source, "amqp-fail");

        *ret = TAKE_PTR(c);
        return 0;
}

int amqp_client_start(AmqpClient *c) {
        if (!c)
                return -EINVAL;
        if (c->started)
                return 0;
        c->started = true;
        /* First attempt from the loop, so no callback runs inside this call. */
        return schedule_reconnect(c, 0);
}

bool amqp_client_is_connected(AmqpClient *c) {
        return c && c->connected && !c->failing && !c->free_requested && c->conn;
}

static int settle(AmqpClient *c, uint64_t delivery_tag, bool ack, bool requeue) {
        int r;

        if (!amqp_client_is_connected(c))
                return -ENOTCONN;
        if (!tag_array_remove(c->unacked, &c->n_unacked, delivery_tag))
                return -ESTALE;

        if (ack)
                r = sym_amqp_basic_ack(c->conn, AMQP_CHANNEL, delivery_tag, false);
        else
                r = sym_amqp_basic_reject(c->conn, AMQP_CHANNEL, delivery_tag, requeue);
        if (r < 0) {
                client_fail_status(c, r, ack ? "basic.ack failed" : "basic.reject failed");
                return -ENOTCONN;
        }
        schedule_drain_if_pending(c);
        return 0;
}

int amqp_client_ack(AmqpClient *c, uint64_t delivery_tag) {
        return settle(c, delivery_tag, true, false);
}

int amqp_client_reject(AmqpClient *c, uint64_t delivery_tag, bool requeue) {
        return settle(c, delivery_tag, false, requeue);
}

static int publish(AmqpClient *c,
                   const char *exchange,
                   const char *routing_key,
                   const void *body,
                   size_t size,
                   const amqp_basic_properties_t *props,
                   bool mandatory,
                   uint64_t *ret_tag) {
        uint64_t tag;
        int r;

        if (!c || (size > 0 && !body))
                return -EINVAL;
        if (!amqp_client_is_connected(c))
                return -ENOTCONN;

        /* Reserve the slot first, so a successful publish is always tracked. */
        tag = c->next_publish_tag + 1;
        if (c->n_unconfirmed >= c->allocated_unconfirmed) {
                size_t a = MAX(c->allocated_unconfirmed * 2, (size_t) 16);
                Unconfirmed *u = reallocarray(c->unconfirmed, a, sizeof(Unconfirmed));

                if (!u)
                        return -ENOMEM;
                c->unconfirmed = u;
                c->allocated_unconfirmed = a;
        }
        c->unconfirmed[c->n_unconfirmed++] = (Unconfirmed){.tag = tag, .state = CONFIRM_PENDING};

        r = sym_amqp_basic_publish(c->conn, AMQP_CHANNEL, bytes_of(exchange), bytes_of(routing_key), mandatory,
                                   /* immediate= */ false, props,
                                   (amqp_bytes_t){.len = size, .bytes = (void *) (body ?: "")});
        if (r < 0) {
                c->n_unconfirmed--;
                client_fail_status(c, r, "publish failed");
                return -ENOTCONN;
        }
        c->next_publish_tag = tag;
        schedule_drain_if_pending(c);

        if (ret_tag)
                *ret_tag = tag;
        return 0;
}

int amqp_client_publish(AmqpClient *c,
                        const char *exchange,
                        const char *routing_key,
                        const void *body,
                        size_t size,
                        bool persistent,
                        const char *message_id,
                        uint64_t *ret_tag) {
        amqp_basic_properties_t props = {
                ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
                .content_type = sym_amqp_cstring_bytes("application/json"),
                .delivery_mode = persistent ? 2 : 1,
        };

        if (message_id) {
                props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
                props.message_id = sym_amqp_cstring_bytes(message_id);
        }
        return publish(c, exchange, routing_key, body, size, &props, /* mandatory= */ false, ret_tag);
}

int amqp_client_publish_as(AmqpClient *c,
                           const char *exchange,
                           const char *routing_key,
                           const void *body,
                           size_t size,
                           const AmqpProperties *props,
                           bool mandatory,
                           uint64_t *ret_tag) {
        amqp_basic_properties_t p = props ? props->p : (amqp_basic_properties_t){};

        /* RabbitMQ closes the channel (406) for a user_id that is not the login's. */
        if ((p._flags & AMQP_BASIC_USER_ID_FLAG) && c &&
            (p.user_id.len != strlen(c->user) || memcmp(p.user_id.bytes, c->user, p.user_id.len) != 0)) {
                log_debug("amqp: leaving out user_id %.*s of a message published again: not ours", (int) p.user_id.len,
                          (const char *) p.user_id.bytes);
                p._flags &= ~AMQP_BASIC_USER_ID_FLAG;
        }
        return publish(c, exchange, routing_key, body, size, &p, mandatory, ret_tag);
}

unsigned amqp_client_n_unconfirmed(AmqpClient *c) {
        return c ? (unsigned) c->n_unconfirmed : 0;
}
