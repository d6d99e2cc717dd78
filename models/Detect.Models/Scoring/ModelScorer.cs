using Apache.Arrow;
using Array = System.Array;
using Detect.Models.Calibration;
using Detect.Models.Detectors;
using Detect.Models.Features;
using Detect.Models.Registry;
using Detect.Models.Training;

namespace Detect.Models.Scoring;

/// <summary>Per-row results of one scored feature batch. Arrays may be longer than Count (reused buffers).</summary>
public sealed class ScoredBatch
{
    private float[] _rawFeatures = [];
    private FeatureBaseline? _baseline;
    private string?[] _sequenceNotes = [];
    private FeatureContribution?[] _sequenceContributions = [];

    public int Count { get; private set; }
    public int FeatureCount { get; private set; }
    /// <summary>Which model scored it ("name/v0003").</summary>
    public string ModelId { get; private set; } = "";
    public string FeatureSchema { get; private set; } = "";
    /// <summary>Calibrated: 1.0 = the model's threshold, comparable across models and versions.</summary>
    public float[] Scores { get; private set; } = [];
    /// <summary>The detector's own score, before calibration.</summary>
    public float[] RawScores { get; private set; } = [];
    public Severity[] Severities { get; private set; } = [];
    /// <summary>Top features of each row at or above the scorer's ExplainFrom score (null for the others; see Explain).</summary>
    public FeatureContribution[]?[] Explanations { get; private set; } = [];

    public bool IsAnomalous(int row) => Scores[row] >= 1f;

    /// <summary>
    /// The top contributing features of any row, computed on demand. For a sequence model the first
    /// is `seq_pieces_per_call` (the covering score, normal up to the threshold's raw value) for rows
    /// scored at or above the scorer's ExplainFrom.
    /// </summary>
    public FeatureContribution[] Explain(int row, int count = 3)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Count);
        if (count == 3 && Explanations[row] is { } done) return done;
        var features = _baseline!.Explain(_rawFeatures.AsSpan(row * FeatureCount, FeatureCount), count);
        if (row < _sequenceContributions.Length && _sequenceContributions[row] is { } seq && count > 0)
            return [seq, .. features.Take(count - 1)];
        return features;
    }

    /// <summary>For a sequence model, where the row's calls leave normal sequences (rows at or above ExplainFrom), else null.</summary>
    public string? SequenceNote(int row) => row < Count && row < _sequenceNotes.Length ? _sequenceNotes[row] : null;

    /// <summary>"f_x = 0.41, normal 0.00-0.05; ..." for a row (and, for a sequence model, where its calls break from normal sequences).</summary>
    public string Describe(int row) => SequenceNote(row) is { } note ? FeatureBaseline.Describe(Explain(row)) + "; " + note : FeatureBaseline.Describe(Explain(row));

    internal void SetSequenceExplanation(int row, FeatureContribution contribution, string? note)
    {
        if (_sequenceNotes.Length < Scores.Length)
        {
            _sequenceNotes = new string?[Scores.Length];
            _sequenceContributions = new FeatureContribution?[Scores.Length];
        }
        _sequenceNotes[row] = note;
        _sequenceContributions[row] = contribution;
    }

    internal Span<float> Prepare(int n, int d, DetectorModel model, string schema)
    {
        Count = n;
        FeatureCount = d;
        ModelId = model.Id;
        FeatureSchema = schema;
        _baseline = model.Baseline;
        if (Scores.Length < n)
        {
            var cap = Math.Max(n, Scores.Length * 2);
            Scores = new float[cap];
            RawScores = new float[cap];
            Severities = new Severity[cap];
            Explanations = new FeatureContribution[]?[cap];
        }
        else Array.Clear(Explanations, 0, n);
        Array.Clear(_sequenceNotes, 0, Math.Min(n, _sequenceNotes.Length));
        Array.Clear(_sequenceContributions, 0, Math.Min(n, _sequenceContributions.Length));
        if (_rawFeatures.Length < n * d) _rawFeatures = new float[Math.Max(n * d, _rawFeatures.Length * 2)];
        return _rawFeatures.AsSpan(0, n * d);
    }

    internal ReadOnlySpan<float> RawFeatures => _rawFeatures.AsSpan(0, Count * FeatureCount);
}

public sealed record ScorerOptions
{
    /// <summary>Rows scoring at least this get their explanation computed eagerly (1.0 = every alert).</summary>
    public float ExplainFrom { get; init; } = 1f;
    /// <summary>How often the registry's CURRENT pointer is checked (a file watcher also triggers a check).</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>When set, only models of this feature schema are accepted (the pipeline's current schema for the family).</summary>
    public string? ExpectedSchema { get; init; }
}

/// <summary>A reload of a promoted version that was refused or failed; the previous model stays in use.</summary>
public sealed class ModelReloadFailedEventArgs(string version, Exception error) : EventArgs
{
    public string Version { get; } = version;
    public Exception Error { get; } = error;
}

public sealed class ModelChangedEventArgs(string previous, string current) : EventArgs
{
    public string Previous { get; } = previous;
    public string Current { get; } = current;
}

/// <summary>
/// What the pipeline calls in process: Arrow feature batch in, per-row calibrated score,
/// severity and explanation out. Built on a registry it follows the promoted version: a watcher
/// (and a poll, since watchers miss events on some file systems) loads the new version off the
/// scoring path and swaps it in with one reference write, so every batch is scored whole by
/// exactly one model and no window is dropped. A model or batch of another feature schema is
/// refused with a FeatureSchemaMismatchException that names both schemas.
/// </summary>
public sealed class ModelScorer : IDisposable
{
    /// <summary>The pseudo-feature a sequence model's explanation starts with: its raw covering score.</summary>
    public const string SequencePiecesFeature = "seq_pieces_per_call";

    private readonly ScorerOptions _options;
    private readonly ModelRegistry? _registry;
    private readonly FileSystemWatcher? _watcher;
    private readonly Timer? _timer;
    private readonly Lock _reloadGate = new();
    private DetectorModel _model;
    private string? _currentVersion;
    private string? _lastRefused;
    private Schema? _validatedSchema;
    private DetectorModel? _validatedFor;
    private float[] _prepared = [];
    private int _disposed;

    public ModelScorer(DetectorModel model, ScorerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        _options = options ?? new ScorerOptions();
        CheckExpected(model);
        _model = model;
    }

    private ModelScorer(ModelRegistry registry, ScorerOptions options)
    {
        _options = options;
        _registry = registry;
        _currentVersion = registry.Current ?? throw new InvalidOperationException(
            $"registry {registry.Root} has no promoted model ({ModelRegistry.CurrentFile} is missing); train one with `detect train --out {registry.Root}`");
        var model = registry.Load(_currentVersion);
        CheckExpected(model);
        _model = model;
        _watcher = new FileSystemWatcher(registry.Root, ModelRegistry.CurrentFile)
        {
            NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.CreationTime,
        };
        _watcher.Changed += (_, _) => CheckForPromotion();
        _watcher.Created += (_, _) => CheckForPromotion();
        _watcher.Renamed += (_, _) => CheckForPromotion();
        _watcher.EnableRaisingEvents = true;
        _timer = new Timer(_ => CheckForPromotion(), null, options.PollInterval, options.PollInterval);
    }

    /// <summary>A scorer on the promoted version of a registry folder, following later promotions.</summary>
    public static ModelScorer FromRegistry(string registryRoot, ScorerOptions? options = null) =>
        new(new ModelRegistry(registryRoot), options ?? new ScorerOptions());

    public DetectorModel Model => Volatile.Read(ref _model);
    public string? CurrentVersion => Volatile.Read(ref _currentVersion);

    public event EventHandler<ModelChangedEventArgs>? ModelChanged;
    public event EventHandler<ModelReloadFailedEventArgs>? ReloadFailed;

    /// <summary>Loads and swaps in the promoted version if it changed; true when it did. Safe from any thread.</summary>
    public bool CheckForPromotion()
    {
        if (_registry == null || Volatile.Read(ref _disposed) != 0) return false;
        lock (_reloadGate)
        {
            var promoted = _registry.Current;
            if (promoted == null || promoted == _currentVersion || promoted == _lastRefused) return false;
            DetectorModel next;
            try
            {
                next = _registry.Load(promoted);
                CheckExpected(next);
                var current = Model;
                if (next.FeatureSchema != current.FeatureSchema && _options.ExpectedSchema == null && _validatedSchema != null)
                    throw new FeatureSchemaMismatchException(
                        $"refusing promoted model {next.Id}: its feature schema '{next.FeatureSchema}' differs from '{current.FeatureSchema}' of the batches being scored; model {current.Id} stays in use");
            }
            catch (Exception e) when (e is IOException or InvalidDataException or FeatureSchemaMismatchException or UnauthorizedAccessException or System.Text.Json.JsonException)
            {
                _lastRefused = promoted;
                ReloadFailed?.Invoke(this, new ModelReloadFailedEventArgs(promoted, e));
                return false;
            }
            var previous = _currentVersion ?? "";
            Volatile.Write(ref _model, next);
            Volatile.Write(ref _currentVersion, promoted);
            _lastRefused = null;
            ModelChanged?.Invoke(this, new ModelChangedEventArgs(previous, promoted));
            return true;
        }
    }

    /// <summary>Scores every row of a feature batch. Pass the previous result as reuse to avoid allocating per batch. Not re-entrant: one scorer per scoring thread.</summary>
    public ScoredBatch Score(RecordBatch batch, ScoredBatch? reuse = null)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var model = Volatile.Read(ref _model); // one model for the whole batch
        var schema = batch.Schema;
        var featureSchema = Validate(schema, model);
        var result = reuse ?? new ScoredBatch();
        var n = batch.Length;
        var d = model.FeatureNames.Count;
        var raw = result.Prepare(n, d, model, featureSchema);
        // Arrow is column-major; detectors read rows. One transposing pass, no per-row allocation.
        var column = 0;
        for (var i = 0; i < schema.FieldsList.Count; i++)
        {
            if (!FeatureColumns.IsFeature(schema.FieldsList[i].Name)) continue;
            var array = ArrowFeatures.FloatColumn(batch, i);
            var values = array.Values;
            var hasNulls = array.NullCount > 0;
            for (var r = 0; r < n; r++) raw[r * d + column] = hasNulls && array.IsNull(r) ? 0f : values[r];
            column++;
        }
        var sequenceDetector = model.Detector as ISequenceDetector;
        var readsFeatures = sequenceDetector == null || sequenceDetector.ReadsFeatures;
        if (_prepared.Length < n * d) _prepared = new float[Math.Max(n * d, _prepared.Length * 2)];
        var prepared = readsFeatures ? _prepared.AsSpan(0, n * d) : [];
        if (readsFeatures) model.Prepare(raw, n, prepared);
        var entities = model.Detector is IStatefulDetector ? ArrowFeatures.Strings(batch, FeatureColumns.Entity) ?? [] : [];
        var rawScores = result.RawScores.AsSpan(0, n);
        SequenceColumn? sequences = null;
        if (sequenceDetector != null)
        {
            sequences = SequenceColumn.FromArrow(batch) ?? throw model.MissingSequences(featureSchema);
            sequenceDetector.Score(prepared, n, sequences, rawScores, entities);
        }
        else model.Detector.Score(prepared, n, rawScores, entities);
        var calibrator = model.Calibrator;
        for (var r = 0; r < n; r++)
        {
            var s = calibrator.Map(rawScores[r]);
            result.Scores[r] = s;
            result.Severities[r] = Calibrator.SeverityOf(s);
            if (s < _options.ExplainFrom) continue;
            if (sequenceDetector != null)
            {
                // Now, while the batch's sequences are readable (the pipeline lends batches only for the call).
                var contribution = new FeatureContribution(SequencePiecesFeature, rawScores[r], 0f, calibrator.Threshold, Math.Max(1f, s) * 10f);
                result.SetSequenceExplanation(r, contribution, sequenceDetector.Describe(sequences![r]));
                result.Explanations[r] = [contribution, .. model.Baseline.Explain(raw.Slice(r * d, d), 2)];
            }
            else result.Explanations[r] = model.Baseline.Explain(raw.Slice(r * d, d));
        }
        return result;
    }

    private string Validate(Schema schema, DetectorModel model)
    {
        var (_, featureSchema) = ArrowFeatures.ReadMetadata(schema);
        if (ReferenceEquals(schema, _validatedSchema) && ReferenceEquals(model, _validatedFor)) return featureSchema;
        var names = ArrowFeatures.FeatureColumnIndexes(schema).Select(i => schema.GetFieldByIndex(i).Name).ToArray();
        model.EnsureSchema(featureSchema, names);
        _validatedSchema = schema;
        _validatedFor = model;
        return featureSchema;
    }

    private void CheckExpected(DetectorModel model)
    {
        if (_options.ExpectedSchema is { } expected && model.FeatureSchema != expected)
            throw new FeatureSchemaMismatchException($"model {model.Id} reads feature schema '{model.FeatureSchema}', but this scorer serves '{expected}'");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _watcher?.Dispose();
        _timer?.Dispose();
    }
}
