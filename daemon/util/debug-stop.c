/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The named stop points for crash tests (see debug-stop.h). */

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "debug-stop.h"
#include "log.h"

void debug_stop_at(const char *point) {
        static bool stopped = false;
        const char *want = getenv("LAGOON_TASKD_DEBUG_STOP_AT");

        if (!want || stopped || strcmp(want, point) != 0)
                return;
        stopped = true; /* once per process: the test kills it there */
        log_notice("Debug: stopping at %s (LAGOON_TASKD_DEBUG_STOP_AT).", point);
        (void) raise(SIGSTOP);
}
