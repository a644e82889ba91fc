/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* An outbox entry file as outbox_open() reads it from disk: parse it, and for valid
 * entries check that what the outbox would write for it parses back to the same entry. */

#include <stdint.h>
#include <string.h>

#include "outbox.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(outbox_entry_freep) OutboxEntry *e = NULL, *back = NULL;
        _cleanup_free_ char *text = NULL;
        size_t text_size;

        if (outbox_entry_parse((const char *) data, size, &e) < 0)
                return 0;
        if (e->seq == 0 || !outbox_sink_to_string(e->sink) || isempty(e->task_id) || isempty(e->kind) || !e->body ||
            e->body[e->body_size] != 0 || e->in_flight)
                __builtin_trap();
        if ((e->sink == OUTBOX_BUS) != (e->exchange && e->routing_key))
                __builtin_trap();

        if (outbox_entry_format(e, &text, &text_size) < 0)
                __builtin_trap();
        if (outbox_entry_parse(text, text_size, &back) < 0)
                __builtin_trap();
        if (back->seq != e->seq || back->sink != e->sink || !streq(back->task_id, e->task_id) ||
            !streq(back->kind, e->kind) || !streq_ptr(back->exchange, e->exchange) ||
            !streq_ptr(back->routing_key, e->routing_key) || back->body_size != e->body_size ||
            memcmp(back->body, e->body, e->body_size) != 0)
                __builtin_trap();
        return 0;
}
