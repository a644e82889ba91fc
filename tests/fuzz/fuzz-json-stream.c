/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* json_stream_* on arbitrary bytes. The first byte picks where the rest is cut: fed in
 * one piece, in two pieces and byte by byte, the stream must give the same values and
 * the same result. When the whole input is a single JSON document (json_parse accepts
 * it), the stream must give exactly that one value. */

#include <stdint.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Out {
        char *text; /* the values, formatted, one per line */
        size_t size, n;
} Out;

static int collect(JsonValue *v, void *userdata) {
        _cleanup_free_ char *s = NULL;
        Out *o = userdata;
        size_t n = 0;

        if (json_format(v, false, &s, &n) < 0)
                __builtin_trap();
        json_free(v);
        char *t = realloc(o->text, o->size + n + 2);
        if (!t)
                __builtin_trap();
        memcpy(t + o->size, s, n);
        t[o->size + n] = '\n';
        t[o->size + n + 1] = 0;
        o->text = t;
        o->size += n + 1;
        o->n++;
        return 0;
}

static int run(const uint8_t *data, size_t size, size_t step, size_t first, Out *o) {
        _cleanup_(json_stream_freep) JsonStream *s = json_stream_new(4096, 16);
        size_t off = 0;
        int r;

        if (!s)
                __builtin_trap();
        while (off < size) {
                size_t n = MIN(off == 0 ? first : step, size - off);
                r = json_stream_feed(s, data + off, n, collect, o);
                if (r < 0)
                        return r;
                off += n;
        }
        return json_stream_finish(s, collect, o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Out a = {}, b = {}, c = {};
        int ra, rb, rc;

        if (size < 1 || size > 3000)
                return 0;
        size_t cut = 1 + data[0] % size;
        data++;
        size--;

        ra = run(data, size, SIZE_MAX, SIZE_MAX, &a);
        rb = run(data, size, SIZE_MAX, cut, &b);
        rc = run(data, size, 1, 1, &c);

        /* Errors from limits can only differ in where they are noticed, not whether. */
        if (ra != rb || ra != rc)
                __builtin_trap();
        if (!streq(strempty(a.text), strempty(b.text)) || !streq(strempty(a.text), strempty(c.text)))
                __builtin_trap();

        _cleanup_json_ JsonValue *v = NULL;
        if (json_parse((const char *) data, size, 16, &v, NULL) >= 0) {
                _cleanup_free_ char *s = NULL;
                if (ra < 0 && ra != -E2BIG)
                        __builtin_trap();
                if (ra == 0) {
                        if (a.n != 1 || json_format(v, false, &s, NULL) < 0)
                                __builtin_trap();
                        if (strncmp(a.text, s, a.size - 1) != 0 || strlen(s) != a.size - 1)
                                __builtin_trap();
                }
        }

        free(a.text);
        free(b.text);
        free(c.text);
        return 0;
}
