using System.Diagnostics;
using System.Globalization;
using Detect.Alerts.Policy;
using Detect.Cli.Sensors;
using Detect.Records;
using Detect.Sensors.Enforcement;
using Detect.Transport;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Detect.Cli.Product;

/// <summary>
/// What `up` and `pipeline` show: records per type with rates and losses (kernel, publisher,
/// transport), pipeline windows (late, evicted), each family's phase, the highest-scoring windows
/// with their explanation, alerts and policy decisions with their acknowledgements. A live
/// Spectre.Console layout on a terminal; one line per refresh otherwise (logs, pipes, tests).
/// </summary>
internal sealed class ProductView
{
    private readonly string _title;
    private readonly ProductPipeline _pipeline;
    private readonly SensorRunner? _sensors;
    private readonly RecordPublisher? _publisher;
    private readonly PolicyExecutor? _executor;
    private readonly Enforcer? _enforcer;
    private readonly string _transport;
    private readonly Stopwatch _uptime = Stopwatch.StartNew();
    private readonly Stopwatch _since = Stopwatch.StartNew();
    private readonly long[] _last = new long[RecordFormat.TypeCount];
    private readonly double[] _rates = new double[RecordFormat.TypeCount];
    private readonly Queue<string> _events = new();
    private readonly Lock _gate = new();

    public ProductView(string title, ProductPipeline pipeline, SensorRunner? sensors, RecordPublisher? publisher, PolicyExecutor? executor, Enforcer? enforcer, string transport)
    {
        _title = title;
        _pipeline = pipeline;
        _sensors = sensors;
        _publisher = publisher;
        _executor = executor;
        _enforcer = enforcer;
        _transport = transport;
    }

    public static bool IsTerminal => AnsiConsole.Profile.Capabilities.Interactive && AnsiConsole.Profile.Capabilities.Ansi;

    /// <summary>Something that happened (phase change, decision), for the events panel.</summary>
    public void Event(string text)
    {
        lock (_gate)
        {
            _events.Enqueue($"{DateTime.Now:HH:mm:ss} {text}");
            while (_events.Count > 6) _events.Dequeue();
        }
    }

    private void SampleRates()
    {
        if (_sensors == null) return;
        var dt = Math.Max(_since.Elapsed.TotalSeconds, 1e-3);
        _since.Restart();
        for (var t = 1; t < RecordFormat.TypeCount; t++)
        {
            var count = _sensors.Handler.Count((RecordType)t);
            _rates[t] = (count - _last[t]) / dt;
            _last[t] = count;
        }
    }

    /// <summary>Runs the display until <paramref name="stop"/> fires or <paramref name="done"/> ends.</summary>
    public void Run(TimeSpan refresh, CancellationToken stop, Func<bool> done)
    {
        if (IsTerminal)
        {
            AnsiConsole.Live(Render()).AutoClear(false).Overflow(VerticalOverflow.Ellipsis).Start(ctx =>
            {
                while (!stop.WaitHandle.WaitOne(refresh) && !done()) ctx.UpdateTarget(Render());
                ctx.UpdateTarget(Render());
            });
        }
        else
        {
            var shown = 0L;
            while (!stop.WaitHandle.WaitOne(refresh) && !done())
            {
                Console.WriteLine(Line());
                shown = PrintNewAlerts(shown);
            }
        }
    }

    private long _printedAlerts;

    private long PrintNewAlerts(long _)
    {
        var raised = _pipeline.Alerts.Engine.Stats.Raised;
        if (raised == _printedAlerts) return raised;
        var recent = _pipeline.Alerts.RecentAlerts;
        foreach (var a in recent.Skip(Math.Max(0, recent.Count - (int)Math.Min(raised - _printedAlerts, recent.Count))))
            Console.WriteLine($"alert: {a}");
        _printedAlerts = raised;
        return raised;
    }

    /// <summary>One line of status (non-terminal output, and the last line at exit).</summary>
    public string Line()
    {
        SampleRates();
        var parts = new List<string> { $"{_title} {_uptime.Elapsed:hh\\:mm\\:ss}:" };
        if (_sensors != null)
        {
            var losses = _sensors.Agent.ReadLosses();
            parts.Add(string.Join("  ", Enumerable.Range(1, RecordFormat.TypeCount - 1).Select(t => (RecordType)t)
                .Where(t => t != RecordType.Flow || _sensors.Flows != null)
                .Select(t => $"{RecordFormat.NameOf(t)} {_sensors.Handler.Count(t):N0} ({_rates[(int)t]:N0}/s, lost {losses.Lost(t):N0})")));
        }
        var snap = _pipeline.Snapshot;
        if (snap != null)
        {
            var p = snap.Pipeline;
            parts.Add($"| windows syscall {p.Syscall.Rows:N0} flow {p.Flow.Rows:N0}, late {p.LateRecords:N0}, evicted {p.Syscall.Evictions + p.Flow.Evictions:N0}, " +
                $"received {snap.Consumer.RecordsReceived:N0}, missing {snap.Consumer.MissingRecords:N0}");
        }
        foreach (var f in _pipeline.Families)
            parts.Add($"| {f.Family}: {PhaseText(f)} ({f.WindowsScored:N0} scored)");
        foreach (var off in _pipeline.FamiliesOff) parts.Add($"| {off}: off");
        var a = _pipeline.Alerts.Engine.Stats;
        var close = _pipeline.CloseLatency.Snapshot();
        parts.Add($"| alerts {a.Raised:N0} (deduplicated {a.Deduplicated:N0}, rate-limited {a.RateLimited:N0}) | policy {PolicyText()}" +
            (close.P50 > 0 ? $" | window end->score p50 {close.P50:F0} ms p99 {close.P99:F0} ms" : ""));
        return string.Join(' ', parts);
    }

    private string PolicyText()
    {
        var s = _pipeline.Alerts.Policy.Stats;
        var mode = _pipeline.Alerts.Policy.Options.Enforce ? "enforcing" : "dry run";
        var acks = _executor != null
            ? $", acked: applied {_executor.Count(PolicyAckStatus.Applied)} dry-run {_executor.Count(PolicyAckStatus.DryRun)} refused {_executor.Count(PolicyAckStatus.Refused)} failed {_executor.Count(PolicyAckStatus.Failed)}"
            : $", acks received {_pipeline.Acks.Total}";
        return $"{mode}: {s.Decisions:N0} decisions{acks}";
    }

    private static string PhaseText(FamilyStatus f) => f.Phase switch
    {
        FamilyPhase.Learning => f.LearningEndsUtc is { } end
            ? $"learning, {Durations.Format(TimeSpan.FromSeconds(Math.Max(0, (end - DateTime.UtcNow).TotalSeconds)))} left, {f.WindowsArchived:N0} windows archived"
            : "learning",
        FamilyPhase.Training => "training: " + f.Detail,
        _ => $"scoring with {f.Model}",
    };

    public IRenderable Render()
    {
        SampleRates();
        var rows = new List<IRenderable>
        {
            new Markup($"[bold]Detect[/] on {Markup.Escape(Environment.MachineName)} - {_title} {_uptime.Elapsed:hh\\:mm\\:ss} - transport {Markup.Escape(_transport)} - " +
                $"state {Markup.Escape(_pipeline.Options.StateDirectory)} - {(_pipeline.Alerts.Policy.Options.Enforce ? "[red]enforcing[/]" : "dry run")} - Ctrl-C stops"),
        };
        var top = new Table().Expand();
        top.AddColumn(new TableColumn(Records()).NoWrap());
        top.AddColumn(new TableColumn(Pipeline()).NoWrap());
        top.Border(TableBorder.None).HideHeaders();
        top.AddRow(Records(), Pipeline());
        rows.Add(top);
        rows.Add(FamiliesTable());
        rows.Add(TopWindows());
        rows.Add(AlertsPanel());
        return new Rows(rows);
    }

    private IRenderable Records()
    {
        var table = new Table().Title("records").AddColumn("type").AddColumn(new TableColumn("records").RightAligned())
            .AddColumn(new TableColumn("per s").RightAligned()).AddColumn(new TableColumn("lost").RightAligned());
        var snap = _pipeline.Snapshot;
        if (_sensors != null)
        {
            var losses = _sensors.Agent.ReadLosses();
            for (var t = 1; t < RecordFormat.TypeCount; t++)
            {
                var type = (RecordType)t;
                if (type == RecordType.Flow && _sensors.Flows == null) continue;
                var lost = losses.Lost(type);
                table.AddRow(RecordFormat.NameOf(type), $"{_sensors.Handler.Count(type):N0}", $"{_rates[t]:N0}", lost == 0 ? "0" : $"[red]{lost:N0}[/]");
            }
            table.Caption($"kernel: malformed {losses.Malformed:N0}, summary uncounted {losses.SummaryUncounted:N0}");
        }
        else if (snap != null)
        {
            foreach (var f in MessageFamilies.Telemetry)
                table.AddRow(MessageFamilies.Name(f), $"{snap.RecordsByFamily[(int)f]:N0}", "", "");
        }
        if (_publisher != null)
        {
            var p = _publisher.Stats;
            table.AddRow("[grey]published[/]", $"{p.RecordsDelivered:N0}", "", p.RecordsDropped == 0 ? "0" : $"[red]{p.RecordsDropped:N0}[/]");
        }
        if (snap != null)
        {
            var c = snap.Consumer;
            table.AddRow("[grey]consumed[/]", $"{c.RecordsReceived:N0}", "", c.MissingRecords == 0 ? "0" : $"[red]{c.MissingRecords:N0}[/]");
            if (c.DeadLettered > 0) table.AddRow("[red]dead-lettered[/]", $"{c.DeadLettered:N0}", "", "");
        }
        return table;
    }

    private IRenderable Pipeline()
    {
        var table = new Table().Title("pipeline").AddColumn("").AddColumn(new TableColumn("syscall").RightAligned()).AddColumn(new TableColumn("flow").RightAligned());
        var snap = _pipeline.Snapshot;
        if (snap == null) return table;
        var p = snap.Pipeline;
        table.AddRow("records", $"{p.Syscall.Records:N0}", $"{p.Flow.Records:N0}");
        table.AddRow("windows", $"{p.Syscall.Rows:N0}", $"{p.Flow.Rows:N0}");
        table.AddRow("open windows", $"{p.Syscall.OpenWindows:N0}", $"{p.Flow.OpenWindows:N0}");
        table.AddRow("entities", $"{p.Syscall.Entities:N0}", $"{p.Flow.Entities:N0}");
        table.AddRow("late records", Warn(p.Syscall.LateRecords), Warn(p.Flow.LateRecords));
        table.AddRow("evictions", Warn(p.Syscall.Evictions), Warn(p.Flow.Evictions));
        var close = _pipeline.CloseLatency.Snapshot();
        var transport = _pipeline.TransportLatency.Snapshot();
        var caption = string.Create(CultureInfo.InvariantCulture,
            $"window {_pipeline.Options.Window.TotalSeconds:G} s, lateness {_pipeline.Options.Lateness.TotalSeconds:G} s; end->score p50 {close.P50:F0} ms p99 {close.P99:F0} ms; transport p50 {transport.P50:F0} ms");
        if (snap.MessageErrors > 0) caption += $"; [red]{snap.MessageErrors} failed messages[/]";
        if (p.Decode.Errors > 0) caption += $"; [red]{p.Decode.Errors} bad records[/]";
        table.Caption(caption);
        return table;
    }

    private static string Warn(long v) => v == 0 ? "0" : $"[yellow]{v:N0}[/]";

    private IRenderable FamiliesTable()
    {
        var table = new Table().Title("models").Expand().AddColumn("family").AddColumn("phase").AddColumn("model")
            .AddColumn(new TableColumn("windows").RightAligned()).AddColumn(new TableColumn("scored").RightAligned()).AddColumn("detail");
        foreach (var f in _pipeline.Families)
        {
            var phase = f.Phase switch
            {
                FamilyPhase.Learning => "[yellow]learning[/]",
                FamilyPhase.Training => "[yellow]training[/]",
                _ => "[green]scoring[/]",
            };
            table.AddRow(f.Family, phase, Markup.Escape(f.Model ?? "-"), $"{f.WindowsSeen:N0}", $"{f.WindowsScored:N0}", Markup.Escape(PhaseText(f) + (f.Phase == FamilyPhase.Learning ? $" ({f.Detail})" : "")));
        }
        foreach (var off in _pipeline.FamiliesOff)
            table.AddRow(off, "[grey]off[/]", "-", "", "", off == "flow" ? "no flow sensor: name an interface with --iface IF" : "");
        return table;
    }

    private IRenderable TopWindows()
    {
        var table = new Table().Title("highest-scoring windows (last 10 minutes)").Expand()
            .AddColumn(new TableColumn("score").RightAligned()).AddColumn("severity").AddColumn("family").AddColumn("entity").AddColumn("window").AddColumn("why");
        foreach (var w in _pipeline.Alerts.Engine.TopWindows)
        {
            var start = DateTime.UnixEpoch.AddTicks(w.WindowStartNs / 100).ToLocalTime();
            var colour = w.Score >= 2 ? "red" : w.Score >= 1 ? "yellow" : "green";
            table.AddRow($"[{colour}]{w.Score:F2}[/]", w.Severity.ToString().ToLowerInvariant(), w.Family, Markup.Escape(Describe(w.Family, w.Entity)),
                $"{start:HH:mm:ss}", Markup.Escape(w.Summary));
        }
        return table;
    }

    /// <summary>A process entity as "4242 (sshd)": the name the sensor recorded, else the running process's.</summary>
    private static string Describe(string family, string entity)
    {
        if (family != "syscall") return entity;
        var at = entity.IndexOf('@', StringComparison.Ordinal);
        if (at <= 0) return entity;
        var space = entity.IndexOf(' ', at);
        if (space > 0) return $"{entity[..at]} ({entity[(space + 1)..]})";
        try
        {
            return $"{entity[..at]} ({File.ReadAllText($"/proc/{entity[..at]}/comm").Trim()})";
        }
        catch (IOException)
        {
            return entity[..at] + " (exited)";
        }
    }

    private IRenderable AlertsPanel()
    {
        var a = _pipeline.Alerts.Engine.Stats;
        var lines = new List<string>
        {
            $"alerts {a.Raised:N0} (anomalous windows {a.Anomalous:N0}, deduplicated {a.Deduplicated:N0}, rate-limited {a.RateLimited:N0}) -> {Markup.Escape(_pipeline.AlertLogPath)}; policy {Markup.Escape(PolicyText())}",
        };
        foreach (var alert in _pipeline.Alerts.RecentAlerts.TakeLast(4)) lines.Add("[red]alert[/] " + Markup.Escape(alert.ToString()));
        var acks = _executor?.Recent ?? _pipeline.Acks.Recent;
        foreach (var ack in acks.TakeLast(3)) lines.Add("[blue]policy[/] " + Markup.Escape(ack.ToString()));
        if (_enforcer != null)
        {
            var c = _enforcer.Table.ReadCounters();
            lines.Add($"enforcement: dropped {c.Dropped:N0}, killed {c.Killed:N0}, denied {c.Denied:N0}, dry-run hits {c.DropDryRun + c.DenyDryRun + c.KillDryRun:N0}");
        }
        lock (_gate) lines.AddRange(_events.Select(e => "[grey]" + Markup.Escape(e) + "[/]"));
        return new Panel(new Markup(string.Join('\n', lines))).Header("alerts and policy").Expand();
    }
}
