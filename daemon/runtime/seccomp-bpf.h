/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A task's OCI seccomp profile compiled to the BPF program the runtime would build from
 * it, for crun's annotation run.oci.seccomp_bpf_data: crun then loads that program
 * instead of compiling the profile with libseccomp in every create (about half of a
 * `crun run` of a task's config here). Compiled once per distinct profile and kept in
 * memory. */

#include "json.h"

#define SECCOMP_BPF_ANNOTATION "run.oci.seccomp_bpf_data"

/* The program for profile (an OCI linux.seccomp object), base64 (standard, padded), as
 * crun 1.8 builds it from the same JSON: defaultAction/defaultErrnoRet, architectures,
 * syscalls[].names/action/errnoRet/args, rules equal to the default left out, several
 * conditions on one argument index as one rule each. flags and listenerPath are not
 * part of the program (crun reads them from linux.seccomp when it loads it).
 * -EOPNOTSUPP when the profile has anything this translation does not reproduce exactly
 * (an unknown syscall, action, operator or architecture, a malformed field, more than
 * six conditions…): the caller leaves the profile to the runtime. -ENOMEM. The result
 * (also -EOPNOTSUPP) is cached by the SHA-256 of the profile's JSON. */
int seccomp_bpf_compile(const JsonValue *profile, char **ret);

/* Cache statistics and reset, for tests. */
unsigned seccomp_bpf_cache_misses(void);
void seccomp_bpf_cache_clear(void);
