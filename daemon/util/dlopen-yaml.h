/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* libyaml, loaded when a kubeconfig is read ([Kubernetes] KubeConfig=): dlopen-util.h.
 * Call sym_yaml_*() only after dlopen_yaml() returned 0. */

#include <yaml.h>

#include "dlopen-util.h"

#define YAML_SYMBOLS(X) \
        X(yaml_document_delete) \
        X(yaml_document_get_node) \
        X(yaml_document_get_root_node) \
        X(yaml_parser_delete) \
        X(yaml_parser_initialize) \
        X(yaml_parser_load) \
        X(yaml_parser_set_input_string)

#define DLOPEN_YAML_DECLARE(s) extern DLSYM_PROTOTYPE(s);
YAML_SYMBOLS(DLOPEN_YAML_DECLARE)
#undef DLOPEN_YAML_DECLARE

/* 0, or -EOPNOTSUPP (logged) when libyaml-0.so.2 is missing. */
int dlopen_yaml(void);
