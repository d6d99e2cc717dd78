using Detect.Records;

namespace Detect.Sensors;

/// <summary>
/// What the sensors could not deliver, by record type: failed ring-buffer reservations counted in
/// the kernel (detect_lost, per CPU, summed here), calls the summary table had no room for, and
/// records the agent refused as malformed.
/// </summary>
public sealed record LossCounters
{
    /// <summary>Lost records indexed by <see cref="RecordType"/> (length <see cref="RecordFormat.TypeCount"/>).</summary>
    public required ulong[] LostByType { get; init; }

    /// <summary>Syscalls summary mode could not count (detect_syscall_counts was full).</summary>
    public ulong SummaryUncounted { get; init; }

    /// <summary>Records that reached the agent but failed validation.</summary>
    public long Malformed { get; init; }

    public ulong Lost(RecordType type) => LostByType[(int)type];

    public ulong TotalLost => LostByType.Aggregate(0UL, (a, b) => a + b);

    public static LossCounters operator -(LossCounters a, LossCounters b) => new()
    {
        LostByType = a.LostByType.Zip(b.LostByType, (x, y) => x - y).ToArray(),
        SummaryUncounted = a.SummaryUncounted - b.SummaryUncounted,
        Malformed = a.Malformed - b.Malformed,
    };
}
