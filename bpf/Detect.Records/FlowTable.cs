using System.Runtime.InteropServices;

namespace Detect.Records;

// Mirror of bpf/flow.h: the flow sensor's configuration, counters and sweep command (the flow
// record itself is FlowRecord in Records.cs). Checked by Records_MatchTheCompiledHeader.

/// <summary>struct detect_flow_config: flow.bpf.o's read-only configuration (the flow_config variable).</summary>
[CStruct("detect_flow_config")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct FlowConfig
{
    public const int Size = 40;
    [FieldOffset(0)] public ulong IdleTimeoutNs;
    [FieldOffset(8)] public ulong ActiveTimeoutNs;
    [FieldOffset(16)] public ulong TcpLingerNs;
    [FieldOffset(24)] public ulong PressureIdleNs;
    [FieldOffset(32)] public uint MaxFlows;
    [FieldOffset(36)] public uint PressurePermille;
}

/// <summary>struct detect_flow_counters (per CPU in the kernel; summed here).</summary>
[CStruct("detect_flow_counters")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct FlowCounters
{
    public const int Size = 136;
    [FieldOffset(0)] public ulong Packets;
    [FieldOffset(8)] public ulong Bytes;
    [FieldOffset(16)] public ulong Skbs;
    [FieldOffset(24)] public ulong NotIp;
    [FieldOffset(32)] public ulong Truncated;
    [FieldOffset(40)] public ulong FlowsCreated;
    [FieldOffset(48)] public ulong FlowsDeleted;
    [FieldOffset(56)] public ulong Records;
    [FieldOffset(64)] public ulong ExportedPackets;
    [FieldOffset(72)] public ulong ExportedBytes;
    [FieldOffset(80)] public ulong RingFull;
    [FieldOffset(88)] public ulong TableFull;
    [FieldOffset(96)] public ulong UncountedPackets;
    [FieldOffset(104)] public ulong UncountedBytes;
    [FieldOffset(112)] public ulong OwnerLookups;
    [FieldOffset(120)] public ulong OwnerFound;
    [FieldOffset(128)] public ulong Sweeps;

    public static FlowCounters operator +(FlowCounters a, FlowCounters b)
    {
        var sa = MemoryMarshal.Cast<FlowCounters, ulong>(MemoryMarshal.CreateSpan(ref a, 1));
        var sb = MemoryMarshal.Cast<FlowCounters, ulong>(MemoryMarshal.CreateSpan(ref b, 1));
        for (var i = 0; i < sa.Length; i++) sa[i] += sb[i];
        return a;
    }
}

/// <summary>DETECT_FLOW_SWEEP_F_*.</summary>
[Flags]
public enum FlowSweepFlags : uint
{
    None = 0,
    /// <summary>Export every pending count now (reason Flush).</summary>
    Flush = 0x1,
}

/// <summary>struct detect_flow_sweep: the command to, and result of, one in-kernel sweep of the flow table.</summary>
[CStruct("detect_flow_sweep")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct FlowSweep
{
    public const int Size = 80;
    [FieldOffset(0)] public FlowSweepFlags Flags;
    [FieldOffset(4)] public uint Pad0;
    [FieldOffset(8)] public ulong NowNs;
    [FieldOffset(16)] public ulong Entries;
    [FieldOffset(24)] public ulong Exported;
    [FieldOffset(32)] public ulong Deleted;
    [FieldOffset(40)] public ulong RingFull;
    [FieldOffset(48)] public ulong PendingFlows;
    [FieldOffset(56)] public ulong PendingPackets;
    [FieldOffset(64)] public ulong PendingBytes;
    [FieldOffset(72)] public ulong Evicted;
}
