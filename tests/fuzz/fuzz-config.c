/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the configuration parser: arbitrary bytes through
 * config_parse_string() and config_finalize() into a fresh Config, then every service
 * looked up again. Errors are expected; crashes, leaks and hangs are not. The log is
 * silenced unless FUZZ_LOG is set, since every error would print a line. */

#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(config_freep) Config *c = NULL;

        if (!getenv("FUZZ_LOG"))
                log_set_max_level(LOG_CRIT);

        c = config_new();
        if (!c)
                return 0;

        (void) config_parse_string(c, "fuzz.conf", (const char *) data, size);
        (void) config_finalize(c);

        for (size_t i = 0; i < c->n_services; i++)
                if (config_find_service(c, c->services[i].name) != c->services + i)
                        abort();

        return 0;
}
