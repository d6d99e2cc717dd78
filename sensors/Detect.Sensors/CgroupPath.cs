using System.Runtime.InteropServices;

namespace Detect.Sensors;

/// <summary>cgroup v2 directories and the ids the kernel gives them (bpf_get_current_cgroup_id).</summary>
public static partial class CgroupPath
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

    /// <summary>
    /// The cgroup id of a cgroup v2 directory: its inode number. A relative path is taken under
    /// the cgroup2 mount. Throws with a plain message for a path that is not a cgroup v2 directory.
    /// </summary>
    public static ulong Id(string path)
    {
        var root = V2Root() ?? throw new InvalidOperationException("cgroup v2 is not mounted on this host: cgroup filters need it");
        var full = Path.IsPathRooted(path) ? Path.GetFullPath(path) : Path.GetFullPath(Path.Combine(root, path));
        if (!(full == root || full.StartsWith(root + "/", StringComparison.Ordinal)))
            throw new ArgumentException($"{path} is not under the cgroup v2 mount {root}", nameof(path));
        if (!File.Exists(Path.Combine(full, "cgroup.procs")))
            throw new ArgumentException($"{full} is not a cgroup v2 directory (no cgroup.procs)", nameof(path));
        return Inode(full);
    }

    /// <summary>The cgroup v2 directory of a process (from /proc/PID/cgroup).</summary>
    public static string OfProcess(int pid)
    {
        var root = V2Root() ?? throw new InvalidOperationException("cgroup v2 is not mounted");
        foreach (var line in File.ReadLines($"/proc/{pid}/cgroup"))
        {
            if (line.StartsWith("0::", StringComparison.Ordinal))
                return root + (line.Length > 3 && line[3..] != "/" ? line[3..] : "");
        }
        throw new InvalidOperationException($"process {pid} has no cgroup v2 entry");
    }

    private static unsafe ulong Inode(string path)
    {
        // struct stat: st_dev (8 bytes) then st_ino (8 bytes) on x86-64 and arm64 alike.
        var buffer = stackalloc byte[256];
        if (stat(path, buffer) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"stat {path}: errno {errno}");
        }
        return *(ulong*)(buffer + 8);
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int stat(string path, byte* buf);
}
