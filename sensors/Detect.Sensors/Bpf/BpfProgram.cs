using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>Run-time statistics of a program (kernel.bpf_stats_enabled or <see cref="BpfSystem.EnableRunTimeStats"/>).</summary>
public readonly record struct ProgramRunStats(ulong RunTimeNs, ulong RunCount, ulong RecursionMisses)
{
    /// <summary>Mean kernel time per run, ns (0 when it never ran).</summary>
    public double NsPerRun => RunCount == 0 ? 0 : (double)RunTimeNs / RunCount;

    public static ProgramRunStats operator -(ProgramRunStats a, ProgramRunStats b) =>
        new(a.RunTimeNs - b.RunTimeNs, a.RunCount - b.RunCount, a.RecursionMisses - b.RecursionMisses);
}

/// <summary>One program of a <see cref="BpfObject"/>.</summary>
public sealed unsafe class BpfProgram
{
    // enum bpf_prog_type values whose sections libbpf can attach without a target.
    private static readonly HashSet<int> TracingTypes =
    [
        2,  // KPROBE
        5,  // TRACEPOINT
        7,  // PERF_EVENT
        17, // RAW_TRACEPOINT
        24, // RAW_TRACEPOINT_WRITABLE
        26, // TRACING (tp_btf, fentry, fexit, fmod_ret, iter)
        29, // LSM
    ];

    private readonly BpfObject _owner;
    private readonly List<BpfLink> _links = [];
    private nint _native;

    internal BpfProgram(BpfObject owner, nint native)
    {
        _owner = owner;
        _native = native;
        Name = LibBpf.Utf8(LibBpf.bpf_program__name(native)) ?? "?";
        AttachPoint = LibBpf.Utf8(LibBpf.bpf_program__section_name(native)) ?? "?";
        Type = LibBpf.bpf_program__type(native);
    }

    public string Name { get; }

    /// <summary>The section, which names the attach point: "tp_btf/sys_exit", "xdp", "fentry/do_nanosleep".</summary>
    public string AttachPoint { get; }

    /// <summary>enum bpf_prog_type.</summary>
    public int Type { get; }

    public BpfObject Object => _owner;

    /// <summary>A tracing program: attached where its section says, with no target.</summary>
    public bool IsTracing => TracingTypes.Contains(Type);

    public ProgramState State { get; private set; } = ProgramState.Opened;

    /// <summary>Why the kernel refused it at load, when it did.</summary>
    public ProgramRefusal? Refusal { get; private set; }

    /// <summary>The link <see cref="Attach"/> made, while it lasts.</summary>
    public BpfLink? Link { get; private set; }

    /// <summary>Whether <see cref="BpfObject.Load"/> loads it. Set before load.</summary>
    public bool AutoLoad
    {
        get => LibBpf.bpf_program__autoload(_native);
        set => _owner.Setup(() => LibBpf.bpf_program__set_autoload(_native, value));
    }

    /// <summary>The program's fd once loaded, else -1.</summary>
    public int Fd => State is ProgramState.Loaded or ProgramState.Attached or ProgramState.AttachRefused ? LibBpf.bpf_program__fd(_native) : -1;

    internal void Rebind(nint native) => _native = native;

    internal void SetRefused(ProgramRefusal refusal)
    {
        LibBpf.bpf_program__set_autoload(_native, false);
        Refusal = refusal;
        State = ProgramState.Refused;
    }

    internal void AfterLoad()
    {
        if (State == ProgramState.Refused) return;
        State = LibBpf.bpf_program__fd(_native) >= 0 ? ProgramState.Loaded : ProgramState.Disabled;
    }

    /// <summary>
    /// Attaches at the point the section names (tracing programs). Throws a <see cref="BpfException"/>
    /// naming the program, the attach point and the kernel's reason; the link is kept in <see cref="Link"/>
    /// and destroyed with the object.
    /// </summary>
    public BpfLink Attach()
    {
        var link = AttachWith(() => LibBpf.bpf_program__attach(_native), AttachPoint);
        Link = link;
        State = ProgramState.Attached;
        return link;
    }

    /// <summary>Attaches an XDP program to an interface (the caller owns the link; the object destroys it at the latest).</summary>
    public BpfLink AttachXdp(int ifindex) =>
        AttachWith(() => LibBpf.bpf_program__attach_xdp(_native, ifindex), $"{AttachPoint} on ifindex {ifindex}");

    /// <summary>Attaches a cgroup program to the cgroup open as <paramref name="cgroupFd"/> (a directory fd).</summary>
    public BpfLink AttachCgroup(int cgroupFd) =>
        AttachWith(() => LibBpf.bpf_program__attach_cgroup(_native, cgroupFd), $"{AttachPoint} on cgroup fd {cgroupFd}");

    private BpfLink AttachWith(Func<nint> attach, string where)
    {
        _owner.RequireState(BpfObjectState.Loaded, "attached");
        if (State is not (ProgramState.Loaded or ProgramState.Attached or ProgramState.AttachRefused))
            throw new BpfException($"program {Name} ({where}) cannot be attached: it is {State.ToString().ToLowerInvariant()}{(Refusal != null ? ": " + Refusal.Reason : "")}",
                Refusal?.Errno ?? 0, Name, where);
        nint link;
        int errno;
        List<LibBpfMessage> messages;
        using (var log = LibBpfLog.Capture())
        {
            link = attach();
            errno = link == 0 ? Marshal.GetLastPInvokeError() : 0;
            messages = log.Messages;
        }
        if (link == 0)
        {
            if (State != ProgramState.Attached) State = ProgramState.AttachRefused;
            throw new BpfException(
                $"program {Name} could not be attached at {where}: the kernel said {Errnos.Describe(errno)}{BpfObject.Warnings(messages, Name)}",
                errno, Name, where, BpfObject.Join(messages));
        }
        var result = new BpfLink(new SafeBpfLinkHandle(link), Name, where);
        _links.Add(result);
        return result;
    }

    /// <summary>The kernel's id of the loaded program (bpftool prog show id N), or 0 when not loaded.</summary>
    public uint Id
    {
        get
        {
            var fd = Fd;
            if (fd < 0) return 0;
            const int InfoSize = 232;
            var info = stackalloc byte[InfoSize];
            new Span<byte>(info, InfoSize).Clear();
            var len = (uint)InfoSize;
            return LibBpf.bpf_obj_get_info_by_fd(fd, info, &len) == 0 ? *(uint*)(info + 4) : 0;
        }
    }

    /// <summary>Kernel run-time statistics of this program (zeros unless statistics are on).</summary>
    public ProgramRunStats ReadRunStats()
    {
        var fd = Fd;
        if (fd < 0) return default;
        const int InfoSize = 232, RunTimeNs = 192, RunCnt = 200, RecursionMisses = 208;
        var info = stackalloc byte[InfoSize];
        new Span<byte>(info, InfoSize).Clear();
        var len = (uint)InfoSize;
        var rc = LibBpf.bpf_obj_get_info_by_fd(fd, info, &len);
        if (rc != 0) throw new BpfException($"could not read statistics of program {Name}: {Errnos.Describe(rc)}", -rc, Name, AttachPoint);
        return new ProgramRunStats(*(ulong*)(info + RunTimeNs), *(ulong*)(info + RunCnt), len > RecursionMisses ? *(ulong*)(info + RecursionMisses) : 0);
    }

    /// <summary>Destroys every link this program made (it stops running; it stays loaded).</summary>
    public void Detach() => DisposeLink();

    internal void DisposeLink()
    {
        foreach (var l in _links) l.Dispose();
        _links.Clear();
        Link = null;
        if (State == ProgramState.Attached) State = ProgramState.Loaded;
    }

    public override string ToString() => $"{Name} ({AttachPoint})";
}

/// <summary>
/// An attachment of a program (struct bpf_link). Dispose detaches it, unless it was pinned: a
/// pinned link keeps the program attached after this process ends (until unpinned).
/// </summary>
public sealed unsafe class BpfLink : IDisposable
{
    private readonly SafeBpfLinkHandle _handle;
    private int _disposed;

    internal BpfLink(SafeBpfLinkHandle handle, string program, string attachPoint)
    {
        _handle = handle;
        Program = program;
        AttachPoint = attachPoint;
    }

    public string Program { get; }

    public string AttachPoint { get; }

    public bool IsDisposed => _disposed != 0;

    public int Fd
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            return LibBpf.bpf_link__fd(_handle.DangerousGetHandle());
        }
    }

    /// <summary>Opens a link pinned at <paramref name="path"/> (in bpffs).</summary>
    public static BpfLink OpenPinned(string path)
    {
        BpfSystem.EnsurePrivileged();
        LibBpfLog.Install();
        fixed (byte* p = LibBpf.Z(path))
        {
            var link = LibBpf.bpf_link__open(p);
            if (link == 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new BpfException($"could not open the link pinned at {path}: {Errnos.Describe(errno)}", errno);
            }
            return new BpfLink(new SafeBpfLinkHandle(link), Path.GetFileName(path), path);
        }
    }

    /// <summary>Pins the link in bpffs, so it outlives this process.</summary>
    public void Pin(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        fixed (byte* p = LibBpf.Z(path))
        {
            var rc = LibBpf.bpf_link__pin(_handle.DangerousGetHandle(), p);
            if (rc != 0) throw new BpfException($"could not pin link of {Program} at {path}: {Errnos.Describe(rc)}", -rc, Program, AttachPoint);
        }
    }

    /// <summary>Removes the pin; the link then ends with this handle.</summary>
    public void Unpin()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var rc = LibBpf.bpf_link__unpin(_handle.DangerousGetHandle());
        if (rc != 0) throw new BpfException($"could not unpin link of {Program}: {Errnos.Describe(rc)}", -rc, Program, AttachPoint);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _handle.Dispose();
    }
}
