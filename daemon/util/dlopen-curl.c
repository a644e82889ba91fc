/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* dlopen_curl(): dlopen-curl.h. */

#include "dlopen-curl.h"

static void *curl_dl = NULL;

#define DLOPEN_CURL_DEFINE(s) DLSYM_PROTOTYPE(s) = NULL;
CURL_SYMBOLS(DLOPEN_CURL_DEFINE)

int dlopen_curl(void) {
#define DLOPEN_CURL_ARG(s) DLSYM_ARG(s),
        return dlopen_many_sym(&curl_dl, "libcurl.so.4", "the Lagoon API and the Kubernetes client (libcurl4)",
                               CURL_SYMBOLS(DLOPEN_CURL_ARG) NULL);
}
