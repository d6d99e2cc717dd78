using Apache.Arrow;
using Detect.Pipeline.Arrow;

namespace Detect.Pipeline.Tests;

/// <summary>A sink that keeps every row it is handed (cloned, since batches are only valid during the call).</summary>
internal sealed class Collect : IFeatureSink
{
    public List<(FeatureFamily Family, RecordBatch Batch)> Batches { get; } = [];

    public void OnBatch(FeatureFamily family, RecordBatch batch) => Batches.Add((family, batch.Clone()));

    public IEnumerable<Row> Rows(FeatureFamily family)
    {
        foreach (var (f, b) in Batches)
        {
            if (f != family) continue;
            for (var i = 0; i < b.Length; i++) yield return new Row(b, i);
        }
    }
}

internal readonly record struct Row(RecordBatch Batch, int Index)
{
    public string Host => ((StringArray)Batch.Column("host")).GetString(Index);
    public string Entity => ((StringArray)Batch.Column("entity")).GetString(Index);
    public long Start => ((Int64Array)Batch.Column("window_start_ns")).GetValue(Index)!.Value;
    public long End => ((Int64Array)Batch.Column("window_end_ns")).GetValue(Index)!.Value;
    public long Records => ((Int64Array)Batch.Column("record_count")).GetValue(Index)!.Value;
    public string? Label => ((StringArray)Batch.Column("label")).GetString(Index);
    public string? Sample => ((StringArray)Batch.Column("sample_id")).GetString(Index);
    public float this[string feature] => ((FloatArray)Batch.Column(feature)).GetValue(Index)!.Value;
    /// <summary>syscall/2 `seq`: the window's calls in order (little-endian uint16 each).</summary>
    public ushort[] Sequence => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(((BinaryArray)Batch.Column(FeatureSchema.SequenceColumn)).GetBytes(Index)).ToArray();
    public int SequenceDropped => ((Int32Array)Batch.Column(FeatureSchema.SequenceDroppedColumn)).GetValue(Index)!.Value;
}

/// <summary>A sink that keeps only the key columns and a few named features of each row (cheap for big replays).</summary>
internal sealed class Project(FeatureFamily family, params string[] features) : IFeatureSink
{
    public List<Slim> Rows { get; } = [];

    public void OnBatch(FeatureFamily f, RecordBatch batch)
    {
        if (f != family) return;
        var entity = (StringArray)batch.Column("entity");
        var label = (StringArray)batch.Column("label");
        var sample = (StringArray)batch.Column("sample_id");
        var start = (Int64Array)batch.Column("window_start_ns");
        var records = (Int64Array)batch.Column("record_count");
        var cols = features.Select(n => (FloatArray)batch.Column(n)).ToArray();
        for (var i = 0; i < batch.Length; i++)
            Rows.Add(new Slim(entity.GetString(i), label.IsNull(i) ? null : label.GetString(i), sample.IsNull(i) ? null : sample.GetString(i),
                start.GetValue(i)!.Value, records.GetValue(i)!.Value,
                features.Select((n, c) => (n, cols[c].GetValue(i)!.Value)).ToDictionary(p => p.n, p => p.Item2)));
    }
}

internal sealed record Slim(string Entity, string? Label, string? Sample, long Start, long Records, Dictionary<string, float> Features)
{
    public float this[string feature] => Features[feature];
}
