/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), our own so that the daemon needs no
 * crypto library for its digests (lease and slot names, command digests) and its JWTs:
 * libcrypto alone cost an idle daemon 1.4 MiB of mapped pages. Not constant-time beyond
 * what the algorithm gives; the only secret it sees is the JWT key, in HMAC. */

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32
#define SHA256_BLOCK_SIZE 64

typedef struct Sha256 {
        uint32_t h[8];
        uint64_t length; /* bytes hashed so far */
        uint8_t buffer[SHA256_BLOCK_SIZE];
        size_t buffered;
} Sha256;

void sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t size);
/* Writes the digest and wipes the state. */
void sha256_final(Sha256 *s, uint8_t ret[static SHA256_DIGEST_SIZE]);
void sha256(const void *data, size_t size, uint8_t ret[static SHA256_DIGEST_SIZE]);
/* Lower-case hex of the digest of a string: ret holds 2 × 32 + 1 characters. */
void sha256_hex(const char *s, char ret[static 2 * SHA256_DIGEST_SIZE + 1]);

void hmac_sha256(const void *key,
                 size_t key_size,
                 const void *data,
                 size_t size,
                 uint8_t ret[static SHA256_DIGEST_SIZE]);
