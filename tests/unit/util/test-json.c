/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* json.c: parsing with limits, accessors, mutation, formatting round trips. */

#include <string.h>

#include "json.h"
#include "tests.h"

static JsonValue *parse_ok(const char *s) {
        JsonValue *v = NULL;
        _cleanup_free_ char *err = NULL;
        int r = json_parse(s, strlen(s), 0, &v, &err);
        if (r < 0)
                fprintf(stderr, "parse of %s failed: %s\n", s, err);
        ASSERT_OK(r);
        return v;
}

static void parse_bad(const char *s, size_t len, int expected) {
        JsonValue *v = NULL;
        _cleanup_free_ char *err = NULL;
        int r = json_parse(s, len, 8, &v, &err);
        ASSERT_EQ(r, expected);
        ASSERT(v == NULL);
        ASSERT(err != NULL);
}

TEST(parse_and_access) {
        _cleanup_json_ JsonValue *v =
                parse_ok("{\"a\": 1, \"b\": \"x\", \"c\": [true, null, 1.5], \"d\": {\"e\": -9223372036854775808},"
                         " \"big\": 18446744073709551615, \"a\": 2}");
        int64_t i;
        uint64_t u;
        double d;

        ASSERT(json_is_object(v));
        ASSERT_OK(json_int64(json_get(v, "a"), &i));
        ASSERT_EQ(i, 2); /* last duplicate wins */
        ASSERT_STREQ(json_get_string(v, "b"), "x");
        ASSERT(json_get_string(v, "a") == NULL);
        ASSERT_EQ(json_length(json_get(v, "c")), 3u);
        ASSERT_EQ(json_boolean(json_array_at(json_get(v, "c"), 0)), 1);
        ASSERT_EQ(json_type(json_array_at(json_get(v, "c"), 1)), JSON_NULL);
        ASSERT(json_array_at(json_get(v, "c"), 3) == NULL);
        ASSERT_EQ(json_int64(json_array_at(json_get(v, "c"), 2), &i), -EINVAL);
        ASSERT_OK(json_double(json_array_at(json_get(v, "c"), 2), &d));
        ASSERT(d == 1.5);
        ASSERT_OK(json_int64(json_get_path(v, "d", "e", NULL), &i));
        ASSERT_EQ(i, INT64_MIN);
        ASSERT_OK(json_uint64(json_get(v, "big"), &u));
        ASSERT_EQ(u, UINT64_MAX);
        ASSERT_EQ(json_int64(json_get(v, "big"), &i), -ERANGE);
        ASSERT_EQ(json_uint64(json_get_path(v, "d", "e", NULL), &u), -ERANGE);
        ASSERT(json_get_path(v, "d", "x", NULL) == NULL);
        ASSERT(json_get(json_get(v, "c"), "a") == NULL);
        ASSERT_EQ(json_boolean(json_get(v, "b")), -EINVAL);
}

TEST(garbage) {
        parse_bad("", 0, -EINVAL);
        parse_bad("{", 1, -EINVAL);
        parse_bad("{\"a\":}", 6, -EINVAL);
        parse_bad("[1,]", 4, -EINVAL);
        parse_bad("{} {}", 5, -EINVAL);
        parse_bad("{\"a\":1} x", 9, -EINVAL);
        parse_bad("nul", 3, -EINVAL);
        parse_bad("/* c */ {}", 10, -EINVAL);
        parse_bad("\"\xff\xfe\"", 4, -EINVAL);          /* invalid UTF-8 */
        parse_bad("{\"a\":1\0}", 8, -EINVAL);           /* embedded NUL */
        parse_bad("{\"a\\u0000b\":1}", 14, -EINVAL);    /* a key would be cut short */
        parse_bad("[[[[[[[[[[1]]]]]]]]]]", 21, -E2BIG); /* deeper than 8 */
}

TEST(build_and_format) {
        _cleanup_json_ JsonValue *o = json_new_object(), *back = NULL;
        _cleanup_free_ char *s = NULL, *s2 = NULL;
        _cleanup_strv_free_ char **l = NULL;
        char *const strv[] = {(char *) "a", (char *) "b c", NULL};
        JsonValue *sub = NULL;

        ASSERT_OK(json_object_set_string(o, "name", "quote\" and \\ and \n"));
        ASSERT_OK(json_object_set_int64(o, "n", -5));
        ASSERT_OK(json_object_set(o, "list", json_new_strv(strv)));
        ASSERT_OK(json_object_ensure_object(o, "sub", &sub));
        ASSERT_OK(json_object_set_boolean(sub, "flag", true));
        ASSERT_OK(json_object_set_string(o, "n", NULL)); /* replace keeps one member */
        ASSERT_EQ(json_length(o), 4u);
        ASSERT_EQ(json_object_remove(o, "missing"), -ENOENT);
        ASSERT_EQ(json_object_ensure_object(o, "name", &sub), -EINVAL);
        ASSERT_EQ(json_object_set(o, "x", NULL), -ENOMEM);

        ASSERT_OK(json_format(o, false, &s, NULL));
        ASSERT_STREQ(s, "{\"name\":\"quote\\\" and \\\\ and \\n\",\"n\":null,\"list\":[\"a\",\"b c\"],"
                        "\"sub\":{\"flag\":true}}");
        ASSERT_OK(json_parse(s, strlen(s), 0, &back, NULL));
        ASSERT_OK(json_format(back, false, &s2, NULL));
        ASSERT_STREQ(s, s2);
        ASSERT_OK(json_to_strv(json_get(back, "list"), &l));
        ASSERT_STREQ(l[1], "b c");
        ASSERT(l[2] == NULL);
        ASSERT_EQ(json_to_strv(back, &l), -EINVAL);
}

TEST(copy_and_arrays) {
        _cleanup_json_ JsonValue *v = parse_ok("{\"a\":[1,2,3],\"s\":\"x\\u0000y\"}"), *c = NULL;
        _cleanup_free_ char *s1 = NULL, *s2 = NULL;

        ASSERT(json_has_nul(v));
        ASSERT(json_has_nul(json_get(v, "s")));
        ASSERT(!json_has_nul(json_get(v, "a")));
        ASSERT(!json_has_nul(NULL));
        c = json_copy(v);
        ASSERT(c);
        ASSERT_OK(json_array_remove_at(json_get(c, "a"), 1));
        ASSERT_EQ(json_array_remove_at(json_get(c, "a"), 5), -EINVAL);
        ASSERT_OK(json_format(c, false, &s1, NULL));
        ASSERT_STREQ(s1, "{\"a\":[1,3],\"s\":\"x\\u0000y\"}");
        ASSERT_OK(json_format(v, false, &s2, NULL));
        ASSERT_STREQ(s2, "{\"a\":[1,2,3],\"s\":\"x\\u0000y\"}");
}

int main(void) {
        RUN(parse_and_access);
        RUN(garbage);
        RUN(build_and_format);
        RUN(copy_and_arrays);
        return 0;
}
