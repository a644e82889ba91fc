/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target: the CRI record splitter/joiner that logtail feeds (CriLogStream).
 * The first byte picks a chunk size; the rest is fed in chunks of that size and, as a
 * check, all at once: both must produce the same lines (the resume logic relies on
 * the output not depending on chunking), and no line may exceed CRI_LOG_LINE_MAX. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crilog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Digest {
        uint64_t hash;
        uint64_t lines;
        uint64_t bytes;
} Digest;

static int on_line(const char *line, size_t len, bool is_stderr, bool malformed, void *userdata) {
        Digest *d = userdata;

        if (len > CRI_LOG_LINE_MAX)
                abort();
        /* FNV-1a over the line and its flags */
        uint64_t h = d->hash ^ (is_stderr ? 0x9e37 : 0x7f4a) ^ (malformed ? 0x51 : 0);
        for (size_t i = 0; i < len; i++)
                h = (h ^ (uint8_t) line[i]) * UINT64_C(1099511628211);
        d->hash = h * UINT64_C(1099511628211);
        d->lines++;
        d->bytes += len;
        return 0;
}

static void run(const uint8_t *data, size_t size, size_t step, Digest *d) {
        CriLogStream *s = NULL;

        if (cri_log_stream_new(0, 0, on_line, d, &s) < 0)
                abort();
        for (size_t i = 0; i < size; i += step) {
                size_t n = size - i < step ? size - i : step;
                /* exact-size copy of each chunk, for ASan */
                char *c = malloc(n);
                if (!c)
                        abort();
                memcpy(c, data + i, n);
                if (cri_log_stream_feed(s, c, n) < 0)
                        abort();
                free(c);
        }
        if (cri_log_stream_finish(s) < 0)
                abort();
        if (cri_log_stream_lines(s) != d->lines)
                abort();
        uint64_t off, lines;
        cri_log_stream_clean_point(s, &off, &lines);
        if (off != size || lines != d->lines)
                abort();
        cri_log_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Digest a = {}, b = {};

        if (size < 1)
                return 0;
        size_t step = data[0] % 64 + 1;
        data++;
        size--;

        run(data, size, step, &a);
        run(data, size, size ?: 1, &b);
        if (a.hash != b.hash || a.lines != b.lines || a.bytes != b.bytes)
                abort();
        return 0;
}
