/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests for the durable outbox (outbox.h): the entry file format (parse of valid,
 * garbage and mistyped entries; binary bodies round-trip through "bodyBase64"); append,
 * get and order per sink; coalescing (not across an in-flight entry, another kind or
 * another destination); removal, also out of order; seqs that keep growing across
 * reopen, also after the outbox was drained; corrupt files moved to corrupt/ and
 * counted; temporary files removed; write failures (RLIMIT_FSIZE always, a full tmpfs
 * when a mount namespace can be had) leaving memory and disk alike; a random operation
 * sequence checked against a model; kill -9 of an appending child at random instants;
 * and the time to load 20 000 entries. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs-util.h"
#include "outbox.h"
#include "tests.h"

static char base[] = "/tmp/test-outbox-XXXXXX";
static unsigned dir_counter;

static char *new_dir(void) {
        char *d = NULL;
        ASSERT(asprintf(&d, "%s/%u", base, dir_counter++) >= 0);
        return d;
}

/* CPU time of this process, user and system: the machine may be busy with others. */
static uint64_t cpu_usec(void) {
        struct rusage ru;
        ASSERT(getrusage(RUSAGE_SELF, &ru) == 0);
        return (uint64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * USEC_PER_SEC +
               (uint64_t) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void write_raw(const char *dir, const char *name, const void *data, size_t size) {
        _cleanup_free_ char *p = path_join(dir, name);
        _cleanup_close_ int fd = -EBADF;
        ASSERT(p);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ASSERT(fd >= 0);
        ASSERT(write(fd, data, size) == (ssize_t) size);
}

static void write_str(const char *dir, const char *name, const char *s) {
        write_raw(dir, name, s, strlen(s));
}

static bool exists(const char *dir, const char *name) {
        _cleanup_free_ char *p = path_join(dir, name);
        ASSERT(p);
        return access(p, F_OK) == 0;
}

static char *entry_name(uint64_t seq) {
        char *n = NULL;
        ASSERT(asprintf(&n, "%020" PRIu64 ".json", seq) >= 0);
        return n;
}

static bool entry_file_exists(const char *dir, uint64_t seq) {
        _cleanup_free_ char *n = entry_name(seq);
        return exists(dir, n);
}

static char *read_entry_file(const char *dir, uint64_t seq) {
        _cleanup_free_ char *n = entry_name(seq), *p = path_join(dir, n);
        char *text = NULL;
        ASSERT(p);
        ASSERT_OK(read_full_file(p, 128 * 1024 * 1024, &text, NULL));
        return text;
}

/* Regular files directly in dir, "." entries and directories left out. */
static unsigned count_files(const char *dir, const char *containing) {
        DIR *d = opendir(dir);
        struct dirent *de;
        unsigned n = 0;
        ASSERT(d);
        while ((de = readdir(d)))
                if (de->d_type == DT_REG && (!containing || strstr(de->d_name, containing)))
                        n++;
        closedir(d);
        return n;
}

static Outbox *open_ok(const char *dir, unsigned expect_corrupt) {
        Outbox *o = NULL;
        unsigned n = 999;
        ASSERT_OK(outbox_open(dir, &o, &n));
        ASSERT(o);
        if (n != expect_corrupt) {
                fprintf(stderr, "%s: %u corrupt, expected %u\n", dir, n, expect_corrupt);
                abort();
        }
        return o;
}

static uint64_t
append_ok(Outbox *o, OutboxSink sink, const char *task, const char *kind, const char *body, bool coalesce) {
        uint64_t seq = 0;
        ASSERT_OK(outbox_append(o, sink, task, kind, sink == OUTBOX_BUS ? "lagoon-tasks" : NULL,
                                sink == OUTBOX_BUS ? "controller" : NULL, body, strlen(body), coalesce, &seq));
        ASSERT(seq > 0);
        return seq;
}

static void check_entry(const OutboxEntry *e, uint64_t seq, const char *task, const char *kind, const char *body) {
        ASSERT(e);
        ASSERT_EQ(e->seq, seq);
        ASSERT_STREQ(e->task_id, task);
        ASSERT_STREQ(e->kind, kind);
        ASSERT_EQ(e->body_size, strlen(body));
        ASSERT_STREQ(e->body, body);
}

/* ---- the entry format ---- */

static int parse_str(const char *s, OutboxEntry **ret) {
        return outbox_entry_parse(s, strlen(s), ret);
}

TEST(entry_parse) {
        _cleanup_(outbox_entry_freep) OutboxEntry *e = NULL;

        ASSERT_OK(
                parse_str("{\"seq\":7,\"sink\":\"bus\",\"task\":\"t1\",\"kind\":\"logs\",\"exchange\":\"lagoon-logs\","
                          "\"routingKey\":\"\",\"body\":\"{\\\"a\\\":\\\"\\u00e9\\\\u0000\\\"}\",\"future\":[1,{}]}",
                          &e));
        ASSERT_EQ(e->seq, 7u);
        ASSERT_EQ(e->sink, OUTBOX_BUS);
        ASSERT_STREQ(e->task_id, "t1");
        ASSERT_STREQ(e->kind, "logs");
        ASSERT_STREQ(e->exchange, "lagoon-logs");
        ASSERT_STREQ(e->routing_key, "");
        /* An escaped backslash before u0000 is text, not a NUL. */
        ASSERT_STREQ(e->body, "{\"a\":\"\xc3\xa9\\u0000\"}");
        ASSERT_EQ(e->body_size, strlen(e->body));
        ASSERT(!e->in_flight);
        e = outbox_entry_free(e);

        ASSERT_OK(parse_str("{\"seq\":18446744073,\"sink\":\"api\",\"task\":\"42\",\"kind\":\"update\",\"body\":\"\"}",
                            &e));
        ASSERT_EQ(e->sink, OUTBOX_API);
        ASSERT(!e->exchange && !e->routing_key);
        ASSERT_EQ(e->body_size, 0u);
        ASSERT_STREQ(e->body, "");
        e = outbox_entry_free(e);

        ASSERT_OK(parse_str("{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":\"AGH/\"}", &e));
        ASSERT_EQ(e->body_size, 3u);
        ASSERT(memcmp(e->body, "\0a\xff", 3) == 0 && e->body[3] == 0);
        e = outbox_entry_free(e);

        static const char *const bad[] = {
                "",
                "garbage",
                "null",
                "[]",
                "\"string\"",
                "{}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"",   /* truncated */
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}x", /* trailing */
                "{\"seq\":\"1\",\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":0,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":-1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1.5,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1e3,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":18446744073709551615,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":99999999999999999999,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":true,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"smtp\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":0,\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":5,\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":null,\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":[],\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":{}}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":null}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\",\"bodyBase64\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":5}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":\"abc\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":\"ab=c\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":\"YR==\"}", /* bits left */
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":\"YW=j\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":\"YWJj\\n\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"bodyBase64\":\"YQ==YQ==\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"a\\u0000b\"}", /* NUL */
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\\u0000x\",\"kind\":\"k\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\xff\"}", /* not UTF-8 */
                "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"exchange\":\"x\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"bus\",\"task\":\"t\",\"kind\":\"k\",\"routingKey\":\"\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"bus\",\"task\":\"t\",\"kind\":\"k\",\"exchange\":\"x\",\"body\":\"\"}",
                "{\"seq\":1,\"sink\":\"bus\",\"task\":\"t\",\"kind\":\"k\",\"exchange\":1,\"body\":\"\"}",
                /* nested too deep */
                "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = parse_str(bad[i], &e);
                if (r != -EBADMSG) {
                        fprintf(stderr, "bad[%zu] gave %d: %s\n", i, r, bad[i]);
                        abort();
                }
                ASSERT(!e);
        }
        /* Embedded NUL bytes in the file itself. */
        ASSERT_EQ(outbox_entry_parse("{\"seq\":1}\0", 10, &e), -EBADMSG);
}

static void random_bytes(char *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                p[i] = (char) (random() & 0xff);
}

TEST(entry_format_roundtrip) {
        static const char *const text[] = {"", "plain", "{\"json\":\"\xc3\xa9 \xf0\x9f\x98\x80\"}", "\x7f\t\n\"\\/"};
        static const struct {
                const char *data;
                size_t size;
        } binary[] = {
                {"a\0b", 3},         {"\xff", 1},
                {"\xc0\xaf", 2},                                              /* overlong */
                {"\xed\xa0\x80", 3}, /* surrogate */ {"\xf4\x90\x80\x80", 4}, /* > U+10FFFF */
                {"\xe2\x82", 2},     /* truncated */ {"\0", 1},
        };
        char buf[600];

        for (size_t i = 0; i < ELEMENTSOF(text) + ELEMENTSOF(binary) + 3000; i++) {
                _cleanup_(outbox_entry_freep) OutboxEntry *back = NULL;
                _cleanup_free_ char *f = NULL;
                OutboxEntry e = {
                        .seq = 1 + (uint64_t) random(),
                        .sink = (OutboxSink) (i % 2),
                        .task_id = (char *) "task-1",
                        .kind = (char *) "logs",
                        .exchange = (char *) "lagoon-logs",
                        .routing_key = (char *) (i % 3 ? "k" : ""),
                };
                int expect_text; /* -1: random bytes, may or may not be text */
                size_t size;

                if (i < ELEMENTSOF(text)) {
                        e.body = (char *) text[i];
                        e.body_size = strlen(text[i]);
                        expect_text = 1;
                } else if (i < ELEMENTSOF(text) + ELEMENTSOF(binary)) {
                        e.body = (char *) binary[i - ELEMENTSOF(text)].data;
                        e.body_size = binary[i - ELEMENTSOF(text)].size;
                        expect_text = 0;
                } else {
                        /* Random bytes, half of the time restricted to ASCII. */
                        e.body_size = (size_t) random() % sizeof(buf);
                        random_bytes(buf, e.body_size);
                        if (i % 2)
                                for (size_t k = 0; k < e.body_size; k++)
                                        buf[k] = (char) (1 + (buf[k] & 0x7f) % 127);
                        e.body = buf;
                        expect_text = i % 2 ? 1 : -1;
                }
                ASSERT_OK(outbox_entry_format(&e, &f, &size));
                ASSERT_EQ(strlen(f), size);
                ASSERT(f[size - 1] == '\n');
                if (expect_text == 1)
                        ASSERT(strstr(f, "\"body\":") && !strstr(f, "bodyBase64"));
                else if (expect_text == 0)
                        ASSERT(strstr(f, "\"bodyBase64\":"));
                ASSERT_OK(outbox_entry_parse(f, size, &back));
                ASSERT_EQ(back->seq, e.seq);
                ASSERT_EQ(back->sink, e.sink);
                ASSERT_STREQ(back->task_id, e.task_id);
                ASSERT_STREQ(back->kind, e.kind);
                if (e.sink == OUTBOX_BUS) {
                        ASSERT_STREQ(back->exchange, e.exchange);
                        ASSERT_STREQ(back->routing_key, e.routing_key);
                } else
                        ASSERT(!back->exchange && !back->routing_key);
                ASSERT_EQ(back->body_size, e.body_size);
                ASSERT(memcmp(back->body, e.body, e.body_size) == 0);
                ASSERT(back->body[back->body_size] == 0);
        }

        /* Invalid entries are refused rather than written. */
        _cleanup_free_ char *f = NULL;
        OutboxEntry e = {.seq = 1, .sink = OUTBOX_BUS, .task_id = (char *) "t", .kind = (char *) "k"};
        ASSERT_EQ(outbox_entry_format(&e, &f, NULL), -EINVAL); /* bus without exchange */
        e.sink = (OutboxSink) 7;
        ASSERT_EQ(outbox_entry_format(&e, &f, NULL), -EINVAL);
        ASSERT(!f);
}

/* ---- the outbox ---- */

TEST(append_get_order) {
        _cleanup_free_ char *dir = new_dir();
        _cleanup_(outbox_freep) Outbox *o = NULL;
        uint64_t s1, s2, s3, s4, s5, s6;
        OutboxEntry *first;

        ASSERT_STREQ(outbox_sink_to_string(OUTBOX_BUS), "bus");
        ASSERT_STREQ(outbox_sink_to_string(OUTBOX_API), "api");
        ASSERT(!outbox_sink_to_string(_OUTBOX_SINK_MAX));

        o = open_ok(dir, 0);
        ASSERT(exists(dir, "corrupt"));
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 0u);
        ASSERT(!outbox_get(o, OUTBOX_BUS, 0));
        ASSERT(!outbox_has_task(o, "t1"));

        s1 = append_ok(o, OUTBOX_BUS, "t1", "status", "{\"s\":1}", false);
        s2 = append_ok(o, OUTBOX_API, "t1", "update", "{\"u\":1}", false);
        s3 = append_ok(o, OUTBOX_BUS, "t2", "status", "{\"s\":2}", false);
        s4 = append_ok(o, OUTBOX_BUS, "t1", "event", "{\"e\":1}", false);
        ASSERT(s1 < s2 && s2 < s3 && s3 < s4);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 3u);
        ASSERT_EQ(outbox_count(o, OUTBOX_API), 1u);
        check_entry(outbox_get(o, OUTBOX_BUS, 0), s1, "t1", "status", "{\"s\":1}");
        check_entry(outbox_get(o, OUTBOX_BUS, 1), s3, "t2", "status", "{\"s\":2}");
        check_entry(outbox_get(o, OUTBOX_BUS, 2), s4, "t1", "event", "{\"e\":1}");
        ASSERT(!outbox_get(o, OUTBOX_BUS, 3));
        check_entry(outbox_get(o, OUTBOX_API, 0), s2, "t1", "update", "{\"u\":1}");
        ASSERT(!outbox_get(o, OUTBOX_API, 1));
        ASSERT(!outbox_get(o, (OutboxSink) 5, 0));
        ASSERT_STREQ(outbox_get(o, OUTBOX_BUS, 0)->exchange, "lagoon-tasks");
        ASSERT_STREQ(outbox_get(o, OUTBOX_BUS, 0)->routing_key, "controller");
        ASSERT(!outbox_get(o, OUTBOX_API, 0)->exchange);
        ASSERT(outbox_find(o, s3) == outbox_get(o, OUTBOX_BUS, 1));
        ASSERT(outbox_find(o, s2) == outbox_get(o, OUTBOX_API, 0));
        ASSERT(!outbox_find(o, s4 + 1));
        ASSERT(!outbox_find(o, 0));
        ASSERT(outbox_has_task(o, "t1") && outbox_has_task(o, "t2") && !outbox_has_task(o, "t3"));
        for (uint64_t s = s1; s <= s4; s++)
                ASSERT(entry_file_exists(dir, s));

        /* A binary body, a NULL routing key (means ""), an empty body. */
        s5 = 0;
        ASSERT_OK(outbox_append(o, OUTBOX_BUS, "t3", "logs", "lagoon-logs", NULL, "a\0\xff", 3, false, &s5));
        ASSERT_STREQ(outbox_find(o, s5)->routing_key, "");
        {
                _cleanup_free_ char *text = read_entry_file(dir, s5);
                ASSERT(strstr(text, "\"bodyBase64\":\"YQD/\""));
        }
        ASSERT_OK(outbox_append(o, OUTBOX_API, "t3", "update", NULL, NULL, NULL, 0, false, &s6));
        ASSERT_EQ(outbox_find(o, s6)->body_size, 0u);

        /* Invalid arguments change nothing. */
        ASSERT_EQ(outbox_append(o, OUTBOX_BUS, "t1", "logs", NULL, "", "x", 1, false, NULL), -EINVAL);
        ASSERT_EQ(outbox_append(o, OUTBOX_BUS, "", "logs", "x", "", "x", 1, false, NULL), -EINVAL);
        ASSERT_EQ(outbox_append(o, OUTBOX_BUS, "t", "", "x", "", "x", 1, false, NULL), -EINVAL);
        ASSERT_EQ(outbox_append(o, (OutboxSink) 2, "t", "k", "x", "", "x", 1, false, NULL), -EINVAL);
        ASSERT_EQ(outbox_append(o, OUTBOX_API, "t", "k", NULL, NULL, NULL, 1, false, NULL), -EINVAL);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 4u);
        ASSERT_EQ(outbox_count(o, OUTBOX_API), 2u);

        /* Pointers stay valid while other entries come and go. */
        first = outbox_get(o, OUTBOX_BUS, 0);
        for (int i = 0; i < 100; i++)
                append_ok(o, OUTBOX_BUS, "t9", "status", "x", false);
        ASSERT(outbox_get(o, OUTBOX_BUS, 0) == first);
        ASSERT_OK(outbox_remove(o, s3));
        ASSERT(outbox_get(o, OUTBOX_BUS, 0) == first);
        check_entry(first, s1, "t1", "status", "{\"s\":1}");

        /* Everything comes back, in order, after a reopen. */
        o = outbox_free(o);
        o = open_ok(dir, 0);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 103u);
        ASSERT_EQ(outbox_count(o, OUTBOX_API), 2u);
        check_entry(outbox_get(o, OUTBOX_BUS, 0), s1, "t1", "status", "{\"s\":1}");
        check_entry(outbox_get(o, OUTBOX_BUS, 1), s4, "t1", "event", "{\"e\":1}");
        ASSERT_EQ(outbox_get(o, OUTBOX_BUS, 2)->seq, s5);
        ASSERT(memcmp(outbox_get(o, OUTBOX_BUS, 2)->body, "a\0\xff", 4) == 0);
        ASSERT_EQ(outbox_get(o, OUTBOX_BUS, 2)->body_size, 3u);
        for (size_t i = 1; i < outbox_count(o, OUTBOX_BUS); i++)
                ASSERT(outbox_get(o, OUTBOX_BUS, i - 1)->seq < outbox_get(o, OUTBOX_BUS, i)->seq);
        check_entry(outbox_get(o, OUTBOX_API, 0), s2, "t1", "update", "{\"u\":1}");
        ASSERT_EQ(outbox_get(o, OUTBOX_API, 1)->seq, s6);
        ASSERT(!outbox_has_task(o, "t2"));
        ASSERT(outbox_has_task(o, "t3") && outbox_has_task(o, "t9"));
        ASSERT(append_ok(o, OUTBOX_BUS, "t1", "status", "y", false) > outbox_get(o, OUTBOX_BUS, 102)->seq);
}

TEST(coalesce) {
        _cleanup_free_ char *dir = new_dir();
        _cleanup_(outbox_freep) Outbox *o = NULL;
        uint64_t s1, s, s4, s5, s6, s7, sa, sb;

        o = open_ok(dir, 0);

        /* Nothing to coalesce with: appended. */
        s1 = append_ok(o, OUTBOX_BUS, "t1", "logs", "L1", true);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 1u);
        /* Same task, kind, sink: the body is replaced, the seq kept, on disk too. */
        ASSERT_EQ(append_ok(o, OUTBOX_BUS, "t1", "logs", "L2", true), s1);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 1u);
        check_entry(outbox_find(o, s1), s1, "t1", "logs", "L2");
        {
                _cleanup_free_ char *text = read_entry_file(dir, s1);
                ASSERT(strstr(text, "\"body\":\"L2\""));
        }
        /* Another task's entry in between does not matter. */
        s = append_ok(o, OUTBOX_BUS, "t2", "logs", "X", true);
        ASSERT(s > s1);
        ASSERT_EQ(append_ok(o, OUTBOX_BUS, "t1", "logs", "L3", true), s1);
        check_entry(outbox_get(o, OUTBOX_BUS, 0), s1, "t1", "logs", "L3");
        check_entry(outbox_get(o, OUTBOX_BUS, 1), s, "t2", "logs", "X");

        /* Not into an entry in flight: that body is on its way already. */
        outbox_find(o, s1)->in_flight = true;
        s4 = append_ok(o, OUTBOX_BUS, "t1", "logs", "L4", true);
        ASSERT(s4 > s);
        check_entry(outbox_find(o, s1), s1, "t1", "logs", "L3");
        ASSERT_EQ(append_ok(o, OUTBOX_BUS, "t1", "logs", "L5", true), s4);
        check_entry(outbox_find(o, s4), s4, "t1", "logs", "L5");
        ASSERT(outbox_find(o, s1)->in_flight);

        /* Not across another kind: the newest entry of t1 is a status now. */
        s5 = append_ok(o, OUTBOX_BUS, "t1", "status", "S", true);
        ASSERT(s5 > s4);
        s6 = append_ok(o, OUTBOX_BUS, "t1", "logs", "L6", true);
        ASSERT(s6 > s5);
        check_entry(outbox_find(o, s4), s4, "t1", "logs", "L5");
        /* Without coalesce: always appended. */
        s7 = append_ok(o, OUTBOX_BUS, "t1", "logs", "L7", false);
        ASSERT(s7 > s6);
        check_entry(outbox_find(o, s6), s6, "t1", "logs", "L6");

        /* Sinks are separate. */
        s = append_ok(o, OUTBOX_API, "t1", "logs", "A1", true);
        ASSERT_EQ(outbox_count(o, OUTBOX_API), 1u);
        ASSERT_EQ(append_ok(o, OUTBOX_API, "t1", "logs", "A2", true), s);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 6u);

        /* Not into an entry for another destination. */
        uint64_t sx = 0, sy = 0;
        ASSERT_OK(outbox_append(o, OUTBOX_BUS, "t5", "logs", "lagoon-logs", "a", "1", 1, true, &sx));
        ASSERT_OK(outbox_append(o, OUTBOX_BUS, "t5", "logs", "lagoon-logs", "b", "2", 1, true, &sy));
        ASSERT(sy > sx);
        ASSERT_OK(outbox_append(o, OUTBOX_BUS, "t5", "logs", "lagoon-logs", "b", "3", 1, true, &sx));
        ASSERT_EQ(sx, sy);

        /* reset_in_flight makes s1 a candidate again, but it is not t1's newest. */
        outbox_reset_in_flight(o, OUTBOX_BUS);
        ASSERT(!outbox_find(o, s1)->in_flight);

        /* The newest entry removed out of order: the one before it becomes the newest. */
        sa = append_ok(o, OUTBOX_BUS, "t3", "logs", "A", false);
        sb = append_ok(o, OUTBOX_BUS, "t3", "logs", "B", false);
        append_ok(o, OUTBOX_BUS, "t4", "logs", "other", false);
        ASSERT_OK(outbox_remove(o, sb));
        ASSERT_EQ(append_ok(o, OUTBOX_BUS, "t3", "logs", "C", true), sa);
        check_entry(outbox_find(o, sa), sa, "t3", "logs", "C");
        ASSERT_OK(outbox_remove(o, sa));
        ASSERT(!outbox_has_task(o, "t3"));
        ASSERT(append_ok(o, OUTBOX_BUS, "t3", "logs", "D", true) > sb);

        /* After a reopen the index is rebuilt from the files (newest L7 of t1 is a
         * plain logs entry, not in flight: coalesced into). */
        check_entry(outbox_find(o, s7), s7, "t1", "logs", "L7");
        o = outbox_free(o);
        o = open_ok(dir, 0);
        check_entry(outbox_find(o, s1), s1, "t1", "logs", "L3");
        check_entry(outbox_find(o, s4), s4, "t1", "logs", "L5");
        ASSERT_EQ(append_ok(o, OUTBOX_BUS, "t1", "logs", "L8", true), s7);
        check_entry(outbox_find(o, s7), s7, "t1", "logs", "L8");
        ASSERT_EQ(append_ok(o, OUTBOX_API, "t1", "logs", "A3", true), s);
        check_entry(outbox_find(o, s), s, "t1", "logs", "A3");
}

TEST(remove) {
        _cleanup_free_ char *dir = new_dir();
        _cleanup_(outbox_freep) Outbox *o = NULL;
        uint64_t seqs[10];

        o = open_ok(dir, 0);
        for (int i = 0; i < 10; i++) {
                char body[16], task[16];
                snprintf(body, sizeof(body), "b%d", i);
                snprintf(task, sizeof(task), "t%d", i % 3);
                seqs[i] = append_ok(o, OUTBOX_BUS, task, "status", body, false);
        }
        ASSERT_EQ(outbox_remove(o, seqs[9] + 1), -ENOENT);
        ASSERT_OK(outbox_remove(o, seqs[0])); /* oldest */
        ASSERT_OK(outbox_remove(o, seqs[5])); /* middle */
        ASSERT_OK(outbox_remove(o, seqs[9])); /* newest */
        ASSERT_EQ(outbox_remove(o, seqs[5]), -ENOENT);
        ASSERT(!entry_file_exists(dir, seqs[0]) && !entry_file_exists(dir, seqs[5]) &&
               !entry_file_exists(dir, seqs[9]));
        ASSERT(!outbox_find(o, seqs[5]));
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 7u);
        static const int left[] = {1, 2, 3, 4, 6, 7, 8};
        for (size_t i = 0; i < ELEMENTSOF(left); i++)
                ASSERT_EQ(outbox_get(o, OUTBOX_BUS, i)->seq, seqs[left[i]]);

        /* A file an operator removed by hand: the entry still goes. */
        {
                _cleanup_free_ char *n = entry_name(seqs[4]), *p = path_join(dir, n);
                ASSERT(unlink(p) == 0);
        }
        ASSERT_OK(outbox_remove(o, seqs[4]));

        /* t0 had 0, 3, 6, 9: gone when the last of them goes. */
        ASSERT(outbox_has_task(o, "t0"));
        ASSERT_OK(outbox_remove(o, seqs[3]));
        ASSERT(outbox_has_task(o, "t0"));
        ASSERT_OK(outbox_remove(o, seqs[6]));
        ASSERT(!outbox_has_task(o, "t0"));
        ASSERT(outbox_has_task(o, "t1") && outbox_has_task(o, "t2"));

        o = outbox_free(o);
        o = open_ok(dir, 0);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 4u);
        static const int left2[] = {1, 2, 7, 8};
        for (size_t i = 0; i < ELEMENTSOF(left2); i++)
                ASSERT_EQ(outbox_get(o, OUTBOX_BUS, i)->seq, seqs[left2[i]]);
        ASSERT_EQ(count_files(dir, ".json"), 4u);
}

TEST(reopen_seq_grows) {
        _cleanup_free_ char *dir = new_dir();
        _cleanup_(outbox_freep) Outbox *o = NULL;
        uint64_t a, b, c, d, e, f;

        o = open_ok(dir, 0);
        a = append_ok(o, OUTBOX_BUS, "t", "status", "1", false);
        b = append_ok(o, OUTBOX_API, "t", "update", "2", false);
        ASSERT_OK(outbox_remove(o, a));
        o = outbox_free(o);

        /* With an entry left. */
        o = open_ok(dir, 0);
        c = append_ok(o, OUTBOX_BUS, "t", "status", "3", false);
        ASSERT(c > b);
        ASSERT_OK(outbox_remove(o, b));
        ASSERT_OK(outbox_remove(o, c));
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS) + outbox_count(o, OUTBOX_API), 0u);
        o = outbox_free(o);

        /* Drained: the seqs still grow. */
        ASSERT_EQ(count_files(dir, ".json"), 0u);
        o = open_ok(dir, 0);
        d = append_ok(o, OUTBOX_BUS, "t", "status", "4", false);
        ASSERT(d > c);
        o = outbox_free(o);

        /* Without the reservation file, the entries on disk are the lower bound. */
        {
                _cleanup_free_ char *p = path_join(dir, "reserved-seq");
                ASSERT(unlink(p) == 0);
        }
        o = open_ok(dir, 0);
        e = append_ok(o, OUTBOX_BUS, "t", "status", "5", false);
        ASSERT(e > d);
        ASSERT(exists(dir, "reserved-seq"));
        o = outbox_free(o);

        /* A garbage reservation file is ignored (not an entry, not counted) and
         * rewritten by the next append. */
        write_str(dir, "reserved-seq", "garbage\n");
        o = open_ok(dir, 0);
        f = append_ok(o, OUTBOX_BUS, "t", "status", "6", false);
        ASSERT(f > e);
        {
                _cleanup_free_ char *p = path_join(dir, "reserved-seq"), *text = NULL;
                unsigned long long v;
                ASSERT_OK(read_full_file(p, 64, &text, NULL));
                ASSERT(sscanf(text, "%llu", &v) == 1 && v >= f);
        }
        o = outbox_free(o);
        o = open_ok(dir, 0);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 3u);
}

TEST(corrupt_files) {
        _cleanup_free_ char *dir = new_dir(), *corrupt = NULL, *p = NULL, *sub = NULL;
        _cleanup_(outbox_freep) Outbox *o = NULL;
        _cleanup_close_ int fd = -EBADF;
        uint64_t good1, good2, next;

        o = open_ok(dir, 0);
        good1 = append_ok(o, OUTBOX_BUS, "t1", "status", "ok1", false);
        good2 = append_ok(o, OUTBOX_API, "t1", "update", "ok2", false);
        o = outbox_free(o);
        corrupt = path_join(dir, "corrupt");
        ASSERT(corrupt);

        write_str(dir, "00000000000000000100.json", "garbage");
        write_str(dir, "00000000000000000101.json",
                  "{\"seq\":\"101\",\"sink\":\"bus\",\"task\":\"t\",\"kind\":\"k\",\"exchange\":\"x\","
                  "\"routingKey\":\"\",\"body\":\"\"}");
        /* Valid content under another seq's name. */
        write_str(dir, "00000000000000000102.json",
                  "{\"seq\":103,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}");
        write_str(dir, "00000000000000000104.json", "");
        write_str(dir, "1.json", "{\"seq\":1,\"sink\":\"api\",\"task\":\"t\",\"kind\":\"k\",\"body\":\"\"}");
        write_raw(dir, "00000000000000000105.json", "\0\0\0", 3);
        /* Larger than any entry can be: sparse, so cheap to make. */
        p = path_join(dir, "00000000000000000106.json");
        ASSERT(p);
        fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        ASSERT(fd >= 0);
        ASSERT(ftruncate(fd, (off_t) 65 * 1024 * 1024) == 0);
        fd = safe_close(fd);
        /* Not entries: left alone. */
        write_str(dir, "README", "operator notes");
        sub = path_join(dir, "dir.json");
        ASSERT(sub && mkdir(sub, 0700) == 0);

        o = open_ok(dir, 7);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 1u);
        ASSERT_EQ(outbox_count(o, OUTBOX_API), 1u);
        ASSERT_EQ(outbox_get(o, OUTBOX_BUS, 0)->seq, good1);
        ASSERT_EQ(outbox_get(o, OUTBOX_API, 0)->seq, good2);
        static const char *const moved[] = {
                "00000000000000000100.json",
                "00000000000000000101.json",
                "00000000000000000102.json",
                "00000000000000000104.json",
                "1.json",
                "00000000000000000105.json",
                "00000000000000000106.json",
        };
        for (size_t i = 0; i < ELEMENTSOF(moved); i++) {
                ASSERT(!exists(dir, moved[i]));
                ASSERT(exists(corrupt, moved[i]));
        }
        ASSERT(exists(dir, "README") && exists(dir, "dir.json"));
        /* The good entries' seqs are all that counts for the next seq. */
        next = append_ok(o, OUTBOX_BUS, "t1", "status", "ok3", false);
        ASSERT(next > good2);
        o = outbox_free(o);

        /* Nothing left to move the second time. */
        o = open_ok(dir, 0);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 2u);
        ASSERT_EQ(count_files(corrupt, NULL), 7u);
}

TEST(temporary_files) {
        _cleanup_free_ char *dir = new_dir();
        _cleanup_(outbox_freep) Outbox *o = NULL;
        uint64_t s;

        o = open_ok(dir, 0);
        s = append_ok(o, OUTBOX_BUS, "t1", "status", "kept", false);
        o = outbox_free(o);

        /* What an interrupted write_file_atomic() leaves: a new entry never renamed,
         * a replacement of an existing one never renamed, a reservation never renamed. */
        write_str(dir, "00000000000000009999.json.tmp.4242", "{\"seq\":9999,");
        {
                _cleanup_free_ char *n = entry_name(s), *tmp = NULL;
                ASSERT(asprintf(&tmp, "%s.tmp.17", n) >= 0);
                write_str(dir, tmp,
                          "{\"seq\":1,\"sink\":\"bus\",\"task\":\"t1\",\"kind\":\"status\","
                          "\"exchange\":\"x\",\"routingKey\":\"\",\"body\":\"new\"}");
        }
        write_str(dir, "reserved-seq.tmp.5", "99999999");
        write_str(dir, "other.tmp.x", "not ours");

        o = open_ok(dir, 0);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 1u);
        check_entry(outbox_get(o, OUTBOX_BUS, 0), s, "t1", "status", "kept");
        ASSERT_EQ(count_files(dir, ".tmp."), 1u); /* only other.tmp.x */
        ASSERT(exists(dir, "other.tmp.x"));
        ASSERT(append_ok(o, OUTBOX_BUS, "t1", "status", "next", false) > s);
}

static void check_consistent(Outbox *o, const char *dir) {
        /* Memory and disk hold the same entries. */
        _cleanup_(outbox_freep) Outbox *again = NULL;
        size_t total = 0;

        ASSERT_EQ(count_files(dir, ".tmp."), 0u);
        again = open_ok(dir, 0);
        for (size_t s = 0; s < _OUTBOX_SINK_MAX; s++) {
                ASSERT_EQ(outbox_count(again, (OutboxSink) s), outbox_count(o, (OutboxSink) s));
                for (size_t i = 0; i < outbox_count(o, (OutboxSink) s); i++) {
                        OutboxEntry *a = outbox_get(o, (OutboxSink) s, i), *b = outbox_get(again, (OutboxSink) s, i);
                        ASSERT_EQ(a->seq, b->seq);
                        ASSERT_EQ(a->body_size, b->body_size);
                        ASSERT(memcmp(a->body, b->body, a->body_size) == 0);
                }
                total += outbox_count(o, (OutboxSink) s);
        }
        ASSERT_EQ(count_files(dir, ".json"), total);
}

TEST(write_failure_fsize) {
        _cleanup_free_ char *dir = new_dir(), *big = NULL;
        _cleanup_(outbox_freep) Outbox *o = NULL;
        struct rlimit old, small;
        uint64_t s, seq = 0;

        o = open_ok(dir, 0);
        s = append_ok(o, OUTBOX_BUS, "t1", "logs", "small", true);

        /* Writes past RLIMIT_FSIZE fail with EFBIG (SIGXFSZ ignored): an I/O error in
         * the middle of write_file_atomic(), which also works as root. */
        big = malloc(64 * 1024 + 1);
        ASSERT(big);
        memset(big, 'x', 64 * 1024);
        big[64 * 1024] = 0;
        ASSERT(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
        ASSERT(getrlimit(RLIMIT_FSIZE, &old) == 0);
        small = old;
        small.rlim_cur = 16 * 1024;
        ASSERT(setrlimit(RLIMIT_FSIZE, &small) == 0);

        /* A new entry: refused, nothing in memory, no file, no temporary file. */
        ASSERT_EQ(outbox_append(o, OUTBOX_BUS, "t2", "status", "x", "", big, strlen(big), false, &seq), -EFBIG);
        ASSERT_EQ(seq, 0u);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), 1u);
        ASSERT(!outbox_has_task(o, "t2"));
        /* A coalescing append: the old body stays, in memory and on disk. */
        ASSERT_EQ(
                outbox_append(o, OUTBOX_BUS, "t1", "logs", "lagoon-tasks", "controller", big, strlen(big), true, &seq),
                -EFBIG);
        check_entry(outbox_find(o, s), s, "t1", "logs", "small");
        ASSERT(setrlimit(RLIMIT_FSIZE, &old) == 0);
        check_consistent(o, dir);

        /* And it all works again once there is room. */
        ASSERT_EQ(append_ok(o, OUTBOX_BUS, "t1", "logs", big, true), s);
        ASSERT(append_ok(o, OUTBOX_BUS, "t2", "status", big, false) > s);
        check_consistent(o, dir);
}

TEST(entry_too_large) {
        _cleanup_free_ char *dir = new_dir(), *huge = NULL;
        _cleanup_(outbox_freep) Outbox *o = NULL;
        size_t size = 64 * 1024 * 1024;

        /* An entry that could not be loaded again is refused up front. */
        o = open_ok(dir, 0);
        huge = malloc(size);
        ASSERT(huge);
        memset(huge, 'a', size);
        ASSERT_EQ(outbox_append(o, OUTBOX_API, "t1", "logs", NULL, NULL, huge, size, false, NULL), -EFBIG);
        ASSERT_EQ(outbox_count(o, OUTBOX_API), 0u);
        check_consistent(o, dir);
}

/* In a child: a private mount namespace with a tiny tmpfs, filled up. Exit 77 when no
 * mount namespace can be had (not root). */
static int enospc_child(const char *mnt) {
        _cleanup_(outbox_freep) Outbox *o = NULL;
        char body[8192];
        uint64_t seq = 0, last = 0;
        size_t n = 0;
        int r;

        if (unshare(CLONE_NEWNS) < 0) {
                fprintf(stderr, "unshare(CLONE_NEWNS): %s\n", strerror(errno));
                return 77;
        }
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", mnt, "tmpfs", 0, "size=256k,mode=0700") < 0) {
                fprintf(stderr, "mount tmpfs: %s\n", strerror(errno));
                return 77;
        }
        memset(body, 'y', sizeof(body));
        o = open_ok(mnt, 0);
        for (;;) {
                r = outbox_append(o, OUTBOX_BUS, "t1", "status", "x", "", body, sizeof(body), false, &seq);
                if (r < 0)
                        break;
                last = seq;
                n++;
                ASSERT(n < 1000);
        }
        ASSERT_EQ(r, -ENOSPC);
        ASSERT(n > 0);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS), n);
        ASSERT_EQ(outbox_get(o, OUTBOX_BUS, n - 1)->seq, last);
        /* Coalescing into the newest entry fails the same way, and keeps the old body. */
        memset(body, 'z', sizeof(body));
        ASSERT_EQ(outbox_append(o, OUTBOX_BUS, "t1", "status", "x", "", body, sizeof(body), true, &seq), -ENOSPC);
        ASSERT(outbox_get(o, OUTBOX_BUS, n - 1)->body[0] == 'y');
        check_consistent(o, mnt);
        /* Removing frees room. */
        ASSERT_OK(outbox_remove(o, outbox_get(o, OUTBOX_BUS, 0)->seq));
        ASSERT_OK(outbox_remove(o, outbox_get(o, OUTBOX_BUS, 0)->seq));
        ASSERT(append_ok(o, OUTBOX_BUS, "t2", "status", "after", false) > last);
        check_consistent(o, mnt);
        return 0;
}

TEST(write_failure_enospc) {
        _cleanup_free_ char *mnt = new_dir();
        int status;
        pid_t pid;

        ASSERT(mkdir(mnt, 0700) == 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0)
                _exit(enospc_child(mnt));
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77)
                printf("# skipped the ENOSPC part: no mount namespace for a small tmpfs\n");
        else
                ASSERT_EQ(WEXITSTATUS(status), 0);
}

/* ---- a random sequence of operations against a model ---- */

typedef struct ModelEntry {
        uint64_t seq;
        int sink;
        int task;
        int kind;
        char body[32];
        bool in_flight;
} ModelEntry;

TEST(model) {
        /* On tmpfs when there is one: this checks the bookkeeping, not the disk. */
        _cleanup_free_ char *shm = strdup("/dev/shm/test-outbox-XXXXXX");
        _cleanup_free_ char *dir = shm && mkdtemp(shm) ? path_join(shm, "outbox") : new_dir();
        _cleanup_(outbox_freep) Outbox *o = NULL;
        static ModelEntry m[4096];
        static const char *const kinds[] = {"logs", "status"};
        size_t n = 0;

        o = open_ok(dir, 0);
        for (int op = 0; op < 1500; op++) {
                int what = (int) (random() % 10);

                if (what < 6 || n == 0) {
                        int sink = (int) (random() % 2), task = (int) (random() % 4), kind = (int) (random() % 2);
                        bool coalesce = random() % 2;
                        char tname[8];
                        uint64_t seq;
                        ssize_t newest = -1;

                        snprintf(tname, sizeof(tname), "t%d", task);
                        ASSERT(n < ELEMENTSOF(m));
                        ModelEntry x = {.sink = sink, .task = task, .kind = kind};
                        snprintf(x.body, sizeof(x.body), "op%d", op);
                        seq = append_ok(o, (OutboxSink) sink, tname, kinds[kind], x.body, coalesce);
                        for (size_t i = 0; i < n; i++)
                                if (m[i].sink == sink && m[i].task == task)
                                        newest = (ssize_t) i;
                        if (coalesce && newest >= 0 && m[newest].kind == kind && !m[newest].in_flight) {
                                ASSERT_EQ(seq, m[newest].seq);
                                memcpy(m[newest].body, x.body, sizeof(x.body));
                        } else {
                                ASSERT(n == 0 || seq > m[n - 1].seq);
                                x.seq = seq;
                                m[n++] = x;
                        }
                } else if (what < 9) {
                        /* Mostly the oldest of a sink, sometimes any. */
                        size_t i = 0;
                        if (random() % 3 == 0)
                                i = (size_t) random() % n;
                        else {
                                int sink = (int) (random() % 2);
                                while (i < n && m[i].sink != sink)
                                        i++;
                                if (i == n)
                                        i = 0;
                        }
                        ASSERT_OK(outbox_remove(o, m[i].seq));
                        memmove(m + i, m + i + 1, (n - i - 1) * sizeof(ModelEntry));
                        n--;
                } else {
                        size_t i = (size_t) random() % n;
                        if (random() % 4 == 0) {
                                outbox_reset_in_flight(o, (OutboxSink) m[i].sink);
                                for (size_t k = 0; k < n; k++)
                                        if (m[k].sink == m[i].sink)
                                                m[k].in_flight = false;
                        } else {
                                m[i].in_flight = true;
                                outbox_find(o, m[i].seq)->in_flight = true;
                        }
                }

                if (op % 100 == 99) {
                        /* Reopen now and then: in_flight is in memory only. */
                        o = outbox_free(o);
                        o = open_ok(dir, 0);
                        for (size_t i = 0; i < n; i++)
                                m[i].in_flight = false;
                }
                for (int sink = 0; sink < 2; sink++) {
                        size_t k = 0;
                        for (size_t i = 0; i < n; i++) {
                                if (m[i].sink != sink)
                                        continue;
                                OutboxEntry *e = outbox_get(o, (OutboxSink) sink, k++);
                                ASSERT(e && e->seq == m[i].seq);
                                ASSERT_STREQ(e->body, m[i].body);
                                ASSERT_STREQ(e->kind, kinds[m[i].kind]);
                                ASSERT_EQ(e->in_flight, m[i].in_flight);
                        }
                        ASSERT_EQ(outbox_count(o, (OutboxSink) sink), k);
                }
                for (int task = 0; task < 4; task++) {
                        char tname[8];
                        bool any = false;
                        snprintf(tname, sizeof(tname), "t%d", task);
                        for (size_t i = 0; i < n; i++)
                                any = any || m[i].task == task;
                        ASSERT_EQ(outbox_has_task(o, tname), any);
                }
        }
        check_consistent(o, dir);
        if (shm && startswith(dir, shm))
                ASSERT_OK(rm_rf(shm));
}

/* ---- kill -9 at random instants ---- */

#define CRASH_TASKS 5

typedef struct Record {
        char op;    /* 'a' append, 'r' remove */
        char phase; /* 'i' intent, 'd' done */
        int sink;
        int task;
        uint64_t seq;
        uint64_t counter;
} Record;

/* A body that says whether it is whole: "<counter>:<task>:<len>:" then len bytes that
 * depend on the counter. */
static size_t make_body(char *buf, size_t size, uint64_t counter, int task) {
        size_t len = 1 + (counter * 7919) % 3000, n;
        int h = snprintf(buf, size, "%" PRIu64 ":%d:%zu:", counter, task, len);
        ASSERT(h > 0 && (size_t) h + len < size);
        for (n = 0; n < len; n++)
                buf[h + n] = (char) ('a' + (counter + n) % 26);
        buf[h + len] = 0;
        return (size_t) h + len;
}

static bool body_intact(const OutboxEntry *e, uint64_t *ret_counter, int *ret_task) {
        char expect[4096];
        unsigned long long counter;
        int task;

        if (sscanf(e->body, "%llu:%d:", &counter, &task) != 2)
                return false;
        size_t n = make_body(expect, sizeof(expect), counter, task);
        if (n != e->body_size || memcmp(expect, e->body, n) != 0)
                return false;
        *ret_counter = counter;
        *ret_task = task;
        return true;
}

static void send_record(int fd, Record r) {
        ASSERT(write(fd, &r, sizeof(r)) == (ssize_t) sizeof(r));
}

_noreturn_ static void crash_child(const char *dir, int fd, uint64_t counter) {
        Outbox *o = NULL;
        char body[4096];

        /* The parent checked the outbox just before: whatever is there is fine. */
        ASSERT_OK(outbox_open(dir, &o, NULL));
        srandom((unsigned) counter);
        for (;; counter++) {
                int task = (int) (random() % CRASH_TASKS), sink = (int) (random() % 2);
                char tname[8];

                if (random() % 4 == 0 && outbox_count(o, (OutboxSink) sink) > 0) {
                        uint64_t seq = outbox_get(o, (OutboxSink) sink, 0)->seq;
                        send_record(fd, (Record){.op = 'r', .phase = 'i', .sink = sink, .seq = seq});
                        ASSERT_OK(outbox_remove(o, seq));
                        send_record(fd, (Record){.op = 'r', .phase = 'd', .sink = sink, .seq = seq});
                        continue;
                }
                snprintf(tname, sizeof(tname), "t%d", task);
                size_t n = make_body(body, sizeof(body), counter, task);
                bool logs = random() % 3 != 0;
                uint64_t seq = 0;
                send_record(fd, (Record){.op = 'a', .phase = 'i', .sink = sink, .task = task, .counter = counter});
                ASSERT_OK(outbox_append(o, (OutboxSink) sink, tname, logs ? "logs" : "status", "lagoon-logs", "", body,
                                        n, logs, &seq));
                send_record(
                        fd,
                        (Record){.op = 'a', .phase = 'd', .sink = sink, .task = task, .seq = seq, .counter = counter});
        }
}

typedef struct Known {
        uint64_t seq;
        uint64_t counter; /* the newest body known to have been stored */
        int sink;
        int task;
        bool uncertain; /* an append or remove that was under way */
        bool removed;
} Known;

static Known *known_find(Known *k, size_t n, uint64_t seq) {
        for (size_t i = 0; i < n; i++)
                if (k[i].seq == seq)
                        return k + i;
        return NULL;
}

static void crash_rounds(const char *dir, int rounds, unsigned max_delay_usec) {
        static Known known[100000];
        static Record recs[200000];
        size_t n_known = 0, total_ops = 0;
        uint64_t max_seq_seen = 0;

        for (int round = 0; round < rounds; round++) {
                uint64_t start_counter = (uint64_t) (round + 1) * 1000000, round_max_before = max_seq_seen;
                Record pending = {};
                int fds[2], status;
                size_t n_recs = 0;
                ssize_t l;
                pid_t pid;

                ASSERT(pipe2(fds, O_CLOEXEC) == 0);
                pid = fork();
                ASSERT(pid >= 0);
                if (pid == 0) {
                        close(fds[0]);
                        crash_child(dir, fds[1], start_counter);
                }
                close(fds[1]);
                /* Read while it runs, so it never blocks on a full pipe; kill it a
                 * random time after its first operation began (a slow start, as under
                 * sanitizers, must not eat the window). */
                uint64_t deadline = UINT64_MAX, give_up = now_usec(CLOCK_MONOTONIC) + 30 * USEC_PER_SEC;
                ASSERT(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
                for (;;) {
                        l = read(fds[0], (char *) recs + n_recs * sizeof(Record),
                                 (ELEMENTSOF(recs) - n_recs) * sizeof(Record));
                        if (l > 0) {
                                ASSERT(l % (ssize_t) sizeof(Record) == 0); /* records are written whole */
                                n_recs += (size_t) l / sizeof(Record);
                        }
                        if (n_recs > 0 && deadline == UINT64_MAX)
                                deadline = now_usec(CLOCK_MONOTONIC) + (uint64_t) random() % max_delay_usec;
                        if (now_usec(CLOCK_MONOTONIC) >= deadline)
                                break;
                        ASSERT(now_usec(CLOCK_MONOTONIC) < give_up); /* the child never got going */
                        usleep(200);
                }
                ASSERT(kill(pid, SIGKILL) == 0);
                ASSERT(waitpid(pid, &status, 0) == pid);
                ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
                ASSERT(fcntl(fds[0], F_SETFL, 0) == 0);
                while ((l = read(fds[0], (char *) recs + n_recs * sizeof(Record),
                                 (ELEMENTSOF(recs) - n_recs) * sizeof(Record))) > 0) {
                        ASSERT(l % (ssize_t) sizeof(Record) == 0);
                        n_recs += (size_t) l / sizeof(Record);
                }
                close(fds[0]);
                total_ops += n_recs / 2;

                /* Replay what the child said it did onto what we knew. */
                for (size_t i = 0; i < n_recs; i++) {
                        Record *r = recs + i;
                        Known *k;

                        if (r->phase == 'i') {
                                pending = *r;
                                continue;
                        }
                        pending = (Record){};
                        if (r->op == 'r') {
                                k = known_find(known, n_known, r->seq);
                                ASSERT(k && !k->removed);
                                k->removed = true;
                                continue;
                        }
                        k = known_find(known, n_known, r->seq);
                        if (k) {
                                /* Coalesced into an entry we knew. */
                                ASSERT(!k->removed && k->sink == r->sink && k->task == r->task);
                                ASSERT(r->counter > k->counter);
                                k->counter = r->counter;
                        } else {
                                ASSERT(r->seq > max_seq_seen); /* new seqs only ever grow */
                                max_seq_seen = r->seq;
                                ASSERT(n_known < ELEMENTSOF(known));
                                known[n_known++] =
                                        (Known){.seq = r->seq, .counter = r->counter, .sink = r->sink, .task = r->task};
                        }
                }
                if (pending.op == 'r')
                        known_find(known, n_known, pending.seq)->uncertain = true;

                /* Now the disk: every entry whole, nothing corrupt, no temp file left. */
                _cleanup_(outbox_freep) Outbox *o = open_ok(dir, 0);
                ASSERT_EQ(count_files(dir, ".tmp."), 0u);
                size_t n_loaded = 0, n_unknown = 0;
                for (int sink = 0; sink < 2; sink++) {
                        uint64_t last_seq = 0, last_counter[CRASH_TASKS] = {};
                        for (size_t i = 0; i < outbox_count(o, (OutboxSink) sink); i++) {
                                OutboxEntry *e = outbox_get(o, (OutboxSink) sink, i);
                                uint64_t counter;
                                int task;
                                char tname[8];

                                ASSERT(e->seq > last_seq);
                                last_seq = e->seq;
                                ASSERT(body_intact(e, &counter, &task));
                                snprintf(tname, sizeof(tname), "t%d", task);
                                ASSERT_STREQ(e->task_id, tname);
                                /* A task's messages in seq order are in the order sent. */
                                ASSERT(counter > last_counter[task]);
                                last_counter[task] = counter;
                                n_loaded++;

                                Known *k = known_find(known, n_known, e->seq);
                                if (!k) {
                                        /* Only the append under way may have left an
                                         * entry the child could not report. */
                                        ASSERT(pending.op == 'a' && pending.phase == 'i');
                                        ASSERT(counter == pending.counter && task == pending.task &&
                                               sink == pending.sink);
                                        ASSERT(e->seq > round_max_before);
                                        n_unknown++;
                                        max_seq_seen = MAX(max_seq_seen, e->seq);
                                        ASSERT(n_known < ELEMENTSOF(known));
                                        known[n_known++] =
                                                (Known){.seq = e->seq, .counter = counter, .sink = sink, .task = task};
                                        continue;
                                }
                                ASSERT(!k->removed);
                                ASSERT(k->sink == sink && k->task == task);
                                if (counter != k->counter) {
                                        /* A newer body than reported: the coalescing
                                         * append under way. */
                                        ASSERT(pending.op == 'a' && counter == pending.counter);
                                        k->counter = counter;
                                }
                        }
                }
                ASSERT(n_unknown <= 1);
                /* Everything known and not removed is there. */
                size_t n_expected = 0;
                for (size_t i = 0; i < n_known; i++) {
                        Known *k = known + i;
                        if (k->removed)
                                continue;
                        if (!outbox_find(o, k->seq)) {
                                ASSERT(k->uncertain); /* the remove under way went through */
                                k->removed = true;
                                continue;
                        }
                        k->uncertain = false;
                        n_expected++;
                }
                ASSERT_EQ(n_expected, n_loaded);
        }
        printf("# crash safety in %s: %d kills, %zu operations acknowledged\n", dir, rounds, total_ops);
        ASSERT(total_ops > 0);
}

TEST(crash_safety) {
        _cleanup_free_ char *dir = new_dir(), *shm = strdup("/dev/shm/test-outbox-XXXXXX");

        /* On the real disk, where most kills land in an fsync... */
        crash_rounds(dir, 15, 150000);
        /* ...and on tmpfs, where operations are fast and kills land anywhere. */
        ASSERT(shm);
        if (mkdtemp(shm)) {
                crash_rounds(shm, 40, 20000);
                ASSERT_OK(rm_rf(shm));
        }
}

/* ---- speed ---- */

TEST(load_20000) {
        _cleanup_free_ char *dir = new_dir();
        _cleanup_(outbox_freep) Outbox *o = NULL;
        const size_t n = 20000;
        uint64_t t0, t1, c0, c1;
        char body[600];

        ASSERT_OK(mkdir_p(dir, 0700));
        /* Written directly (no fsync each), in the format outbox_append() writes. */
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *text = NULL, *name = entry_name(i + 1);
                char task[16];
                size_t size;
                snprintf(task, sizeof(task), "task-%zu", i % 500);
                snprintf(body, sizeof(body),
                         "{\"type\":\"task\",\"namespace\":\"proj-main\",\"meta\":{\"task\":{\"id\":\"%zu\"},"
                         "\"jobStatus\":\"running\",\"message\":\"%0400zu\"}}",
                         i, i);
                OutboxEntry e = {
                        .seq = i + 1,
                        .sink = (OutboxSink) (i % 3 == 0),
                        .task_id = task,
                        .kind = (char *) "status",
                        .exchange = (char *) "lagoon-tasks",
                        .routing_key = (char *) "controller",
                        .body = body,
                        .body_size = strlen(body),
                };
                ASSERT_OK(outbox_entry_format(&e, &text, &size));
                write_raw(dir, name, text, size);
        }

        t0 = now_usec(CLOCK_MONOTONIC);
        c0 = cpu_usec();
        o = open_ok(dir, 0);
        c1 = cpu_usec();
        t1 = now_usec(CLOCK_MONOTONIC);
        ASSERT_EQ(outbox_count(o, OUTBOX_BUS) + outbox_count(o, OUTBOX_API), n);
        printf("# loading %zu entries took %.3f s (%.3f s of CPU time)\n", n, (double) (t1 - t0) / USEC_PER_SEC,
               (double) (c1 - c0) / USEC_PER_SEC);
        /* Timing is printed, not asserted: speed is for benchmarks, not unit tests. */
        for (size_t i = 1; i < outbox_count(o, OUTBOX_BUS); i++)
                ASSERT(outbox_get(o, OUTBOX_BUS, i - 1)->seq < outbox_get(o, OUTBOX_BUS, i)->seq);

        /* In-memory costs: coalescing appends find their entry through the task index,
         * removals of the oldest are O(1). tmpfs makes fsync cheap, so this measures the
         * outbox, not the disk. */
        _cleanup_free_ char *shm = strdup("/dev/shm/test-outbox-XXXXXX");
        if (mkdtemp(shm)) {
                _cleanup_(outbox_freep) Outbox *m = NULL;
                uint64_t t2, t3, t4;

                m = open_ok(shm, 0);
                t2 = now_usec(CLOCK_MONOTONIC);
                for (size_t i = 0; i < n; i++) {
                        char task[16];
                        snprintf(task, sizeof(task), "task-%zu", i % 5000);
                        append_ok(m, OUTBOX_BUS, task, i % 2 ? "logs" : "status", "x", i % 2);
                }
                t3 = now_usec(CLOCK_MONOTONIC);
                while (outbox_count(m, OUTBOX_BUS) > 0)
                        ASSERT_OK(outbox_remove(m, outbox_get(m, OUTBOX_BUS, 0)->seq));
                t4 = now_usec(CLOCK_MONOTONIC);
                printf("# on tmpfs: %zu appends %.3f s, removing all %.3f s\n", n, (double) (t3 - t2) / USEC_PER_SEC,
                       (double) (t4 - t3) / USEC_PER_SEC);
                ASSERT(!outbox_has_task(m, "task-1"));
                ASSERT_OK(rm_rf(shm));
        }
}

#define RUN_TIMED(name) \
        do { \
                uint64_t _t_ = now_usec(CLOCK_MONOTONIC); \
                test_##name(); \
                printf("ok - %s (%.2f s)\n", #name, (double) (now_usec(CLOCK_MONOTONIC) - _t_) / USEC_PER_SEC); \
        } while (0)

int main(void) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        srandom((unsigned) time(NULL));
        ASSERT(mkdtemp(base));

        RUN_TIMED(entry_parse);
        RUN_TIMED(entry_format_roundtrip);
        RUN_TIMED(append_get_order);
        RUN_TIMED(coalesce);
        RUN_TIMED(remove);
        RUN_TIMED(reopen_seq_grows);
        RUN_TIMED(corrupt_files);
        RUN_TIMED(temporary_files);
        RUN_TIMED(write_failure_fsize);
        RUN_TIMED(entry_too_large);
        RUN_TIMED(write_failure_enospc);
        RUN_TIMED(model);
        RUN_TIMED(crash_safety);
        RUN_TIMED(load_20000);

        ASSERT_OK(rm_rf(base));
        return 0;
}
