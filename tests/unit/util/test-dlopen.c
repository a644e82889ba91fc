/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* dlopen-util.c and the optional libraries: a missing library and a missing function
 * fail with -EOPNOTSUPP and leave nothing resolved; libcurl, librabbitmq and libyaml are
 * not mapped into this binary (linked like the daemon) until their dlopen_*() is called,
 * and are then, with every function resolved. */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dlopen-curl.h"
#include "dlopen-rabbitmq.h"
#include "dlopen-util.h"
#include "dlopen-yaml.h"
#include "macro.h"
#include "tests.h"

/* Whether a file whose name starts with prefix is mapped into this process. */
static bool mapped(const char *prefix) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/maps", "re");
        char line[4096];

        ASSERT(f);
        while (fgets(line, sizeof(line), f)) {
                const char *slash = strrchr(line, '/');
                if (slash && strncmp(slash + 1, prefix, strlen(prefix)) == 0)
                        return true;
        }
        return false;
}

static size_t (*test_strlen)(const char *) = NULL;
static void *test_absent = NULL;

TEST(missing) {
        void *dl = NULL;

        ASSERT_EQ(
                dlopen_many_sym(&dl, "libdoes-not-exist-lagoon.so.0", "a test", (void **) &test_strlen, "strlen", NULL),
                -EOPNOTSUPP);
        ASSERT(!dl);
        ASSERT(!test_strlen);

        /* All or none: strlen resolves, the next one does not. */
        ASSERT_EQ(dlopen_many_sym(&dl, "libc.so.6", "a test", (void **) &test_strlen, "strlen", &test_absent,
                                  "lagoon_no_such_function", NULL),
                  -EOPNOTSUPP);
        ASSERT(!dl);
        ASSERT(!test_strlen);

        ASSERT_OK(dlopen_many_sym(&dl, "libc.so.6", "a test", (void **) &test_strlen, "strlen", NULL));
        ASSERT(dl);
        ASSERT_EQ(test_strlen("four"), 4U);
        /* Loaded once: a second call changes nothing. */
        test_strlen = NULL;
        ASSERT_OK(dlopen_many_sym(&dl, "libc.so.6", "a test", (void **) &test_strlen, "strlen", NULL));
        ASSERT(!test_strlen);
}

TEST(libraries) {
        /* Nothing of the optional integrations is linked in. */
        ASSERT(!mapped("libcurl"));
        ASSERT(!mapped("librabbitmq"));
        ASSERT(!mapped("libyaml"));
        ASSERT(!mapped("libcrypto"));

        ASSERT_OK(dlopen_curl());
        ASSERT(mapped("libcurl"));
        ASSERT(sym_curl_easy_init && sym_curl_multi_socket_action && sym_curl_url_set);
        ASSERT_STREQ(sym_curl_easy_strerror(CURLE_OK), "No error");
        ASSERT(!mapped("librabbitmq"));

        ASSERT_OK(dlopen_rabbitmq());
        ASSERT(mapped("librabbitmq"));
        ASSERT(sym_amqp_new_connection && sym_init_amqp_pool && sym_amqp_ssl_socket_new);
        ASSERT_STREQ(sym_amqp_error_string2(AMQP_STATUS_OK), "operation completed successfully");

        ASSERT_OK(dlopen_yaml());
        ASSERT(mapped("libyaml"));
        ASSERT(sym_yaml_parser_initialize && sym_yaml_document_delete);

        /* Again: already loaded. */
        ASSERT_OK(dlopen_curl());
        ASSERT_OK(dlopen_rabbitmq());
        ASSERT_OK(dlopen_yaml());
}

int main(void) {
        RUN(missing);
        RUN(libraries);
        return 0;
}
