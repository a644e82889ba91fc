/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests for secret masking (redact.h): plain, repeated, overlapping and nested
 * secrets, empty secrets, binary text; the part of a line not complete yet that may be
 * shown (redact_stable_prefix()), by cases and by feeding random lines in random pieces
 * as logtail.c does. */

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

static void check_stable(const char *text, char *const *secrets, size_t expect) {
        size_t n = redact_stable_prefix(text, strlen(text), secrets);
        if (n != expect) {
                fprintf(stderr, "redact_stable_prefix(\"%s\") = %zu, expected %zu\n", text, n, expect);
                abort();
        }
}

/* Feeds text in pieces of random size as logtail.c's views do: after each piece the
 * shown part grows by the masked stable prefix of what is not shown yet. What was shown
 * must at every moment be a prefix of the whole line masked, and it ends where the line
 * masked as a whole does. */
static void check_pieces(const char *text, size_t len, char *const *secrets, unsigned *seed) {
        size_t whole_len, shown_len = 0, raw_shown = 0, max_len = 0;
        char *whole = redact(text, len, secrets, &whole_len);
        char *shown = malloc(len * 3 + 1);

        ASSERT(whole && shown);
        for (char *const *s = secrets; *s; s++)
                max_len = MAX(max_len, strlen(*s));
        for (size_t have = 0; have < len;) {
                size_t n, piece_len;
                char *piece;

                have += 1 + (size_t) rand_r(seed) % MIN(len - have, (size_t) 7);
                n = redact_stable_prefix(text + raw_shown, have - raw_shown, secrets);
                ASSERT(raw_shown + n <= have);
                piece = redact(text + raw_shown, n, secrets, &piece_len);
                ASSERT(piece);
                memcpy(shown + shown_len, piece, piece_len);
                shown_len += piece_len;
                raw_shown += n;
                free(piece);
                if (shown_len > whole_len || memcmp(shown, whole, shown_len) != 0) {
                        fprintf(stderr, "shown \"%.*s\" of \"%.*s\" (masked \"%.*s\") is no prefix of it\n",
                                (int) shown_len, shown, (int) have, text, (int) whole_len, whole);
                        abort();
                }
        }
        /* The rest, masked on its own, completes it. */
        size_t rest_len;
        char *rest = redact(text + raw_shown, len - raw_shown, secrets, &rest_len);
        ASSERT(rest);
        ASSERT(shown_len + rest_len == whole_len && memcmp(whole + shown_len, rest, rest_len) == 0);
        free(rest);
        free(shown);
        free(whole);
}

static void test_stable_prefix(void) {
        char *none[] = {NULL};
        char *one[] = {(char *) "hunter2x", NULL};
        char *overlap[] = {(char *) "abcd", (char *) "cdxyz", NULL};
        char *nested[] = {(char *) "pass", (char *) "password", NULL};
        char *alphabet[] = {(char *) "abab", (char *) "bba", (char *) "aab", (char *) "b ab", NULL};
        unsigned seed = 1;

        check_stable("abc hunt", NULL, 8);
        check_stable("abc hunt", none, 8);
        check_stable("", one, 0);
        check_stable("abc hunt", one, 4);          /* "hunt" could become the secret */
        check_stable("abc hunter2", one, 4);       /* one byte short of it */
        check_stable("abc hunter2x and", one, 16); /* complete: masked, all shown */
        check_stable("abc hunter2x h", one, 13);
        check_stable("hxhunter", one, 2);
        check_stable("abc hunted", one, 10); /* cannot become it any more */
        check_stable("abc h", one, 4);
        /* "abcd" is masked, but "cd" may start "cdxyz", which would join its run */
        check_stable("xabcd", overlap, 1);
        check_stable("xabcdq", overlap, 6);
        check_stable("xabcdcd", overlap, 5); /* "abcd" ended, "cd..." would be a run of its own */
        /* "pass" is complete, "password" may still be coming: hold back from "pass" */
        check_stable("my pass", nested, 3);
        check_stable("my passw", nested, 3);
        check_stable("my password", nested, 11);
        check_stable("my passport", nested, 11);

        /* Random lines of a small alphabet, so secrets and their prefixes are everywhere. */
        for (unsigned i = 0; i < 20000; i++) {
                char text[48];
                size_t len = 1 + (size_t) rand_r(&seed) % (sizeof(text) - 1);
                for (size_t k = 0; k < len; k++)
                        text[k] = "ab "[rand_r(&seed) % 3];
                check_pieces(text, len, alphabet, &seed);
                check_pieces(text, len, overlap, &seed);
                check_pieces(text, len, none, &seed);
        }

        /* Only the tail that could be a secret is held back, at most its length - 1. */
        {
                char line[4096];
                memset(line, '=', sizeof(line));
                memcpy(line + sizeof(line) - 7, "hunter2", 7);
                ASSERT(redact_stable_prefix(line, sizeof(line), one) == sizeof(line) - 7);
                ASSERT(redact_stable_prefix(line, sizeof(line) - 3, one) == sizeof(line) - 7);
        }
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

        test_secret_forms();
        test_stable_prefix();
        printf("test-redact: all passed\n");
        return 0;
}
