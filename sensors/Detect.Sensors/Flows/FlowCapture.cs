using Detect.Records;
using Detect.Sensors.Bpf;
using Detect.Sensors.Enforcement;

namespace Detect.Sensors.Flows;

/// <summary>
/// The flow sensor beside the other sensors, for whatever consumes <see cref="ISensorBatchHandler"/>
/// (`detect capture --iface`, an agent loop): a thread of its own watches the named interfaces,
/// sweeps, and hands the flow records to the same handler the syscall and process sensors feed.
/// Pass <see cref="Handler"/> (not the original) to <see cref="SensorAgent.Run"/> and
/// <see cref="SensorAgent.Stop"/>: it lets one batch at a time through, so the handler never runs
/// on two threads at once. <see cref="Stop"/> detaches, exports what is pending (Flush) and hands
/// over the last records.
/// </summary>
public sealed class FlowCapture : IDisposable
{
    private const int BatchBytes = 64 * 1024;

    private readonly FlowSensor _sensor;
    private readonly ISensorBatchHandler _inner;
    private readonly Lock _gate = new();
    private readonly byte[] _buffer = GC.AllocateArray<byte>(BatchBytes, pinned: true);
    private readonly Thread _thread;
    private volatile bool _stopping;
    private RecordReaderStats _stats;
    private long _records;
    private int _stopped;
    private Exception? _failure;

    private FlowCapture(FlowSensor sensor, ISensorBatchHandler inner)
    {
        _sensor = sensor;
        _inner = inner;
        Handler = new Serialised(this);
        _thread = new Thread(Loop) { IsBackground = true, Name = "flow capture" };
    }

    /// <summary>The handler to give the other sensors: it shares the lock with the flow thread.</summary>
    public ISensorBatchHandler Handler { get; }

    public FlowSensor Sensor => _sensor;

    /// <summary>Flow records handed over so far.</summary>
    public long Records => Interlocked.Read(ref _records);

    /// <summary>
    /// Starts the flow sensor on <paramref name="interfaces"/> ("eth1", or "veth0@NETNS" for an
    /// interface in a named network namespace) and hands its records to <paramref name="handler"/>.
    /// </summary>
    public static FlowCapture Start(IEnumerable<string> interfaces, ISensorBatchHandler handler, FlowSensorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(interfaces);
        ArgumentNullException.ThrowIfNull(handler);
        var names = interfaces.Select(NetInterface.Parse).ToList();
        if (names.Count == 0) throw new ArgumentException("name at least one interface to watch");
        var sensor = FlowSensor.Start(options);
        try
        {
            foreach (var i in names) sensor.Attach(i.Name, i.Netns);
            var capture = new FlowCapture(sensor, handler);
            capture._thread.Start();
            return capture;
        }
        catch
        {
            sensor.Dispose();
            throw;
        }
    }

    private void Loop()
    {
        try
        {
            while (!_stopping)
            {
                var copier = new Copier(_buffer);
                _sensor.Pump(ref copier, TimeSpan.FromMilliseconds(200), BatchBytes / FlowRecord.Size);
                Deliver(copier.Length, copier.Count);
            }
        }
        catch (Exception e) when (e is BpfException or ObjectDisposedException)
        {
            _failure = e;
        }
    }

    /// <summary>Copies records out of the ring (up to a buffer's worth), so the ring is released before the handler's lock is taken.</summary>
    private struct Copier(byte[] buffer) : IRingBufferHandler
    {
        public int Length;
        public int Count;

        public void OnRecord(ReadOnlySpan<byte> record)
        {
            if (Length + record.Length > buffer.Length) return; // cannot happen: drains stop at a buffer's worth of records
            record.CopyTo(buffer.AsSpan(Length));
            Length += record.Length;
            Count++;
        }
    }

    private void Deliver(int length, int count)
    {
        if (count == 0) return;
        lock (_gate)
        {
            _inner.OnBatch(new SensorBatch(_buffer.AsSpan(0, length), count, ref _stats));
        }
        Interlocked.Add(ref _records, count);
    }

    private void DrainRest()
    {
        while (true)
        {
            var copier = new Copier(_buffer);
            _sensor.Drain(ref copier, BatchBytes / FlowRecord.Size);
            if (copier.Count == 0) return;
            Deliver(copier.Length, copier.Count);
        }
    }

    /// <summary>Stops the thread, detaches, exports everything pending (reason Flush) and hands the rest over.</summary>
    public FlowSensorStats Stop()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            _stopping = true;
            _sensor.Interrupt();
            _thread.Join();
            _sensor.Stop();
            DrainRest();
        }
        if (_failure != null) throw new BpfException($"the flow capture stopped early: {_failure.Message}", _failure);
        return _sensor.ReadStats();
    }

    public void Dispose()
    {
        if (_stopped == 0)
        {
            _stopping = true;
            _sensor.Interrupt();
            _thread.Join();
            Interlocked.Exchange(ref _stopped, 1);
        }
        _sensor.Dispose();
    }

    private sealed class Serialised(FlowCapture owner) : ISensorBatchHandler
    {
        public void OnBatch(SensorBatch batch)
        {
            lock (owner._gate) owner._inner.OnBatch(batch);
        }
    }
}
