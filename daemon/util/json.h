/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A small owned JSON tree. json.c is the only file that talks to yajl: it parses
 * with yajl's callback parser (enforcing size and depth limits) into this tree and
 * formats the tree with yajl_gen. Numbers keep their source text, so 64-bit ids and
 * floats round-trip exactly. Objects keep member order. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef enum JsonType {
        JSON_NULL,
        JSON_BOOLEAN,
        JSON_NUMBER,
        JSON_STRING,
        JSON_ARRAY,
        JSON_OBJECT,
} JsonType;

typedef struct JsonValue JsonValue;

#define JSON_DEPTH_MAX_DEFAULT 64U

/* Parse one JSON document. Returns 0, -EINVAL on a syntax error (with a message in
 * *ret_error when ret_error is non-NULL, e.g. "parse error: invalid object key"),
 * -E2BIG when nesting exceeds max_depth, -ENOMEM. Trailing garbage is an error, so is a
 * NUL byte in an object key. */
int json_parse(const char *data, size_t size, unsigned max_depth, JsonValue **ret, char **ret_error);

JsonValue *json_free(JsonValue *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(JsonValue *, json_free);
#define _cleanup_json_ _cleanup_(json_freep)

JsonType json_type(const JsonValue *v);
const char *json_type_to_string(JsonType t);
static inline bool json_is_object(const JsonValue *v) {
        return v && json_type(v) == JSON_OBJECT;
}
static inline bool json_is_array(const JsonValue *v) {
        return v && json_type(v) == JSON_ARRAY;
}
static inline bool json_is_string(const JsonValue *v) {
        return v && json_type(v) == JSON_STRING;
}

/* Accessors: NULL/negative errno on the wrong type, never abort. */
const char *json_string(const JsonValue *v);                  /* NULL unless a string */
int json_int64(const JsonValue *v, int64_t *ret);             /* -EINVAL unless an integer, -ERANGE */
int json_uint64(const JsonValue *v, uint64_t *ret);           /* -EINVAL, -ERANGE */
int json_double(const JsonValue *v, double *ret);             /* -EINVAL unless a number */
int json_boolean(const JsonValue *v);                         /* 1, 0, -EINVAL unless a boolean */
size_t json_length(const JsonValue *v);                       /* array elements or object members, else 0 */
JsonValue *json_array_at(const JsonValue *v, size_t i);       /* NULL if out of range / not array */
const char *json_object_key_at(const JsonValue *v, size_t i); /* NULL if out of range / not object */
JsonValue *json_object_value_at(const JsonValue *v, size_t i);
JsonValue *json_get(const JsonValue *obj, const char *key);         /* NULL if absent or obj not an object */
const char *json_get_string(const JsonValue *obj, const char *key); /* NULL if absent or not a string */
/* Whether any string in v holds a NUL byte, which json_string() would silently cut
 * short (the parser refuses one in a key). Input that becomes C strings checks this. */
bool json_has_nul(const JsonValue *v);
/* Walks objects by keys, NULL-terminated: json_get_path(v, "process", "args", NULL). */
JsonValue *json_get_path(const JsonValue *v, ...) __attribute__((sentinel));

/* Constructors: return NULL on OOM. */
JsonValue *json_new_null(void);
JsonValue *json_new_boolean(bool b);
JsonValue *json_new_string(const char *s);
JsonValue *json_new_stringn(const char *s, size_t n); /* n bytes, may contain NUL */
JsonValue *json_new_int64(int64_t i);
JsonValue *json_new_uint64(uint64_t u);
JsonValue *json_new_array(void);
JsonValue *json_new_object(void);
JsonValue *json_copy(const JsonValue *v);
/* An array of strings from a NULL-terminated vector. */
JsonValue *json_new_strv(char *const *l);

/* Mutation. Functions taking a JsonValue *item take ownership of it, also on failure
 * (a NULL item means the constructor failed and yields -ENOMEM), so calls nest:
 * r = json_object_set(o, "name", json_new_string(name)); */
int json_array_append(JsonValue *array, JsonValue *item);
int json_array_remove_at(JsonValue *array, size_t i);
int json_object_set(JsonValue *obj, const char *key, JsonValue *item); /* replaces an existing member */
int json_object_remove(JsonValue *obj, const char *key);               /* 0 if removed, -ENOENT if absent */
/* Returns the member object, creating an empty one if absent; -EINVAL if it is not an object. */
int json_object_ensure_object(JsonValue *obj, const char *key, JsonValue **ret);

int json_object_set_string(JsonValue *obj, const char *key, const char *s); /* s NULL → null */
int json_object_set_int64(JsonValue *obj, const char *key, int64_t i);
int json_object_set_boolean(JsonValue *obj, const char *key, bool b);

/* A strv from an array of strings: -EINVAL if v is not an array or an element is not a string. */
int json_to_strv(const JsonValue *v, char ***ret);

/* Format to a NUL-terminated string (also returns its length when ret_size != NULL). */
int json_format(const JsonValue *v, bool pretty, char **ret, size_t *ret_size);

/* Incremental parsing of a stream of JSON values (a Kubernetes watch body: one object
 * per line, split anywhere by the network). Values are separated by optional
 * whitespace; each complete top-level value is handed to the callback, which owns it
 * (free it with json_free() or keep it). A value may be split across any number of
 * feeds and one feed may complete several values; they are delivered in order, after
 * the parser has consumed the chunk, so the callback may do anything except free the
 * stream. A callback returning < 0 stops the feed: the rest of the chunk's values are
 * dropped and the stream fails with that error.
 *
 * Limits: max_value_size counts the bytes of one value as received (including the
 * whitespace before it), 0 → JSON_STREAM_VALUE_MAX_DEFAULT; max_depth as in json_parse().
 * Errors are sticky: once a feed failed, every later feed returns the same error.
 * -EBADMSG invalid JSON (values completed earlier in the same chunk are still
 * delivered), -E2BIG a value over max_value_size or nested deeper than max_depth,
 * -ENOMEM. */
#define JSON_STREAM_VALUE_MAX_DEFAULT ((size_t) 16U * 1024U * 1024U)

typedef struct JsonStream JsonStream;
typedef int (*json_stream_value_cb_t)(JsonValue *v, void *userdata);

JsonStream *json_stream_new(size_t max_value_size, unsigned max_depth); /* NULL on OOM */
JsonStream *json_stream_free(JsonStream *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(JsonStream *, json_stream_free);
/* Returns 0, the callback's error, or the stream's error as above. */
int json_stream_feed(JsonStream *s, const void *data, size_t size, json_stream_value_cb_t cb, void *userdata);
/* End of input: delivers a trailing scalar that only the end can complete (a number),
 * returns -EBADMSG when the input ends inside a value. No feed is accepted afterwards. */
int json_stream_finish(JsonStream *s, json_stream_value_cb_t cb, void *userdata);
