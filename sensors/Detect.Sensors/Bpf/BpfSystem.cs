using System.Globalization;
using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>
/// What the host must provide before BPF objects are loaded: the privilege, the bpf and trace
/// file systems (mounted here when missing, as Tetragon does), and run-time statistics.
/// </summary>
public static unsafe partial class BpfSystem
{
    public const string BpfFsPath = "/sys/fs/bpf";
    public const string TraceFsPath = "/sys/kernel/tracing";

    private const int CapSysAdmin = 21, CapPerfmon = 38, CapBpf = 39;
    private static readonly object MountGate = new();

    /// <summary>
    /// Throws <see cref="BpfPrivilegeException"/> with a plain message when this process may not
    /// load and attach tracing programs (needs CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN). Reads
    /// the capabilities from /proc and never calls libbpf.
    /// </summary>
    public static void EnsurePrivileged()
    {
        var caps = EffectiveCapabilities();
        bool Has(int cap) => (caps & (1UL << cap)) != 0;
        if (Has(CapSysAdmin) || (Has(CapBpf) && Has(CapPerfmon))) return;
        var uid = Environment.GetEnvironmentVariable("SUDO_UID") is { } s ? $"{s} (via sudo)" : GetUid().ToString(CultureInfo.InvariantCulture);
        throw new BpfPrivilegeException(
            $"Detect's sensors load BPF programs into the kernel, which needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN). " +
            $"This process (uid {uid}) has neither. Run it as root, e.g. `sudo ./detect ...`.");
    }

    /// <summary>True when <see cref="EnsurePrivileged"/> would pass.</summary>
    public static bool IsPrivileged
    {
        get
        {
            try
            {
                EnsurePrivileged();
                return true;
            }
            catch (BpfPrivilegeException)
            {
                return false;
            }
        }
    }

    /// <summary>The effective capability set of this process (CapEff in /proc/self/status).</summary>
    public static ulong EffectiveCapabilities()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("CapEff:", StringComparison.Ordinal))
                return ulong.Parse(line.AsSpan(7).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }
        return 0;
    }

    /// <summary>
    /// Mounts bpffs at /sys/fs/bpf (pins) and tracefs at /sys/kernel/tracing (tracepoint ids)
    /// where they are missing. Returns what it mounted. A file lock serialises agents and tests
    /// starting together: two bpffs mounts stacked on one path would hide each other's pins.
    /// </summary>
    public static IReadOnlyList<string> EnsureMounted()
    {
        var mounted = new List<string>();
        lock (MountGate)
        {
            using var fileLock = LockFile("/run/detect-mount.lock");
            var mounts = MountedFileSystems();
            if (!mounts.Contains((BpfFsPath, "bpf")))
            {
                Mount("bpf", BpfFsPath, "bpf", "mode=0700");
                mounted.Add($"bpffs at {BpfFsPath}");
            }
            if (!mounts.Contains((TraceFsPath, "tracefs")))
            {
                Mount("tracefs", TraceFsPath, "tracefs", null);
                mounted.Add($"tracefs at {TraceFsPath}");
            }
        }
        return mounted;
    }

    /// <summary>(mount point, file system type) of every mount this process sees.</summary>
    public static HashSet<(string Path, string Type)> MountedFileSystems()
    {
        var set = new HashSet<(string, string)>();
        foreach (var line in File.ReadLines("/proc/self/mounts"))
        {
            var parts = line.Split(' ');
            if (parts.Length >= 3) set.Add((parts[1].Replace("\\040", " ", StringComparison.Ordinal), parts[2]));
        }
        return set;
    }

    private static void Mount(string source, string target, string type, string? data)
    {
        Directory.CreateDirectory(target);
        fixed (byte* s = LibBpf.Z(source), t = LibBpf.Z(target), f = LibBpf.Z(type), d = data == null ? null : LibBpf.Z(data))
        {
            if (Libc.mount(s, t, f, 0, d) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new BpfException($"could not mount {type} at {target}: {Errnos.Describe(errno)}", errno);
            }
        }
    }

    /// <summary>
    /// An exclusive flock on <paramref name="path"/> (created if missing), held until the result
    /// is disposed; waits while another process (or another open of the file) holds it. The file
    /// is opened with open(2) directly, as the enforcement lock is: File.OpenHandle emulates
    /// FileShare with a non-blocking flock of its own, which fails with an IOException while
    /// another process holds the exclusive lock, so two agents starting together could fail.
    /// </summary>
    public static IDisposable LockFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        const int ORdWr = 2, OCreat = 0x40, LockEx = 2, Eintr = 4;
        int fd;
        fixed (byte* p = LibBpf.Z(path)) fd = NetLibc.open(p, ORdWr | OCreat | NetLibc.OCloexec, 0x180 /* 0600 */);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new BpfException($"could not open {path}: {Errnos.Describe(errno)}", errno);
        }
        var handle = new SafeBpfFd(fd); // closing the fd releases the lock
        while (NetLibc.flock(fd, LockEx) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno == Eintr) continue; // a signal arrived while waiting: wait again
            handle.Dispose();
            throw new BpfException($"could not lock {path}: {Errnos.Describe(errno)}", errno);
        }
        return handle;
    }

    /// <summary>
    /// Turns on the kernel's per-program run-time statistics (run_time_ns, run_cnt) until the
    /// returned handle is disposed (BPF_ENABLE_STATS: no sysctl left behind).
    /// </summary>
    public static SafeBpfFd EnableRunTimeStats()
    {
        const int BpfStatsRunTime = 0;
        var fd = LibBpf.bpf_enable_stats(BpfStatsRunTime);
        if (fd < 0) throw new BpfException($"could not enable BPF run-time statistics: {Errnos.Describe(fd)}", -fd);
        return new SafeBpfFd(fd);
    }

    /// <summary>Whether a program with this kernel id is still loaded (anywhere on the host).</summary>
    public static bool ProgramExists(uint id)
    {
        var fd = LibBpf.bpf_prog_get_fd_by_id(id);
        if (fd < 0) return false;
        Libc.close(fd);
        return true;
    }

    /// <summary>Number of possible CPUs: the length of every per-CPU map value.</summary>
    public static int PossibleCpus
    {
        get
        {
            var n = LibBpf.libbpf_num_possible_cpus();
            if (n <= 0) throw new BpfException($"could not read the number of possible CPUs: {Errnos.Describe(n)}", -n);
            return n;
        }
    }

    [LibraryImport("libc")]
    private static partial uint getuid();

    private static uint GetUid() => getuid();
}
