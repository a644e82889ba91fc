/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A taskData value a task hands back: validate it; a valid value is trimmed, valid
 * again unchanged, and fits the limit. */

#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "lagoon-message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *out = NULL, *again = NULL, *error = NULL;
        size_t n;
        int r;

        r = lagoon_task_data_validate((const char *) data, size, &out, &error);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (out || !error || (r != -EBADMSG && r != -E2BIG) || strchr(error, '\n'))
                        __builtin_trap();
                return 0;
        }
        if (!out || error)
                __builtin_trap();
        n = strlen(out);
        if (n == 0 || n > LAGOON_TASK_DATA_MAX || isspace((unsigned char) out[0]) ||
            isspace((unsigned char) out[n - 1]) || !memmem(data, size, out, n))
                __builtin_trap();
        if (lagoon_task_data_validate(out, n, &again, NULL) < 0 || !streq(out, again))
                __builtin_trap();
        return 0;
}
