/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* HS256 JSON Web Tokens (RFC 7519, JWS compact form) minted with our HMAC-SHA256 (sha256.h), for
 * Lagoon's API: Lagoon accepts a service token when the signature verifies with its
 * JWTSECRET, role is "admin", aud is its audience, iat is not in the future by more than
 * 60 s and exp - iat <= 3600. Pure; no logging. */

#include <stddef.h>
#include <stdint.h>

/* A token for header {"alg":"HS256","typ":"JWT"} and the given claims object (JSON
 * text, used verbatim). */
int jwt_hs256_sign(const void *secret, size_t secret_size, const char *claims_json, char **ret);

/* Lagoon's claims: {"role":"admin","iss":issuer,"sub":issuer,"aud":audience,
 * "iat":now_sec,"exp":now_sec+lifetime_sec}. */
int jwt_lagoon_token(const void *secret,
                     size_t secret_size,
                     const char *issuer,
                     const char *audience,
                     uint64_t now_sec,
                     uint64_t lifetime_sec,
                     char **ret);
