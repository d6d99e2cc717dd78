using System.Numerics;
using System.Runtime.InteropServices;

namespace Detect.Models.Detectors;

/// <summary>
/// Distance to the nearest normal windows: the score is the mean Euclidean distance to the k
/// nearest distinct reference windows seen in training. On normalised syscall-frequency vectors
/// this is the classic ADFA-LD detector; it costs O(reference x d) per window, so it suits
/// families with modest traffic (processes), not the cheapest path.
/// </summary>
public sealed class KnnDetector : IAnomalyDetector
{
    private readonly float[] _reference; // row-major, distinct rows
    private readonly int _k;

    private KnnDetector(int d, float[] reference, int k)
    {
        FeatureCount = d;
        _reference = reference;
        _k = k;
    }

    public string Kind => "knn";
    public int FeatureCount { get; }
    public int ReferenceCount => _reference.Length / FeatureCount;

    public static KnnDetector Fit(ReadOnlySpan<float> rows, int n, int d, DetectorOptions options)
    {
        if (n < 1) throw new ArgumentException("knn needs at least one normal window");
        // Distinct rows only: repeated identical windows add cost, not information.
        var seen = new HashSet<RowKey>();
        var distinct = new List<int>();
        var data = rows.ToArray();
        for (var r = 0; r < n; r++)
        {
            if (seen.Add(new RowKey(data, r * d, d))) distinct.Add(r);
        }
        if (distinct.Count > options.MaxReference)
        {
            var rng = new Random(options.Seed);
            distinct = distinct.OrderBy(_ => rng.Next()).Take(options.MaxReference).Order().ToList();
        }
        var reference = new float[distinct.Count * d];
        for (var i = 0; i < distinct.Count; i++) Array.Copy(data, distinct[i] * d, reference, i * d, d);
        return new KnnDetector(d, reference, Math.Clamp(options.K, 1, Math.Min(16, distinct.Count)));
    }

    public void Score(ReadOnlySpan<float> rows, int n, Span<float> scores, ReadOnlySpan<string?> entities)
    {
        var d = FeatureCount;
        var m = ReferenceCount;
        Span<float> best = stackalloc float[_k];
        for (var r = 0; r < n; r++)
        {
            var x = rows.Slice(r * d, d);
            best.Fill(float.PositiveInfinity);
            var worst = float.PositiveInfinity;
            for (var i = 0; i < m; i++)
            {
                var dist = SquaredDistance(x, _reference.AsSpan(i * d, d), worst);
                if (dist >= worst) continue;
                // Insert into the sorted k-best list.
                var p = _k - 1;
                while (p > 0 && best[p - 1] > dist)
                {
                    best[p] = best[p - 1];
                    p--;
                }
                best[p] = dist;
                worst = best[_k - 1];
            }
            var sum = 0f;
            foreach (var b in best) sum += MathF.Sqrt(b);
            scores[r] = sum / _k;
        }
    }

    /// <summary>Squared distance with early exit once it passes the current k-th best.</summary>
    private static float SquaredDistance(ReadOnlySpan<float> a, ReadOnlySpan<float> b, float stopAbove)
    {
        var sum = 0f;
        var i = 0;
        var width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated && a.Length >= width)
        {
            var va = MemoryMarshal.Cast<float, Vector<float>>(a);
            var vb = MemoryMarshal.Cast<float, Vector<float>>(b);
            var acc = Vector<float>.Zero;
            for (var v = 0; v < va.Length; v++)
            {
                var diff = va[v] - vb[v];
                acc += diff * diff;
                if ((v & 7) == 7 && Vector.Sum(acc) >= stopAbove) return stopAbove;
            }
            sum = Vector.Sum(acc);
            i = va.Length * width;
        }
        for (; i < a.Length; i++)
        {
            var diff = a[i] - b[i];
            sum += diff * diff;
        }
        return sum;
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("detector.bin");
        w.Write(FeatureCount);
        w.Write(_k);
        ModelWriter.WriteFloats(w, _reference);
    }

    public static KnnDetector Load(ModelReader reader)
    {
        var r = reader.Entry("detector.bin");
        var d = r.ReadInt32();
        var k = r.ReadInt32();
        return new KnnDetector(d, ModelReader.ReadFloats(r), k);
    }

    private readonly struct RowKey(float[] data, int offset, int length) : IEquatable<RowKey>
    {
        public bool Equals(RowKey other) => data.AsSpan(offset, length).SequenceEqual(other.Data.AsSpan(other.Offset, length));
        public override bool Equals(object? obj) => obj is RowKey k && Equals(k);
        public override int GetHashCode()
        {
            var h = new HashCode();
            h.AddBytes(MemoryMarshal.AsBytes(data.AsSpan(offset, length)));
            return h.ToHashCode();
        }
        private float[] Data => data;
        private int Offset => offset;
    }
}
