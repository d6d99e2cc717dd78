using Detect.Models.Features;

namespace Detect.Models.Tests;

/// <summary>
/// A deterministic set of call sequences: six "programs", each a sparse Markov chain over 80 call
/// numbers (every call has two or three likely successors), produce the normal windows; an attack
/// window is a normal one with a stretch of calls in an order no program follows spliced into its
/// middle (a new code path), mostly made of calls the programs also make. Two float features ride
/// along (length, distinct calls) so the windows are complete syscall/2 rows. Same seed, same data.
/// </summary>
public static class SyntheticSequences
{
    public const string Schema = "syscall/2";
    public static readonly string[] Names = ["f_calls", "f_distinct_syscalls"];
    private const int Calls = 80, Programs = 6;

    public static FeatureMatrix Windows(int normal, int attacks, int seed, int minLength = 60, int maxLength = 400)
    {
        var programs = Chains(seed: 1000); // the same programs for every seed: train and test share them
        var rng = new Random(seed);
        var rows = normal + attacks;
        var sequences = new ushort[rows][];
        var values = new float[rows * Names.Length];
        var labels = new string?[rows];
        var samples = new string?[rows];
        var entities = new string?[rows];
        var starts = new long[rows];
        for (var r = 0; r < rows; r++)
        {
            var program = programs[rng.Next(Programs)];
            var length = rng.Next(minLength, maxLength);
            var s = Walk(program, length, rng);
            var isAttack = r >= normal;
            if (isAttack)
            {
                // 6-14 calls in a random order, spliced in the middle.
                var inject = Enumerable.Range(0, rng.Next(6, 15)).Select(_ => (ushort)rng.Next(Calls + (rng.NextDouble() < 0.1 ? 20 : 0))).ToArray();
                var at = rng.Next(length / 4, 3 * length / 4);
                s = [.. s[..at], .. inject, .. s[at..]];
            }
            sequences[r] = s;
            values[r * 2] = s.Length;
            values[r * 2 + 1] = s.Distinct().Count();
            labels[r] = isAttack ? "Splice" : "normal";
            samples[r] = $"trace-{seed}-{r}";
            entities[r] = $"{1000 + r}@1";
            starts[r] = 1_700_000_000_000_000_000 + r * 10_000_000_000L;
        }
        return new FeatureMatrix("syscall", Schema, Names, values, rows, entities, labels, samples, starts, null, SequenceColumn.FromRows(sequences));
    }

    private static int[][][] Chains(int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, Programs).Select(_ =>
            Enumerable.Range(0, Calls).Select(_ => Enumerable.Range(0, rng.Next(2, 4)).Select(_ => rng.Next(Calls)).ToArray()).ToArray()).ToArray();
    }

    private static ushort[] Walk(int[][] chain, int length, Random rng)
    {
        var s = new ushort[length];
        var c = rng.Next(Calls);
        for (var i = 0; i < length; i++)
        {
            s[i] = (ushort)c;
            var next = chain[c];
            c = next[rng.Next(next.Length)];
        }
        return s;
    }
}
