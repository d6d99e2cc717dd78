namespace Detect.Models.Detectors;

/// <summary>
/// Isolation forest (Liu, Ting and Zhou, 2008): random axis-parallel splits isolate anomalies in
/// fewer steps than normal points. Score s(x) = 2^(-E[h(x)] / c(psi)), in (0, 1], about 0.5 for
/// ordinary points and near 1 for anomalies. Nodes live in flat arrays, so scoring walks
/// arrays, not objects.
/// </summary>
public sealed class IsolationForest : IAnomalyDetector
{
    // Per node: the split feature (-1 = leaf), the split value, the left child (right = left+1),
    // and for leaves the path length credited there (depth + c(size)).
    private readonly int[] _feature;
    private readonly float[] _split;
    private readonly int[] _left;
    private readonly float[] _leafPath;
    private readonly int[] _roots;
    private readonly float _normaliser;

    private IsolationForest(int features, int[] feature, float[] split, int[] left, float[] leafPath, int[] roots, float normaliser)
    {
        FeatureCount = features;
        _feature = feature;
        _split = split;
        _left = left;
        _leafPath = leafPath;
        _roots = roots;
        _normaliser = normaliser;
    }

    public string Kind => "iforest";
    public int FeatureCount { get; }
    public int Trees => _roots.Length;

    /// <summary>Average path length of an unsuccessful binary-search-tree search among n points: c(n) = 2H(n-1) - 2(n-1)/n.</summary>
    public static double AveragePath(int n) =>
        n <= 1 ? 0 : n == 2 ? 1 : 2 * (Math.Log(n - 1) + 0.5772156649) - 2.0 * (n - 1) / n;

    public static IsolationForest Fit(ReadOnlySpan<float> rows, int n, int d, DetectorOptions options)
    {
        if (n < 2) throw new ArgumentException("an isolation forest needs at least 2 normal windows");
        var rng = new Random(options.Seed);
        var psi = Math.Min(options.SampleSize, n);
        var heightLimit = (int)Math.Ceiling(Math.Log2(psi));
        var feature = new List<int>();
        var split = new List<float>();
        var left = new List<int>();
        var leafPath = new List<float>();
        var roots = new int[options.Trees];
        var all = Enumerable.Range(0, n).ToArray();
        var data = rows.ToArray();
        for (var t = 0; t < options.Trees; t++)
        {
            // Sub-sample without replacement (partial Fisher-Yates).
            for (var i = 0; i < psi; i++)
            {
                var k = rng.Next(i, n);
                (all[i], all[k]) = (all[k], all[i]);
            }
            var sample = all[..psi];
            roots[t] = feature.Count;
            feature.Add(0); split.Add(0); left.Add(0); leafPath.Add(0);
            Grow(roots[t], sample, 0);
        }
        return new IsolationForest(d, [.. feature], [.. split], [.. left], [.. leafPath], roots, (float)AveragePath(psi));

        void Grow(int node, int[] idx, int depth)
        {
            if (depth >= heightLimit || idx.Length <= 1)
            {
                MakeLeaf(node, idx.Length, depth);
                return;
            }
            // Pick a random feature that still varies among these points (a few tries, then give up).
            for (var attempt = 0; attempt < Math.Max(8, d); attempt++)
            {
                var j = rng.Next(d);
                float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
                foreach (var i in idx)
                {
                    var v = data[i * d + j];
                    if (v < lo) lo = v;
                    if (v > hi) hi = v;
                }
                if (!(hi > lo)) continue;
                var s = (float)(lo + rng.NextDouble() * (hi - lo));
                if (s <= lo) s = lo + (hi - lo) * 0.5f; // never an empty side
                var l = idx.Where(i => data[i * d + j] < s).ToArray();
                var r = idx.Where(i => data[i * d + j] >= s).ToArray();
                var child = feature.Count;
                feature[node] = j;
                split[node] = s;
                left[node] = child;
                for (var c = 0; c < 2; c++) { feature.Add(0); split.Add(0); left.Add(0); leafPath.Add(0); }
                Grow(child, l, depth + 1);
                Grow(child + 1, r, depth + 1);
                return;
            }
            MakeLeaf(node, idx.Length, depth);
        }

        void MakeLeaf(int node, int size, int depth)
        {
            feature[node] = -1;
            leafPath[node] = (float)(depth + AveragePath(size));
        }
    }

    public void Score(ReadOnlySpan<float> rows, int n, Span<float> scores, ReadOnlySpan<string?> entities)
    {
        var d = FeatureCount;
        var feature = _feature;
        var split = _split;
        var left = _left;
        var inv = 1.0 / (_roots.Length * _normaliser);
        for (var r = 0; r < n; r++)
        {
            var row = rows.Slice(r * d, d);
            var total = 0f;
            foreach (var root in _roots)
            {
                var node = root;
                int j;
                while ((j = feature[node]) >= 0) node = row[j] < split[node] ? left[node] : left[node] + 1;
                total += _leafPath[node];
            }
            scores[r] = (float)Math.Pow(2, -total * inv);
        }
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("detector.bin");
        w.Write(FeatureCount);
        w.Write(_normaliser);
        ModelWriter.WriteInts(w, _feature);
        ModelWriter.WriteFloats(w, _split);
        ModelWriter.WriteInts(w, _left);
        ModelWriter.WriteFloats(w, _leafPath);
        ModelWriter.WriteInts(w, _roots);
    }

    public static IsolationForest Load(ModelReader reader)
    {
        var r = reader.Entry("detector.bin");
        var d = r.ReadInt32();
        var normaliser = r.ReadSingle();
        var feature = ModelReader.ReadInts(r);
        var split = ModelReader.ReadFloats(r);
        var left = ModelReader.ReadInts(r);
        var leafPath = ModelReader.ReadFloats(r);
        var roots = ModelReader.ReadInts(r);
        return new IsolationForest(d, feature, split, left, leafPath, roots, normaliser);
    }
}
