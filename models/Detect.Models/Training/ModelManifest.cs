using System.Text.Json;
using System.Text.Json.Serialization;
using Detect.Models.Calibration;

namespace Detect.Models.Training;

/// <summary>manifest.json of a model version: everything needed to judge and load it without opening model.zip.</summary>
public sealed record ModelManifest
{
    public int FormatVersion { get; init; } = 1;
    public string Name { get; init; } = "";
    public string Version { get; init; } = "";
    public required string Family { get; init; }
    /// <summary>The `detect.feature_schema` string of the batches this model reads, e.g. syscall/1.</summary>
    public required string FeatureSchema { get; init; }
    public required IReadOnlyList<string> FeatureNames { get; init; }
    public required string Detector { get; init; }
    public required DetectorSettings Settings { get; init; }
    public required TrainingData Training { get; init; }
    public required Calibrator Calibration { get; init; }
    /// <summary>Evaluation figures (auc, tpr_at_1pct_fpr, ...) added by `detect eval` or a notebook.</summary>
    public Dictionary<string, double> Evaluation { get; init; } = [];
    public DateTime CreatedUtc { get; init; } = DateTime.UtcNow;

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, // "Infinity": no clip
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static ModelManifest FromJson(string json) =>
        JsonSerializer.Deserialize<ModelManifest>(json, Json) ?? throw new InvalidDataException("manifest.json is empty");
}

/// <summary>How the model was fitted (detector options and the feature transform).</summary>
public sealed record DetectorSettings
{
    public int Seed { get; init; }
    public int PcaRank { get; init; }
    public int Trees { get; init; }
    public int SampleSize { get; init; }
    public int K { get; init; }
    public int TopFeatures { get; init; }
    public double Alpha { get; init; }
    public LogMode Log { get; init; }
    public bool Standardise { get; init; }
    public bool NormaliseRows { get; init; }
    /// <summary>Standardised features clipped to [-Clip, Clip] (infinity: no clip).</summary>
    public float Clip { get; init; } = float.PositiveInfinity;
    /// <summary>Folds of the cross-fitted calibration (0: a held-out share).</summary>
    public int CalibrationFolds { get; init; }
}

/// <summary>What the model learnt from: where, which time range, how many windows.</summary>
public sealed record TrainingData
{
    public string Source { get; init; } = "";
    public DateTime? FromUtc { get; init; }
    public DateTime? ToUtc { get; init; }
    public int FitWindows { get; init; }
    public int CalibrationWindows { get; init; }
    /// <summary>How the calibration windows were scored: "held out" or "out of fold (K folds)".</summary>
    public string Calibration { get; init; } = "held out";
    public int Samples { get; init; }
}
