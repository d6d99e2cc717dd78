using Detect.Pipeline.Syscalls;

namespace Detect.Pipeline.Features;

/// <summary>
/// Groups of syscalls by what they do (FEATURES.md lists the members). Built once from names, so
/// the table follows the x86-64 numbering generated from the kernel headers.
/// </summary>
public static class SyscallClasses
{
    public static readonly string[] Names =
    [
        "file_read", "file_write", "file_open", "file_meta", "file_dir", "fd", "memory", "process",
        "signal", "network", "ipc", "time", "identity", "poll", "system", "other",
    ];

    public const int Other = 15;

    /// <summary>Class members by class index (names as in asm/unistd_64.h, surrogates as i386_NAME).</summary>
    public static readonly string[][] Members =
    [
        ["read", "pread64", "readv", "preadv", "preadv2", "readlink", "readlinkat", "readahead"],
        ["write", "pwrite64", "writev", "pwritev", "pwritev2", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
            "truncate", "ftruncate", "fallocate", "copy_file_range", "splice", "tee", "vmsplice", "sendfile"],
        ["open", "openat", "openat2", "creat", "open_by_handle_at", "name_to_handle_at", "open_tree"],
        ["stat", "fstat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2", "statfs", "fstatfs", "lseek",
            "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "setxattr", "lsetxattr", "fsetxattr",
            "removexattr", "lremovexattr", "fremovexattr", "utime", "utimes", "utimensat", "futimesat", "ustat"],
        ["mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
            "symlinkat", "chdir", "fchdir", "getcwd", "getdents", "getdents64", "mknod", "mknodat", "chroot", "pivot_root"],
        ["close", "close_range", "dup", "dup2", "dup3", "fcntl", "pipe", "pipe2", "flock", "eventfd", "eventfd2", "inotify_init",
            "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_init", "fanotify_mark", "signalfd", "signalfd4",
            "timerfd_create", "timerfd_settime", "timerfd_gettime", "memfd_create", "userfaultfd", "io_setup", "io_destroy",
            "io_getevents", "io_submit", "io_cancel", "io_uring_setup", "io_uring_enter", "io_uring_register"],
        ["mmap", "munmap", "mprotect", "brk", "mremap", "madvise", "msync", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
            "mincore", "remap_file_pages", "pkey_mprotect", "pkey_alloc", "pkey_free", "mbind", "set_mempolicy", "get_mempolicy",
            "migrate_pages", "move_pages", "process_madvise", "process_mrelease", "membarrier"],
        ["clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill", "tkill", "tgkill",
            "getpid", "getppid", "gettid", "setsid", "getsid", "setpgid", "getpgid", "getpgrp", "prctl", "arch_prctl",
            "set_tid_address", "sched_yield", "sched_setparam", "sched_getparam", "sched_setscheduler", "sched_getscheduler",
            "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval", "sched_setaffinity", "sched_getaffinity",
            "sched_setattr", "sched_getattr", "setpriority", "getpriority", "unshare", "setns", "pidfd_open", "pidfd_send_signal",
            "pidfd_getfd", "i386_nice"],
        ["rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait", "rt_sigqueueinfo",
            "rt_tgsigqueueinfo", "rt_sigsuspend", "sigaltstack", "pause", "restart_syscall", "alarm", "i386_sgetmask", "i386_ssetmask"],
        ["socket", "socketpair", "connect", "accept", "accept4", "bind", "listen", "sendto", "recvfrom", "sendmsg", "recvmsg",
            "sendmmsg", "recvmmsg", "shutdown", "getsockname", "getpeername", "setsockopt", "getsockopt", "i386_socketcall"],
        ["msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semctl", "semtimedop", "shmget", "shmat", "shmdt", "shmctl",
            "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr", "futex", "futex_waitv",
            "set_robust_list", "get_robust_list", "process_vm_readv", "process_vm_writev", "i386_ipc"],
        ["nanosleep", "clock_nanosleep", "clock_gettime", "clock_settime", "clock_getres", "gettimeofday", "settimeofday", "time",
            "times", "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
            "adjtimex", "clock_adjtime", "i386_stime", "i386_ftime"],
        ["getuid", "geteuid", "getgid", "getegid", "setuid", "setgid", "setreuid", "setregid", "setresuid", "getresuid", "setresgid",
            "getresgid", "setfsuid", "setfsgid", "getgroups", "setgroups", "capget", "capset", "chmod", "fchmod", "fchmodat",
            "fchmodat2", "chown", "fchown", "lchown", "fchownat", "umask"],
        ["poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
            "epoll_pwait2"],
        ["ioctl", "mount", "umount2", "reboot", "sethostname", "setdomainname", "init_module", "finit_module", "delete_module",
            "create_module", "ptrace", "bpf", "perf_event_open", "kexec_load", "kexec_file_load", "swapon", "swapoff", "acct",
            "quotactl", "iopl", "ioperm", "syslog", "uname", "sysinfo", "getrlimit", "setrlimit", "prlimit64", "getrusage",
            "personality", "seccomp", "keyctl", "add_key", "request_key", "uselib", "modify_ldt", "set_thread_area",
            "get_thread_area", "vhangup", "getrandom", "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "mount_setattr",
            "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "sysfs", "i386_vm86", "i386_vm86old"],
        [],
    ];

    /// <summary>Syscalls with a feature of their own (f_sc_NAME): the frequent ones, and the rare ones attacks need.</summary>
    public static readonly string[] Tracked =
    [
        "read", "write", "open", "openat", "close", "stat", "fstat", "lstat", "lseek", "mmap", "mprotect", "munmap", "brk",
        "ioctl", "access", "pipe", "dup2", "fcntl", "clone", "fork", "vfork", "execve", "exit_group", "wait4", "kill",
        "rt_sigaction", "rt_sigprocmask", "socket", "connect", "accept", "bind", "listen", "sendto", "recvfrom",
        "i386_socketcall", "select", "poll", "setuid", "setgid", "getuid", "geteuid", "chmod", "chown", "unlink", "rename",
        "getdents", "getdents64", "ptrace", "futex", "nanosleep", "time", "gettimeofday", "uname", "set_thread_area",
    ];

    /// <summary>Class index by syscall number (0..1023).</summary>
    public static readonly byte[] ClassOf = BuildClassOf();

    /// <summary>Tracked index by syscall number, or -1.</summary>
    public static readonly sbyte[] TrackedIndex = BuildTracked();

    private static byte[] BuildClassOf()
    {
        var table = new byte[SyscallTable.Space];
        Array.Fill(table, (byte)Other);
        for (var c = 0; c < Members.Length; c++)
            foreach (var name in Members[c])
            {
                var nr = SyscallTable.X8664(name);
                if (nr >= 0 && nr < table.Length) table[nr] = (byte)c;
            }
        return table;
    }

    private static sbyte[] BuildTracked()
    {
        var table = new sbyte[SyscallTable.Space];
        Array.Fill(table, (sbyte)-1);
        for (var i = 0; i < Tracked.Length; i++)
        {
            var nr = SyscallTable.X8664(Tracked[i]);
            if (nr < 0) throw new InvalidOperationException($"tracked syscall {Tracked[i]} is not in the table");
            table[nr] = (sbyte)i;
        }
        return table;
    }
}
