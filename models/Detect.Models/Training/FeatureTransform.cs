using Detect.Models.Detectors;

namespace Detect.Models.Training;

/// <summary>
/// What a model does to raw feature values before its detector sees them: an optional signed
/// log1p for heavy-tailed features (byte and packet rates span nine orders of magnitude), then
/// optional robust standardisation ((x - median) / scale). Learnt on training data, stored in
/// the model, applied identically in training, calibration and live scoring.
/// </summary>
public sealed class FeatureTransform
{
    private readonly bool[] _log;
    private readonly float[] _centre;
    private readonly float[] _inverseScale;

    public FeatureTransform(bool[] log, float[] centre, float[] scale)
    {
        _log = log;
        _centre = centre;
        _inverseScale = scale.Select(s => 1f / s).ToArray();
        Scale = scale;
    }

    public int FeatureCount => _log.Length;
    public IReadOnlyList<bool> Log => _log;
    public IReadOnlyList<float> Centre => _centre;
    public IReadOnlyList<float> Scale { get; }

    /// <summary>Log for features whose magnitude in training exceeds logAbove (auto); scaling when asked.</summary>
    public static FeatureTransform Fit(ReadOnlySpan<float> rows, int n, int d, TransformOptions options)
    {
        var log = new bool[d];
        for (var j = 0; j < d; j++)
        {
            if (options.Log == LogMode.All) log[j] = true;
            else if (options.Log == LogMode.Auto)
            {
                var max = 0f;
                for (var r = 0; r < n; r++) max = Math.Max(max, Math.Abs(rows[r * d + j]));
                log[j] = max > options.LogAbove;
            }
        }
        var centre = new float[d];
        var scale = Enumerable.Repeat(1f, d).ToArray();
        if (options.Standardise)
        {
            var logged = new float[n * d];
            var identity = new FeatureTransform(log, centre, scale);
            identity.Apply(rows, n, logged);
            (centre, scale) = RobustStats.MedianAndScale(logged, n, d);
        }
        return new FeatureTransform(log, centre, scale);
    }

    public static float SignedLog1p(float x) => x >= 0 ? MathF.Log(1 + x) : -MathF.Log(1 - x);

    /// <summary>Transforms n row-major rows into output.</summary>
    public void Apply(ReadOnlySpan<float> rows, int n, Span<float> output)
    {
        var d = FeatureCount;
        for (var r = 0; r < n; r++)
        {
            var o = r * d;
            for (var j = 0; j < d; j++)
            {
                var v = rows[o + j];
                if (!float.IsFinite(v)) v = float.IsNaN(v) ? 0f : v > 0 ? float.MaxValue : float.MinValue;
                if (_log[j]) v = SignedLog1p(v);
                output[o + j] = (v - _centre[j]) * _inverseScale[j];
            }
        }
    }

    /// <summary>Transforms one raw feature value (column j); scoring uses this while it transposes Arrow columns.</summary>
    public float Apply(int j, float v)
    {
        if (!float.IsFinite(v)) v = float.IsNaN(v) ? 0f : v > 0 ? float.MaxValue : float.MinValue;
        if (_log[j]) v = SignedLog1p(v);
        return (v - _centre[j]) * _inverseScale[j];
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("transform.bin");
        w.Write(_log.Length);
        foreach (var b in _log) w.Write(b);
        ModelWriter.WriteFloats(w, _centre);
        ModelWriter.WriteFloats(w, Scale.ToArray());
    }

    public static FeatureTransform Load(ModelReader reader)
    {
        var r = reader.Entry("transform.bin");
        var d = r.ReadInt32();
        var log = new bool[d];
        for (var j = 0; j < d; j++) log[j] = r.ReadBoolean();
        return new FeatureTransform(log, ModelReader.ReadFloats(r), ModelReader.ReadFloats(r));
    }
}

public enum LogMode { None, Auto, All }

public sealed record TransformOptions
{
    public LogMode Log { get; init; } = LogMode.Auto;
    /// <summary>Auto mode: features whose absolute value in training exceeds this are log-scaled.</summary>
    public float LogAbove { get; init; } = 100f;
    public bool Standardise { get; init; } = true;
}
