using System.CommandLine;
using Detect.Records;
using Detect.Sensors;
using Detect.Sensors.Bpf;

namespace Detect.Cli.Sensors;

/// <summary>The sensor options shared by `capture`, `up` and `bench sensors`, and a start that fails in plain words.</summary>
internal sealed class SensorCliOptions
{
    public Option<string> Mode { get; } = new("--mode")
    {
        Description = "Syscall sensor: records (one per call), summary (per-process counts per interval) or off",
        DefaultValueFactory = _ => "records",
    };

    public Option<int[]> Pid { get; } = new("--pid") { Description = "Only these processes (tgid; repeatable)", AllowMultipleArgumentsPerToken = true };

    public Option<string[]> Cgroup { get; } = new("--cgroup") { Description = "Only processes in this cgroup v2 directory or below (repeatable)", AllowMultipleArgumentsPerToken = true };

    public Option<bool> NoProcess { get; } = new("--no-process") { Description = "Leave out exec/exit/fork records" };

    public Option<double> SummaryInterval { get; } = new("--summary-interval") { Description = "Summary mode: seconds between a process's summaries", DefaultValueFactory = _ => 1.0 };

    public void AddTo(Command command)
    {
        command.Options.Add(Mode);
        command.Options.Add(Pid);
        command.Options.Add(Cgroup);
        command.Options.Add(NoProcess);
        command.Options.Add(SummaryInterval);
    }

    public SensorOptions Read(ParseResult parse)
    {
        var mode = parse.GetValue(Mode)?.ToLowerInvariant() switch
        {
            "records" => SyscallMode.Records,
            "summary" => SyscallMode.Summary,
            "off" => SyscallMode.Off,
            var m => throw new ArgumentException($"--mode {m}: use records, summary or off"),
        };
        var interval = parse.GetValue(SummaryInterval);
        if (interval <= 0) throw new ArgumentException("--summary-interval must be positive");
        return new SensorOptions
        {
            SyscallMode = mode,
            ProcessEvents = !parse.GetValue(NoProcess),
            Pids = parse.GetValue(Pid) ?? [],
            Cgroups = parse.GetValue(Cgroup) ?? [],
            SummaryInterval = TimeSpan.FromSeconds(interval),
        };
    }
}

internal static class SensorStart
{
    /// <summary>
    /// Starts the sensors, telling stderr what was mounted and which programs run or were
    /// refused (with the kernel's reason). Returns null after printing a plain message when the
    /// sensors cannot start (no privilege, no BTF, every program refused).
    /// </summary>
    public static SensorAgent? TryStart(string command, SensorOptions options)
    {
        try
        {
            var agent = SensorAgent.Start(options);
            foreach (var m in agent.Mounted) Console.Error.WriteLine($"{command}: mounted {m}");
            foreach (var p in agent.Report.Programs)
            {
                if (p.State == ProgramState.Attached) Console.Error.WriteLine($"{command}: running {p.Object}/{p.Program} at {p.AttachPoint}");
                else if (p.State != ProgramState.Disabled) Console.Error.WriteLine($"{command}: WARNING {p}");
            }
            return agent;
        }
        catch (BpfPrivilegeException e)
        {
            Console.Error.WriteLine($"{command}: {e.Message}");
        }
        catch (BpfException e)
        {
            Console.Error.WriteLine($"{command}: the sensors could not start: {e.Message}");
        }
        catch (Exception e) when (e is ArgumentException or FileNotFoundException or InvalidOperationException or IOException)
        {
            Console.Error.WriteLine($"{command}: {e.Message}");
        }
        return null;
    }

    /// <summary>Exit code when the sensors could not start.</summary>
    public const int StartFailed = 3;
}

/// <summary>
/// Counts records per type as they are drained (and optionally writes them to a capture file).
/// Runs on the drain thread; the counters are read from others (64-bit reads are atomic here).
/// </summary>
internal sealed class CountingHandler(RecordFileWriter? writer = null) : ISensorBatchHandler
{
    private readonly long[] _counts = new long[RecordFormat.TypeCount];

    public long BytesWritten { get; private set; }

    public long Count(RecordType type) => Volatile.Read(ref _counts[(int)type]);

    public long Total => _counts.Sum();

    public void OnBatch(SensorBatch batch)
    {
        foreach (var record in batch)
        {
            var type = (int)record.Type;
            if ((uint)type < (uint)_counts.Length) _counts[type]++;
            if (writer != null)
            {
                writer.Write(record.Bytes);
                BytesWritten += record.Bytes.Length;
            }
        }
    }
}
