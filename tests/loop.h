/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Driving the module under test's sd-event loop from a test: until a condition holds
 * (the test fails at the deadline), or for a while. */

#include <systemd/sd-event.h>

#include "macro.h"
#include "tests.h"

static inline void loop_run_until(sd_event *e, const bool *done, uint64_t max_usec) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + max_usec;

        while (!*done) {
                ASSERT(now_usec(CLOCK_MONOTONIC) < deadline);
                ASSERT_OK(sd_event_run(e, 100 * USEC_PER_MSEC));
        }
}

static inline void loop_run_for(sd_event *e, uint64_t usec) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + usec;

        while (now_usec(CLOCK_MONOTONIC) < deadline)
                ASSERT_OK(sd_event_run(e, 20 * USEC_PER_MSEC));
}

static inline uint64_t now_ms(void) {
        return now_usec(CLOCK_MONOTONIC) / USEC_PER_MSEC;
}
