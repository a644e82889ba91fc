/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* libcurl, loaded when the first HTTP client is made (the Lagoon API, the Kubernetes
 * client): dlopen-util.h. Call sym_curl_*() only after dlopen_curl() returned 0. */

#include <curl/curl.h>

#include "dlopen-util.h"

#define CURL_SYMBOLS(X) \
        X(curl_easy_cleanup) \
        X(curl_easy_getinfo) \
        X(curl_easy_header) \
        X(curl_easy_init) \
        X(curl_easy_setopt) \
        X(curl_easy_strerror) \
        X(curl_free) \
        X(curl_global_init) \
        X(curl_multi_add_handle) \
        X(curl_multi_assign) \
        X(curl_multi_cleanup) \
        X(curl_multi_info_read) \
        X(curl_multi_init) \
        X(curl_multi_remove_handle) \
        X(curl_multi_setopt) \
        X(curl_multi_socket_action) \
        X(curl_multi_strerror) \
        X(curl_slist_append) \
        X(curl_slist_free_all) \
        X(curl_url) \
        X(curl_url_cleanup) \
        X(curl_url_get) \
        X(curl_url_set)

#define DLOPEN_CURL_DECLARE(s) extern DLSYM_PROTOTYPE(s);
CURL_SYMBOLS(DLOPEN_CURL_DECLARE)
#undef DLOPEN_CURL_DECLARE

/* 0, or -EOPNOTSUPP (logged) when libcurl.so.4 is missing or too old. */
int dlopen_curl(void);
