/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* sha1.c, sha256.c: the FIPS 180 example messages (empty, "abc", the 448-bit one, a
 * million 'a'), every length from 0 to 200 (all paddings: one block or two) chained into
 * one digest, SHA-256 fed in pieces of every size, and HMAC-SHA256 against RFC 4231 and
 * keys of and above the block size. The expected values were computed with Python's
 * hashlib and hmac when this test was written. */

#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "sha1.h"
#include "sha256.h"
#include "tests.h"

#define FIPS_448 "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"

static void hex(const uint8_t *md, size_t n, char *ret) {
        for (size_t i = 0; i < n; i++)
                sprintf(ret + 2 * i, "%02x", md[i]);
}

static void check_sha1(const void *data, size_t size, const char *expected) {
        uint8_t md[SHA1_DIGEST_SIZE];
        char h[2 * SHA1_DIGEST_SIZE + 1];

        sha1(data, size, md);
        hex(md, sizeof(md), h);
        ASSERT_STREQ(h, expected);
}

static void check_sha256(const void *data, size_t size, const char *expected) {
        uint8_t md[SHA256_DIGEST_SIZE];
        char h[2 * SHA256_DIGEST_SIZE + 1];

        sha256(data, size, md);
        hex(md, sizeof(md), h);
        ASSERT_STREQ(h, expected);
}

static void check_hmac(const void *key, size_t key_size, const char *data, const char *expected) {
        uint8_t md[SHA256_DIGEST_SIZE];
        char h[2 * SHA256_DIGEST_SIZE + 1];

        hmac_sha256(key, key_size, data, strlen(data), md);
        hex(md, sizeof(md), h);
        ASSERT_STREQ(h, expected);
}

/* Message n of the length sweep: n bytes (i * 7 + n) mod 256. */
static void sweep_message(uint8_t *buf, size_t n) {
        for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t) (i * 7 + n);
}

TEST(sha1_vectors) {
        _cleanup_free_ char *million = malloc(1000000);

        check_sha1("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        check_sha1(NULL, 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        check_sha1("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
        check_sha1(FIPS_448, strlen(FIPS_448), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        ASSERT(million);
        memset(million, 'a', 1000000);
        check_sha1(million, 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

TEST(sha1_lengths) {
        uint8_t chain[201 * SHA1_DIGEST_SIZE], buf[200];

        for (size_t n = 0; n <= 200; n++) {
                sweep_message(buf, n);
                sha1(buf, n, chain + n * SHA1_DIGEST_SIZE);
        }
        check_sha1(chain, sizeof(chain), "d0de06f4c5cb01efe13d538b17bbc0bd8144a1c2");
}

TEST(sha256_vectors) {
        _cleanup_free_ char *million = malloc(1000000);
        char h[2 * SHA256_DIGEST_SIZE + 1];

        check_sha256("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        check_sha256(NULL, 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        check_sha256("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        check_sha256(FIPS_448, strlen(FIPS_448), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        ASSERT(million);
        memset(million, 'a', 1000000);
        check_sha256(million, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

        sha256_hex("abc", h);
        ASSERT_STREQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(sha256_lengths) {
        uint8_t chain[201 * SHA256_DIGEST_SIZE], buf[200];

        for (size_t n = 0; n <= 200; n++) {
                sweep_message(buf, n);
                sha256(buf, n, chain + n * SHA256_DIGEST_SIZE);
        }
        check_sha256(chain, sizeof(chain), "e673d33f6940a6d3856d0d305fd88363ae0ba3b96e2411d8ddd5e0dd443f4525");
}

/* The streaming interface gives the one-shot digest whatever the pieces. */
TEST(sha256_pieces) {
        uint8_t buf[200], whole[SHA256_DIGEST_SIZE], pieces[SHA256_DIGEST_SIZE];

        sweep_message(buf, sizeof(buf));
        sha256(buf, sizeof(buf), whole);
        for (size_t step = 1; step <= sizeof(buf); step++) {
                Sha256 s;

                sha256_init(&s);
                for (size_t off = 0; off < sizeof(buf); off += step)
                        sha256_update(&s, buf + off, MIN(step, sizeof(buf) - off));
                sha256_update(&s, NULL, 0);
                sha256_final(&s, pieces);
                ASSERT(memcmp(whole, pieces, sizeof(whole)) == 0);
        }
}

TEST(hmac_sha256) {
        uint8_t key20[20], key131[131], key64[64];

        /* RFC 4231 test cases 1, 2 and 6 (a key longer than the block is hashed first). */
        memset(key20, 0x0b, sizeof(key20));
        check_hmac(key20, sizeof(key20), "Hi There",
                   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        check_hmac("Jefe", 4, "what do ya want for nothing?",
                   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        memset(key131, 0xaa, sizeof(key131));
        check_hmac(key131, sizeof(key131), "Test Using Larger Than Block-Size Key - Hash Key First",
                   "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
        /* A key of exactly one block is used as it is. */
        for (unsigned i = 0; i < sizeof(key64); i++)
                key64[i] = (uint8_t) i;
        check_hmac(key64, sizeof(key64), "block-sized key",
                   "c778b31e07b7ed445b7518ca555e0479e655ab70c89afbd255a28579056fbd0c");
        check_hmac("k", 1, "", "8bb990c40a7d61cb97597a942125025be50ac8beb74436e3735b98893a7f6620");
}

int main(void) {
        RUN(sha1_vectors);
        RUN(sha1_lengths);
        RUN(sha256_vectors);
        RUN(sha256_lengths);
        RUN(sha256_pieces);
        RUN(hmac_sha256);
        return 0;
}
