using System.Globalization;
using System.Text;
using Apache.Arrow;
using Detect.Models.Features;
using Detect.Models.Scoring;

namespace Detect.Cli.Product;

/// <summary>
/// Every scored window as one JSON line (`--score-log FILE`): family, host, entity, window, records,
/// score, severity, model, scored_ns. For analysts who want more than the alerts, and for tests
/// that look for their own workload's windows.
/// </summary>
internal sealed class ScoreLog : IDisposable
{
    private readonly StreamWriter _writer;
    private readonly Lock _gate = new();
    private long _lines;

    public ScoreLog(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        _writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false)) { AutoFlush = false };
        FilePath = path;
    }

    public string FilePath { get; }

    public long Lines => Interlocked.Read(ref _lines);

    public void Write(string family, RecordBatch batch, ScoredBatch scored)
    {
        var hosts = ArrowFeatures.Strings(batch, FeatureColumns.Host);
        var entities = ArrowFeatures.Strings(batch, FeatureColumns.Entity);
        var starts = ArrowFeatures.Longs(batch, FeatureColumns.WindowStart);
        var ends = ArrowFeatures.Longs(batch, FeatureColumns.WindowEnd);
        var records = ArrowFeatures.Longs(batch, FeatureColumns.RecordCount);
        var now = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;
        var sb = new StringBuilder();
        for (var r = 0; r < scored.Count; r++)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"{{\"family\":\"{family}\",\"host\":{Json(hosts?[r])},\"entity\":{Json(entities?[r])},\"window_start_ns\":{starts?[r] ?? 0},\"window_end_ns\":{ends?[r] ?? 0},");
            sb.Append(CultureInfo.InvariantCulture,
                $"\"records\":{records?[r] ?? 0},\"score\":{Number(scored.Scores[r])},\"severity\":\"{scored.Severities[r].ToString().ToLowerInvariant()}\",\"model\":{Json(scored.ModelId)},\"scored_ns\":{now}}}\n");
        }
        lock (_gate)
        {
            _writer.Write(sb);
            _writer.Flush();
        }
        Interlocked.Add(ref _lines, scored.Count);
    }

    private static string Number(float v) => float.IsFinite(v) ? v.ToString("R", CultureInfo.InvariantCulture) : "null";

    private static string Json(string? s) => s == null ? "null" : System.Text.Json.JsonSerializer.Serialize(s);

    public void Dispose()
    {
        lock (_gate) _writer.Dispose();
    }
}

/// <summary>Latencies (ns) of the last few thousand events: percentiles for the status line. Thread-safe.</summary>
public sealed class LatencyStats
{
    private readonly long[] _ring = new long[4096];
    private readonly Lock _gate = new();
    private long _count;
    private long _max;

    public long Count => Interlocked.Read(ref _count);

    public void Add(long ns)
    {
        lock (_gate)
        {
            _ring[_count % _ring.Length] = ns;
            _count++;
            if (ns > _max) _max = ns;
        }
    }

    /// <summary>(p50, p99, max over all) in milliseconds; zeros before the first sample.</summary>
    public (double P50, double P99, double Max) Snapshot()
    {
        long[] copy;
        long max;
        lock (_gate)
        {
            var n = (int)Math.Min(_count, _ring.Length);
            if (n == 0) return (0, 0, 0);
            copy = _ring[..n];
            max = _max;
        }
        System.Array.Sort(copy);
        double At(double q) => copy[Math.Min(copy.Length - 1, (int)(q * copy.Length))] / 1e6;
        return (At(0.5), At(0.99), max / 1e6);
    }
}
