using Detect.Records;

namespace Detect.Sensors;

/// <summary>What the sensors record and how (<see cref="SensorAgent.Start"/>).</summary>
public sealed record SensorOptions
{
    /// <summary>Syscall sensor: one record per call, per-process summaries, or off.</summary>
    public SyscallMode SyscallMode { get; init; } = SyscallMode.Records;

    /// <summary>Exec, exit and fork records.</summary>
    public bool ProcessEvents { get; init; } = true;

    /// <summary>Summary mode: each process gets a summary at least this often while it makes calls.</summary>
    public TimeSpan SummaryInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Only these processes (tgids), when not empty. More can be added while running.</summary>
    public IReadOnlyCollection<int> Pids { get; init; } = [];

    /// <summary>Only processes in these cgroup v2 directories (or below), when not empty.</summary>
    public IReadOnlyCollection<string> Cgroups { get; init; } = [];

    /// <summary>Leave the agent's own process out (on by default: draining makes syscalls too).</summary>
    public bool ExcludeSelf { get; init; } = true;

    /// <summary>Syscall ring size in bytes (a power of two, at least a page).</summary>
    public uint SyscallRingBytes { get; init; } = 32u << 20;

    /// <summary>Process ring size in bytes (exec, exit, fork, summaries).</summary>
    public uint ProcessRingBytes { get; init; } = 4u << 20;

    /// <summary>
    /// Longest wait before the rings are looked at anyway: the syscall ring never wakes the agent
    /// (a wakeup per record would cost more than the record), so this bounds how late a syscall
    /// record is seen. While records keep coming the agent drains without sleeping.
    /// </summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Most records handed over in one batch.</summary>
    public int BatchRecords { get; init; } = 8192;

    /// <summary>Folder of the BPF objects; default: beside the assemblies (bpf/), then the checkout's bpf/build.</summary>
    public string? ObjectDirectory { get; init; }
}
