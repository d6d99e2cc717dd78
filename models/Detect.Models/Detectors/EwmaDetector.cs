namespace Detect.Models.Detectors;

/// <summary>
/// Per-entity baseline over successive windows: for each entity (process, source address) an
/// exponentially weighted mean and variance of every feature; a window scores by how far it is
/// from its own entity's recent past (mean of the largest few |z|). An entity with less than
/// Warmup windows of history is compared with the global robust baseline learnt in training, so
/// a new process that starts out strange is still seen. Memory is bounded: at most MaxEntities
/// entities, the least recently seen forgotten first. Thread-safe (one lock per batch).
/// </summary>
public sealed class EwmaDetector : IStatefulDetector
{
    private readonly float[] _median;
    private readonly float[] _scale;
    private readonly float _alpha;
    private readonly int _warmup;
    private readonly int _top;
    private readonly int _maxEntities;
    private readonly Dictionary<string, State> _entities = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private long _tick;

    public EwmaDetector(float[] median, float[] scale, double alpha, int warmup, int top, int maxEntities)
    {
        _median = median;
        _scale = scale;
        _alpha = (float)alpha;
        _warmup = warmup;
        _top = top;
        _maxEntities = maxEntities;
    }

    public string Kind => "ewma";
    public int FeatureCount => _median.Length;

    public int TrackedEntities
    {
        get { lock (_gate) return _entities.Count; }
    }

    public static EwmaDetector Fit(ReadOnlySpan<float> rows, int n, int d, DetectorOptions options)
    {
        if (n < 2) throw new ArgumentException("ewma needs at least 2 normal windows");
        var (median, scale) = RobustStats.MedianAndScale(rows, n, d);
        return new EwmaDetector(median, scale, options.Alpha, options.Warmup, options.TopFeatures, options.MaxEntities);
    }

    public void ResetState()
    {
        lock (_gate) _entities.Clear();
    }

    public void Score(ReadOnlySpan<float> rows, int n, Span<float> scores, ReadOnlySpan<string?> entities)
    {
        var d = FeatureCount;
        var z = new float[d];
        lock (_gate)
        {
            for (var r = 0; r < n; r++)
            {
                var row = rows.Slice(r * d, d);
                var key = r < entities.Length ? entities[r] : null;
                State? s = null;
                if (key != null && !_entities.TryGetValue(key, out s))
                {
                    if (_entities.Count >= _maxEntities) Evict();
                    s = new State(d);
                    _entities[key] = s;
                }
                for (var j = 0; j < d; j++)
                {
                    float dev;
                    if (s == null || s.Count < _warmup) dev = Math.Abs(row[j] - _median[j]) / _scale[j];
                    else
                    {
                        // The entity's own spread, never tighter than a quarter of the global one.
                        var sd = MathF.Sqrt(s.Var[j]);
                        dev = Math.Abs(row[j] - s.Mean[j]) / Math.Max(sd, 0.25f * _scale[j]);
                    }
                    z[j] = Math.Min(RobustZDetector.ZCap, dev);
                }
                scores[r] = RobustStats.TopMean(z, _top);
                if (s != null) Update(s, row);
            }
        }
    }

    private void Update(State s, ReadOnlySpan<float> row)
    {
        s.LastSeen = ++_tick;
        if (s.Count == 0)
        {
            row.CopyTo(s.Mean);
            s.Count = 1;
            return;
        }
        var a = _alpha;
        for (var j = 0; j < row.Length; j++)
        {
            var diff = row[j] - s.Mean[j];
            s.Mean[j] += a * diff;
            s.Var[j] = (1 - a) * (s.Var[j] + a * diff * diff);
        }
        s.Count++;
    }

    /// <summary>Forgets the least recently seen half when the table is full (amortised O(1) per window).</summary>
    private void Evict()
    {
        var cutoff = _entities.Values.Select(v => v.LastSeen).Order().ElementAt(_entities.Count / 2);
        foreach (var key in _entities.Where(kv => kv.Value.LastSeen <= cutoff).Select(kv => kv.Key).ToList()) _entities.Remove(key);
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("detector.bin");
        w.Write(_alpha);
        w.Write(_warmup);
        w.Write(_top);
        w.Write(_maxEntities);
        ModelWriter.WriteFloats(w, _median);
        ModelWriter.WriteFloats(w, _scale);
    }

    public static EwmaDetector Load(ModelReader reader)
    {
        var r = reader.Entry("detector.bin");
        var alpha = r.ReadSingle();
        var warmup = r.ReadInt32();
        var top = r.ReadInt32();
        var max = r.ReadInt32();
        return new EwmaDetector(ModelReader.ReadFloats(r), ModelReader.ReadFloats(r), alpha, warmup, top, max);
    }

    private sealed class State(int d)
    {
        public readonly float[] Mean = new float[d];
        public readonly float[] Var = new float[d];
        public int Count;
        public long LastSeen;
    }
}
