/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Fuzzes the parsers of what conmon and the OCI runtime tell the launcher: the sync-pipe
 * report and the error text taken from a runtime's stderr. */

#include <stddef.h>
#include <stdint.h>

#include "launcher-runtime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *s = NULL, *text = NULL, *reason = NULL;
        int64_t pid = 0;

        (void) runtime_parse_sync_message((const char *) data, size, &pid, &reason);

        s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = 0;
        text = runtime_error_text(s);
        return 0;
}
