using Detect.Models.Features;

namespace Detect.Models.Detectors;

/// <summary>
/// An unsupervised detector: fitted on normal windows only, it gives every window a raw score,
/// higher = more anomalous. Raw scores of different detectors are not comparable; the model's
/// Calibrator maps them onto one scale. Inputs are row-major (n rows of FeatureCount values),
/// already transformed by the model's FeatureTransform.
/// </summary>
public interface IAnomalyDetector
{
    /// <summary>Stable name written into manifests: pca, iforest, robustz, knn, ewma, cover.</summary>
    string Kind { get; }

    int FeatureCount { get; }

    /// <summary>Scores n rows. Entities (one key per row, or empty) matter only to stateful detectors (ewma).</summary>
    void Score(ReadOnlySpan<float> rows, int n, Span<float> scores, ReadOnlySpan<string?> entities);

    /// <summary>Writes the fitted parameters (read back by Detectors.Load).</summary>
    void Save(ModelWriter writer);
}

/// <summary>Detectors that keep state per entity (EWMA over successive windows): a fresh copy starts with no history.</summary>
public interface IStatefulDetector : IAnomalyDetector
{
    void ResetState();
    int TrackedEntities { get; }
}

/// <summary>Options for fitting any detector; each kind reads the ones it uses.</summary>
public sealed record DetectorOptions
{
    public int Seed { get; init; } = 42;
    /// <summary>pca: principal components kept (capped below the feature count).</summary>
    public int PcaRank { get; init; } = 10;
    /// <summary>iforest: trees and the sub-sample each tree is grown on (Liu et al.: 100 and 256).</summary>
    public int Trees { get; init; } = 100;
    public int SampleSize { get; init; } = 256;
    /// <summary>knn: neighbours averaged, and at most this many distinct reference windows kept.</summary>
    public int K { get; init; } = 1;
    public int MaxReference { get; init; } = 20_000;
    /// <summary>robustz and ewma: mean of the largest |z| over this many features.</summary>
    public int TopFeatures { get; init; } = 3;
    /// <summary>ewma: smoothing factor per window, and windows of history before an entity's own baseline counts.</summary>
    public double Alpha { get; init; } = 0.2;
    public int Warmup { get; init; } = 3;
    /// <summary>ewma: entities remembered at most (bounded memory); the least recently seen go first.</summary>
    public int MaxEntities { get; init; } = 100_000;
    /// <summary>cover: calls of distinct normal sequences kept at most (about 26 bytes each once built).</summary>
    public long MaxSequenceCorpus { get; init; } = 2_000_000;
}

/// <summary>The detector kinds, their fitting and their loading.</summary>
public static class Detectors
{
    public static readonly IReadOnlyList<string> Kinds = ["knn", "iforest", "pca", "robustz", "ewma", "cover"];

    /// <summary>Detectors that read the `seq` column (syscall/2) rather than, or beside, the features.</summary>
    public static bool ReadsSequences(string kind) => kind == "cover";

    public static IAnomalyDetector Fit(string kind, ReadOnlySpan<float> rows, int n, int d, DetectorOptions options, ReadOnlySpan<string?> entities = default,
        SequenceColumn? sequences = null) => kind switch
    {
        "cover" => CoveringDetector.Fit(sequences ?? throw new FeatureSchemaMismatchException(
            "the 'cover' detector reads the windows' call sequences (the `seq` column of syscall/2), and these windows have none: train it on syscall/2 archives"), d, options),
        "pca" => RandomizedPcaDetector.Fit(rows, n, d, options),
        "iforest" => IsolationForest.Fit(rows, n, d, options),
        "robustz" => RobustZDetector.Fit(rows, n, d, options),
        "knn" => KnnDetector.Fit(rows, n, d, options),
        "ewma" => EwmaDetector.Fit(rows, n, d, options),
        _ => throw new ArgumentException($"unknown detector '{kind}'; known: {string.Join(", ", Kinds)}", nameof(kind)),
    };

    public static IAnomalyDetector Load(string kind, ModelReader reader) => kind switch
    {
        "pca" => RandomizedPcaDetector.Load(reader),
        "iforest" => IsolationForest.Load(reader),
        "robustz" => RobustZDetector.Load(reader),
        "knn" => KnnDetector.Load(reader),
        "ewma" => EwmaDetector.Load(reader),
        "cover" => CoveringDetector.Load(reader),
        _ => throw new InvalidDataException($"model names an unknown detector '{kind}'; this build knows {string.Join(", ", Kinds)}"),
    };
}
