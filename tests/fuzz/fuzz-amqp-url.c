/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the AMQP URL parser: any byte string must give a parsed URL
 * with a host and a vhost, or -EINVAL / -ENOMEM, and leak nothing. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "amqp-client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        AmqpUrl u = {};
        char *s;
        int r;

        if (size > 4096)
                return 0;
        s = strndup((const char *) data, size);
        if (!s)
                return 0;
        r = amqp_url_parse(s, &u);
        if (r == 0) {
                if (!u.host || !u.vhost || u.port == 0)
                        abort();
                amqp_url_done(&u);
        } else if (r != -EINVAL && r != -ENOMEM)
                abort();
        free(s);
        return 0;
}
