namespace Detect.Pipeline;

/// <summary>How records become windows. Event time throughout: a record's time is its kernel
/// time plus its host's boot-to-realtime offset.</summary>
public sealed record PipelineOptions
{
    /// <summary>Tumbling window length (default 10 s). Windows are aligned to multiples of it since the unix epoch.</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How far behind the newest record of a host an older record may arrive and still land in its
    /// window. A host's watermark is its newest event time minus this; a window closes (exactly once) when
    /// the watermark reaches its end. Must be shorter than <see cref="Window"/>.</summary>
    public TimeSpan AllowedLateness { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>An entity with no record for this long (event time) and no open window is forgotten.</summary>
    public TimeSpan EntityIdleTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Most processes kept at once; a new one beyond this evicts the least recently active (counted).</summary>
    public int MaxProcesses { get; init; } = 65_536;

    /// <summary>Most source addresses kept at once; a new one beyond this evicts the least recently active (counted).</summary>
    public int MaxSources { get; init; } = 262_144;

    /// <summary>A feature batch is handed on when it holds this many rows, even before the window close ends.</summary>
    public int MaxBatchRows { get; init; } = 65_536;

    /// <summary>syscall/2 `seq`: at most this many calls of a window are kept in order; later ones are counted in `seq_dropped`.</summary>
    public int MaxSequenceCalls { get; init; } = 8_192;

    /// <summary>syscall/2 `seq`: calls held for all open windows together (2 bytes each; default 16 Mi calls = 32 MiB, allocated
    /// as needed). A window that finds the pool full keeps what it has and counts the rest in `seq_dropped`.</summary>
    public long SequencePoolCalls { get; init; } = 16L << 20;

    internal long WindowNs => Window.Ticks * 100;
    internal long LatenessNs => AllowedLateness.Ticks * 100;
    internal long IdleNs => EntityIdleTimeout.Ticks * 100;

    internal void Validate()
    {
        if (Window <= TimeSpan.Zero) throw new ArgumentException("Window must be positive");
        if (AllowedLateness < TimeSpan.Zero || AllowedLateness >= Window)
            throw new ArgumentException("AllowedLateness must be at least 0 and shorter than Window (an entity then has at most two open windows)");
        if (MaxProcesses < 16 || MaxSources < 16) throw new ArgumentException("MaxProcesses and MaxSources must be at least 16");
        if (MaxBatchRows < 1) throw new ArgumentException("MaxBatchRows must be positive");
        if (MaxSequenceCalls < 0) throw new ArgumentException("MaxSequenceCalls must be at least 0 (0 = no sequences)");
        if (SequencePoolCalls < 0 || SequencePoolCalls > (long)int.MaxValue * 16) throw new ArgumentException("SequencePoolCalls must be between 0 and 2^35");
    }
}

/// <summary>
/// Where a batch of records came from: the host that produced them, its clock offset, and for
/// labelled replays the ground truth that travels beside the records into the feature rows.
/// Create one per host (or per labelled unit) and reuse it: the pipeline looks it up once per batch.
/// </summary>
public sealed class RecordSource
{
    public RecordSource(string host, long bootToRealtimeNs = 0, string? label = null, string? sampleId = null, bool separateEntities = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        Host = host;
        BootToRealtimeNs = bootToRealtimeNs;
        Label = label;
        SampleId = sampleId;
        SeparateEntities = separateEntities;
    }

    /// <summary>Host name or id (the `host` column).</summary>
    public string Host { get; }

    /// <summary>Added to a record's kernel time (CLOCK_BOOTTIME ns) to get unix ns. Replays write unix ns and use 0.</summary>
    public long BootToRealtimeNs { get; }

    /// <summary>Ground-truth class of these records (the `label` column); null for live data.</summary>
    public string? Label { get; }

    /// <summary>The labelled unit these records belong to (the `sample_id` column); null for live data.</summary>
    public string? SampleId { get; }

    /// <summary>Keep this sample's entities apart from every other sample's even when their keys are equal
    /// (one CIC-IDS2017 row = one entity), so a window never mixes labelled units.</summary>
    public bool SeparateEntities { get; }

    public override string ToString() => Label == null ? Host : $"{Host} [{Label} {SampleId}]";
}
