/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests of the precompiled seccomp programs for crun: what is translated and what is
 * left to the runtime (-EOPNOTSUPP), the cache, and the behaviour of the programs once
 * loaded into the kernel in a child, against what the profile says (not against a
 * second libseccomp build of the same rules, which would prove nothing). */

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "json.h"
#include "parse-util.h"
#include "seccomp-bpf.h"
#include "seccomp-profile.h"
#include "tests.h"

static JsonValue *parse(const char *s) {
        JsonValue *v = NULL;

        ASSERT_OK(json_parse(s, strlen(s), JSON_DEPTH_MAX_DEFAULT, &v, NULL));
        return v;
}

static int compile_text(const char *s, char **ret) {
        _cleanup_json_ JsonValue *v = parse(s);

        return seccomp_bpf_compile(v, ret);
}

/* The program as the kernel takes it. */
static size_t decode(const char *b64, struct sock_filter **ret) {
        size_t n = strlen(b64), len = 0;
        uint8_t *out = malloc(n);
        uint32_t acc = 0;
        unsigned bits = 0;

        ASSERT(out);
        for (size_t i = 0; i < n && b64[i] != '='; i++) {
                int c = base64_char_value(b64[i]);
                ASSERT(c >= 0);
                acc = (acc << 6) | (uint32_t) c;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[len++] = (uint8_t) (acc >> bits);
                }
        }
        ASSERT(len > 0 && len % sizeof(struct sock_filter) == 0);
        *ret = (struct sock_filter *) out;
        return len / sizeof(struct sock_filter);
}

/* In a forked child: loads the program as crun does (no_new_privs, seccomp(2)). */
static void load(const char *b64) {
        _cleanup_free_ struct sock_filter *f = NULL;
        struct sock_fprog prog = {.len = (unsigned short) decode(b64, &f)};

        prog.filter = f;
        ASSERT(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
        ASSERT(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0);
}

static void run_child(void (*fn)(const char *), const char *b64) {
        int status;
        pid_t pid = fork();

        ASSERT(pid >= 0);
        if (pid == 0) {
                fn(b64);
                _exit(0);
        }
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The built-in default: ordinary calls work, the privileged ones say EPERM, clone with
 * a namespace flag (an argument condition) too, clone3 ENOSYS (a rule's errnoRet). */
static void default_child(const char *b64) {
        pid_t pid;
        int status;

        load(b64);
        ASSERT(getpid() > 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0)
                _exit(7);
        ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 7);
        errno = 0;
        ASSERT(mount("none", "/nonexistent-lagoon-taskd-test", "tmpfs", 0, NULL) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(unshare(CLONE_NEWUSER) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(syscall(SYS_clone3, NULL, 0) < 0 && errno == ENOSYS);
}

static void test_default(void) {
        _cleanup_json_ JsonValue *p = NULL;
        _cleanup_free_ char *a = NULL, *b = NULL;
        unsigned misses;

        seccomp_bpf_cache_clear();
        ASSERT_OK(seccomp_default_profile(&p));
        ASSERT_OK(seccomp_bpf_compile(p, &a));
        misses = seccomp_bpf_cache_misses();
        ASSERT_EQ(misses, 1U);
        /* Compiled once per distinct profile. */
        ASSERT_OK(seccomp_bpf_compile(p, &b));
        ASSERT_EQ(seccomp_bpf_cache_misses(), misses);
        ASSERT_STREQ(a, b);
        run_child(default_child, a);
        printf("default profile: %zu bytes of base64, loaded: fork works, mount/unshare/clone(NEWUSER) EPERM, "
               "clone3 ENOSYS\n",
               strlen(a));
}

/* Default ALLOW; dup(1000) and dup(1001) fail with 77 (two conditions on one argument:
 * either), dup3(0, x, O_CLOEXEC) with 78 (two on different arguments: both), mkdir
 * with defaultErrnoRet-free ERRNO (EPERM), getppid is killed. */
static const char custom_profile[] =
        "{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"SCMP_ARCH_X86_64\",\"x86\",\"SCMP_ARCH_X32\"],"
        "\"flags\":[\"SECCOMP_FILTER_FLAG_SPEC_ALLOW\"],"
        "\"syscalls\":["
        "{\"names\":[\"dup\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":77,\"args\":["
        "{\"index\":0,\"value\":1000,\"op\":\"SCMP_CMP_EQ\"},{\"index\":0,\"value\":1001,\"op\":\"SCMP_CMP_EQ\"}]},"
        "{\"names\":[\"dup3\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":78,\"args\":["
        "{\"index\":0,\"value\":0,\"op\":\"SCMP_CMP_EQ\"},"
        "{\"index\":2,\"value\":524288,\"valueTwo\":524288,\"op\":\"SCMP_CMP_MASKED_EQ\"}]},"
        "{\"names\":[\"mkdir\",\"mkdirat\"],\"action\":\"SCMP_ACT_ERRNO\"},"
        "{\"names\":[\"getpid\"],\"action\":\"SCMP_ACT_ALLOW\"},"
        "{\"names\":[\"getppid\"],\"action\":\"SCMP_ACT_KILL_PROCESS\"}]}";

static void custom_child(const char *b64) {
        int fd, status;
        pid_t pid;

        load(b64);
        errno = 0;
        ASSERT(dup(1000) < 0 && errno == 77);
        errno = 0;
        ASSERT(dup(1001) < 0 && errno == 77);
        /* Not matched: the real answer (1002 is not open). */
        errno = 0;
        ASSERT(dup(1002) < 0 && errno == EBADF);
        fd = dup(0);
        ASSERT(fd >= 0);
        errno = 0;
        ASSERT(dup3(0, 200, O_CLOEXEC) < 0 && errno == 78);
        ASSERT(dup3(0, 200, 0) == 200);
        ASSERT(dup3(fd, 201, O_CLOEXEC) == 201);
        errno = 0;
        ASSERT(syscall(SYS_mkdir, "/nonexistent-lagoon-taskd-test/x", 0700) < 0 && errno == EPERM);
        errno = 0;
        ASSERT(syscall(SYS_mkdirat, AT_FDCWD, "/nonexistent-lagoon-taskd-test/x", 0700) < 0 && errno == EPERM);
        ASSERT(getpid() > 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                (void) syscall(SYS_getppid);
                _exit(0);
        }
        ASSERT(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS);
}

static void test_custom(void) {
        _cleanup_free_ char *b64 = NULL;

        ASSERT_OK(compile_text(custom_profile, &b64));
        run_child(custom_child, b64);
        printf("custom profile: errnoRet per rule, OR of conditions on one argument, AND across arguments, "
               "KILL_PROCESS, as the profile says\n");
}

/* A default errno of its own, and the ALLOW rule an allow-list has. */
static void errno_child(const char *b64) {
        load(b64);
        ASSERT(getpid() > 0);
        errno = 0;
        ASSERT(syscall(SYS_mkdir, "/nonexistent-lagoon-taskd-test/x", 0700) < 0 && errno == EXDEV);
}

static void test_default_errno(void) {
        _cleanup_free_ char *b64 = NULL;

        ASSERT_OK(compile_text("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":18,\"syscalls\":["
                               "{\"names\":[\"mkdir\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":18},"
                               "{\"names\":[\"getpid\",\"exit_group\",\"exit\",\"write\",\"prctl\",\"seccomp\","
                               "\"brk\",\"mmap\",\"munmap\",\"sigaltstack\",\"rt_sigaction\",\"rt_sigprocmask\","
                               "\"madvise\",\"gettid\"],\"action\":\"SCMP_ACT_ALLOW\"}]}",
                               &b64));
        run_child(errno_child, b64);
}

/* What crun would refuse, warn about or read in a way we cannot reproduce: the runtime
 * gets the JSON alone. */
static void test_fallback(void) {
        static const char *const untranslatable[] = {
                "{}",
                "{\"defaultAction\":\"SCMP_ACT_NOPE\"}",
                "{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"defaultErrnoRet\":1}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":-1}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":70000}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":\"1\"}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[\"SCMP_ARCH_VAX\"]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":\"SCMP_ARCH_X86_64\"}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"architectures\":[7]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":{}}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[7]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"nosuchcall\"],"
                "\"action\":\"SCMP_ACT_ALLOW\"}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"]}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":\"read\",\"action\":\"SCMP_ACT_ALLOW\"}"
                "]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[1],\"action\":\"SCMP_ACT_ALLOW\"}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                "\"action\":\"SCMP_ACT_ALLOW\",\"errnoRet\":1}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":6,\"value\":1,\"op\":\"SCMP_CMP_EQ\"}]}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_LIKE\"}]}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":-1,\"op\":\"SCMP_CMP_EQ\"}]}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"value\":1,\"op\":\"SCMP_CMP_EQ\"}]}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                "\"action\":\"SCMP_ACT_ALLOW\",\"args\":{}}]}",
                /* Seven conditions: crun reads six. */
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],\"action\":\"SCMP_ACT_"
                "ALLOW\","
                "\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_EQ\"},{\"index\":1,\"value\":1,\"op\":\"SCMP_CMP_"
                "EQ\"},"
                "{\"index\":2,\"value\":1,\"op\":\"SCMP_CMP_EQ\"},{\"index\":3,\"value\":1,\"op\":\"SCMP_CMP_EQ\"},"
                "{\"index\":4,\"value\":1,\"op\":\"SCMP_CMP_EQ\"},{\"index\":5,\"value\":1,\"op\":\"SCMP_CMP_EQ\"},"
                "{\"index\":5,\"value\":2,\"op\":\"SCMP_CMP_EQ\"}]}]}",
                "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\\u0000x\"],"
                "\"action\":\"SCMP_ACT_ALLOW\"}]}",
                NULL,
        };
        _cleanup_json_ JsonValue *arr = parse("[]");
        char *b64 = NULL;
        unsigned misses;

        seccomp_bpf_cache_clear();
        for (const char *const *s = untranslatable; *s; s++) {
                int r = compile_text(*s, &b64);
                if (r != -EOPNOTSUPP)
                        fprintf(stderr, "not refused (%d): %s\n", r, *s);
                ASSERT_EQ(r, -EOPNOTSUPP);
                ASSERT(!b64);
        }
        /* The refusal is cached too (the last one: the cache holds 16, the oldest go). */
        misses = seccomp_bpf_cache_misses();
        ASSERT_EQ(compile_text(untranslatable[ELEMENTSOF(untranslatable) - 2], &b64), -EOPNOTSUPP);
        ASSERT_EQ(seccomp_bpf_cache_misses(), misses);
        ASSERT_EQ(compile_text(untranslatable[0], &b64), -EOPNOTSUPP);
        ASSERT_EQ(seccomp_bpf_cache_misses(), misses + 1);
        ASSERT_EQ(seccomp_bpf_compile(arr, &b64), -EOPNOTSUPP);
        ASSERT_EQ(seccomp_bpf_compile(NULL, &b64), -EOPNOTSUPP);

        /* Translated: a rule equal to the default is left out (crun skips it), empty
         * names, a KILL default, every operator and action crun knows. */
        ASSERT_OK(compile_text("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":[{\"names\":[\"read\"],"
                               "\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":1},{\"action\":\"SCMP_ACT_ALLOW\"}]}",
                               &b64));
        b64 = mfree(b64);
        ASSERT_OK(compile_text(
                "{\"defaultAction\":\"SCMP_ACT_KILL\",\"syscalls\":[{\"names\":[\"read\"],"
                "\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":1,\"op\":\"SCMP_CMP_NE\"},"
                "{\"index\":1,\"value\":1,\"op\":\"SCMP_CMP_LT\"},{\"index\":2,\"value\":1,\"op\":\"SCMP_CMP_LE\"},"
                "{\"index\":3,\"value\":1,\"op\":\"SCMP_CMP_GE\"},{\"index\":4,\"value\":1,\"op\":\"SCMP_CMP_GT\"}]},"
                "{\"names\":[\"write\"],\"action\":\"SCMP_ACT_LOG\"},{\"names\":[\"open\"],\"action\":\"SCMP_ACT_"
                "TRAP\"},"
                "{\"names\":[\"close\"],\"action\":\"SCMP_ACT_TRACE\",\"errnoRet\":3},"
                "{\"names\":[\"dup\"],\"action\":\"SCMP_ACT_KILL_THREAD\"},"
                "{\"names\":[\"dup2\"],\"action\":\"SCMP_ACT_KILL_PROCESS\"},"
                "{\"names\":[\"dup3\"],\"action\":\"SCMP_ACT_NOTIFY\"}]}",
                &b64));
        b64 = mfree(b64);
        printf("%zu untranslatable profiles left to the runtime\n", ELEMENTSOF(untranslatable) - 1);
}

int main(void) {
        test_fallback();
        test_default();
        test_custom();
        test_default_errno();
        seccomp_bpf_cache_clear();
        return 0;
}
