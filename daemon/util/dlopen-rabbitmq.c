/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* dlopen_rabbitmq(): dlopen-rabbitmq.h. */

#include "dlopen-rabbitmq.h"

static void *rabbitmq_dl = NULL;

#define DLOPEN_RABBITMQ_DEFINE(s) DLSYM_PROTOTYPE(s) = NULL;
RABBITMQ_SYMBOLS(DLOPEN_RABBITMQ_DEFINE)

int dlopen_rabbitmq(void) {
#define DLOPEN_RABBITMQ_ARG(s) DLSYM_ARG(s),
        return dlopen_many_sym(&rabbitmq_dl, "librabbitmq.so.4",
                               "the Lagoon message bus, [Lagoon] BrokerURL= (librabbitmq4)",
                               RABBITMQ_SYMBOLS(DLOPEN_RABBITMQ_ARG) NULL);
}
