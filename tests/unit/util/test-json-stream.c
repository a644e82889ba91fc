/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* json_stream_*: a stream of JSON values fed in chunks, as a Kubernetes watch body
 * arrives. Every fixture is split at every byte offset (and small ones at every pair of
 * offsets) and must give the same values as json_parse() of each value alone; garbage,
 * size and depth limits, sticky errors and callback errors. */

#include <errno.h>
#include <string.h>

#include "json.h"
#include "tests.h"

typedef struct Collected {
        char **values; /* formatted */
        size_t n;
        int fail_at; /* callback returns -EUCLEAN at this value (1-based), 0 = never */
} Collected;

static void collected_clear(Collected *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->values[i]);
        free(c->values);
        *c = (Collected){.fail_at = c->fail_at};
}

static int collect(JsonValue *v, void *userdata) {
        Collected *c = userdata;
        char *s = NULL;

        ASSERT(v);
        ASSERT_OK(json_format(v, false, &s, NULL));
        json_free(v);
        c->values = reallocarray(c->values, c->n + 1, sizeof(char *));
        ASSERT(c->values);
        c->values[c->n++] = s;
        if (c->fail_at > 0 && c->n == (size_t) c->fail_at)
                return -EUCLEAN;
        return 0;
}

/* Feeds text cut at the given offsets (ascending, ≤ size), then finishes. */
static int feed_split(const char *text, size_t size, const size_t *cuts, size_t n_cuts, size_t max, Collected *c) {
        _cleanup_(json_stream_freep) JsonStream *s = json_stream_new(max, 0);
        size_t start = 0;
        int r;

        ASSERT(s);
        for (size_t i = 0; i <= n_cuts; i++) {
                size_t end = i < n_cuts ? cuts[i] : size;
                r = json_stream_feed(s, text + start, end - start, collect, c);
                if (r < 0) {
                        /* Sticky. */
                        ASSERT_EQ(json_stream_feed(s, "1 ", 2, collect, c), r);
                        ASSERT_EQ(json_stream_finish(s, collect, c), r);
                        return r;
                }
                start = end;
        }
        return json_stream_finish(s, collect, c);
}

static void check_values(const Collected *c, const char *const *expected) {
        size_t n = 0;
        while (expected[n])
                n++;
        if (c->n != n)
                fprintf(stderr, "got %zu values, expected %zu\n", c->n, n);
        ASSERT_EQ(c->n, n);
        for (size_t i = 0; i < n; i++) {
                _cleanup_json_ JsonValue *v = NULL;
                _cleanup_free_ char *f = NULL;
                ASSERT_OK(json_parse(expected[i], strlen(expected[i]), 0, &v, NULL));
                ASSERT_OK(json_format(v, false, &f, NULL));
                ASSERT_STREQ(c->values[i], f);
        }
}

/* Every single split and, for short texts, every double split give the same values. */
static void check_all_splits(const char *text, const char *const *expected) {
        size_t size = strlen(text);
        Collected c = {};

        ASSERT_OK(feed_split(text, size, NULL, 0, 0, &c));
        check_values(&c, expected);
        collected_clear(&c);

        for (size_t i = 0; i <= size; i++) {
                ASSERT_OK(feed_split(text, size, &i, 1, 0, &c));
                check_values(&c, expected);
                collected_clear(&c);
        }
        if (size <= 200)
                for (size_t i = 0; i <= size; i++)
                        for (size_t j = i; j <= size; j++) {
                                size_t cuts[2] = {i, j};
                                ASSERT_OK(feed_split(text, size, cuts, 2, 0, &c));
                                check_values(&c, expected);
                                collected_clear(&c);
                        }

        /* Byte by byte. */
        _cleanup_free_ size_t *cuts = calloc(size + 1, sizeof(size_t));
        ASSERT(cuts);
        for (size_t i = 0; i < size; i++)
                cuts[i] = i;
        ASSERT_OK(feed_split(text, size, cuts, size, 0, &c));
        check_values(&c, expected);
        collected_clear(&c);
}

#define WATCH_ADDED \
        "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"task-1\"," \
        "\"namespace\":\"proj-main\",\"resourceVersion\":\"1001\",\"labels\":{\"lagoon.sh/jobType\":\"task\"}}," \
        "\"status\":{\"phase\":\"Pending\"}}}"
#define WATCH_BOOKMARK \
        "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":" \
        "\"1050\"," \
        "\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}}}}"
#define WATCH_ERROR \
        "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":" \
        "\"Failure\"," \
        "\"message\":\"too old resource version: 1 (1050)\",\"reason\":\"Expired\",\"code\":410}}"

TEST(watch_stream) {
        check_all_splits(WATCH_ADDED "\n" WATCH_BOOKMARK "\n" WATCH_ERROR "\n",
                         (const char *const[]){WATCH_ADDED, WATCH_BOOKMARK, WATCH_ERROR, NULL});
        /* No separator at all between objects, and CRLF. */
        check_all_splits(WATCH_ADDED WATCH_BOOKMARK "\r\n", (const char *const[]){WATCH_ADDED, WATCH_BOOKMARK, NULL});
}

TEST(scalars_and_unicode) {
        check_all_splits(" 1 2.5e3 -0 true false null \"a\\u00e9\\n\" [] {} [1,[2,{\"x\":\"\xc3\xa9\"}]] 42",
                         (const char *const[]){"1", "2.5e3", "-0", "true", "false", "null", "\"a\\u00e9\\n\"", "[]",
                                               "{}", "[1,[2,{\"x\":\"\xc3\xa9\"}]]", "42", NULL});
        check_all_splits("", (const char *const[]){NULL});
        check_all_splits(" \n\t\r\n", (const char *const[]){NULL});
}

TEST(garbage) {
        static const char *const bad[] = {
                "{\"a\":1}}", "{\"a\" 1}", "[1,]",        "tru",       "{\"a\":1", "\"unterminated",      "nul",
                "[1 2]",      "{1:2}",     "\"\xff\"",    "/* c */ 1", "1 @",      "{\"type\":\"ADDED\"", "\x00",
                "]",          "-",         "{\"a\":tru}", "[\"\\x\"]",
        };

        for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
                const char *t = bad[k];
                size_t size = streq(t, "\x00") ? 1 : strlen(t);
                for (size_t i = 0; i <= size; i++) {
                        Collected c = {};
                        int r = feed_split(t, size, &i, 1, 0, &c);
                        if (r != -EBADMSG)
                                fprintf(stderr, "input %zu \"%s\" split at %zu: %d\n", k, t, i, r);
                        ASSERT_EQ(r, -EBADMSG);
                        collected_clear(&c);
                }
        }

        /* Values before the garbage are delivered. */
        Collected c = {};
        ASSERT_EQ(feed_split("{\"a\":1}\n{\"b\":2}\n{oops", 23, NULL, 0, 0, &c), -EBADMSG);
        check_values(&c, (const char *const[]){"{\"a\":1}", "{\"b\":2}", NULL});
        collected_clear(&c);
}

TEST(size_limit) {
        _cleanup_free_ char *big = NULL;
        Collected c = {};
        size_t n = 1000;

        /* Exactly at the limit passes, one byte more fails, however it is split. */
        big = malloc(n + 1);
        ASSERT(big);
        big[0] = '"';
        memset(big + 1, 'x', n - 2);
        big[n - 1] = '"';
        big[n] = 0;
        for (size_t i = 0; i <= n; i += 37) {
                ASSERT_OK(feed_split(big, n, &i, 1, n, &c));
                ASSERT_EQ(c.n, 1u);
                collected_clear(&c);
                ASSERT_EQ(feed_split(big, n, &i, 1, n - 1, &c), -E2BIG);
                ASSERT_EQ(c.n, 0u);
                collected_clear(&c);
        }

        /* A small value after a big one is measured on its own. */
        _cleanup_free_ char *two = strf("%s {\"a\":1}", big);
        ASSERT_OK(feed_split(two, strlen(two), NULL, 0, n, &c));
        ASSERT_EQ(c.n, 2u);
        collected_clear(&c);

        /* An endless value without a single complete token is stopped as well. */
        _cleanup_(json_stream_freep) JsonStream *s = json_stream_new(100, 0);
        ASSERT(s);
        int r = 0;
        for (unsigned i = 0; i < 100 && r == 0; i++)
                r = json_stream_feed(s, "[1,", 3, collect, &c);
        ASSERT_EQ(r, -E2BIG);
        s = json_stream_free(s);
        s = json_stream_new(100, 0);
        ASSERT(s);
        ASSERT_OK(json_stream_feed(s, "\"", 1, collect, &c));
        r = 0;
        for (unsigned i = 0; i < 100 && r == 0; i++)
                r = json_stream_feed(s, "aaaa", 4, collect, &c);
        ASSERT_EQ(r, -E2BIG);
        ASSERT_EQ(c.n, 0u);
}

TEST(depth_limit) {
        _cleanup_(json_stream_freep) JsonStream *s = json_stream_new(0, 4);
        Collected c = {};

        ASSERT(s);
        ASSERT_OK(json_stream_feed(s, "[[[[1]]]] ", 10, collect, &c));
        ASSERT_EQ(c.n, 1u);
        ASSERT_EQ(json_stream_feed(s, "[[[[[1]]]]]", 11, collect, &c), -E2BIG);
        ASSERT_EQ(json_stream_feed(s, "1 ", 2, collect, &c), -E2BIG);
        collected_clear(&c);
}

TEST(callback_error) {
        _cleanup_(json_stream_freep) JsonStream *s = json_stream_new(0, 0);
        Collected c = {.fail_at = 2};

        ASSERT(s);
        ASSERT_EQ(json_stream_feed(s, "1 2 3 4 ", 8, collect, &c), -EUCLEAN);
        ASSERT_EQ(c.n, 2u);
        ASSERT_EQ(json_stream_feed(s, "5 ", 2, collect, &c), -EUCLEAN);
        ASSERT_EQ(c.n, 2u);
        collected_clear(&c);

        /* A NULL callback drops the values. */
        _cleanup_(json_stream_freep) JsonStream *t = json_stream_new(0, 0);
        ASSERT(t);
        ASSERT_OK(json_stream_feed(t, "{\"a\":[1,2]} [3]", 15, NULL, NULL));
        ASSERT_OK(json_stream_finish(t, NULL, NULL));
        ASSERT(json_stream_feed(t, "1", 1, NULL, NULL) < 0);
        ASSERT_EQ(json_stream_feed(NULL, "1", 1, NULL, NULL), -EINVAL);
        ASSERT(!json_stream_free(NULL));
}

TEST(trailing_number_needs_finish) {
        _cleanup_(json_stream_freep) JsonStream *s = json_stream_new(0, 0);
        Collected c = {};

        ASSERT(s);
        ASSERT_OK(json_stream_feed(s, "{} 12", 5, collect, &c));
        ASSERT_EQ(c.n, 1u);
        ASSERT_OK(json_stream_feed(s, "34", 2, collect, &c));
        ASSERT_EQ(c.n, 1u);
        ASSERT_OK(json_stream_finish(s, collect, &c));
        check_values(&c, (const char *const[]){"{}", "1234", NULL});
        collected_clear(&c);

        /* Ending inside an object is an error. */
        ASSERT_EQ(feed_split("{\"a\":", 5, NULL, 0, 0, &c), -EBADMSG);
        collected_clear(&c);
}

int main(void) {
        RUN(watch_stream);
        RUN(scalars_and_unicode);
        RUN(garbage);
        RUN(size_limit);
        RUN(depth_limit);
        RUN(callback_error);
        RUN(trailing_number_needs_finish);
        return 0;
}
