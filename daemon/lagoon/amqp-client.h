/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* An AMQP 0-9-1 client on the event loop, over librabbitmq (which is written for
 * blocking use): the socket is an sd-event io source, frames are drained without
 * blocking while the library holds buffered data, heartbeats are sent from a timer and
 * a silent broker (no frame for two heartbeat intervals) counts as gone. One
 * connection, one channel, used both for consuming (basic.qos prefetch, basic.consume,
 * ack/reject) and for publishing with publisher confirms (confirm.select).
 *
 * Connecting never blocks the loop for long: for amqp:// the TCP connect is
 * non-blocking (the socket handed to librabbitmq once connected); login and topology
 * declaration are short RPCs with a timeout. When the connection fails or drops, the
 * client reconnects by itself with exponential backoff (1 s doubling to 60 s, reset
 * after a connection that stayed up 30 s). Knows nothing about Lagoon. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct AmqpClient AmqpClient;

typedef struct AmqpSettings {
        const char *url;        /* amqp://host[:port][/vhost] or amqps://…; vhost URL-decoded, default "/";
                                 * user:password@ in the URL are used when user/password are NULL */
        const char *user;       /* NULL → from URL, else "guest" */
        const char *password;   /* NULL → from URL, else "guest" */
        unsigned heartbeat_sec; /* 0 → 30 */
        unsigned prefetch;      /* basic.qos prefetch_count; 0 → 4 */
        const char *ca_file;    /* amqps: CA file, NULL → system default; peer and host verification always on */
        const char *cert_file;  /* amqps client certificate, may be NULL */
        const char *key_file;
        uint64_t connect_timeout_usec; /* 0 → 10 s; also the RPC timeout */
} AmqpSettings;

typedef struct AmqpExchange {
        const char *name;
        const char *type; /* "direct", … ; declared durable */
} AmqpExchange;

typedef struct AmqpQueue {
        const char *name; /* declared durable, bound to exchange with routing_key, consumed */
        const char *exchange;
        const char *routing_key;
        bool no_consume; /* only declared and bound: another consumer's queue we route to */
} AmqpQueue;

/* The properties of a delivery (content type, delivery mode, headers, message id, …),
 * kept to publish the message again unchanged (amqp_client_publish_as()). */
typedef struct AmqpProperties AmqpProperties;
int amqp_properties_copy(const AmqpProperties *p, AmqpProperties **ret);
AmqpProperties *amqp_properties_free(AmqpProperties *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(AmqpProperties *, amqp_properties_free);

/* A delivery: queue is the AmqpQueue name it was consumed from; props are valid during
 * the call only (amqp_properties_copy() keeps them). The owner must call
 * amqp_client_ack() or amqp_client_reject() for it (possibly later), unless the
 * connection is lost first (then the broker requeues it and the tag is void). */
typedef void (*amqp_delivery_cb_t)(AmqpClient *c,
                                   const char *queue,
                                   const char *routing_key,
                                   uint64_t delivery_tag,
                                   const void *body,
                                   size_t size,
                                   const AmqpProperties *props,
                                   void *userdata);
/* A publish was confirmed (ack = true) or refused (basic.nack). Reported in publish
 * order (ascending tags): the broker confirms messages of different queues in any
 * order, an early confirm waits until every earlier publish is confirmed. A mandatory
 * publish no queue took is confirmed too (ack), after its return. */
typedef void (*amqp_confirm_cb_t)(AmqpClient *c, uint64_t publish_tag, bool ack, void *userdata);
/* A mandatory publish was returned: no queue is bound for its routing key. The broker
 * sends the return before the publish's confirm; the return names no publish tag, so
 * the owner matches it by routing key and body. */
typedef void (*amqp_return_cb_t)(AmqpClient *c,
                                 const char *exchange,
                                 const char *routing_key,
                                 const void *body,
                                 size_t size,
                                 void *userdata);
/* connected: topology declared and consuming. !connected: the connection is gone;
 * every unconfirmed publish and every unacknowledged delivery of it is void. reason is a
 * readable text on loss ("connection refused", "channel closed by broker: 404 NOT_FOUND …"). */
typedef void (*amqp_state_cb_t)(AmqpClient *c, bool connected, const char *reason, void *userdata);

typedef struct AmqpCallbacks {
        amqp_delivery_cb_t delivery;
        amqp_confirm_cb_t confirm;
        amqp_state_cb_t state;
        amqp_return_cb_t returned; /* may be NULL: returns are dropped */
        void *userdata;
} AmqpCallbacks;

/* Copies settings and topology. Does not connect yet. -EINVAL for a bad URL. */
int amqp_client_new(sd_event *e,
                    const AmqpSettings *settings,
                    const AmqpExchange *exchanges,
                    size_t n_exchanges,
                    const AmqpQueue *queues,
                    size_t n_queues,
                    const AmqpCallbacks *callbacks,
                    AmqpClient **ret);
/* Starts connecting (in the background); reconnects until freed. */
int amqp_client_start(AmqpClient *c);
/* Closes the connection (politely when possible). Unacked deliveries go back to the queue.
 * May be called from any callback of this client. */
AmqpClient *amqp_client_free(AmqpClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(AmqpClient *, amqp_client_free);

bool amqp_client_is_connected(AmqpClient *c);

/* -ENOTCONN when not connected. */
int amqp_client_ack(AmqpClient *c, uint64_t delivery_tag);
int amqp_client_reject(AmqpClient *c, uint64_t delivery_tag, bool requeue);

/* Publishes a message (delivery_mode 2 = persistent when persistent, content_type
 * "application/json", message_id when non-NULL). *ret_tag is the confirm tag the
 * confirm callback will name. -ENOTCONN when not connected. */
int amqp_client_publish(AmqpClient *c,
                        const char *exchange,
                        const char *routing_key,
                        const void *body,
                        size_t size,
                        bool persistent,
                        const char *message_id,
                        uint64_t *ret_tag);
/* Publishes a message with the properties of a delivery, unchanged (props NULL: none),
 * except a user_id other than the login's, which the broker refuses (RabbitMQ closes
 * the channel): it is left out. With mandatory, a message no queue takes comes back
 * through the return callback. */
int amqp_client_publish_as(AmqpClient *c,
                           const char *exchange,
                           const char *routing_key,
                           const void *body,
                           size_t size,
                           const AmqpProperties *props,
                           bool mandatory,
                           uint64_t *ret_tag);
/* Publishes sent and not yet confirmed. */
unsigned amqp_client_n_unconfirmed(AmqpClient *c);

/* Internal, exported for tests and fuzzing: parses an AMQP URL. */
typedef struct AmqpUrl {
        bool tls;
        char *host;
        uint16_t port; /* 5672 or 5671 by default */
        char *vhost;
        char *user;     /* NULL when absent */
        char *password; /* NULL when absent */
} AmqpUrl;
int amqp_url_parse(const char *url, AmqpUrl *ret);
void amqp_url_done(AmqpUrl *u);
