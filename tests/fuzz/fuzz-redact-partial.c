/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target: a task's line arriving in pieces, shown to followers as logtail.c
 * does (the masked redact_stable_prefix() of what is not shown yet, after each piece).
 * Input: a byte n (1-4 secrets), then per secret a length byte (4-19) and its bytes,
 * then the pieces: a length byte (1-64) and that many bytes of the line, repeated.
 * What was shown must always be a prefix of the whole line masked, and the rest masked
 * on its own must complete it. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *secrets[5] = {};
        size_t n_secrets, p = 0, len = 0, raw_shown = 0, shown_len = 0, whole_len, rest_len;
        char *text = NULL, *shown = NULL, *whole = NULL, *rest = NULL;
        size_t ends[4096], n_ends = 0;

        if (size < 1)
                return 0;
        n_secrets = 1 + data[p++] % 4;
        for (size_t k = 0; k < n_secrets; k++) {
                size_t l;
                if (p >= size)
                        goto out;
                l = 4 + data[p++] % 16;
                if (size - p < l)
                        goto out;
                secrets[k] = strndup((const char *) data + p, l);
                if (!secrets[k])
                        goto out;
                p += l;
        }

        /* The line: the rest of the input without the piece length bytes. */
        text = malloc(size);
        if (!text)
                goto out;
        while (p < size && n_ends < ELEMENTSOF(ends)) {
                size_t want = (size_t) 1 + data[p++] % 64, l = MIN(want, size - p);
                memcpy(text + len, data + p, l);
                p += l;
                len += l;
                ends[n_ends++] = len;
        }

        whole = redact(text, len, secrets, &whole_len);
        shown = malloc(len * 3 + 1);
        if (!whole || !shown)
                goto out;
        for (size_t i = 0; i < n_ends; i++) {
                size_t n = redact_stable_prefix(text + raw_shown, ends[i] - raw_shown, secrets), piece_len;
                char *piece;

                if (raw_shown + n > ends[i])
                        abort();
                piece = redact(text + raw_shown, n, secrets, &piece_len);
                if (!piece)
                        goto out;
                memcpy(shown + shown_len, piece, piece_len);
                shown_len += piece_len;
                raw_shown += n;
                free(piece);
                if (shown_len > whole_len || memcmp(shown, whole, shown_len) != 0)
                        abort();
        }
        rest = redact(text + raw_shown, len - raw_shown, secrets, &rest_len);
        if (rest && (shown_len + rest_len != whole_len || memcmp(whole + shown_len, rest, rest_len) != 0))
                abort();

out:
        for (size_t k = 0; k < ELEMENTSOF(secrets); k++)
                free(secrets[k]);
        free(text);
        free(shown);
        free(whole);
        free(rest);
        return 0;
}
