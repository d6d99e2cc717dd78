using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Detect.Cli.Sensors;
using Detect.Records;
using Detect.Sensors;
using Detect.Sensors.Bpf;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect bench sensors`: a syscall storm from child processes (detect-workload: exactly N
/// getppid calls each) against the real sensors. Measures records per second drained by the
/// agent (each one validated), the kernel's time per event (BPF run-time statistics: run_time_ns
/// / run_cnt of the syscall programs), and accounts for every generated record: drained + lost
/// (the kernel's failed-reservation counters) must equal generated. Then the same storm in
/// summary mode: its kernel cost, and its counts against the calls made.
/// </summary>
public sealed class BenchSensorsCommand : ICliCommand
{
    public string? Parent => "bench";

    public Command Create()
    {
        var calls = new Option<long>("--calls") { Description = "getppid calls per storm process", DefaultValueFactory = _ => 10_000_000 };
        var procs = new Option<int>("--procs") { Description = "Storm processes (this machine has 2 cores: the agent drains on one)", DefaultValueFactory = _ => 1 };
        var ringMb = new Option<int>("--ring-mb") { Description = "Syscall ring size in MiB (power of two)", DefaultValueFactory = _ => 32 };
        var filter = new Option<string>("--filter") { Description = "pid: the sensors see only the storm (exact accounting); none: every process on the host", DefaultValueFactory = _ => "pid" };
        var noSummary = new Option<bool>("--no-summary") { Description = "Skip the summary-mode run" };
        var command = new Command("sensors", "Syscall sensor throughput under a storm: records/s drained, kernel ns per event, loss versus generated")
        {
            calls, procs, ringMb, filter, noSummary,
        };
        command.SetAction((parse, ct) => Task.FromResult(Execute(
            parse.GetValue(calls), parse.GetValue(procs), parse.GetValue(ringMb), parse.GetValue(filter) ?? "pid", !parse.GetValue(noSummary), ct)));
        return command;
    }

    private static int Execute(long calls, int procs, int ringMb, string filter, bool summary, CancellationToken ct)
    {
        if (calls <= 0 || procs <= 0 || ringMb <= 0 || (ringMb & (ringMb - 1)) != 0 || filter is not ("pid" or "none"))
        {
            Console.Error.WriteLine("bench sensors: --calls and --procs must be positive, --ring-mb a power of two, --filter pid or none");
            return 2;
        }
        try
        {
            BpfSystem.EnsurePrivileged();
        }
        catch (BpfPrivilegeException e)
        {
            Console.Error.WriteLine($"bench sensors: {e.Message}");
            return SensorStart.StartFailed;
        }
        Console.Error.WriteLine($"bench sensors: {procs} storm process(es) x {calls:N0} getppid, {Environment.ProcessorCount} cores, ring {ringMb} MiB, filter {filter}");
        using var stats = BpfSystem.EnableRunTimeStats(); // kernel.bpf_stats_enabled for as long as this handle lives
        Console.Error.WriteLine("bench sensors: BPF run-time statistics on (BPF_ENABLE_STATS, as kernel.bpf_stats_enabled=1)");

        var result = new Dictionary<string, object>
        {
            ["benchmark"] = "sensors",
            ["cores"] = Environment.ProcessorCount,
            ["procs"] = procs,
            ["calls_per_proc"] = calls,
            ["ring_mib"] = ringMb,
            ["filter"] = filter,
            ["record_bytes"] = SyscallRecord.Size,
        };
        var records = RunPhase(SyscallMode.Records, calls, procs, ringMb, filter, ct);
        if (records == null) return SensorStart.StartFailed;
        result["records"] = records;
        var backlog = RunBacklog(Math.Min(calls, 2_500_000), ct);
        if (backlog == null) return SensorStart.StartFailed;
        result["drain_capacity"] = backlog;
        if (summary)
        {
            var s = RunPhase(SyscallMode.Summary, calls, procs, ringMb, filter, ct);
            if (s == null) return SensorStart.StartFailed;
            result["summary"] = s;
        }
        result["aim_records_per_s"] = 1_000_000;
        result["aim_kernel_ns_per_event"] = 150;
        result["records_per_s"] = records["records_per_s"];
        result["drain_capacity_records_per_s"] = backlog["records_per_s"];
        result["kernel_ns_per_event"] = records["kernel_ns_per_event"];
        result["unaccounted"] = records["unaccounted"];
        Console.WriteLine(JsonSerializer.Serialize(result));
        return 0;
    }

    private static Dictionary<string, object>? RunPhase(SyscallMode mode, long calls, int procs, int ringMb, string filter, CancellationToken ct)
    {
        var name = mode.ToString().ToLowerInvariant();
        var storms = new List<StormProcess>();
        try
        {
            for (var i = 0; i < procs; i++) storms.Add(new StormProcess(calls));
            var options = new SensorOptions
            {
                SyscallMode = mode,
                Pids = filter == "pid" ? storms.Select(s => s.Pid).ToArray() : [],
                SyscallRingBytes = (uint)ringMb << 20,
                SummaryInterval = TimeSpan.FromSeconds(1),
            };
            using var agent = SensorStart.TryStart("bench sensors", options);
            if (agent == null) return null;
            var handler = new StormHandler(storms.Select(s => (uint)s.Pid).ToArray());
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var drain = agent.RunAsync(handler, cts.Token);

            // An empty program on the same hook: the statistics' own cost per run (two clock reads).
            using var floor = BpfObject.Open(BpfObject.Find("stats_floor.bpf.o"));
            floor.Load();
            floor.AttachAll();
            var floorProgram = floor.Programs["stats_floor_sys_exit"];

            var before = agent.ReadRunStats();
            var floorBefore = floorProgram.ReadRunStats();
            var lossBefore = agent.ReadLosses();
            var clock = Stopwatch.StartNew();
            foreach (var s in storms) s.Go();
            foreach (var s in storms) s.WaitForExit(TimeSpan.FromMinutes(5));
            var stormSeconds = clock.Elapsed.TotalSeconds;
            var generated = storms.Sum(s => s.ExpectedRecords);
            var floorRun = floorProgram.ReadRunStats() - floorBefore;
            floor.Dispose();

            // Records mode: done when every generated record is drained or counted lost.
            // Summary mode: when the summaries written at each storm's exit have arrived.
            var deadline = Stopwatch.StartNew();
            while (deadline.Elapsed < TimeSpan.FromSeconds(30))
            {
                var lost = (long)(agent.ReadLosses() - lossBefore).TotalLost;
                if (mode == SyscallMode.Records ? handler.StormRecords + lost >= generated : handler.ExitedSummaries >= procs) break;
                Thread.Sleep(1);
            }
            var drainSeconds = clock.Elapsed.TotalSeconds;
            var after = agent.ReadRunStats();
            cts.Cancel();
            drain.GetAwaiter().GetResult();
            agent.Stop(handler);
            var losses = agent.ReadLosses() - lossBefore;

            var exit = after["detect_sys_exit"] - before["detect_sys_exit"];
            var noReturn = (after["detect_sys_enter_exit"] - before["detect_sys_enter_exit"]).RunTimeNs
                + (after["detect_sys_enter_exit_group"] - before["detect_sys_enter_exit_group"]).RunTimeNs;
            // Every syscall runs detect_sys_exit (exit and exit_group their entry programs instead).
            var nsPerEvent = exit.RunCount == 0 ? 0 : (double)(exit.RunTimeNs + noReturn) / exit.RunCount;
            var phase = new Dictionary<string, object>
            {
                ["generated"] = generated,
                ["storm_seconds"] = Math.Round(stormSeconds, 3),
                ["syscalls_per_s"] = Math.Round(generated / stormSeconds),
                ["kernel_ns_per_event"] = Math.Round(nsPerEvent, 1),
                ["stats_floor_ns_per_run"] = Math.Round(floorRun.NsPerRun, 1),
                ["kernel_ns_per_event_above_floor"] = Math.Round(nsPerEvent - floorRun.NsPerRun, 1),
                ["program_runs"] = exit.RunCount,
                ["malformed"] = losses.Malformed,
            };
            if (mode == SyscallMode.Records)
            {
                var lost = (long)losses.Lost(RecordType.Syscall);
                phase["drained"] = handler.StormRecords;
                phase["drained_total"] = handler.SyscallRecords;
                phase["lost"] = lost;
                phase["unaccounted"] = generated - handler.StormRecords - lost;
                phase["drain_seconds"] = Math.Round(drainSeconds, 3);
                phase["records_per_s"] = Math.Round(handler.StormRecords / drainSeconds);
                Console.Error.WriteLine($"records: {generated:N0} generated in {stormSeconds:F2} s; drained {handler.StormRecords:N0} in {drainSeconds:F2} s " +
                    $"= {handler.StormRecords / drainSeconds:N0} records/s; lost {lost:N0}; unaccounted {generated - handler.StormRecords - lost:N0}; " +
                    $"kernel {nsPerEvent:F1} ns/event ({nsPerEvent - floorRun.NsPerRun:F1} above the {floorRun.NsPerRun:F1} ns an empty program measures)");
            }
            else
            {
                phase["counted"] = handler.SummaryTotal;
                phase["summaries"] = handler.Summaries;
                phase["lost_summaries"] = losses.Lost(RecordType.SyscallSummary);
                phase["uncounted"] = losses.SummaryUncounted;
                phase["unaccounted"] = generated - handler.SummaryTotal;
                Console.Error.WriteLine($"summary: {generated:N0} calls in {stormSeconds:F2} s = {generated / stormSeconds:N0}/s; counted {handler.SummaryTotal:N0} " +
                    $"in {handler.Summaries} summaries; kernel {nsPerEvent:F1} ns/event ({nsPerEvent - floorRun.NsPerRun:F1} above the {floorRun.NsPerRun:F1} ns floor)");
            }
            return phase;
        }
        finally
        {
            foreach (var s in storms) s.Dispose();
        }
    }

    /// <summary>
    /// The agent's drain rate with a backlog: the storm fills a 256 MiB ring while nobody drains,
    /// then the ring is drained on this thread (the same validated walk as the live drain) and
    /// timed. The live rate above is bounded by how fast the storm can make syscalls here; this
    /// is how fast the agent empties the ring.
    /// </summary>
    private static Dictionary<string, object>? RunBacklog(long calls, CancellationToken ct)
    {
        using var storm = new StormProcess(calls);
        using var agent = SensorStart.TryStart("bench sensors", new SensorOptions
        {
            SyscallMode = SyscallMode.Records,
            ProcessEvents = false,
            Pids = [storm.Pid],
            SyscallRingBytes = 256u << 20,
        });
        if (agent == null) return null;
        var handler = new StormHandler([(uint)storm.Pid]);
        storm.Go();
        storm.WaitForExit(TimeSpan.FromMinutes(5));
        ct.ThrowIfCancellationRequested();
        var clock = Stopwatch.StartNew();
        while (agent.DrainOnce(handler) > 0) { }
        var seconds = clock.Elapsed.TotalSeconds;
        var lost = (long)agent.ReadLosses().Lost(RecordType.Syscall);
        agent.Stop(handler);
        var rate = handler.StormRecords / seconds;
        Console.Error.WriteLine($"drain capacity: {handler.StormRecords:N0} records waiting in the ring drained in {seconds:F3} s = {rate:N0} records/s (lost {lost:N0})");
        return new Dictionary<string, object>
        {
            ["generated"] = storm.ExpectedRecords,
            ["drained"] = handler.StormRecords,
            ["lost"] = lost,
            ["unaccounted"] = storm.ExpectedRecords - handler.StormRecords - lost,
            ["drain_seconds"] = Math.Round(seconds, 4),
            ["records_per_s"] = Math.Round(rate),
        };
    }

    /// <summary>Walks every record (validated by the batch enumerator) and counts the storm's.</summary>
    private sealed class StormHandler(uint[] storms) : ISensorBatchHandler
    {
        private long _stormRecords, _syscallRecords, _summaryTotal, _summaries, _exitedSummaries;

        public long StormRecords => Volatile.Read(ref _stormRecords);
        public long SyscallRecords => Volatile.Read(ref _syscallRecords);
        public long SummaryTotal => Volatile.Read(ref _summaryTotal);
        public long Summaries => Volatile.Read(ref _summaries);
        public long ExitedSummaries => Volatile.Read(ref _exitedSummaries);

        public void OnBatch(SensorBatch batch)
        {
            long storm = 0, syscalls = 0;
            foreach (var r in batch)
            {
                if (r.Type == RecordType.Syscall)
                {
                    syscalls++;
                    if (IsStorm(r.As<SyscallRecord>().Task.Tgid)) storm++;
                }
                else if (r.Type == RecordType.SyscallSummary)
                {
                    ref readonly var s = ref r.As<SyscallSummaryRecord>();
                    if (!IsStorm(s.Task.Tgid)) continue;
                    _summaryTotal += s.Total; // Total includes Other
                    _summaries++;
                    if ((s.Flags & SummaryFlags.ProcessExited) != 0) _exitedSummaries++;
                }
            }
            Volatile.Write(ref _syscallRecords, _syscallRecords + syscalls);
            Volatile.Write(ref _stormRecords, _stormRecords + storm);
        }

        private bool IsStorm(uint tgid)
        {
            foreach (var s in storms)
                if (s == tgid) return true;
            return false;
        }
    }
}
