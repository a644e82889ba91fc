/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests for the CRI log record parser and the record splitter/joiner (crilog.h):
 * valid records of both streams and flags, garbage, and the splitter's independence
 * from how the input is chunked. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crilog.h"
#include "tests.h"

#define TS "2026-11-28T00:44:13.123456789+00:00"

static int parse(const char *s, CriLogLine *l) {
        return cri_log_parse_line(s, strlen(s), l);
}

static bool text_is(const CriLogLine *l, const char *s) {
        return l->text_len == strlen(s) && memcmp(l->text, s, l->text_len) == 0;
}

static void test_parse_valid(void) {
        CriLogLine l;

        ASSERT(parse(TS " stdout F hello world", &l) == 0);
        ASSERT(!l.is_stderr && !l.partial && text_is(&l, "hello world"));
        ASSERT(l.timestamp_len == strlen(TS) && memcmp(l.timestamp, TS, l.timestamp_len) == 0);

        ASSERT(parse(TS " stderr P part", &l) == 0);
        ASSERT(l.is_stderr && l.partial && text_is(&l, "part"));

        /* empty text, as conmon writes it ("F " then nothing) and without the space */
        ASSERT(parse(TS " stdout F ", &l) == 0);
        ASSERT(!l.partial && l.text_len == 0);
        ASSERT(parse(TS " stderr F", &l) == 0);
        ASSERT(l.is_stderr && l.text_len == 0);

        /* spaces and tabs in the text are kept as they are */
        ASSERT(parse(TS " stdout F   a\tb  c \t", &l) == 0);
        ASSERT(text_is(&l, "  a\tb  c \t"));

        /* a text that looks like a record */
        ASSERT(parse(TS " stdout F " TS " stderr P x", &l) == 0);
        ASSERT(text_is(&l, TS " stderr P x"));

        /* other timestamp forms */
        ASSERT(parse("2026-11-28T00:44:13Z stdout F x", &l) == 0);
        ASSERT(parse("2026-11-28T00:44:13.1-05:00 stdout F x", &l) == 0);
        ASSERT(parse("2026-11-28T00:44:13.000000001+0100 stdout F x", &l) == 0);

        /* binary text */
        const char bin[] = TS " stdout F a\0b\xff";
        ASSERT(cri_log_parse_line(bin, sizeof(bin) - 1, &l) == 0);
        ASSERT(l.text_len == 4 && memcmp(l.text, "a\0b\xff", 4) == 0);

        /* NULL ret allowed: just validation */
        ASSERT(parse(TS " stdout F x", NULL) == 0);
}

static void test_parse_garbage(void) {
        CriLogLine l;
        static const char *const bad[] = {
                "",
                " ",
                "hello",
                "hello world",
                TS,
                TS " ",
                TS " stdout",
                TS " stdout ",
                TS " stdin F x",
                TS " STDOUT F x",
                TS " stdoutF x",
                TS " stdout X x",
                TS " stdout f x",
                TS " stdout FF x",
                TS " stdout Fx",
                TS "  stdout F x",
                "x stdout F text",
                "2026-11-28 stdout F x",
                "2026-11-28T00:44:13 stdout F x",     /* no zone */
                "2026-11-28T00:44:13. stdout F x",    /* empty fraction */
                "2026-11-28T00:44:13.5+1 stdout F x", /* bad zone */
                "2026-11-28T00:44:13.5Zx stdout F x", /* trailing junk */
                "2026-1a-28T00:44:13Z stdout F x",
                "\n",
                "\t" TS " stdout F x",
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                int r = parse(bad[i], &l);
                if (r != -EBADMSG) {
                        fprintf(stderr, "accepted garbage #%zu: \"%s\"\n", i, bad[i]);
                        abort();
                }
        }
        ASSERT(cri_log_parse_line(NULL, 0, &l) == -EBADMSG);
        ASSERT(cri_log_parse_line(TS " stdout F x", 0, &l) == -EBADMSG);
        /* cut short: only the timestamp */
        ASSERT(cri_log_parse_line(TS " stdout F x", strlen(TS), &l) == -EBADMSG);
}

/* Collects the splitter's output as "<o|e|!>text\n" per line. */
typedef struct Out {
        char *buf;
        size_t len;
        size_t alloc;
        size_t n;
} Out;

static int collect(const char *line, size_t len, bool is_stderr, bool malformed, void *userdata) {
        Out *o = userdata;

        if (o->len + len + 2 > o->alloc) {
                o->alloc = (o->len + len + 2) * 2;
                o->buf = realloc(o->buf, o->alloc);
                ASSERT(o->buf);
        }
        o->buf[o->len++] = malformed ? '!' : is_stderr ? 'e' : 'o';
        memcpy(o->buf + o->len, line, len);
        o->len += len;
        o->buf[o->len++] = '\n';
        o->n++;
        return 0;
}

static void out_done(Out *o) {
        free(o->buf);
        *o = (Out){};
}

static bool out_is(const Out *o, const char *s) {
        return o->len == strlen(s) && memcmp(o->buf, s, o->len) == 0;
}

/* Feeds data in pieces of `step` bytes (0: all at once), then finishes if asked. */
static void run(const char *data, size_t len, size_t step, bool finish, Out *o) {
        CriLogStream *s = NULL;

        ASSERT(cri_log_stream_new(0, 0, collect, o, &s) == 0);
        if (step == 0)
                ASSERT(cri_log_stream_feed(s, data, len) == 0);
        else
                for (size_t i = 0; i < len; i += step)
                        ASSERT(cri_log_stream_feed(s, data + i, i + step > len ? len - i : step) == 0);
        if (finish)
                ASSERT(cri_log_stream_finish(s) == 0);
        ASSERT(cri_log_stream_lines(s) == o->n);
        cri_log_stream_free(s);
}

static const char SAMPLE[] = TS " stdout F one\n" TS " stderr P tw\n" TS " stdout P thr\n" TS " stderr F o\n" TS
                                " stdout P e\n" TS " stdout F e\n"
                                "garbage here\n"
                                "\n" TS " stdout F \n" TS " stderr F last\n";
static const char SAMPLE_OUT[] = "oone\n"
                                 "etwo\n"
                                 "othree\n"
                                 "!garbage here\n"
                                 "!\n"
                                 "o\n"
                                 "elast\n";

static void test_stream_basic(void) {
        size_t len = sizeof(SAMPLE) - 1;

        /* The output must not depend on the chunking. */
        static const size_t steps[] = {0, 1, 2, 3, 7, 13, 64, 100};
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
                Out o = {};
                run(SAMPLE, len, steps[i], false, &o);
                if (!out_is(&o, SAMPLE_OUT)) {
                        fprintf(stderr, "step %zu: got \"%.*s\"\n", steps[i], (int) o.len, o.buf);
                        abort();
                }
                out_done(&o);
        }
}

static void test_stream_clean_point(void) {
        CriLogStream *s = NULL;
        Out o = {};
        uint64_t off, lines;
        const char a[] = TS " stdout F one\n";
        const char b[] = TS " stdout P tw";

        ASSERT(cri_log_stream_new(100, 5, collect, &o, &s) == 0);
        cri_log_stream_clean_point(s, &off, &lines);
        ASSERT(off == 100 && lines == 5);

        ASSERT(cri_log_stream_feed(s, a, strlen(a)) == 0);
        cri_log_stream_clean_point(s, &off, &lines);
        ASSERT(off == 100 + strlen(a) && lines == 6);

        /* an incomplete record, then a complete P record: not clean */
        ASSERT(cri_log_stream_feed(s, b, strlen(b)) == 0);
        cri_log_stream_clean_point(s, &off, &lines);
        ASSERT(off == 100 + strlen(a) && lines == 6);
        ASSERT(cri_log_stream_feed(s, "\n", 1) == 0);
        cri_log_stream_clean_point(s, &off, &lines);
        ASSERT(off == 100 + strlen(a) && lines == 6);

        /* stderr line in between: still not clean (stdout pending) */
        const char c[] = TS " stderr F err\n";
        ASSERT(cri_log_stream_feed(s, c, strlen(c)) == 0);
        cri_log_stream_clean_point(s, &off, &lines);
        ASSERT(off == 100 + strlen(a) && lines == 6);
        ASSERT(cri_log_stream_lines(s) == 7);

        const char d[] = TS " stdout F o\n";
        ASSERT(cri_log_stream_feed(s, d, strlen(d)) == 0);
        cri_log_stream_clean_point(s, &off, &lines);
        ASSERT(off == 100 + strlen(a) + strlen(b) + 1 + strlen(c) + strlen(d) && lines == 8);
        ASSERT(out_is(&o, "oone\neerr\notwo\n"));

        cri_log_stream_free(s);
        out_done(&o);
}

static void test_stream_finish(void) {
        Out o = {};

        /* dangling partials and an unterminated record are emitted at finish, in order */
        const char in[] = TS " stderr P first\n" TS " stdout P second\n" TS " stdout F third";
        run(in, sizeof(in) - 1, 5, false, &o);
        ASSERT(o.n == 0);
        out_done(&o);

        run(in, sizeof(in) - 1, 5, true, &o);
        ASSERT(out_is(&o, "osecondthird\nefirst\n"));
        out_done(&o);

        const char in2[] = TS " stderr P first\n" TS " stdout P second\n";
        run(in2, sizeof(in2) - 1, 0, true, &o);
        ASSERT(out_is(&o, "efirst\nosecond\n"));
        out_done(&o);

        const char in3[] = "unterminated garbage";
        run(in3, sizeof(in3) - 1, 3, true, &o);
        ASSERT(out_is(&o, "!unterminated garbage\n"));
        out_done(&o);
}

static void test_stream_caps(void) {
        const size_t piece = 100 * 1024;
        const size_t n_pieces = 25; /* 2.5 MiB line in P pieces */
        size_t hdr = strlen(TS " stdout P ");
        size_t len = n_pieces * (hdr + piece + 1);
        char *in = malloc(len), *p = in;
        ASSERT(in);

        for (size_t i = 0; i < n_pieces; i++) {
                memcpy(p, i == n_pieces - 1 ? TS " stdout F " : TS " stdout P ", hdr);
                p += hdr;
                memset(p, 'a' + (int) (i % 26), piece);
                p += piece;
                *p++ = '\n';
        }
        ASSERT((size_t) (p - in) == len);

        static const size_t steps[] = {0, 4096, 65536, 333333};
        for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
                Out o = {};
                run(in, len, steps[k], true, &o);
                /* 2.5 MiB → 1 MiB + 1 MiB + 0.5 MiB */
                ASSERT(o.n == 3);
                ASSERT(o.len == n_pieces * piece + 3 * 2);
                ASSERT(o.buf[0] == 'o' && o.buf[1 + CRI_LOG_LINE_MAX] == '\n');
                /* the bytes are all there, in order */
                size_t pos = 0;
                for (size_t i = 0; i < o.len; i++) {
                        if (o.buf[i] == 'o' && (i == 0 || o.buf[i - 1] == '\n'))
                                continue;
                        if (o.buf[i] == '\n')
                                continue;
                        ASSERT(o.buf[i] == 'a' + (int) ((pos / piece) % 26));
                        pos++;
                }
                ASSERT(pos == n_pieces * piece);
                out_done(&o);
        }
        free(in);

        /* An overlong garbage record (no newline for 3 MiB) is cut, nothing lost,
         * and the same whatever the chunking. */
        len = 3 * 1024 * 1024 + 17;
        in = malloc(len + 1);
        ASSERT(in);
        memset(in, 'x', len);
        in[len] = '\n';
        Out ref = {};
        run(in, len + 1, 0, true, &ref);
        size_t text = 0;
        for (size_t i = 0; i < ref.len; i++)
                text += ref.buf[i] == 'x';
        ASSERT(text == len);
        static const size_t steps2[] = {65536, 1000000, 7777};
        for (size_t k = 0; k < sizeof(steps2) / sizeof(steps2[0]); k++) {
                Out o = {};
                run(in, len + 1, steps2[k], true, &o);
                ASSERT(o.len == ref.len && memcmp(o.buf, ref.buf, o.len) == 0);
                out_done(&o);
        }
        out_done(&ref);
        free(in);
}

static int fail_cb(const char *line, size_t len, bool is_stderr, bool malformed, void *userdata) {
        return -EIO;
}

static void test_stream_cb_error(void) {
        CriLogStream *s = NULL;
        const char a[] = TS " stdout F one\n";

        ASSERT(cri_log_stream_new(0, 0, fail_cb, NULL, &s) == 0);
        ASSERT(cri_log_stream_feed(s, a, strlen(a)) == -EIO);
        cri_log_stream_free(s);
        ASSERT(cri_log_stream_free(NULL) == NULL);
}

int main(void) {
        test_parse_valid();
        test_parse_garbage();
        test_stream_basic();
        test_stream_clean_point();
        test_stream_finish();
        test_stream_caps();
        test_stream_cb_error();
        printf("test-crilog: all passed\n");
        return 0;
}
