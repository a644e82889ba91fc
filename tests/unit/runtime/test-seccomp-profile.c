/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests of the built-in seccomp profile (its names are real syscalls, it lacks the
 * privileged ones, and once loaded into the kernel it really blocks them) and of the
 * validation of user-supplied profiles. */

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "fs-util.h"
#include "json.h"
#include "seccomp-profile.h"
#include "tests.h"

/* Privileged or host-changing calls no container default may allow. */
static const char *const forbidden[] = {
        "mount",
        "umount2",
        "umount",
        "reboot",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "swapon",
        "swapoff",
        "pivot_root",
        "setns",
        "unshare",
        "keyctl",
        "add_key",
        "request_key",
        "open_by_handle_at",
        "name_to_handle_at",
        "acct",
        "lookup_dcookie",
        "quotactl",
        "quotactl_fd",
        "settimeofday",
        "clock_settime",
        "clock_settime64",
        "stime",
        "userfaultfd",
        "fsopen",
        "fsmount",
        "fsconfig",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "syslog",
        "iopl",
        "ioperm",
        "sethostname",
        "setdomainname",
        "vhangup",
        "uselib",
        "_sysctl",
        NULL,
};

static bool strv_has(const char *const *l, const char *s) {
        for (; l && *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

static JsonValue *parse(const char *s) {
        JsonValue *v = NULL;
        ASSERT_OK(json_parse(s, strlen(s), JSON_DEPTH_MAX_DEFAULT, &v, NULL));
        return v;
}

/* Validation must fail with a message containing needle. */
static void assert_invalid(const char *profile, const char *needle) {
        _cleanup_json_ JsonValue *v = parse(profile);
        _cleanup_free_ char *error = NULL;
        int r;

        r = seccomp_profile_validate(v, &error);
        if (r != -EINVAL || !error || !strstr(error, needle)) {
                fprintf(stderr, "profile %s: expected -EINVAL with '%s', got %d '%s'\n", profile, needle, r,
                        strna(error));
                abort();
        }
        /* No message wanted: still the same answer, no crash. */
        ASSERT(seccomp_profile_validate(v, NULL) == -EINVAL);
}

static void test_builtin_list(void) {
        const char *const *l = seccomp_default_syscalls();
        const uint32_t arches[] = {SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_X32, SCMP_ARCH_AARCH64, SCMP_ARCH_ARM};
        size_t n = 0;

        for (const char *const *s = l; *s; s++, n++) {
                bool found = false;

                /* Spelling: a real syscall on at least one architecture we build for. */
                for (size_t a = 0; a < ELEMENTSOF(arches); a++)
                        if (seccomp_syscall_resolve_name_arch(arches[a], *s) >= 0)
                                found = true;
                if (!found) {
                        fprintf(stderr, "built-in allow-list: '%s' is no syscall on x86_64/x86/x32/aarch64/arm\n", *s);
                        abort();
                }
                if (strv_has(forbidden, *s)) {
                        fprintf(stderr, "built-in allow-list holds forbidden '%s'\n", *s);
                        abort();
                }
                for (const char *const *t = l; t < s; t++)
                        if (streq(*t, *s)) {
                                fprintf(stderr, "built-in allow-list holds '%s' twice\n", *s);
                                abort();
                        }
                /* These have rules of their own. */
                ASSERT(!streq(*s, "clone") && !streq(*s, "clone3") && !streq(*s, "socket") &&
                       !streq(*s, "personality"));
        }
        ASSERT(n > 250);
        printf("built-in allow-list: %zu names, all real syscalls\n", n);
}

static uint32_t arch_token(const char *name) {
        if (streq(name, "SCMP_ARCH_X86_64"))
                return SCMP_ARCH_X86_64;
        if (streq(name, "SCMP_ARCH_X86"))
                return SCMP_ARCH_X86;
        if (streq(name, "SCMP_ARCH_X32"))
                return SCMP_ARCH_X32;
        if (streq(name, "SCMP_ARCH_AARCH64"))
                return SCMP_ARCH_AARCH64;
        if (streq(name, "SCMP_ARCH_ARM"))
                return SCMP_ARCH_ARM;
        return seccomp_arch_native();
}

static void test_default_profile(void) {
        _cleanup_json_ JsonValue *p = NULL;
        _cleanup_free_ char *error = NULL;
        const JsonValue *arches, *rules, *allow;
        uint32_t tokens[8];
        size_t n_tokens = 0, n_allow;
        int64_t i64;

        ASSERT_OK(seccomp_default_profile(&p));
        ASSERT_OK(seccomp_profile_validate(p, &error));
        ASSERT(!error);

        ASSERT(streq(json_get_string(p, "defaultAction"), "SCMP_ACT_ERRNO"));
        ASSERT_OK(json_int64(json_get(p, "defaultErrnoRet"), &i64));
        ASSERT(i64 == 1);

        arches = json_get(p, "architectures");
        ASSERT(json_is_array(arches) && json_length(arches) >= 1 && json_length(arches) <= 3);
        for (size_t i = 0; i < json_length(arches); i++)
                tokens[n_tokens++] = arch_token(json_string(json_array_at(arches, i)));
        if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
                ASSERT(json_length(arches) == 3);
                ASSERT(streq(json_string(json_array_at(arches, 0)), "SCMP_ARCH_X86_64"));
                ASSERT(streq(json_string(json_array_at(arches, 1)), "SCMP_ARCH_X86"));
                ASSERT(streq(json_string(json_array_at(arches, 2)), "SCMP_ARCH_X32"));
        } else if (seccomp_arch_native() == SCMP_ARCH_AARCH64) {
                ASSERT(json_length(arches) == 2);
                ASSERT(streq(json_string(json_array_at(arches, 0)), "SCMP_ARCH_AARCH64"));
                ASSERT(streq(json_string(json_array_at(arches, 1)), "SCMP_ARCH_ARM"));
        }

        rules = json_get(p, "syscalls");
        ASSERT(json_is_array(rules) && json_length(rules) >= 1);
        allow = json_array_at(rules, 0);
        ASSERT(streq(json_get_string(allow, "action"), "SCMP_ACT_ALLOW"));
        ASSERT(!json_get(allow, "args"));
        n_allow = json_length(json_get(allow, "names"));
        ASSERT(n_allow > 250);

        /* Every name is a syscall of one of the profile's architectures; the usual ones are in. */
        for (size_t i = 0; i < n_allow; i++) {
                const char *n = json_string(json_array_at(json_get(allow, "names"), i));
                bool found = false;
                ASSERT(n);
                for (size_t a = 0; a < n_tokens; a++)
                        found = found || seccomp_syscall_resolve_name_arch(tokens[a], n) >= 0;
                ASSERT(found);
        }
        {
                _cleanup_strv_free_ char **names = NULL;
                ASSERT_OK(json_to_strv(json_get(allow, "names"), &names));
                const char *needed[] = {"read",  "write",        "openat",     "close",      "execve",
                                        "mmap",  "munmap",       "brk",        "futex",      "exit_group",
                                        "wait4", "rt_sigaction", "newfstatat", "getdents64", "pipe2",
                                        "dup3",  "connect",      "sendto",     "ptrace",     "chroot"};
                for (size_t i = 0; i < ELEMENTSOF(needed); i++)
                        if (!strv_contains(names, needed[i])) {
                                fprintf(stderr, "default profile lacks '%s'\n", needed[i]);
                                abort();
                        }
        }

        /* No rule of any kind allows a forbidden call. */
        for (size_t i = 0; i < json_length(rules); i++) {
                const JsonValue *rule = json_array_at(rules, i);
                const JsonValue *names = json_get(rule, "names");
                for (size_t k = 0; k < json_length(names); k++)
                        ASSERT(!strv_has(forbidden, json_string(json_array_at(names, k))) ||
                               !streq(json_get_string(rule, "action"), "SCMP_ACT_ALLOW"));
        }
        printf("default profile: %zu architectures, %zu allowed names, %zu rules\n", json_length(arches), n_allow,
               json_length(rules));
}

/* Turns an OCI profile into a libseccomp filter, the way a runtime does, and loads it. */
static int load_profile(const JsonValue *p) {
        const JsonValue *rules = json_get(p, "syscalls"), *arches = json_get(p, "architectures");
        int64_t errno_ret = 1;
        scmp_filter_ctx ctx;

        (void) json_int64(json_get(p, "defaultErrnoRet"), &errno_ret);
        ctx = seccomp_init(SCMP_ACT_ERRNO((uint32_t) errno_ret));
        if (!ctx)
                return -ENOMEM;
        for (size_t i = 0; i < json_length(arches); i++) {
                uint32_t t = arch_token(json_string(json_array_at(arches, i)));
                if (t != seccomp_arch_native() && seccomp_arch_add(ctx, t) < 0)
                        return -EINVAL;
        }
        for (size_t i = 0; i < json_length(rules); i++) {
                const JsonValue *rule = json_array_at(rules, i), *args = json_get(rule, "args");
                const char *action = json_get_string(rule, "action");
                struct scmp_arg_cmp cmp[6];
                uint32_t act;
                size_t n_cmp = 0;

                if (streq(action, "SCMP_ACT_ALLOW"))
                        act = SCMP_ACT_ALLOW;
                else {
                        int64_t e = 1;
                        ASSERT(streq(action, "SCMP_ACT_ERRNO"));
                        (void) json_int64(json_get(rule, "errnoRet"), &e);
                        act = SCMP_ACT_ERRNO((uint32_t) e);
                }
                for (size_t k = 0; k < json_length(args); k++) {
                        const JsonValue *a = json_array_at(args, k);
                        const char *op = json_get_string(a, "op");
                        uint64_t index = 0, value = 0, two = 0;
                        ASSERT_OK(json_uint64(json_get(a, "index"), &index));
                        ASSERT_OK(json_uint64(json_get(a, "value"), &value));
                        (void) json_uint64(json_get(a, "valueTwo"), &two);
                        cmp[n_cmp++] = (struct scmp_arg_cmp){
                                .arg = (unsigned) index,
                                .op = streq(op, "SCMP_CMP_MASKED_EQ") ? SCMP_CMP_MASKED_EQ
                                      : streq(op, "SCMP_CMP_NE")      ? SCMP_CMP_NE
                                                                      : SCMP_CMP_EQ,
                                .datum_a = value,
                                .datum_b = two,
                        };
                }
                for (size_t k = 0; k < json_length(json_get(rule, "names")); k++) {
                        int nr = seccomp_syscall_resolve_name(json_string(json_array_at(json_get(rule, "names"), k)));
                        if (nr == __NR_SCMP_ERROR)
                                return -EINVAL;
                        if (seccomp_rule_add_array(ctx, act, nr, (unsigned) n_cmp, cmp) < 0)
                                return -EINVAL;
                }
        }
        if (seccomp_load(ctx) < 0)
                return -EPERM;
        seccomp_release(ctx);
        return 0;
}

/* Child: load the default profile, then every answer must be the profile's. */
static _noreturn_ void default_profile_child(void) {
        _cleanup_json_ JsonValue *p = NULL;
        struct clone_args ca = {.exit_signal = SIGCHLD};
        pid_t pid;
        int fds[2];

        ASSERT_OK(seccomp_default_profile(&p));
        ASSERT(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
        ASSERT_OK(load_profile(p));

        /* Ordinary things still work, including fork (clone without namespace flags). */
        ASSERT(pipe2(fds, O_CLOEXEC) == 0);
        ASSERT(write(fds[1], "x", 1) == 1);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0)
                _exit(7);
        {
                int status;
                ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 7);
        }
        ASSERT(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) >= 0);

        /* Blocked: EPERM, whatever the capabilities (we may be root here). The mount target
         * does not exist, so without the filter this would be ENOENT, never a mount. */
        errno = 0;
        ASSERT(mount("none", "/nonexistent-lagoon-taskd-test", "tmpfs", 0, NULL) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(unshare(CLONE_NEWUSER) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(syscall(SYS_bpf, 0, NULL, 0) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(syscall(SYS_keyctl, 0, 0, 0, 0, 0) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(socket(40 /* AF_VSOCK */, SOCK_STREAM, 0) < 0 && errno == EPERM);
        /* clone3 says ENOSYS, so libc falls back to the filtered clone. */
        errno = 0;
        ASSERT(syscall(SYS_clone3, &ca, sizeof(ca)) < 0 && errno == ENOSYS);
        _exit(0);
}

static void test_default_profile_loaded(void) {
        int status;
        pid_t pid = fork();

        ASSERT(pid >= 0);
        if (pid == 0)
                default_profile_child();
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        printf("default profile loaded into the kernel: fork works; mount, unshare, clone(NEWUSER), bpf, keyctl, "
               "AF_VSOCK blocked; clone3 ENOSYS\n");
}

static void test_validate(void) {
        _cleanup_json_ JsonValue *ok = NULL;

        /* Names of other architectures are known to libseccomp: a Docker-made profile passes. */
        ok = parse("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":1,"
                   "\"architectures\":[\"SCMP_ARCH_X86_64\",\"SCMP_ARCH_AARCH64\",\"SCMP_ARCH_S390X\"],"
                   "\"flags\":[\"SECCOMP_FILTER_FLAG_LOG\"],"
                   "\"syscalls\":[{\"names\":[\"read\",\"_llseek\",\"arm_fadvise64_64\",\"socketcall\"],"
                   "\"action\":\"SCMP_ACT_ALLOW\"},"
                   "{\"names\":[\"personality\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,"
                   "\"value\":8,\"valueTwo\":0,\"op\":\"SCMP_CMP_EQ\"}]},"
                   "{\"names\":[\"ptrace\"],\"action\":\"SCMP_ACT_KILL_PROCESS\"},"
                   "{\"names\":[\"clone3\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":38}]}");
        ASSERT_OK(seccomp_profile_validate(ok, NULL));
        {
                /* Every action name we accept. */
                const char *actions[] = {"SCMP_ACT_ALLOW",        "SCMP_ACT_ERRNO",       "SCMP_ACT_KILL",
                                         "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
                                         "SCMP_ACT_TRACE",        "SCMP_ACT_LOG",         "SCMP_ACT_NOTIFY"};
                for (size_t i = 0; i < ELEMENTSOF(actions); i++) {
                        _cleanup_free_ char *s = NULL;
                        _cleanup_json_ JsonValue *v = NULL;
                        ASSERT(asprintf(&s,
                                        "{\"defaultAction\":\"%s\",\"syscalls\":[{\"names\":[\"read\"],"
                                        "\"action\":\"%s\"}]}",
                                        actions[i], actions[i]) > 0);
                        v = parse(s);
                        ASSERT_OK(seccomp_profile_validate(v, NULL));
                }
        }

        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\",\"foo\"],"
                       "\"action\":\"SCMP_ACT_ALLOW\"}]}",
                       "unknown syscall 'foo'");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"opneat\"],"
                       "\"action\":\"SCMP_ACT_ALLOW\"}]}",
                       "'opneat'");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_DENY\"}", "unknown action 'SCMP_ACT_DENY'");
        assert_invalid("{\"syscalls\":[]}", "defaultAction");
        assert_invalid("{\"defaultAction\":7}", "defaultAction");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                       "\"action\":\"SCMP_ACT_PERMIT\"}]}",
                       "unknown action 'SCMP_ACT_PERMIT'");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"]}]}",
                       "syscalls[0].action");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[\"SCMP_ARCH_Z80\"]}",
                       "unknown architecture 'SCMP_ARCH_Z80'");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":\"SCMP_ARCH_X86_64\"}",
                       "architectures is not an array");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[1]}", "architectures[0]");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":{}}", "syscalls is not an array");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[1]}", "syscalls[0] is not an object");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":\"read\","
                       "\"action\":\"SCMP_ACT_ALLOW\"}]}",
                       "syscalls[0].names");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\",null],"
                       "\"action\":\"SCMP_ACT_ALLOW\"}]}",
                       "syscalls[0].names[1] is not a string");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                       "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":6,\"value\":1,\"op\":\"SCMP_CMP_EQ\"}]}]}",
                       "index");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                       "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_LIKE\"}]}]}",
                       "unknown operator 'SCMP_CMP_LIKE'");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                       "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":-1,\"op\":\"SCMP_CMP_EQ\"}]}]}",
                       "value");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                       "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"op\":\"SCMP_CMP_EQ\"}]}]}",
                       "needs index and value");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":\"1\"}", "defaultErrnoRet");
        assert_invalid("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"flags\":[\"SECCOMP_FILTER_FLAG_FAST\"]}",
                       "unknown seccomp filter flag");
        assert_invalid("[]", "not a JSON object");
        assert_invalid("null", "not a JSON object");
        ASSERT(seccomp_profile_validate(NULL, NULL) == -EINVAL);
        printf("validation: good profiles pass, bad names, actions, architectures, operators rejected\n");
}

static void write_file(const char *path, const char *s) {
        FILE *f = fopen(path, "we");
        ASSERT(f);
        ASSERT(fputs(s, f) >= 0);
        ASSERT(fclose(f) == 0);
}

static void test_load(void) {
        char dir[] = "/tmp/test-seccomp-profile.XXXXXX";
        _cleanup_free_ char *good = NULL, *bad = NULL, *garbage = NULL, *big = NULL, *missing = NULL;
        _cleanup_free_ char *text = NULL, *error = NULL;
        _cleanup_json_ JsonValue *p = NULL, *v = NULL;
        int r;

        ASSERT(mkdtemp(dir));
        good = path_join(dir, "good.json");
        bad = path_join(dir, "bad.json");
        garbage = path_join(dir, "garbage.json");
        big = path_join(dir, "big.json");
        missing = path_join(dir, "missing.json");
        ASSERT(good && bad && garbage && big && missing);

        /* The default profile round-trips through a file. */
        ASSERT_OK(seccomp_default_profile(&p));
        ASSERT_OK(json_format(p, true, &text, NULL));
        write_file(good, text);
        ASSERT_OK(seccomp_profile_load(good, &v, &error));
        {
                _cleanup_free_ char *again = NULL;
                ASSERT_OK(json_format(v, true, &again, NULL));
                ASSERT(streq(again, text));
        }

        write_file(bad, "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"frobnicate\"],"
                        "\"action\":\"SCMP_ACT_ALLOW\"}]}");
        r = seccomp_profile_load(bad, &v, &error);
        ASSERT(r == -EINVAL && error && strstr(error, bad) && strstr(error, "unknown syscall 'frobnicate'"));
        error = mfree(error);

        write_file(garbage, "{\"defaultAction\": SCMP_ACT_ERRNO}");
        r = seccomp_profile_load(garbage, &v, &error);
        ASSERT(r == -EINVAL && error && strstr(error, garbage));
        error = mfree(error);

        r = seccomp_profile_load(missing, &v, &error);
        ASSERT(r == -ENOENT && error && strstr(error, missing));
        error = mfree(error);

        {
                /* Over the 4 MiB limit: refused before parsing. */
                _cleanup_close_ int fd = open(big, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                ASSERT(fd >= 0);
                ASSERT(ftruncate(fd, 4 * 1024 * 1024 + 1) == 0);
        }
        r = seccomp_profile_load(big, &v, &error);
        ASSERT(r == -EFBIG && error);
        error = mfree(error);

        ASSERT_OK(rm_rf(dir));
        printf("load: file round-trip, bad name, garbage, missing, oversized\n");
}

int main(void) {
        test_builtin_list();
        test_default_profile();
        test_default_profile_loaded();
        test_validate();
        test_load();
        return 0;
}
