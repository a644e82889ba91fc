/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Derivation of a task's OCI bundle config from the service's: this module owns the
 * rules for what a task container inherits from its service (mounts, namespaces, user,
 * capabilities, resources: everything not named below) and what it gets of its own
 * (command, variables, hostname, root, cgroup, annotations, seccomp profile), and for a
 * clone of a Kubernetes (CRI) container what must not be shared with the pod (uts
 * namespace, the termination-message file, the runtime's annotations). The input
 * is outside data (a runtime's config.json), so it is checked shape by shape and every
 * problem is reported with the JSON path it was found at. It also looks into the
 * service's rootfs for Lagoon's entrypoint wrapper, never leaving that rootfs. */

#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "bundle.h"
#include "fs-util.h"
#include "seccomp-bpf.h"
#include "seccomp-profile.h"

#define BUNDLE_CONFIG_SIZE_MAX (4U * 1024U * 1024U)
#define SYMLINKS_MAX 40U

/* Optional members: absent and null are the same (Go writes null for a nil map). */
static const JsonValue *get_optional(const JsonValue *obj, const char *key) {
        const JsonValue *v = json_get(obj, key);
        return v && json_type(v) != JSON_NULL ? v : NULL;
}

static int remove_optional(JsonValue *obj, const char *key) {
        int r = json_object_remove(obj, key);
        return r == -ENOENT ? 0 : r;
}

static int check_string_array(const JsonValue *v, const char *where, char **ret_error) {
        if (!json_is_array(v))
                return error_message(ret_error, -EINVAL, "config.json: %s is not an array", where);
        for (size_t i = 0; i < json_length(v); i++)
                if (!json_is_string(json_array_at(v, i)))
                        return error_message(ret_error, -EINVAL, "config.json: %s[%zu] is not a string", where, i);
        return 0;
}

/* The shape checks for what we modify or what the runtime needs to make sense of it;
 * the runtime validates the rest. */
static int validate_config(const JsonValue *c, char **ret_error) {
        const JsonValue *process, *root, *v, *linux_obj;
        const char *path;
        int r;

        if (!json_is_object(c))
                return error_message(ret_error, -EINVAL, "config.json: not a JSON object but %s",
                                     c ? json_type_to_string(json_type(c)) : "nothing");

        v = json_get(c, "ociVersion");
        if (!v)
                return error_message(ret_error, -EINVAL, "config.json: ociVersion is missing");
        if (!json_is_string(v))
                return error_message(ret_error, -EINVAL, "config.json: ociVersion is not a string");

        process = json_get(c, "process");
        if (!process)
                return error_message(ret_error, -EINVAL, "config.json: process is missing");
        if (!json_is_object(process))
                return error_message(ret_error, -EINVAL, "config.json: process is not an object");

        v = get_optional(process, "env");
        if (v) {
                r = check_string_array(v, "process.env", ret_error);
                if (r < 0)
                        return r;
        }
        v = get_optional(process, "cwd");
        if (v && !json_is_string(v))
                return error_message(ret_error, -EINVAL, "config.json: process.cwd is not a string");
        v = get_optional(process, "user");
        if (v && !json_is_object(v))
                return error_message(ret_error, -EINVAL, "config.json: process.user is not an object");
        v = get_optional(process, "capabilities");
        if (v && !json_is_object(v))
                return error_message(ret_error, -EINVAL, "config.json: process.capabilities is not an object");

        root = json_get(c, "root");
        if (!root)
                return error_message(ret_error, -EINVAL, "config.json: root is missing");
        if (!json_is_object(root))
                return error_message(ret_error, -EINVAL, "config.json: root is not an object");
        v = json_get(root, "path");
        if (!v)
                return error_message(ret_error, -EINVAL, "config.json: root.path is missing");
        path = json_string(v);
        if (!path)
                return error_message(ret_error, -EINVAL, "config.json: root.path is not a string");
        if (isempty(path))
                return error_message(ret_error, -EINVAL, "config.json: root.path is empty");

        v = get_optional(c, "mounts");
        if (v) {
                if (!json_is_array(v))
                        return error_message(ret_error, -EINVAL, "config.json: mounts is not an array");
                for (size_t i = 0; i < json_length(v); i++) {
                        const JsonValue *m = json_array_at(v, i);
                        if (!json_is_object(m))
                                return error_message(ret_error, -EINVAL, "config.json: mounts[%zu] is not an object",
                                                     i);
                        if (!json_is_string(json_get(m, "destination")))
                                return error_message(ret_error, -EINVAL,
                                                     "config.json: mounts[%zu].destination is missing or not a string",
                                                     i);
                }
        }

        v = get_optional(c, "annotations");
        if (v) {
                if (!json_is_object(v))
                        return error_message(ret_error, -EINVAL, "config.json: annotations is not an object");
                for (size_t i = 0; i < json_length(v); i++)
                        if (!json_is_string(json_object_value_at(v, i)))
                                return error_message(ret_error, -EINVAL, "config.json: annotations.%s is not a string",
                                                     json_object_key_at(v, i));
        }

        v = get_optional(c, "hostname");
        if (v && !json_is_string(v))
                return error_message(ret_error, -EINVAL, "config.json: hostname is not a string");

        linux_obj = get_optional(c, "linux");
        if (linux_obj) {
                if (!json_is_object(linux_obj))
                        return error_message(ret_error, -EINVAL, "config.json: linux is not an object");
                v = get_optional(linux_obj, "namespaces");
                if (v && !json_is_array(v))
                        return error_message(ret_error, -EINVAL, "config.json: linux.namespaces is not an array");
                for (size_t i = 0; v && i < json_length(v); i++) {
                        const JsonValue *n = json_array_at(v, i), *ns_path;

                        if (!json_is_object(n) || !json_is_string(json_get(n, "type")))
                                return error_message(ret_error, -EINVAL,
                                                     "config.json: linux.namespaces[%zu] is not an object with a type",
                                                     i);
                        ns_path = get_optional(n, "path");
                        if (ns_path && !json_is_string(ns_path))
                                return error_message(ret_error, -EINVAL,
                                                     "config.json: linux.namespaces[%zu].path is not a string", i);
                }
                v = get_optional(linux_obj, "sysctl");
                if (v && !json_is_object(v))
                        return error_message(ret_error, -EINVAL, "config.json: linux.sysctl is not an object");
                v = get_optional(linux_obj, "seccomp");
                if (v && !json_is_object(v))
                        return error_message(ret_error, -EINVAL, "config.json: linux.seccomp is not an object");
        }
        return 0;
}

/* Length of the key of a "K=V" entry (the whole entry when it has no '='). */
static size_t env_key_length(const char *e) {
        return strcspn(e, "=");
}

static bool env_entry_has_key(const char *entry, const char *key, size_t key_length) {
        return strncmp(entry, key, key_length) == 0 && (entry[key_length] == '=' || entry[key_length] == 0);
}

/* Appends the extra bind mounts (validated by check_params()). */
static int add_mounts(JsonValue *c, const BundleParams *p) {
        JsonValue *mounts = json_get(c, "mounts");
        int r;

        if (p->n_mounts_add == 0)
                return 0;
        if (!mounts) {
                r = json_object_set(c, "mounts", json_new_array());
                if (r < 0)
                        return r;
                mounts = json_get(c, "mounts");
        }
        if (!json_is_array(mounts))
                return -EINVAL;
        for (size_t i = 0; i < p->n_mounts_add; i++) {
                _cleanup_json_ JsonValue *m = json_new_object();
                _cleanup_strv_free_ char **options = NULL;

                if (!m)
                        return -ENOMEM;
                if (strv_extend(&options, "rbind") < 0 || strv_extend(&options, "nosuid") < 0 ||
                    strv_extend(&options, "nodev") < 0 ||
                    strv_extend(&options, p->mounts_add[i].read_only ? "ro" : "rw") < 0)
                        return -ENOMEM;
                if ((r = json_object_set_string(m, "destination", p->mounts_add[i].destination)) < 0 ||
                    (r = json_object_set_string(m, "type", "bind")) < 0 ||
                    (r = json_object_set_string(m, "source", p->mounts_add[i].source)) < 0 ||
                    (r = json_object_set(m, "options", json_new_strv(options))) < 0)
                        return r;
                r = json_array_append(mounts, TAKE_PTR(m));
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The kubelet bind-mounts a per-container file for the termination message
 * (<root>/pods/<uid>/containers/<name>/<random>, at /dev/termination-log unless the pod
 * says otherwise). It is the service's own: a task writing its message there would become
 * the service's last words. Not mounted, a task's write lands in its own /dev. */
static bool is_termination_log_mount(const JsonValue *m) {
        const char *source = json_get_string(m, "source");

        if (streq_ptr(json_get_string(m, "destination"), "/dev/termination-log"))
                return true;
        for (const char *p = source ? strstr(source, "/pods/") : NULL; p; p = strstr(p + 1, "/pods/")) {
                const char *c = p + strlen("/pods/");
                size_t len[4];
                unsigned n = 0;

                /* Exactly four components follow: uid, "containers", name, file. */
                while (*c && n < 4) {
                        len[n] = strcspn(c, "/");
                        if (len[n] == 0)
                                break;
                        c += len[n];
                        n++;
                        if (*c == '/')
                                c++;
                }
                if (n == 4 && *c == 0 && c[-1] != '/' && len[1] == strlen("containers") &&
                    strncmp(p + strlen("/pods/") + len[0] + 1, "containers", len[1]) == 0)
                        return true;
        }
        return false;
}

static int drop_termination_log(JsonValue *c) {
        JsonValue *mounts = json_get(c, "mounts");

        for (size_t i = 0; json_is_array(mounts) && i < json_length(mounts);) {
                if (is_termination_log_mount(json_array_at(mounts, i))) {
                        int r = json_array_remove_at(mounts, i);
                        if (r < 0)
                                return r;
                } else
                        i++;
        }
        return 0;
}

/* A private uts namespace for our hostname (a CRI container shares its sandbox's by path,
 * and setting the hostname there would rename the pod; runc refuses a hostname without
 * one), and the given network namespace. The others (ipc, pid…) stay as the service had
 * them. Returns whether the ipc namespace is joined by path. */
static int fix_namespaces(JsonValue *linux_obj, const BundleParams *p, bool *ret_ipc_joined) {
        JsonValue *namespaces;
        bool have_uts = false, have_net = false;
        int r;

        *ret_ipc_joined = false;
        namespaces = json_get(linux_obj, "namespaces");
        if (namespaces && json_type(namespaces) == JSON_NULL) {
                r = json_object_remove(linux_obj, "namespaces");
                if (r < 0)
                        return r;
                namespaces = NULL;
        }
        if (!namespaces) {
                if (!p->hostname && !p->netns_path)
                        return 0;
                r = json_object_set(linux_obj, "namespaces", json_new_array());
                if (r < 0)
                        return r;
                namespaces = json_get(linux_obj, "namespaces");
        }

        for (size_t i = 0; i < json_length(namespaces); i++) {
                JsonValue *n = json_array_at(namespaces, i);
                const char *type = json_get_string(n, "type");

                if (streq_ptr(type, "uts") && p->hostname) {
                        r = remove_optional(n, "path");
                        if (r < 0)
                                return r;
                        have_uts = true;
                } else if (streq_ptr(type, "network") && p->netns_path) {
                        r = json_object_set_string(n, "path", p->netns_path);
                        if (r < 0)
                                return r;
                        have_net = true;
                } else if (streq_ptr(type, "ipc") && !isempty(json_get_string(n, "path")))
                        *ret_ipc_joined = true;
        }

        if (p->hostname && !have_uts) {
                _cleanup_json_ JsonValue *n = json_new_object();

                if (!n)
                        return -ENOMEM;
                r = json_object_set_string(n, "type", "uts");
                if (r < 0)
                        return r;
                r = json_array_append(namespaces, TAKE_PTR(n));
                if (r < 0)
                        return r;
        }
        if (p->netns_path && !have_net) {
                _cleanup_json_ JsonValue *n = json_new_object();

                if (!n)
                        return -ENOMEM;
                r = json_object_set_string(n, "type", "network");
                if (r >= 0)
                        r = json_object_set_string(n, "path", p->netns_path);
                if (r < 0)
                        return r;
                r = json_array_append(namespaces, TAKE_PTR(n));
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool sysctl_of_joined_namespace(const char *key, bool net_joined, bool ipc_joined) {
        if (net_joined && startswith(key, "net."))
                return true;
        return ipc_joined && (startswith(key, "kernel.shm") || startswith(key, "kernel.msg") ||
                              streq(key, "kernel.sem") || startswith(key, "fs.mqueue."));
}

/* Sysctls of a namespace we join belong to its owner (the pod sandbox): the runtime
 * would write them again, into the pod's live namespace. */
static int drop_joined_sysctls(JsonValue *linux_obj, bool net_joined, bool ipc_joined) {
        JsonValue *sysctl = json_get(linux_obj, "sysctl");

        if (!json_is_object(sysctl) || (!net_joined && !ipc_joined))
                return 0;
        for (size_t i = 0; i < json_length(sysctl);) {
                const char *key = json_object_key_at(sysctl, i);

                if (key && sysctl_of_joined_namespace(key, net_joined, ipc_joined)) {
                        _cleanup_free_ char *k = strdup(key);
                        int r;

                        if (!k)
                                return -ENOMEM;
                        r = json_object_remove(sysctl, k);
                        if (r < 0)
                                return r;
                        i = 0; /* removal of a duplicate key may shift anything */
                } else
                        i++;
        }
        return 0;
}

/* The CRI runtimes' own annotations (io.kubernetes.cri.container-type, sandbox-id,
 * io.kubernetes.cri-o.*, io.kubernetes.pod.*, io.container.manager) say "this container
 * is a CRI container of pod X": tools reading runtime state would take the task for
 * the runtime's, and the runtime or its shim could act on it. */
static bool annotation_is_cri(const char *key) {
        return startswith(key, "io.kubernetes.") || streq(key, "io.container.manager");
}

static int drop_cri_annotations(JsonValue *annotations) {
        for (size_t i = 0; i < json_length(annotations);) {
                const char *key = json_object_key_at(annotations, i);

                if (key && annotation_is_cri(key)) {
                        _cleanup_free_ char *k = strdup(key);
                        int r;

                        if (!k)
                                return -ENOMEM;
                        r = json_object_remove(annotations, k);
                        if (r < 0)
                                return r;
                        i = 0;
                } else
                        i++;
        }
        return 0;
}

static int check_params(const BundleParams *p, char **ret_error) {
        if (p->args && strv_length(p->args) == 0)
                return error_message(ret_error, -EINVAL, "task has no command (process.args is empty)");
        for (size_t i = 0; i < p->n_mounts_add; i++)
                if (isempty(p->mounts_add[i].source) || p->mounts_add[i].source[0] != '/' ||
                    isempty(p->mounts_add[i].destination) || p->mounts_add[i].destination[0] != '/')
                        return error_message(ret_error, -EINVAL, "bind mount %s → %s needs absolute paths",
                                             strempty(p->mounts_add[i].source), strempty(p->mounts_add[i].destination));
        if (isempty(p->root_path) || p->root_path[0] != '/')
                return error_message(ret_error, -EINVAL, "task root path '%s' is not absolute", strempty(p->root_path));
        for (char *const *e = p->env_add; e && *e; e++)
                if (!strchr(*e, '=') || env_key_length(*e) == 0)
                        return error_message(ret_error, -EINVAL,
                                             "invalid environment assignment '%s' (expected KEY=VALUE)", *e);
        for (char *const *e = p->env_remove; e && *e; e++)
                if (isempty(*e) || strchr(*e, '='))
                        return error_message(ret_error, -EINVAL, "invalid environment variable name '%s'", *e);
        for (char *const *a = p->annotations; a && *a; a++)
                if (!strchr(*a, '=') || **a == '=')
                        return error_message(ret_error, -EINVAL, "invalid annotation '%s' (expected KEY=VALUE)", *a);
        if (p->netns_path && (p->netns_path[0] != '/'))
                return error_message(ret_error, -EINVAL, "network namespace path '%s' is not absolute", p->netns_path);
        if (p->seccomp == SECCOMP_MODE_PROFILE && !json_is_object(p->seccomp_profile))
                return error_message(ret_error, -EINVAL, "seccomp profile is missing or not a JSON object");
        if (p->seccomp < SECCOMP_MODE_AUTO || p->seccomp > SECCOMP_MODE_PROFILE)
                return error_message(ret_error, -EINVAL, "unknown seccomp mode %d", (int) p->seccomp);
        return 0;
}

static void strv_remove_at(char **l, size_t i) {
        free(l[i]);
        memmove(l + i, l + i + 1, (strv_length(l + i + 1) + 1) * sizeof(char *));
}

/* The service's variables minus env_remove, then env_add: a key the service already has
 * is replaced where it stands (and later duplicates dropped, so the new value is the one
 * getenv() finds), a new key is appended. */
static int derive_env(const JsonValue *service_env, const BundleParams *p, char ***ret) {
        _cleanup_strv_free_ char **env = NULL;
        int r;

        if (service_env) {
                r = json_to_strv(service_env, &env);
                if (r < 0)
                        return r;
        } else {
                env = calloc(1, sizeof(char *));
                if (!env)
                        return -ENOMEM;
        }

        for (size_t i = 0; env[i];) {
                size_t kl = env_key_length(env[i]);
                bool drop = false;

                for (char *const *k = p->env_remove; k && *k && !drop; k++)
                        drop = strlen(*k) == kl && strncmp(env[i], *k, kl) == 0;
                if (drop)
                        strv_remove_at(env, i);
                else
                        i++;
        }

        for (char *const *a = p->env_add; a && *a; a++) {
                size_t kl = env_key_length(*a);
                bool found = false;

                for (size_t i = 0; env[i];) {
                        if (!env_entry_has_key(env[i], *a, kl)) {
                                i++;
                                continue;
                        }
                        if (found) {
                                strv_remove_at(env, i);
                                continue;
                        }
                        r = free_and_strdup(&env[i], *a);
                        if (r < 0)
                                return r;
                        found = true;
                        i++;
                }
                if (!found) {
                        r = strv_extend(&env, *a);
                        if (r < 0)
                                return r;
                }
        }

        *ret = TAKE_PTR(env);
        return 0;
}

static int pick_seccomp(const JsonValue *service_config, const BundleParams *p, JsonValue **ret) {
        const JsonValue *own;
        JsonValue *v = NULL;

        switch (p->seccomp) {
        case SECCOMP_MODE_AUTO:
                own = get_optional(json_get(service_config, "linux"), "seccomp");
                if (!own)
                        return seccomp_default_profile(ret);
                /* The service's own profile is what its runtime already accepted; leave it
                 * to the runtime to judge again rather than rejecting names we don't know. */
                v = json_copy(own);
                break;
        case SECCOMP_MODE_DEFAULT:
                return seccomp_default_profile(ret);
        case SECCOMP_MODE_UNCONFINED:
                *ret = NULL;
                return 0;
        case SECCOMP_MODE_PROFILE:
                v = json_copy(p->seccomp_profile);
                break;
        default:
                return -EINVAL;
        }
        if (!v)
                return -ENOMEM;
        *ret = v;
        return 0;
}

/* Returns obj[key] as an object, creating it when absent or null. */
static int ensure_object(JsonValue *obj, const char *key, JsonValue **ret) {
        const JsonValue *v = json_get(obj, key);

        if (v && json_type(v) == JSON_NULL) {
                int r = json_object_remove(obj, key);
                if (r < 0)
                        return r;
        }
        return json_object_ensure_object(obj, key, ret);
}

int bundle_derive(const JsonValue *service_config, const BundleParams *p, JsonValue **ret, char **ret_error) {
        _cleanup_json_ JsonValue *c = NULL;
        _cleanup_json_ JsonValue *seccomp = NULL;
        _cleanup_json_ JsonValue *root = NULL;
        _cleanup_strv_free_ char **env = NULL;
        JsonValue *process, *linux_obj, *annotations;
        bool ipc_joined = false;
        int r;

        if (!p || !ret)
                return -EINVAL;

        r = check_params(p, ret_error);
        if (r < 0)
                return r;
        r = validate_config(service_config, ret_error);
        if (r < 0)
                return r;

        r = pick_seccomp(service_config, p, &seccomp);
        if (r < 0)
                return r;

        r = derive_env(get_optional(json_get(service_config, "process"), "env"), p, &env);
        if (r < 0)
                return r;

        c = json_copy(service_config);
        if (!c)
                return -ENOMEM;

        process = json_get(c, "process");
        if (p->args) {
                r = json_object_set(process, "args", json_new_strv(p->args));
                if (r < 0)
                        return r;
        } else if (!json_is_array(json_get(process, "args")) || json_length(json_get(process, "args")) == 0)
                return error_message(ret_error, -EINVAL, "config.json: process.args is missing or empty");
        r = drop_termination_log(c);
        if (r < 0)
                return r;
        r = add_mounts(c, p);
        if (r < 0)
                return r;
        r = json_object_set(process, "env", json_new_strv(env));
        if (r < 0)
                return r;
        /* conmon holds the stdio as pipes; a task never gets a terminal. */
        r = json_object_set_boolean(process, "terminal", false);
        if (r < 0)
                return r;
        r = remove_optional(process, "consoleSize");
        if (r < 0)
                return r;
        r = json_object_set_boolean(process, "noNewPrivileges", true);
        if (r < 0)
                return r;

        if (p->hostname) {
                r = json_object_set_string(c, "hostname", p->hostname);
                if (r < 0)
                        return r;
        }

        /* The whole root object is ours: the service's may say readonly, the task's
         * overlay is writable. */
        root = json_new_object();
        if (!root)
                return -ENOMEM;
        r = json_object_set_string(root, "path", p->root_path);
        if (r < 0)
                return r;
        r = json_object_set_boolean(root, "readonly", false);
        if (r < 0)
                return r;
        r = json_object_set(c, "root", TAKE_PTR(root));
        if (r < 0)
                return r;

        r = ensure_object(c, "annotations", &annotations);
        if (r < 0)
                return r;
        r = drop_cri_annotations(annotations);
        if (r < 0)
                return r;
        for (char *const *a = p->annotations; a && *a; a++) {
                _cleanup_free_ char *key = strndup(*a, strcspn(*a, "="));
                if (!key)
                        return -ENOMEM;
                r = json_object_set_string(annotations, key, *a + strlen(key) + 1);
                if (r < 0)
                        return r;
        }

        r = ensure_object(c, "linux", &linux_obj);
        if (r < 0)
                return r;
        /* Never the service's cgroup: the task would share (and could be killed with) it. */
        if (p->cgroups_path)
                r = json_object_set_string(linux_obj, "cgroupsPath", p->cgroups_path);
        else
                r = remove_optional(linux_obj, "cgroupsPath");
        if (r < 0)
                return r;
        /* A service's own annotation would be a program we did not check against the
         * profile: only ours is ever passed. */
        r = remove_optional(annotations, SECCOMP_BPF_ANNOTATION);
        if (r < 0)
                return r;
        if (seccomp && p->seccomp_bpf) {
                _cleanup_free_ char *bpf = NULL;

                r = seccomp_bpf_compile(seccomp, &bpf);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0) {
                        r = json_object_set_string(annotations, SECCOMP_BPF_ANNOTATION, bpf);
                        if (r < 0)
                                return r;
                }
        }
        if (seccomp)
                r = json_object_set(linux_obj, "seccomp", TAKE_PTR(seccomp));
        else
                r = remove_optional(linux_obj, "seccomp");
        if (r < 0)
                return r;
        r = fix_namespaces(linux_obj, p, &ipc_joined);
        if (r < 0)
                return r;
        r = drop_joined_sysctls(linux_obj, p->netns_path, ipc_joined);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

int bundle_rootfs_path(const char *bundle_dir, const JsonValue *service_config, char **ret) {
        _cleanup_free_ char *cwd = NULL;
        const char *path, *base;
        char *joined;

        if (!bundle_dir || !ret)
                return -EINVAL;

        path = json_string(json_get_path(service_config, "root", "path", NULL));
        if (isempty(path))
                return -EINVAL;

        if (path[0] == '/') {
                joined = strdup(path);
                if (!joined)
                        return -ENOMEM;
                *ret = joined;
                return 0;
        }

        while (startswith(path, "./"))
                path += 2;

        base = bundle_dir;
        if (bundle_dir[0] != '/') {
                _cleanup_free_ char *c = getcwd(NULL, 0);
                if (!c)
                        return -errno;
                cwd = path_join(c, bundle_dir);
                if (!cwd)
                        return -ENOMEM;
                base = cwd;
        }

        joined = path_join(base, isempty(path) ? "." : path);
        if (!joined)
                return -ENOMEM;
        *ret = joined;
        return 0;
}

static int readlinkat_malloc(int dir_fd, const char *path, char **ret) {
        for (size_t size = 256;; size *= 2) {
                _cleanup_free_ char *buf = malloc(size);
                ssize_t n;

                if (!buf)
                        return -ENOMEM;
                n = readlinkat(dir_fd, path, buf, size);
                if (n < 0)
                        return -errno;
                if ((size_t) n < size) {
                        buf[n] = 0;
                        *ret = TAKE_PTR(buf);
                        return 0;
                }
                if (size >= 65536)
                        return -ENAMETOOLONG;
        }
}

/* Without openat2(): walk the path one component at a time from the root with lstat,
 * resolving symlinks ourselves so that absolute targets and ".." stay inside the root.
 * Only ever stats; the answer picks a command line, the runtime opens the file. */
static int stat_in_root_fallback(int root_fd, const char *path, struct stat *ret) {
        _cleanup_free_ char *resolved = strdup(""); /* verified directories, relative to root */
        _cleanup_free_ char *todo = strdup(path);
        unsigned links = 0;
        struct stat st;

        if (!resolved || !todo)
                return -ENOMEM;

        for (;;) {
                _cleanup_free_ char *component = NULL, *candidate = NULL, *rest = NULL;
                const char *p = todo;
                size_t l;

                while (*p == '/')
                        p++;
                if (!*p)
                        break;
                l = strcspn(p, "/");
                component = strndup(p, l);
                rest = strdup(p + l);
                if (!component || !rest)
                        return -ENOMEM;

                if (streq(component, ".")) {
                        free(todo);
                        todo = TAKE_PTR(rest);
                        continue;
                }
                if (streq(component, "..")) {
                        char *slash = strrchr(resolved, '/');
                        if (slash)
                                *slash = 0;
                        else
                                resolved[0] = 0; /* ".." at the root stays at the root */
                        free(todo);
                        todo = TAKE_PTR(rest);
                        continue;
                }

                if (isempty(resolved))
                        candidate = strdup(component);
                else if (asprintf(&candidate, "%s/%s", resolved, component) < 0)
                        candidate = NULL;
                if (!candidate)
                        return -ENOMEM;

                if (fstatat(root_fd, candidate, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return -errno;

                if (S_ISLNK(st.st_mode)) {
                        _cleanup_free_ char *target = NULL;
                        char *t;
                        int r;

                        if (++links > SYMLINKS_MAX)
                                return -ELOOP;
                        r = readlinkat_malloc(root_fd, candidate, &target);
                        if (r < 0)
                                return r;
                        if (target[0] == '/')
                                resolved[0] = 0;
                        if (asprintf(&t, "%s/%s", target, rest) < 0)
                                return -ENOMEM;
                        free(todo);
                        todo = t;
                        continue;
                }

                if (rest[strspn(rest, "/")] && !S_ISDIR(st.st_mode))
                        return -ENOTDIR;

                free(resolved);
                resolved = TAKE_PTR(candidate);
                free(todo);
                todo = TAKE_PTR(rest);
        }

        if (fstatat(root_fd, isempty(resolved) ? "." : resolved, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        *ret = st;
        return 0;
}

/* stat() of path as seen with root_fd as "/": symlinks (even absolute ones) and ".."
 * cannot lead out of the rootfs. */
static int stat_in_root(int root_fd, const char *path, struct stat *ret) {
#ifdef SYS_openat2
        struct open_how how = {
                .flags = O_PATH | O_CLOEXEC,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        _cleanup_close_ int fd = -EBADF;

        /* EAGAIN: a rename raced with the ".." check; the kernel asks us to retry. */
        for (unsigned attempt = 0; attempt < 8; attempt++) {
                fd = (int) syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
                if (fd >= 0 || errno != EAGAIN)
                        break;
        }
        if (fd >= 0) {
                if (fstat(fd, ret) < 0)
                        return -errno;
                return 0;
        }
        /* ENOSYS: kernel < 5.6; EPERM: a seccomp filter that does not know it. */
        if (!(errno == ENOSYS || errno == EPERM || errno == E2BIG))
                return -errno;
#endif
        return stat_in_root_fallback(root_fd, path, ret);
}

static bool executable_in_root(int root_fd, const char *path) {
        struct stat st;

        if (stat_in_root(root_fd, path, &st) < 0)
                return false;
        return S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

int bundle_command_args(const char *rootfs, const char *command, const char *init, char ***ret) {
        _cleanup_close_ int root_fd = -EBADF;
        bool lagoon;
        char **args;

        if (!rootfs || !command || !ret)
                return -EINVAL;

        root_fd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0)
                return -errno;

        /* Lagoon images start everything through tini and their entrypoint scripts (which
         * set up the environment a command expects); plain images get a plain shell. */
        lagoon = executable_in_root(root_fd, "/sbin/tini") && executable_in_root(root_fd, "/lagoon/entrypoints.sh");

        if (lagoon) {
                const char *const l[] = {"/sbin/tini", "--", "/lagoon/entrypoints.sh", "/bin/sh", "-c", command, NULL};
                args = strv_copy((char *const *) l);
        } else if (init && executable_in_root(root_fd, "/bin/sh")) {
                /* Without a shell the runtime's exec fails: a launch error, not the init's. */
                const char *const l[] = {init, "--", "/bin/sh", "-c", command, NULL};
                args = strv_copy((char *const *) l);
        } else {
                const char *const l[] = {"/bin/sh", "-c", command, NULL};
                args = strv_copy((char *const *) l);
        }
        if (!args)
                return -ENOMEM;
        *ret = args;
        return !lagoon && init && streq(args[0], init);
}

int bundle_read_config(const char *bundle_dir, JsonValue **ret, char **ret_error) {
        _cleanup_free_ char *path = NULL, *data = NULL, *error = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        size_t size = 0;
        int r;

        if (!bundle_dir || !ret)
                return -EINVAL;

        path = path_join(bundle_dir, "config.json");
        if (!path)
                return -ENOMEM;

        r = read_full_file(path, BUNDLE_CONFIG_SIZE_MAX, &data, &size);
        if (r == -EFBIG) {
                (void) error_message(ret_error, -EINVAL, "%s: larger than %u bytes", path, BUNDLE_CONFIG_SIZE_MAX);
                return r;
        }
        if (r < 0) {
                if (r != -ENOMEM && ret_error && asprintf(ret_error, "%s: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }

        r = json_parse(data, size, JSON_DEPTH_MAX_DEFAULT, &v, &error);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                int k = error_message(ret_error, -EINVAL, "%s: %s", path,
                                      error
                                              ?: r == -E2BIG ? "nested too deeply"
                                                             : "invalid JSON");
                return k == -ENOMEM ? k : -EINVAL;
        }

        *ret = TAKE_PTR(v);
        return 0;
}
