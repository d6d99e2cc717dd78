using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>
/// cgroup v2 directories as attach targets for cgroup programs (Sensors II: connect deny, flow
/// attribution). The root is refused unless allowed: a program there covers every process of the
/// host, and tests must only ever touch a child cgroup they made.
/// </summary>
public static unsafe class CgroupTarget
{
    /// <summary>Where cgroup2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts), or null.</summary>
    public static string? V2Root()
    {
        foreach (var line in File.ReadLines("/proc/self/mounts"))
        {
            var parts = line.Split(' ');
            if (parts.Length >= 3 && parts[2] == "cgroup2") return parts[1];
        }
        return null;
    }

    /// <summary>The absolute directory of <paramref name="cgroup"/> (a relative path is taken under the cgroup2 mount).</summary>
    public static string FullPath(string cgroup)
    {
        var root = V2Root() ?? throw new InvalidOperationException("cgroup v2 is not mounted on this host");
        var full = Path.IsPathRooted(cgroup) ? Path.GetFullPath(cgroup) : Path.GetFullPath(Path.Combine(root, cgroup));
        if (!(full == root || full.StartsWith(root + "/", StringComparison.Ordinal)))
            throw new ArgumentException($"{cgroup} is not under the cgroup v2 mount {root}", nameof(cgroup));
        if (!File.Exists(Path.Combine(full, "cgroup.procs")))
            throw new ArgumentException($"{full} is not a cgroup v2 directory (no cgroup.procs)", nameof(cgroup));
        return full.TrimEnd('/');
    }

    /// <summary>The cgroup id (the directory's inode number, as bpf_get_current_cgroup_id returns it).</summary>
    public static ulong Id(string cgroup)
    {
        var full = FullPath(cgroup);
        var buffer = stackalloc byte[256];
        fixed (byte* p = LibBpf.Z(full))
        {
            if (NetLibc.stat(p, buffer) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new BpfException($"stat {full}: {Errnos.Describe(errno)}", errno);
            }
        }
        return *(ulong*)(buffer + 8);
    }

    public static bool IsRoot(string cgroup) => FullPath(cgroup) == V2Root()!.TrimEnd('/');

    /// <summary>Throws unless <paramref name="cgroup"/> is a cgroup v2 directory, and not the root unless <paramref name="allowRoot"/>.</summary>
    public static void Check(string cgroup, bool allowRoot)
    {
        if (!allowRoot && IsRoot(cgroup))
            throw new ArgumentException($"{cgroup} is the cgroup v2 root: a program there affects every process of the host; name a child cgroup (or allow the root explicitly)", nameof(cgroup));
    }

    /// <summary>Attaches a cgroup program (bpf_link, multi-attach) to <paramref name="cgroup"/>.</summary>
    public static BpfLink Attach(BpfProgram program, string cgroup)
    {
        ArgumentNullException.ThrowIfNull(program);
        const int ODirectory = 0x10000;
        var full = FullPath(cgroup);
        int fd;
        fixed (byte* p = LibBpf.Z(full)) fd = NetLibc.open(p, NetLibc.ORdOnly | ODirectory | NetLibc.OCloexec, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new BpfException($"could not open cgroup {full}: {Errnos.Describe(errno)}", errno, program.Name, full);
        }
        try
        {
            return program.AttachCgroup(fd);
        }
        finally
        {
            NetLibc.close(fd);
        }
    }
}
