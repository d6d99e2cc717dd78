using Detect.Models.Detectors;

namespace Detect.Models.Training;

/// <summary>
/// What a model does to raw feature values before its detector sees them: an optional signed
/// log1p for heavy-tailed features (byte and packet rates span nine orders of magnitude), then
/// optional robust standardisation ((x - median) / scale), clipped to [-Clip, Clip]. Learnt on
/// training data, stored in the model, applied identically in training, calibration and live scoring.
/// </summary>
public sealed class FeatureTransform
{
    private readonly bool[] _log;
    private readonly float[] _centre;
    private readonly float[] _inverseScale;
    private readonly float _clip;

    public FeatureTransform(bool[] log, float[] centre, float[] scale, float clip = float.PositiveInfinity)
    {
        _log = log;
        _centre = centre;
        _inverseScale = scale.Select(s => 1f / s).ToArray();
        Scale = scale;
        _clip = clip > 0 ? clip : float.PositiveInfinity;
    }

    /// <summary>Standardised values are clipped to [-Clip, Clip] (infinity: not clipped).</summary>
    public float Clip => _clip;

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
        return new FeatureTransform(log, centre, scale, options.Clip ?? float.PositiveInfinity);
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
                output[o + j] = Math.Clamp((v - _centre[j]) * _inverseScale[j], -_clip, _clip);
            }
        }
    }

    /// <summary>Transforms one raw feature value (column j); scoring uses this while it transposes Arrow columns.</summary>
    public float Apply(int j, float v)
    {
        if (!float.IsFinite(v)) v = float.IsNaN(v) ? 0f : v > 0 ? float.MaxValue : float.MinValue;
        if (_log[j]) v = SignedLog1p(v);
        return Math.Clamp((v - _centre[j]) * _inverseScale[j], -_clip, _clip);
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("transform.bin");
        w.Write(_log.Length);
        foreach (var b in _log) w.Write(b);
        ModelWriter.WriteFloats(w, _centre);
        ModelWriter.WriteFloats(w, Scale.ToArray());
        w.Write(_clip);
    }

    public static FeatureTransform Load(ModelReader reader)
    {
        var r = reader.Entry("transform.bin");
        var d = r.ReadInt32();
        var log = new bool[d];
        for (var j = 0; j < d; j++) log[j] = r.ReadBoolean();
        var centre = ModelReader.ReadFloats(r);
        var scale = ModelReader.ReadFloats(r);
        // Models saved before clipping existed end here: not clipped.
        var clip = r.BaseStream.Position + sizeof(float) <= r.BaseStream.Length ? r.ReadSingle() : float.PositiveInfinity;
        return new FeatureTransform(log, centre, scale, clip);
    }
}

public enum LogMode { None, Auto, All }

public sealed record TransformOptions
{
    public LogMode Log { get; init; } = LogMode.Auto;
    /// <summary>Auto mode: features whose absolute value in training exceeds this are log-scaled.</summary>
    public float LogAbove { get; init; } = 100f;
    public bool Standardise { get; init; } = true;
    /// <summary>
    /// Standardised values are clipped to [-Clip, Clip] (infinity: not clipped; null: the detector's
    /// default, <see cref="DefaultClip"/>).
    /// </summary>
    public float? Clip { get; init; }

    /// <summary>
    /// knn: 10. A feature constant in training gets the scale floor (0.01), so one rare flag would
    /// stand 100 units out and drown every other feature in a distance; ten robust deviations already
    /// mean "far outside normal". The value was set a priori, not searched on attack rows. Other
    /// detectors: no clip (robustz would tie at the cap, pca loses part of its residual).
    /// </summary>
    public static float DefaultClip(string detector) => detector == "knn" ? 10f : float.PositiveInfinity;
}
