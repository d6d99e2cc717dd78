using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>
/// BPF_PROG_TEST_RUN and link maintenance as extensions of the loader's types (Sensors II):
/// the flow sensor runs its sweep program this way; enforcement swaps the program of a pinned
/// link when a new agent takes over.
/// </summary>
public static unsafe class BpfProgramExtensions
{
    /// <summary>
    /// Runs a loaded program once on <paramref name="packet"/> (a SCHED_CLS program sees it as a
    /// packet); whatever the program writes into the packet is copied back into
    /// <paramref name="packet"/>. Returns the program's return value.
    /// </summary>
    public static uint TestRun(this BpfProgram program, Span<byte> packet) => TestRun(program, packet, 1, out _);

    /// <summary>
    /// Runs a program <paramref name="repeat"/> times on <paramref name="packet"/> in the kernel
    /// (warm caches: a best case) and gives the kernel's mean time per run.
    /// </summary>
    public static uint TestRun(this BpfProgram program, Span<byte> packet, int repeat, out uint nsPerRun)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(repeat, 1);
        ArgumentNullException.ThrowIfNull(program);
        var fd = program.Fd;
        if (fd < 0) throw new BpfException($"program {program.Name} cannot be run: it is not loaded", 0, program.Name, program.AttachPoint);
        var output = packet.Length <= 1024 ? stackalloc byte[packet.Length] : new byte[packet.Length];
        fixed (byte* input = packet, outp = output)
        {
            var opts = new LibBpf.TestRunOpts
            {
                Sz = (nuint)sizeof(LibBpf.TestRunOpts),
                DataIn = input,
                DataSizeIn = (uint)packet.Length,
                DataOut = outp,
                DataSizeOut = (uint)output.Length,
                Repeat = repeat,
            };
            var rc = LibBpf.bpf_prog_test_run_opts(fd, &opts);
            if (rc != 0)
            {
                var errno = rc < 0 ? -rc : Marshal.GetLastPInvokeError();
                throw new BpfException($"test run of program {program.Name} failed: {Errnos.Describe(errno)}", errno, program.Name, program.AttachPoint);
            }
            output[..(int)Math.Min(opts.DataSizeOut, (uint)packet.Length)].CopyTo(packet);
            nsPerRun = opts.Duration;
            return opts.Retval;
        }
    }

    /// <summary>Makes a link run <paramref name="program"/> instead of its current one (XDP and cgroup links).</summary>
    public static void UpdateProgram(this BpfLink link, BpfProgram program)
    {
        ArgumentNullException.ThrowIfNull(link);
        ArgumentNullException.ThrowIfNull(program);
        var rc = LibBpf.bpf_link_update(link.Fd, program.Fd, null);
        if (rc != 0)
        {
            var errno = rc < 0 ? -rc : Marshal.GetLastPInvokeError();
            throw new BpfException($"could not switch the link at {link.AttachPoint} to program {program.Name}: {Errnos.Describe(errno)}", errno, program.Name, link.AttachPoint);
        }
    }

    /// <summary>What a link is attached to, from the kernel (struct bpf_link_info).</summary>
    public static BpfLinkInfo ReadInfo(this BpfLink link)
    {
        ArgumentNullException.ThrowIfNull(link);
        const int InfoSize = 64;
        var info = stackalloc byte[InfoSize];
        new Span<byte>(info, InfoSize).Clear();
        var len = (uint)InfoSize;
        var rc = LibBpf.bpf_obj_get_info_by_fd(link.Fd, info, &len);
        if (rc != 0)
        {
            var errno = rc < 0 ? -rc : Marshal.GetLastPInvokeError();
            throw new BpfException($"could not read the link at {link.AttachPoint}: {Errnos.Describe(errno)}", errno);
        }
        // type, id, prog_id, then a union at offset 16: xdp {ifindex}, cgroup {cgroup_id, attach_type}.
        return new BpfLinkInfo((BpfLinkType)(*(uint*)info), *(uint*)(info + 4), *(uint*)(info + 8), *(ulong*)(info + 16));
    }
}

/// <summary>enum bpf_link_type (the kinds Detect makes).</summary>
public enum BpfLinkType : uint
{
    Unspecified = 0,
    RawTracepoint = 1,
    Tracing = 2,
    Cgroup = 3,
    Iter = 4,
    Netns = 5,
    Xdp = 6,
    PerfEvent = 7,
}

/// <summary>
/// A link as the kernel reports it. <see cref="Target"/> is the XDP interface index or the cgroup
/// id; 0 once the interface or cgroup is gone (the link is then defunct).
/// </summary>
public readonly record struct BpfLinkInfo(BpfLinkType Type, uint Id, uint ProgramId, ulong Target)
{
    public bool IsDefunct => Type is BpfLinkType.Xdp or BpfLinkType.Cgroup && Target == 0;

    /// <summary>XDP: the interface index (low 32 bits of the union).</summary>
    public int Ifindex => (int)(uint)Target;
}
