using System.Diagnostics;
using System.Runtime.InteropServices;
using Detect.Records;
using Detect.Sensors.Bpf;

namespace Detect.Sensors.Flows;

/// <summary>An interface the flow sensor watches (TC ingress and egress). Dispose stops watching it.</summary>
public sealed class FlowInterface : IDisposable
{
    private readonly List<TcAttachment> _attachments;
    private readonly Action<FlowInterface> _onDispose;
    private int _disposed;

    internal FlowInterface(string name, string? netns, int ifindex, List<TcAttachment> attachments, Action<FlowInterface> onDispose)
    {
        Name = name;
        Netns = netns;
        Ifindex = ifindex;
        _attachments = attachments;
        _onDispose = onDispose;
    }

    public string Name { get; }

    /// <summary>The network namespace (a name under /run/netns or a path), null for the agent's own.</summary>
    public string? Netns { get; }

    /// <summary>The interface index records carry (FlowRecord.Ifindex), in its namespace.</summary>
    public int Ifindex { get; }

    public IReadOnlyList<TcAttachment> Attachments => _attachments;

    public override string ToString() => Netns == null ? Name : $"{Name}@{Netns}";

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var a in _attachments) a.Dispose();
        _onDispose(this);
    }
}

/// <summary>
/// The counters of the flow sensor with the last sweep's view of the table. When the sensor is
/// quiet (detached, or no traffic since the sweep), <see cref="Unaccounted"/> is 0: every
/// packet seen is in a record, still pending in the table, or counted as uncounted.
/// </summary>
public readonly record struct FlowSensorStats(FlowCounters Counters, FlowSweep LastSweep, int MaxFlows, long InvalidRecords)
{
    /// <summary>Packets seen minus those exported, pending and uncounted (0 when quiet; never negative then).</summary>
    public long Unaccounted => (long)Counters.Packets - (long)Counters.ExportedPackets - (long)LastSweep.PendingPackets - (long)Counters.UncountedPackets;

    /// <summary>Table occupancy at the last sweep (0-1).</summary>
    public double Occupancy => MaxFlows == 0 ? 0 : (double)LastSweep.Entries / MaxFlows;
}

/// <summary>
/// The network flow sensor: bpf/flow.bpf.o on the TC ingress and egress of the interfaces the
/// user names (<see cref="Attach"/>, also inside another network namespace), flow records out of
/// one ring. <see cref="Sweep"/> runs the in-kernel sweep (timeouts of quiet flows, removal,
/// room-making under pressure); <see cref="Pump"/> waits, sweeps when due and drains, for an agent
/// loop; <see cref="Stop"/> detaches and exports everything pending (reason Flush). See
/// bpf/flow.bpf.c for what the counts mean.
/// </summary>
public sealed class FlowSensor : IDisposable
{
    public const string ObjectName = "flow.bpf.o";
    private const int EthHeader = 14;

    private static readonly string[] CgroupPrograms = ["detect_flow_connect4", "detect_flow_connect6", "detect_flow_sendmsg4", "detect_flow_sendmsg6"];

    private readonly FlowSensorOptions _options;
    private readonly BpfObject _obj;
    private readonly RingBufferReader _ring;
    private readonly RingBufferPoller _poller;
    private readonly List<FlowInterface> _interfaces = [];
    private readonly List<BpfLink> _cgroupLinks = [];
    private readonly Lock _gate = new();
    private long _nextSweep;
    private long _invalid;
    private FlowSweep _lastSweep;
    private int _disposed;

    private FlowSensor(FlowSensorOptions options, BpfObject obj)
    {
        _options = options;
        _obj = obj;
        _ring = new RingBufferReader(obj.Maps["detect_flow_events"]);
        _poller = new RingBufferPoller();
        _poller.Add(_ring, 0);
    }

    /// <summary>Which attribution programs run (tp_btf and cgroup hooks), and which the kernel refused.</summary>
    public AttachReport Report { get; private set; } = new([]);

    public FlowSensorOptions Options => _options;

    public IReadOnlyList<FlowInterface> Interfaces
    {
        get
        {
            lock (_gate) return _interfaces.ToList();
        }
    }

    /// <summary>The ring's fd (readable when records wait), for an agent that polls several rings.</summary>
    public int RingFd => _ring.Fd;

    /// <summary>Loads the sensor (nothing is watched until <see cref="Attach"/>). Needs root/CAP_BPF; says so plainly otherwise.</summary>
    public static FlowSensor Start(FlowSensorOptions? options = null)
    {
        options ??= new FlowSensorOptions();
        Validate(options);
        BpfSystem.EnsurePrivileged();
        BpfSystem.EnsureMounted();
        foreach (var cg in options.AttributionCgroups) CgroupTarget.Check(cg, options.AllowRootCgroup);
        var path = options.ObjectDirectory != null ? Path.Combine(options.ObjectDirectory, ObjectName) : BpfObject.Find(ObjectName);
        var obj = BpfObject.Open(path);
        FlowSensor? sensor = null;
        try
        {
            obj.SetReadOnly("flow_config", new FlowConfig
            {
                IdleTimeoutNs = Ns(options.IdleTimeout),
                ActiveTimeoutNs = Ns(options.ActiveTimeout),
                TcpLingerNs = Ns(options.TcpLinger),
                PressureIdleNs = Ns(options.PressureIdle),
                MaxFlows = (uint)options.MaxFlows,
                PressurePermille = (uint)Math.Round(options.PressureMark * 1000),
            });
            obj.Maps["detect_flows"].MaxEntries = (uint)options.MaxFlows;
            obj.Maps["detect_flow_events"].MaxEntries = options.RingBytes;
            obj.Programs["detect_flow_sock_state"].AutoLoad = options.AttributeConnects;
            foreach (var name in CgroupPrograms) obj.Programs[name].AutoLoad = options.AttributionCgroups.Count > 0;
            obj.Load();
            sensor = new FlowSensor(options, obj);
            var report = obj.AttachAll(p => p.Name == "detect_flow_sock_state");
            var statuses = report.Programs.Where(p => p.Program == "detect_flow_sock_state" || p.State is ProgramState.Refused).ToList();
            foreach (var cg in options.AttributionCgroups)
            {
                foreach (var name in CgroupPrograms)
                {
                    var program = obj.Programs[name];
                    try
                    {
                        sensor._cgroupLinks.Add(CgroupTarget.Attach(program, cg));
                        statuses.Add(new ProgramStatus(obj.Name, name, $"{program.AttachPoint} on {cg}", ProgramState.Attached, 0, null));
                    }
                    catch (BpfException e)
                    {
                        statuses.Add(new ProgramStatus(obj.Name, name, $"{program.AttachPoint} on {cg}", ProgramState.AttachRefused, e.Errno, e.Message));
                    }
                }
            }
            sensor.Report = new AttachReport(statuses);
            return sensor;
        }
        catch
        {
            if (sensor != null) sensor.Dispose();
            else obj.Dispose();
            throw;
        }
    }

    private static ulong Ns(TimeSpan t) => (ulong)(t.Ticks * 100);

    private static void Validate(FlowSensorOptions o)
    {
        if (o.IdleTimeout <= TimeSpan.Zero || o.ActiveTimeout <= TimeSpan.Zero || o.TcpLinger < TimeSpan.Zero || o.PressureIdle < TimeSpan.Zero)
            throw new ArgumentException("flow timeouts must be positive");
        if (o.MaxFlows < 1) throw new ArgumentException("MaxFlows must be at least 1");
        if (o.PressureMark is <= 0 or > 1) throw new ArgumentException("PressureMark must be in (0, 1]");
        if (o.RingBytes < 4096 || (o.RingBytes & (o.RingBytes - 1)) != 0) throw new ArgumentException("RingBytes must be a power of two of at least 4096");
        if (o.SweepInterval <= TimeSpan.Zero) throw new ArgumentException("SweepInterval must be positive");
    }

    /// <summary>
    /// Watches <paramref name="iface"/> (in network namespace <paramref name="netns"/> when given):
    /// TC ingress and egress. On loopback only egress, since every loopback packet passes both.
    /// </summary>
    public FlowInterface Attach(string iface, string? netns = null)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var ifindex = NetNamespace.InterfaceIndex(iface, netns);
        var attachments = new List<TcAttachment>();
        try
        {
            attachments.Add(TcAttachment.Attach(_obj.Programs["detect_flow_egress"], iface, TcDirection.Egress, netns));
            if (ifindex != 1) // loopback is ifindex 1 in every namespace
                attachments.Add(TcAttachment.Attach(_obj.Programs["detect_flow_ingress"], iface, TcDirection.Ingress, netns));
        }
        catch
        {
            foreach (var a in attachments) a.Dispose();
            throw;
        }
        var watched = new FlowInterface(iface, netns, ifindex, attachments, w =>
        {
            lock (_gate) _interfaces.Remove(w);
        });
        lock (_gate) _interfaces.Add(watched);
        return watched;
    }

    /// <summary>
    /// Runs the in-kernel sweep now: exports what the timeouts say is due (quiet flows: Idle, a
    /// TCP end's strays: TcpEnd, long flows: Active, and under pressure: Evicted), removes
    /// finished entries, and reports the table. With <paramref name="flush"/>, exports every
    /// pending count (reason Flush).
    /// </summary>
    public FlowSweep Sweep(bool flush = false)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        Span<byte> packet = stackalloc byte[EthHeader + FlowSweep.Size];
        packet.Clear();
        var command = new FlowSweep { Flags = flush ? FlowSweepFlags.Flush : FlowSweepFlags.None };
        MemoryMarshal.Write(packet[EthHeader..], in command);
        var rc = _obj.Programs["detect_flow_sweep"].TestRun(packet);
        if (rc != 0) throw new BpfException($"the flow sweep failed (program returned {rc})");
        var result = MemoryMarshal.Read<FlowSweep>(packet[EthHeader..]);
        lock (_gate) _lastSweep = result;
        _nextSweep = Stopwatch.GetTimestamp() + (long)(_options.SweepInterval.TotalSeconds * Stopwatch.Frequency);
        return result;
    }

    /// <summary>
    /// Hands each flow record in the ring to <paramref name="handler"/> (in place, no copy) and
    /// releases them. Returns the number handed over.
    /// </summary>
    public int Drain<THandler>(ref THandler handler, int maxRecords = int.MaxValue)
        where THandler : IRingBufferHandler, allows ref struct
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return _ring.Drain(ref handler, maxRecords);
    }

    /// <summary>Copies the waiting flow records into <paramref name="into"/> (tests, replay; allocates). Malformed ones are counted.</summary>
    public int DrainRecords(List<FlowRecord> into)
    {
        var collector = new Collector(into);
        Drain(ref collector);
        _invalid += collector.Invalid;
        return collector.Added;
    }

    private struct Collector(List<FlowRecord> into) : IRingBufferHandler
    {
        public int Added;
        public int Invalid;

        public void OnRecord(ReadOnlySpan<byte> record)
        {
            if (record.Length < FlowRecord.Size || MemoryMarshal.Read<ushort>(record) != RecordFormat.Magic || (RecordType)record[3] != RecordType.Flow)
            {
                Invalid++;
                return;
            }
            into.Add(MemoryMarshal.Read<FlowRecord>(record));
            Added++;
        }
    }

    /// <summary>Waits up to <paramref name="timeout"/> for records; true when some wait.</summary>
    public bool WaitForRecords(TimeSpan timeout)
    {
        if (_ring.PendingBytes > 0) return true;
        return _poller.Wait((int)Math.Clamp(timeout.TotalMilliseconds, 0, int.MaxValue)) != 0 || _ring.PendingBytes > 0;
    }

    /// <summary>
    /// One turn of an agent loop: waits up to <paramref name="timeout"/> for records (less when a
    /// sweep is due), sweeps when <see cref="FlowSensorOptions.SweepInterval"/> has passed, and
    /// drains (up to <paramref name="maxRecords"/>) into <paramref name="handler"/>. Returns the
    /// records handed over.
    /// </summary>
    public int Pump<THandler>(ref THandler handler, TimeSpan timeout, int maxRecords = int.MaxValue)
        where THandler : IRingBufferHandler, allows ref struct
    {
        var untilSweep = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), Math.Max(_nextSweep, Stopwatch.GetTimestamp()));
        WaitForRecords(untilSweep < timeout ? untilSweep : timeout);
        if (Stopwatch.GetTimestamp() >= _nextSweep) Sweep();
        return Drain(ref handler, maxRecords);
    }

    /// <summary>Wakes a <see cref="Pump"/> or <see cref="WaitForRecords"/> in progress, from any thread.</summary>
    public void Interrupt() => _poller.Interrupt();

    /// <summary>
    /// Stops watching every interface and the cgroups, then exports everything pending (reason
    /// Flush): drain afterwards to get the last records.
    /// </summary>
    public FlowSweep Stop()
    {
        foreach (var w in Interfaces) w.Dispose();
        foreach (var l in _cgroupLinks) l.Dispose();
        _cgroupLinks.Clear();
        return Sweep(flush: true);
    }

    /// <summary>The counters summed over CPUs, with the last sweep's view of the table.</summary>
    public FlowSensorStats ReadStats()
    {
        Span<FlowCounters> perCpu = new FlowCounters[BpfSystem.PossibleCpus];
        var sum = default(FlowCounters);
        if (_obj.Maps["detect_flow_stats"].TryLookupPerCpu(0u, perCpu))
            foreach (var c in perCpu) sum += c;
        FlowSweep last;
        lock (_gate) last = _lastSweep;
        return new FlowSensorStats(sum, last, _options.MaxFlows, _invalid);
    }

    /// <summary>The flow program's kernel run time (needs run-time statistics on: BpfSystem.EnableRunTimeStats).</summary>
    public (ProgramRunStats Ingress, ProgramRunStats Egress) ReadRunStats() =>
        (_obj.Programs["detect_flow_ingress"].ReadRunStats(), _obj.Programs["detect_flow_egress"].ReadRunStats());

    /// <summary>Detaches everything and unloads the sensor (pending counts are lost unless <see cref="Stop"/> ran first).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var w in Interfaces) w.Dispose();
        foreach (var l in _cgroupLinks) l.Dispose();
        _ring.Dispose();
        _poller.Dispose();
        _obj.Dispose();
    }
}
