/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* json_parse on arbitrary bytes; whatever parses must format and re-parse to the same text. */

#include <stdint.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ JsonValue *v = NULL, *w = NULL;
        _cleanup_free_ char *s = NULL, *t = NULL, *err = NULL;
        size_t n;

        if (json_parse((const char *) data, size, 32, &v, &err) < 0)
                return 0;
        if (json_format(v, false, &s, &n) < 0)
                return 0;
        if (json_parse(s, n, 32, &w, NULL) < 0)
                __builtin_trap();
        if (json_format(w, true, &t, NULL) < 0)
                __builtin_trap();
        return 0;
}
