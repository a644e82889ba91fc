/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Unit tests of daemon/util/parse-util.c: durations (parse and format, round trip),
 * unsigned integers, booleans and shell-like word splitting, with good and garbage
 * input. */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "parse-util.h"
#include "tests.h"

#define SEC USEC_PER_SEC
#define MINUTE (60 * SEC)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)

static void check_duration(const char *s, uint64_t expected) {
        uint64_t v = 0;
        int r;

        r = parse_duration(s, &v);
        if (r != 0 || v != expected) {
                fprintf(stderr, "parse_duration(\"%s\") = %d, %" PRIu64 "; expected 0, %" PRIu64 "\n", s, r, v,
                        expected);
                abort();
        }
}

static void check_duration_fails(const char *s, int expected) {
        uint64_t v = 4711;
        int r;

        r = parse_duration(s, &v);
        if (r != expected || v != 4711) {
                fprintf(stderr, "parse_duration(\"%s\") = %d (value %" PRIu64 "); expected %d, untouched\n", s, r, v,
                        expected);
                abort();
        }
}

static void test_parse_duration(void) {
        check_duration("0", 0);
        check_duration("90", 90 * SEC);
        check_duration("90s", 90 * SEC);
        check_duration("90sec", 90 * SEC);
        check_duration("1 second", SEC);
        check_duration("2seconds", 2 * SEC);
        check_duration("5min", 5 * MINUTE);
        check_duration("5m", 5 * MINUTE);
        check_duration("5 minutes", 5 * MINUTE);
        check_duration("2h", 2 * HOUR);
        check_duration("2hr", 2 * HOUR);
        check_duration("2 hours", 2 * HOUR);
        check_duration("2d", 2 * DAY);
        check_duration("1w", 7 * DAY);
        check_duration("1 week", 7 * DAY);
        check_duration("500ms", 500 * USEC_PER_MSEC);
        check_duration("500msec", 500 * USEC_PER_MSEC);
        check_duration("7us", 7);
        check_duration("7usec", 7);
        check_duration("1h 30min", HOUR + 30 * MINUTE);
        check_duration("1h30min", HOUR + 30 * MINUTE);
        check_duration("  1h   30min  ", HOUR + 30 * MINUTE);
        check_duration("1d 2h 3min 4s 5ms 6us", DAY + 2 * HOUR + 3 * MINUTE + 4 * SEC + 5 * USEC_PER_MSEC + 6);
        check_duration("1h 30", HOUR + 30 * SEC); /* a bare number is seconds, also in a list */
        check_duration("5 min", 5 * MINUTE);
        check_duration("1.5h", HOUR + 30 * MINUTE);
        check_duration("0.5s", 500 * USEC_PER_MSEC);
        check_duration(".25s", 250 * USEC_PER_MSEC);
        check_duration("2.s", 2 * SEC);
        check_duration("007", 7 * SEC);
        check_duration("infinity", USEC_INFINITY);
        check_duration(" infinity ", USEC_INFINITY);
        check_duration("18446744073709s", UINT64_C(18446744073709) * SEC);

        check_duration_fails(NULL, -EINVAL);
        check_duration_fails("", -EINVAL);
        check_duration_fails("   ", -EINVAL);
        check_duration_fails("abc", -EINVAL);
        check_duration_fails("s", -EINVAL);
        check_duration_fails("5x", -EINVAL);
        check_duration_fails("5mins", -EINVAL);
        check_duration_fails("5 parsecs", -EINVAL);
        check_duration_fails("-5s", -EINVAL);
        check_duration_fails("+5s", -EINVAL);
        check_duration_fails("5s-", -EINVAL);
        check_duration_fails(".", -EINVAL);
        check_duration_fails("1..5s", -EINVAL);
        check_duration_fails("infinityx", -EINVAL);
        check_duration_fails("infinity 5s", -EINVAL);
        check_duration_fails("5s infinity", -EINVAL);
        check_duration_fails("0x10", -EINVAL);
        check_duration_fails("1e3", -EINVAL);
        check_duration_fails("5\xc3\xa9", -EINVAL);
        check_duration_fails("18446744073710s", -ERANGE);                 /* > UINT64_MAX usec */
        check_duration_fails("99999999999999999999", -ERANGE);            /* > UINT64_MAX before the unit */
        check_duration_fails("18446744073709551615us", -ERANGE);          /* == the infinity marker */
        check_duration_fails("10000000000000s 10000000000000s", -ERANGE); /* the sum overflows */
        check_duration_fails("40000000w", -ERANGE);
        check_duration("18446744073709551614us", UINT64_MAX - 1);

        /* NULL result pointer is allowed (validation only). */
        ASSERT(parse_duration("5s", NULL) == 0);
}

static void test_format_duration(void) {
        static const struct {
                uint64_t usec;
                const char *text;
        } table[] = {
                {0, "0"},
                {1, "1us"},
                {500 * USEC_PER_MSEC, "500ms"},
                {SEC, "1s"},
                {90 * SEC, "1min 30s"},
                {HOUR + 30 * MINUTE, "1h 30min"},
                {6 * HOUR, "6h"},
                {DAY, "1d"},
                {8 * DAY + 1, "1w 1d 1us"},
                {1500 * USEC_PER_MSEC, "1s 500ms"},
                {USEC_INFINITY, "infinity"},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_free_ char *s = format_duration(table[i].usec);
                ASSERT(s);
                if (!streq(s, table[i].text)) {
                        fprintf(stderr, "format_duration(%" PRIu64 ") = \"%s\", expected \"%s\"\n", table[i].usec, s,
                                table[i].text);
                        abort();
                }
        }

        /* Round trip across the range, including the largest finite value. */
        static const uint64_t values[] = {
                0,        1,        999,         1000,         1001,           SEC - 1,    SEC,
                61 * SEC, HOUR - 1, 3 * DAY + 7, 52 * 7 * DAY, UINT64_MAX - 1, UINT64_MAX,
        };
        for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                _cleanup_free_ char *s = format_duration(values[i]);
                uint64_t v = 0;

                ASSERT(s);
                ASSERT(parse_duration(s, &v) == 0);
                if (v != values[i]) {
                        fprintf(stderr, "round trip of %" PRIu64 " via \"%s\" gave %" PRIu64 "\n", values[i], s, v);
                        abort();
                }
        }
}

static void test_parse_unsigned(void) {
        unsigned u = 7;

        ASSERT(parse_unsigned("0", &u) == 0 && u == 0);
        ASSERT(parse_unsigned("42", &u) == 0 && u == 42);
        ASSERT(parse_unsigned("0042", &u) == 0 && u == 42);
        ASSERT(parse_unsigned("4294967295", &u) == 0 && u == UINT_MAX);
        ASSERT(parse_unsigned("1", NULL) == 0);

        u = 7;
        ASSERT(parse_unsigned("4294967296", &u) == -ERANGE);
        ASSERT(parse_unsigned("99999999999999999999999999", &u) == -ERANGE);
        ASSERT(parse_unsigned(NULL, &u) == -EINVAL);
        ASSERT(parse_unsigned("", &u) == -EINVAL);
        ASSERT(parse_unsigned("-1", &u) == -EINVAL);
        ASSERT(parse_unsigned("+1", &u) == -EINVAL);
        ASSERT(parse_unsigned(" 1", &u) == -EINVAL);
        ASSERT(parse_unsigned("1 ", &u) == -EINVAL);
        ASSERT(parse_unsigned("1.5", &u) == -EINVAL);
        ASSERT(parse_unsigned("0x10", &u) == -EINVAL);
        ASSERT(parse_unsigned("abc", &u) == -EINVAL);
        ASSERT(parse_unsigned("12abc", &u) == -EINVAL);
        ASSERT(u == 7); /* untouched on failure */
}

static void test_parse_uint64(void) {
        uint64_t v = 7;

        ASSERT(parse_uint64("0", &v) == 0 && v == 0);
        ASSERT(parse_uint64("4294967296", &v) == 0 && v == 4294967296ULL);
        ASSERT(parse_uint64("18446744073709551615", &v) == 0 && v == UINT64_MAX);
        v = 7;
        ASSERT(parse_uint64("18446744073709551616", &v) == -ERANGE);
        ASSERT(parse_uint64("184467440737095516150", &v) == -ERANGE);
        ASSERT(parse_uint64("", &v) == -EINVAL);
        ASSERT(parse_uint64("-1", &v) == -EINVAL);
        ASSERT(parse_uint64("1 ", &v) == -EINVAL);
        ASSERT(v == 7);
}

static void test_parse_boolean(void) {
        static const char *const yes[] = {"1", "yes", "YES", "y", "true", "True", "t", "on", "ON"};
        static const char *const no[] = {"0", "no", "No", "n", "false", "FALSE", "f", "off", "Off"};
        static const char *const bad[] = {"", " yes", "yes ", "2", "-1", "enable", "nope", "truee", "o"};

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                ASSERT(parse_boolean(yes[i]) == 1);
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                ASSERT(parse_boolean(no[i]) == 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ASSERT(parse_boolean(bad[i]) == -EINVAL);
        ASSERT(parse_boolean(NULL) == -EINVAL);
}

/* NULL-terminated list of expected words. */
static void check_words(const char *s, ...) {
        _cleanup_strv_free_ char **l = NULL;
        va_list ap;
        size_t i = 0;
        int r;

        r = split_words(s, &l);
        if (r != 0) {
                fprintf(stderr, "split_words(\"%s\") = %d\n", s, r);
                abort();
        }
        ASSERT(l);

        va_start(ap, s);
        for (;; i++) {
                const char *w = va_arg(ap, const char *);
                if (!w) {
                        if (l[i]) {
                                fprintf(stderr, "split_words(\"%s\"): unexpected extra word \"%s\"\n", s, l[i]);
                                abort();
                        }
                        break;
                }
                if (!l[i] || !streq(l[i], w)) {
                        fprintf(stderr, "split_words(\"%s\"): word %zu is \"%s\", expected \"%s\"\n", s, i, strna(l[i]),
                                w);
                        abort();
                }
        }
        va_end(ap);
}

static void test_split_words(void) {
        check_words("", NULL);
        check_words("   \t ", NULL);
        check_words("a", "a", NULL);
        check_words("a b  c", "a", "b", "c", NULL);
        check_words("  --debug   --log-format=json ", "--debug", "--log-format=json", NULL);
        check_words("a 'b c' \"d\"", "a", "b c", "d", NULL);
        check_words("'' \"\"", "", "", NULL);
        check_words("x'y z'w", "xy zw", NULL);
        check_words("'it\\'", "it\\", NULL);                             /* no escapes inside single quotes */
        check_words("\"a \\\"q\\\" \\\\ \\n\"", "a \"q\" \\ \\n", NULL); /* sh rules in double quotes */
        check_words("a\\ b c", "a b", "c", NULL);
        check_words("\\'x\\'", "'x'", NULL);
        check_words("--opt=\"with space\"", "--opt=with space", NULL);
        check_words("'$HOME' \"#\"", "$HOME", "#", NULL);

        static const char *const bad[] = {"'", "\"", "a 'b", "a \"b", "\"a\\\"", "a\\", "'a' \"b"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char **l = NULL;
                if (split_words(bad[i], &l) != -EINVAL) {
                        fprintf(stderr, "split_words(\"%s\") should fail with -EINVAL\n", bad[i]);
                        abort();
                }
                ASSERT(!l);
        }
}

static void test_url_host_is_loopback(void) {
        static const char *const yes[] = {
                "http://127.0.0.1/graphql", "http://127.0.0.1:8080", "http://127.1.2.3",      "http://localhost:9/x",
                "http://LOCALHOST",         "http://[::1]:6443/",    "http://u:p@127.0.0.1/", "http://[::1]",
        };
        static const char *const no[] = {
                "http://10.0.0.1/",
                "http://127.0.0.1.example.com/",
                "http://localhost.example.com",
                "http://127.0.0.1@evil/",
                "http://[::2]/",
                "http://127.0.0.256/",
                "http://[::1",
                "127.0.0.1",
                "http://",
                "http://x/127.0.0.1",
                "http://evil?@127.0.0.1",
        };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                ASSERT(url_host_is_loopback(yes[i]));
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (url_host_is_loopback(no[i])) {
                        fprintf(stderr, "%s taken for loopback\n", no[i]);
                        abort();
                }
}

static void test_utf8_is_valid(void) {
        static const char *const good[] = {
                "",
                "plain ascii",
                "caf\xc3\xa9!",
                "\xe2\x82\xac",
                "\xf0\x9f\x98\x80",
                "\xed\x9f\xbf",
                "\xef\xbf\xbf",
                "\xf4\x8f\xbf\xbf",
                "\x7f",
        };
        static const char *const bad[] = {
                "\xff",
                "\xfe\xff",
                "n\xff\x61me",
                "\x80",
                "\xc3",
                "\xc3(",
                "\xc0\xaf",
                "\xc1\xbf",
                "\xe0\x80\xaf",
                "\xed\xa0\x80",
                "\xe2\x82",
                "\xf0\x8f\xbf\xbf",
                "\xf4\x90\x80\x80",
                "\xf5\x80\x80\x80",
                "latin-1 \xe9t\xe9",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                ASSERT(utf8_is_valid(good[i]));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (utf8_is_valid(bad[i])) {
                        fprintf(stderr, "bad[%zu] taken for UTF-8\n", i);
                        abort();
                }
}

/* RFC 4648 §10's test vectors, in both alphabets, and bytes that differ between them. */
static void test_base64_encode(void) {
        static const char *const vectors[][3] = {
                {"", "", ""},
                {"f", "Zg==", "Zg"},
                {"fo", "Zm8=", "Zm8"},
                {"foo", "Zm9v", "Zm9v"},
                {"foob", "Zm9vYg==", "Zm9vYg"},
                {"fooba", "Zm9vYmE=", "Zm9vYmE"},
                {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
                {"\xfb\xff\xbf", "+/+/", "-_-_"},
        };
        char *s = NULL;

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                ASSERT_OK(base64_encode(vectors[i][0], strlen(vectors[i][0]), &s));
                ASSERT_STREQ(s, vectors[i][1]);
                free(s);
                ASSERT_OK(base64url_encode(vectors[i][0], strlen(vectors[i][0]), &s));
                ASSERT_STREQ(s, vectors[i][2]);
                free(s);
        }
        ASSERT_OK(base64_encode("{\"cloneId\":7,\"status\":\"FAILED\"}", 31, &s));
        ASSERT_STREQ(s, "eyJjbG9uZUlkIjo3LCJzdGF0dXMiOiJGQUlMRUQifQ==");
        free(s);
        ASSERT(base64_encode(NULL, 1, &s) == -EINVAL);
        ASSERT(base64_encode("x", 1, NULL) == -EINVAL);
}

int main(void) {
        test_parse_duration();
        test_base64_encode();
        test_format_duration();
        test_parse_unsigned();
        test_parse_uint64();
        test_parse_boolean();
        test_split_words();
        test_url_host_is_loopback();
        test_utf8_is_valid();

        printf("test-parse-util: all tests passed\n");
        return 0;
}
