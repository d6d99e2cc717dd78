using System.Globalization;
using Apache.Arrow;
using Detect.Alerts.Policy;
using Detect.Models.Scoring;
using Detect.Transport;

namespace Detect.Alerts;

/// <summary>
/// What follows scoring in a pipeline: the alert engine (dedup, rate limit), the local alert log
/// (JSONL), the alerts topic, and the policy engine, whose commands go to the policy topic keyed
/// by the target host (the sensors there apply and acknowledge them). Call <see cref="OnScored"/>
/// from the scoring thread; the Recent* lists and stats may be read from any thread.
/// </summary>
public sealed class AlertStage : IDisposable
{
    private readonly ITransport? _transport;
    private readonly AlertLog? _log;
    private readonly Action<string>? _say;
    private readonly RecordPublisher? _alerts;
    private readonly Dictionary<ulong, RecordPublisher> _policy = [];
    private readonly Lock _gate = new();
    private readonly Queue<Alert> _recentAlerts = new();
    private readonly Queue<PolicyCommand> _recentCommands = new();
    private long _published, _publishFailures, _commandsPublished;
    private int _disposed;

    /// <param name="transport">Where alerts and commands go (null: nowhere but the log, e.g. tests and replays).</param>
    /// <param name="publisherHostId">Host id in the header of this pipeline instance's alert messages.</param>
    /// <param name="say">Where decisions are told (a status line, stderr); null: nowhere.</param>
    public AlertStage(AlertEngine engine, PolicyEngine policy, ITransport? transport, AlertLog? log, ulong publisherHostId, Action<string>? say = null)
    {
        Engine = engine ?? throw new ArgumentNullException(nameof(engine));
        Policy = policy ?? throw new ArgumentNullException(nameof(policy));
        _transport = transport;
        _log = log;
        _say = say;
        _alerts = transport?.CreatePublisher(new PublisherOptions { HostId = publisherHostId, Log = say });
    }

    public AlertEngine Engine { get; }

    public PolicyEngine Policy { get; }

    public AlertLog? Log => _log;

    /// <summary>Alerts handed to the alerts topic.</summary>
    public long Published => Interlocked.Read(ref _published);

    /// <summary>Alerts or commands the transport refused (the log still has the alerts).</summary>
    public long PublishFailures => Interlocked.Read(ref _publishFailures);

    public long CommandsPublished => Interlocked.Read(ref _commandsPublished);

    /// <summary>Alerts and commands of this scored batch: raised, logged, published, decided.</summary>
    public IReadOnlyList<Alert> OnScored(RecordBatch batch, ScoredBatch scored)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var alerts = Engine.Process(batch, scored);
        if (alerts.Count == 0) return alerts;
        _log?.Write(alerts);
        foreach (var alert in alerts)
        {
            if (_alerts != null)
            {
                if (_alerts.TryAppend(MessageFamily.Alerts, alert.ToRecord())) Interlocked.Increment(ref _published);
                else Interlocked.Increment(ref _publishFailures);
            }
            var command = Policy.Decide(alert);
            lock (_gate)
            {
                _recentAlerts.Enqueue(alert);
                while (_recentAlerts.Count > 50) _recentAlerts.Dequeue();
                if (command != null)
                {
                    _recentCommands.Enqueue(command);
                    while (_recentCommands.Count > 50) _recentCommands.Dequeue();
                }
            }
            if (command == null) continue;
            _say?.Invoke($"policy: {command}");
            PublishCommand(command);
        }
        return alerts;
    }

    private void PublishCommand(PolicyCommand command)
    {
        if (_transport == null) return;
        // Keyed by the target host, so the sensors there (which read only their own host's and
        // host 0's commands) receive it; an unknown host goes to every host (0).
        var target = command.HostId != null && ulong.TryParse(command.HostId, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var id) ? id : 0UL;
        RecordPublisher? publisher;
        lock (_gate)
        {
            if (!_policy.TryGetValue(target, out publisher))
                _policy[target] = publisher = _transport.CreatePublisher(new PublisherOptions { HostId = target, Linger = TimeSpan.FromMilliseconds(5), Log = _say });
        }
        if (publisher.TryAppend(MessageFamily.Policy, command.ToRecord()))
        {
            publisher.Flush(); // decisions are rare and urgent: no linger
            Interlocked.Increment(ref _commandsPublished);
        }
        else Interlocked.Increment(ref _publishFailures);
    }

    /// <summary>The last alerts raised (at most 50), oldest first.</summary>
    public IReadOnlyList<Alert> RecentAlerts
    {
        get
        {
            lock (_gate) return [.. _recentAlerts];
        }
    }

    /// <summary>The last commands decided (at most 50), oldest first.</summary>
    public IReadOnlyList<PolicyCommand> RecentCommands
    {
        get
        {
            lock (_gate) return [.. _recentCommands];
        }
    }

    /// <summary>Seals what is pending and waits (bounded) for delivery.</summary>
    public async Task FlushAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var publishers = new List<RecordPublisher>();
        if (_alerts != null) publishers.Add(_alerts);
        lock (_gate) publishers.AddRange(_policy.Values);
        await Task.WhenAll(publishers.Select(p => p.FlushAsync(timeout, cancellationToken))).ConfigureAwait(false);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _alerts?.Dispose();
        lock (_gate)
        {
            foreach (var p in _policy.Values) p.Dispose();
            _policy.Clear();
        }
    }
}
