/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* jwt.c: base64url edge cases and HS256 tokens against vectors computed independently
 * with Python's hmac/base64 when this test was written. */

#include <errno.h>
#include <string.h>

#include "jwt.h"
#include "parse-util.h"
#include "macro.h"
#include "tests.h"

#define SECRET "super-secret-jwt-key"
#define HEADER_B64 "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

static void check_b64(const void *data, size_t size, const char *expected) {
        _cleanup_free_ char *s = NULL;

        ASSERT_OK(base64url_encode(data, size, &s));
        ASSERT_STREQ(s, expected);
}

TEST(base64url) {
        check_b64("", 0, "");
        check_b64(NULL, 0, "");
        check_b64("f", 1, "Zg");
        check_b64("fo", 2, "Zm8");
        check_b64("foo", 3, "Zm9v");
        check_b64("foob", 4, "Zm9vYg");
        /* The two characters that differ from plain base64, and no padding. */
        check_b64("\xff\xfe\xfd", 3, "__79");
        check_b64("\xfb\xff", 2, "-_8");
        check_b64("\0", 1, "AA");
        check_b64("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27, HEADER_B64);

        char *s = NULL;
        ASSERT_EQ(base64url_encode(NULL, 1, &s), -EINVAL);
        ASSERT(!s);
        ASSERT_EQ(base64url_encode("x", 1, NULL), -EINVAL);
}

TEST(hs256_vector) {
        _cleanup_free_ char *t = NULL;
        const char *claims =
                "{\"role\":\"admin\",\"iss\":\"lagoon-taskd\",\"sub\":\"lagoon-taskd\",\"aud\":\"api.dev\","
                "\"iat\":1700000000,\"exp\":1700000060}";
        const char *expected = HEADER_B64
                ".eyJyb2xlIjoiYWRtaW4iLCJpc3MiOiJsYWdvb24tdGFza2QiLCJzdWIiOiJsYWdvb24tdGFza2QiLCJhdWQiOiJhcGkuZGV2Iiwi"
                "aWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAwNjB9.xCkV4x1NH32o1fZbCZu5zbvosSVENHbwbvDhiQ8dzfA";

        ASSERT_OK(jwt_hs256_sign(SECRET, strlen(SECRET), claims, &t));
        ASSERT_STREQ(t, expected);

        /* The Lagoon helper builds exactly those claims. */
        _cleanup_free_ char *l = NULL;
        ASSERT_OK(jwt_lagoon_token(SECRET, strlen(SECRET), "lagoon-taskd", "api.dev", 1700000000, 60, &l));
        ASSERT_STREQ(l, expected);

        /* A different secret gives a different signature over the same input. */
        _cleanup_free_ char *o = NULL;
        ASSERT_OK(jwt_hs256_sign("other", 5, claims, &o));
        ASSERT(strcmp(o, expected) != 0);
        ASSERT(strncmp(o, expected, strrchr(expected, '.') - expected) == 0);
}

TEST(claims_escaped) {
        _cleanup_free_ char *t = NULL;

        /* Strings are JSON-escaped, not pasted: an issuer with a quote stays one string. */
        ASSERT_OK(jwt_lagoon_token("k", 1, "a\"b", "x", 0, 3600, &t));
        const char *dot1 = strchr(t, '.');
        ASSERT(dot1);
        const char *dot2 = strchr(dot1 + 1, '.');
        ASSERT(dot2);
        const char *expected_claims =
                "eyJyb2xlIjoiYWRtaW4iLCJpc3MiOiJhXCJiIiwic3ViIjoiYVwiYiIsImF1ZCI6IngiLCJpYXQiOjAsImV4cCI6MzYwMH0";
        ASSERT_EQ((size_t) (dot2 - dot1 - 1), strlen(expected_claims));
        ASSERT(strncmp(dot1 + 1, expected_claims, strlen(expected_claims)) == 0);
        ASSERT(!strchr(dot2 + 1, '.'));
        ASSERT(!strchr(t, '='));
}

TEST(invalid) {
        char *t = NULL;

        ASSERT_EQ(jwt_hs256_sign("", 0, "{}", &t), -EINVAL);
        ASSERT_EQ(jwt_hs256_sign(NULL, 3, "{}", &t), -EINVAL);
        ASSERT_EQ(jwt_hs256_sign("k", 1, NULL, &t), -EINVAL);
        ASSERT_EQ(jwt_hs256_sign("k", 1, "{}", NULL), -EINVAL);
        ASSERT_EQ(jwt_lagoon_token("k", 1, NULL, "a", 0, 60, &t), -EINVAL);
        ASSERT_EQ(jwt_lagoon_token("k", 1, "i", NULL, 0, 60, &t), -EINVAL);
        ASSERT_EQ(jwt_lagoon_token("k", 1, "i", "a", UINT64_MAX, 60, &t), -EINVAL);
        ASSERT_EQ(jwt_lagoon_token("", 0, "i", "a", 0, 60, &t), -EINVAL);
        ASSERT(!t);

        /* Claims text with a NUL-free binary secret and non-ASCII claims still works. */
        ASSERT_OK(jwt_hs256_sign("\x01\x02\xff", 3, "{\"n\":\"\xc3\xa9\"}", &t));
        free(t);
}

int main(void) {
        RUN(base64url);
        RUN(hs256_vector);
        RUN(claims_escaped);
        RUN(invalid);
        return 0;
}
