/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The durable outbox: every message for Lagoon is written here before it is sent, and
 * removed only once the peer confirmed it (broker publisher confirm, API 2xx) or it
 * was given up (API 4xx). One directory, one file per entry:
 *   <dir>/<seq, 20 decimal digits>.json
 *   {"seq":N,"sink":"bus"|"api","task":ID,"kind":K,"exchange":E,"routingKey":R,
 *    "body":B}   (exchange/routingKey only for the bus sink; a body that is not valid
 *    UTF-8 or holds a NUL is stored as "bodyBase64" instead of "body")
 * written atomically (temporary file, fsync, rename, fsync of the directory).
 * <dir>/reserved-seq holds a bound on the seqs handed out, so seqs keep growing across
 * restarts even after the outbox was drained. Entries of
 * a sink are delivered in seq order, which keeps every task's messages in order.
 * A file that cannot be read or parsed is moved to <dir>/corrupt/ and counted, never
 * fatal. Library-like: no logging above debug. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef enum OutboxSink {
        OUTBOX_BUS, /* RabbitMQ */
        OUTBOX_API, /* Lagoon GraphQL API */
        _OUTBOX_SINK_MAX,
} OutboxSink;

typedef struct OutboxEntry {
        uint64_t seq;
        OutboxSink sink;
        char *task_id;
        char *kind;        /* "status", "event", "logs", "update" */
        char *exchange;    /* bus only */
        char *routing_key; /* bus only, may be "" */
        char *body;
        size_t body_size;
        bool in_flight;       /* set by the sender; in memory only */
        uint64_t queued_usec; /* CLOCK_REALTIME it was appended (kept by coalescing), after a
                               * restart its file's mtime; in memory only, for the metrics */
} OutboxEntry;

typedef struct Outbox Outbox;

/* Creates dir if needed and loads every entry in it. *ret_n_corrupt (may be NULL) gets
 * the number of files moved to corrupt/. */
int outbox_open(const char *dir, Outbox **ret, unsigned *ret_n_corrupt);
Outbox *outbox_free(Outbox *o);
DEFINE_TRIVIAL_CLEANUP_FUNC(Outbox *, outbox_free);

/* Appends an entry durably (returns only after the file and the directory are synced).
 * With coalesce: when the newest entry of that sink for that task has the same kind and
 * is not in flight, its body is replaced (durably) instead of appending a new entry —
 * for log messages, where only the latest matters. Returns the entry's seq in *ret_seq
 * (may be NULL). -ENOSPC etc. on I/O errors, nothing changed in memory. */
int outbox_append(Outbox *o,
                  OutboxSink sink,
                  const char *task_id,
                  const char *kind,
                  const char *exchange,
                  const char *routing_key,
                  const char *body,
                  size_t body_size,
                  bool coalesce,
                  uint64_t *ret_seq);

/* Pending entries of a sink, oldest first: the i-th one, NULL past the end. Pointers
 * stay valid until the entry is removed or replaced by a coalescing append. */
OutboxEntry *outbox_get(Outbox *o, OutboxSink sink, size_t i);
size_t outbox_count(Outbox *o, OutboxSink sink);
/* queued_usec of the sink's oldest pending entry, 0 when there is none. */
uint64_t outbox_oldest_usec(Outbox *o, OutboxSink sink);
/* Entry by seq, NULL when not pending. */
OutboxEntry *outbox_find(Outbox *o, uint64_t seq);
/* Whether any entry for task_id is pending (in any sink). */
bool outbox_has_task(Outbox *o, const char *task_id);

/* Removes an entry (file unlinked, directory synced). -ENOENT when unknown. */
int outbox_remove(Outbox *o, uint64_t seq);
/* Clears in_flight on every entry of the sink (connection lost: resend all). */
void outbox_reset_in_flight(Outbox *o, OutboxSink sink);

const char *outbox_sink_to_string(OutboxSink s);

/* Internal, exported for tests and fuzzing: parses one entry file's content. -EBADMSG
 * when it is not a valid entry. */
int outbox_entry_parse(const char *data, size_t size, OutboxEntry **ret);
/* The file content for an entry (NUL-terminated, ends in a newline). -EFBIG when it
 * would be too large to be loaded again. */
int outbox_entry_format(const OutboxEntry *e, char **ret, size_t *ret_size);
OutboxEntry *outbox_entry_free(OutboxEntry *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(OutboxEntry *, outbox_entry_free);
