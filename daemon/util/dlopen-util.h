/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Libraries of optional integrations, loaded only when they are used (systemd's pattern,
 * src/shared/dlfcn-util.h): a module per library (dlopen-curl.c, …) declares one pointer
 * per function it needs, typed after the library's own prototype (DLSYM_PROTOTYPE), and a
 * dlopen_<library>() that loads the library and resolves them all once. The daemon does
 * not link these libraries, so a daemon without [Lagoon] or [Kubernetes] never maps them
 * nor what they pull in (libcurl's and librabbitmq's dependencies were 3.3 MiB of an idle
 * daemon's 9.2 MiB RSS). */

#include "macro.h"

#define DLSYM_PROTOTYPE(symbol) typeof(symbol) *sym_##symbol

/* A (pointer, name) pair for dlopen_many_sym(); checks the pointer's type. */
#define DLSYM_ARG(symbol) \
        ({ \
                _Static_assert(__builtin_types_compatible_p(typeof(sym_##symbol), typeof(&symbol)), \
                               "sym_" #symbol " has the type of " #symbol); \
                (void **) &sym_##symbol; \
        }), \
                #symbol

/* Loads soname once (*dlp keeps the handle) and resolves each (void **, name) pair up to
 * the NULL: all or none. When the library is missing or lacks a function, logs an error
 * that names it and what needs it (needed_for, e.g. "[Lagoon] BrokerURL="), and returns
 * -EOPNOTSUPP; nothing is left resolved. 0 when loaded, also earlier. */
int dlopen_many_sym(void **dlp, const char *soname, const char *needed_for, ...) __attribute__((sentinel));
