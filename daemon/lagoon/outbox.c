/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The durable outbox (outbox.h): owns the entry files of one directory, their on-disk
 * format, and the in-memory view of them: per sink a queue of entries sorted by seq (a
 * window over an array, so dropping the oldest is O(1) amortized and a seq is found by
 * binary search), and a hash of tasks that knows each task's newest entry per sink (for
 * coalescing) and how many it has pending (for outbox_has_task). Every change reaches
 * the disk (write_file_atomic: fsync of the file and of the directory) before memory,
 * and memory is changed only when nothing can fail any more. Seqs are reserved in
 * blocks through <dir>/reserved-seq, so a seq is never handed out twice, not even after
 * the outbox was drained and the daemon restarted. */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "json.h"
#include "log.h"
#include "outbox.h"

/* Large enough for a capped task log (8 MiB by default) JSON-escaped or base64-encoded;
 * an entry that would not fit is refused at append rather than written and then found
 * unreadable at the next start. */
#define OUTBOX_ENTRY_SIZE_MAX (64U * 1024U * 1024U)
#define OUTBOX_ENTRY_DEPTH_MAX 8U
#define SEQ_DIGITS 20U
/* Far from overflow, so next_seq + SEQ_RESERVE_BLOCK never wraps. */
#define SEQ_MAX (UINT64_MAX / 2)
#define SEQ_RESERVE_BLOCK 4096U
#define RESERVED_SEQ_NAME "reserved-seq"
#define RESERVED_SEQ_SIZE_MAX 64U
#define TASK_BUCKETS_MIN 64U

typedef struct Queue {
        OutboxEntry **items; /* live entries are items[head .. head + n) */
        size_t head;
        size_t n;
        size_t allocated;
} Queue;

typedef struct TaskIndex {
        char *task_id;
        size_t n_entries[_OUTBOX_SINK_MAX];
        OutboxEntry *newest[_OUTBOX_SINK_MAX];
        struct TaskIndex *next; /* bucket chain */
} TaskIndex;

struct Outbox {
        char *dir;
        char *corrupt_dir;
        char *reserved_path;
        uint64_t next_seq;
        uint64_t reserved_seq; /* every seq ever written is <= this, on disk too */
        Queue queues[_OUTBOX_SINK_MAX];
        TaskIndex **buckets;
        size_t n_buckets;
        size_t n_tasks;
};

static const char *const sink_table[_OUTBOX_SINK_MAX] = {
        [OUTBOX_BUS] = "bus",
        [OUTBOX_API] = "api",
};

const char *outbox_sink_to_string(OutboxSink s) {
        return (unsigned) s < _OUTBOX_SINK_MAX ? sink_table[s] : NULL;
}

static int sink_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < _OUTBOX_SINK_MAX; i++)
                if (streq(s, sink_table[i]))
                        return (int) i;
        return -EINVAL;
}

OutboxEntry *outbox_entry_free(OutboxEntry *e) {
        if (!e)
                return NULL;
        free(e->task_id);
        free(e->kind);
        free(e->exchange);
        free(e->routing_key);
        free(e->body);
        free(e);
        return NULL;
}

static char *memdup_nul(const void *p, size_t n) {
        char *c = malloc(n + 1);

        if (!c)
                return NULL;
        if (n > 0)
                memcpy(c, p, n);
        c[n] = 0;
        return c;
}

/* ---- body encoding ---- */

/* Strict UTF-8 without NUL: exactly the strings that json.c writes as they are and
 * reads back whole (it writes invalid UTF-8 raw, which its parser then refuses, and
 * json.h has no way to get the length of a string holding a NUL). */
static bool body_is_text(const char *s, size_t n) {
        for (size_t i = 0; i < n;) {
                unsigned char c = (unsigned char) s[i];
                uint32_t cp, min;
                size_t len;

                if (c == 0)
                        return false;
                if (c < 0x80) {
                        i++;
                        continue;
                }
                if ((c & 0xe0) == 0xc0) {
                        len = 2;
                        cp = c & 0x1f;
                        min = 0x80;
                } else if ((c & 0xf0) == 0xe0) {
                        len = 3;
                        cp = c & 0x0f;
                        min = 0x800;
                } else if ((c & 0xf8) == 0xf0) {
                        len = 4;
                        cp = c & 0x07;
                        min = 0x10000;
                } else
                        return false;
                if (n - i < len)
                        return false;
                for (size_t k = 1; k < len; k++) {
                        unsigned char cc = (unsigned char) s[i + k];
                        if ((cc & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (cc & 0x3f);
                }
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += len;
        }
        return true;
}

static const char base64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const void *data, size_t size) {
        const unsigned char *p = data;
        char *s, *o;

        if (size > (SIZE_MAX - 1) / 4 * 3 - 3)
                return NULL;
        s = o = malloc((size + 2) / 3 * 4 + 1);
        if (!s)
                return NULL;
        for (size_t i = 0; i < size; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16;
                if (i + 1 < size)
                        v |= (uint32_t) p[i + 1] << 8;
                if (i + 2 < size)
                        v |= p[i + 2];
                *o++ = base64_chars[(v >> 18) & 63];
                *o++ = base64_chars[(v >> 12) & 63];
                *o++ = i + 1 < size ? base64_chars[(v >> 6) & 63] : '=';
                *o++ = i + 2 < size ? base64_chars[v & 63] : '=';
        }
        *o = 0;
        return s;
}

static int base64_value(char c) {
        const char *p = c ? strchr(base64_chars, c) : NULL;
        return p ? (int) (p - base64_chars) : -1;
}

/* Standard alphabet, padding required, nothing else allowed (not even whitespace): we
 * only ever read what we wrote. The result is NUL-terminated. */
static int base64_decode(const char *s, size_t n, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;

        if (n % 4 != 0)
                return -EINVAL;
        buf = malloc(n / 4 * 3 + 1);
        if (!buf)
                return -ENOMEM;
        for (size_t i = 0; i < n; i += 4) {
                bool last = i + 4 == n;
                int a = base64_value(s[i]), b = base64_value(s[i + 1]), c, d;

                if (a < 0 || b < 0)
                        return -EINVAL;
                if (last && s[i + 2] == '=') {
                        /* One byte: the low 4 bits of b must be zero. */
                        if (s[i + 3] != '=' || (b & 15) != 0)
                                return -EINVAL;
                        buf[size++] = (char) ((a << 2) | (b >> 4));
                        break;
                }
                c = base64_value(s[i + 2]);
                if (c < 0)
                        return -EINVAL;
                if (last && s[i + 3] == '=') {
                        if ((c & 3) != 0)
                                return -EINVAL;
                        buf[size++] = (char) ((a << 2) | (b >> 4));
                        buf[size++] = (char) (((b & 15) << 4) | (c >> 2));
                        break;
                }
                d = base64_value(s[i + 3]);
                if (d < 0)
                        return -EINVAL;
                buf[size++] = (char) ((a << 2) | (b >> 4));
                buf[size++] = (char) (((b & 15) << 4) | (c >> 2));
                buf[size++] = (char) (((c & 3) << 6) | d);
        }
        buf[size] = 0;
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

/* ---- entry file format ---- */

int outbox_entry_format(const OutboxEntry *e, char **ret, size_t *ret_size) {
        _cleanup_json_ JsonValue *v = NULL;
        _cleanup_free_ char *text = NULL;
        const char *sink;
        size_t len;
        char *t;
        int r;

        sink = outbox_sink_to_string(e->sink);
        if (!sink || isempty(e->task_id) || isempty(e->kind) || (!e->body && e->body_size > 0))
                return -EINVAL;
        if (e->sink == OUTBOX_BUS && !e->exchange)
                return -EINVAL;

        v = json_new_object();
        if (!v)
                return -ENOMEM;
        r = json_object_set(v, "seq", json_new_uint64(e->seq));
        if (r >= 0)
                r = json_object_set_string(v, "sink", sink);
        if (r >= 0)
                r = json_object_set_string(v, "task", e->task_id);
        if (r >= 0)
                r = json_object_set_string(v, "kind", e->kind);
        if (r >= 0 && e->sink == OUTBOX_BUS) {
                r = json_object_set_string(v, "exchange", e->exchange);
                if (r >= 0)
                        r = json_object_set_string(v, "routingKey", strempty(e->routing_key));
        }
        if (r < 0)
                return r;
        if (body_is_text(e->body ?: "", e->body_size))
                r = json_object_set(v, "body", json_new_stringn(e->body ?: "", e->body_size));
        else {
                _cleanup_free_ char *b64 = base64_encode(e->body, e->body_size);
                r = json_object_set(v, "bodyBase64", b64 ? json_new_string(b64) : NULL);
        }
        if (r < 0)
                return r;

        r = json_format(v, false, &text, &len);
        if (r < 0)
                return r;
        if (len + 1 > OUTBOX_ENTRY_SIZE_MAX)
                return -EFBIG;
        t = realloc(text, len + 2);
        if (!t)
                return -ENOMEM;
        text = t;
        text[len++] = '\n';
        text[len] = 0;
        *ret = TAKE_PTR(text);
        if (ret_size)
                *ret_size = len;
        return 0;
}

/* Whether a parsed string holds a NUL (which json_string() would silently cut off):
 * json.c writes a NUL as the escape \u0000 and nothing else as that escape. */
static int string_has_nul(const JsonValue *s) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r;

        r = json_format(s, false, &text, &len);
        if (r < 0)
                return r;
        for (size_t i = 0; i + 1 < len; i++)
                if (text[i] == '\\') {
                        if (startswith(text + i + 1, "u0000"))
                                return 1;
                        i++; /* skip the escaped character, so \\u0000 is not taken for one */
                }
        return 0;
}

static int parse_string(const JsonValue *v, const char *key, bool may_be_empty, bool check_nul, char **ret) {
        const JsonValue *m = json_get(v, key);
        const char *s = json_string(m);
        char *c;

        if (!s || (!may_be_empty && !s[0]))
                return -EBADMSG;
        if (check_nul) {
                int r = string_has_nul(m);
                if (r < 0)
                        return r;
                if (r > 0)
                        return -EBADMSG;
        }
        c = strdup(s);
        if (!c)
                return -ENOMEM;
        *ret = c;
        return 0;
}

int outbox_entry_parse(const char *data, size_t size, OutboxEntry **ret) {
        _cleanup_(outbox_entry_freep) OutboxEntry *e = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        const JsonValue *body, *body64;
        bool check_nul;
        int r, sink;

        r = json_parse(data, size, OUTBOX_ENTRY_DEPTH_MAX, &v, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !json_is_object(v))
                return -EBADMSG;
        /* A NUL can only come from a \u0000 escape: look closer only when there is one. */
        check_nul = memmem(data, size, "\\u0000", 6);

        e = calloc(1, sizeof(OutboxEntry));
        if (!e)
                return -ENOMEM;
        if (json_uint64(json_get(v, "seq"), &e->seq) < 0 || e->seq == 0 || e->seq > SEQ_MAX)
                return -EBADMSG;
        sink = sink_from_string(json_get_string(v, "sink"));
        if (sink < 0)
                return -EBADMSG;
        e->sink = (OutboxSink) sink;
        r = parse_string(v, "task", false, check_nul, &e->task_id);
        if (r < 0)
                return r;
        r = parse_string(v, "kind", false, check_nul, &e->kind);
        if (r < 0)
                return r;
        if (e->sink == OUTBOX_BUS) {
                r = parse_string(v, "exchange", true, check_nul, &e->exchange);
                if (r < 0)
                        return r;
                r = parse_string(v, "routingKey", true, check_nul, &e->routing_key);
                if (r < 0)
                        return r;
        } else if (json_get(v, "exchange") || json_get(v, "routingKey"))
                return -EBADMSG;

        body = json_get(v, "body");
        body64 = json_get(v, "bodyBase64");
        if (!!body == !!body64)
                return -EBADMSG;
        if (body) {
                r = parse_string(v, "body", true, check_nul, &e->body);
                if (r < 0)
                        return r;
                e->body_size = strlen(e->body);
        } else {
                const char *s = json_string(body64);
                if (!s)
                        return -EBADMSG;
                r = base64_decode(s, strlen(s), &e->body, &e->body_size);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return -EBADMSG;
        }
        *ret = TAKE_PTR(e);
        return 0;
}

/* ---- queues ---- */

static OutboxEntry *queue_at(const Queue *q, size_t i) {
        return i < q->n ? q->items[q->head + i] : NULL;
}

/* Makes room for one more entry at the tail. */
static int queue_reserve(Queue *q) {
        OutboxEntry **p;
        size_t na;

        if (q->head + q->n < q->allocated)
                return 0;
        if (q->head > 0 && q->head >= q->n) {
                /* At least half of the array is dead space left by removals from the
                 * front: move the live part down. Paid for by those removals. */
                memmove(q->items, q->items + q->head, q->n * sizeof(OutboxEntry *));
                q->head = 0;
                return 0;
        }
        na = MAX(q->allocated * 2, (size_t) 16);
        p = reallocarray(q->items, na, sizeof(OutboxEntry *));
        if (!p)
                return -ENOMEM;
        q->items = p;
        q->allocated = na;
        return 0;
}

static void queue_push(Queue *q, OutboxEntry *e) {
        /* Only after queue_reserve(). */
        q->items[q->head + q->n++] = e;
}

static void queue_remove_at(Queue *q, size_t i) {
        if (i < q->n / 2) {
                /* Shift the shorter side: the front moves up one. */
                memmove(q->items + q->head + 1, q->items + q->head, i * sizeof(OutboxEntry *));
                q->head++;
        } else
                memmove(q->items + q->head + i, q->items + q->head + i + 1, (q->n - i - 1) * sizeof(OutboxEntry *));
        q->n--;
        if (q->n == 0)
                q->head = 0;
}

static bool queue_find(const Queue *q, uint64_t seq, size_t *ret_index) {
        size_t lo = 0, hi = q->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                uint64_t s = q->items[q->head + mid]->seq;

                if (s == seq) {
                        *ret_index = mid;
                        return true;
                }
                if (s < seq)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return false;
}

/* ---- task index ---- */

static uint64_t hash_string(const char *s) {
        uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */

        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

static TaskIndex *task_index_free(TaskIndex *t) {
        if (!t)
                return NULL;
        free(t->task_id);
        free(t);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(TaskIndex *, task_index_free);

static TaskIndex *task_index_get(Outbox *o, const char *task_id) {
        if (o->n_buckets == 0)
                return NULL;
        for (TaskIndex *t = o->buckets[hash_string(task_id) % o->n_buckets]; t; t = t->next)
                if (streq(t->task_id, task_id))
                        return t;
        return NULL;
}

/* Never fails: when the table cannot grow, the chains just get longer. The first call
 * must have had task_index_prepare() succeed. */
static void task_index_add(Outbox *o, TaskIndex *t) {
        size_t b;

        if (o->n_tasks >= o->n_buckets) {
                size_t nn = o->n_buckets * 2;
                TaskIndex **nb = calloc(nn, sizeof(TaskIndex *));

                if (nb) {
                        for (size_t i = 0; i < o->n_buckets; i++)
                                while (o->buckets[i]) {
                                        TaskIndex *x = o->buckets[i];
                                        o->buckets[i] = x->next;
                                        b = hash_string(x->task_id) % nn;
                                        x->next = nb[b];
                                        nb[b] = x;
                                }
                        free(o->buckets);
                        o->buckets = nb;
                        o->n_buckets = nn;
                }
        }
        b = hash_string(t->task_id) % o->n_buckets;
        t->next = o->buckets[b];
        o->buckets[b] = t;
        o->n_tasks++;
}

static int task_index_prepare(Outbox *o) {
        if (o->buckets)
                return 0;
        o->buckets = calloc(TASK_BUCKETS_MIN, sizeof(TaskIndex *));
        if (!o->buckets)
                return -ENOMEM;
        o->n_buckets = TASK_BUCKETS_MIN;
        return 0;
}

static void task_index_remove(Outbox *o, TaskIndex *t) {
        for (TaskIndex **p = &o->buckets[hash_string(t->task_id) % o->n_buckets]; *p; p = &(*p)->next)
                if (*p == t) {
                        *p = t->next;
                        o->n_tasks--;
                        task_index_free(t);
                        return;
                }
}

/* Allocates what linking e needs, so that outbox_link() cannot fail afterwards. */
static int outbox_prepare_link(Outbox *o, const OutboxEntry *e, TaskIndex **ret_new) {
        _cleanup_(task_index_freep) TaskIndex *t = NULL;
        int r;

        r = queue_reserve(&o->queues[e->sink]);
        if (r < 0)
                return r;
        r = task_index_prepare(o);
        if (r < 0)
                return r;
        if (!task_index_get(o, e->task_id)) {
                t = calloc(1, sizeof(TaskIndex));
                if (!t)
                        return -ENOMEM;
                t->task_id = strdup(e->task_id);
                if (!t->task_id)
                        return -ENOMEM;
        }
        *ret_new = TAKE_PTR(t);
        return 0;
}

/* Appends e (the newest seq so far) to its sink's queue; takes ownership of e and of
 * new_task. */
static void outbox_link(Outbox *o, OutboxEntry *e, TaskIndex *new_task) {
        TaskIndex *t = new_task;

        if (t)
                task_index_add(o, t);
        else
                t = task_index_get(o, e->task_id);
        queue_push(&o->queues[e->sink], e);
        t->n_entries[e->sink]++;
        t->newest[e->sink] = e;
}

/* ---- open, load, free ---- */

Outbox *outbox_free(Outbox *o) {
        if (!o)
                return NULL;
        for (size_t s = 0; s < _OUTBOX_SINK_MAX; s++) {
                Queue *q = &o->queues[s];
                for (size_t i = 0; i < q->n; i++)
                        outbox_entry_free(q->items[q->head + i]);
                free(q->items);
        }
        for (size_t i = 0; i < o->n_buckets; i++)
                while (o->buckets[i]) {
                        TaskIndex *t = o->buckets[i];
                        o->buckets[i] = t->next;
                        task_index_free(t);
                }
        free(o->buckets);
        free(o->dir);
        free(o->corrupt_dir);
        free(o->reserved_path);
        free(o);
        return NULL;
}

static int entry_path(Outbox *o, uint64_t seq, char **ret) {
        return asprintf(ret, "%s/%0*" PRIu64 ".json", o->dir, (int) SEQ_DIGITS, seq) < 0 ? -ENOMEM : 0;
}

/* "<20 digits>.json" → seq. */
static bool parse_entry_name(const char *name, uint64_t *ret) {
        uint64_t seq = 0;

        for (size_t i = 0; i < SEQ_DIGITS; i++) {
                if (name[i] < '0' || name[i] > '9')
                        return false;
                if (seq > (UINT64_MAX - 9) / 10)
                        return false;
                seq = seq * 10 + (uint64_t) (name[i] - '0');
        }
        if (!streq(name + SEQ_DIGITS, ".json"))
                return false;
        *ret = seq;
        return true;
}

/* What write_file_atomic() leaves behind when interrupted: "<name>.tmp.<pid>". */
static bool is_temporary_name(const char *name) {
        const char *p = strstr(name, ".tmp."), *q;

        if (!p)
                return false;
        q = p + strlen(".tmp.");
        if (!*q)
                return false;
        for (; *q; q++)
                if (*q < '0' || *q > '9')
                        return false;
        return true;
}

static bool ends_with(const char *s, const char *suffix) {
        size_t ls = strlen(s), lx = strlen(suffix);
        return ls >= lx && streq(s + ls - lx, suffix);
}

static uint64_t read_reserved_seq(Outbox *o) {
        _cleanup_free_ char *text = NULL;
        unsigned long long v;
        char *end;
        int r;

        r = read_full_file(o->reserved_path, RESERVED_SEQ_SIZE_MAX, &text, NULL);
        if (r < 0) {
                if (r != -ENOENT)
                        log_debug_errno(r, "Failed to read %s, ignoring: %m", o->reserved_path);
                return 0;
        }
        errno = 0;
        v = strtoull(text, &end, 10);
        if (errno != 0 || end == text || text[0] < '0' || text[0] > '9' || (*end && !streq(end, "\n")) || v > SEQ_MAX) {
                /* Rewritten at the next append; the entries still give a lower bound. */
                log_debug("Ignoring invalid %s.", o->reserved_path);
                return 0;
        }
        return (uint64_t) v;
}

static int write_reserved_seq(Outbox *o, uint64_t seq) {
        char text[32];
        int n;

        n = snprintf(text, sizeof(text), "%" PRIu64 "\n", seq);
        return write_file_atomic(o->reserved_path, text, (size_t) n, 0600);
}

typedef struct EntryList {
        OutboxEntry **items;
        size_t n;
        size_t allocated;
} EntryList;

static void entry_list_done(EntryList *l) {
        for (size_t i = 0; i < l->n; i++)
                outbox_entry_free(l->items[i]);
        free(l->items);
}

static int entry_list_push(EntryList *l, OutboxEntry *e) {
        if (l->n == l->allocated) {
                size_t na = MAX(l->allocated * 2, (size_t) 64);
                OutboxEntry **p = reallocarray(l->items, na, sizeof(OutboxEntry *));
                if (!p) {
                        outbox_entry_free(e);
                        return -ENOMEM;
                }
                l->items = p;
                l->allocated = na;
        }
        l->items[l->n++] = e;
        return 0;
}

static int entry_compare(const void *a, const void *b) {
        const OutboxEntry *x = *(OutboxEntry *const *) a, *y = *(OutboxEntry *const *) b;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void move_to_corrupt(int dfd, int corrupt_fd, const char *name, int error) {
        log_debug_errno(error, "Outbox entry %s is unusable, moving it to corrupt/: %m", name);
        if (corrupt_fd < 0 || renameat(dfd, name, corrupt_fd, name) < 0)
                log_debug_errno(errno, "Failed to move outbox entry %s to corrupt/: %m", name);
}

static int outbox_load(Outbox *o, unsigned *ret_n_corrupt) {
        _cleanup_(entry_list_done) EntryList list = {};
        _cleanup_close_ int corrupt_fd = -EBADF;
        unsigned n_corrupt = 0;
        uint64_t max_seq = 0, reserved;
        struct dirent *de;
        DIR *d;
        int r = 0;

        corrupt_fd = open(o->corrupt_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (corrupt_fd < 0)
                log_debug_errno(errno, "Failed to open %s: %m", o->corrupt_dir);
        r = dir_open(o->dir, &d);
        if (r < 0)
                return r;

        while ((de = readdir(d))) {
                _cleanup_(outbox_entry_freep) OutboxEntry *e = NULL;
                _cleanup_free_ char *path = NULL, *text = NULL;
                uint64_t seq;
                size_t size;
                struct stat st;
                int q;

                if (de->d_name[0] == '.')
                        continue;
                if (is_temporary_name(de->d_name)) {
                        /* An atomic write that was interrupted before its rename: the
                         * write never happened, and the old file (if any) is intact. */
                        if (unlinkat(dirfd(d), de->d_name, 0) < 0)
                                log_debug_errno(errno, "Failed to remove %s: %m", de->d_name);
                        continue;
                }
                if (!ends_with(de->d_name, ".json"))
                        continue; /* reserved-seq, corrupt/, anything an operator left */
                if (de->d_type == DT_DIR ||
                    (de->d_type == DT_UNKNOWN && fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) >= 0 &&
                     S_ISDIR(st.st_mode)))
                        continue;

                if (!parse_entry_name(de->d_name, &seq)) {
                        q = -EBADMSG;
                        goto corrupt;
                }
                path = path_join(o->dir, de->d_name);
                if (!path) {
                        r = -ENOMEM;
                        break;
                }
                q = read_full_file(path, OUTBOX_ENTRY_SIZE_MAX, &text, &size);
                if (q == -ENOMEM) {
                        r = q;
                        break;
                }
                if (q < 0)
                        goto corrupt;
                q = outbox_entry_parse(text, size, &e);
                if (q == -ENOMEM) {
                        r = q;
                        break;
                }
                if (q < 0)
                        goto corrupt;
                if (e->seq != seq) {
                        q = -EBADMSG;
                        goto corrupt;
                }
                if (fstatat(dirfd(d), de->d_name, &st, 0) >= 0)
                        e->queued_usec = (uint64_t) st.st_mtim.tv_sec * USEC_PER_SEC +
                                         (uint64_t) st.st_mtim.tv_nsec / NSEC_PER_USEC;
                else
                        e->queued_usec = now_usec(CLOCK_REALTIME);
                max_seq = MAX(max_seq, seq);
                r = entry_list_push(&list, TAKE_PTR(e));
                if (r < 0)
                        break;
                continue;
        corrupt:
                move_to_corrupt(dirfd(d), corrupt_fd, de->d_name, q);
                n_corrupt++;
        }
        closedir(d);
        if (r < 0)
                return r;

        /* readdir() order is arbitrary; a sink's queue must be in seq order. */
        if (list.n > 0)
                qsort(list.items, list.n, sizeof(OutboxEntry *), entry_compare);
        for (size_t i = 0; i < list.n; i++) {
                _cleanup_(task_index_freep) TaskIndex *t = NULL;

                r = outbox_prepare_link(o, list.items[i], &t);
                if (r < 0)
                        return r;
                outbox_link(o, TAKE_PTR(list.items[i]), TAKE_PTR(t));
        }

        reserved = read_reserved_seq(o);
        o->reserved_seq = reserved;
        o->next_seq = MAX(max_seq, reserved) + 1;
        if (ret_n_corrupt)
                *ret_n_corrupt = n_corrupt;
        return 0;
}

int outbox_open(const char *dir, Outbox **ret, unsigned *ret_n_corrupt) {
        _cleanup_(outbox_freep) Outbox *o = NULL;
        unsigned n_corrupt = 0;
        int r;

        if (isempty(dir) || !ret)
                return -EINVAL;
        o = calloc(1, sizeof(Outbox));
        if (!o)
                return -ENOMEM;
        o->dir = strdup(dir);
        o->corrupt_dir = path_join(dir, "corrupt");
        o->reserved_path = path_join(dir, RESERVED_SEQ_NAME);
        if (!o->dir || !o->corrupt_dir || !o->reserved_path)
                return -ENOMEM;

        r = mkdir_p(o->corrupt_dir, 0700);
        if (r < 0)
                return r;
        /* The directory entry of dir itself must survive a crash too, or so would none
         * of the entries written into it. */
        r = fsync_directory_of(o->dir);
        if (r < 0)
                return r;
        r = outbox_load(o, &n_corrupt);
        if (r < 0)
                return r;
        if (ret_n_corrupt)
                *ret_n_corrupt = n_corrupt;
        *ret = TAKE_PTR(o);
        return 0;
}

/* ---- append, remove, queries ---- */

static int write_entry(Outbox *o, const OutboxEntry *e) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t size;
        int r;

        r = outbox_entry_format(e, &text, &size);
        if (r < 0)
                return r;
        r = entry_path(o, e->seq, &path);
        if (r < 0)
                return r;
        return write_file_atomic(path, text, size, 0600);
}

static int coalesce_into(Outbox *o, OutboxEntry *e, const char *body, size_t body_size) {
        _cleanup_free_ char *new_body = NULL;
        OutboxEntry copy;
        int r;

        new_body = memdup_nul(body, body_size);
        if (!new_body)
                return -ENOMEM;
        copy = *e;
        copy.body = new_body;
        copy.body_size = body_size;
        /* On failure the file holds the old body or (if only the directory fsync failed)
         * the new one; either is a message the caller meant to send. */
        r = write_entry(o, &copy);
        if (r < 0)
                return r;
        free(e->body);
        e->body = TAKE_PTR(new_body);
        e->body_size = body_size;
        return 0;
}

int outbox_append(Outbox *o,
                  OutboxSink sink,
                  const char *task_id,
                  const char *kind,
                  const char *exchange,
                  const char *routing_key,
                  const char *body,
                  size_t body_size,
                  bool coalesce,
                  uint64_t *ret_seq) {
        _cleanup_(outbox_entry_freep) OutboxEntry *e = NULL;
        _cleanup_(task_index_freep) TaskIndex *new_task = NULL;
        TaskIndex *t;
        int r;

        if (!o || (unsigned) sink >= _OUTBOX_SINK_MAX || isempty(task_id) || isempty(kind) ||
            (!body && body_size > 0) || (sink == OUTBOX_BUS && !exchange))
                return -EINVAL;
        if (sink == OUTBOX_BUS)
                routing_key = strempty(routing_key);
        else
                exchange = routing_key = NULL;

        t = task_index_get(o, task_id);
        if (coalesce && t && t->newest[sink]) {
                OutboxEntry *last = t->newest[sink];

                /* Same destination too: a body is never moved to another exchange. */
                if (!last->in_flight && streq(last->kind, kind) && streq_ptr(last->exchange, exchange) &&
                    streq_ptr(last->routing_key, routing_key)) {
                        r = coalesce_into(o, last, body, body_size);
                        if (r < 0)
                                return r;
                        if (ret_seq)
                                *ret_seq = last->seq;
                        return 0;
                }
        }

        if (o->next_seq > SEQ_MAX)
                return -ERANGE;
        e = calloc(1, sizeof(OutboxEntry));
        if (!e)
                return -ENOMEM;
        e->seq = o->next_seq;
        e->sink = sink;
        e->queued_usec = now_usec(CLOCK_REALTIME);
        e->task_id = strdup(task_id);
        e->kind = strdup(kind);
        e->exchange = exchange ? strdup(exchange) : NULL;
        e->routing_key = routing_key ? strdup(routing_key) : NULL;
        e->body = memdup_nul(body ?: "", body_size);
        e->body_size = body_size;
        if (!e->task_id || !e->kind || (exchange && !e->exchange) || (routing_key && !e->routing_key) || !e->body)
                return -ENOMEM;
        r = outbox_prepare_link(o, e, &new_task);
        if (r < 0)
                return r;

        if (e->seq > o->reserved_seq) {
                /* Reserve a block of seqs durably before the first of them is used. */
                r = write_reserved_seq(o, e->seq + SEQ_RESERVE_BLOCK - 1);
                if (r < 0)
                        return r;
                o->reserved_seq = e->seq + SEQ_RESERVE_BLOCK - 1;
        }

        r = write_entry(o, e);
        o->next_seq++; /* burnt even on failure: its file may exist until unlinked below */
        if (r < 0) {
                _cleanup_free_ char *path = NULL;

                /* Maybe only the directory fsync failed after the rename: the caller is
                 * told the entry is not stored, so it must not come back at the next
                 * start. */
                if (entry_path(o, e->seq, &path) >= 0)
                        (void) unlink(path);
                return r;
        }
        if (ret_seq)
                *ret_seq = e->seq;
        outbox_link(o, TAKE_PTR(e), TAKE_PTR(new_task));
        return 0;
}

OutboxEntry *outbox_get(Outbox *o, OutboxSink sink, size_t i) {
        if (!o || (unsigned) sink >= _OUTBOX_SINK_MAX)
                return NULL;
        return queue_at(&o->queues[sink], i);
}

size_t outbox_count(Outbox *o, OutboxSink sink) {
        if (!o || (unsigned) sink >= _OUTBOX_SINK_MAX)
                return 0;
        return o->queues[sink].n;
}

uint64_t outbox_oldest_usec(Outbox *o, OutboxSink sink) {
        OutboxEntry *e = outbox_get(o, sink, 0);

        return e ? e->queued_usec : 0;
}

static bool outbox_locate(Outbox *o, uint64_t seq, OutboxSink *ret_sink, size_t *ret_index) {
        for (size_t s = 0; s < _OUTBOX_SINK_MAX; s++)
                if (queue_find(&o->queues[s], seq, ret_index)) {
                        *ret_sink = (OutboxSink) s;
                        return true;
                }
        return false;
}

OutboxEntry *outbox_find(Outbox *o, uint64_t seq) {
        OutboxSink sink;
        size_t i;

        if (!o || !outbox_locate(o, seq, &sink, &i))
                return NULL;
        return queue_at(&o->queues[sink], i);
}

bool outbox_has_task(Outbox *o, const char *task_id) {
        return o && task_id && task_index_get(o, task_id);
}

int outbox_remove(Outbox *o, uint64_t seq) {
        _cleanup_free_ char *path = NULL;
        OutboxEntry *e;
        OutboxSink sink;
        TaskIndex *t;
        Queue *q;
        size_t i;
        int r;

        if (!o)
                return -EINVAL;
        if (!outbox_locate(o, seq, &sink, &i))
                return -ENOENT;
        q = &o->queues[sink];
        e = queue_at(q, i);

        r = entry_path(o, seq, &path);
        if (r < 0)
                return r;
        /* ENOENT: removed by hand, or by an earlier call whose directory fsync failed. */
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        r = fsync_directory_of(path);
        if (r < 0)
                return r; /* still pending in memory: a retry unlinks nothing and syncs again */

        queue_remove_at(q, i);
        t = task_index_get(o, e->task_id);
        if (t) {
                t->n_entries[sink]--;
                if (t->newest[sink] == e) {
                        t->newest[sink] = NULL;
                        /* Only when an entry is removed out of order: it was the task's
                         * newest but older ones remain. */
                        for (size_t k = i; t->n_entries[sink] > 0 && k > 0; k--) {
                                OutboxEntry *x = queue_at(q, k - 1);
                                if (streq(x->task_id, e->task_id)) {
                                        t->newest[sink] = x;
                                        break;
                                }
                        }
                }
                bool empty = true;
                for (size_t s = 0; s < _OUTBOX_SINK_MAX; s++)
                        if (t->n_entries[s] > 0)
                                empty = false;
                if (empty)
                        task_index_remove(o, t);
        }
        outbox_entry_free(e);
        return 0;
}

void outbox_reset_in_flight(Outbox *o, OutboxSink sink) {
        Queue *q;

        if (!o || (unsigned) sink >= _OUTBOX_SINK_MAX)
                return;
        q = &o->queues[sink];
        for (size_t i = 0; i < q->n; i++)
                q->items[q->head + i]->in_flight = false;
}
