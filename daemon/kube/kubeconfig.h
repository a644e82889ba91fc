/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Where the API server is and how to authenticate to it: from a kubeconfig file (the
 * current or a named context), from the in-cluster service account, or filled in from
 * configuration by the caller. Only static credentials are supported (token, token
 * file, client certificate); exec and auth-provider plugins are refused with a clear
 * error. TLS verification is never switched off: insecure-skip-tls-verify is an error. */

#include "macro.h"

typedef struct KubeCredentials {
        char *server;           /* https://host:port, no trailing slash */
        char *ca_file;          /* NULL → system CAs */
        char *token;            /* static bearer token, or NULL */
        char *token_file;       /* re-read on every request (rotating tokens), or NULL */
        char *client_cert_file; /* PEM, with client_key_file */
        char *client_key_file;
        char *namespace; /* the context's / service account's namespace, or NULL */
} KubeCredentials;

#define KUBE_SERVICE_ACCOUNT_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* Reads the kubeconfig at path and resolves context (NULL = current-context) to its
 * cluster and user. Relative file paths are taken relative to the kubeconfig's
 * directory. *-data items (base64 PEM) are decoded and written as 0600 files into
 * data_dir (created if needed; ca.crt, client.crt, client.key); a kubeconfig with
 * *-data items and data_dir NULL is an error. Errors: -ENOENT (file, context, cluster
 * or user missing), -EINVAL (malformed YAML or items), -EOPNOTSUPP (exec,
 * auth-provider, username/password, insecure-skip-tls-verify), each with a message in
 * *ret_error naming the file and the item, e.g. `kubeconfig /x: context "foo" not
 * found`, `kubeconfig /x: user "u" has no credentials`. */
int kube_credentials_from_kubeconfig(const char *path,
                                     const char *context,
                                     const char *data_dir,
                                     KubeCredentials **ret,
                                     char **ret_error);

/* In-cluster: server from KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT (an IPv6
 * address is bracketed), token_file = <sa_dir>/token, ca_file = <sa_dir>/ca.crt, namespace
 * from <sa_dir>/namespace if present. sa_dir NULL = KUBE_SERVICE_ACCOUNT_DIR.
 * -ENOENT with a message when the variables or the token/CA files are missing. */
int kube_credentials_in_cluster(const char *sa_dir, KubeCredentials **ret, char **ret_error);

KubeCredentials *kube_credentials_new(void); /* all NULL; NULL on OOM */
KubeCredentials *kube_credentials_copy(const KubeCredentials *c);
KubeCredentials *kube_credentials_free(KubeCredentials *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeCredentials *, kube_credentials_free);

/* Decodes base64 (standard alphabet, padding optional, whitespace ignored). -EINVAL on
 * any other character. *ret is NUL-terminated. Exposed for tests. */
int kube_base64_decode(const char *s, size_t len, char **ret, size_t *ret_size);
