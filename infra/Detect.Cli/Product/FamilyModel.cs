using System.Globalization;
using Apache.Arrow;
using Detect.Alerts;
using Detect.Models.Features;
using Detect.Models.Registry;
using Detect.Models.Scoring;
using Detect.Models.Training;
using Detect.Pipeline;
using Detect.Pipeline.Archive;
using Detect.Pipeline.Arrow;
using ModelArchive = Detect.Models.Features.ParquetArchive;
using PipelineArchive = Detect.Pipeline.Archive.ParquetArchive;

namespace Detect.Cli.Product;

/// <summary>Where a family stands: learning its baseline, training it, or scoring.</summary>
public enum FamilyPhase
{
    Learning,
    Training,
    Scoring,
}

/// <summary>A family's state for display (immutable snapshot).</summary>
public sealed record FamilyStatus(
    string Family,
    FamilyPhase Phase,
    string Detail,
    string? Model,
    long WindowsSeen,
    long WindowsScored,
    long WindowsArchived,
    long WindowsUnscored,
    DateTime? LearningEndsUtc);

/// <summary>
/// One feature family's model life cycle inside a pipeline. With a current model in
/// STATE/models/&lt;family&gt; (of the pipeline's feature schema) it scores every batch at once,
/// following promotions (the models library's hot reload). Without one it learns: it archives
/// the family's windows as Parquet (STATE/learning/&lt;family&gt;-&lt;start&gt;) for the learning period,
/// then trains a baseline with the models library's trainer on a background thread, saves and
/// promotes it, and scores from then on. Too little data extends the learning. Runs on the
/// pipeline thread (<see cref="OnBatch"/>, <see cref="Tick"/>); <see cref="Status"/> from any thread.
/// </summary>
internal sealed class FamilyModel : IDisposable
{
    private readonly FeatureFamily _family;
    private readonly string _name;
    private readonly string _schema;
    private readonly ProductOptions _options;
    private readonly AlertStage _alerts;
    private readonly Action<string> _say;
    private readonly ScoreLog? _scoreLog;
    private readonly LatencyStats _closeLatency;
    private readonly ModelRegistry _registry;
    private FamilyPhase _phase;
    private string _detail = "";
    private ModelScorer? _scorer;
    private ScoredBatch? _reuse;
    private PipelineArchive? _learning;
    private string? _learningRoot;
    private DateTime _learningEnds;
    private long _learningWindows;
    private Task<string>? _training;
    private long _seen, _scored, _archived, _unscored;
    private FamilyStatus _status;
    private int _disposed;

    public FamilyModel(FeatureFamily family, ProductOptions options, AlertStage alerts, Action<string> say, ScoreLog? scoreLog, LatencyStats closeLatency)
    {
        _family = family;
        _name = FeatureSchema.NameOf(family);
        _schema = FeaturePipeline.SchemaOf(family).SchemaString;
        _options = options;
        _alerts = alerts;
        _say = say;
        _scoreLog = scoreLog;
        _closeLatency = closeLatency;
        _registry = new ModelRegistry(options.RegistryRoot(_name));
        _status = new FamilyStatus(_name, FamilyPhase.Learning, "starting", null, 0, 0, 0, 0, null);
    }

    public string Name => _name;

    public FamilyPhase Phase => _phase;

    public FamilyStatus Status => Volatile.Read(ref _status);

    public ModelScorer? Scorer => _scorer;

    /// <summary>Scores with the registry's current model when it has one of our schema; else starts learning.</summary>
    public void Start(DateTime now)
    {
        var reason = TryOpenScorer();
        if (reason == null) return;
        BeginLearning(now, reason);
    }

    /// <summary>Null when scoring now; else why not.</summary>
    private string? TryOpenScorer()
    {
        var current = _registry.Current;
        if (current == null) return $"no model in {_registry.Root}";
        try
        {
            var manifest = _registry.Manifest(current);
            if (manifest.FeatureSchema != _schema)
                return $"model {_name}/{current} is for {manifest.FeatureSchema}, this pipeline makes {_schema}";
            var scorer = ModelScorer.FromRegistry(_registry.Root, new ScorerOptions { ExpectedSchema = _schema });
            scorer.ModelChanged += (_, e) => _say($"{_name}: now scoring with {_name}/{e.Current} (was {e.Previous})");
            scorer.ReloadFailed += (_, e) => _say($"{_name}: refused promoted {_name}/{e.Version}: {e.Error.Message}");
            _scorer?.Dispose();
            _scorer = scorer;
            _phase = FamilyPhase.Scoring;
            _detail = $"scoring with {scorer.Model.Id}";
            _say($"{_name}: {_detail} ({scorer.Model.Calibrator.Description})");
            Publish();
            return null;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or FeatureSchemaMismatchException or InvalidOperationException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            return $"model {_name}/{current} could not be loaded: {e.Message}";
        }
    }

    private void BeginLearning(DateTime now, string reason)
    {
        _phase = FamilyPhase.Learning;
        _learningEnds = now + _options.Learning;
        if (_learning == null)
        {
            _learningRoot = Path.Combine(_options.LearningRoot, $"{_name}-{now:yyyyMMdd-HHmmss}");
            _learning = new PipelineArchive(new ArchiveOptions { Root = _learningRoot, MaxFileAge = TimeSpan.FromDays(1) });
            _learningWindows = 0;
        }
        _detail = reason;
        _say($"{_name}: learning a baseline until {_learningEnds.ToLocalTime():HH:mm:ss} ({reason}); windows go to {_learningRoot}");
        Publish();
    }

    public void OnBatch(RecordBatch batch)
    {
        _seen += batch.Length;
        switch (_phase)
        {
            case FamilyPhase.Learning:
                _learning!.OnBatch(_family, batch);
                _archived += batch.Length;
                _learningWindows += batch.Length;
                break;
            case FamilyPhase.Training:
                _unscored += batch.Length;
                break;
            case FamilyPhase.Scoring:
                Score(batch);
                break;
        }
        Publish();
    }

    private void Score(RecordBatch batch)
    {
        ScoredBatch scored;
        try
        {
            scored = _scorer!.Score(batch, _reuse);
        }
        catch (FeatureSchemaMismatchException e)
        {
            _unscored += batch.Length;
            _detail = $"cannot score: {e.Message}";
            return;
        }
        _reuse = scored;
        _scored += scored.Count;
        var now = DateTime.UtcNow;
        var nowNs = (now - DateTime.UnixEpoch).Ticks * 100;
        var ends = (Int64Array)batch.Column(batch.Schema.GetFieldIndex(FeatureColumns.WindowEnd));
        for (var r = 0; r < scored.Count; r++) _closeLatency.Add(nowNs - (ends.GetValue(r) ?? nowNs));
        _scoreLog?.Write(_name, batch, scored);
        _alerts.OnScored(batch, scored);
        _detail = $"scoring with {scored.ModelId}";
    }

    /// <summary>Once a second on the pipeline thread: ends learning when due, takes a finished training.</summary>
    public void Tick(DateTime now)
    {
        if (_phase == FamilyPhase.Learning && now >= _learningEnds)
        {
            // Another pipeline instance sharing this state may have trained one meanwhile.
            if (TryOpenScorer() == null)
            {
                CloseLearning();
                return;
            }
            if (_learningWindows < 20)
            {
                _learningEnds = now + _options.Learning;
                _detail = $"learning longer: only {_learningWindows} windows so far";
                _say($"{_name}: {_detail}; next try at {_learningEnds.ToLocalTime():HH:mm:ss}");
            }
            else StartTraining(now);
        }
        else if (_phase == FamilyPhase.Training && _training is { IsCompleted: true } done)
        {
            _training = null;
            if (done.IsCompletedSuccessfully)
            {
                var why = TryOpenScorer();
                if (why != null) BeginLearning(now, $"the trained model could not be used: {why}");
                else _learningRoot = null;
            }
            else
            {
                var e = done.Exception?.GetBaseException();
                // Too little or too uniform data: keep the archive, learn longer, try again.
                _learning = new PipelineArchive(new ArchiveOptions { Root = _learningRoot!, MaxFileAge = TimeSpan.FromDays(1) });
                BeginLearning(now, $"training failed ({e?.Message}); learning longer");
            }
        }
        Publish();
    }

    private void StartTraining(DateTime now)
    {
        _learning!.Flush(); // closes the files: they become visible to the reader
        _learning.Dispose();
        _learning = null;
        _phase = FamilyPhase.Training;
        _detail = $"training a {_options.Detector} baseline on {_learningWindows:N0} windows";
        _say($"{_name}: {_detail}");
        var root = _learningRoot!;
        var options = _options;
        var name = _name;
        var registry = _registry;
        var schema = _schema;
        _training = Task.Run(async () =>
        {
            var all = await ModelArchive.ReadFamilyAsync(root, name).ConfigureAwait(false);
            if (all.FeatureSchema != schema) throw new InvalidDataException($"the learning archive holds {all.FeatureSchema}, not {schema}");
            var normal = all.NormalRows();
            if (normal.Rows > options.MaxTrainingWindows)
            {
                var step = (double)normal.Rows / options.MaxTrainingWindows;
                normal = normal.Select(Enumerable.Range(0, options.MaxTrainingWindows).Select(i => (int)(i * step)).ToList());
            }
            var train = new TrainOptions
            {
                Detector = options.Detector,
                TargetFpr = options.Fpr,
                Source = root,
                Name = registry.Name,
            };
            // The trainer holds out whole entities for calibration. A quiet host has few (a handful
            // of busy processes, a few sources): then hold out whole windows of time instead, so the
            // threshold is still set on windows the detector did not fit.
            var (fit, calibration) = ModelTrainer.SplitBySample(normal, train.CalibrationFraction, train.DetectorOptions.Seed);
            if (fit.Count < 2 || calibration.Count < 10) normal = ByTime(normal);
            var model = ModelTrainer.Train(normal, train);
            var version = registry.Save(model);
            registry.Promote(version);
            return version;
        });
        _training.ContinueWith(t =>
        {
            if (t.IsCompletedSuccessfully) _say($"{name}: baseline {name}/{t.Result} trained and promoted ({registry.Root})");
            else _say($"{name}: training failed: {t.Exception?.GetBaseException().Message}");
        }, TaskScheduler.Default);
        Publish();
    }

    /// <summary>The same windows with each window start as its sample: the trainer then holds out periods of time.</summary>
    private static FeatureMatrix ByTime(FeatureMatrix m) =>
        new(m.Family, m.FeatureSchema, m.FeatureNames, m.Values, m.Rows, m.Entities, m.Labels,
            m.WindowStarts.Select(t => (string?)("t" + t.ToString(CultureInfo.InvariantCulture))).ToArray(), m.WindowStarts, m.Hosts);

    private void CloseLearning()
    {
        _learning?.Flush();
        _learning?.Dispose();
        _learning = null;
    }

    /// <summary>Shutdown: closes the learning archive (its files stay for the next start or `detect train`).</summary>
    public void Flush()
    {
        _learning?.Flush();
        Publish();
    }

    /// <summary>Waits for a training in progress (bounded), so its model is not half written at exit.</summary>
    public void WaitForTraining(TimeSpan timeout)
    {
        try
        {
            _training?.Wait(timeout);
        }
        catch (AggregateException)
        {
            // reported by the continuation
        }
    }

    private void Publish()
    {
        Volatile.Write(ref _status, new FamilyStatus(_name, _phase, _detail, _scorer?.Model.Id, _seen, _scored, _archived, _unscored,
            _phase == FamilyPhase.Learning ? _learningEnds : null));
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        CloseLearning();
        _scorer?.Dispose();
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{_name}: {_phase} {_detail}");
}
