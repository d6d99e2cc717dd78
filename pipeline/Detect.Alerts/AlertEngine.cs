using Apache.Arrow;
using Detect.Models.Calibration;
using Detect.Models.Features;
using Detect.Models.Scoring;

namespace Detect.Alerts;

/// <summary>When a scored window becomes an alert.</summary>
public sealed record AlertOptions
{
    /// <summary>Windows scoring at least this are anomalous (1.0: the model's calibrated threshold).</summary>
    public float MinScore { get; init; } = 1f;

    /// <summary>
    /// After an alert, further anomalous windows of the same entity (host, family, entity) are not
    /// raised for this long (event time) unless their severity is higher; they are counted and the
    /// next alert says how many were held back.
    /// </summary>
    public TimeSpan Cooldown { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>At most this many alerts per minute in all (wall clock); beyond, windows are counted as rate-limited.</summary>
    public int MaxAlertsPerMinute { get; init; } = 600;

    /// <summary>Entities whose deduplication state is kept (bounded memory under a flood of new entities).</summary>
    public int MaxTrackedEntities { get; init; } = 100_000;

    /// <summary>Features named in each alert's explanation.</summary>
    public int ExplainFeatures { get; init; } = 3;

    /// <summary>
    /// Says what an explained feature of a row was made of (batch, row, feature -> text or null): the
    /// pipeline names the calls behind hashed n-gram features. Null: features are told by value only.
    /// </summary>
    public Func<RecordBatch, int, string, string?>? FeatureDetail { get; init; }

    /// <summary>Highest-scoring windows kept for display (<see cref="AlertEngine.TopWindows"/>).</summary>
    public int TopWindows { get; init; } = 10;

    /// <summary>How long a window stays among the top ones (wall clock), so the list follows what happens now.</summary>
    public TimeSpan TopHorizon { get; init; } = TimeSpan.FromMinutes(10);

    internal void Validate()
    {
        if (Cooldown < TimeSpan.Zero) throw new ArgumentException("Cooldown must not be negative");
        if (MaxAlertsPerMinute < 1) throw new ArgumentException("MaxAlertsPerMinute must be positive");
        if (MaxTrackedEntities < 1) throw new ArgumentException("MaxTrackedEntities must be positive");
        if (ExplainFeatures < 0) throw new ArgumentException("ExplainFeatures must not be negative");
    }
}

/// <summary>What the engine saw and did, per family, from its start.</summary>
public sealed record AlertStats
{
    public long WindowsScored { get; init; }
    /// <summary>Windows at or above MinScore.</summary>
    public long Anomalous { get; init; }
    public long Raised { get; init; }
    /// <summary>Anomalous windows held back because their entity was alerted on within the cooldown.</summary>
    public long Deduplicated { get; init; }
    /// <summary>Anomalous windows held back by the global rate limit.</summary>
    public long RateLimited { get; init; }
    /// <summary>Entities whose deduplication state was dropped to stay within MaxTrackedEntities.</summary>
    public long EntitiesForgotten { get; init; }
    public IReadOnlyDictionary<string, long> RaisedByFamily { get; init; } = new Dictionary<string, long>();
    public IReadOnlyDictionary<string, long> ScoredByFamily { get; init; } = new Dictionary<string, long>();
}

/// <summary>A scored window, kept for display among the highest ones.</summary>
public sealed record ScoredWindow(
    string Family, string Host, string Entity, long WindowStartNs, long WindowEndNs, long Records,
    float Score, Severity Severity, string Model, string Summary, DateTime ScoredAtUtc);

/// <summary>
/// Scored feature batches in, alerts out: every row at or above <see cref="AlertOptions.MinScore"/>
/// is an anomaly; at most one alert per entity per cooldown (unless it escalates), at most
/// MaxAlertsPerMinute in all; what is held back is counted, never silently lost. Also keeps the
/// highest-scoring recent windows with their explanations for display. Single-threaded for
/// <see cref="Process"/> (the pipeline thread); <see cref="Stats"/> and <see cref="TopWindows"/>
/// may be read from any thread.
/// </summary>
public sealed class AlertEngine
{
    private readonly AlertOptions _options;
    private readonly Func<DateTime> _clock;
    private readonly Func<string, string?>? _hostIdOf;
    private readonly Dictionary<(string Family, string Host, string Entity), EntityState> _entities = [];
    private readonly Lock _gate = new();
    private readonly List<ScoredWindow> _top = [];
    private readonly Dictionary<string, long> _raisedByFamily = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _scoredByFamily = new(StringComparer.Ordinal);
    private long _scored, _anomalous, _raised, _deduplicated, _rateLimited, _forgotten;
    private double _tokens;
    private DateTime _lastRefill;

    private sealed class EntityState
    {
        public long LastAlertWindowEndNs;
        public Severity LastSeverity;
        public long Held;
    }

    /// <param name="hostIdOf">Host name -> transport host id (hex), for the alert's host_id; null: not known.</param>
    /// <param name="clock">Wall clock (tests pass their own).</param>
    public AlertEngine(AlertOptions? options = null, Func<string, string?>? hostIdOf = null, Func<DateTime>? clock = null)
    {
        _options = options ?? new AlertOptions();
        _options.Validate();
        _hostIdOf = hostIdOf;
        _clock = clock ?? (() => DateTime.UtcNow);
        _tokens = _options.MaxAlertsPerMinute;
        _lastRefill = _clock();
    }

    public AlertOptions Options => _options;

    /// <summary>
    /// Turns the anomalous rows of one scored batch into alerts (in row order). The batch and the
    /// scores are read during the call only.
    /// </summary>
    public List<Alert> Process(RecordBatch batch, ScoredBatch scored)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ArgumentNullException.ThrowIfNull(scored);
        if (scored.Count != batch.Length) throw new ArgumentException($"the scores are for {scored.Count} rows, the batch has {batch.Length}");
        var (family, _) = ArrowFeatures.ReadMetadata(batch.Schema);
        var columns = new KeyColumns(batch);
        var now = _clock();
        var alerts = new List<Alert>();
        float topFloor;
        lock (_gate)
        {
            _scored += batch.Length;
            _scoredByFamily[family] = _scoredByFamily.GetValueOrDefault(family) + batch.Length;
            ExpireTop(now);
            topFloor = _top.Count < _options.TopWindows ? float.NegativeInfinity : _top[^1].Score;
        }
        for (var row = 0; row < batch.Length; row++)
        {
            var score = scored.Scores[row];
            if (score > topFloor) topFloor = OfferTop(family, columns, scored, row, now);
            if (!(score >= _options.MinScore)) continue; // NaN is not an anomaly
            Interlocked.Increment(ref _anomalous);
            var alert = Consider(family, batch, columns, scored, row, now);
            if (alert != null) alerts.Add(alert);
        }
        return alerts;
    }

    private Alert? Consider(string family, RecordBatch batch, in KeyColumns columns, ScoredBatch scored, int row, DateTime now)
    {
        var host = columns.Host(row);
        var entity = columns.Entity(row);
        var start = columns.Start(row);
        var end = columns.End(row);
        var severity = scored.Severities[row];
        var key = (family, host, entity);
        var cooldownNs = _options.Cooldown.Ticks * 100;
        _entities.TryGetValue(key, out var state);
        if (state != null && start < state.LastAlertWindowEndNs + cooldownNs && severity <= state.LastSeverity)
        {
            state.Held++;
            Interlocked.Increment(ref _deduplicated);
            return null;
        }
        if (!TakeToken(now))
        {
            if (state != null) state.Held++;
            Interlocked.Increment(ref _rateLimited);
            return null;
        }
        if (state == null)
        {
            if (_entities.Count >= _options.MaxTrackedEntities) Forget(start - cooldownNs);
            state = new EntityState();
            _entities[key] = state;
        }
        var held = state.Held;
        state.Held = 0;
        state.LastAlertWindowEndNs = end;
        state.LastSeverity = severity;

        var contributions = _options.ExplainFeatures > 0 ? scored.Explain(row, _options.ExplainFeatures) : [];
        var detail = _options.FeatureDetail;
        var explanation = contributions.Select(c => new AlertFeature(c.Feature, c.Value, c.NormalLow, c.NormalHigh, detail?.Invoke(batch, row, c.Feature))).ToList();
        var alert = new Alert
        {
            Id = Alert.MakeId(family, host, entity, start),
            Host = host,
            HostId = _hostIdOf?.Invoke(host),
            Family = family,
            Entity = entity,
            WindowStartNs = start,
            WindowEndNs = end,
            Records = columns.Records(row),
            Score = scored.Scores[row],
            Severity = severity.ToString().ToLowerInvariant(),
            Explanation = explanation,
            Summary = string.Join("; ", explanation),
            Model = scored.ModelId,
            FeatureSchema = scored.FeatureSchema,
            Label = columns.Label(row),
            Suppressed = held,
            CreatedNs = (now - DateTime.UnixEpoch).Ticks * 100,
        };
        lock (_gate)
        {
            _raised++;
            _raisedByFamily[family] = _raisedByFamily.GetValueOrDefault(family) + 1;
        }
        return alert;
    }

    /// <summary>Drops entities whose cooldown is over; if that is not enough, the half alerted longest ago.</summary>
    private void Forget(long cooledBeforeNs)
    {
        var before = _entities.Count;
        foreach (var (key, s) in _entities.ToList())
            if (s.LastAlertWindowEndNs < cooledBeforeNs && s.Held == 0) _entities.Remove(key);
        if (_entities.Count >= _options.MaxTrackedEntities)
        {
            foreach (var (key, _) in _entities.OrderBy(e => e.Value.LastAlertWindowEndNs).Take(Math.Max(1, _entities.Count / 2)).ToList())
                _entities.Remove(key);
        }
        _forgotten += before - _entities.Count;
    }

    private bool TakeToken(DateTime now)
    {
        var elapsed = (now - _lastRefill).TotalMinutes;
        if (elapsed > 0)
        {
            _tokens = Math.Min(_options.MaxAlertsPerMinute, _tokens + elapsed * _options.MaxAlertsPerMinute);
            _lastRefill = now;
        }
        if (_tokens < 1) return false;
        _tokens -= 1;
        return true;
    }

    private float OfferTop(string family, in KeyColumns columns, ScoredBatch scored, int row, DateTime now)
    {
        var window = new ScoredWindow(family, columns.Host(row), columns.Entity(row), columns.Start(row), columns.End(row), columns.Records(row),
            scored.Scores[row], scored.Severities[row], scored.ModelId, scored.Describe(row), now);
        lock (_gate)
        {
            // One line per entity: a newer, higher window of the same entity replaces the old one.
            var same = _top.FindIndex(w => w.Family == family && w.Host == window.Host && w.Entity == window.Entity);
            if (same >= 0)
            {
                if (_top[same].Score >= window.Score) return Floor();
                _top.RemoveAt(same);
            }
            var at = _top.FindIndex(w => w.Score < window.Score);
            if (at < 0) _top.Add(window);
            else _top.Insert(at, window);
            if (_top.Count > _options.TopWindows) _top.RemoveAt(_top.Count - 1);
            return Floor();
        }
    }

    private float Floor() => _top.Count < _options.TopWindows ? float.NegativeInfinity : _top[^1].Score;

    private void ExpireTop(DateTime now) => _top.RemoveAll(w => now - w.ScoredAtUtc > _options.TopHorizon);

    /// <summary>The highest-scoring windows of the last TopHorizon, highest first.</summary>
    public IReadOnlyList<ScoredWindow> TopWindows
    {
        get
        {
            lock (_gate)
            {
                ExpireTop(_clock());
                return [.. _top];
            }
        }
    }

    public AlertStats Stats
    {
        get
        {
            lock (_gate)
            {
                return new AlertStats
                {
                    WindowsScored = _scored,
                    Anomalous = Interlocked.Read(ref _anomalous),
                    Raised = _raised,
                    Deduplicated = Interlocked.Read(ref _deduplicated),
                    RateLimited = Interlocked.Read(ref _rateLimited),
                    EntitiesForgotten = _forgotten,
                    RaisedByFamily = new Dictionary<string, long>(_raisedByFamily, StringComparer.Ordinal),
                    ScoredByFamily = new Dictionary<string, long>(_scoredByFamily, StringComparer.Ordinal),
                };
            }
        }
    }

    /// <summary>The key and label columns of a feature batch (CONTRACTS.md), read per row only where needed.</summary>
    private readonly struct KeyColumns
    {
        private readonly StringArray _host, _entity;
        private readonly StringArray? _label;
        private readonly Int64Array _start, _end;
        private readonly Int64Array? _records;

        public KeyColumns(RecordBatch batch)
        {
            _host = Column<StringArray>(batch, FeatureColumns.Host)!;
            _entity = Column<StringArray>(batch, FeatureColumns.Entity)!;
            _start = Column<Int64Array>(batch, FeatureColumns.WindowStart)!;
            _end = Column<Int64Array>(batch, FeatureColumns.WindowEnd)!;
            _records = Column<Int64Array>(batch, FeatureColumns.RecordCount, required: false);
            _label = Column<StringArray>(batch, FeatureColumns.Label, required: false);
        }

        private static T? Column<T>(RecordBatch batch, string name, bool required = true) where T : class, IArrowArray
        {
            var i = batch.Schema.GetFieldIndex(name);
            if (i >= 0 && batch.Column(i) is T a) return a;
            if (required) throw new FeatureSchemaMismatchException($"the feature batch has no {typeof(T).Name} column '{name}' (CONTRACTS.md)");
            return null;
        }

        public string Host(int row) => _host.GetString(row) ?? "";
        public string Entity(int row) => _entity.GetString(row) ?? "";
        public long Start(int row) => _start.GetValue(row) ?? 0;
        public long End(int row) => _end.GetValue(row) ?? 0;
        public long Records(int row) => _records?.GetValue(row) ?? 0;
        public string? Label(int row) => _label == null || _label.IsNull(row) ? null : _label.GetString(row);
    }
}
