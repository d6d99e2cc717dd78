using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>
/// A BPF operation failed. <see cref="Errno"/> is the kernel's (or libbpf's) error number;
/// <see cref="Program"/> and <see cref="AttachPoint"/> name what was refused when a program was;
/// <see cref="Log"/> holds what libbpf printed (the kernel's reason, the verifier log).
/// </summary>
public class BpfException : Exception
{
    public BpfException(string message, int errno = 0, string? program = null, string? attachPoint = null, string? log = null, Exception? inner = null)
        : base(message, inner)
    {
        Errno = errno;
        Program = program;
        AttachPoint = attachPoint;
        Log = log;
    }

    public BpfException() : this("BPF operation failed") { }

    public BpfException(string message) : this(message, 0) { }

    public BpfException(string message, Exception inner) : this(message, 0, inner: inner) { }

    public int Errno { get; }
    public string? Program { get; }
    public string? AttachPoint { get; }
    public string? Log { get; }

    /// <summary>"EPERM (Operation not permitted)".</summary>
    public string ErrnoText => Errno == 0 ? "" : Errnos.Describe(Errno);
}

/// <summary>
/// The process may not load BPF programs (no root, no CAP_BPF). Thrown before libbpf is touched,
/// with a message that says what to do.
/// </summary>
public sealed class BpfPrivilegeException : BpfException
{
    public BpfPrivilegeException(string message) : base(message, 1) { }

    public BpfPrivilegeException() : this("no privilege to load BPF programs") { }

    public BpfPrivilegeException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>Names for errno values in messages.</summary>
public static class Errnos
{
    private static readonly Dictionary<int, string> Names = new()
    {
        [1] = "EPERM", [2] = "ENOENT", [3] = "ESRCH", [4] = "EINTR", [5] = "EIO", [7] = "E2BIG", [9] = "EBADF",
        [11] = "EAGAIN", [12] = "ENOMEM", [13] = "EACCES", [14] = "EFAULT", [16] = "EBUSY", [17] = "EEXIST",
        [19] = "ENODEV", [22] = "EINVAL", [24] = "EMFILE", [28] = "ENOSPC", [38] = "ENOSYS", [95] = "EOPNOTSUPP",
        [524] = "ENOTSUPP", [4003] = "LIBBPF_ERRNO__RELOC", [4007] = "LIBBPF_ERRNO__VERIFY",
    };

    public static string Name(int errno) => Names.TryGetValue(Math.Abs(errno), out var n) ? n : $"errno {Math.Abs(errno)}";

    public static string Describe(int errno)
    {
        errno = Math.Abs(errno);
        string text;
        unsafe
        {
            var buf = stackalloc byte[256];
            text = LibBpf.libbpf_strerror(errno, buf, 256) == 0 ? LibBpf.Utf8(buf) ?? "" : Libc.StrError(errno);
        }
        return $"{Name(errno)} ({text})";
    }
}
