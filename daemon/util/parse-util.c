/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Parsers for the small values found in configuration files and API requests: systemd
 * style time spans (and their formatting), unsigned integers, booleans and shell-like
 * word lists. Pure functions: no logging, errors are returned as -errno. */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "parse-util.h"

#define WHITESPACE " \t\n\r"

static const struct {
        const char *suffix;
        uint64_t usec;
} duration_units[] = {
        /* Longest first where one suffix is a prefix of another ("min" before "m", "ms" before "m"). */
        {"seconds", USEC_PER_SEC},
        {"second", USEC_PER_SEC},
        {"sec", USEC_PER_SEC},
        {"s", USEC_PER_SEC},
        {"minutes", 60 * USEC_PER_SEC},
        {"minute", 60 * USEC_PER_SEC},
        {"min", 60 * USEC_PER_SEC},
        {"months", 2629800 * USEC_PER_SEC}, /* 30.44 days, as systemd */
        {"month", 2629800 * USEC_PER_SEC},
        {"msec", USEC_PER_MSEC},
        {"ms", USEC_PER_MSEC},
        {"m", 60 * USEC_PER_SEC},
        {"hours", 3600 * USEC_PER_SEC},
        {"hour", 3600 * USEC_PER_SEC},
        {"hr", 3600 * USEC_PER_SEC},
        {"h", 3600 * USEC_PER_SEC},
        {"days", 86400 * USEC_PER_SEC},
        {"day", 86400 * USEC_PER_SEC},
        {"d", 86400 * USEC_PER_SEC},
        {"weeks", 604800 * USEC_PER_SEC},
        {"week", 604800 * USEC_PER_SEC},
        {"w", 604800 * USEC_PER_SEC},
        {"years", 31557600 * USEC_PER_SEC}, /* 365.25 days, as systemd */
        {"year", 31557600 * USEC_PER_SEC},
        {"y", 31557600 * USEC_PER_SEC},
        {"usec", 1},
        {"us", 1},
        {"µs", 1},
};

/* Matches the unit at *p (a bare number means seconds) and advances past it. A unit must
 * not be followed by a letter, so "5mins" is not read as "5min" + garbage "s". */
static uint64_t duration_unit(const char **p, bool *ret_bare) {
        for (size_t i = 0; i < ELEMENTSOF(duration_units); i++) {
                const char *e = startswith(*p, duration_units[i].suffix);
                if (e && !isalpha((unsigned char) *e)) {
                        *p = e;
                        *ret_bare = false;
                        return duration_units[i].usec;
                }
        }
        if (isalpha((unsigned char) **p) || (unsigned char) **p >= 0x80)
                return 0; /* unknown unit */
        *ret_bare = true;
        return USEC_PER_SEC;
}

int parse_duration(const char *s, uint64_t *ret_usec) {
        uint64_t sum = 0;
        bool something = false;

        if (!s)
                return -EINVAL;

        s += strspn(s, WHITESPACE);
        if (startswith(s, "infinity")) {
                const char *e = s + strlen("infinity");
                if (e[strspn(e, WHITESPACE)] != '\0')
                        return -EINVAL;
                if (ret_usec)
                        *ret_usec = USEC_INFINITY;
                return 0;
        }

        for (const char *p = s;;) {
                uint64_t whole = 0, frac = 0, frac_div = 1, mult, v;
                bool digits = false, bare;
                size_t n_space;

                p += strspn(p, WHITESPACE);
                if (*p == '\0')
                        break;

                /* Digits only: no sign, so "-5s" and "+5s" are garbage. */
                for (; *p >= '0' && *p <= '9'; p++) {
                        digits = true;
                        uint64_t d = (uint64_t) (*p - '0');
                        if (whole > UINT64_MAX / 10 || (whole == UINT64_MAX / 10 && d > UINT64_MAX % 10))
                                return -ERANGE;
                        whole = whole * 10 + d;
                }
                if (*p == '.') {
                        p++;
                        for (; *p >= '0' && *p <= '9'; p++) {
                                digits = true;
                                /* Digits beyond microsecond resolution of a week are noise. */
                                if (frac_div < UINT64_C(1000000000000000)) {
                                        frac = frac * 10 + (uint64_t) (*p - '0');
                                        frac_div *= 10;
                                }
                        }
                }
                if (!digits)
                        return -EINVAL;

                n_space = strspn(p, " \t");
                p += n_space;
                mult = duration_unit(&p, &bare);
                if (mult == 0)
                        return -EINVAL;
                /* Without a unit the number must end there: "1..5s" and "5s-" are garbage. */
                if (bare && n_space == 0 && *p != '\0')
                        return -EINVAL;

                if (whole > UINT64_MAX / mult)
                        return -ERANGE;
                v = whole * mult;
                if (frac > 0) {
                        /* frac < frac_div <= 10^15 and mult <= ~3.2e13: split to avoid overflow. */
                        uint64_t f = (mult / frac_div) * frac +
                                     (uint64_t) ((long double) (mult % frac_div) * frac / frac_div);
                        if (v > UINT64_MAX - f)
                                return -ERANGE;
                        v += f;
                }
                if (sum > UINT64_MAX - v)
                        return -ERANGE;
                sum += v;
                something = true;
        }

        if (!something)
                return -EINVAL;
        if (sum == USEC_INFINITY) /* reserved for "infinity" */
                return -ERANGE;

        if (ret_usec)
                *ret_usec = sum;
        return 0;
}

int parse_uint64(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (isempty(s))
                return -EINVAL;

        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t) (*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*p - '0');
        }

        if (ret)
                *ret = v;
        return 0;
}

int parse_unsigned(const char *s, unsigned *ret) {
        uint64_t v;
        int r;

        r = parse_uint64(s, &v);
        if (r < 0)
                return r;
        if (v > UINT_MAX)
                return -ERANGE;
        if (ret)
                *ret = (unsigned) v;
        return 0;
}

int parse_boolean(const char *s) {
        static const char *const yes[] = {"1", "yes", "y", "true", "t", "on"};
        static const char *const no[] = {"0", "no", "n", "false", "f", "off"};

        if (!s)
                return -EINVAL;

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;

        return -EINVAL;
}

/* Appends one byte to a growing word buffer. */
static int word_append(char **w, size_t *n, size_t *allocated, char ch) {
        if (*n + 2 > *allocated) {
                size_t a = MAX(*allocated * 2, (size_t) 16);
                char *t = realloc(*w, a);
                if (!t)
                        return -ENOMEM;
                *w = t;
                *allocated = a;
        }
        (*w)[(*n)++] = ch;
        (*w)[*n] = '\0';
        return 0;
}

int split_words(const char *s, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        const char *p = s ?: "";

        /* An empty input gives an empty (non-NULL) list. */
        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;

        for (;;) {
                _cleanup_free_ char *w = NULL;
                size_t n = 0, allocated = 0;
                int r;

                p += strspn(p, WHITESPACE);
                if (*p == '\0')
                        break;

                while (*p != '\0' && !strchr(WHITESPACE, *p)) {
                        if (*p == '\'') {
                                /* Single quotes: everything literal up to the next quote. */
                                for (p++; *p != '\''; p++) {
                                        if (*p == '\0')
                                                return -EINVAL;
                                        r = word_append(&w, &n, &allocated, *p);
                                        if (r < 0)
                                                return r;
                                }
                                p++;
                        } else if (*p == '"') {
                                /* Double quotes: backslash escapes only \ " $ ` as in sh; other
                                 * backslashes stay. */
                                for (p++; *p != '"'; p++) {
                                        if (*p == '\0')
                                                return -EINVAL;
                                        if (*p == '\\' && p[1] != '\0' && strchr("\\\"$`", p[1]))
                                                p++;
                                        else if (*p == '\\' && p[1] == '\0')
                                                return -EINVAL;
                                        r = word_append(&w, &n, &allocated, *p);
                                        if (r < 0)
                                                return r;
                                }
                                p++;
                        } else if (*p == '\\') {
                                /* Outside quotes a backslash takes the next character literally. */
                                if (p[1] == '\0')
                                        return -EINVAL;
                                r = word_append(&w, &n, &allocated, p[1]);
                                if (r < 0)
                                        return r;
                                p += 2;
                        } else {
                                r = word_append(&w, &n, &allocated, *p);
                                if (r < 0)
                                        return r;
                                p++;
                        }
                }

                /* '' and "" give an empty argument. */
                if (!w) {
                        w = strdup("");
                        if (!w)
                                return -ENOMEM;
                }
                r = strv_push(&l, TAKE_PTR(w));
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(l);
        return 0;
}

char *format_duration(uint64_t usec) {
        static const struct {
                const char *suffix;
                uint64_t usec;
        } table[] = {
                {"w", 604800 * USEC_PER_SEC},
                {"d", 86400 * USEC_PER_SEC},
                {"h", 3600 * USEC_PER_SEC},
                {"min", 60 * USEC_PER_SEC},
                {"s", USEC_PER_SEC},
                {"ms", USEC_PER_MSEC},
                {"us", 1},
        };
        char buf[256];
        size_t n = 0;

        if (usec == USEC_INFINITY)
                return strdup("infinity");
        if (usec == 0)
                return strdup("0");

        /* Every part exact, so parse_duration() reads the text back to the same value. */
        for (size_t i = 0; i < ELEMENTSOF(table) && usec > 0; i++) {
                uint64_t a = usec / table[i].usec;
                if (a == 0)
                        continue;
                n += (size_t) snprintf(buf + n, sizeof(buf) - n, "%s%" PRIu64 "%s", n > 0 ? " " : "", a,
                                       table[i].suffix);
                usec -= a * table[i].usec;
        }

        return strdup(buf);
}

int base64_char_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

static int base64_encode_table(const void *data, size_t size, const char *table, bool pad, char **ret) {
        const uint8_t *p = data;
        char *out = NULL, *o;

        if (!ret || (!data && size > 0))
                return -EINVAL;
        if (size > (SIZE_MAX - 1) / 4 * 3 - 3)
                return -E2BIG;

        out = malloc((size + 2) / 3 * 4 + 1);
        if (!out)
                return -ENOMEM;
        o = out;

        for (size_t i = 0; i < size; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                size_t left = size - i;

                if (left > 1)
                        v |= (uint32_t) p[i + 1] << 8;
                if (left > 2)
                        v |= p[i + 2];

                *o++ = table[(v >> 18) & 63];
                *o++ = table[(v >> 12) & 63];
                if (left > 1)
                        *o++ = table[(v >> 6) & 63];
                else if (pad)
                        *o++ = '=';
                if (left > 2)
                        *o++ = table[v & 63];
                else if (pad)
                        *o++ = '=';
        }
        *o = 0;

        *ret = out;
        return 0;
}

int base64_encode(const void *data, size_t size, char **ret) {
        return base64_encode_table(data, size, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", true,
                                   ret);
}

int base64url_encode(const void *data, size_t size, char **ret) {
        return base64_encode_table(data, size, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                                   false, ret);
}

bool url_host_is_loopback(const char *url) {
        const char *host, *end, *at;
        char buf[INET6_ADDRSTRLEN + 2];
        struct in_addr a4;
        struct in6_addr a6;
        size_t n;

        host = strstr(url, "://");
        if (!host)
                return false;
        host += 3;
        end = host + strcspn(host, "/?#");
        /* user:password@ comes before the host */
        at = memrchr(host, '@', end - host);
        if (at)
                host = at + 1;
        if (host[0] == '[') {
                n = strcspn(host, "]");
                if (host[n] != ']' || n - 1 >= sizeof(buf))
                        return false;
                memcpy(buf, host + 1, n - 1);
                buf[n - 1] = 0;
                return inet_pton(AF_INET6, buf, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
        }
        n = strcspn(host, ":/?#");
        if (n == strlen("localhost") && strncasecmp(host, "localhost", n) == 0)
                return true;
        if (n >= sizeof(buf))
                return false;
        memcpy(buf, host, n);
        buf[n] = 0;
        /* inet_pton takes only dotted decimal: "127.0.0.1.example.com" is a name, refused. */
        return inet_pton(AF_INET, buf, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

bool dns_label_is_valid(const char *s) {
        size_t n = strlen(s);

        return n > 0 && n <= 63 && s[0] != '-' && s[n - 1] != '-' &&
               strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

bool utf8_is_valid(const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        while (*p) {
                unsigned c = *p, n, cp;

                if (c < 0x80) {
                        p++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1, cp = c & 0x1f;
                else if (c >= 0xe0 && c <= 0xef)
                        n = 2, cp = c & 0x0f;
                else if (c >= 0xf0 && c <= 0xf4)
                        n = 3, cp = c & 0x07;
                else
                        return false; /* a continuation byte first, C0/C1 (overlong), F5-FF */
                for (unsigned i = 1; i <= n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false; /* also the terminating NUL */
                        cp = cp << 6 | (p[i] & 0x3f);
                }
                if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                p += n + 1;
        }
        return true;
}
