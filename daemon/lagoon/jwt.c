/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* HS256 JSON Web Tokens for Lagoon's API: the compact JWS form header.claims.signature
 * (base64url, RFC 4648 §5, no padding) with HMAC-SHA256 (sha256.h), and the claims
 * Lagoon checks on a service ("legacy") token. Pure: no I/O, no logging. */

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "json.h"
#include "jwt.h"
#include "parse-util.h"
#include "sha256.h"

/* The header never changes; this is base64url('{"alg":"HS256","typ":"JWT"}'). */
#define JWT_HEADER_B64 "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

int jwt_hs256_sign(const void *secret, size_t secret_size, const char *claims_json, char **ret) {
        _cleanup_free_ char *claims_b64 = NULL, *signing_input = NULL, *sig_b64 = NULL;
        uint8_t mac[SHA256_DIGEST_SIZE];
        char *token = NULL;
        int r;

        /* An empty key would make a token anyone can forge. */
        if (!secret || secret_size == 0 || secret_size > INT_MAX || !claims_json || !ret)
                return -EINVAL;

        r = base64url_encode(claims_json, strlen(claims_json), &claims_b64);
        if (r < 0)
                return r;

        if (asprintf(&signing_input, "%s.%s", JWT_HEADER_B64, claims_b64) < 0) {
                signing_input = NULL;
                return -ENOMEM;
        }

        hmac_sha256(secret, secret_size, signing_input, strlen(signing_input), mac);
        r = base64url_encode(mac, sizeof(mac), &sig_b64);
        explicit_bzero(mac, sizeof(mac));
        if (r < 0)
                return r;

        if (asprintf(&token, "%s.%s", signing_input, sig_b64) < 0)
                return -ENOMEM;

        *ret = token;
        return 0;
}

int jwt_lagoon_token(const void *secret,
                     size_t secret_size,
                     const char *issuer,
                     const char *audience,
                     uint64_t now_sec,
                     uint64_t lifetime_sec,
                     char **ret) {
        _cleanup_(json_freep) JsonValue *claims = NULL;
        _cleanup_free_ char *text = NULL;
        int r;

        if (!issuer || !audience || !ret || lifetime_sec > UINT64_MAX - now_sec)
                return -EINVAL;

        claims = json_new_object();
        if (!claims)
                return -ENOMEM;

        r = json_object_set_string(claims, "role", "admin");
        if (r >= 0)
                r = json_object_set_string(claims, "iss", issuer);
        if (r >= 0)
                r = json_object_set_string(claims, "sub", issuer);
        if (r >= 0)
                r = json_object_set_string(claims, "aud", audience);
        if (r >= 0)
                r = json_object_set(claims, "iat", json_new_uint64(now_sec));
        if (r >= 0)
                r = json_object_set(claims, "exp", json_new_uint64(now_sec + lifetime_sec));
        if (r < 0)
                return r;

        r = json_format(claims, false, &text, NULL);
        if (r < 0)
                return r;

        return jwt_hs256_sign(secret, secret_size, text, ret);
}
