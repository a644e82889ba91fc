/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* API server credentials: a kubeconfig read with libyaml's document loader (only the
 * few items a node daemon needs: the context, its cluster's server and CA, its user's
 * token or client certificate, its namespace), or the in-cluster service account.
 * libyaml is loaded on the first kubeconfig (dlopen-yaml.h).
 * Embedded *-data blobs are decoded into private files because libcurl takes file
 * names. Library-like: no logging, errors as -errno plus a message naming the file and
 * the missing item. */

#include <errno.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>

#include "dlopen-yaml.h"
#include "fs-util.h"
#include "kubeconfig.h"
#include "parse-util.h"

#define KUBECONFIG_SIZE_MAX ((size_t) 4U * 1024U * 1024U)

KubeCredentials *kube_credentials_new(void) {
        return calloc(1, sizeof(KubeCredentials));
}

KubeCredentials *kube_credentials_free(KubeCredentials *c) {
        if (!c)
                return NULL;
        free(c->server);
        free(c->ca_file);
        if (c->token)
                explicit_bzero(c->token, strlen(c->token));
        free(c->token);
        free(c->token_file);
        free(c->client_cert_file);
        free(c->client_key_file);
        free(c->namespace);
        return mfree(c);
}

KubeCredentials *kube_credentials_copy(const KubeCredentials *c) {
        _cleanup_(kube_credentials_freep) KubeCredentials *n = NULL;

        if (!c)
                return NULL;
        n = kube_credentials_new();
        if (!n)
                return NULL;
        if (free_and_strdup(&n->server, c->server) < 0 || free_and_strdup(&n->ca_file, c->ca_file) < 0 ||
            free_and_strdup(&n->token, c->token) < 0 || free_and_strdup(&n->token_file, c->token_file) < 0 ||
            free_and_strdup(&n->client_cert_file, c->client_cert_file) < 0 ||
            free_and_strdup(&n->client_key_file, c->client_key_file) < 0 ||
            free_and_strdup(&n->namespace, c->namespace) < 0)
                return NULL;
        return TAKE_PTR(n);
}

int kube_base64_decode(const char *s, size_t len, char **ret, size_t *ret_size) {
        _cleanup_free_ char *out = NULL;
        size_t n = 0, pad = 0;
        unsigned bits = 0, nbits = 0;

        if (!s && len > 0)
                return -EINVAL;
        out = malloc(len / 4 * 3 + 4);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                int v;

                if (strchr(" \t\r\n", c) && c != 0)
                        continue;
                if (c == '=') {
                        pad++;
                        continue;
                }
                if (pad > 0) /* data after padding */
                        return -EINVAL;
                v = base64_char_value(c);
                if (v < 0)
                        return -EINVAL;
                bits = (bits << 6) | (unsigned) v;
                nbits += 6;
                if (nbits >= 8) {
                        nbits -= 8;
                        out[n++] = (char) ((bits >> nbits) & 0xff);
                }
        }
        /* A single leftover sextet cannot encode a byte; more than two '=' is wrong. */
        if (nbits >= 6 || pad > 2)
                return -EINVAL;
        out[n] = 0;
        *ret = TAKE_PTR(out);
        if (ret_size)
                *ret_size = n;
        return 0;
}

/* ---- YAML document access ---- */

typedef struct Doc {
        yaml_document_t doc;
        const char *path;
        char **ret_error;
} Doc;

static yaml_node_t *map_get(Doc *d, yaml_node_t *map, const char *key) {
        if (!map || map->type != YAML_MAPPING_NODE)
                return NULL;
        for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
                yaml_node_t *k = sym_yaml_document_get_node(&d->doc, p->key);
                if (k && k->type == YAML_SCALAR_NODE && k->data.scalar.length == strlen(key) &&
                    memcmp(k->data.scalar.value, key, k->data.scalar.length) == 0)
                        return sym_yaml_document_get_node(&d->doc, p->value);
        }
        return NULL;
}

/* The scalar's text; NULL if absent, not a scalar, empty, or with a NUL inside. */
static const char *scalar(yaml_node_t *n) {
        if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.length == 0)
                return NULL;
        if (strlen((const char *) n->data.scalar.value) != n->data.scalar.length)
                return NULL;
        return (const char *) n->data.scalar.value;
}

static bool is_true(yaml_node_t *n) {
        const char *s = scalar(n);
        return s && (streq(s, "true") || streq(s, "True") || streq(s, "TRUE") || streq(s, "yes"));
}

/* Finds the entry of a named list (clusters, users, contexts) and returns its inner
 * mapping (entry[inner]). */
static int find_named(Doc *d,
                      yaml_node_t *root,
                      const char *list,
                      const char *inner,
                      const char *what,
                      const char *name,
                      yaml_node_t **ret) {
        yaml_node_t *l = map_get(d, root, list);

        if (l && l->type != YAML_SEQUENCE_NODE)
                return error_message(d->ret_error, -EINVAL, "kubeconfig %s: \"%s\" is not a list", d->path, list);
        for (yaml_node_item_t *i = l ? l->data.sequence.items.start : NULL; l && i < l->data.sequence.items.top; i++) {
                yaml_node_t *e = sym_yaml_document_get_node(&d->doc, *i);
                const char *n = scalar(map_get(d, e, "name"));
                if (!n || !streq(n, name))
                        continue;
                yaml_node_t *body = map_get(d, e, inner);
                if (!body || body->type != YAML_MAPPING_NODE)
                        return error_message(d->ret_error, -EINVAL, "kubeconfig %s: %s \"%s\" has no \"%s\" mapping",
                                             d->path, what, name, inner);
                *ret = body;
                return 0;
        }
        return error_message(d->ret_error, -ENOENT, "kubeconfig %s: %s \"%s\" not found", d->path, what, name);
}

/* A file item: absolute, or relative to the kubeconfig's directory. */
static int file_item(Doc *d, const char *dir, const char *value, char **ret) {
        char *p = value[0] == '/' ? strdup(value) : path_join(dir, value);
        if (!p)
                return -ENOMEM;
        free(*ret);
        *ret = p;
        return 0;
}

/* A *-data item: base64 PEM written to data_dir/name (0600). */
static int data_item(Doc *d, const char *data_dir, const char *item, const char *value, const char *name, char **ret) {
        _cleanup_free_ char *decoded = NULL, *p = NULL;
        size_t size = 0;
        int r;

        if (!data_dir)
                return error_message(d->ret_error, -EINVAL, "kubeconfig %s: %s needs a directory to write it to",
                                     d->path, item);
        r = kube_base64_decode(value, strlen(value), &decoded, &size);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || size == 0)
                return error_message(d->ret_error, -EINVAL, "kubeconfig %s: %s is not valid base64", d->path, item);
        r = mkdir_p(data_dir, 0700);
        if (r < 0)
                return error_message(d->ret_error, r, "kubeconfig %s: cannot create %s: %s", d->path, data_dir,
                                     strerror(-r));
        p = path_join(data_dir, name);
        if (!p)
                return -ENOMEM;
        r = write_file_atomic(p, decoded, size, 0600);
        explicit_bzero(decoded, size);
        if (r < 0)
                return error_message(d->ret_error, r, "kubeconfig %s: cannot write %s: %s", d->path, p, strerror(-r));
        free(*ret);
        *ret = TAKE_PTR(p);
        return 0;
}

/* item (file) or item-data (blob); both set is an error, as kubectl says. */
static int file_or_data(Doc *d,
                        yaml_node_t *body,
                        const char *item,
                        const char *dir,
                        const char *data_dir,
                        const char *name,
                        char **ret) {
        _cleanup_free_ char *data_key = NULL;
        const char *file, *data;

        if (asprintf(&data_key, "%s-data", item) < 0)
                return -ENOMEM;
        file = scalar(map_get(d, body, item));
        data = scalar(map_get(d, body, data_key));
        if (file && data)
                return error_message(d->ret_error, -EINVAL, "kubeconfig %s: both %s and %s are set", d->path, item,
                                     data_key);
        if (data)
                return data_item(d, data_dir, data_key, data, name, ret);
        if (file)
                return file_item(d, dir, file, ret);
        return 0;
}

static void yaml_parser_deletep(yaml_parser_t **p) {
        if (*p)
                sym_yaml_parser_delete(*p);
}

/* The cluster's server and CA. */
static int credentials_cluster(Doc *d,
                               yaml_node_t *cluster,
                               const char *cluster_name,
                               const char *dir,
                               const char *data_dir,
                               KubeCredentials *c) {
        const char *server;

        server = scalar(map_get(d, cluster, "server"));
        if (!server)
                return error_message(d->ret_error, -EINVAL, "kubeconfig %s: cluster \"%s\" has no server", d->path,
                                     cluster_name);
        if (!startswith(server, "https://") && !startswith(server, "http://"))
                return error_message(d->ret_error, -EINVAL,
                                     "kubeconfig %s: cluster \"%s\": server \"%s\" is not an http(s) URL", d->path,
                                     cluster_name, server);
        if (startswith(server, "http://") && !url_host_is_loopback(server))
                return error_message(d->ret_error, -EINVAL,
                                     "kubeconfig %s: cluster \"%s\": server \"%s\" would get credentials over plain "
                                     "http (only loopback may)",
                                     d->path, cluster_name, server);
        c->server = strdup(server);
        if (!c->server)
                return -ENOMEM;
        for (size_t l = strlen(c->server); l > 0 && c->server[l - 1] == '/'; l--)
                c->server[l - 1] = 0;
        if (is_true(map_get(d, cluster, "insecure-skip-tls-verify")))
                return error_message(d->ret_error, -EOPNOTSUPP,
                                     "kubeconfig %s: cluster \"%s\": insecure-skip-tls-verify is not supported "
                                     "(give the cluster's CA instead)",
                                     d->path, cluster_name);
        return file_or_data(d, cluster, "certificate-authority", dir, data_dir, "ca.crt", &c->ca_file);
}

/* The user's token, token file or client certificate: plugins and basic authentication
 * are refused with a text saying what to use instead. */
static int credentials_user(Doc *d,
                            yaml_node_t *user,
                            const char *user_name,
                            const char *dir,
                            const char *data_dir,
                            KubeCredentials *c) {
        const char *token, *token_file;
        int r;

        if (map_get(d, user, "exec"))
                return error_message(d->ret_error, -EOPNOTSUPP,
                                     "kubeconfig %s: user \"%s\": exec credential plugins are not supported "
                                     "(use a token, token file or client certificate)",
                                     d->path, user_name);
        if (map_get(d, user, "auth-provider"))
                return error_message(d->ret_error, -EOPNOTSUPP,
                                     "kubeconfig %s: user \"%s\": auth-provider plugins are not supported "
                                     "(use a token, token file or client certificate)",
                                     d->path, user_name);
        token = scalar(map_get(d, user, "token"));
        token_file = scalar(map_get(d, user, "tokenFile"));
        if (token && !(c->token = strdup(token)))
                return -ENOMEM;
        if (!token && token_file) {
                r = file_item(d, dir, token_file, &c->token_file);
                if (r < 0)
                        return r;
        }
        r = file_or_data(d, user, "client-certificate", dir, data_dir, "client.crt", &c->client_cert_file);
        if (r < 0)
                return r;
        r = file_or_data(d, user, "client-key", dir, data_dir, "client.key", &c->client_key_file);
        if (r < 0)
                return r;
        if (!!c->client_cert_file != !!c->client_key_file)
                return error_message(d->ret_error, -EINVAL,
                                     "kubeconfig %s: user \"%s\" has a client %s but no client %s", d->path, user_name,
                                     c->client_cert_file ? "certificate" : "key",
                                     c->client_cert_file ? "key" : "certificate");
        if (!c->token && !c->token_file && !c->client_cert_file) {
                if (map_get(d, user, "username") || map_get(d, user, "password"))
                        return error_message(d->ret_error, -EOPNOTSUPP,
                                             "kubeconfig %s: user \"%s\": basic authentication is not supported",
                                             d->path, user_name);
                return error_message(d->ret_error, -ENOENT, "kubeconfig %s: user \"%s\" has no credentials", d->path,
                                     user_name);
        }
        return 0;
}

/* The credentials of the context (context, or current-context) of a loaded kubeconfig. */
static int
credentials_from_document(Doc *d, const char *context, const char *dir, const char *data_dir, KubeCredentials **ret) {
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
        yaml_node_t *root, *ctx, *cluster, *user = NULL;
        const char *ctx_name, *cluster_name, *user_name, *namespace;
        int r;

        root = sym_yaml_document_get_root_node(&d->doc);
        if (!root || root->type != YAML_MAPPING_NODE)
                return error_message(d->ret_error, -EINVAL, "kubeconfig %s: not a kubeconfig (no top-level mapping)",
                                     d->path);

        ctx_name = context ?: scalar(map_get(d, root, "current-context"));
        if (!ctx_name)
                return error_message(d->ret_error, -ENOENT,
                                     "kubeconfig %s: no current-context set and no context given", d->path);
        r = find_named(d, root, "contexts", "context", "context", ctx_name, &ctx);
        if (r < 0)
                return r;
        cluster_name = scalar(map_get(d, ctx, "cluster"));
        if (!cluster_name)
                return error_message(d->ret_error, -EINVAL, "kubeconfig %s: context \"%s\" names no cluster", d->path,
                                     ctx_name);
        r = find_named(d, root, "clusters", "cluster", "cluster", cluster_name, &cluster);
        if (r < 0)
                return r;
        user_name = scalar(map_get(d, ctx, "user"));
        if (user_name) {
                r = find_named(d, root, "users", "user", "user", user_name, &user);
                if (r < 0)
                        return r;
        }

        c = kube_credentials_new();
        if (!c)
                return -ENOMEM;
        r = credentials_cluster(d, cluster, cluster_name, dir, data_dir, c);
        if (r < 0)
                return r;
        /* The context's namespace. */
        namespace = scalar(map_get(d, ctx, "namespace"));
        if (namespace && !(c->namespace = strdup(namespace)))
                return -ENOMEM;
        if (user) {
                r = credentials_user(d, user, user_name, dir, data_dir, c);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(c);
        return 0;
}

int kube_credentials_from_kubeconfig(const char *path,
                                     const char *context,
                                     const char *data_dir,
                                     KubeCredentials **ret,
                                     char **ret_error) {
        _cleanup_free_ char *text = NULL, *dir = NULL, *path_copy = NULL;
        yaml_parser_t parser_storage;
        _cleanup_(yaml_parser_deletep) yaml_parser_t *parser = NULL;
        Doc d = {.path = path, .ret_error = ret_error};
        size_t size = 0;
        int r;

        if (!path || !ret)
                return -EINVAL;

        r = read_full_file(path, KUBECONFIG_SIZE_MAX, &text, &size);
        if (r < 0)
                return error_message(ret_error, r, "kubeconfig %s: cannot read: %s", path, strerror(-r));
        path_copy = strdup(path);
        if (!path_copy)
                return -ENOMEM;
        dir = strdup(dirname(path_copy));
        if (!dir)
                return -ENOMEM;

        r = dlopen_yaml();
        if (r < 0)
                return error_message(ret_error, r, "kubeconfig %s: cannot read it without libyaml", path);
        if (!sym_yaml_parser_initialize(&parser_storage))
                return -ENOMEM;
        parser = &parser_storage;
        sym_yaml_parser_set_input_string(parser, (const unsigned char *) text, size);
        if (!sym_yaml_parser_load(parser, &d.doc))
                r = error_message(ret_error, -EINVAL, "kubeconfig %s: invalid YAML: %s at line %zu", path,
                                  strna(parser->problem), parser->problem_mark.line + 1);
        else {
                r = credentials_from_document(&d, context, dir, data_dir, ret);
                sym_yaml_document_delete(&d.doc);
        }
        explicit_bzero(text, size);
        return r;
}

int kube_credentials_in_cluster(const char *sa_dir, KubeCredentials **ret, char **ret_error) {
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
        _cleanup_free_ char *ns = NULL;
        const char *host, *port;
        int r;

        if (!ret)
                return -EINVAL;
        sa_dir = sa_dir ?: KUBE_SERVICE_ACCOUNT_DIR;

        host = getenv("KUBERNETES_SERVICE_HOST");
        port = getenv("KUBERNETES_SERVICE_PORT");
        if (isempty(host) || isempty(port))
                return error_message(ret_error, -ENOENT,
                                     "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
                                     "must be set");
        if (strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
                return error_message(ret_error, -EINVAL, "KUBERNETES_SERVICE_PORT=%s is not a port", port);
        if (strpbrk(host, "/@?#[] "))
                return error_message(ret_error, -EINVAL, "KUBERNETES_SERVICE_HOST=%s is not a host", host);

        c = kube_credentials_new();
        if (!c)
                return -ENOMEM;
        /* IPv6 literals go in brackets in a URL. */
        if (asprintf(&c->server, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port) < 0) {
                c->server = NULL;
                return -ENOMEM;
        }
        c->token_file = path_join(sa_dir, "token");
        c->ca_file = path_join(sa_dir, "ca.crt");
        if (!c->token_file || !c->ca_file)
                return -ENOMEM;
        if (access(c->token_file, R_OK) < 0) {
                r = -errno;
                return error_message(ret_error, r, "service account token %s: %s", c->token_file, strerror(-r));
        }
        if (access(c->ca_file, R_OK) < 0) {
                r = -errno;
                return error_message(ret_error, r, "service account CA %s: %s", c->ca_file, strerror(-r));
        }

        _cleanup_free_ char *ns_path = path_join(sa_dir, "namespace");
        if (!ns_path)
                return -ENOMEM;
        r = read_full_file(ns_path, 4096, &ns, NULL);
        if (r >= 0) {
                ns[strcspn(ns, " \t\r\n")] = 0;
                if (!isempty(ns))
                        c->namespace = TAKE_PTR(ns);
        } else if (r != -ENOENT)
                return error_message(ret_error, r, "service account namespace %s: %s", ns_path, strerror(-r));

        *ret = TAKE_PTR(c);
        return 0;
}
