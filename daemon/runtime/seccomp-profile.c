/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Seccomp profiles in OCI "linux.seccomp" form. This module owns the built-in default
 * profile (the usual container allow-list: everything ordinary is allowed, the calls
 * that change the host, the kernel or namespaces fail with EPERM) and the validation of
 * any profile against what libseccomp knows on this machine, so a bad profile is
 * rejected when the configuration is read, not when a task starts. */

#include <inttypes.h>
#include <stdarg.h>
#include <seccomp.h>

#include "fs-util.h"
#include "seccomp-profile.h"

#define SECCOMP_PROFILE_SIZE_MAX (4U * 1024U * 1024U)

/* The allow-list, modelled on the default Docker, containerd and Podman ship (kernel
 * >= 4.8, so ptrace is safe to allow: seccomp is re-checked after a tracer changes a
 * syscall). Names of every architecture we run on are listed together; only those that
 * exist on one of the filter's architectures end up in a profile.
 *
 * Left out on purpose (EPERM): mount and the new mount API, umount, pivot_root (chroot
 * is kept: it needs CAP_SYS_CHROOT anyway); setns, unshare (new namespaces; clone gets an
 * argument filter below, clone3 answers ENOSYS so libc falls back to clone); reboot,
 * kexec_*, *_module, swapon/swapoff, acct, quotactl*; bpf, perf_event_open,
 * userfaultfd, io_uring_* (large kernel attack surface, dropped by Docker in 2023);
 * keyctl, add_key, request_key (the keyring is not namespaced); open_by_handle_at and
 * name_to_handle_at (the "shocker" escape); lookup_dcookie, syslog, vhangup, iopl,
 * ioperm, settimeofday, stime, clock_settime* (host clock), sethostname and
 * setdomainname, fanotify_init, kcmp, pidfd_getfd, process_madvise, NUMA policy calls,
 * and obsolete calls (uselib, ustat, sysfs, _sysctl, nfsservctl, vm86*). Syscalls newer
 * than libseccomp's table (e.g. mseal) cannot be named here; runc answers ENOSYS for
 * those, so libc fallbacks still work. */
static const char *const default_allow[] = {
        /* files and descriptors */
        "access",
        "chdir",
        "chmod",
        "chown",
        "chown32",
        "chroot",
        "close",
        "close_range",
        "copy_file_range",
        "creat",
        "dup",
        "dup2",
        "dup3",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fadvise64_64",
        "fallocate",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "fchown",
        "fchown32",
        "fchownat",
        "fcntl",
        "fcntl64",
        "fdatasync",
        "fgetxattr",
        "flistxattr",
        "flock",
        "fremovexattr",
        "fsetxattr",
        "fstat",
        "fstat64",
        "fstatat64",
        "fstatfs",
        "fstatfs64",
        "fsync",
        "ftruncate",
        "ftruncate64",
        "futimesat",
        "getcwd",
        "getdents",
        "getdents64",
        "getxattr",
        "ioctl",
        "lchown",
        "lchown32",
        "lgetxattr",
        "link",
        "linkat",
        "listxattr",
        "llistxattr",
        "_llseek",
        "lremovexattr",
        "lseek",
        "lsetxattr",
        "lstat",
        "lstat64",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "newfstatat",
        "open",
        "openat",
        "openat2",
        "pipe",
        "pipe2",
        "pread64",
        "preadv",
        "preadv2",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readlink",
        "readlinkat",
        "readv",
        "removexattr",
        "rename",
        "renameat",
        "renameat2",
        "rmdir",
        "sendfile",
        "sendfile64",
        "setxattr",
        "splice",
        "stat",
        "stat64",
        "statfs",
        "statfs64",
        "statx",
        "symlink",
        "symlinkat",
        "sync",
        "sync_file_range",
        "syncfs",
        "tee",
        "truncate",
        "truncate64",
        "umask",
        "unlink",
        "unlinkat",
        "utime",
        "utimensat",
        "utimensat_time64",
        "utimes",
        "vmsplice",
        "write",
        "writev",
        "cachestat",
        /* polling, events, asynchronous I/O (not io_uring) */
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_ctl_old",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "epoll_wait_old",
        "eventfd",
        "eventfd2",
        "fanotify_mark",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "io_cancel",
        "io_destroy",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "io_setup",
        "io_submit",
        "poll",
        "ppoll",
        "ppoll_time64",
        "pselect6",
        "pselect6_time64",
        "select",
        "_newselect",
        "signalfd",
        "signalfd4",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_gettime64",
        "timerfd_settime",
        "timerfd_settime64",
        /* memory */
        "brk",
        "madvise",
        "map_shadow_stack",
        "membarrier",
        "memfd_create",
        "memfd_secret",
        "mincore",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mmap2",
        "mprotect",
        "mremap",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "remap_file_pages",
        /* processes, threads, signals (clone, clone3 and personality have own rules) */
        "capget",
        "capset",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "fork",
        "futex",
        "futex_requeue",
        "futex_time64",
        "futex_wait",
        "futex_waitv",
        "futex_wake",
        "getcpu",
        "get_robust_list",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getrusage",
        "getsid",
        "gettid",
        "ioprio_get",
        "ioprio_set",
        "kill",
        "nice",
        "pause",
        "pidfd_open",
        "pidfd_send_signal",
        "prctl",
        "prlimit64",
        "process_mrelease",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "restart_syscall",
        "rseq",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "seccomp",
        "set_robust_list",
        "set_tid_address",
        "setpgid",
        "setpriority",
        "setsid",
        "sigaction",
        "sigaltstack",
        "sigpending",
        "sigprocmask",
        "sigreturn",
        "sigsuspend",
        "tgkill",
        "tkill",
        "vfork",
        "wait4",
        "waitid",
        "waitpid",
        /* credentials and limits (the kernel checks the capabilities) */
        "getegid",
        "getegid32",
        "geteuid",
        "geteuid32",
        "getgid",
        "getgid32",
        "getgroups",
        "getgroups32",
        "getresgid",
        "getresgid32",
        "getresuid",
        "getresuid32",
        "getrlimit",
        "getuid",
        "getuid32",
        "setfsgid",
        "setfsgid32",
        "setfsuid",
        "setfsuid32",
        "setgid",
        "setgid32",
        "setgroups",
        "setgroups32",
        "setregid",
        "setregid32",
        "setresgid",
        "setresgid32",
        "setresuid",
        "setresuid32",
        "setreuid",
        "setreuid32",
        "setrlimit",
        "setuid",
        "setuid32",
        "ugetrlimit",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        /* time (reading, sleeping, timers; setting the clock is left out) */
        "adjtimex",
        "alarm",
        "clock_adjtime",
        "clock_adjtime64",
        "clock_getres",
        "clock_getres_time64",
        "clock_gettime",
        "clock_gettime64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "getitimer",
        "gettimeofday",
        "nanosleep",
        "setitimer",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_gettime64",
        "timer_settime",
        "timer_settime64",
        "times",
        /* sockets (socket itself has an own rule) */
        "accept",
        "accept4",
        "bind",
        "connect",
        "getpeername",
        "getsockname",
        "getsockopt",
        "listen",
        "recv",
        "recvfrom",
        "recvmmsg",
        "recvmmsg_time64",
        "recvmsg",
        "send",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setsockopt",
        "shutdown",
        "socketcall",
        "socketpair",
        /* System V and POSIX IPC (namespaced) */
        "ipc",
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedreceive_time64",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_unlink",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "semtimedop_time64",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
        /* system information */
        "getrandom",
        "sysinfo",
        "uname",
        /* architecture specific: x86 thread areas, arm cache and TLS helpers */
        "arch_prctl",
        "get_thread_area",
        "modify_ldt",
        "set_thread_area",
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "breakpoint",
        "cacheflush",
        "set_tls",
        NULL,
};

/* clone: allowed unless it asks for a new namespace (CLONE_NEWNS | CLONE_NEWCGROUP |
 * CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET); a user
 * namespace needs no capability, so this is the only thing stopping one. The flags are
 * argument 0 on every architecture we build for (s390 would differ). */
#define CLONE_NAMESPACE_FLAGS UINT64_C(0x7E020000)
/* AF_VSOCK reaches the hypervisor host of a VM node; nothing a task needs. */
#define AF_VSOCK_VALUE UINT64_C(40)
/* personality: only the harmless values (Linux, 32-bit Linux, UNAME26, their mix, query). */
static const uint64_t personality_allowed[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};

const char *const *seccomp_default_syscalls(void) {
        return default_allow;
}

static const char *const actions[] = {
        "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",  "SCMP_ACT_TRACE", "SCMP_ACT_LOG",  "SCMP_ACT_NOTIFY",       NULL,
};

static const char *const operators[] = {
        "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE",        "SCMP_CMP_EQ",
        "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ", NULL,
};

static const char *const filter_flags[] = {
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        NULL,
};

static const struct {
        const char *name;
        uint32_t token;
} architectures[] = {
        {"SCMP_ARCH_X86", SCMP_ARCH_X86},
        {"SCMP_ARCH_X86_64", SCMP_ARCH_X86_64},
        {"SCMP_ARCH_X32", SCMP_ARCH_X32},
        {"SCMP_ARCH_ARM", SCMP_ARCH_ARM},
        {"SCMP_ARCH_AARCH64", SCMP_ARCH_AARCH64},
        {"SCMP_ARCH_MIPS", SCMP_ARCH_MIPS},
        {"SCMP_ARCH_MIPS64", SCMP_ARCH_MIPS64},
        {"SCMP_ARCH_MIPS64N32", SCMP_ARCH_MIPS64N32},
        {"SCMP_ARCH_MIPSEL", SCMP_ARCH_MIPSEL},
        {"SCMP_ARCH_MIPSEL64", SCMP_ARCH_MIPSEL64},
        {"SCMP_ARCH_MIPSEL64N32", SCMP_ARCH_MIPSEL64N32},
        {"SCMP_ARCH_PPC", SCMP_ARCH_PPC},
        {"SCMP_ARCH_PPC64", SCMP_ARCH_PPC64},
        {"SCMP_ARCH_PPC64LE", SCMP_ARCH_PPC64LE},
        {"SCMP_ARCH_S390", SCMP_ARCH_S390},
        {"SCMP_ARCH_S390X", SCMP_ARCH_S390X},
#ifdef SCMP_ARCH_PARISC
        {"SCMP_ARCH_PARISC", SCMP_ARCH_PARISC},
        {"SCMP_ARCH_PARISC64", SCMP_ARCH_PARISC64},
#endif
#ifdef SCMP_ARCH_RISCV64
        {"SCMP_ARCH_RISCV64", SCMP_ARCH_RISCV64},
#endif
#ifdef SCMP_ARCH_LOONGARCH64
        {"SCMP_ARCH_LOONGARCH64", SCMP_ARCH_LOONGARCH64},
#endif
#ifdef SCMP_ARCH_M68K
        {"SCMP_ARCH_M68K", SCMP_ARCH_M68K},
#endif
#ifdef SCMP_ARCH_SH
        {"SCMP_ARCH_SH", SCMP_ARCH_SH},
        {"SCMP_ARCH_SHEB", SCMP_ARCH_SHEB},
#endif
};

static const char *arch_name(uint32_t token) {
        for (size_t i = 0; i < ELEMENTSOF(architectures); i++)
                if (architectures[i].token == token)
                        return architectures[i].name;
        return NULL;
}

static bool arch_known(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(architectures); i++)
                if (streq(architectures[i].name, name))
                        return true;
        return false;
}

static bool strv_has(const char *const *l, const char *s) {
        for (; *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

/* The native architecture and the compat ones its kernel runs, as the default lists. */
static size_t filter_architectures(uint32_t ret[static 3]) {
        uint32_t native = seccomp_arch_native();

        ret[0] = native;
        if (native == SCMP_ARCH_X86_64) {
                ret[1] = SCMP_ARCH_X86;
                ret[2] = SCMP_ARCH_X32;
                return 3;
        }
        if (native == SCMP_ARCH_AARCH64) {
                ret[1] = SCMP_ARCH_ARM;
                return 2;
        }
        return 1;
}

static JsonValue *new_rule(const char *name, const char *action) {
        _cleanup_json_ JsonValue *rule = json_new_object();
        const char *names[] = {name, NULL};

        if (!rule)
                return NULL;
        if (json_object_set(rule, "names", json_new_strv((char *const *) names)) < 0 ||
            json_object_set_string(rule, "action", action) < 0)
                return NULL;
        return TAKE_PTR(rule);
}

static JsonValue *new_arg(unsigned index, uint64_t value, uint64_t value_two, const char *op) {
        _cleanup_json_ JsonValue *arg = json_new_object();

        if (!arg)
                return NULL;
        if (json_object_set_int64(arg, "index", index) < 0 ||
            json_object_set(arg, "value", json_new_uint64(value)) < 0 ||
            json_object_set(arg, "valueTwo", json_new_uint64(value_two)) < 0 ||
            json_object_set_string(arg, "op", op) < 0)
                return NULL;
        return TAKE_PTR(arg);
}

/* A rule for one syscall with one argument condition. */
static JsonValue *
new_rule_with_arg(const char *name, unsigned index, uint64_t value, uint64_t value_two, const char *op) {
        _cleanup_json_ JsonValue *rule = new_rule(name, "SCMP_ACT_ALLOW");
        _cleanup_json_ JsonValue *args = json_new_array();

        if (!rule || !args)
                return NULL;
        if (json_array_append(args, new_arg(index, value, value_two, op)) < 0 ||
            json_object_set(rule, "args", TAKE_PTR(args)) < 0)
                return NULL;
        return TAKE_PTR(rule);
}

static bool syscall_exists(const char *name, const uint32_t *arches, size_t n_arches) {
        for (size_t i = 0; i < n_arches; i++)
                if (seccomp_syscall_resolve_name_arch(arches[i], name) >= 0)
                        return true;
        return false;
}

int seccomp_default_profile(JsonValue **ret) {
        _cleanup_json_ JsonValue *profile = NULL;
        _cleanup_json_ JsonValue *arch_list = NULL;
        _cleanup_json_ JsonValue *names = NULL;
        _cleanup_json_ JsonValue *rules = NULL;
        _cleanup_json_ JsonValue *rule = NULL;
        uint32_t arches[3];
        size_t n_arches;
        int r;

        if (!ret)
                return -EINVAL;

        n_arches = filter_architectures(arches);

        profile = json_new_object();
        arch_list = json_new_array();
        names = json_new_array();
        rules = json_new_array();
        if (!profile || !arch_list || !names || !rules)
                return -ENOMEM;

        for (size_t i = 0; i < n_arches; i++) {
                const char *n = arch_name(arches[i]);
                if (!n)
                        return -EOPNOTSUPP; /* libseccomp knows an architecture we don't */
                r = json_array_append(arch_list, json_new_string(n));
                if (r < 0)
                        return r;
        }

        /* Only syscalls one of the filter's architectures has: the runtime would skip
         * the others anyway, and a profile that validates here must mean what it says. */
        for (const char *const *s = default_allow; *s; s++) {
                if (!syscall_exists(*s, arches, n_arches))
                        continue;
                r = json_array_append(names, json_new_string(*s));
                if (r < 0)
                        return r;
        }

        rule = json_new_object();
        if (!rule)
                return -ENOMEM;
        r = json_object_set(rule, "names", TAKE_PTR(names));
        if (r < 0)
                return r;
        r = json_object_set_string(rule, "action", "SCMP_ACT_ALLOW");
        if (r < 0)
                return r;
        r = json_array_append(rules, TAKE_PTR(rule));
        if (r < 0)
                return r;

        /* (arg0 & CLONE_NAMESPACE_FLAGS) == 0 */
        r = json_array_append(rules, new_rule_with_arg("clone", 0, CLONE_NAMESPACE_FLAGS, 0, "SCMP_CMP_MASKED_EQ"));
        if (r < 0)
                return r;

        /* clone3 passes its flags in memory, which seccomp cannot inspect: ENOSYS makes
         * glibc and musl fall back to clone, which is filtered above. */
        rule = new_rule("clone3", "SCMP_ACT_ERRNO");
        if (!rule)
                return -ENOMEM;
        r = json_object_set_int64(rule, "errnoRet", ENOSYS);
        if (r < 0)
                return r;
        r = json_array_append(rules, TAKE_PTR(rule));
        if (r < 0)
                return r;

        r = json_array_append(rules, new_rule_with_arg("socket", 0, AF_VSOCK_VALUE, 0, "SCMP_CMP_NE"));
        if (r < 0)
                return r;

        for (size_t i = 0; i < ELEMENTSOF(personality_allowed); i++) {
                r = json_array_append(rules,
                                      new_rule_with_arg("personality", 0, personality_allowed[i], 0, "SCMP_CMP_EQ"));
                if (r < 0)
                        return r;
        }

        r = json_object_set_string(profile, "defaultAction", "SCMP_ACT_ERRNO");
        if (r < 0)
                return r;
        r = json_object_set_int64(profile, "defaultErrnoRet", 1); /* EPERM */
        if (r < 0)
                return r;
        r = json_object_set(profile, "architectures", TAKE_PTR(arch_list));
        if (r < 0)
                return r;
        r = json_object_set(profile, "syscalls", TAKE_PTR(rules));
        if (r < 0)
                return r;

        *ret = TAKE_PTR(profile);
        return 0;
}

/* An optional member that must be an unsigned integer when present. */
static int check_uint(const JsonValue *obj, const char *key, uint64_t max, const char *where, char **ret_error) {
        const JsonValue *v = json_get(obj, key);
        uint64_t u;

        if (!v)
                return 0;
        if (json_uint64(v, &u) < 0 || u > max)
                return error_message(ret_error, -EINVAL, "%s%s is not an integer in 0-%" PRIu64, where, key, max);
        return 0;
}

static int validate_rule(const JsonValue *rule, size_t i, char **ret_error) {
        const JsonValue *names, *args;
        const char *action;
        char where[64];
        int r;

        (void) snprintf(where, sizeof(where), "syscalls[%zu].", i);

        if (!json_is_object(rule))
                return error_message(ret_error, -EINVAL, "syscalls[%zu] is not an object", i);

        action = json_get_string(rule, "action");
        if (!action)
                return error_message(ret_error, -EINVAL, "%saction is missing or not a string", where);
        if (!strv_has(actions, action))
                return error_message(ret_error, -EINVAL, "%saction: unknown action '%s'", where, action);
        r = check_uint(rule, "errnoRet", UINT32_MAX, where, ret_error);
        if (r < 0)
                return r;

        names = json_get(rule, "names");
        if (!json_is_array(names))
                return error_message(ret_error, -EINVAL, "%snames is missing or not an array", where);
        for (size_t k = 0; k < json_length(names); k++) {
                const char *n = json_string(json_array_at(names, k));
                if (!n)
                        return error_message(ret_error, -EINVAL, "%snames[%zu] is not a string", where, k);
                /* libseccomp's table spans all architectures (names of others resolve to
                 * negative pseudo numbers), so this rejects only names it has never heard of. */
                if (seccomp_syscall_resolve_name(n) == __NR_SCMP_ERROR)
                        return error_message(ret_error, -EINVAL, "unknown syscall '%s' (%snames[%zu])", n, where, k);
        }

        args = json_get(rule, "args");
        if (args && json_type(args) != JSON_NULL) {
                if (!json_is_array(args))
                        return error_message(ret_error, -EINVAL, "%sargs is not an array", where);
                for (size_t k = 0; k < json_length(args); k++) {
                        const JsonValue *a = json_array_at(args, k);
                        const char *op;
                        char awhere[96];

                        (void) snprintf(awhere, sizeof(awhere), "%sargs[%zu].", where, k);
                        if (!json_is_object(a))
                                return error_message(ret_error, -EINVAL, "%sargs[%zu] is not an object", where, k);
                        if (!json_get(a, "index") || !json_get(a, "value"))
                                return error_message(ret_error, -EINVAL, "%sargs[%zu] needs index and value", where, k);
                        r = check_uint(a, "index", 5, awhere, ret_error);
                        if (r < 0)
                                return r;
                        r = check_uint(a, "value", UINT64_MAX, awhere, ret_error);
                        if (r < 0)
                                return r;
                        r = check_uint(a, "valueTwo", UINT64_MAX, awhere, ret_error);
                        if (r < 0)
                                return r;
                        op = json_get_string(a, "op");
                        if (!op)
                                return error_message(ret_error, -EINVAL, "%sop is missing or not a string", awhere);
                        if (!strv_has(operators, op))
                                return error_message(ret_error, -EINVAL, "%sop: unknown operator '%s'", awhere, op);
                }
        }
        return 0;
}

int seccomp_profile_validate(const JsonValue *profile, char **ret_error) {
        const JsonValue *v;
        const char *action;
        int r;

        if (!json_is_object(profile))
                return error_message(ret_error, -EINVAL, "seccomp profile is not a JSON object");

        action = json_get_string(profile, "defaultAction");
        if (!action)
                return error_message(ret_error, -EINVAL, "defaultAction is missing or not a string");
        if (!strv_has(actions, action))
                return error_message(ret_error, -EINVAL, "defaultAction: unknown action '%s'", action);
        r = check_uint(profile, "defaultErrnoRet", UINT32_MAX, "", ret_error);
        if (r < 0)
                return r;

        v = json_get(profile, "architectures");
        if (v && json_type(v) != JSON_NULL) {
                if (!json_is_array(v))
                        return error_message(ret_error, -EINVAL, "architectures is not an array");
                for (size_t i = 0; i < json_length(v); i++) {
                        const char *a = json_string(json_array_at(v, i));
                        if (!a)
                                return error_message(ret_error, -EINVAL, "architectures[%zu] is not a string", i);
                        if (!arch_known(a))
                                return error_message(ret_error, -EINVAL, "unknown architecture '%s'", a);
                }
        }

        v = json_get(profile, "flags");
        if (v && json_type(v) != JSON_NULL) {
                if (!json_is_array(v))
                        return error_message(ret_error, -EINVAL, "flags is not an array");
                for (size_t i = 0; i < json_length(v); i++) {
                        const char *f = json_string(json_array_at(v, i));
                        if (!f)
                                return error_message(ret_error, -EINVAL, "flags[%zu] is not a string", i);
                        if (!strv_has(filter_flags, f))
                                return error_message(ret_error, -EINVAL, "unknown seccomp filter flag '%s'", f);
                }
        }

        v = json_get(profile, "listenerPath");
        if (v && !json_is_string(v))
                return error_message(ret_error, -EINVAL, "listenerPath is not a string");

        v = json_get(profile, "syscalls");
        if (v && json_type(v) != JSON_NULL) {
                if (!json_is_array(v))
                        return error_message(ret_error, -EINVAL, "syscalls is not an array");
                for (size_t i = 0; i < json_length(v); i++) {
                        r = validate_rule(json_array_at(v, i), i, ret_error);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int seccomp_profile_load(const char *path, JsonValue **ret, char **ret_error) {
        _cleanup_free_ char *data = NULL, *error = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        size_t size = 0;
        int r;

        if (!path || !ret)
                return -EINVAL;

        r = read_full_file(path, SECCOMP_PROFILE_SIZE_MAX, &data, &size);
        if (r == -EFBIG) {
                (void) error_message(ret_error, -EINVAL, "%s: larger than %u bytes", path, SECCOMP_PROFILE_SIZE_MAX);
                return r;
        }
        if (r < 0) {
                if (ret_error && asprintf(ret_error, "%s: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }

        r = json_parse(data, size, JSON_DEPTH_MAX_DEFAULT, &v, &error);
        if (r < 0) {
                if (r != -ENOMEM)
                        (void) error_message(ret_error, -EINVAL, "%s: %s", path, error ?: "invalid JSON");
                return r == -ENOMEM ? r : -EINVAL;
        }

        error = mfree(error);
        r = seccomp_profile_validate(v, &error);
        if (r < 0) {
                if (r == -EINVAL)
                        r = error_message(ret_error, -EINVAL, "%s: %s", path, strna(error));
                return r;
        }

        *ret = TAKE_PTR(v);
        return 0;
}
