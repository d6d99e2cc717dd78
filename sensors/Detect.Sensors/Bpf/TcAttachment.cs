using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>Which side of an interface a TC program runs on.</summary>
public enum TcDirection
{
    Ingress = LibBpf.BpfTcIngress,
    Egress = LibBpf.BpfTcEgress,
}

/// <summary>Options of <see cref="TcAttachment.Attach"/>.</summary>
public sealed record TcAttachOptions
{
    /// <summary>
    /// Filter handle. Detect uses fixed handles, so an agent that restarts after a crash replaces
    /// the filter it left behind instead of stacking a second one.
    /// </summary>
    public uint Handle { get; init; } = 0xDE7E;

    /// <summary>Filter priority (1-65535; lower runs first).</summary>
    public uint Priority { get; init; } = 0xDE7;

    /// <summary>Replace a filter with the same handle and priority (BPF_TC_F_REPLACE).</summary>
    public bool Replace { get; init; } = true;
}

/// <summary>
/// A BPF program attached as a direct-action cls_bpf filter on an interface's clsact qdisc
/// (libbpf's bpf_tc_* in 1.1; TCX links need a newer libbpf). Unlike a bpf_link, the filter
/// outlives this process: Dispose removes it, and the clsact qdisc too when this process made it
/// and no other attachment of this process still uses it. Works in another network namespace
/// (the netlink calls run on a thread inside it).
/// </summary>
public sealed unsafe class TcAttachment : IDisposable
{
    private static readonly Dictionary<(ulong Netns, int Ifindex), int> QdiscsWeMade = [];
    private static readonly Lock Gate = new();
    private readonly bool _madeQdisc;
    private int _disposed;

    private TcAttachment(string program, string iface, int ifindex, string? netns, ulong netnsInode, TcDirection direction, uint handle, uint priority, uint programId, bool madeQdisc)
    {
        Program = program;
        Interface = iface;
        Ifindex = ifindex;
        Netns = netns;
        NetnsInode = netnsInode;
        Direction = direction;
        Handle = handle;
        Priority = priority;
        ProgramId = programId;
        _madeQdisc = madeQdisc;
    }

    public string Program { get; }
    public string Interface { get; }
    public int Ifindex { get; }
    /// <summary>The network namespace (name under /run/netns or a path), or null for this process's.</summary>
    public string? Netns { get; }
    public ulong NetnsInode { get; }
    public TcDirection Direction { get; }
    public uint Handle { get; }
    public uint Priority { get; }
    /// <summary>The kernel's id of the attached program.</summary>
    public uint ProgramId { get; }

    public bool IsDisposed => _disposed != 0;

    /// <summary>
    /// Attaches a loaded SCHED_CLS program (SEC("tc")) to <paramref name="iface"/> on
    /// <paramref name="direction"/>, in <paramref name="netns"/> when given. Throws a
    /// <see cref="BpfException"/> naming the program, interface and the kernel's reason.
    /// </summary>
    public static TcAttachment Attach(BpfProgram program, string iface, TcDirection direction, string? netns = null, TcAttachOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(program);
        options ??= new TcAttachOptions();
        if (options.Priority is 0 or > 0xFFFF) throw new ArgumentOutOfRangeException(nameof(options), "TC priority must be 1-65535");
        var fd = program.Fd;
        var where = $"tc {direction.ToString().ToLowerInvariant()} of {iface}{(netns != null ? " in " + netns : "")}";
        if (fd < 0) throw new BpfException($"program {program.Name} cannot be attached at {where}: it is not loaded", 0, program.Name, where);
        var netnsInode = NetNamespace.Inode(netns);
        return NetNamespace.Run(netns, () =>
        {
            // libbpf prints the kernel's netlink messages ("Exclusivity flag on" for a qdisc that
            // exists): captured, so they go into the error when there is one, and nowhere otherwise.
            using var log = LibBpfLog.Capture();
            var ifindex = NetNamespace.InterfaceIndex(iface);
            var hook = new LibBpf.TcHook { Sz = (nuint)sizeof(LibBpf.TcHook), Ifindex = ifindex, AttachPoint = (int)direction };
            bool tracked; // the qdisc is one this process made: count our filters on it
            lock (Gate)
            {
                var rc = LibBpf.bpf_tc_hook_create(&hook);
                if (rc != 0 && rc != -17) // EEXIST: the clsact qdisc is there already
                    throw new BpfException($"could not create the clsact qdisc on {iface}: {Errnos.Describe(rc)}{BpfObject.Warnings(log.Messages, null)}", -rc, program.Name, where);
                var key = (netnsInode, ifindex);
                tracked = rc == 0 || QdiscsWeMade.ContainsKey(key);
                if (tracked) QdiscsWeMade[key] = QdiscsWeMade.GetValueOrDefault(key) + 1;
            }
            var opts = new LibBpf.TcOpts
            {
                Sz = (nuint)sizeof(LibBpf.TcOpts),
                ProgFd = fd,
                Handle = options.Handle,
                Priority = options.Priority,
                Flags = options.Replace ? LibBpf.BpfTcFReplace : 0,
            };
            var attached = LibBpf.bpf_tc_attach(&hook, &opts);
            if (attached != 0)
            {
                if (tracked) Release(netnsInode, ifindex);
                throw new BpfException($"program {program.Name} could not be attached at {where}: the kernel said {Errnos.Describe(attached)}{BpfObject.Warnings(log.Messages, null)}", -attached, program.Name, where);
            }
            return new TcAttachment(program.Name, iface, ifindex, netns, netnsInode, direction, options.Handle, options.Priority, opts.ProgId, tracked);
        });
    }

    /// <summary>One filter fewer on a qdisc this process made; the last one takes the qdisc with it. Runs inside the namespace.</summary>
    private static void Release(ulong netns, int ifindex, bool interfaceGone = false)
    {
        lock (Gate)
        {
            var key = (netns, ifindex);
            if (!QdiscsWeMade.TryGetValue(key, out var n)) return;
            if (n > 1)
            {
                QdiscsWeMade[key] = n - 1;
                return;
            }
            QdiscsWeMade.Remove(key);
            if (interfaceGone) return;
            var hook = new LibBpf.TcHook { Sz = (nuint)sizeof(LibBpf.TcHook), Ifindex = ifindex, AttachPoint = LibBpf.BpfTcIngress | LibBpf.BpfTcEgress };
            LibBpf.bpf_tc_hook_destroy(&hook); // gone already is fine
        }
    }

    public override string ToString() => $"{Program} on tc {Direction.ToString().ToLowerInvariant()} of {Interface}{(Netns != null ? " in " + Netns : "")}";

    /// <summary>Removes the filter (and the qdisc this process made, with its last filter). An interface or namespace already gone is fine.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (Netns != null && !File.Exists(NetNamespace.PathOf(Netns)))
        {
            if (_madeQdisc) Release(NetnsInode, Ifindex, interfaceGone: true);
            return;
        }
        NetNamespace.Run(Netns, () =>
        {
            using var log = LibBpfLog.Capture();
            var hook = new LibBpf.TcHook { Sz = (nuint)sizeof(LibBpf.TcHook), Ifindex = Ifindex, AttachPoint = (int)Direction };
            var opts = new LibBpf.TcOpts { Sz = (nuint)sizeof(LibBpf.TcOpts), Handle = Handle, Priority = Priority };
            LibBpf.bpf_tc_detach(&hook, &opts); // ENOENT/ENODEV: the filter or the interface is gone already
            if (_madeQdisc) Release(NetnsInode, Ifindex);
        });
    }
}
