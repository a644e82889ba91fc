/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Deterministic crash tests: LAGOON_TASKD_DEBUG_STOP_AT=<point> makes the daemon stop
 * itself (SIGSTOP) the first time it reaches the named point of a launch or clean-up, so
 * a test can SIGKILL it exactly there and check what a restart makes of it. Unset (the
 * only case in production), this is one getenv() per call. */

void debug_stop_at(const char *point);
