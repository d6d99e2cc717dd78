using Apache.Arrow;
using Apache.Arrow.Types;

namespace Detect.Pipeline.Arrow;

/// <summary>The feature families (CONTRACTS.md).</summary>
public enum FeatureFamily
{
    Syscall,
    Flow,
}

/// <summary>
/// The columns of one family's feature batches, in Arrow and Parquet alike: the key and label
/// columns (host, entity, window_start_ns, window_end_ns, record_count, label, sample_id), then the
/// float32 features whose names start with `f_`, then (syscall/2) the sequence columns `seq`
/// (binary: the window's calls in order, little-endian uint16 each) and `seq_dropped` (int32: calls
/// of the window left out of `seq`). Metadata `detect.family` and `detect.feature_schema`.
/// </summary>
public sealed class FeatureSchema
{
    public const string FamilyKey = "detect.family";
    public const string SchemaKey = "detect.feature_schema";

    /// <summary>The key and label columns, in order, before the features.</summary>
    public static readonly IReadOnlyList<string> KeyColumns =
        ["host", "entity", "window_start_ns", "window_end_ns", "record_count", "label", "sample_id"];

    /// <summary>The window's syscall numbers in call order, 2 bytes each (little-endian uint16).</summary>
    public const string SequenceColumn = "seq";

    /// <summary>Calls of the window that are not in `seq` (per-window cap reached, or the sequence pool was full).</summary>
    public const string SequenceDroppedColumn = "seq_dropped";

    public FeatureSchema(FeatureFamily family, int version, IReadOnlyList<string> features, bool sequence = false)
    {
        Family = family;
        Version = version;
        Features = features;
        HasSequence = sequence;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in features)
        {
            if (!f.StartsWith("f_", StringComparison.Ordinal)) throw new ArgumentException($"feature {f} does not start with f_");
            if (!names.Add(f)) throw new ArgumentException($"feature {f} appears twice");
        }
        var builder = new Schema.Builder()
            .Field(new Field("host", StringType.Default, nullable: false))
            .Field(new Field("entity", StringType.Default, nullable: false))
            .Field(new Field("window_start_ns", Int64Type.Default, nullable: false))
            .Field(new Field("window_end_ns", Int64Type.Default, nullable: false))
            .Field(new Field("record_count", Int64Type.Default, nullable: false))
            .Field(new Field("label", StringType.Default, nullable: true))
            .Field(new Field("sample_id", StringType.Default, nullable: true));
        foreach (var f in features) builder.Field(new Field(f, FloatType.Default, nullable: false));
        if (sequence)
        {
            builder.Field(new Field(SequenceColumn, BinaryType.Default, nullable: false));
            builder.Field(new Field(SequenceDroppedColumn, Int32Type.Default, nullable: false));
        }
        builder.Metadata(FamilyKey, FamilyName).Metadata(SchemaKey, SchemaString);
        Arrow = builder.Build();
    }

    public FeatureFamily Family { get; }
    public int Version { get; }
    public IReadOnlyList<string> Features { get; }
    /// <summary>Whether the batches carry `seq` and `seq_dropped` after the features.</summary>
    public bool HasSequence { get; }
    public Schema Arrow { get; }

    /// <summary>`syscall`, `flow`.</summary>
    public string FamilyName => NameOf(Family);

    /// <summary>`syscall/2`: a model refuses a batch whose string differs from the one it was trained on.</summary>
    public string SchemaString => $"{FamilyName}/{Version}";

    public static string NameOf(FeatureFamily family) => family switch
    {
        FeatureFamily.Syscall => "syscall",
        FeatureFamily.Flow => "flow",
        _ => throw new ArgumentOutOfRangeException(nameof(family)),
    };
}
