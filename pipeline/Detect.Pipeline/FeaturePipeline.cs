using System.Runtime.InteropServices;
using Apache.Arrow;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Features;
using Detect.Pipeline.Windows;
using Detect.Records;

namespace Detect.Pipeline;

/// <summary>Counters of a pipeline, for status lines and tests.</summary>
public sealed record PipelineStats
{
    public required RecordReaderStats Decode { get; init; }
    public required WindowStats Syscall { get; init; }
    public required WindowStats Flow { get; init; }
    public required long Batches { get; init; }
    public required long FeatureBatches { get; init; }
    /// <summary>Records of a type no family uses (none today; counted so a new type is noticed).</summary>
    public required long Unused { get; init; }
    public long LateRecords => Syscall.LateRecords + Flow.LateRecords;
    public long Rows => Syscall.Rows + Flow.Rows;
}

/// <summary>
/// Records in, feature batches out: decodes batches of records in place (spans over the message
/// bytes, no per-record objects), windows them per entity by event time and hands each family's
/// Arrow RecordBatch to the sinks when windows close. Live data and replays take the same path:
/// <see cref="Process"/>. Single-threaded: one pipeline per consumer thread (partition).
/// </summary>
public sealed class FeaturePipeline
{
    private readonly LabelTable _labels = new();
    private readonly SyscallFamily _syscall;
    private readonly FlowFamily _flow;
    private readonly List<IFeatureSink> _sinks = [];
    private readonly RecordErrorHandler? _onDecodeError;
    private RecordReaderStats _decode;
    private int[] _offsets = new int[4096];

    /// <summary>Processes beyond which the per-record path prefetches (roughly where their state outgrows L2).</summary>
    private const int PrefetchAbove = 2048;
    private long _batches, _featureBatches, _unused;

    public FeaturePipeline(PipelineOptions? options = null, RecordErrorHandler? onDecodeError = null)
    {
        Options = options ?? new PipelineOptions();
        Options.Validate();
        _onDecodeError = onDecodeError;
        _syscall = new SyscallFamily(Options, _labels, Emit);
        _flow = new FlowFamily(Options, _labels, Emit);
    }

    public PipelineOptions Options { get; }

    /// <summary>The columns of each family's batches (and Parquet files).</summary>
    public static FeatureSchema SchemaOf(FeatureFamily family) => family switch
    {
        FeatureFamily.Syscall => SyscallFamily.Schema,
        FeatureFamily.Flow => FlowFamily.Schema,
        _ => throw new ArgumentOutOfRangeException(nameof(family)),
    };

    /// <summary>Adds a receiver of feature batches (scoring, the Parquet archive, a test).</summary>
    public FeaturePipeline AddSink(IFeatureSink sink)
    {
        _sinks.Add(sink);
        return this;
    }

    /// <summary>Adds a receiver as a delegate. The batch is valid only during the call.</summary>
    public FeaturePipeline AddSink(Action<FeatureFamily, RecordBatch> sink) => AddSink(new DelegateSink(sink));

    /// <summary>
    /// Applies a batch of records laid end to end (a transport message's payload, a capture file's
    /// body) from one source. Bad records are counted and reported to the error handler, never thrown.
    /// </summary>
    public void Process(ReadOnlySpan<byte> records, RecordSource source)
    {
        var host = _labels.HostId(source.Host);
        var label = _labels.LabelId(source);
        var sample = source.SeparateEntities ? label : 0;
        var offset = source.BootToRealtimeNs;
        // Frame and validate first; then apply, prefetching a few records ahead when the entity
        // table is larger than the caches (each record then touches memory no cache holds).
        var reader = new RecordReader(records, _onDecodeError);
        var n = 0;
        while (reader.TryRead(out var framed))
        {
            if (n == _offsets.Length) System.Array.Resize(ref _offsets, n * 2);
            _offsets[n++] = reader.Offset - framed.Bytes.Length;
        }
        var prefetch = _syscall.EntityCount > PrefetchAbove || _flow.EntityCount > PrefetchAbove;
        for (var i = 0; i < n; i++)
        {
            if (prefetch)
            {
                if (i + 48 < n) PrefetchAhead(records, i + 48, host, sample, 0);
                if (i + 24 < n) PrefetchAhead(records, i + 24, host, sample, 1);
                if (i + 10 < n) PrefetchAhead(records, i + 10, host, sample, 2);
            }
            var bytes = records[_offsets[i]..];
            switch ((RecordType)bytes[3])
            {
                case RecordType.Syscall:
                    _syscall.OnSyscall(in MemoryMarshal.AsRef<SyscallRecord>(bytes), host, sample, offset, label);
                    break;
                case RecordType.Flow:
                    _flow.OnFlow(in MemoryMarshal.AsRef<FlowRecord>(bytes), host, sample, offset, label);
                    break;
                case RecordType.SyscallSummary:
                    _syscall.OnSummary(in MemoryMarshal.AsRef<SyscallSummaryRecord>(bytes), host, sample, offset, label);
                    break;
                case RecordType.Exec:
                    _syscall.OnExec(in MemoryMarshal.AsRef<ExecRecord>(bytes), host, sample, offset, label);
                    break;
                case RecordType.Fork:
                    _syscall.OnFork(in MemoryMarshal.AsRef<ForkRecord>(bytes), host, sample, offset, label);
                    break;
                case RecordType.Exit:
                    _syscall.OnExit(in MemoryMarshal.AsRef<ExitRecord>(bytes), host, sample, offset, label);
                    break;
                default:
                    _unused++;
                    break;
            }
        }
        _decode.Add(reader.Stats);
        _batches++;
    }

    private void PrefetchAhead(ReadOnlySpan<byte> records, int index, int host, int sample, int depth)
    {
        var bytes = records[_offsets[index]..];
        switch ((RecordType)bytes[3])
        {
            case RecordType.Syscall:
                _syscall.PrefetchSyscall(in MemoryMarshal.AsRef<SyscallRecord>(bytes), host, sample, depth);
                break;
            case RecordType.Flow:
                _flow.PrefetchFlow(in MemoryMarshal.AsRef<FlowRecord>(bytes), host, sample, depth);
                break;
        }
    }

    /// <summary>
    /// Processing-time progress for quiet hosts: closes every window that ended before
    /// <paramref name="nowUnixNs"/> minus the allowed lateness, for every host. Live drivers call
    /// it every second or so; records later than that are counted as late.
    /// </summary>
    public void AdvanceTo(long nowUnixNs)
    {
        var wm = nowUnixNs - Options.LatenessNs;
        _syscall.AdvanceAll(wm);
        _flow.AdvanceAll(wm);
    }

    /// <summary>Closes every open window now (end of a replay, shutdown). Later records of those windows count as late.</summary>
    public void Flush()
    {
        _syscall.AdvanceAll(long.MaxValue);
        _flow.AdvanceAll(long.MaxValue);
    }

    public PipelineStats Stats => new()
    {
        Decode = _decode,
        Syscall = _syscall.Stats,
        Flow = _flow.Stats,
        Batches = _batches,
        FeatureBatches = _featureBatches,
        Unused = _unused,
    };

    private void Emit(FeatureFamily family, RecordBatch batch)
    {
        _featureBatches++;
        foreach (var sink in _sinks) sink.OnBatch(family, batch);
    }

    private sealed class DelegateSink(Action<FeatureFamily, RecordBatch> action) : IFeatureSink
    {
        public void OnBatch(FeatureFamily family, RecordBatch batch) => action(family, batch);
    }
}
