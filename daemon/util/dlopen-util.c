/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* dlopen_many_sym(): dlopen-util.h. */

#include <dlfcn.h>
#include <stdarg.h>

#include "dlopen-util.h"
#include "log.h"

#define DLSYM_MAX 96

int dlopen_many_sym(void **dlp, const char *soname, const char *needed_for, ...) {
        void **targets[DLSYM_MAX], *values[DLSYM_MAX];
        const char *missing = NULL;
        size_t n = 0;
        va_list ap;
        void *dl;

        if (*dlp)
                return 0;

        /* RTLD_NOW: a library too old for one of our functions fails here, not later. */
        dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
        if (!dl)
                return log_error_errno(EOPNOTSUPP, "%s is needed for %s but could not be loaded: %s", soname,
                                       needed_for, dlerror());

        va_start(ap, needed_for);
        for (void **t; (t = va_arg(ap, void **));) {
                const char *name = va_arg(ap, const char *);

                if (n >= DLSYM_MAX) {
                        missing = "(too many functions)";
                        break;
                }
                targets[n] = t;
                values[n] = dlsym(dl, name);
                if (!values[n]) {
                        missing = name;
                        break;
                }
                n++;
        }
        va_end(ap);

        if (missing) {
                (void) dlclose(dl);
                return log_error_errno(EOPNOTSUPP, "%s is needed for %s but lacks %s (too old?)", soname, needed_for,
                                       missing);
        }

        for (size_t i = 0; i < n; i++)
                *targets[i] = values[i];
        *dlp = dl;
        return 0;
}
