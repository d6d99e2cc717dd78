using System.Collections.Concurrent;
using Detect.Records;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// Keeps copies of every process-ring record and agent flush, and the syscall records of the
/// processes a test watches (the rest of the host's syscalls are only counted).
/// </summary>
internal sealed class Collector : ISensorBatchHandler
{
    private readonly ConcurrentDictionary<uint, byte> _watched = new();
    private readonly object _gate = new();
    private readonly List<SyscallRecord> _syscalls = [];
    private readonly List<ExecRecord> _execs = [];
    private readonly List<ExitRecord> _exits = [];
    private readonly List<ForkRecord> _forks = [];
    private readonly List<SyscallSummaryRecord> _summaries = [];
    private long _otherSyscalls;

    public void Watch(int tgid) => _watched[(uint)tgid] = 1;

    public long OtherSyscalls => Interlocked.Read(ref _otherSyscalls);

    public void OnBatch(SensorBatch batch)
    {
        lock (_gate)
        {
            foreach (var r in batch)
            {
                switch (r.Type)
                {
                    case RecordType.Syscall:
                        ref readonly var s = ref r.As<SyscallRecord>();
                        if (_watched.ContainsKey(s.Task.Tgid)) _syscalls.Add(s);
                        else _otherSyscalls++;
                        break;
                    case RecordType.Exec: _execs.Add(r.As<ExecRecord>()); break;
                    case RecordType.Exit: _exits.Add(r.As<ExitRecord>()); break;
                    case RecordType.Fork: _forks.Add(r.As<ForkRecord>()); break;
                    case RecordType.SyscallSummary: _summaries.Add(r.As<SyscallSummaryRecord>()); break;
                }
            }
        }
    }

    public List<SyscallRecord> Syscalls(int tgid) { lock (_gate) return _syscalls.Where(s => s.Task.Tgid == (uint)tgid).ToList(); }
    public List<ExecRecord> Execs(int tgid) { lock (_gate) return _execs.Where(s => s.Task.Tgid == (uint)tgid).ToList(); }
    public List<ExitRecord> Exits(int tgid) { lock (_gate) return _exits.Where(s => s.Task.Tgid == (uint)tgid).ToList(); }
    public List<ForkRecord> Forks(int parentTgid) { lock (_gate) return _forks.Where(s => s.Task.Tgid == (uint)parentTgid).ToList(); }
    public List<SyscallSummaryRecord> Summaries(int tgid) { lock (_gate) return _summaries.Where(s => s.Task.Tgid == (uint)tgid).ToList(); }
    public int SyscallCountFrom(IEnumerable<int> tgids) { var set = tgids.Select(t => (uint)t).ToHashSet(); lock (_gate) return _syscalls.Count(s => set.Contains(s.Task.Tgid)); }
}

/// <summary>A running agent draining into a <see cref="Collector"/> on its own thread, stopped and unloaded on dispose.</summary>
internal sealed class SensorHarness : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly Task _drain;

    public SensorHarness(SensorOptions options)
    {
        Needs.KernelBtf();
        Agent = SensorAgent.Start(options);
        TestContext.Current.TestOutputHelper?.WriteLine(Agent.Report.ToString());
        _drain = Agent.RunAsync(Collector, _cts.Token);
    }

    public SensorAgent Agent { get; }

    public Collector Collector { get; } = new();

    /// <summary>Polls until the condition holds (the drain thread fills the collector), or fails the test.</summary>
    public void WaitUntil(Func<bool> condition, string what, int timeoutMs = 10_000)
    {
        var deadline = Environment.TickCount64 + timeoutMs;
        while (!condition())
        {
            if (Environment.TickCount64 > deadline) Assert.Fail($"timed out after {timeoutMs} ms waiting for {what}");
            Thread.Sleep(10);
        }
    }

    /// <summary>Stops draining, then detaches, drains the rest and flushes (Stop), as the CLI does on Ctrl-C.</summary>
    public void StopAndFlush()
    {
        if (_cts.IsCancellationRequested) return;
        _cts.Cancel();
        _drain.GetAwaiter().GetResult();
        Agent.Stop(Collector);
    }

    public void Dispose()
    {
        try
        {
            StopAndFlush();
        }
        finally
        {
            Agent.Dispose();
            _cts.Dispose();
        }
    }
}
