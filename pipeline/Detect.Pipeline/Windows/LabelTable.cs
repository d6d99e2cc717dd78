using System.Runtime.CompilerServices;
using System.Text;

namespace Detect.Pipeline.Windows;

/// <summary>Interns record sources: each distinct host and each labelled source gets a small number
/// once, so records carry ints and feature rows look the text up only when a window closes.</summary>
internal sealed class LabelTable
{
    private readonly Dictionary<string, int> _hostIds = new(StringComparer.Ordinal);
    private readonly List<byte[]> _hostUtf8 = [];
    private readonly ConditionalWeakTable<RecordSource, Box> _labelIds = new();
    private readonly List<(byte[]? Label, byte[]? Sample, bool Normal)> _labels = [(null, null, true)];

    private sealed class Box(int value)
    {
        public readonly int Value = value;
    }

    /// <summary>Label id 0 means unlabelled (live data).</summary>
    public int LabelId(RecordSource source)
    {
        if (source.Label == null && source.SampleId == null) return 0;
        if (_labelIds.TryGetValue(source, out var box)) return box.Value;
        var id = _labels.Count;
        _labels.Add((source.Label is { } l ? Encoding.UTF8.GetBytes(l) : null,
            source.SampleId is { } s ? Encoding.UTF8.GetBytes(s) : null,
            IsNormalName(source.Label)));
        _labelIds.Add(source, new Box(id));
        return id;
    }

    public int HostId(string host)
    {
        if (_hostIds.TryGetValue(host, out var id)) return id;
        id = _hostUtf8.Count;
        _hostIds.Add(host, id);
        _hostUtf8.Add(Encoding.UTF8.GetBytes(host));
        return id;
    }

    public ReadOnlySpan<byte> HostUtf8(int id) => _hostUtf8[id];
    public byte[]? LabelUtf8(int id) => _labels[id].Label;
    public byte[]? SampleUtf8(int id) => _labels[id].Sample;
    public bool IsNormal(int id) => _labels[id].Normal;

    /// <summary>Normal-class names of the data sets Detect replays (ADFA-LD `normal`, CIC-IDS2017 `BENIGN`).</summary>
    public static bool IsNormalName(string? label) =>
        label == null || label.Equals("normal", StringComparison.OrdinalIgnoreCase) || label.Equals("benign", StringComparison.OrdinalIgnoreCase);
}
