using System.Globalization;
using Apache.Arrow;
using Detect.Alerts;
using Detect.Alerts.Policy;
using Detect.Pipeline;
using Detect.Pipeline.Archive;
using Detect.Pipeline.Arrow;
using Detect.Transport;

namespace Detect.Cli.Product;

/// <summary>The pipeline's counters at one moment, for the terminal (taken on the pipeline thread).</summary>
public sealed record PipelineSnapshot(
    PipelineStats Pipeline,
    ConsumerStats Consumer,
    long[] RecordsByFamily,
    long MessageErrors,
    string? LastError,
    IReadOnlyList<string> Assignment,
    DateTime TakenUtc);

/// <summary>
/// The pipeline half of the product, the same code in `up` (in-process bus) and in `pipeline
/// --kafka` (a consumer group member): telemetry messages -> TransportInput -> FeaturePipeline
/// (event-time windows per entity) -> per family: the learning archive or the model -> alerts
/// (log, alerts topic) -> policy commands (policy topic), and the acknowledgements back. One
/// thread owns the pipeline; <see cref="StopAsync"/> drains what is still arriving, closes every
/// open window (so its score and alerts are not lost) and flushes archives and publishers.
/// </summary>
public sealed class ProductPipeline : IDisposable
{
    private readonly ITransport _transport;
    private readonly ProductOptions _options;
    private readonly Action<string> _say;
    private readonly FeaturePipeline _pipeline;
    private readonly TransportInput _input;
    private readonly Dictionary<string, string> _hostIds = new(StringComparer.Ordinal);
    private readonly FamilyModel?[] _families = new FamilyModel?[2];
    private readonly ParquetArchive? _archiveAll;
    private readonly RecordPublisher? _featureCarrier;
    private readonly ScoreLog? _scoreLog;
    private readonly AlertLog _alertLog;
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _acksStop = new();
    private readonly long[] _recordsByFamily = new long[MessageFamilies.Count];
    private IMessageConsumer? _consumer;
    private Task? _loop, _acksLoop;
    private PipelineSnapshot? _snapshot;
    private long _messageErrors;
    private long _recordsApplied;
    private string? _lastError;
    private TimeSpan _drainIdle = TimeSpan.FromSeconds(1);
    private int _disposed;

    /// <param name="families">Families this pipeline expects (the others are shown as off; records of them are still windowed).</param>
    /// <param name="localHostId">This process's host id (header of the alert messages it publishes).</param>
    public ProductPipeline(ITransport transport, ProductOptions options, IReadOnlyCollection<FeatureFamily> families, ulong localHostId, Action<string> say)
    {
        _transport = transport ?? throw new ArgumentNullException(nameof(transport));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _say = say ?? (_ => { });
        Directory.CreateDirectory(options.StateDirectory);
        _pipeline = new FeaturePipeline(new PipelineOptions { Window = options.Window, AllowedLateness = options.Lateness },
            (offset, error, detail) => Report($"record at payload offset {offset}: {error}: {detail}"));
        _input = new TransportInput(_pipeline, HostName);
        _alertLog = new AlertLog(options.AlertLogPath);
        if (options.ScoreLog != null) _scoreLog = new ScoreLog(options.ScoreLog);
        Alerts = new AlertStage(
            new AlertEngine(options.Alerts with { FeatureDetail = options.Alerts.FeatureDetail ?? Detect.Pipeline.Features.SyscallFeatureDetail.Describe },
                host => _hostIds.TryGetValue(host, out var id) ? id : null),
            new PolicyEngine(options.Policy), transport, _alertLog, localHostId, _say);
        Acks = new AckTracker();
        foreach (var family in families)
            _families[(int)family] = new FamilyModel(family, options, Alerts, _say, _scoreLog, CloseLatency);
        if (options.ArchiveAll) _archiveAll = new ParquetArchive(new ArchiveOptions { Root = options.ArchiveRoot });
        if (options.PublishFeatures)
        {
            _featureCarrier = transport.CreatePublisher(new PublisherOptions { HostId = localHostId, Log = m => _say("features: " + m) });
            Features = new FeaturePublisher(_featureCarrier);
        }
        _pipeline.AddSink(OnFeatureBatch);
    }

    public ProductOptions Options => _options;

    /// <summary>The feature batches published on the features topic (with --publish-features), else null.</summary>
    public FeaturePublisher? Features { get; }

    /// <summary>Messages of the features topic the carrier has not taken (dropped) so far, with --publish-features.</summary>
    public PublisherStats? FeatureCarrierStats => _featureCarrier?.Stats;

    public AlertStage Alerts { get; }

    public AckTracker Acks { get; }

    /// <summary>Scoring time minus window end, per scored window.</summary>
    public LatencyStats CloseLatency { get; } = new();

    /// <summary>Time from a message's seal (sensor side) to its records entering the pipeline.</summary>
    public LatencyStats TransportLatency { get; } = new();

    public IEnumerable<FamilyStatus> Families => _families.Where(f => f != null).Select(f => f!.Status);

    /// <summary>Families this pipeline does not expect (no model life cycle).</summary>
    public IEnumerable<string> FamiliesOff =>
        Enum.GetValues<FeatureFamily>().Where(f => _families[(int)f] == null).Select(FeatureSchema.NameOf);

    public PipelineSnapshot? Snapshot => Volatile.Read(ref _snapshot);

    /// <summary>Records handed to the pipeline so far (duplicates left out); any thread.</summary>
    public long RecordsApplied => Interlocked.Read(ref _recordsApplied);

    public string AlertLogPath => _alertLog.Path;

    public string? ScoreLogPath => _scoreLog?.FilePath;

    private string HostName(ulong id)
    {
        var name = id == HostIdentity.Local ? Environment.MachineName : $"host-{id:x16}";
        _hostIds[name] = id.ToString("x16", CultureInfo.InvariantCulture);
        return name;
    }

    private void OnFeatureBatch(FeatureFamily family, RecordBatch batch)
    {
        _archiveAll?.OnBatch(family, batch);
        Features?.OnBatch(family, batch);
        _families[(int)family]?.OnBatch(batch);
    }

    private void Report(string text)
    {
        _lastError = text;
        _say("pipeline: " + text);
    }

    /// <summary>Joins the consumer group and starts the pipeline thread and the acknowledgement reader.</summary>
    public void Start()
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_loop != null) throw new InvalidOperationException("already started");
        var now = DateTime.UtcNow;
        foreach (var f in _families) f?.Start(now);
        _consumer = _transport.Subscribe(new ConsumerOptions
        {
            GroupId = _options.GroupId,
            Families = MessageFamilies.Telemetry,
            SessionTimeout = TimeSpan.FromSeconds(10),
            Log = m => _say("consumer: " + m),
        });
        TakeSnapshot();
        _loop = Task.Factory.StartNew(() => Loop(_stop.Token), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
        // A group of its own per process: every instance sees every acknowledgement.
        _acksLoop = Acks.RunAsync(_transport, $"detect-acks-{Environment.MachineName}-{Environment.ProcessId}-{Guid.NewGuid():N}", _acksStop.Token);
    }

    private async Task Loop(CancellationToken stop)
    {
        var consumer = _consumer!;
        var lastTick = DateTime.UtcNow;
        while (!stop.IsCancellationRequested)
        {
            var message = await Next(consumer, TimeSpan.FromMilliseconds(250), stop).ConfigureAwait(false);
            if (message != null) Apply(consumer, message);
            var now = DateTime.UtcNow;
            if (now - lastTick >= TimeSpan.FromSeconds(1))
            {
                lastTick = now;
                Tick(now);
            }
        }
        // Drain: what the sensors published before they stopped is still arriving.
        var idle = DateTime.UtcNow;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (DateTime.UtcNow - idle < _drainIdle && DateTime.UtcNow < deadline)
        {
            var message = await Next(consumer, TimeSpan.FromMilliseconds(100), CancellationToken.None).ConfigureAwait(false);
            if (message == null) continue;
            Apply(consumer, message);
            idle = DateTime.UtcNow;
        }
        // Close every open window now: its score and alerts are not lost at shutdown.
        _pipeline.Flush();
        Tick(DateTime.UtcNow);
        foreach (var f in _families) f?.Flush();
        _archiveAll?.Flush();
        if (_featureCarrier != null) await _featureCarrier.FlushAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
        TakeSnapshot();
    }

    private static async Task<InboundMessage?> Next(IMessageConsumer consumer, TimeSpan wait, CancellationToken stop)
    {
        if (consumer.TryReceive(out var message)) return message;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
        timeout.CancelAfter(wait);
        try
        {
            return await consumer.ReceiveAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    private void Apply(IMessageConsumer consumer, InboundMessage message)
    {
        using (message)
        {
            try
            {
                if (!message.IsDuplicate)
                {
                    _recordsByFamily[(int)message.Family] += message.RecordCount;
                    Interlocked.Add(ref _recordsApplied, message.RecordCount);
                    TransportLatency.Add((DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100 - message.Header.SealedUnixNs);
                }
                _input.Apply(message);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // One bad batch must not stop the product: counted, told, and committed past.
                Interlocked.Increment(ref _messageErrors);
                Report($"message {message.Topic}[{message.Partition}]@{message.Offset} failed: {e.GetType().Name}: {e.Message}");
            }
            consumer.Commit(message);
        }
    }

    private void Tick(DateTime now)
    {
        try
        {
            _pipeline.AdvanceTo((now - DateTime.UnixEpoch).Ticks * 100);
            foreach (var f in _families) f?.Tick(now);
            _archiveAll?.RollAged();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Interlocked.Increment(ref _messageErrors);
            Report($"tick failed: {e.GetType().Name}: {e.Message}");
        }
        TakeSnapshot();
    }

    private void TakeSnapshot()
    {
        var consumer = _consumer;
        Volatile.Write(ref _snapshot, new PipelineSnapshot(
            _pipeline.Stats,
            consumer?.Stats ?? new ConsumerStats(),
            (long[])_recordsByFamily.Clone(),
            Interlocked.Read(ref _messageErrors),
            _lastError,
            consumer?.Assignment ?? [],
            DateTime.UtcNow));
    }

    /// <summary>
    /// Stops: reads on until nothing has arrived for <paramref name="drainIdle"/> (what the sensors
    /// flushed at their stop), closes every open window (scored, alerted), flushes the archives, the
    /// alert log and the publishers, and waits (bounded) for a baseline being trained.
    /// </summary>
    public async Task StopAsync(TimeSpan drainIdle, TimeSpan trainingWait)
    {
        _drainIdle = drainIdle;
        _stop.Cancel();
        if (_loop != null) await _loop.ConfigureAwait(false);
        foreach (var f in _families) f?.WaitForTraining(trainingWait);
        await Alerts.FlushAsync(TimeSpan.FromSeconds(5), CancellationToken.None).ConfigureAwait(false);
        _acksStop.Cancel();
        if (_acksLoop != null)
        {
            try
            {
                await _acksLoop.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Cancel();
        _acksStop.Cancel();
        try
        {
            _loop?.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
        }
        _consumer?.Dispose();
        foreach (var f in _families) f?.Dispose();
        _archiveAll?.Dispose();
        _featureCarrier?.Dispose();
        Alerts.Dispose();
        _alertLog.Dispose();
        _scoreLog?.Dispose();
        _stop.Dispose();
        _acksStop.Dispose();
    }
}
