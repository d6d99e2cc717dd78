namespace Detect.Pipeline.Replay;

/// <summary>What a replay did: labelled units read and skipped, records sent, problems found.</summary>
public sealed class ReplayResult
{
    public required string Dataset { get; init; }
    public int Files { get; set; }
    /// <summary>Labelled units replayed (ADFA-LD traces, CIC-IDS2017 rows).</summary>
    public long Units { get; set; }
    /// <summary>Units refused (malformed row, bad or empty trace, unreadable file), each reported with file and line or offset.</summary>
    public long Skipped { get; set; }
    public long Records { get; set; }
    public Dictionary<string, long> UnitsByLabel { get; } = new(StringComparer.Ordinal);
    public List<string> Problems { get; } = [];

    internal void Problem(string text, Action<string>? report)
    {
        Skipped++;
        if (Problems.Count < 1000) Problems.Add(text);
        report?.Invoke(text);
    }

    internal void Count(string label)
    {
        Units++;
        UnitsByLabel[label] = UnitsByLabel.GetValueOrDefault(label) + 1;
    }
}
