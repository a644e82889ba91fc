/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* kubeconfig.c: real kubeconfig files as kind, k3s and kubeadm write them (embedded
 * *-data blobs, file paths relative to the kubeconfig, tokens and token files, several
 * contexts), the errors a user sees for missing or unsupported items, garbage, and
 * in-cluster credentials from the environment and a service-account directory. */

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "kubeconfig.h"
#include "tests.h"

static char tmpdir[] = "/tmp/test-kubeconfig-XXXXXX";

/* "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" and friends. */
#define CA_PEM "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n"
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJjYQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg=="
#define CERT_PEM "-----BEGIN CERTIFICATE-----\nMIIBcl\n-----END CERTIFICATE-----\n"
#define CERT_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJjbAotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg=="
#define KEY_PEM "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n"
#define KEY_B64 "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0MKLS0tLS1FTkQgRUMgUFJJVkFURSBLRVktLS0tLQo="

static char *write_config(const char *name, const char *text) {
        char *p = strf("%s/%s", tmpdir, name);
        ASSERT_OK(write_file_atomic(p, text, strlen(text), 0600));
        return p;
}

static void check_file(const char *path, const char *content) {
        _cleanup_free_ char *t = NULL;
        struct stat st;

        ASSERT(path);
        ASSERT_OK(read_full_file(path, 1 << 20, &t, NULL));
        ASSERT_STREQ(t, content);
        ASSERT_OK(stat(path, &st));
        ASSERT_EQ(st.st_mode & 07777, 0600u);
}

static void check_error(const char *path, const char *context, int error, const char *message_part) {
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
        _cleanup_free_ char *err = NULL, *data = strf("%s/data-err", tmpdir);
        int r = kube_credentials_from_kubeconfig(path, context, data, &c, &err);

        if (r != error || !err || !strstr(err, message_part))
                fprintf(stderr, "got %d (%s), expected %d with \"%s\"\n", r, strna(err), error, message_part);
        ASSERT_EQ(r, error);
        ASSERT(!c);
        ASSERT(err && strstr(err, message_part));
        ASSERT(strstr(err, path) || strstr(message_part, "KUBERNETES"));
}

TEST(base64) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        size_t n = 0;

        ASSERT_OK(kube_base64_decode(CA_B64, strlen(CA_B64), &a, &n));
        ASSERT_STREQ(a, CA_PEM);
        ASSERT_EQ(n, strlen(CA_PEM));
        /* Without padding, with line breaks (base64 -w 76 style). */
        ASSERT_OK(kube_base64_decode("aGVs\nbG8", 8, &b, &n));
        ASSERT_STREQ(b, "hello");
        ASSERT_OK(kube_base64_decode("", 0, &c, &n));
        ASSERT_EQ(n, 0u);
        free(c);
        c = NULL;
        ASSERT_EQ(kube_base64_decode("aGVs!G8=", 8, &c, &n), -EINVAL);
        ASSERT_EQ(kube_base64_decode("aGVsbG8=x", 9, &c, &n), -EINVAL);
        ASSERT_EQ(kube_base64_decode("a", 1, &c, &n), -EINVAL);
        ASSERT_EQ(kube_base64_decode("aG\0s", 4, &c, &n), -EINVAL);
        ASSERT(!c);
}

/* kind writes exactly this shape (kind get kubeconfig). */
TEST(kind_data_blobs) {
        _cleanup_free_ char *path = write_config("kind.yaml", "apiVersion: v1\n"
                                                              "clusters:\n"
                                                              "- cluster:\n"
                                                              "    certificate-authority-data: " CA_B64 "\n"
                                                              "    server: https://127.0.0.1:45123/\n"
                                                              "  name: kind-kind\n"
                                                              "contexts:\n"
                                                              "- context:\n"
                                                              "    cluster: kind-kind\n"
                                                              "    user: kind-kind\n"
                                                              "  name: kind-kind\n"
                                                              "current-context: kind-kind\n"
                                                              "kind: Config\n"
                                                              "preferences: {}\n"
                                                              "users:\n"
                                                              "- name: kind-kind\n"
                                                              "  user:\n"
                                                              "    client-certificate-data: " CERT_B64 "\n"
                                                              "    client-key-data: " KEY_B64 "\n");
        _cleanup_free_ char *data = strf("%s/data/kind", tmpdir), *err = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

        ASSERT_OK(kube_credentials_from_kubeconfig(path, NULL, data, &c, &err));
        ASSERT(!err);
        ASSERT_STREQ(c->server, "https://127.0.0.1:45123");
        check_file(c->ca_file, CA_PEM);
        check_file(c->client_cert_file, CERT_PEM);
        check_file(c->client_key_file, KEY_PEM);
        ASSERT(startswith(c->ca_file, data));
        ASSERT(!c->token && !c->token_file && !c->namespace);

        /* Without a data directory the blobs cannot be used. */
        kube_credentials_free(TAKE_PTR(c));
        ASSERT_EQ(kube_credentials_from_kubeconfig(path, NULL, NULL, &c, &err), -EINVAL);
        ASSERT(strstr(err, "certificate-authority-data"));

        /* A copy is deep. */
        kube_credentials_free(TAKE_PTR(c));
        ASSERT_OK(kube_credentials_from_kubeconfig(path, "kind-kind", data, &c, NULL));
        _cleanup_(kube_credentials_freep) KubeCredentials *d = kube_credentials_copy(c);
        ASSERT(d && d->server != c->server);
        ASSERT_STREQ(d->client_key_file, c->client_key_file);
}

/* Several contexts, files relative to the kubeconfig, tokens, a namespace; flow style. */
TEST(contexts_files_tokens) {
        _cleanup_free_ char *sub = strf("%s/conf", tmpdir);
        ASSERT_OK(mkdir_p(sub, 0755));
        _cleanup_free_ char *path =
                write_config("conf/multi.yaml",
                             "apiVersion: v1\n"
                             "kind: Config\n"
                             "current-context: prod\n"
                             "clusters:\n"
                             "  - name: prod-cluster\n"
                             "    cluster: {server: 'https://[fd00::1]:6443', certificate-authority: certs/ca.pem}\n"
                             "  - name: k3s\n"
                             "    cluster:\n"
                             "      server: https://10.0.0.5:6443\n"
                             "      certificate-authority: /etc/rancher/k3s/ca.crt\n"
                             "users:\n"
                             "  - name: deployer\n"
                             "    user: {token: \"eyJhbGciOi.abc.def\"}\n"
                             "  - name: node\n"
                             "    user:\n"
                             "      tokenFile: tokens/node-token\n"
                             "  - name: admin\n"
                             "    user:\n"
                             "      client-certificate: admin.crt\n"
                             "      client-key: /abs/admin.key\n"
                             "contexts:\n"
                             "  - name: prod\n"
                             "    context: {cluster: prod-cluster, user: deployer, namespace: lagoon}\n"
                             "  - name: k3s-node\n"
                             "    context:\n"
                             "      cluster: k3s\n"
                             "      user: node\n"
                             "  - name: k3s-admin\n"
                             "    context: {cluster: k3s, user: admin}\n"
                             "  - name: anonymous\n"
                             "    context: {cluster: k3s}\n");
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;
        _cleanup_free_ char *ca = strf("%s/certs/ca.pem", sub), *tf = strf("%s/tokens/node-token", sub),
                            *crt = strf("%s/admin.crt", sub);

        ASSERT_OK(kube_credentials_from_kubeconfig(path, NULL, NULL, &c, NULL));
        ASSERT_STREQ(c->server, "https://[fd00::1]:6443");
        ASSERT_STREQ(c->ca_file, ca);
        ASSERT_STREQ(c->token, "eyJhbGciOi.abc.def");
        ASSERT_STREQ(c->namespace, "lagoon");
        ASSERT(!c->token_file && !c->client_cert_file);
        kube_credentials_free(TAKE_PTR(c));

        ASSERT_OK(kube_credentials_from_kubeconfig(path, "k3s-node", NULL, &c, NULL));
        ASSERT_STREQ(c->server, "https://10.0.0.5:6443");
        ASSERT_STREQ(c->ca_file, "/etc/rancher/k3s/ca.crt");
        ASSERT_STREQ(c->token_file, tf);
        ASSERT(!c->token && !c->namespace);
        kube_credentials_free(TAKE_PTR(c));

        ASSERT_OK(kube_credentials_from_kubeconfig(path, "k3s-admin", NULL, &c, NULL));
        ASSERT_STREQ(c->client_cert_file, crt);
        ASSERT_STREQ(c->client_key_file, "/abs/admin.key");
        kube_credentials_free(TAKE_PTR(c));

        /* A context without a user: server and CA only. */
        ASSERT_OK(kube_credentials_from_kubeconfig(path, "anonymous", NULL, &c, NULL));
        ASSERT(!c->token && !c->token_file && !c->client_cert_file);

        check_error(path, "nope", -ENOENT, "context \"nope\" not found");
}

TEST(errors) {
        static const struct {
                const char *yaml, *context;
                int error;
                const char *message;
        } cases[] = {
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {}}]\n",
                 NULL, -ENOENT, "user \"u\" has no credentials"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\n"
                 "users: [{name: u, user: {exec: {command: aws, args: [eks, get-token]}}}]\n",
                 NULL, -EOPNOTSUPP, "exec credential plugins are not supported"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\n"
                 "users: [{name: u, user: {auth-provider: {name: gcp}}}]\n",
                 NULL, -EOPNOTSUPP, "auth-provider"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\n"
                 "users: [{name: u, user: {username: admin, password: secret}}]\n",
                 NULL, -EOPNOTSUPP, "basic authentication"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x', insecure-skip-tls-verify: true}}]\n"
                 "users: [{name: u, user: {token: t}}]\n",
                 NULL, -EOPNOTSUPP, "insecure-skip-tls-verify"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: other, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {token: t}}]\n",
                 NULL, -ENOENT, "cluster \"c\" not found"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: v, user: {token: t}}]\n",
                 NULL, -ENOENT, "user \"u\" not found"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {certificate-authority: x}}]\nusers: [{name: u, user: {token: t}}]\n",
                 NULL, -EINVAL, "cluster \"c\" has no server"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'ftp://x'}}]\nusers: [{name: u, user: {token: t}}]\n",
                 NULL, -EINVAL, "not an http(s) URL"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'http://10.0.0.5:8080'}}]\nusers: [{name: u, user: {token: "
                 "t}}]\n",
                 NULL, -EINVAL, "over plain http"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x', certificate-authority: a, "
                 "certificate-authority-data: " CA_B64 "}}]\nusers: [{name: u, user: {token: t}}]\n",
                 NULL, -EINVAL, "both certificate-authority and certificate-authority-data"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x', certificate-authority-data: '%%%'}}]\n"
                 "users: [{name: u, user: {token: t}}]\n",
                 NULL, -EINVAL, "not valid base64"},
                {"current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\n"
                 "users: [{name: u, user: {client-certificate: a.crt}}]\n",
                 NULL, -EINVAL, "has a client certificate but no client key"},
                {"contexts: []\n", NULL, -ENOENT, "no current-context"},
                {"current-context: a\ncontexts: {a: b}\n", NULL, -EINVAL, "\"contexts\" is not a list"},
                {"current-context: a\ncontexts: [{name: a}]\n", NULL, -EINVAL, "has no \"context\" mapping"},
                {"current-context: a\ncontexts: [{name: a, context: {user: u}}]\n", NULL, -EINVAL, "names no cluster"},
                {"- just\n- a list\n", NULL, -EINVAL, "no top-level mapping"},
                {"", NULL, -EINVAL, "no top-level mapping"},
                {"a: [unclosed\n", NULL, -EINVAL, "invalid YAML"},
                {"a: b\n  c: d\n\t- e\n", NULL, -EINVAL, "invalid YAML"},
                {"\xff\xfe garbage\n", NULL, -EINVAL, "invalid YAML"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *name = strf("err-%zu.yaml", i);
                _cleanup_free_ char *path = write_config(name, cases[i].yaml);
                check_error(path, cases[i].context, cases[i].error, cases[i].message);
        }

        _cleanup_free_ char *missing = strf("%s/does-not-exist.yaml", tmpdir);
        check_error(missing, NULL, -ENOENT, "cannot read");
}

TEST(in_cluster) {
        _cleanup_free_ char *sa = strf("%s/sa", tmpdir), *token = strf("%s/token", sa), *ca = strf("%s/ca.crt", sa),
                            *ns = strf("%s/namespace", sa), *err = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *c = NULL;

        ASSERT_OK(mkdir_p(sa, 0755));
        unsetenv("KUBERNETES_SERVICE_HOST");
        unsetenv("KUBERNETES_SERVICE_PORT");
        ASSERT_EQ(kube_credentials_in_cluster(sa, &c, &err), -ENOENT);
        ASSERT(strstr(err, "KUBERNETES_SERVICE_HOST"));

        setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
        setenv("KUBERNETES_SERVICE_PORT", "443", 1);
        ASSERT_EQ(kube_credentials_in_cluster(sa, &c, &err), -ENOENT);
        ASSERT(strstr(err, token));

        ASSERT_OK(write_file_atomic(token, "tok", 3, 0600));
        ASSERT_OK(write_file_atomic(ca, CA_PEM, strlen(CA_PEM), 0644));
        ASSERT_OK(kube_credentials_in_cluster(sa, &c, NULL));
        ASSERT_STREQ(c->server, "https://10.96.0.1:443");
        ASSERT_STREQ(c->token_file, token);
        ASSERT_STREQ(c->ca_file, ca);
        ASSERT(!c->namespace && !c->token);
        kube_credentials_free(TAKE_PTR(c));

        ASSERT_OK(write_file_atomic(ns, "lagoon-main\n", 12, 0644));
        setenv("KUBERNETES_SERVICE_HOST", "fd00:10:96::1", 1);
        ASSERT_OK(kube_credentials_in_cluster(sa, &c, NULL));
        ASSERT_STREQ(c->server, "https://[fd00:10:96::1]:443");
        ASSERT_STREQ(c->namespace, "lagoon-main");
        kube_credentials_free(TAKE_PTR(c));

        setenv("KUBERNETES_SERVICE_PORT", "443/x", 1);
        ASSERT_EQ(kube_credentials_in_cluster(sa, &c, &err), -EINVAL);
        setenv("KUBERNETES_SERVICE_PORT", "443", 1);
        setenv("KUBERNETES_SERVICE_HOST", "evil/host", 1);
        ASSERT_EQ(kube_credentials_in_cluster(sa, &c, &err), -EINVAL);
        unsetenv("KUBERNETES_SERVICE_HOST");
        unsetenv("KUBERNETES_SERVICE_PORT");
}

int main(void) {
        ASSERT(mkdtemp(tmpdir));
        RUN(base64);
        RUN(kind_data_blobs);
        RUN(contexts_files_tokens);
        RUN(errors);
        RUN(in_cluster);
        ASSERT_OK(rm_rf(tmpdir));
        return 0;
}
