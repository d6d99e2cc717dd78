using Detect.Models.Detectors;

namespace Detect.Models.Scoring;

/// <summary>One feature behind a score: its value and its normal range, readable by an analyst.</summary>
public readonly record struct FeatureContribution(string Feature, float Value, float NormalLow, float NormalHigh, float Deviation)
{
    /// <summary>In words, e.g. "network calls: 41% of calls, normally 0-5% (f_class_network)" (see <see cref="FeatureWords"/>).</summary>
    public override string ToString() => FeatureWords.Describe(this);
}

/// <summary>
/// The normal range of each feature in raw units (the 1st..99th percentile of the training
/// windows, with the median and a robust scale) and the ranking that explains a window: the
/// features furthest outside their normal range, measured in robust scale units. It works the
/// same for every detector, so analysts read one kind of explanation whatever model scored.
/// </summary>
public sealed class FeatureBaseline
{
    public const double LowQuantile = 0.01;
    public const double HighQuantile = 0.99;

    public FeatureBaseline(IReadOnlyList<string> names, float[] low, float[] high, float[] median, float[] scale)
    {
        Names = names;
        Low = low;
        High = high;
        Median = median;
        Scale = scale;
    }

    public IReadOnlyList<string> Names { get; }
    public float[] Low { get; }
    public float[] High { get; }
    public float[] Median { get; }
    public float[] Scale { get; }

    public static FeatureBaseline Fit(IReadOnlyList<string> names, ReadOnlySpan<float> rows, int n, int d)
    {
        var low = new float[d];
        var high = new float[d];
        var median = new float[d];
        var scale = new float[d];
        for (var j = 0; j < d; j++)
        {
            var col = RobustStats.SortedColumn(rows, n, d, j);
            low[j] = RobustStats.Quantile(col, LowQuantile);
            high[j] = RobustStats.Quantile(col, HighQuantile);
            median[j] = RobustStats.Quantile(col, 0.5);
            scale[j] = RobustStats.Scale(col, median[j]);
        }
        return new FeatureBaseline(names, low, high, median, scale);
    }

    /// <summary>How far value j lies outside its normal range, in robust scale units (0 inside the range).</summary>
    public float Deviation(int j, float v)
    {
        if (float.IsNaN(v)) return 0f;
        var outside = v > High[j] ? v - High[j] : v < Low[j] ? Low[j] - v : 0f;
        if (outside > 0) return Math.Min(1e6f, outside / Scale[j] + 1f);
        // Inside the range: a small value that still orders features by distance from the median.
        return Math.Min(1f, Math.Abs(v - Median[j]) / Scale[j] / 10f);
    }

    /// <summary>The top features of one raw row, most deviant first (at most `count`).</summary>
    public FeatureContribution[] Explain(ReadOnlySpan<float> rawRow, int count = 3)
    {
        var d = Names.Count;
        count = Math.Min(count, d);
        Span<int> top = stackalloc int[count];
        Span<float> dev = stackalloc float[count];
        dev.Fill(-1f);
        for (var j = 0; j < d; j++)
        {
            var x = Deviation(j, rawRow[j]);
            if (x <= dev[count - 1]) continue;
            var p = count - 1;
            while (p > 0 && dev[p - 1] < x)
            {
                dev[p] = dev[p - 1];
                top[p] = top[p - 1];
                p--;
            }
            dev[p] = x;
            top[p] = j;
        }
        var result = new FeatureContribution[count];
        for (var i = 0; i < count; i++)
        {
            var j = top[i];
            result[i] = new FeatureContribution(Names[j], rawRow[j], Low[j], High[j], dev[i]);
        }
        return result;
    }

    /// <summary>"execs: 9, normally 0-1 (f_execs); ..." for the few features outside their range (or the closest, if none is).</summary>
    public static string Describe(IReadOnlyList<FeatureContribution> contributions)
    {
        var outside = contributions.Where(c => c.Deviation >= 1f).ToList();
        return string.Join("; ", (outside.Count > 0 ? outside : contributions.Take(1)).Select(c => c.ToString()));
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("baseline.bin");
        ModelWriter.WriteFloats(w, Low);
        ModelWriter.WriteFloats(w, High);
        ModelWriter.WriteFloats(w, Median);
        ModelWriter.WriteFloats(w, Scale);
    }

    public static FeatureBaseline Load(ModelReader reader, IReadOnlyList<string> names)
    {
        var r = reader.Entry("baseline.bin");
        return new FeatureBaseline(names, ModelReader.ReadFloats(r), ModelReader.ReadFloats(r), ModelReader.ReadFloats(r), ModelReader.ReadFloats(r));
    }
}
