using System.Runtime.InteropServices;
using Detect.Records;
using Detect.Sensors.Bpf;

namespace Detect.Sensors;

/// <summary>
/// The syscall and process sensors in this host's kernel, and the drain of their two rings.
/// <see cref="Start"/> checks privilege, mounts bpffs/tracefs if needed, loads process.bpf.o
/// (which owns the maps every sensor shares: process ring, loss counters, filters) and
/// syscalls.bpf.o (which reuses them), and attaches each program separately
/// (<see cref="Report"/> says which run). <see cref="Run"/> drains both rings on the calling
/// thread, process ring first, and hands the records over in batches; <see cref="Stop"/>
/// detaches, drains what is left and flushes the summaries; Dispose unloads.
/// </summary>
public sealed class SensorAgent : IDisposable
{
    public const string ProcessObject = "process.bpf.o";
    public const string SyscallObject = "syscalls.bpf.o";

    private static readonly string[] SharedMaps = ["detect_process_events", "detect_lost", "detect_pid_filter", "detect_cgroup_filter"];

    private readonly SensorOptions _options;
    private readonly List<BpfObject> _objects = [];
    private readonly BpfObject _process;
    private readonly BpfObject? _syscalls;
    private readonly RingBufferReader _processRing;
    private readonly RingBufferReader? _syscallRing;
    private readonly RingBufferPoller _poller;
    private readonly byte[] _flushBuffer = GC.AllocateArray<byte>(64 * SyscallSummaryRecord.Size, pinned: true);
    private RecordReaderStats _stats;
    private Dictionary<uint, uint> _lastTotals = [];
    private long _syscallRecords, _processRecords, _flushedSummaries;
    private int _stopped, _disposed;

    private SensorAgent(SensorOptions options)
    {
        _options = options;
        Validate(options);
        BpfSystem.EnsurePrivileged();
        Mounted = BpfSystem.EnsureMounted();
        try
        {
            var cgroupIds = options.Cgroups.Select(CgroupPath.Id).ToList();
            var config = new SensorConfig
            {
                AgentTgid = options.ExcludeSelf ? (uint)Environment.ProcessId : 0,
                SyscallMode = options.SyscallMode,
                Filters = (options.Pids.Count > 0 ? SensorFilters.Pid : 0) | (cgroupIds.Count > 0 ? SensorFilters.Cgroup : 0),
                SummaryIntervalNs = (ulong)options.SummaryInterval.Ticks * 100,
            };
            Config = config;

            _process = Open(ProcessObject);
            _process.SetConfig(config);
            _process.Maps["detect_process_events"].MaxEntries = options.ProcessRingBytes;
            if (!options.ProcessEvents)
                foreach (var p in _process.Programs) p.AutoLoad = false;
            _process.Load();
            foreach (var pid in options.Pids) AddPid(pid);
            foreach (var id in cgroupIds) _process.Maps["detect_cgroup_filter"].Update(id, (byte)1);

            if (options.SyscallMode != SyscallMode.Off)
            {
                _syscalls = Open(SyscallObject);
                _syscalls.SetConfig(config);
                foreach (var name in SharedMaps) _syscalls.Maps[name].ReuseFrom(_process.Maps[name]);
                _syscalls.Maps["detect_syscall_events"].MaxEntries = options.SyscallRingBytes;
                // The process-exit flush only matters to summaries.
                _syscalls.Programs["detect_syscall_process_exit"].AutoLoad = options.SyscallMode == SyscallMode.Summary;
                _syscalls.Load();
                _syscallRing = new RingBufferReader(_syscalls.Maps["detect_syscall_events"]);
            }

            _processRing = new RingBufferReader(_process.Maps["detect_process_events"]);
            _poller = new RingBufferPoller();
            _poller.Add(_processRing, (int)SensorSource.ProcessRing);
            if (_syscallRing != null) _poller.Add(_syscallRing, (int)SensorSource.SyscallRing);

            Report = AttachReport.Combine(_objects.Select(o => o.AttachAll()));
            if (!Report.Attached.Any())
                throw new BpfException("no sensor program could be attached:\n" + Report);
        }
        catch
        {
            DisposeKernelObjects();
            throw;
        }
    }

    /// <summary>Loads and attaches the sensors. Throws <see cref="BpfPrivilegeException"/> without root.</summary>
    public static SensorAgent Start(SensorOptions? options = null) => new(options ?? new SensorOptions());

    public SensorOptions Options => _options;

    /// <summary>The configuration written into the programs' read-only data.</summary>
    public SensorConfig Config { get; }

    /// <summary>Which programs run, and which the kernel refused (with its reason).</summary>
    public AttachReport Report { get; }

    /// <summary>File systems this start mounted (bpffs, tracefs), for the log.</summary>
    public IReadOnlyList<string> Mounted { get; }

    /// <summary>The loaded objects (for statistics and for tests).</summary>
    public IReadOnlyList<BpfObject> Objects => _objects;

    /// <summary>Records handed over so far, and records refused as malformed.</summary>
    public RecordReaderStats ReaderStats => _stats;

    public long SyscallRingRecords => Volatile.Read(ref _syscallRecords);
    public long ProcessRingRecords => Volatile.Read(ref _processRecords);
    public long FlushedSummaries => Volatile.Read(ref _flushedSummaries);

    private BpfObject Open(string file)
    {
        var path = _options.ObjectDirectory is { } dir ? Path.Combine(dir, file) : BpfObject.Find(file);
        var obj = BpfObject.Open(path);
        _objects.Add(obj);
        return obj;
    }

    private static void Validate(SensorOptions o)
    {
        static bool Pow2(uint v) => v >= 4096 && (v & (v - 1)) == 0;
        if (!Pow2(o.SyscallRingBytes)) throw new ArgumentException($"SyscallRingBytes {o.SyscallRingBytes} must be a power of two of at least 4096");
        if (!Pow2(o.ProcessRingBytes)) throw new ArgumentException($"ProcessRingBytes {o.ProcessRingBytes} must be a power of two of at least 4096");
        if (o.SummaryInterval <= TimeSpan.Zero) throw new ArgumentException("SummaryInterval must be positive");
        if (o.BatchRecords <= 0) throw new ArgumentException("BatchRecords must be positive");
        if (o.SyscallMode == SyscallMode.Off && !o.ProcessEvents) throw new ArgumentException("both sensors are off: nothing to run");
    }

    /// <summary>Adds a process to the pid filter (only when the agent was started with <see cref="SensorOptions.Pids"/>).</summary>
    public void AddPid(int tgid)
    {
        if ((Config.Filters & SensorFilters.Pid) == 0)
            throw new InvalidOperationException("the pid filter is off: start the agent with at least one pid in SensorOptions.Pids");
        _process.Maps["detect_pid_filter"].Update((uint)tgid, (byte)1);
    }

    public bool RemovePid(int tgid) => _process.Maps["detect_pid_filter"].Delete((uint)tgid);

    /// <summary>Reads the loss counters (sums over CPUs). Safe from any thread.</summary>
    public LossCounters ReadLosses()
    {
        var lost = new ulong[RecordFormat.TypeCount];
        var map = _process.Maps["detect_lost"];
        for (var t = 0u; t < RecordFormat.TypeCount; t++) lost[t] = map.SumPerCpu(t);
        var uncounted = _syscalls?.Maps["detect_syscall_uncounted"].SumPerCpu(0u) ?? 0;
        return new LossCounters { LostByType = lost, SummaryUncounted = uncounted, Malformed = _stats.Errors };
    }

    /// <summary>Kernel run-time statistics of every loaded program (needs <see cref="BpfSystem.EnableRunTimeStats"/>).</summary>
    public IReadOnlyDictionary<string, ProgramRunStats> ReadRunStats() =>
        _objects.SelectMany(o => o.Programs).Where(p => p.Fd >= 0).ToDictionary(p => p.Name, p => p.ReadRunStats());

    /// <summary>
    /// Drains the rings on the calling thread until <paramref name="cancellationToken"/> fires:
    /// drains while records arrive, waits (epoll, at most <see cref="SensorOptions.PollInterval"/>)
    /// when both rings are empty, and in summary mode flushes idle processes once per interval.
    /// Does not detach: call <see cref="Stop"/> afterwards for an orderly end.
    /// </summary>
    public void Run(ISensorBatchHandler handler, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        using var wake = cancellationToken.Register(_poller.Interrupt);
        var pollMs = Math.Max(1, (int)_options.PollInterval.TotalMilliseconds);
        var nextFlush = Environment.TickCount64 + (long)_options.SummaryInterval.TotalMilliseconds;
        while (!cancellationToken.IsCancellationRequested)
        {
            var n = DrainOnce(handler);
            if (_options.SyscallMode == SyscallMode.Summary && Environment.TickCount64 >= nextFlush)
            {
                FlushSummaries(handler, all: false);
                nextFlush = Environment.TickCount64 + (long)_options.SummaryInterval.TotalMilliseconds;
            }
            if (n == 0) _poller.Wait(pollMs);
        }
    }

    /// <summary><see cref="Run"/> on a dedicated thread.</summary>
    public Task RunAsync(ISensorBatchHandler handler, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(() => Run(handler, cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>
    /// Hands over what the rings hold now, process ring first, a batch at a time, until both are
    /// empty (or a budget of 64 batches, so a storm cannot hold the caller forever). Returns the records.
    /// </summary>
    public int DrainOnce(ISensorBatchHandler handler)
    {
        var total = 0;
        for (var round = 0; round < 64; round++)
        {
            var n = DrainRing(_processRing, SensorSource.ProcessRing, handler, ref _processRecords);
            if (_syscallRing != null) n += DrainRing(_syscallRing, SensorSource.SyscallRing, handler, ref _syscallRecords);
            total += n;
            if (n == 0) break;
        }
        return total;
    }

    private int DrainRing(RingBufferReader ring, SensorSource source, ISensorBatchHandler handler, ref long counter)
    {
        var batch = ring.ReadBatch(_options.BatchRecords);
        if (batch.Count == 0)
        {
            ring.Release(batch); // discarded samples, if any
            return 0;
        }
        try
        {
            handler.OnBatch(new SensorBatch(batch, source, ref _stats));
        }
        finally
        {
            ring.Release(batch);
        }
        Volatile.Write(ref counter, counter + batch.Count);
        return batch.Count;
    }

    /// <summary>
    /// Summary mode: writes a summary (flag USER_FLUSHED) for every process whose counts did not
    /// move since the previous pass (idle for at least one pass; <see cref="Run"/> makes a pass
    /// per summary interval), or for every process when <paramref name="all"/>, and removes the
    /// entries. lookup-and-delete takes each entry in one step. Returns the summaries written.
    /// </summary>
    /// <remarks>
    /// A process that becomes active again in the microseconds between the read of its idle entry
    /// and its removal may lose the count of that first call: the kernel side cannot tell.
    /// </remarks>
    public int FlushSummaries(ISensorBatchHandler handler, bool all)
    {
        if (_syscalls == null || _options.SyscallMode != SyscallMode.Summary) return 0;
        var map = _syscalls.Maps["detect_syscall_counts"];
        var value = new byte[map.ValueSize]; // struct summary_entry: the record, then the interval tick
        var key = new byte[4];
        var totals = new Dictionary<uint, uint>();
        var flushed = 0;
        var inBuffer = 0;
        foreach (var tgid in map.Keys<uint>())
        {
            BitConverter.TryWriteBytes(key, tgid);
            if (!all)
            {
                if (!map.TryLookup(key, value)) continue;
                var total = MemoryMarshal.Read<SyscallSummaryRecord>(value).Total;
                if (!_lastTotals.TryGetValue(tgid, out var last) || last != total)
                {
                    totals[tgid] = total; // new or active since the last pass: the kernel reports it
                    continue;
                }
            }
            if (!map.TryLookupAndDelete(key, value)) continue;
            ref var s = ref MemoryMarshal.AsRef<SyscallSummaryRecord>(value.AsSpan(0, SyscallSummaryRecord.Size));
            if (s.Total == 0) continue; // everything was already reported
            s.Header = new RecordHeader
            {
                Magic = RecordFormat.Magic,
                Version = RecordFormat.Version,
                Type = RecordType.SyscallSummary,
                Length = SyscallSummaryRecord.Size,
                Cpu = (ushort)Math.Max(0, Thread.GetCurrentProcessorId()),
                KtimeNs = (ulong)KernelClock.BootTimeNs(),
            };
            s.Flags |= SummaryFlags.UserFlushed;
            value.AsSpan(0, SyscallSummaryRecord.Size).CopyTo(_flushBuffer.AsSpan(inBuffer * SyscallSummaryRecord.Size));
            inBuffer++;
            flushed++;
            if (inBuffer * SyscallSummaryRecord.Size == _flushBuffer.Length)
            {
                handler.OnBatch(new SensorBatch(_flushBuffer.AsSpan(0, inBuffer * SyscallSummaryRecord.Size), inBuffer, ref _stats));
                inBuffer = 0;
            }
        }
        if (inBuffer > 0)
            handler.OnBatch(new SensorBatch(_flushBuffer.AsSpan(0, inBuffer * SyscallSummaryRecord.Size), inBuffer, ref _stats));
        _lastTotals = totals;
        Interlocked.Add(ref _flushedSummaries, flushed);
        return flushed;
    }

    /// <summary>
    /// The orderly end: detaches every program (no new records), drains what the rings still
    /// hold, and flushes every summary. The agent cannot run again; Dispose unloads.
    /// </summary>
    public void Stop(ISensorBatchHandler handler)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0) return;
        foreach (var o in _objects)
            foreach (var p in o.Programs)
                p.Detach();
        while (DrainOnce(handler) > 0) { }
        FlushSummaries(handler, all: true);
    }

    private void DisposeKernelObjects()
    {
        _syscallRing?.Dispose();
        _processRing?.Dispose();
        _poller?.Dispose();
        // Links first in each object's Dispose; syscalls before process (it borrows process's maps).
        for (var i = _objects.Count - 1; i >= 0; i--) _objects[i].Dispose();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        DisposeKernelObjects();
    }
}
