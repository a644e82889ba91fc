/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Secret masking for task output: every byte covered by an occurrence of a configured
 * secret is hidden, and each run of overlapping occurrences becomes one "***". Pure,
 * binary safe (secrets are C strings, the text is not). */

#include <errno.h>
#include <stdio.h>
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

/* Whether text[i..len) is a proper prefix of a secret: one the rest of the line may
 * complete. */
static bool starts_secret(const char *text, size_t len, size_t i, char *const *secrets) {
        for (char *const *s = secrets; *s; s++) {
                size_t l = strlen(*s);
                if (l > len - i && memcmp(text + i, *s, len - i) == 0)
                        return true;
        }
        return false;
}

size_t redact_stable_prefix(const char *text, size_t len, char *const *secrets) {
        _cleanup_free_ size_t *lens = NULL;
        size_t n_secrets = 0, max_len = 0, p = len, run_start = 0, covered_end = 0;
        bool in_run = false;

        if (!text || !secrets || !secrets[0] || len == 0)
                return len;

        while (secrets[n_secrets]) {
                max_len = MAX(max_len, strlen(secrets[n_secrets]));
                n_secrets++;
        }

        /* p: the first position where an occurrence could begin that is not complete yet.
         * Only the last (longest - 1) bytes can be one. */
        for (size_t i = len > max_len ? len - max_len + 1 : 0; i < len; i++)
                if (starts_secret(text, len, i, secrets)) {
                        p = i;
                        break;
                }

        lens = malloc(n_secrets * sizeof(size_t));
        if (!lens)
                return 0; /* show nothing rather than too much */
        for (size_t k = 0; k < n_secrets; k++)
                lens[k] = strlen(secrets[k]);

        /* The masked runs before p as redact() forms them: every occurrence starting there
         * lies within text already (a longer one would make its start < p a candidate). A
         * run still open at p could grow by an occurrence starting at p or after: keep all
         * of it back. One that ends at p is closed, a new occurrence there is a new run. */
        for (size_t i = 0; i < p; i++) {
                if (in_run && i >= covered_end)
                        in_run = false;
                size_t e = longest_match_end(text, len, i, secrets, lens);
                if (in_run)
                        covered_end = MAX(covered_end, e);
                else if (e > i) {
                        in_run = true;
                        run_start = i;
                        covered_end = e;
                }
        }
        if (in_run && covered_end > p)
                return run_start;
        return p;
}

/* s (n bytes) JSON-escaped as RFC 8259 encoders write it: \" \\ \n \r \t \b \f, other
 * control characters as \u00XX, everything else as is. */
static char *json_escaped(const char *s, size_t n) {
        char *out = malloc(n * 6 + 1), *o = out;

        if (!out)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = s[i];
                const char *e = c == '"'    ? "\\\""
                                : c == '\\' ? "\\\\"
                                : c == '\n' ? "\\n"
                                : c == '\r' ? "\\r"
                                : c == '\t' ? "\\t"
                                : c == '\b' ? "\\b"
                                : c == '\f' ? "\\f"
                                            : NULL;
                if (e) {
                        memcpy(o, e, 2);
                        o += 2;
                } else if (c < 0x20) {
                        snprintf(o, 7, "\\u%04x", c);
                        o += 6;
                } else
                        *o++ = c;
        }
        *o = 0;
        return out;
}

static int add_form(char ***l, const char *s, size_t n) {
        _cleanup_free_ char *plain = NULL, *escaped = NULL;
        int r;

        if (n < REDACT_SECRET_MIN)
                return 0;
        plain = strndup(s, n);
        escaped = json_escaped(s, n);
        if (!plain || !escaped)
                return -ENOMEM;
        if (!strv_contains(*l, plain) && (r = strv_extend(l, plain)) < 0)
                return r;
        if (!strv_contains(*l, escaped) && (r = strv_extend(l, escaped)) < 0)
                return r;
        return 0;
}

int redact_secret_forms(char *const *secrets, char ***ret) {
        _cleanup_strv_free_ char **l = calloc(1, sizeof(char *));
        int r;

        if (!l)
                return -ENOMEM;
        for (char *const *s = secrets; s && *s; s++) {
                const char *p = *s;

                r = add_form(&l, p, strlen(p));
                if (r < 0)
                        return r;
                if (!strchr(p, '\n'))
                        continue;
                while (*p) {
                        size_t n = strcspn(p, "\n");
                        size_t m = n > 0 && p[n - 1] == '\r' ? n - 1 : n;

                        r = add_form(&l, p, m);
                        if (r < 0)
                                return r;
                        p += n + (p[n] == '\n');
                }
        }
        *ret = TAKE_PTR(l);
        return 0;
}
