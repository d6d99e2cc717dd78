namespace Detect.Models.Features;

/// <summary>
/// The feature-batch contract (notes/CONTRACTS.md) as seen from the models side: metadata keys,
/// key and label columns, and the `f_` prefix that marks a feature column.
/// </summary>
public static class FeatureColumns
{
    public const string FamilyKey = "detect.family";
    public const string SchemaKey = "detect.feature_schema";
    public const string FeaturePrefix = "f_";

    public const string Host = "host";
    public const string Entity = "entity";
    public const string WindowStart = "window_start_ns";
    public const string WindowEnd = "window_end_ns";
    public const string RecordCount = "record_count";
    public const string Label = "label";
    public const string SampleId = "sample_id";

    /// <summary>The families the pipeline emits.</summary>
    public static readonly IReadOnlyList<string> Families = ["syscall", "flow", "host"];

    public static bool IsFeature(string columnName) => columnName.StartsWith(FeaturePrefix, StringComparison.Ordinal);

    /// <summary>Labels that mean "normal" in the labelled replays (ADFA-LD `normal`, CIC-IDS2017 `BENIGN`); null (live data) counts as normal too.</summary>
    public static bool IsNormalLabel(string? label) =>
        label == null || label.Equals("normal", StringComparison.OrdinalIgnoreCase) || label.Equals("BENIGN", StringComparison.OrdinalIgnoreCase);
}

/// <summary>A batch whose feature schema differs from the model's: scoring it would read the wrong columns.</summary>
public sealed class FeatureSchemaMismatchException(string message) : InvalidOperationException(message);
