/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Secret masking for task output: every byte covered by an occurrence of a configured
 * secret is hidden, and each run of overlapping occurrences becomes one "***". Pure,
 * binary safe (secrets are C strings, the text is not). */

#include <string.h>

#include "macro.h"
#include "redact.h"

#define MASK "***"
#define MASK_LEN (sizeof(MASK) - 1)

bool redact_needed(const char *text, size_t len, char *const *secrets) {
        if (!text || !secrets)
                return false;

        for (char *const *s = secrets; *s; s++) {
                size_t l = strlen(*s);
                if (l > 0 && l <= len && memmem(text, len, *s, l))
                        return true;
        }
        return false;
}

/* End of the longest secret occurring at text[i], or i when none does. */
static size_t longest_match_end(const char *text, size_t len, size_t i, char *const *secrets, const size_t *lens) {
        size_t best = i;

        for (size_t k = 0; secrets[k]; k++) {
                size_t l = lens[k];
                if (l == 0 || l > len - i || i + l <= best)
                        continue;
                if (text[i] == secrets[k][0] && memcmp(text + i, secrets[k], l) == 0)
                        best = i + l;
        }
        return best;
}

char *redact(const char *text, size_t len, char *const *secrets, size_t *ret_len) {
        _cleanup_free_ size_t *lens = NULL;
        size_t n_secrets = 0;
        char *out, *o;
        size_t covered_end = 0; /* end of the masked run we are in, 0 when none */
        bool in_run = false;

        if (!text && len > 0)
                return NULL;
        /* Every byte becomes at most MASK_LEN bytes (a one-byte secret at each position). */
        if (len > (SIZE_MAX - 1) / MASK_LEN)
                return NULL;

        /* Secret lengths once, not at every position (a JSON_PAYLOAD can be kilobytes). */
        if (secrets) {
                while (secrets[n_secrets])
                        n_secrets++;
                lens = malloc(MAX(n_secrets, (size_t) 1) * sizeof(size_t));
                if (!lens)
                        return NULL;
                for (size_t k = 0; k < n_secrets; k++)
                        lens[k] = strlen(secrets[k]);
        }

        out = malloc(len * MASK_LEN + 1);
        if (!out)
                return NULL;
        o = out;

        for (size_t i = 0; i < len; i++) {
                if (in_run && i >= covered_end) {
                        /* The run ended exactly here; an occurrence starting here is a new run. */
                        memcpy(o, MASK, MASK_LEN);
                        o += MASK_LEN;
                        in_run = false;
                }

                size_t e = n_secrets > 0 ? longest_match_end(text, len, i, secrets, lens) : i;
                if (in_run) {
                        covered_end = MAX(covered_end, e);
                        continue;
                }
                if (e > i) {
                        in_run = true;
                        covered_end = e;
                        continue;
                }
                *o++ = text[i];
        }
        if (in_run) {
                memcpy(o, MASK, MASK_LEN);
                o += MASK_LEN;
        }
        *o = 0;

        if (ret_len)
                *ret_len = o - out;

        /* Give back the worst-case reservation. */
        char *shrunk = realloc(out, (o - out) + 1);
        return shrunk ?: out;
}
