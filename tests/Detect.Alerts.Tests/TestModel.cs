using Apache.Arrow;
using Detect.Models.Features;
using Detect.Models.Scoring;
using Detect.Models.Training;

namespace Detect.Alerts.Tests;

/// <summary>
/// A real model (the models library's trainer, kNN, calibrated) on synthetic flow windows, and
/// feature batches to score with it: normal sources look like the training data, a scanner has
/// a high half-open ratio and hundreds of destination ports.
/// </summary>
internal static class TestModel
{
    public static readonly string[] Names = ["f_flows", "f_half_open_ratio", "f_dst_ports", "f_bytes_fwd"];
    public const long T0 = 1_750_000_000_000_000_000;
    public const long WindowNs = 10_000_000_000;

    private static readonly Lazy<ModelScorer> Shared = new(() => new ModelScorer(Train()));

    public static ModelScorer Scorer => Shared.Value;

    public static DetectorModel Train()
    {
        var rng = new Random(7);
        const int rows = 400;
        var values = new float[rows * Names.Length];
        var entities = new string?[rows];
        var starts = new long[rows];
        for (var r = 0; r < rows; r++)
        {
            Normal(rng, values.AsSpan(r * Names.Length, Names.Length));
            entities[r] = $"10.0.{r % 40}.{r % 7}";
            starts[r] = T0 + r / 40 * WindowNs;
        }
        var m = new FeatureMatrix("flow", "flow/1", Names, values, rows, entities, windowStarts: starts);
        var model = ModelTrainer.Train(m, new TrainOptions { Name = "flow", Source = "synthetic" });
        return model.WithManifest(model.Manifest with { Version = "v0001" });
    }

    private static void Normal(Random rng, Span<float> v)
    {
        v[0] = 10 + rng.Next(-3, 4);
        v[1] = 0.05f + 0.02f * (float)rng.NextDouble();
        v[2] = 2 + rng.Next(0, 3);
        v[3] = 1000 + rng.Next(-200, 200);
    }

    /// <summary>One row of a batch: who, when, and whether it is a scanner (very anomalous) or normal.</summary>
    public sealed record Row(string Entity, int Window, bool Scanner, string Host = "web-1", float Scale = 1f);

    public static RecordBatch Batch(params Row[] rows)
    {
        var rng = new Random(11);
        var values = new float[rows.Length * Names.Length];
        for (var r = 0; r < rows.Length; r++)
        {
            var v = values.AsSpan(r * Names.Length, Names.Length);
            Normal(rng, v);
            if (rows[r].Scanner)
            {
                var k = rows[r].Scale;
                v[1] = 0.05f + 0.92f * k;
                v[2] = 2 + 298 * k;
                v[0] = 10 + 390 * k;
            }
        }
        var m = new FeatureMatrix("flow", "flow/1", Names, values, rows.Length,
            rows.Select(r => (string?)r.Entity).ToArray(), windowStarts: rows.Select(r => T0 + r.Window * WindowNs).ToArray(),
            hosts: rows.Select(r => (string?)r.Host).ToArray());
        return m.ToArrow();
    }

    /// <summary>Scores a batch with the shared model (a new ScoredBatch each time: tests keep them).</summary>
    public static ScoredBatch Score(RecordBatch batch)
    {
        lock (Shared) return Scorer.Score(batch);
    }
}
