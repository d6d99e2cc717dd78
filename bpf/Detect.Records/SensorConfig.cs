using System.Runtime.InteropServices;

namespace Detect.Records;

/// <summary>Modes of the syscall sensor (config.h DETECT_SYSCALL_MODE_*).</summary>
public enum SyscallMode : uint
{
    Off = 0,
    /// <summary>One record per syscall.</summary>
    Records = 1,
    /// <summary>Per-process counts aggregated in the kernel, one summary record per interval.</summary>
    Summary = 2,
}

/// <summary>config.h DETECT_FILTER_*.</summary>
[Flags]
public enum SensorFilters : uint
{
    None = 0,
    Pid = 0x1,
    Cgroup = 0x2,
}

/// <summary>Mirror of struct detect_sensor_config (bpf/config.h): the read-only data written between open and load.</summary>
[CStruct("detect_sensor_config")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct SensorConfig
{
    public const int Size = 24;
    [FieldOffset(0)] public uint AgentTgid;
    [FieldOffset(4)] public SyscallMode SyscallMode;
    [FieldOffset(8)] public SensorFilters Filters;
    [FieldOffset(12)] public uint Pad0;
    [FieldOffset(16)] public ulong SummaryIntervalNs;
}
