using Detect.Records;
using Detect.Sensors;
using Detect.Sensors.Bpf;
using Detect.Sensors.Flows;
using Detect.Transport;

namespace Detect.Cli.Sensors;

/// <summary>
/// This host's sensors feeding a publisher: the syscall and process sensors (SensorAgent, drained
/// on a thread of their own) and, on the interfaces the user named, the flow sensor; every
/// record is counted by type and appended to its family's batch (never blocks: the publisher
/// counts what it cannot take). <see cref="Stop"/> detaches everything, drains the rings, flushes
/// summaries and pending flows into the publisher.
/// </summary>
internal sealed class SensorRunner : IDisposable
{
    private readonly SensorAgent _agent;
    private readonly FlowCapture? _flows;
    private readonly PublishingHandler _handler;
    private readonly ISensorBatchHandler _sink;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _drain;
    private FlowSensorStats? _flowStats;
    private int _stopped;

    private SensorRunner(SensorAgent agent, FlowCapture? flows, PublishingHandler handler)
    {
        _agent = agent;
        _flows = flows;
        _handler = handler;
        _sink = flows?.Handler ?? handler;
        _drain = agent.RunAsync(_sink, _stop.Token);
    }

    public SensorAgent Agent => _agent;

    public FlowCapture? Flows => _flows;

    public PublishingHandler Handler => _handler;

    /// <summary>The interfaces the flow sensor watches ("eth1", "veth0@ns").</summary>
    public IReadOnlyList<string> Interfaces { get; private init; } = [];

    /// <summary>True once the drain thread ended (it failed, or Stop ran).</summary>
    public bool Faulted => _drain.IsFaulted;

    /// <summary>
    /// Starts the sensors (and flows on <paramref name="interfaces"/>), telling stderr what runs and
    /// what the kernel refused. Null, after a plain message, when they cannot start.
    /// </summary>
    public static SensorRunner? TryStart(string command, SensorOptions options, IReadOnlyList<string> interfaces, RecordPublisher publisher)
    {
        var agent = SensorStart.TryStart(command, options);
        if (agent == null) return null;
        var handler = new PublishingHandler(publisher);
        FlowCapture? flows = null;
        try
        {
            if (interfaces.Count > 0)
            {
                flows = FlowCapture.Start(interfaces, handler);
                foreach (var i in flows.Sensor.Interfaces) Console.Error.WriteLine($"{command}: watching flows on {i} (TC ingress and egress)");
            }
            return new SensorRunner(agent, flows, handler) { Interfaces = interfaces };
        }
        catch (Exception e) when (e is ArgumentException or BpfException or InvalidOperationException or IOException)
        {
            Console.Error.WriteLine($"{command}: the flow sensor could not start: {e.Message}");
            flows?.Dispose();
            agent.Dispose();
            return null;
        }
    }

    /// <summary>Detaches every sensor, drains the rings and hands the last records (summaries, pending flows) to the publisher. Safe to call twice.</summary>
    public void Stop()
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0) return;
        _stop.Cancel();
        try
        {
            _drain.GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is BpfException or ObjectDisposedException)
        {
            Console.Error.WriteLine($"sensors: the drain stopped early: {e.Message}");
        }
        _agent.Stop(_sink);
        _flowStats = _flows?.Stop();
    }

    /// <summary>The flow sensor's counters after Stop (null without flows or before Stop).</summary>
    public FlowSensorStats? FlowStats => _flowStats;

    public void Dispose()
    {
        Stop();
        _flows?.Dispose();
        _agent.Dispose();
        _stop.Dispose();
    }
}

/// <summary>
/// On the drain thread: counts each record by type and copies it into its family's batch of the
/// publisher (never blocks). Counters may be read from other threads.
/// </summary>
internal sealed class PublishingHandler(RecordPublisher publisher) : ISensorBatchHandler
{
    private readonly long[] _counts = new long[RecordFormat.TypeCount];
    private long _refused;

    public RecordPublisher Publisher => publisher;

    public long Count(RecordType type) => (uint)type < (uint)_counts.Length ? Volatile.Read(ref _counts[(int)type]) : 0;

    public long Total => _counts.Sum();

    /// <summary>Records the publisher refused (malformed, or of no family).</summary>
    public long Refused => Volatile.Read(ref _refused);

    public void OnBatch(SensorBatch batch)
    {
        foreach (var record in batch)
        {
            var type = (int)record.Type;
            if ((uint)type < (uint)_counts.Length) _counts[type]++;
            var family = MessageFamilies.Of(record.Type);
            if (family == MessageFamily.None || !publisher.TryAppend(family, record.Bytes)) _refused++;
        }
    }
}
