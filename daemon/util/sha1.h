/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SHA-1 (FIPS 180-4), only because Lagoon names namespaces with it (the 4 hex digits of
 * remote-controller's shortened names, its random prefix): not for anything that needs a
 * secure hash. Our own, so the daemon links no crypto library (sha256.h says why). */

#include <stddef.h>
#include <stdint.h>

#define SHA1_DIGEST_SIZE 20

void sha1(const void *data, size_t size, uint8_t ret[static SHA1_DIGEST_SIZE]);
