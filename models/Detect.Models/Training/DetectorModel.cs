using System.IO.Compression;
using Detect.Models.Calibration;
using Detect.Models.Detectors;
using Detect.Models.Features;
using Detect.Models.Scoring;

namespace Detect.Models.Training;

/// <summary>
/// A trained model: feature transform, detector, calibration and the normal ranges used for
/// explanations, with its manifest. On disk: a folder holding manifest.json and model.zip.
/// </summary>
public sealed class DetectorModel
{
    public const string ManifestFile = "manifest.json";
    public const string ModelFile = "model.zip";

    public DetectorModel(ModelManifest manifest, FeatureTransform transform, IAnomalyDetector detector, FeatureBaseline baseline)
    {
        if (transform.FeatureCount != manifest.FeatureNames.Count || detector.FeatureCount != manifest.FeatureNames.Count)
            throw new InvalidDataException($"model parts disagree on the feature count: manifest {manifest.FeatureNames.Count}, transform {transform.FeatureCount}, detector {detector.FeatureCount}");
        Manifest = manifest;
        Transform = transform;
        Detector = detector;
        Baseline = baseline;
    }

    public ModelManifest Manifest { get; private set; }
    public FeatureTransform Transform { get; }
    public IAnomalyDetector Detector { get; }
    public FeatureBaseline Baseline { get; }
    public Calibrator Calibrator => Manifest.Calibration;
    public string FeatureSchema => Manifest.FeatureSchema;
    public IReadOnlyList<string> FeatureNames => Manifest.FeatureNames;

    /// <summary>The label the registry gave this model ("name/v0003"), or "unsaved".</summary>
    public string Id => Manifest.Version.Length > 0 ? $"{Manifest.Name}/{Manifest.Version}" : "unsaved";

    public DetectorModel WithManifest(ModelManifest manifest)
    {
        var copy = (DetectorModel)MemberwiseClone();
        copy.Manifest = manifest;
        return copy;
    }

    /// <summary>Refuses a matrix or batch of another feature schema with a message that names both.</summary>
    public void EnsureSchema(string featureSchema, IReadOnlyList<string> featureNames)
    {
        if (!string.Equals(featureSchema, FeatureSchema, StringComparison.Ordinal))
            throw new FeatureSchemaMismatchException(
                $"model {Id} was trained on feature schema '{FeatureSchema}' but the batch is '{featureSchema}': retrain the model on '{featureSchema}' archives or promote a model of that schema");
        if (featureNames.Count != FeatureNames.Count)
            throw new FeatureSchemaMismatchException($"model {Id} expects {FeatureNames.Count} feature columns of '{FeatureSchema}', the batch has {featureNames.Count}");
        for (var j = 0; j < featureNames.Count; j++)
        {
            if (!string.Equals(featureNames[j], FeatureNames[j], StringComparison.Ordinal))
                throw new FeatureSchemaMismatchException($"model {Id} expects feature column {j} of '{FeatureSchema}' to be '{FeatureNames[j]}', the batch has '{featureNames[j]}'");
        }
    }

    /// <summary>Raw and calibrated scores of every row of a matrix (training, evaluation, notebooks).</summary>
    public (float[] Raw, float[] Calibrated) Score(FeatureMatrix m)
    {
        ArgumentNullException.ThrowIfNull(m);
        EnsureSchema(m.FeatureSchema, m.FeatureNames);
        var raw = new float[m.Rows];
        if (Detector is ISequenceDetector sequenceDetector)
        {
            var sequences = m.Sequences ?? throw MissingSequences(m.FeatureSchema);
            var prepared = sequenceDetector.ReadsFeatures ? new float[m.Values.Length] : [];
            if (sequenceDetector.ReadsFeatures) Prepare(m.Values, m.Rows, prepared);
            sequenceDetector.Score(prepared, m.Rows, sequences, raw, m.Entities);
        }
        else
        {
            var prepared = new float[m.Values.Length];
            Prepare(m.Values, m.Rows, prepared);
            Detector.Score(prepared, m.Rows, raw, m.Entities);
        }
        var calibrated = new float[m.Rows];
        Calibrator.Map(raw, calibrated);
        return (raw, calibrated);
    }

    /// <summary>The error for a sequence model handed windows without their `seq` column.</summary>
    internal FeatureSchemaMismatchException MissingSequences(string featureSchema) =>
        new($"model {Id} ({Manifest.Detector}) reads each window's call sequence, the `{SequenceColumn.Column}` column of syscall/2, and the '{featureSchema}' windows have none");

    /// <summary>Raw rows to what the detector reads: optional row normalisation (frequency vectors), then the feature transform.</summary>
    internal void Prepare(ReadOnlySpan<float> rawRows, int n, Span<float> output)
    {
        if (Manifest.Settings.NormaliseRows)
        {
            var d = FeatureNames.Count;
            var tmp = new float[d];
            for (var r = 0; r < n; r++)
            {
                RowNormaliser.Normalise(rawRows.Slice(r * d, d), tmp);
                Transform.Apply(tmp, 1, output.Slice(r * d, d));
            }
            return;
        }
        Transform.Apply(rawRows, n, output);
    }

    public void Save(string folder)
    {
        Directory.CreateDirectory(folder);
        using (var file = File.Create(Path.Combine(folder, ModelFile)))
        using (var zip = new ZipArchive(file, ZipArchiveMode.Create))
        {
            var writer = new ModelWriter(zip);
            Transform.Save(writer);
            Baseline.Save(writer);
            Detector.Save(writer);
            writer.Close();
        }
        File.WriteAllText(Path.Combine(folder, ManifestFile), Manifest.ToJson());
    }

    public static DetectorModel Load(string folder)
    {
        var manifestPath = Path.Combine(folder, ManifestFile);
        var modelPath = Path.Combine(folder, ModelFile);
        if (!File.Exists(manifestPath)) throw new FileNotFoundException($"model folder {folder} has no {ManifestFile}", manifestPath);
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"model folder {folder} has no {ModelFile}", modelPath);
        var manifest = ModelManifest.FromJson(File.ReadAllText(manifestPath));
        using var file = File.OpenRead(modelPath);
        using var zip = new ZipArchive(file, ZipArchiveMode.Read);
        var reader = new ModelReader(zip);
        return new DetectorModel(manifest, FeatureTransform.Load(reader), Detectors.Detectors.Load(manifest.Detector, reader), FeatureBaseline.Load(reader, manifest.FeatureNames));
    }
}

/// <summary>
/// Frequency-vector normalisation: a row of non-negative counts or rates divided by its sum, so
/// windows of different lengths compare by their mix (the usual ADFA-LD representation).
/// </summary>
public static class RowNormaliser
{
    public static void Normalise(ReadOnlySpan<float> row, Span<float> output)
    {
        var sum = 0f;
        foreach (var v in row) sum += Math.Max(0f, float.IsFinite(v) ? v : 0f);
        var inv = sum > 0 ? 1f / sum : 0f;
        for (var j = 0; j < row.Length; j++) output[j] = Math.Max(0f, float.IsFinite(row[j]) ? row[j] : 0f) * inv;
    }
}
