/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* dlopen_yaml(): dlopen-yaml.h. */

#include "dlopen-yaml.h"

static void *yaml_dl = NULL;

#define DLOPEN_YAML_DEFINE(s) DLSYM_PROTOTYPE(s) = NULL;
YAML_SYMBOLS(DLOPEN_YAML_DEFINE)

int dlopen_yaml(void) {
#define DLOPEN_YAML_ARG(s) DLSYM_ARG(s),
        return dlopen_many_sym(&yaml_dl, "libyaml-0.so.2", "reading a kubeconfig (libyaml-0-2)",
                               YAML_SYMBOLS(DLOPEN_YAML_ARG) NULL);
}
