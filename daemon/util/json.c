/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The JSON tree and the only use of yajl in the project: yajl's callback parser builds
 * the tree (with a depth limit; the caller limits size), yajl_gen formats it. Numbers
 * are kept as their source text so 64-bit integers round-trip exactly. */

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "json.h"

struct JsonValue {
        JsonType type;
        union {
                bool boolean;
                struct {
                        char *str; /* also the text of a number */
                        size_t len;
                };
                struct {
                        JsonValue **items;
                        char **keys; /* objects only */
                        size_t n, allocated;
                };
        };
};

static JsonValue *json_alloc(JsonType t) {
        JsonValue *v = calloc(1, sizeof(JsonValue));
        if (v)
                v->type = t;
        return v;
}

JsonValue *json_free(JsonValue *v) {
        if (!v)
                return NULL;
        switch (v->type) {
        case JSON_STRING:
        case JSON_NUMBER:
                free(v->str);
                break;
        case JSON_ARRAY:
        case JSON_OBJECT:
                for (size_t i = 0; i < v->n; i++) {
                        json_free(v->items[i]);
                        if (v->keys)
                                free(v->keys[i]);
                }
                free(v->items);
                free(v->keys);
                break;
        default:
                break;
        }
        free(v);
        return NULL;
}

JsonType json_type(const JsonValue *v) {
        return v ? v->type : JSON_NULL;
}

const char *json_type_to_string(JsonType t) {
        static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
        return (unsigned) t < ELEMENTSOF(names) ? names[t] : "invalid";
}

/* Appends a member (key may be NULL for arrays). Takes ownership of item and key. */
static int container_add(JsonValue *c, char *key, JsonValue *item) {
        if (c->n >= c->allocated) {
                size_t na = MAX(c->allocated * 2, (size_t) 4);
                JsonValue **ni = reallocarray(c->items, na, sizeof(JsonValue *));
                if (!ni)
                        goto oom;
                c->items = ni;
                if (c->type == JSON_OBJECT) {
                        char **nk = reallocarray(c->keys, na, sizeof(char *));
                        if (!nk)
                                goto oom;
                        c->keys = nk;
                }
                c->allocated = na;
        }
        c->items[c->n] = item;
        if (c->type == JSON_OBJECT)
                c->keys[c->n] = key;
        c->n++;
        return 0;
oom:
        json_free(item);
        free(key);
        return -ENOMEM;
}

/* ---- parsing ---- */

typedef struct ParseState {
        JsonValue *root;
        JsonValue **stack; /* open containers */
        size_t depth, max_depth;
        char *pending_key; /* key for the next value inside an object */
        int error;
        /* Streaming only: called when a top-level value is complete (s->root holds it);
         * returns 1 to go on, 0 (with s->error set) to stop. */
        int (*value_done)(struct ParseState *s);
} ParseState;

static int parse_add(ParseState *s, JsonValue *v) {
        JsonValue *top;
        int r;

        if (!v) {
                s->error = -ENOMEM;
                return 0;
        }
        if (s->depth == 0) {
                if (s->root) { /* cannot happen with yajl, but be safe */
                        json_free(v);
                        s->error = -EINVAL;
                        return 0;
                }
                s->root = v;
                /* A scalar is complete at once; a container when it is closed. */
                if (s->value_done && v->type != JSON_ARRAY && v->type != JSON_OBJECT)
                        return s->value_done(s);
                return 1;
        }
        top = s->stack[s->depth - 1];
        r = container_add(top, top->type == JSON_OBJECT ? TAKE_PTR(s->pending_key) : NULL, v);
        if (r < 0) {
                s->error = r;
                return 0;
        }
        return 1;
}

static int cb_null(void *ctx) {
        return parse_add(ctx, json_new_null());
}
static int cb_boolean(void *ctx, int b) {
        return parse_add(ctx, json_new_boolean(b));
}
static int cb_number(void *ctx, const char *s, size_t l) {
        JsonValue *v = json_alloc(JSON_NUMBER);
        if (v) {
                v->str = strndup(s, l);
                v->len = l;
                if (!v->str)
                        v = mfree(v);
        }
        return parse_add(ctx, v);
}
static int cb_string(void *ctx, const unsigned char *s, size_t l) {
        return parse_add(ctx, json_new_stringn((const char *) s, l));
}
static int push_container(ParseState *s, JsonType t) {
        JsonValue *v = json_alloc(t);

        if (s->depth >= s->max_depth) {
                json_free(v);
                s->error = -E2BIG;
                return 0;
        }
        if (!parse_add(s, v))
                return 0;
        s->stack[s->depth++] = v;
        return 1;
}
static int cb_start_map(void *ctx) {
        return push_container(ctx, JSON_OBJECT);
}
static int cb_map_key(void *ctx, const unsigned char *k, size_t l) {
        ParseState *s = ctx;
        /* Keys are kept as C strings: "a\u0000b" would become "a" and could pose as
         * another member. */
        if (memchr(k, 0, l)) {
                s->error = -EILSEQ;
                return 0;
        }
        free(s->pending_key);
        s->pending_key = strndup((const char *) k, l);
        if (!s->pending_key) {
                s->error = -ENOMEM;
                return 0;
        }
        return 1;
}
static int cb_end(void *ctx) {
        ParseState *s = ctx;
        if (s->depth > 0) {
                s->depth--;
                if (s->depth == 0 && s->value_done)
                        return s->value_done(s);
        }
        return 1;
}
static int cb_start_array(void *ctx) {
        return push_container(ctx, JSON_ARRAY);
}

static const yajl_callbacks parse_callbacks = {
        .yajl_null = cb_null,
        .yajl_boolean = cb_boolean,
        .yajl_number = cb_number,
        .yajl_string = cb_string,
        .yajl_start_map = cb_start_map,
        .yajl_map_key = cb_map_key,
        .yajl_end_map = cb_end,
        .yajl_start_array = cb_start_array,
        .yajl_end_array = cb_end,
};

static void yajl_handle_freep(yajl_handle *h) {
        if (*h)
                yajl_free(*h);
}

int json_parse(const char *data, size_t size, unsigned max_depth, JsonValue **ret, char **ret_error) {
        _cleanup_(yajl_handle_freep) yajl_handle h = NULL;
        _cleanup_free_ JsonValue **stack = NULL;
        ParseState s = {};
        yajl_status st;

        if (max_depth == 0)
                max_depth = JSON_DEPTH_MAX_DEFAULT;
        stack = calloc(max_depth, sizeof(JsonValue *));
        if (!stack)
                return -ENOMEM;
        s.stack = stack;
        s.max_depth = max_depth;

        h = yajl_alloc(&parse_callbacks, NULL, &s);
        if (!h)
                return -ENOMEM;
        /* Strict RFC 8259: no comments, valid UTF-8, one document. */
        yajl_config(h, yajl_allow_comments, 0);
        yajl_config(h, yajl_dont_validate_strings, 0);

        st = yajl_parse(h, (const unsigned char *) data, size);
        if (st == yajl_status_ok)
                st = yajl_complete_parse(h);
        if (st != yajl_status_ok || s.error < 0 || !s.root) {
                int r = s.error < 0 ? s.error : -EINVAL;

                if (ret_error) {
                        if (r == -E2BIG)
                                *ret_error = strdup("nesting too deep");
                        else if (r == -EILSEQ)
                                *ret_error = strdup("NUL byte in an object key");
                        else if (r == -ENOMEM)
                                *ret_error = strdup("out of memory");
                        else if (st == yajl_status_error) {
                                unsigned char *e = yajl_get_error(h, 0, NULL, 0);
                                size_t off = yajl_get_bytes_consumed(h);
                                char *m = NULL;
                                if (asprintf(&m, "%s at byte %zu", e ? (const char *) e : "parse error", off) < 0)
                                        m = NULL;
                                if (e)
                                        yajl_free_error(h, e);
                                *ret_error = m;
                        } else
                                *ret_error = strdup("empty or incomplete document");
                }
                free(s.pending_key);
                json_free(s.root);
                return r == -EILSEQ ? -EINVAL : r;
        }
        free(s.pending_key);
        *ret = s.root;
        return 0;
}

/* ---- streaming ---- */

static bool is_json_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

struct JsonStream {
        ParseState state; /* first member: the yajl callbacks see it as their ParseState */
        yajl_handle handle;
        JsonValue **stack;
        size_t max_value_size;
        /* Bytes of the current chunk before the end of the last complete value, and the
         * bytes of the unfinished value carried over from earlier chunks. */
        size_t chunk_mark, carried;
        bool dirty; /* non-whitespace seen since the end of the last complete value */
        /* Values completed during one yajl_parse() call, delivered after it returns. */
        JsonValue **done;
        size_t n_done, allocated_done;
        int error; /* sticky */
};

static int stream_value_done(ParseState *ps) {
        JsonStream *s = (JsonStream *) ps;
        size_t off = yajl_get_bytes_consumed(s->handle);

        /* yajl updates the consumed count token by token, so this is the end of the
         * value within the current chunk. */
        if (s->carried + (off - MIN(off, s->chunk_mark)) > s->max_value_size) {
                ps->error = -E2BIG;
                return 0;
        }
        s->chunk_mark = off;
        s->carried = 0;
        s->dirty = false;

        if (s->n_done >= s->allocated_done) {
                size_t na = MAX(s->allocated_done * 2, (size_t) 8);
                JsonValue **n = reallocarray(s->done, na, sizeof(JsonValue *));
                if (!n) {
                        ps->error = -ENOMEM;
                        return 0;
                }
                s->done = n;
                s->allocated_done = na;
        }
        s->done[s->n_done++] = TAKE_PTR(ps->root);
        return 1;
}

JsonStream *json_stream_new(size_t max_value_size, unsigned max_depth) {
        JsonStream *s = NULL;

        if (max_depth == 0)
                max_depth = JSON_DEPTH_MAX_DEFAULT;
        s = calloc(1, sizeof(JsonStream));
        if (!s)
                return NULL;
        s->max_value_size = max_value_size > 0 ? max_value_size : JSON_STREAM_VALUE_MAX_DEFAULT;
        s->stack = calloc(max_depth, sizeof(JsonValue *));
        if (!s->stack)
                return json_stream_free(s);
        s->state.stack = s->stack;
        s->state.max_depth = max_depth;
        s->state.value_done = stream_value_done;

        s->handle = yajl_alloc(&parse_callbacks, NULL, &s->state);
        if (!s->handle)
                return json_stream_free(s);
        yajl_config(s->handle, yajl_allow_comments, 0);
        yajl_config(s->handle, yajl_dont_validate_strings, 0);
        yajl_config(s->handle, yajl_allow_multiple_values, 1);
        return s;
}

static void stream_drop_done(JsonStream *s) {
        for (size_t i = 0; i < s->n_done; i++)
                json_free(s->done[i]);
        s->n_done = 0;
}

JsonStream *json_stream_free(JsonStream *s) {
        if (!s)
                return NULL;
        if (s->handle)
                yajl_free(s->handle);
        stream_drop_done(s);
        free(s->done);
        /* A value under construction hangs off root (the stack only borrows). */
        json_free(s->state.root);
        free(s->state.pending_key);
        free(s->stack);
        return mfree(s);
}

static int stream_deliver(JsonStream *s, json_stream_value_cb_t cb, void *userdata) {
        size_t i;
        int r = 0;

        for (i = 0; i < s->n_done; i++) {
                JsonValue *v = TAKE_PTR(s->done[i]);
                if (cb)
                        r = cb(v, userdata);
                else
                        json_free(v);
                if (r < 0) {
                        i++;
                        break;
                }
        }
        for (; i < s->n_done; i++)
                s->done[i] = json_free(s->done[i]);
        s->n_done = 0;
        return r;
}

static int stream_fail(JsonStream *s) {
        int r = s->state.error < 0 ? s->state.error : -EBADMSG;

        /* Depth is a limit like size; everything else yajl refuses is a bad message. */
        if (r == -EINVAL || r == -EILSEQ)
                r = -EBADMSG;
        s->error = r;
        return r;
}

int json_stream_feed(JsonStream *s, const void *data, size_t size, json_stream_value_cb_t cb, void *userdata) {
        yajl_status st;
        int r;

        if (!s || (!data && size > 0))
                return -EINVAL;
        if (s->error < 0)
                return s->error;
        if (size == 0)
                return 0;

        s->chunk_mark = 0;
        st = yajl_parse(s->handle, data, size);
        if (st == yajl_status_ok && s->state.error >= 0) {
                s->carried += size - MIN(size, s->chunk_mark);
                for (size_t i = s->chunk_mark; i < size && !s->dirty; i++)
                        s->dirty = !is_json_space(((const char *) data)[i]);
                /* Bounds what yajl buffers for an unfinished token or value. */
                if (s->carried > s->max_value_size)
                        s->state.error = -E2BIG;
        }

        /* Values completed before an error are still delivered. */
        r = stream_deliver(s, cb, userdata);
        if (st != yajl_status_ok || s->state.error < 0)
                return stream_fail(s);
        if (r < 0)
                s->error = r;
        return r;
}

int json_stream_finish(JsonStream *s, json_stream_value_cb_t cb, void *userdata) {
        yajl_status st;
        int r;

        if (!s)
                return -EINVAL;
        if (s->error < 0)
                return s->error;

        /* yajl calls an input of only whitespace a premature end; for a stream it is
         * simply the end. */
        if (!s->dirty) {
                s->error = -ESTALE;
                return 0;
        }
        s->chunk_mark = 0;
        st = yajl_complete_parse(s->handle);
        r = stream_deliver(s, cb, userdata);
        if (st != yajl_status_ok || s->state.error < 0)
                return stream_fail(s);
        /* Nothing more can be fed after yajl_complete_parse(). */
        s->error = r < 0 ? r : -ESTALE;
        return r;
}

/* ---- accessors ---- */

const char *json_string(const JsonValue *v) {
        return v && v->type == JSON_STRING ? v->str : NULL;
}

bool json_has_nul(const JsonValue *v) {
        if (!v)
                return false;
        if (v->type == JSON_STRING)
                return memchr(v->str, 0, v->len);
        if (v->type == JSON_ARRAY || v->type == JSON_OBJECT)
                for (size_t i = 0; i < v->n; i++)
                        if (json_has_nul(v->items[i]))
                                return true;
        return false;
}

int json_int64(const JsonValue *v, int64_t *ret) {
        char *end;
        long long l;

        if (!v || v->type != JSON_NUMBER || strpbrk(v->str, ".eE"))
                return -EINVAL;
        errno = 0;
        l = strtoll(v->str, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end)
                return -EINVAL;
        *ret = l;
        return 0;
}

int json_uint64(const JsonValue *v, uint64_t *ret) {
        char *end;
        unsigned long long l;

        if (!v || v->type != JSON_NUMBER || strpbrk(v->str, ".eE"))
                return -EINVAL;
        if (v->str[0] == '-')
                return -ERANGE;
        errno = 0;
        l = strtoull(v->str, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end)
                return -EINVAL;
        *ret = l;
        return 0;
}

int json_double(const JsonValue *v, double *ret) {
        char *end;
        double d;

        if (!v || v->type != JSON_NUMBER)
                return -EINVAL;
        errno = 0;
        d = strtod(v->str, &end);
        if (*end)
                return -EINVAL;
        if (errno == ERANGE && isinf(d))
                return -ERANGE;
        *ret = d;
        return 0;
}

int json_boolean(const JsonValue *v) {
        if (!v || v->type != JSON_BOOLEAN)
                return -EINVAL;
        return v->boolean;
}

size_t json_length(const JsonValue *v) {
        return v && (v->type == JSON_ARRAY || v->type == JSON_OBJECT) ? v->n : 0;
}

JsonValue *json_array_at(const JsonValue *v, size_t i) {
        return v && v->type == JSON_ARRAY && i < v->n ? v->items[i] : NULL;
}

const char *json_object_key_at(const JsonValue *v, size_t i) {
        return v && v->type == JSON_OBJECT && i < v->n ? v->keys[i] : NULL;
}

JsonValue *json_object_value_at(const JsonValue *v, size_t i) {
        return v && v->type == JSON_OBJECT && i < v->n ? v->items[i] : NULL;
}

static ssize_t object_find(const JsonValue *obj, const char *key) {
        if (!obj || obj->type != JSON_OBJECT)
                return -1;
        /* Last one wins on duplicate keys, as most parsers do. */
        for (size_t i = obj->n; i > 0; i--)
                if (streq(obj->keys[i - 1], key))
                        return (ssize_t) (i - 1);
        return -1;
}

JsonValue *json_get(const JsonValue *obj, const char *key) {
        ssize_t i = object_find(obj, key);
        return i < 0 ? NULL : obj->items[i];
}

const char *json_get_string(const JsonValue *obj, const char *key) {
        return json_string(json_get(obj, key));
}

JsonValue *json_get_path(const JsonValue *v, ...) {
        va_list ap;
        const char *k;

        va_start(ap, v);
        while (v && (k = va_arg(ap, const char *)))
                v = json_get(v, k);
        va_end(ap);
        return (JsonValue *) v;
}

/* ---- constructors ---- */

JsonValue *json_new_null(void) {
        return json_alloc(JSON_NULL);
}

JsonValue *json_new_boolean(bool b) {
        JsonValue *v = json_alloc(JSON_BOOLEAN);
        if (v)
                v->boolean = b;
        return v;
}

JsonValue *json_new_stringn(const char *s, size_t n) {
        JsonValue *v = json_alloc(JSON_STRING);
        if (!v)
                return NULL;
        v->str = malloc(n + 1);
        if (!v->str)
                return mfree(v);
        memcpy(v->str, s, n);
        v->str[n] = 0;
        v->len = n;
        return v;
}

JsonValue *json_new_string(const char *s) {
        return json_new_stringn(s, strlen(s));
}

static JsonValue *new_number_text(char *text) {
        JsonValue *v;

        if (!text)
                return NULL;
        v = json_alloc(JSON_NUMBER);
        if (!v) {
                free(text);
                return NULL;
        }
        v->str = text;
        v->len = strlen(text);
        return v;
}

JsonValue *json_new_int64(int64_t i) {
        char *t = NULL;
        if (asprintf(&t, "%" PRId64, i) < 0)
                return NULL;
        return new_number_text(t);
}

JsonValue *json_new_uint64(uint64_t u) {
        char *t = NULL;
        if (asprintf(&t, "%" PRIu64, u) < 0)
                return NULL;
        return new_number_text(t);
}

JsonValue *json_new_array(void) {
        return json_alloc(JSON_ARRAY);
}

JsonValue *json_new_object(void) {
        return json_alloc(JSON_OBJECT);
}

JsonValue *json_copy(const JsonValue *v) {
        _cleanup_json_ JsonValue *c = NULL;

        if (!v)
                return NULL;
        switch (v->type) {
        case JSON_NULL:
                return json_new_null();
        case JSON_BOOLEAN:
                return json_new_boolean(v->boolean);
        case JSON_STRING:
                return json_new_stringn(v->str, v->len);
        case JSON_NUMBER:
                return new_number_text(strdup(v->str));
        case JSON_ARRAY:
        case JSON_OBJECT:
                c = json_alloc(v->type);
                if (!c)
                        return NULL;
                for (size_t i = 0; i < v->n; i++) {
                        char *k = NULL;
                        if (v->type == JSON_OBJECT) {
                                k = strdup(v->keys[i]);
                                if (!k)
                                        return NULL;
                        }
                        if (container_add(c, k, json_copy(v->items[i])) < 0)
                                return NULL;
                        if (!c->items[c->n - 1])
                                return NULL;
                }
                return TAKE_PTR(c);
        }
        return NULL;
}

JsonValue *json_new_strv(char *const *l) {
        _cleanup_json_ JsonValue *a = json_new_array();

        if (!a)
                return NULL;
        for (; l && *l; l++)
                if (json_array_append(a, json_new_string(*l)) < 0)
                        return NULL;
        return TAKE_PTR(a);
}

/* ---- mutation ---- */

int json_array_append(JsonValue *array, JsonValue *item) {
        if (!item)
                return -ENOMEM;
        if (!array || array->type != JSON_ARRAY) {
                json_free(item);
                return -EINVAL;
        }
        return container_add(array, NULL, item);
}

int json_array_remove_at(JsonValue *array, size_t i) {
        if (!array || array->type != JSON_ARRAY || i >= array->n)
                return -EINVAL;
        json_free(array->items[i]);
        memmove(array->items + i, array->items + i + 1, (array->n - i - 1) * sizeof(JsonValue *));
        array->n--;
        return 0;
}

int json_object_set(JsonValue *obj, const char *key, JsonValue *item) {
        ssize_t i;
        char *k;

        if (!item)
                return -ENOMEM;
        if (!obj || obj->type != JSON_OBJECT) {
                json_free(item);
                return -EINVAL;
        }
        i = object_find(obj, key);
        if (i >= 0) {
                json_free(obj->items[i]);
                obj->items[i] = item;
                return 0;
        }
        k = strdup(key);
        if (!k) {
                json_free(item);
                return -ENOMEM;
        }
        return container_add(obj, k, item);
}

int json_object_remove(JsonValue *obj, const char *key) {
        bool found = false;

        if (!obj || obj->type != JSON_OBJECT)
                return -EINVAL;
        for (size_t i = 0; i < obj->n;) {
                if (!streq(obj->keys[i], key)) {
                        i++;
                        continue;
                }
                json_free(obj->items[i]);
                free(obj->keys[i]);
                memmove(obj->items + i, obj->items + i + 1, (obj->n - i - 1) * sizeof(JsonValue *));
                memmove(obj->keys + i, obj->keys + i + 1, (obj->n - i - 1) * sizeof(char *));
                obj->n--;
                found = true;
        }
        return found ? 0 : -ENOENT;
}

int json_object_ensure_object(JsonValue *obj, const char *key, JsonValue **ret) {
        JsonValue *v = json_get(obj, key);
        int r;

        if (v) {
                if (v->type != JSON_OBJECT)
                        return -EINVAL;
                *ret = v;
                return 0;
        }
        v = json_new_object();
        r = json_object_set(obj, key, v);
        if (r < 0)
                return r;
        *ret = v;
        return 0;
}

int json_object_set_string(JsonValue *obj, const char *key, const char *s) {
        return json_object_set(obj, key, s ? json_new_string(s) : json_new_null());
}

int json_object_set_int64(JsonValue *obj, const char *key, int64_t i) {
        return json_object_set(obj, key, json_new_int64(i));
}

int json_object_set_boolean(JsonValue *obj, const char *key, bool b) {
        return json_object_set(obj, key, json_new_boolean(b));
}

int json_to_strv(const JsonValue *v, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;

        if (!v || v->type != JSON_ARRAY)
                return -EINVAL;
        l = calloc(v->n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < v->n; i++) {
                if (v->items[i]->type != JSON_STRING)
                        return -EINVAL;
                l[i] = strdup(v->items[i]->str);
                if (!l[i])
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* ---- formatting ---- */

static void yajl_gen_freep(yajl_gen *g) {
        if (*g)
                yajl_gen_free(*g);
}

static int gen_value(yajl_gen g, const JsonValue *v) {
        yajl_gen_status s = yajl_gen_status_ok;

        switch (v->type) {
        case JSON_NULL:
                s = yajl_gen_null(g);
                break;
        case JSON_BOOLEAN:
                s = yajl_gen_bool(g, v->boolean);
                break;
        case JSON_NUMBER:
                s = yajl_gen_number(g, v->str, v->len);
                break;
        case JSON_STRING:
                s = yajl_gen_string(g, (const unsigned char *) v->str, v->len);
                break;
        case JSON_ARRAY:
        case JSON_OBJECT:
                s = v->type == JSON_ARRAY ? yajl_gen_array_open(g) : yajl_gen_map_open(g);
                for (size_t i = 0; s == yajl_gen_status_ok && i < v->n; i++) {
                        int r;
                        if (v->type == JSON_OBJECT) {
                                s = yajl_gen_string(g, (const unsigned char *) v->keys[i], strlen(v->keys[i]));
                                if (s != yajl_gen_status_ok)
                                        break;
                        }
                        r = gen_value(g, v->items[i]);
                        if (r < 0)
                                return r;
                }
                if (s == yajl_gen_status_ok)
                        s = v->type == JSON_ARRAY ? yajl_gen_array_close(g) : yajl_gen_map_close(g);
                break;
        }
        if (s == yajl_gen_invalid_string)
                return -EILSEQ;
        return s == yajl_gen_status_ok ? 0 : -EINVAL;
}

int json_format(const JsonValue *v, bool pretty, char **ret, size_t *ret_size) {
        _cleanup_(yajl_gen_freep) yajl_gen g = NULL;
        const unsigned char *buf;
        size_t len;
        char *s;
        int r;

        if (!v)
                return -EINVAL;
        g = yajl_gen_alloc(NULL);
        if (!g)
                return -ENOMEM;
        yajl_gen_config(g, yajl_gen_beautify, pretty ? 1 : 0);
        /* Strings that are not valid UTF-8 (task output can be anything) are escaped
         * byte-wise by yajl only when validation is off; keep validation off and let
         * the producer decide. */
        yajl_gen_config(g, yajl_gen_validate_utf8, 0);
        r = gen_value(g, v);
        if (r < 0)
                return r;
        if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
                return -EINVAL;
        s = strndup((const char *) buf, len);
        if (!s)
                return -ENOMEM;
        *ret = s;
        if (ret_size)
                *ret_size = len;
        return 0;
}
