namespace Detect.Models.Detectors;

/// <summary>
/// Per-feature robust baseline: z_j = (x_j - median_j) / scale_j with median and MAD-based scale
/// learnt from normal windows; the score is the mean of the largest few |z| (one feature far out
/// of its range is enough, many features slightly off are not). Cheap: O(d) per window.
/// </summary>
public sealed class RobustZDetector : IAnomalyDetector
{
    /// <summary>|z| is capped so one feature never outweighs everything else by orders of magnitude.</summary>
    public const float ZCap = 100f;

    private readonly float[] _median;
    private readonly float[] _inverseScale;
    private readonly int _top;

    public RobustZDetector(float[] median, float[] scale, int top)
    {
        if (median.Length != scale.Length) throw new ArgumentException("median and scale differ in length");
        _median = median;
        _inverseScale = scale.Select(s => 1f / s).ToArray();
        Scale = scale;
        _top = top;
    }

    public string Kind => "robustz";
    public int FeatureCount => _median.Length;
    public IReadOnlyList<float> Median => _median;
    public IReadOnlyList<float> Scale { get; }

    public static RobustZDetector Fit(ReadOnlySpan<float> rows, int n, int d, DetectorOptions options)
    {
        if (n < 2) throw new ArgumentException("robustz needs at least 2 normal windows");
        var (median, scale) = RobustStats.MedianAndScale(rows, n, d);
        return new RobustZDetector(median, scale, options.TopFeatures);
    }

    public void Score(ReadOnlySpan<float> rows, int n, Span<float> scores, ReadOnlySpan<string?> entities)
    {
        var d = _median.Length;
        Span<float> z = stackalloc float[d <= 1024 ? d : 0];
        var buffer = d <= 1024 ? z : new float[d];
        for (var r = 0; r < n; r++)
        {
            var row = rows.Slice(r * d, d);
            for (var j = 0; j < d; j++) buffer[j] = Math.Min(ZCap, Math.Abs(row[j] - _median[j]) * _inverseScale[j]);
            scores[r] = RobustStats.TopMean(buffer, _top);
        }
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("detector.bin");
        w.Write(_top);
        ModelWriter.WriteFloats(w, _median);
        ModelWriter.WriteFloats(w, Scale.ToArray());
    }

    public static RobustZDetector Load(ModelReader reader)
    {
        var r = reader.Entry("detector.bin");
        var top = r.ReadInt32();
        return new RobustZDetector(ModelReader.ReadFloats(r), ModelReader.ReadFloats(r), top);
    }
}
