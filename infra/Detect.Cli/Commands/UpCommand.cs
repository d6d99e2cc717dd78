using System.CommandLine;
using System.Diagnostics;
using Detect.Cli.Sensors;
using Detect.Records;
using Detect.Sensors;
using Spectre.Console;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect up`: the product on this host. For now: the sensors, with a live table of records per
/// type, rates and losses, until Ctrl-C; then an orderly stop (detach, drain, flush).
/// </summary>
public sealed class UpCommand : ICliCommand
{
    public Command Create()
    {
        var sensorOptions = new SensorCliOptions();
        var refresh = new Option<double>("--refresh") { Description = "Seconds between table updates", DefaultValueFactory = _ => 1.0 };
        var seconds = new Option<double?>("--seconds") { Description = "Stop after this long (default: run until Ctrl-C)" };
        var command = new Command("up", "Run Detect on this host: the sensors, with live counts per record type and losses, until Ctrl-C")
        {
            refresh, seconds,
        };
        sensorOptions.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            SensorOptions options;
            try
            {
                options = sensorOptions.Read(parse);
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"up: {e.Message}");
                return Task.FromResult(2);
            }
            return Task.FromResult(Run(options, TimeSpan.FromSeconds(Math.Max(0.1, parse.GetValue(refresh))), parse.GetValue(seconds), ct));
        });
        return command;
    }

    private static int Run(SensorOptions options, TimeSpan refresh, double? seconds, CancellationToken ct)
    {
        using var agent = SensorStart.TryStart("up", options);
        if (agent == null) return SensorStart.StartFailed;
        var handler = new CountingHandler();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (seconds is { } s) stop.CancelAfter(TimeSpan.FromSeconds(s));
        var drain = agent.RunAsync(handler, stop.Token);
        var view = new SensorView(agent, handler);

        // A terminal gets a live table; a pipe or a log gets one line per refresh.
        if (AnsiConsole.Profile.Capabilities.Interactive && AnsiConsole.Profile.Capabilities.Ansi)
        {
            AnsiConsole.Live(view.Table()).AutoClear(false).Start(ctx =>
            {
                while (!stop.Token.WaitHandle.WaitOne(refresh) && !drain.IsCompleted)
                {
                    ctx.UpdateTarget(view.Table());
                }
            });
        }
        else
        {
            while (!stop.Token.WaitHandle.WaitOne(refresh) && !drain.IsCompleted)
                Console.WriteLine(view.Line());
        }

        stop.Cancel();
        drain.GetAwaiter().GetResult(); // rethrows a drain failure
        agent.Stop(handler);
        Console.WriteLine(view.Line());
        Console.Error.WriteLine("up: sensors detached; rings drained; summaries flushed");
        return 0;
    }

    /// <summary>Counts, rates since the last look, and losses, for the table and the log line.</summary>
    private sealed class SensorView(SensorAgent agent, CountingHandler handler)
    {
        private readonly long[] _last = new long[RecordFormat.TypeCount];
        private readonly Stopwatch _since = Stopwatch.StartNew();
        private readonly Stopwatch _uptime = Stopwatch.StartNew();

        private (RecordType Type, long Count, double Rate, ulong Lost)[] Sample()
        {
            var losses = agent.ReadLosses();
            var dt = Math.Max(_since.Elapsed.TotalSeconds, 1e-3);
            _since.Restart();
            var rows = new List<(RecordType, long, double, ulong)>();
            for (var t = 1; t < RecordFormat.TypeCount; t++)
            {
                var type = (RecordType)t;
                if (type == RecordType.Flow) continue; // not a sensor of this agent yet
                var count = handler.Count(type);
                rows.Add((type, count, (count - _last[t]) / dt, losses.Lost(type)));
                _last[t] = count;
            }
            return [.. rows];
        }

        public Table Table()
        {
            var losses = agent.ReadLosses();
            var table = new Table().Title($"Detect sensors on {Environment.MachineName} - up {_uptime.Elapsed:hh\\:mm\\:ss} - Ctrl-C stops")
                .AddColumn("record type").AddColumn(new TableColumn("records").RightAligned())
                .AddColumn(new TableColumn("per second").RightAligned()).AddColumn(new TableColumn("lost").RightAligned());
            foreach (var (type, count, rate, lost) in Sample())
                table.AddRow(RecordFormat.NameOf(type), $"{count:N0}", $"{rate:N0}", lost == 0 ? "0" : $"[red]{lost:N0}[/]");
            table.Caption($"{agent.Report.Attached.Count()} programs running, {agent.Report.Failed.Count()} refused; " +
                $"malformed {losses.Malformed:N0}; summary calls uncounted {losses.SummaryUncounted:N0}; mode {agent.Options.SyscallMode.ToString().ToLowerInvariant()}");
            return table;
        }

        public string Line() =>
            $"up {_uptime.Elapsed:hh\\:mm\\:ss}: " + string.Join("  ", Sample().Select(r => $"{RecordFormat.NameOf(r.Type)} {r.Count:N0} ({r.Rate:N0}/s, lost {r.Lost:N0})"));
    }
}
