using Detect.Records;
using Detect.Sensors.Bpf;

namespace Detect.Sensors;

/// <summary>Where a batch of records came from.</summary>
public enum SensorSource
{
    /// <summary>The syscall ring (syscall records).</summary>
    SyscallRing,
    /// <summary>The process ring (exec, exit, fork, syscall summaries from the kernel).</summary>
    ProcessRing,
    /// <summary>Written by the agent: summaries of idle processes and the shutdown flush.</summary>
    AgentFlush,
}

/// <summary>Receives the records the agent drains, a batch at a time, on the drain thread.</summary>
public interface ISensorBatchHandler
{
    /// <summary>
    /// The records of one batch, in place in the ring (valid only during the call: copy what must
    /// outlive it). Records that fail validation are counted by the agent and not shown.
    /// </summary>
    void OnBatch(SensorBatch batch);
}

/// <summary>
/// A batch of validated records as <see cref="RecordView"/>s over the ring's memory (or the
/// agent's flush buffer): enumerate with foreach; nothing is copied or allocated.
/// </summary>
public ref struct SensorBatch
{
    private readonly RingBufferBatch _ring;
    private readonly ReadOnlySpan<byte> _flat;
    private readonly bool _isRing;
    private readonly ref RecordReaderStats _stats;

    internal SensorBatch(RingBufferBatch ring, SensorSource source, ref RecordReaderStats stats)
    {
        _ring = ring;
        _isRing = true;
        Source = source;
        Count = ring.Count;
        _stats = ref stats;
    }

    internal SensorBatch(ReadOnlySpan<byte> records, int count, ref RecordReaderStats stats)
    {
        _flat = records;
        Source = SensorSource.AgentFlush;
        Count = count;
        _stats = ref stats;
    }

    public SensorSource Source { get; }

    /// <summary>Records in the batch (before validation; invalid ones are skipped by the enumerator).</summary>
    public int Count { get; }

    public readonly Enumerator GetEnumerator() => _isRing ? new Enumerator(_ring.GetEnumerator(), ref _stats) : new Enumerator(_flat, ref _stats);

    public ref struct Enumerator
    {
        private RingBufferBatch.Enumerator _ring;
        private RecordReader _flat;
        private readonly bool _isRing;
        private readonly ref RecordReaderStats _stats;

        internal Enumerator(RingBufferBatch.Enumerator ring, ref RecordReaderStats stats)
        {
            _ring = ring;
            _isRing = true;
            _stats = ref stats;
            Current = default;
        }

        internal Enumerator(ReadOnlySpan<byte> flat, ref RecordReaderStats stats)
        {
            _flat = new RecordReader(flat);
            _stats = ref stats;
            Current = default;
        }

        public RecordView Current { get; private set; }

        public bool MoveNext()
        {
            if (!_isRing)
            {
                var before = _flat.Stats;
                var ok = _flat.TryRead(out var view);
                CountErrors(before, _flat.Stats);
                if (!ok) return false;
                _stats.Records++;
                Current = view;
                return true;
            }
            while (_ring.MoveNext())
            {
                var sample = _ring.Current;
                var error = RecordReader.Check(sample, out var length, out _);
                if (error == RecordError.None && length == sample.Length)
                {
                    _stats.Records++;
                    Current = new RecordView(sample);
                    return true;
                }
                // A sample the programs never write: count it (as oversized when only the ring's
                // length and the header's disagree) and go on.
                if (error == RecordError.None) _stats.Oversized++;
                else CountError(error);
            }
            return false;
        }

        private readonly void CountErrors(RecordReaderStats before, RecordReaderStats now)
        {
            _stats.Truncated += now.Truncated - before.Truncated;
            _stats.Oversized += now.Oversized - before.Oversized;
            _stats.Undersized += now.Undersized - before.Undersized;
            _stats.UnknownVersion += now.UnknownVersion - before.UnknownVersion;
            _stats.UnknownType += now.UnknownType - before.UnknownType;
            _stats.BadMagic += now.BadMagic - before.BadMagic;
            _stats.SkippedBytes += now.SkippedBytes - before.SkippedBytes;
        }

        private readonly void CountError(RecordError error)
        {
            switch (error)
            {
                case RecordError.Truncated: _stats.Truncated++; break;
                case RecordError.Oversized: _stats.Oversized++; break;
                case RecordError.Undersized: _stats.Undersized++; break;
                case RecordError.UnknownVersion: _stats.UnknownVersion++; break;
                case RecordError.UnknownType: _stats.UnknownType++; break;
                case RecordError.BadMagic: _stats.BadMagic++; break;
            }
        }
    }
}
