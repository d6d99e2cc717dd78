namespace Detect.Models.Detectors;

/// <summary>Per-feature robust statistics of a row-major matrix: medians, scales, quantiles.</summary>
public static class RobustStats
{
    /// <summary>Column j of a row-major matrix, sorted ascending.</summary>
    public static float[] SortedColumn(ReadOnlySpan<float> rows, int n, int d, int j)
    {
        var col = new float[n];
        for (var r = 0; r < n; r++) col[r] = rows[r * d + j];
        Array.Sort(col);
        return col;
    }

    /// <summary>Linear-interpolated quantile of a sorted array (p in [0,1]).</summary>
    public static float Quantile(ReadOnlySpan<float> sorted, double p)
    {
        if (sorted.Length == 0) return 0f;
        var pos = Math.Clamp(p, 0, 1) * (sorted.Length - 1);
        var lo = (int)Math.Floor(pos);
        var hi = Math.Min(lo + 1, sorted.Length - 1);
        return (float)(sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]));
    }

    /// <summary>
    /// A robust scale of a sorted column: 1.4826*MAD (the standard deviation for Gaussian data),
    /// else IQR/1.349, else the standard deviation, else a small floor. Sparse features (mostly 0)
    /// have MAD 0 and still need a finite scale, and a feature constant in training needs a floor
    /// so that any departure from it shows without dividing by zero.
    /// </summary>
    public static float Scale(ReadOnlySpan<float> sorted, float median)
    {
        var dev = new float[sorted.Length];
        for (var i = 0; i < sorted.Length; i++) dev[i] = Math.Abs(sorted[i] - median);
        Array.Sort(dev);
        var mad = 1.4826f * Quantile(dev, 0.5);
        var floor = Floor(median);
        if (mad > floor) return mad;
        var iqr = (Quantile(sorted, 0.75) - Quantile(sorted, 0.25)) / 1.349f;
        if (iqr > floor) return iqr;
        double sum = 0, sum2 = 0;
        foreach (var v in sorted)
        {
            sum += v;
            sum2 += (double)v * v;
        }
        var mean = sum / Math.Max(1, sorted.Length);
        var std = (float)Math.Sqrt(Math.Max(0, sum2 / Math.Max(1, sorted.Length) - mean * mean));
        return Math.Max(std, floor);
    }

    /// <summary>The smallest scale a feature gets: 1% of its typical magnitude, at least 0.01.</summary>
    public static float Floor(float median) => 0.01f * Math.Max(1f, Math.Abs(median));

    public static (float[] Median, float[] Scale) MedianAndScale(ReadOnlySpan<float> rows, int n, int d)
    {
        var median = new float[d];
        var scale = new float[d];
        for (var j = 0; j < d; j++)
        {
            var col = SortedColumn(rows, n, d, j);
            median[j] = Quantile(col, 0.5);
            scale[j] = Scale(col, median[j]);
        }
        return (median, scale);
    }

    /// <summary>Mean of the k largest values of a span (k capped at its length), without allocating.</summary>
    public static float TopMean(ReadOnlySpan<float> values, int k)
    {
        k = Math.Clamp(k, 1, Math.Min(8, values.Length));
        Span<float> top = stackalloc float[k];
        top.Fill(float.NegativeInfinity);
        foreach (var v in values)
        {
            if (v <= top[k - 1]) continue;
            var i = k - 1;
            while (i > 0 && top[i - 1] < v)
            {
                top[i] = top[i - 1];
                i--;
            }
            top[i] = v;
        }
        var sum = 0f;
        for (var i = 0; i < k; i++) sum += top[i];
        return sum / k;
    }
}
