using System.Text.Json.Serialization;
using Detect.Models.Detectors;

namespace Detect.Models.Calibration;

public enum Severity { None = 0, Low = 1, Medium = 2, High = 3, Critical = 4 }

/// <summary>
/// Maps a detector's raw score onto one scale shared by every model and version, fixed by the
/// raw scores of held-out normal windows (never attack rows):
/// the normal median -> 0.5; the threshold (the 1 - target-FPR quantile) -> 1.0;
/// the 1 - FPR/10 quantile -> 1.5; the largest held-out normal score -> 2.0; beyond it the scale
/// goes on linearly, one unit per (threshold - median). So "score 1.0" always means "as unusual
/// as the rarest FPR of normal windows", whatever the detector or the version.
/// Severity: below 1 none, [1, 1.5) low, [1.5, 2) medium, [2, 3) high, from 3 critical.
/// </summary>
public sealed record Calibrator
{
    public required double TargetFpr { get; init; }
    public required float Median { get; init; }
    public required float Threshold { get; init; }
    public required float Rare { get; init; }
    public required float Max { get; init; }
    public required int HoldoutWindows { get; init; }

    /// <summary>Sets the anchors from raw scores of held-out normal windows.</summary>
    public static Calibrator Fit(ReadOnlySpan<float> normalRawScores, double targetFpr)
    {
        if (normalRawScores.Length < 10) throw new ArgumentException($"calibration needs at least 10 held-out normal windows, got {normalRawScores.Length}");
        if (targetFpr is <= 0 or >= 0.5) throw new ArgumentOutOfRangeException(nameof(targetFpr), "target false-positive rate must be in (0, 0.5)");
        var sorted = normalRawScores.ToArray();
        Array.Sort(sorted);
        var median = RobustStats.Quantile(sorted, 0.5);
        // A step that float precision can represent at this magnitude, also when every score ties.
        var eps = Math.Max((sorted[^1] - sorted[0]) * 1e-3f, Math.Max(Math.Abs(median) * 1e-4f, 1e-6f));
        // Strictly increasing anchors, even when scores tie (many identical normal windows).
        var threshold = Math.Max(RobustStats.Quantile(sorted, 1 - targetFpr), median + eps);
        var rare = Math.Max(RobustStats.Quantile(sorted, 1 - targetFpr / 10), threshold + eps);
        var max = Math.Max(sorted[^1], rare + eps);
        return new Calibrator { TargetFpr = targetFpr, Median = median, Threshold = threshold, Rare = rare, Max = max, HoldoutWindows = sorted.Length };
    }

    public float Map(float raw)
    {
        if (float.IsNaN(raw)) return 0f;
        if (raw <= Median)
            return Math.Max(0f, 0.5f - 0.5f * (Median - raw) / (Threshold - Median));
        if (raw <= Threshold) return 0.5f + 0.5f * (raw - Median) / (Threshold - Median);
        if (raw <= Rare) return 1f + 0.5f * (raw - Threshold) / (Rare - Threshold);
        if (raw <= Max) return 1.5f + 0.5f * (raw - Rare) / (Max - Rare);
        return 2f + (raw - Max) / (Threshold - Median);
    }

    public void Map(ReadOnlySpan<float> raw, Span<float> calibrated)
    {
        for (var i = 0; i < raw.Length; i++) calibrated[i] = Map(raw[i]);
    }

    public static Severity SeverityOf(float calibrated) => calibrated switch
    {
        >= 3f => Severity.Critical,
        >= 2f => Severity.High,
        >= 1.5f => Severity.Medium,
        >= 1f => Severity.Low,
        _ => Severity.None,
    };

    [JsonIgnore]
    public string Description => $"threshold {Threshold:G4} (raw) at {TargetFpr:P1} FPR on {HoldoutWindows} held-out normal windows";
}
