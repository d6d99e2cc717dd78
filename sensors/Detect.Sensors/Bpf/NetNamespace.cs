using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>
/// Runs code inside a network namespace. Attaching TC filters (netlink), XDP links and looking
/// up interface indexes all act on the calling thread's namespace, so each of those steps runs
/// on a short-lived thread that has joined the target namespace (setns is per thread for
/// network namespaces); the rest of the process stays where it is.
/// </summary>
public static unsafe class NetNamespace
{
    /// <summary>Where `ip netns add NAME` puts a namespace.</summary>
    public const string NamedRoot = "/run/netns";

    /// <summary>The namespace file for a name ("detect-x" -> /run/netns/detect-x); an absolute path is kept.</summary>
    public static string PathOf(string netns) => netns.StartsWith('/') ? netns : System.IO.Path.Combine(NamedRoot, netns);

    /// <summary>
    /// Runs <paramref name="action"/> in <paramref name="netns"/> (a name under /run/netns or a
    /// path such as /proc/PID/ns/net), or right here when it is null.
    /// </summary>
    public static T Run<T>(string? netns, Func<T> action)
    {
        if (netns == null) return action();
        var path = PathOf(netns);
        if (!File.Exists(path))
            throw new ArgumentException($"network namespace {netns} does not exist ({path} is missing)", nameof(netns));
        T result = default!;
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                Enter(path);
                result = action();
            }
            catch (Exception e)
            {
                error = ExceptionDispatchInfo.Capture(e);
            }
            // The thread ends here, still in the namespace: nothing else ever runs on it.
        })
        {
            IsBackground = true,
            Name = "netns " + netns,
        };
        thread.Start();
        thread.Join();
        error?.Throw();
        return result;
    }

    public static void Run(string? netns, Action action) => Run(netns, () =>
    {
        action();
        return 0;
    });

    private static void Enter(string path)
    {
        int fd;
        fixed (byte* p = LibBpf.Z(path)) fd = NetLibc.open(p, NetLibc.ORdOnly | NetLibc.OCloexec, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new BpfException($"could not open network namespace {path}: {Errnos.Describe(errno)}", errno);
        }
        try
        {
            if (NetLibc.setns(fd, NetLibc.CloneNewNet) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new BpfException($"could not enter network namespace {path}: {Errnos.Describe(errno)}", errno);
            }
        }
        finally
        {
            NetLibc.close(fd);
        }
    }

    /// <summary>The index of interface <paramref name="name"/> in <paramref name="netns"/> (null: this process's namespace).</summary>
    public static int InterfaceIndex(string name, string? netns = null)
    {
        var index = Run(netns, () =>
        {
            fixed (byte* p = LibBpf.Z(name)) return (int)NetLibc.if_nametoindex(p);
        });
        if (index == 0)
            throw new ArgumentException($"there is no network interface '{name}'{(netns != null ? $" in namespace {netns}" : "")}", nameof(name));
        return index;
    }

    /// <summary>The inode of a namespace: with the interface name, identifies an interface across namespaces.</summary>
    public static ulong Inode(string? netns)
    {
        var path = netns == null ? "/proc/self/ns/net" : PathOf(netns);
        var buffer = stackalloc byte[256];
        fixed (byte* p = LibBpf.Z(path))
        {
            if (NetLibc.stat(p, buffer) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new BpfException($"stat {path}: {Errnos.Describe(errno)}", errno);
            }
        }
        return *(ulong*)(buffer + 8); // st_ino follows st_dev on x86-64 and arm64
    }
}
