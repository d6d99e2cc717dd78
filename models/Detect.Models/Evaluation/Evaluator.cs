using Detect.Models.Features;
using Detect.Models.Registry;
using Detect.Models.Training;

namespace Detect.Models.Evaluation;

public sealed record EvaluationResult(DetectorModel Model, EvaluationReport Report, string? ReportPath, string? Version);

/// <summary>
/// Train on normal windows, score labelled test windows, report per sample. The one evaluation
/// path for `detect eval`, tests and notebooks: the model never sees a test row while training or
/// calibrating, and the threshold (score 1.0) comes from held-out training normals only.
/// </summary>
public static class Evaluator
{
    public static EvaluationResult Run(FeatureMatrix train, FeatureMatrix test, TrainOptions options, string title,
        string? reportFolder = null, string? registryRoot = null, IEnumerable<string>? notes = null)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(test);
        var normal = train.NormalRows();
        if (normal.Rows < train.Rows)
            throw new ArgumentException($"the training set holds {train.Rows - normal.Rows} attack windows; train on normal data only");
        var model = ModelTrainer.Train(normal, options);
        var (_, scores) = model.Score(test);
        var samples = EvaluationReport.MaxBySample(test.SampleIds, test.Labels, scores);
        var report = EvaluationReport.Create(title, samples);
        report.Notes.Add($"Model: `{model.Manifest.Detector}` on feature schema `{model.FeatureSchema}` ({model.FeatureNames.Count} features), " +
                         $"trained on {model.Manifest.Training.FitWindows} normal windows, threshold set on {model.Manifest.Training.CalibrationWindows} normal windows scored {model.Manifest.Training.Calibration} " +
                         $"at {options.TargetFpr:P1} FPR per window.");
        report.Notes.Add($"Scores are per sample (sample_id): each of the {samples.Count} samples takes the highest score among its windows ({test.Rows} test windows in all).");
        if (notes != null) report.Notes.AddRange(notes);
        string? version = null;
        if (registryRoot != null)
        {
            var registry = new ModelRegistry(registryRoot);
            version = registry.Save(model);
            registry.RecordEvaluation(version, report.Figures());
            registry.Promote(version);
            report.Extra["model"] = $"{registry.Root}/{version}";
        }
        var path = reportFolder != null ? report.Write(reportFolder) : null;
        return new EvaluationResult(model, report, path, version);
    }
}
