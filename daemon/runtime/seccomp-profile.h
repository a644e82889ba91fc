/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Seccomp profiles in OCI "linux.seccomp" form: the built-in default (an allow-list
 * in the spirit of the usual container default, EPERM for everything else) and the
 * validation of any profile against this architecture with libseccomp. */

#include "json.h"

/* A new copy of the default profile: defaultAction SCMP_ACT_ERRNO (EPERM), the native
 * architecture and its compat ones (x86_64: +X86, X32; aarch64: +ARM), one ALLOW rule
 * with the allow-list (only syscalls one of those architectures has), plus rules for
 * clone (no namespace flags), clone3 (ENOSYS, so libc falls back to clone), socket
 * (not AF_VSOCK) and personality (harmless values only). */
int seccomp_default_profile(JsonValue **ret);

/* The built-in allow-list as written, for all architectures, NULL-terminated (tests). */
const char *const *seccomp_default_syscalls(void);

/* Every syscall name must be known to libseccomp (native resolution), every action a
 * known SCMP_ACT_*, every architecture a known SCMP_ARCH_*, every argument operator a
 * known SCMP_CMP_*. -EINVAL with a message naming the first problem
 * ("unknown syscall 'foo' (syscalls[0].names[3])"). */
int seccomp_profile_validate(const JsonValue *profile, char **ret_error);

/* Reads (at most 4 MiB), parses and validates a profile file; messages start with path. */
int seccomp_profile_load(const char *path, JsonValue **ret, char **ret_error);
