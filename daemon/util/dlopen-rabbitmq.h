/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* librabbitmq, loaded when the Lagoon message bus is configured ([Lagoon] BrokerURL=):
 * dlopen-util.h. Call sym_*() only after dlopen_rabbitmq() returned 0. */

/* librabbitmq >= 0.12 has namespaced headers; 0.11 (Debian 12) only the top-level ones. */
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/framing.h>
#include <rabbitmq-c/ssl_socket.h>
#include <rabbitmq-c/tcp.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#endif

#include "dlopen-util.h"

#define RABBITMQ_SYMBOLS(X) \
        X(amqp_basic_ack) \
        X(amqp_basic_consume) \
        X(amqp_basic_publish) \
        X(amqp_basic_qos) \
        X(amqp_basic_reject) \
        X(amqp_channel_open) \
        X(amqp_confirm_select) \
        X(amqp_connection_close) \
        X(amqp_cstring_bytes) \
        X(amqp_data_in_buffer) \
        X(amqp_destroy_connection) \
        X(amqp_error_string2) \
        X(amqp_exchange_declare) \
        X(amqp_frames_enqueued) \
        X(amqp_get_heartbeat) \
        X(amqp_get_rpc_reply) \
        X(amqp_get_sockfd) \
        X(amqp_login) \
        X(amqp_maybe_release_buffers) \
        X(amqp_new_connection) \
        X(amqp_pool_alloc_bytes) \
        X(amqp_queue_bind) \
        X(amqp_queue_declare) \
        X(amqp_send_frame) \
        X(amqp_send_method) \
        X(amqp_set_handshake_timeout) \
        X(amqp_set_rpc_timeout) \
        X(amqp_simple_wait_frame_noblock) \
        X(amqp_socket_open_noblock) \
        X(amqp_ssl_socket_new) \
        X(amqp_ssl_socket_set_cacert) \
        X(amqp_ssl_socket_set_key) \
        X(amqp_ssl_socket_set_ssl_versions) \
        X(amqp_ssl_socket_set_verify_hostname) \
        X(amqp_ssl_socket_set_verify_peer) \
        X(amqp_table_clone) \
        X(amqp_tcp_socket_new) \
        X(amqp_tcp_socket_set_sockfd) \
        X(empty_amqp_pool) \
        X(init_amqp_pool)

#define DLOPEN_RABBITMQ_DECLARE(s) extern DLSYM_PROTOTYPE(s);
RABBITMQ_SYMBOLS(DLOPEN_RABBITMQ_DECLARE)
#undef DLOPEN_RABBITMQ_DECLARE

/* 0, or -EOPNOTSUPP (logged) when librabbitmq.so.4 is missing or too old. */
int dlopen_rabbitmq(void);
