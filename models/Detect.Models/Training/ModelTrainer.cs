using Detect.Models.Calibration;
using Detect.Models.Detectors;
using Detect.Models.Features;
using Detect.Models.Scoring;

namespace Detect.Models.Training;

public sealed record TrainOptions
{
    /// <summary>kNN: the best of the detectors on both prototypes (ADFA-LD frequencies, CIC-IDS2017 flows).</summary>
    public string Detector { get; init; } = "knn";
    public DetectorOptions DetectorOptions { get; init; } = new();
    public TransformOptions Transform { get; init; } = new();
    /// <summary>Divide each row by its sum before the transform (feature columns that are counts of one kind, e.g. syscall frequencies).</summary>
    public bool NormaliseRows { get; init; }
    /// <summary>Target false-positive rate on held-out normal windows: sets the threshold (score 1.0).</summary>
    public double TargetFpr { get; init; } = 0.01;
    /// <summary>Share of the normal samples held out for calibration (whole samples/entities, never split).</summary>
    public double CalibrationFraction { get; init; } = 0.25;
    public string Source { get; init; } = "";
    public string Name { get; init; } = "";
}

/// <summary>
/// Fits a model on normal windows only: splits them by sample (trace, flow, entity) into a fit
/// part and a held-out calibration part, learns transform, detector and normal ranges on the fit
/// part, and sets the threshold on the held-out part at the target false-positive rate.
/// </summary>
public static class ModelTrainer
{
    public static DetectorModel Train(FeatureMatrix normal, TrainOptions options)
    {
        ArgumentNullException.ThrowIfNull(normal);
        ArgumentNullException.ThrowIfNull(options);
        var attacks = Enumerable.Range(0, normal.Rows).Count(r => !FeatureColumns.IsNormalLabel(normal.Labels[r]));
        if (attacks > 0)
            throw new ArgumentException($"training data holds {attacks} windows labelled as attacks; models train on normal windows only (use FeatureMatrix.NormalRows())");
        var (fitRows, calibrationRows) = SplitBySample(normal, options.CalibrationFraction, options.DetectorOptions.Seed);
        if (fitRows.Count < 2 || calibrationRows.Count < 10)
            throw new ArgumentException($"too little normal data: {fitRows.Count} windows to fit and {calibrationRows.Count} to calibrate (need 2 and 10)");
        var fit = normal.Select(fitRows);
        var calibration = normal.Select(calibrationRows);
        var d = normal.Columns;

        var rowsForFit = fit.Values;
        if (options.NormaliseRows)
        {
            rowsForFit = new float[fit.Values.Length];
            for (var r = 0; r < fit.Rows; r++) RowNormaliser.Normalise(fit.Row(r), rowsForFit.AsSpan(r * d, d));
        }
        var transform = FeatureTransform.Fit(rowsForFit, fit.Rows, d, options.Transform);
        var prepared = new float[rowsForFit.Length];
        transform.Apply(rowsForFit, fit.Rows, prepared);
        var detector = Detectors.Detectors.Fit(options.Detector, prepared, fit.Rows, d, options.DetectorOptions, fit.Entities);
        var baseline = FeatureBaseline.Fit(normal.FeatureNames, fit.Values, fit.Rows, d);

        var o = options.DetectorOptions;
        var settings = new DetectorSettings
        {
            Seed = o.Seed, PcaRank = o.PcaRank, Trees = o.Trees, SampleSize = o.SampleSize, K = o.K, TopFeatures = o.TopFeatures, Alpha = o.Alpha,
            Log = options.Transform.Log, Standardise = options.Transform.Standardise, NormaliseRows = options.NormaliseRows,
        };
        var starts = normal.WindowStarts.Where(t => t > 0).DefaultIfEmpty().ToArray();
        var training = new TrainingData
        {
            Source = options.Source,
            FromUtc = starts.Length > 0 && starts.Max() > 0 ? FromUnixNs(starts.Min()) : null,
            ToUtc = starts.Length > 0 && starts.Max() > 0 ? FromUnixNs(starts.Max()) : null,
            FitWindows = fit.Rows,
            CalibrationWindows = calibration.Rows,
            Samples = normal.SampleIds.Concat(normal.Entities).Distinct().Count(),
        };
        // A provisional calibrator lets the model score the held-out part; the real one replaces it.
        var provisional = new Calibrator { TargetFpr = options.TargetFpr, Median = 0, Threshold = 1, Rare = 2, Max = 3, HoldoutWindows = 0 };
        var manifest = new ModelManifest
        {
            Name = options.Name,
            Family = normal.Family,
            FeatureSchema = normal.FeatureSchema,
            FeatureNames = normal.FeatureNames.ToArray(),
            Detector = detector.Kind,
            Settings = settings,
            Training = training,
            Calibration = provisional,
        };
        var model = new DetectorModel(manifest, transform, detector, baseline);
        if (detector is IStatefulDetector stateful) stateful.ResetState();
        var (raw, _) = model.Score(calibration);
        if (detector is IStatefulDetector s2) s2.ResetState();
        var calibrator = Calibrator.Fit(raw, options.TargetFpr);
        return model.WithManifest(manifest with { Calibration = calibrator });
    }

    /// <summary>
    /// Deterministic split of whole samples (sample_id, else entity, else the row itself): windows
    /// of one trace or flow stay together, so calibration never sees a sample the detector fitted.
    /// </summary>
    public static (List<int> Fit, List<int> Calibration) SplitBySample(FeatureMatrix m, double calibrationFraction, int seed)
    {
        var groups = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (var r = 0; r < m.Rows; r++)
        {
            var key = m.SampleIds[r] ?? m.Entities[r] ?? ("#" + r);
            if (!groups.TryGetValue(key, out var list)) groups[key] = list = [];
            list.Add(r);
        }
        var rng = new Random(seed);
        var keys = groups.Keys.Order(StringComparer.Ordinal).OrderBy(_ => rng.Next()).ToList();
        var calibrationGroups = (int)Math.Round(keys.Count * calibrationFraction);
        var calibration = keys.Take(calibrationGroups).SelectMany(k => groups[k]).Order().ToList();
        var fit = keys.Skip(calibrationGroups).SelectMany(k => groups[k]).Order().ToList();
        return (fit, calibration);
    }

    private static DateTime FromUnixNs(long ns) => DateTime.UnixEpoch.AddTicks(ns / 100);
}
