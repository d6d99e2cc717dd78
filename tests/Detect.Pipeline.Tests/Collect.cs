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
}
