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
    /// <summary>Share of the normal samples held out for calibration (whole samples/entities, never split), when CalibrationFolds is below 2.</summary>
    public double CalibrationFraction { get; init; } = 0.25;
    /// <summary>
    /// Cross-fitted calibration over this many folds of whole samples (2 or more): the model is fitted on
    /// every normal window and its threshold set on out-of-fold scores (more data for the model, a
    /// threshold that errs towards fewer alerts). Below 2 (default): a held-out share (CalibrationFraction),
    /// whose threshold is exact for the model kept.
    /// </summary>
    public int CalibrationFolds { get; init; }
    public string Source { get; init; } = "";
    public string Name { get; init; } = "";
}

/// <summary>
/// Fits a model on normal windows only and sets its threshold at the target false-positive rate on
/// scores of normal windows the scoring model never saw: by default a held-out share of whole
/// samples (trace, flow, entity); optionally cross-fitted (K folds, each scored by a model fitted
/// without it; the model kept is fitted on all).
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
        if (options.CalibrationFolds >= 2) return TrainCrossFitted(normal, options);
        var (fitRows, calibrationRows) = SplitBySample(normal, options.CalibrationFraction, options.DetectorOptions.Seed);
        if (fitRows.Count < 2 || calibrationRows.Count < 10)
            throw new ArgumentException($"too little normal data: {fitRows.Count} windows to fit and {calibrationRows.Count} to calibrate (need 2 and 10)");
        var fit = normal.Select(fitRows);
        var calibration = normal.Select(calibrationRows);
        var model = Fit(normal, fit, options, fit.Rows, calibration.Rows, "held out");
        var raw = ScoreFresh(model, calibration);
        return model.WithManifest(model.Manifest with { Calibration = Calibrator.Fit(raw, options.TargetFpr) });
    }

    /// <summary>
    /// Cross-fitted calibration: the normal samples are dealt into K folds; K models, each fitted
    /// without one fold, score that fold, so every normal window gets the score of a model that never
    /// saw it (out-of-fold). The model kept is fitted on every normal window and its threshold is the
    /// 1 - FPR quantile of those out-of-fold scores: no window is wasted on calibration alone, and since
    /// each fold model knew less than the final one, the threshold errs on the side of fewer alerts.
    /// </summary>
    private static DetectorModel TrainCrossFitted(FeatureMatrix normal, TrainOptions options)
    {
        var k = options.CalibrationFolds;
        var folds = FoldsBySample(normal, k, options.DetectorOptions.Seed);
        if (folds.Any(f => f.Count == 0) || normal.Rows < 10)
            throw new ArgumentException($"too little normal data: {normal.Rows} windows in {folds.Count(f => f.Count > 0)} non-empty of {k} folds (need 10 windows and a sample in every fold)");
        var outOfFold = new float[normal.Rows];
        var all = Enumerable.Range(0, normal.Rows).ToList();
        foreach (var fold in folds)
        {
            var held = new HashSet<int>(fold);
            var fit = normal.Select(all.Where(r => !held.Contains(r)).ToList());
            if (fit.Rows < 2) throw new ArgumentException($"too little normal data: a fold leaves {fit.Rows} windows to fit");
            var foldModel = Fit(normal, fit, options, fit.Rows, 0, "");
            var raw = ScoreFresh(foldModel, normal.Select(fold));
            for (var i = 0; i < fold.Count; i++) outOfFold[fold[i]] = raw[i];
        }
        var model = Fit(normal, normal, options, normal.Rows, normal.Rows, $"out of fold ({k} folds)");
        return model.WithManifest(model.Manifest with { Calibration = Calibrator.Fit(outOfFold, options.TargetFpr) });
    }

    /// <summary>Scores with a fresh history (stateful detectors start clean, and are left clean).</summary>
    private static float[] ScoreFresh(DetectorModel model, FeatureMatrix m)
    {
        if (model.Detector is IStatefulDetector stateful) stateful.ResetState();
        var (raw, _) = model.Score(m);
        if (model.Detector is IStatefulDetector s2) s2.ResetState();
        return raw;
    }

    /// <summary>Transform, detector and normal ranges fitted on <paramref name="fit"/>, with a provisional calibrator.</summary>
    private static DetectorModel Fit(FeatureMatrix normal, FeatureMatrix fit, TrainOptions options, int fitWindows, int calibrationWindows, string calibrationKind)
    {
        var d = normal.Columns;
        var rowsForFit = fit.Values;
        if (options.NormaliseRows)
        {
            rowsForFit = new float[fit.Values.Length];
            for (var r = 0; r < fit.Rows; r++) RowNormaliser.Normalise(fit.Row(r), rowsForFit.AsSpan(r * d, d));
        }
        var transformOptions = options.Transform with { Clip = options.Transform.Clip ?? TransformOptions.DefaultClip(options.Detector) };
        var transform = FeatureTransform.Fit(rowsForFit, fit.Rows, d, transformOptions);
        var prepared = new float[rowsForFit.Length];
        transform.Apply(rowsForFit, fit.Rows, prepared);
        var detector = Detectors.Detectors.Fit(options.Detector, prepared, fit.Rows, d, options.DetectorOptions, fit.Entities, fit.Sequences);
        var baseline = FeatureBaseline.Fit(normal.FeatureNames, fit.Values, fit.Rows, d);

        var o = options.DetectorOptions;
        var settings = new DetectorSettings
        {
            Seed = o.Seed, PcaRank = o.PcaRank, Trees = o.Trees, SampleSize = o.SampleSize, K = o.K, TopFeatures = o.TopFeatures, Alpha = o.Alpha,
            Log = options.Transform.Log, Standardise = options.Transform.Standardise, NormaliseRows = options.NormaliseRows,
            Clip = transform.Clip, CalibrationFolds = Math.Max(0, options.CalibrationFolds),
        };
        var starts = normal.WindowStarts.Where(t => t > 0).DefaultIfEmpty().ToArray();
        var training = new TrainingData
        {
            Source = options.Source,
            FromUtc = starts.Length > 0 && starts.Max() > 0 ? FromUnixNs(starts.Min()) : null,
            ToUtc = starts.Length > 0 && starts.Max() > 0 ? FromUnixNs(starts.Max()) : null,
            FitWindows = fitWindows,
            CalibrationWindows = calibrationWindows,
            Calibration = calibrationKind,
            Samples = normal.SampleIds.Concat(normal.Entities).Distinct().Count(),
        };
        // A provisional calibrator lets the model score the calibration windows; the real one replaces it.
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
        return new DetectorModel(manifest, transform, detector, baseline);
    }

    /// <summary>The rows of each sample (sample_id, else entity, else the row itself), and the samples in a seeded order.</summary>
    private static (Dictionary<string, List<int>> Groups, List<string> Keys) SamplesInSeededOrder(FeatureMatrix m, int seed)
    {
        var groups = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (var r = 0; r < m.Rows; r++)
        {
            var key = m.SampleIds[r] ?? m.Entities[r] ?? ("#" + r);
            if (!groups.TryGetValue(key, out var list)) groups[key] = list = [];
            list.Add(r);
        }
        var rng = new Random(seed);
        return (groups, groups.Keys.Order(StringComparer.Ordinal).OrderBy(_ => rng.Next()).ToList());
    }

    /// <summary>Whole samples (as <see cref="SplitBySample"/> groups them) dealt into k folds, in a seeded order.</summary>
    public static List<List<int>> FoldsBySample(FeatureMatrix m, int k, int seed)
    {
        var (groups, keys) = SamplesInSeededOrder(m, seed);
        var folds = Enumerable.Range(0, k).Select(_ => new List<int>()).ToList();
        for (var i = 0; i < keys.Count; i++) folds[i % k].AddRange(groups[keys[i]]);
        foreach (var f in folds) f.Sort();
        return folds;
    }

    /// <summary>
    /// Deterministic split of whole samples (sample_id, else entity, else the row itself): windows
    /// of one trace or flow stay together, so calibration never sees a sample the detector fitted.
    /// </summary>
    public static (List<int> Fit, List<int> Calibration) SplitBySample(FeatureMatrix m, double calibrationFraction, int seed)
    {
        var (groups, keys) = SamplesInSeededOrder(m, seed);
        var calibrationGroups = (int)Math.Round(keys.Count * calibrationFraction);
        var calibration = keys.Take(calibrationGroups).SelectMany(k => groups[k]).Order().ToList();
        var fit = keys.Skip(calibrationGroups).SelectMany(k => groups[k]).Order().ToList();
        return (fit, calibration);
    }

    private static DateTime FromUnixNs(long ns) => DateTime.UnixEpoch.AddTicks(ns / 100);
}
