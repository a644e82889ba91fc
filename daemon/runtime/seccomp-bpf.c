/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Compiles OCI seccomp profiles to BPF for crun (see seccomp-bpf.h). The translation
 * follows what crun 1.8 does with the same JSON, call for call into the same libseccomp,
 * so the program is the one crun would have built; wherever crun would fail, warn or
 * read a field differently than we can tell, we say -EOPNOTSUPP and crun compiles the
 * JSON itself as before. */

#include <ctype.h>
#include <seccomp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "parse-util.h"
#include "seccomp-bpf.h"
#include "sha256.h"

/* A node runs a handful of distinct profiles (the default, a few Seccomp= files, the
 * services' own); beyond that the oldest entry makes room. */
#define CACHE_SIZE 16U
/* BPF programs are at most 4096 instructions of 8 bytes. */
#define BPF_SIZE_MAX (4096U * 8U)
/* The largest errno an ERRNO action can carry (MAX_ERRNO in the kernel). */
#define ERRNO_MAX 4095U

typedef struct CacheEntry {
        uint8_t digest[SHA256_DIGEST_SIZE];
        bool used;
        char *bpf; /* NULL: the profile is not translatable */
} CacheEntry;

static CacheEntry cache[CACHE_SIZE];
static unsigned cache_next, cache_misses;

static void release_filter(scmp_filter_ctx *ctx) {
        if (*ctx)
                seccomp_release(*ctx);
}

/* An optional errnoRet/defaultErrnoRet: *ret stays at its default when absent. */
static int get_errno(const JsonValue *obj, const char *key, const char *action, int *ret) {
        const JsonValue *v = json_get(obj, key);
        uint64_t u;

        if (!v)
                return 0;
        /* crun refuses an errno for other actions. */
        if (!streq(action, "SCMP_ACT_ERRNO") && !streq(action, "SCMP_ACT_TRACE"))
                return -EOPNOTSUPP;
        if (json_uint64(v, &u) < 0 || u > ERRNO_MAX)
                return -EOPNOTSUPP;
        *ret = (int) u;
        return 0;
}

static int get_action(const char *name, int errno_ret, uint32_t *ret) {
        if (!name)
                return -EOPNOTSUPP;
        if (streq(name, "SCMP_ACT_ALLOW"))
                *ret = SCMP_ACT_ALLOW;
        else if (streq(name, "SCMP_ACT_ERRNO"))
                *ret = SCMP_ACT_ERRNO(errno_ret);
        else if (streq(name, "SCMP_ACT_KILL"))
                *ret = SCMP_ACT_KILL;
        else if (streq(name, "SCMP_ACT_LOG"))
                *ret = SCMP_ACT_LOG;
        else if (streq(name, "SCMP_ACT_TRAP"))
                *ret = SCMP_ACT_TRAP;
        else if (streq(name, "SCMP_ACT_TRACE"))
                *ret = SCMP_ACT_TRACE(errno_ret);
        else if (streq(name, "SCMP_ACT_KILL_PROCESS"))
                *ret = SCMP_ACT_KILL_PROCESS;
        else if (streq(name, "SCMP_ACT_KILL_THREAD"))
                *ret = SCMP_ACT_KILL_THREAD;
        else if (streq(name, "SCMP_ACT_NOTIFY"))
                *ret = SCMP_ACT_NOTIFY;
        else
                return -EOPNOTSUPP;
        return 0;
}

static int get_operator(const char *name, enum scmp_compare *ret) {
        static const struct {
                const char *name;
                enum scmp_compare op;
        } table[] = {
                {"SCMP_CMP_NE", SCMP_CMP_NE},
                {"SCMP_CMP_LT", SCMP_CMP_LT},
                {"SCMP_CMP_LE", SCMP_CMP_LE},
                {"SCMP_CMP_EQ", SCMP_CMP_EQ},
                {"SCMP_CMP_GE", SCMP_CMP_GE},
                {"SCMP_CMP_GT", SCMP_CMP_GT},
                {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
        };

        for (size_t i = 0; name && i < ELEMENTSOF(table); i++)
                if (streq(name, table[i].name)) {
                        *ret = table[i].op;
                        return 0;
                }
        return -EOPNOTSUPP;
}

/* crun strips "SCMP_ARCH_", lower-cases the rest and asks libseccomp. */
static int add_arch(scmp_filter_ctx ctx, const char *name) {
        char lower[32];
        size_t n;
        uint32_t token;
        int r;

        if (!name)
                return -EOPNOTSUPP;
        if (startswith(name, "SCMP_ARCH_"))
                name += strlen("SCMP_ARCH_");
        n = strlen(name);
        if (n == 0 || n >= sizeof(lower))
                return -EOPNOTSUPP;
        for (size_t i = 0; i <= n; i++)
                lower[i] = (char) tolower((unsigned char) name[i]);
        token = seccomp_arch_resolve_name(lower);
        if (token == 0)
                return -EOPNOTSUPP;
        r = seccomp_arch_add(ctx, token);
        if (r < 0 && r != -EEXIST)
                return -EOPNOTSUPP;
        return 0;
}

static int get_u64(const JsonValue *obj, const char *key, uint64_t *ret) {
        const JsonValue *v = json_get(obj, key);

        *ret = 0;
        if (!v)
                return 0;
        return json_uint64(v, ret) < 0 ? -EOPNOTSUPP : 0;
}

static int add_rule(scmp_filter_ctx ctx, const JsonValue *rule, uint32_t default_action) {
        const JsonValue *names = json_get(rule, "names"), *args = json_get(rule, "args");
        const char *action_name = json_get_string(rule, "action");
        struct scmp_arg_cmp cmp[6];
        unsigned count[6] = {};
        size_t n_args = 0;
        bool each_alone = false;
        int errno_ret = EPERM, r;
        uint32_t action;

        if (!json_is_object(rule))
                return -EOPNOTSUPP;
        r = get_errno(rule, "errnoRet", strempty(action_name), &errno_ret);
        if (r < 0)
                return r;
        r = get_action(action_name, errno_ret, &action);
        if (r < 0)
                return r;
        /* libseccomp refuses a rule that says what the default says; crun skips it. */
        if (action == default_action)
                return 0;

        if (names && !json_is_array(names))
                return -EOPNOTSUPP;
        if (args && !json_is_array(args))
                return -EOPNOTSUPP;
        /* crun reads only the first six conditions. */
        if (json_length(args) > 6)
                return -EOPNOTSUPP;
        for (size_t k = 0; k < json_length(args); k++) {
                const JsonValue *a = json_array_at(args, k);
                uint64_t index, value, value_two;

                if (!json_is_object(a) || json_uint64(json_get(a, "index"), &index) < 0 || index >= 6)
                        return -EOPNOTSUPP;
                r = get_operator(json_get_string(a, "op"), &cmp[k].op);
                if (r < 0)
                        return r;
                if (get_u64(a, "value", &value) < 0 || get_u64(a, "valueTwo", &value_two) < 0)
                        return -EOPNOTSUPP;
                cmp[k].arg = (unsigned) index;
                cmp[k].datum_a = value;
                cmp[k].datum_b = value_two;
                /* Two conditions on one argument cannot both hold in one rule: crun
                 * makes each its own rule (either matches). */
                if (++count[index] > 1)
                        each_alone = true;
                n_args++;
        }

        for (size_t j = 0; j < json_length(names); j++) {
                const char *name = json_string(json_array_at(names, j));
                int nr;

                if (!name)
                        return -EOPNOTSUPP;
                /* crun warns and skips it; let it do so itself. */
                nr = seccomp_syscall_resolve_name(name);
                if (nr == __NR_SCMP_ERROR)
                        return -EOPNOTSUPP;
                if (!each_alone)
                        r = seccomp_rule_add_array(ctx, action, nr, (unsigned) n_args, cmp);
                else
                        for (size_t k = 0; k < n_args; k++) {
                                r = seccomp_rule_add_array(ctx, action, nr, 1, &cmp[k]);
                                if (r < 0)
                                        break;
                        }
                if (r < 0)
                        return r == -ENOMEM ? r : -EOPNOTSUPP;
        }
        return 0;
}

static int export_program(scmp_filter_ctx ctx, char **ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ void *buf = NULL;
        struct stat st;
        ssize_t n;
        int r;

        fd = memfd_create("seccomp-bpf", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = seccomp_export_bpf(ctx, fd);
        if (r < 0)
                return r == -ENOMEM ? r : -EOPNOTSUPP;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size <= 0 || (size_t) st.st_size > BPF_SIZE_MAX || st.st_size % 8 != 0)
                return -EOPNOTSUPP;
        buf = malloc((size_t) st.st_size);
        if (!buf)
                return -ENOMEM;
        n = pread(fd, buf, (size_t) st.st_size, 0);
        if (n < 0)
                return -errno;
        if (n != st.st_size)
                return -EIO;
        return base64_encode(buf, (size_t) n, ret);
}

static int compile(const JsonValue *profile, char **ret) {
        _cleanup_(release_filter) scmp_filter_ctx ctx = NULL;
        const JsonValue *arches, *syscalls;
        const char *def_name;
        int def_errno = EPERM, r;
        uint32_t def_action;

        if (!json_is_object(profile) || json_has_nul(profile))
                return -EOPNOTSUPP;
        def_name = json_get_string(profile, "defaultAction");
        r = get_errno(profile, "defaultErrnoRet", strempty(def_name), &def_errno);
        if (r < 0)
                return r;
        r = get_action(def_name, def_errno, &def_action);
        if (r < 0)
                return r;

        arches = json_get(profile, "architectures");
        syscalls = json_get(profile, "syscalls");
        if ((arches && !json_is_array(arches)) || (syscalls && !json_is_array(syscalls)))
                return -EOPNOTSUPP;

        ctx = seccomp_init(def_action);
        if (!ctx)
                return -ENOMEM;
        for (size_t i = 0; i < json_length(arches); i++) {
                r = add_arch(ctx, json_string(json_array_at(arches, i)));
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < json_length(syscalls); i++) {
                r = add_rule(ctx, json_array_at(syscalls, i), def_action);
                if (r < 0)
                        return r;
        }
        return export_program(ctx, ret);
}

int seccomp_bpf_compile(const JsonValue *profile, char **ret) {
        _cleanup_free_ char *text = NULL, *bpf = NULL;
        uint8_t digest[SHA256_DIGEST_SIZE];
        CacheEntry *e;
        size_t size = 0;
        int r;

        if (!ret)
                return -EINVAL;
        if (!json_is_object(profile))
                return -EOPNOTSUPP;
        r = json_format(profile, false, &text, &size);
        if (r < 0)
                return r;
        sha256(text, size, digest);

        for (size_t i = 0; i < CACHE_SIZE; i++) {
                e = &cache[i];
                if (!e->used || memcmp(e->digest, digest, sizeof(digest)) != 0)
                        continue;
                if (!e->bpf)
                        return -EOPNOTSUPP;
                *ret = strdup(e->bpf);
                return *ret ? 0 : -ENOMEM;
        }

        cache_misses++;
        r = compile(profile, &bpf);
        if (r < 0 && r != -EOPNOTSUPP)
                return r;

        e = &cache[cache_next];
        cache_next = (cache_next + 1) % CACHE_SIZE;
        free(e->bpf);
        *e = (CacheEntry){.used = true, .bpf = TAKE_PTR(bpf)};
        memcpy(e->digest, digest, sizeof(digest));
        if (!e->bpf)
                return -EOPNOTSUPP;
        *ret = strdup(e->bpf);
        return *ret ? 0 : -ENOMEM;
}

unsigned seccomp_bpf_cache_misses(void) {
        return cache_misses;
}

void seccomp_bpf_cache_clear(void) {
        for (size_t i = 0; i < CACHE_SIZE; i++) {
                free(cache[i].bpf);
                cache[i] = (CacheEntry){};
        }
        cache_next = 0;
        cache_misses = 0;
}
