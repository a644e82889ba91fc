/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A task record as the store reads it from disk: parse, validate, and for valid
 * records check the persisted form round-trips. */

#include <stdint.h>
#include <string.h>

#include "json.h"
#include "task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ JsonValue *v = NULL, *rec = NULL;
        _cleanup_(task_freep) Task *t = NULL, *back = NULL;

        if (json_parse((const char *) data, size, 16, &v, NULL) < 0)
                return 0;
        if (task_from_json(v, &t) < 0)
                return 0;
        if (task_to_record(t, &rec) < 0)
                __builtin_trap();
        if (task_from_json(rec, &back) < 0 || !streq(back->id, t->id) || back->status != t->status)
                __builtin_trap();
        return 0;
}
