/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Processes by pidfd: a pidfd names one process for good, where a PID may be reused. */

#include <stdbool.h>
#include <sys/types.h>

/* pidfd_open(2): a close-on-exec pidfd, or -errno (-ESRCH: no such process). */
int pidfd_open_pid(pid_t pid);
/* Whether the process of pidfd has exited (never blocks). */
bool pidfd_exited(int pidfd);
