using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Detect.Models.Features;

namespace Detect.Models.Detectors;

/// <summary>
/// A detector that reads each window's call sequence (the `seq` column), not only its float
/// features. Sequence detectors are scored with both; a detector whose <see cref="ReadsFeatures"/>
/// is false lets the scorer skip the feature transform.
/// </summary>
public interface ISequenceDetector : IAnomalyDetector
{
    bool ReadsFeatures { get; }

    /// <summary>Scores n windows from their (transformed) feature rows and their call sequences.</summary>
    void Score(ReadOnlySpan<float> rows, int n, SequenceColumn sequences, Span<float> scores, ReadOnlySpan<string?> entities);

    /// <summary>A few words on why a sequence scored as it did (for explanations), or null.</summary>
    string? Describe(ReadOnlySpan<ushort> sequence);
}

/// <summary>
/// Sequence covering (Marteau, "Sequence Covering for Efficient Host-Based Intrusion Detection",
/// IEEE TIFS 2019): a window's call sequence is covered from the left by the longest pieces that
/// occur, contiguously, in some normal training sequence (a suffix automaton over the normal
/// corpus finds each piece in one pass). Normal behaviour re-uses long stretches of what normal
/// processes did; code paths never seen in training break the sequence into many short pieces.
/// Raw score: (pieces - 1) / (calls - 1), 0 for a sequence made of one normal stretch, 1 when every
/// call starts a new piece; a window of one call scores 0 when that call is known, else 1; an
/// empty sequence (no ordered calls) scores 0. Cost: one automaton step per call, no allocation.
/// </summary>
public sealed class CoveringDetector : ISequenceDetector
{
    private readonly ushort[][] _corpus;
    private readonly SuffixAutomaton _automaton;

    private CoveringDetector(int featureCount, ushort[][] corpus)
    {
        FeatureCount = featureCount;
        _corpus = corpus;
        _automaton = SuffixAutomaton.Build(corpus);
    }

    public string Kind => "cover";
    public int FeatureCount { get; }
    public bool ReadsFeatures => false;
    public SuffixAutomaton Automaton => _automaton;
    /// <summary>Distinct normal sequences kept (the corpus the automaton was built from).</summary>
    public int CorpusSequences => _corpus.Length;

    /// <summary>
    /// Fits on normal windows' sequences: distinct sequences only (repeats add no substring), at
    /// most <see cref="DetectorOptions.MaxSequenceCorpus"/> calls (a seeded sample of whole
    /// sequences beyond that, so memory stays bounded: about 26 bytes per corpus call).
    /// </summary>
    public static CoveringDetector Fit(SequenceColumn sequences, int featureCount, DetectorOptions options)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var distinct = new List<ushort[]>();
        for (var r = 0; r < sequences.Count; r++)
        {
            var s = sequences[r];
            if (s.Length == 0) continue;
            if (seen.Add(Key(s))) distinct.Add(s.ToArray());
        }
        if (distinct.Count == 0)
            throw new ArgumentException("cover needs normal windows with call sequences (the `seq` column of syscall/2); the training windows have none");
        if (distinct.Sum(s => (long)s.Length) > options.MaxSequenceCorpus)
        {
            var rng = new Random(options.Seed);
            var shuffled = distinct.OrderBy(_ => rng.Next()).ToList();
            distinct = [];
            long calls = 0;
            foreach (var s in shuffled)
            {
                if (calls + s.Length > options.MaxSequenceCorpus) continue;
                distinct.Add(s);
                calls += s.Length;
            }
        }
        return new CoveringDetector(featureCount, [.. distinct]);
    }

    private static string Key(ReadOnlySpan<ushort> s) => Convert.ToBase64String(MemoryMarshal.AsBytes(s));

    /// <summary>The covering score of one sequence (see the class summary).</summary>
    public float ScoreOne(ReadOnlySpan<ushort> sequence)
    {
        if (sequence.Length == 0) return 0f;
        var pieces = _automaton.Cover(sequence, out var unknown);
        if (sequence.Length == 1) return unknown > 0 ? 1f : 0f;
        return (pieces - 1) / (float)(sequence.Length - 1);
    }

    public void Score(ReadOnlySpan<float> rows, int n, SequenceColumn sequences, Span<float> scores, ReadOnlySpan<string?> entities)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (sequences.Count < n) throw new ArgumentException($"{sequences.Count} sequences for {n} windows", nameof(sequences));
        for (var r = 0; r < n; r++) scores[r] = ScoreOne(sequences[r]);
    }

    public void Score(ReadOnlySpan<float> rows, int n, Span<float> scores, ReadOnlySpan<string?> entities) =>
        throw new FeatureSchemaMismatchException($"the '{Kind}' detector reads the windows' call sequences (the `{SequenceColumn.Column}` column of syscall/2); these windows have none");

    /// <summary>
    /// "seq: 12 normal pieces cover its 140 calls (2 calls never seen); shortest pieces at calls 17 (3 5 | 91), 40 (…), 41 (…)":
    /// the pieces shown are the shortest (where the sequence keeps leaving normal behaviour), in call order,
    /// each with the two calls before it.
    /// </summary>
    public string? Describe(ReadOnlySpan<ushort> sequence)
    {
        if (sequence.Length == 0) return null;
        Span<int> starts = stackalloc int[256];
        var pieces = _automaton.Cover(sequence, out var unknown, starts);
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(inv, $"seq: {pieces} normal piece{(pieces == 1 ? "" : "s")} cover its {sequence.Length} calls");
        if (unknown > 0) sb.Append(inv, $" ({unknown} call{(unknown == 1 ? "" : "s")} never seen)");
        if (pieces <= 1) return sb.ToString();
        var known = Math.Min(pieces, starts.Length);
        var lengths = new int[known]; // of each piece; every piece after the first starts at a break
        for (var p = 0; p < known; p++) lengths[p] = (p + 1 < known ? starts[p + 1] : sequence.Length) - starts[p];
        var shown = Enumerable.Range(1, known - 1).OrderBy(p => lengths[p]).ThenBy(p => p).Take(3).Order().ToArray();
        sb.Append("; shortest pieces at call");
        for (var i = 0; i < shown.Length; i++)
        {
            var at = starts[shown[i]];
            var from = Math.Max(0, at - 2);
            var to = Math.Min(sequence.Length, at + Math.Min(lengths[shown[i]], 3));
            sb.Append(inv, $"{(i == 0 ? " " : ", ")}{at} (");
            for (var k = from; k < to; k++)
            {
                if (k == at) sb.Append("| ");
                sb.Append(inv, $"{sequence[k]}{(k + 1 < to ? " " : "")}");
            }
            sb.Append(')');
        }
        return sb.ToString();
    }

    public void Save(ModelWriter writer)
    {
        // The corpus, not the automaton: smaller, independent of the automaton's layout, rebuilt in linear time on load.
        var w = writer.Entry("detector.bin");
        w.Write(FeatureCount);
        w.Write(_corpus.Length);
        foreach (var s in _corpus)
        {
            w.Write(s.Length);
            w.Write(MemoryMarshal.AsBytes(s.AsSpan()));
        }
    }

    public static CoveringDetector Load(ModelReader reader)
    {
        var r = reader.Entry("detector.bin");
        var d = r.ReadInt32();
        var count = r.ReadInt32();
        var corpus = new ushort[count][];
        for (var i = 0; i < count; i++)
        {
            var s = new ushort[r.ReadInt32()];
            r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(s.AsSpan()));
            corpus[i] = s;
        }
        return new CoveringDetector(d, corpus);
    }
}
