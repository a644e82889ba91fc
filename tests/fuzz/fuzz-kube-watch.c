/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A watch body from the API server as arbitrary bytes: fed to json_stream in pieces
 * (sizes from the first byte) and every value through kube_watch_event_parse(), as the
 * watch does; the parsed event must be consistent. The same bytes also go to
 * kube_parse_timestamp() line by line, as a followed log's timestamps do. */

#include <stdint.h>
#include <string.h>

#include "kube.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_value(JsonValue *v, void *userdata) {
        unsigned *n = userdata;
        KubeWatchEvent e;

        if (kube_watch_event_parse(v, &e) >= 0) {
                if (!json_is_object(e.object) || !kube_watch_event_type_to_string(e.type) ||
                    e.type == KUBE_WATCH_SYNCED)
                        __builtin_trap();
                if (e.type != KUBE_WATCH_ERROR && (e.status_code != 0 || e.message))
                        __builtin_trap();
                if (e.resource_version)
                        (void) strlen(e.resource_version);
                (*n)++;
        }
        json_free(v);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_stream_freep) JsonStream *s = NULL;
        unsigned n = 0;
        size_t step, off = 0;

        if (size < 1 || size > 65536)
                return 0;
        step = 1 + data[0] % 64;
        data++;
        size--;

        s = json_stream_new(16384, 32);
        if (!s)
                __builtin_trap();
        while (off < size) {
                size_t k = MIN(step, size - off);
                if (json_stream_feed(s, data + off, k, on_value, &n) < 0)
                        break;
                off += k;
        }
        (void) json_stream_finish(s, on_value, &n);

        for (const uint8_t *p = data, *end = data + size; p < end;) {
                const uint8_t *nl = memchr(p, '\n', (size_t) (end - p));
                const uint8_t *sp = memchr(p, ' ', (size_t) ((nl ?: end) - p));
                uint64_t ts;
                if (sp)
                        (void) kube_parse_timestamp((const char *) p, (size_t) (sp - p), &ts);
                p = nl ? nl + 1 : end;
        }
        return 0;
}
