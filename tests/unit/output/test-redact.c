/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests for secret masking (redact.h): plain, repeated, overlapping and nested
 * secrets, empty secrets, binary text. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redact.h"
#include "tests.h"

static void check_bin(const char *text, size_t len, char *const *secrets, const char *expect, size_t expect_len) {
        size_t out_len = 12345;
        char *out = redact(text, len, secrets, &out_len);

        ASSERT(out);
        if (out_len != expect_len || memcmp(out, expect, expect_len) != 0 || out[out_len] != 0) {
                fprintf(stderr, "redact(\"%.*s\") = \"%.*s\", expected \"%.*s\"\n", (int) len, text, (int) out_len, out,
                        (int) expect_len, expect);
                abort();
        }
        /* redact_needed agrees on whether anything changes */
        ASSERT(redact_needed(text, len, secrets) == (out_len != len || memcmp(out, text, len) != 0));
        free(out);
}

static void check(const char *text, char *const *secrets, const char *expect) {
        check_bin(text, strlen(text), secrets, expect, strlen(expect));
}

static void check_forms(char *const *secrets, const char *const *expect) {
        _cleanup_strv_free_ char **l = NULL;
        size_t n = 0;

        ASSERT_OK(redact_secret_forms(secrets, &l));
        for (; l[n]; n++)
                if (!expect[n] || strcmp(l[n], expect[n]) != 0) {
                        fprintf(stderr, "form %zu: \"%s\", expected \"%s\"\n", n, l[n], strna(expect[n]));
                        abort();
                }
        ASSERT(!expect[n]);
}

static void test_secret_forms(void) {
        char *pem[] = {(char *) "-----BEGIN KEY-----\r\nAAAAsecretline\nBB==\n-----END KEY-----\n", NULL};
        char *quoted[] = {(char *) "pa\"ss\\wd\t1", (char *) "x", (char *) "abc", (char *) "abcd",
                          (char *) "pa\"ss\\wd\t1", NULL};
        char *none[] = {NULL};
        const char *const pem_forms[] = {
                "-----BEGIN KEY-----\r\nAAAAsecretline\nBB==\n-----END KEY-----\n",
                "-----BEGIN KEY-----\\r\\nAAAAsecretline\\nBB==\\n-----END KEY-----\\n",
                "-----BEGIN KEY-----",
                "AAAAsecretline",
                "BB==",
                "-----END KEY-----",
                NULL,
        };
        const char *const quoted_forms[] = {"pa\"ss\\wd\t1", "pa\\\"ss\\\\wd\\t1", "abcd", NULL};
        const char *const no_forms[] = {NULL};
        char *ctl[] = {(char *) "ab\001cd", NULL};
        const char *const ctl_forms[] = {"ab\001cd", "ab\\u0001cd", NULL};

        check_forms(pem, pem_forms);
        check_forms(quoted, quoted_forms); /* "x" and "abc" are shorter than REDACT_SECRET_MIN */
        check_forms(none, no_forms);
        check_forms(NULL, no_forms);
        check_forms(ctl, ctl_forms);

        /* A line of the key is masked where output shows it, one line at a time. */
        _cleanup_strv_free_ char **l = NULL;
        ASSERT_OK(redact_secret_forms(pem, &l));
        check("key: AAAAsecretline", l, "key: ***");
        check("{\"k\":\"pa\\\"ss\\\\wd\\t1\"}", (char *const[]){(char *) "pa\\\"ss\\\\wd\\t1", NULL},
              "{\"k\":\"***\"}");
}

int main(void) {
        char *none[] = {NULL};
        char *one[] = {(char *) "hunter2", NULL};
        char *pw[] = {(char *) "pass", (char *) "password", NULL};
        char *pw_rev[] = {(char *) "password", (char *) "pass", NULL};
        char *overlap[] = {(char *) "abc", (char *) "bcdef", NULL};
        char *ab[] = {(char *) "ab", NULL};
        char *empty[] = {(char *) "", (char *) "x", (char *) "", NULL};
        char *only_empty[] = {(char *) "", NULL};
        char *single[] = {(char *) "a", NULL};
        char *aa[] = {(char *) "aa", NULL};

        check("nothing here", none, "nothing here");
        check("nothing here", one, "nothing here");
        check("", one, "");
        check("hunter2", one, "***");
        check("my password is hunter2, really hunter2!", one, "my password is ***, really ***!");
        check("hunter", one, "hunter");
        check("hunter2hunter2", one, "******");

        /* longest match first, regardless of the order of the secrets */
        check("the password: x", pw, "the ***: x");
        check("the password: x", pw_rev, "the ***: x");
        check("pass pass password", pw, "*** *** ***");

        /* overlapping secrets: no part of either is left visible */
        check("xabcdefx", overlap, "x***x");
        check("xabcx", overlap, "x***x");
        check("xbcdefx", overlap, "x***x");
        check("xabcabcdefx", overlap, "x******x");

        /* adjacent occurrences each masked; overlapping ones of one secret merged */
        check("abab", ab, "******");
        check("aaa", aa, "***");
        check("aaaa", aa, "***"); /* occurrences at 0, 1, 2 overlap in a chain */
        check("aa-aa", aa, "***-***");
        check("a", single, "***");
        check("banana", single, "b***n***n***");

        /* empty secrets are ignored (would otherwise match everywhere) */
        check("x marks", empty, "*** marks");
        check("text", only_empty, "text");
        ASSERT(!redact_needed("text", 4, only_empty));

        /* NULL secrets */
        check("text", NULL, "text");
        ASSERT(!redact_needed("text", 4, NULL));

        /* binary text: NUL bytes and invalid UTF-8 around and between secrets */
        check_bin("a\0hunter2\0\xff", 11, one, "a\0***\0\xff", 7);
        check_bin("\0\0\0", 3, one, "\0\0\0", 3);

        /* a secret at the very end, cut short */
        check("xx hunter", one, "xx hunter");
        check("xx hunter2", one, "xx ***");

        /* a long line with many secrets and a long secret */
        {
                size_t n = 1024 * 1024;
                char *big = malloc(n + 1), *secret = malloc(4097);
                ASSERT(big && secret);
                memset(secret, 's', 4096);
                secret[4096] = 0;
                for (size_t i = 0; i < n; i++)
                        big[i] = "abcdefgh"[i % 8];
                memcpy(big + 1000, secret, 4096);
                memcpy(big + n - 4096, secret, 4096);
                char *secrets[] = {secret, (char *) "cde", NULL};
                size_t out_len;
                char *out = redact(big, n, secrets, &out_len);
                ASSERT(out);
                ASSERT(!memmem(out, out_len, "cde", 3));
                ASSERT(!memmem(out, out_len, "ssss", 4));
                ASSERT(memcmp(out + out_len - 3, "***", 3) == 0);
                free(out);
                free(big);
                free(secret);
        }

        printf("test-redact: all passed\n");
        test_secret_forms();
        return 0;
}
