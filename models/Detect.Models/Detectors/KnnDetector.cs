using System.Numerics;
using System.Runtime.InteropServices;

namespace Detect.Models.Detectors;

/// <summary>
/// Distance to the nearest normal windows: the score is the mean Euclidean distance to the k
/// nearest distinct reference windows seen in training. Exact search, pruned by the triangle
/// inequality (LAESA-like): a few pivots are chosen among the references (farthest first), and
/// each reference's distance to them kept. The references are sorted by distance to the first
/// pivot; a window's search walks outwards from its own distance to it, stops on a side once
/// that gap alone exceeds the k-th best distance found, and skips a reference whenever any
/// pivot proves it too far, before computing its distance (windows of clustered traffic look
/// at a small part of the references; a window far from everything at more of them).
/// </summary>
public sealed class KnnDetector : IAnomalyDetector
{
    private const int MaxPivots = 8;
    private readonly float[] _reference; // row-major, distinct rows, sorted by distance to pivot 0
    private readonly double[] _radius;    // each reference's distance to pivot 0, ascending
    private readonly float[] _pivotDistance; // [reference * P + p]
    private readonly float[] _pivots;     // row-major, P rows
    private readonly int _pivotCount;
    private readonly int _k;

    private KnnDetector(int d, float[] reference, int k)
    {
        FeatureCount = d;
        _k = k;
        var m = reference.Length / d;
        Span<float> centroid = new float[d];
        for (var i = 0; i < m; i++)
            for (var j = 0; j < d; j++) centroid[j] += reference[i * d + j] / m;
        // Farthest-first pivots: the reference farthest from the centroid, then each next the farthest from those chosen.
        _pivotCount = Math.Min(MaxPivots, m);
        _pivots = new float[_pivotCount * d];
        var nearestPivot = new double[m];
        for (var i = 0; i < m; i++) nearestPivot[i] = SquaredDistance(centroid, reference.AsSpan(i * d, d), float.PositiveInfinity);
        var distances = new double[_pivotCount, m];
        for (var p = 0; p < _pivotCount; p++)
        {
            var pick = 0;
            for (var i = 1; i < m; i++) if (nearestPivot[i] > nearestPivot[pick]) pick = i;
            Array.Copy(reference, pick * d, _pivots, p * d, d);
            for (var i = 0; i < m; i++)
            {
                var dist = Math.Sqrt(SquaredDistance(_pivots.AsSpan(p * d, d), reference.AsSpan(i * d, d), float.PositiveInfinity));
                distances[p, i] = dist;
                nearestPivot[i] = p == 0 ? dist * dist : Math.Min(nearestPivot[i], dist * dist);
            }
        }
        var order = Enumerable.Range(0, m).OrderBy(i => distances[0, i]).ToArray();
        _reference = new float[reference.Length];
        _radius = new double[m];
        _pivotDistance = new float[m * _pivotCount];
        for (var i = 0; i < m; i++)
        {
            Array.Copy(reference, order[i] * d, _reference, i * d, d);
            _radius[i] = distances[0, order[i]];
            for (var p = 0; p < _pivotCount; p++) _pivotDistance[i * _pivotCount + p] = (float)distances[p, order[i]];
        }
    }

    /// <summary>References whose distance a window's search computed, over all windows scored (for tests and benchmarks).</summary>
    public long DistancesComputed => Interlocked.Read(ref _distances);
    private long _distances;

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
        Span<float> toPivot = stackalloc float[MaxPivots];
        long computed = 0;
        for (var r = 0; r < n; r++)
        {
            var x = rows.Slice(r * d, d);
            best.Fill(float.PositiveInfinity);
            var worst = float.PositiveInfinity;
            for (var p = 0; p < _pivotCount; p++) toPivot[p] = MathF.Sqrt(SquaredDistance(_pivots.AsSpan(p * d, d), x, float.PositiveInfinity));
            double rx = toPivot[0];
            // Two cursors from the window's place among the sorted radii, always taking the nearer in radius.
            var hi = Array.BinarySearch(_radius, rx);
            if (hi < 0) hi = ~hi;
            var lo = hi - 1;
            while (lo >= 0 || hi < m)
            {
                var gapLo = lo >= 0 ? rx - _radius[lo] : double.PositiveInfinity;
                var gapHi = hi < m ? _radius[hi] - rx : double.PositiveInfinity;
                var takeLo = gapLo <= gapHi;
                var gap = takeLo ? gapLo : gapHi;
                // Every reference further out on both sides is at least `gap` away: done. The margin keeps
                // float rounding from cutting a reference at a tie.
                if (gap > 0 && gap * gap > worst * (1 + 1e-5) + 1e-12) break;
                var i = takeLo ? lo-- : hi++;
                if (worst < float.PositiveInfinity && TooFar(toPivot, _pivotDistance.AsSpan(i * _pivotCount, _pivotCount), worst)) continue;
                computed++;
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
        Interlocked.Add(ref _distances, computed);
    }

    /// <summary>Whether some pivot proves the reference at least sqrt(worst) away (with the same rounding margin as the walk).</summary>
    private static bool TooFar(ReadOnlySpan<float> window, ReadOnlySpan<float> reference, float worst)
    {
        var bound = 0f;
        for (var p = 0; p < reference.Length; p++) bound = MathF.Max(bound, MathF.Abs(window[p] - reference[p]));
        return (double)bound * bound > worst * (1 + 1e-5) + 1e-12;
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
