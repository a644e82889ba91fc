/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target: cri_log_parse_line() on arbitrary bytes (one record, no '\n'). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crilog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        CriLogLine l;
        char *copy;

        /* An exact-size heap copy, so ASan sees any read past the end. */
        copy = malloc(size ?: 1);
        if (!copy)
                return 0;
        if (size > 0)
                memcpy(copy, data, size);

        if (cri_log_parse_line(copy, size, &l) >= 0) {
                /* The pieces must lie inside the input. */
                if (l.timestamp < copy || l.timestamp + l.timestamp_len > copy + size || l.text < copy ||
                    l.text + l.text_len > copy + size || l.timestamp_len == 0)
                        abort();
                volatile char sink = 0;
                for (size_t i = 0; i < l.text_len; i++)
                        sink ^= l.text[i];
                (void) sink;
        }

        free(copy);
        return 0;
}
