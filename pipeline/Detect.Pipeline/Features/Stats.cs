using System.Numerics;
using System.Runtime.CompilerServices;

namespace Detect.Pipeline.Features;

[InlineArray(16)]
internal struct Bitmap1024
{
    private ulong _e;
}

[InlineArray(16)]
internal struct Counts16
{
    private uint _e;
}

[InlineArray(32)]
internal struct Counts32
{
    private uint _e;
}

[InlineArray(64)]
internal struct Counts64
{
    private uint _e;
}

[InlineArray(128)]
internal struct Counts128
{
    private uint _e;
}

[InlineArray(256)]
internal struct Counts256
{
    private uint _e;
}

/// <summary>Small numeric helpers shared by the families (documented in FEATURES.md).</summary>
internal static class FeatureMath
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetBit(ref Bitmap1024 bits, int index) => bits[index >> 6] |= 1UL << index;

    public static int PopCount(in Bitmap1024 bits)
    {
        var n = 0;
        for (var i = 0; i < 16; i++) n += BitOperations.PopCount(bits[i]);
        return n;
    }

    /// <summary>Linear counting over 1024 bits: -m ln(1 - k/m), rounded; exact while no two items share a bit.</summary>
    public static float DistinctEstimate(in Bitmap1024 bits)
    {
        var k = PopCount(bits);
        if (k == 0) return 0;
        if (k >= 1024) return MathF.Round(1024f * MathF.Log(1024f));
        return MathF.Round(-1024f * MathF.Log(1f - k / 1024f));
    }

    /// <summary>Linear counting over the buckets of a hashed histogram: -m ln(1 - k/m) for k non-empty of m buckets, rounded.</summary>
    public static float DistinctEstimate(ReadOnlySpan<uint> buckets)
    {
        var k = 0;
        foreach (var c in buckets) if (c != 0) k++;
        return LinearCount(k, buckets.Length);
    }

    /// <summary>-m ln(1 - k/m), rounded; m ln m when every bucket is occupied.</summary>
    public static float LinearCount(int k, int buckets)
    {
        var m = (float)buckets;
        if (k == 0) return 0;
        if (k >= buckets) return MathF.Round(m * MathF.Log(m));
        return MathF.Round(-m * MathF.Log(1f - k / m));
    }

    /// <summary>Shannon entropy in bits of a histogram whose counts add up to <paramref name="total"/>.</summary>
    public static float Entropy(ReadOnlySpan<uint> counts, long total)
    {
        if (total <= 0) return 0;
        double h = 0, inv = 1.0 / total;
        foreach (var c in counts)
        {
            if (c == 0) continue;
            var p = c * inv;
            h -= p * Math.Log2(p);
        }
        return (float)h;
    }

    public static float Ratio(long part, long whole) => whole > 0 ? (float)((double)part / whole) : 0f;
}
