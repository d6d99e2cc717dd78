using System.Runtime.InteropServices;
using Apache.Arrow;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Syscalls;

namespace Detect.Pipeline.Features;

/// <summary>
/// What a hashed n-gram feature of a syscall/2 window was made of: the hash is one-way, but the
/// window's `seq` holds its calls, so the pairs (triples) that fell in the bucket can be named:
/// "read→mmap ×12, close→read ×3". For alerts, so an analyst reads calls, not bucket numbers.
/// </summary>
public static class SyscallFeatureDetail
{
    /// <summary>For f_ng2_NNN and f_ng3_NNN, the window's n-grams in that bucket, most frequent first; else null.</summary>
    public static string? Describe(string feature, ReadOnlySpan<ushort> sequence, int most = 3)
    {
        ArgumentNullException.ThrowIfNull(feature);
        int n;
        if (feature.StartsWith("f_ng2_", StringComparison.Ordinal)) n = 2;
        else if (feature.StartsWith("f_ng3_", StringComparison.Ordinal)) n = 3;
        else return null;
        if (!int.TryParse(feature.AsSpan(6), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var bucket)) return null;
        var counts = new Dictionary<(int, int, int), int>();
        for (var i = n - 1; i < sequence.Length; i++)
        {
            // The keys SyscallFamily hashes (numbers above 1023 count as 1023 there and in seq).
            var k2 = (uint)(sequence[i - 1] << 10 | sequence[i]);
            if (n == 2)
            {
                if (SyscallFamily.Bucket2(k2) == bucket) Count(counts, (sequence[i - 1], sequence[i], -1));
            }
            else if (SyscallFamily.Bucket3((uint)(sequence[i - 2] << 20) | k2) == bucket) Count(counts, (sequence[i - 2], sequence[i - 1], sequence[i]));
        }
        if (counts.Count == 0) return null;
        return string.Join(", ", counts.OrderByDescending(c => c.Value).ThenBy(c => c.Key).Take(most).Select(c =>
            string.Join("→", new[] { c.Key.Item1, c.Key.Item2, c.Key.Item3 }.Where(x => x >= 0).Select(Name)) + $" ×{c.Value}"));
    }

    /// <summary>The same for row <paramref name="row"/> of a feature batch (null when it has no `seq` column).</summary>
    public static string? Describe(RecordBatch batch, int row, string feature)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var index = batch.Schema.GetFieldIndex(FeatureSchema.SequenceColumn);
        if (index < 0 || batch.Column(index) is not BinaryArray seq || row < 0 || row >= seq.Length || seq.IsNull(row)) return null;
        return Describe(feature, MemoryMarshal.Cast<byte, ushort>(seq.GetBytes(row)));
    }

    // 1023 stands for every number from 1023 up (and -1, a return from a signal handler, as the sensor sees it).
    private static string Name(int nr) => nr == 1023 ? "other" : SyscallTable.NameOf(nr);

    private static void Count(Dictionary<(int, int, int), int> counts, (int, int, int) key) =>
        CollectionsMarshal.GetValueRefOrAddDefault(counts, key, out _)++;
}
