using System.CommandLine;
using System.Globalization;
using System.Text;
using Detect.Alerts;
using Detect.Cli.Product;
using Detect.Models.Calibration;
using Spectre.Console;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect alerts`: the alert log an analyst reviews (STATE/alerts.jsonl and its rotated
/// predecessor), newest last, filtered by age, severity, family, host and entity; as a table or as
/// the JSON lines themselves (for jq and log shippers).
/// </summary>
public sealed class AlertsCommand : ICliCommand
{
    public Command Create()
    {
        var state = new Option<string?>("--state") { Description = $"State folder holding alerts.jsonl (default {ProductOptions.DefaultStateDirectory})" };
        var since = new Option<string?>("--since") { Description = "Only alerts whose window ended within this long (e.g. 30m, 2h, 1d)" };
        var severity = new Option<string>("--min-severity") { Description = "low, medium, high or critical", DefaultValueFactory = _ => "low" };
        var family = new Option<string?>("--family") { Description = "syscall or flow" };
        var host = new Option<string?>("--host") { Description = "Only this host" };
        var entity = new Option<string?>("--entity") { Description = "Only entities containing this text (a process name, a pid, an address)" };
        var last = new Option<int>("--last") { Description = "At most this many (the newest)", DefaultValueFactory = _ => 50 };
        var json = new Option<bool>("--json") { Description = "Print the alerts' JSON lines instead of a table" };
        var command = new Command("alerts", "Review the alerts in the alert log: newest last, filtered by age, severity, family, host and entity")
        {
            state, since, severity, family, host, entity, last, json,
        };
        command.SetAction((parse, ct) =>
        {
            Severity min;
            TimeSpan? age;
            try
            {
                min = ParseSeverity(parse.GetValue(severity)!);
                age = parse.GetValue(since) is { } s ? Durations.Parse(s, "--since") : null;
                if (parse.GetValue(last) < 1) throw new ArgumentException("--last must be at least 1");
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"alerts: {e.Message}");
                return Task.FromResult(2);
            }
            var path = Path.Combine(Path.GetFullPath(parse.GetValue(state) ?? ProductOptions.DefaultStateDirectory), "alerts.jsonl");
            if (!File.Exists(path) && !File.Exists(path + ".1"))
            {
                Console.Error.WriteLine($"alerts: no alert log at {path} (`detect up` and `detect pipeline` write it in their --state folder)");
                return Task.FromResult(1);
            }
            var all = AlertLog.Read(path + ".1", out var bad1).Concat(AlertLog.Read(path, out var bad2)).ToList();
            var cutoff = age is { } a ? DateTime.UtcNow - a : DateTime.MinValue;
            var shown = all
                .Where(x => x.SeverityLevel >= min && x.WindowEnd >= cutoff)
                .Where(x => parse.GetValue(family) is not { } f || string.Equals(x.Family, f, StringComparison.OrdinalIgnoreCase))
                .Where(x => parse.GetValue(host) is not { } h || string.Equals(x.Host, h, StringComparison.OrdinalIgnoreCase))
                .Where(x => parse.GetValue(entity) is not { } e || x.Entity.Contains(e, StringComparison.OrdinalIgnoreCase))
                .OrderBy(x => x.WindowEndNs).ThenBy(x => x.CreatedNs)
                .ToList();
            var total = shown.Count;
            shown = shown.Skip(Math.Max(0, total - parse.GetValue(last))).ToList();
            if (parse.GetValue(json))
            {
                using var stdout = Console.OpenStandardOutput();
                foreach (var x in shown)
                {
                    stdout.Write(x.ToJsonUtf8());
                    stdout.Write("\n"u8);
                }
            }
            else if (Console.IsOutputRedirected)
            {
                // Into a pipe or file: one whole line per alert, never cut to a terminal's width.
                foreach (var x in shown)
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{x.WindowEnd:yyyy-MM-dd HH:mm:ss}  {x.SeverityLevel.ToString().ToLowerInvariant(),-8}  {x.Score,5:F2}  {x.Family,-7}  {x.Host}  {x.Entity}: {x.Summary}"));
            }
            else
            {
                var table = new Table().Border(TableBorder.Simple).Expand();
                foreach (var c in new[] { "window end (UTC)", "severity", "score", "family", "host", "entity", "why" }) table.AddColumn(c);
                foreach (var x in shown)
                    table.AddRow(Markup.Escape(x.WindowEnd.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)), Colour(x.SeverityLevel),
                        x.Score.ToString("F2", CultureInfo.InvariantCulture), Markup.Escape(x.Family), Markup.Escape(x.Host),
                        Markup.Escape(x.Entity), Markup.Escape(x.Summary));
                AnsiConsole.Write(table);
            }
            var note = new StringBuilder($"alerts: {shown.Count} shown of {total} matching, {all.Count} in {path}");
            if (bad1 + bad2 > 0) note.Append(CultureInfo.InvariantCulture, $"; {bad1 + bad2} lines that are no alert skipped");
            Console.Error.WriteLine(note);
            return Task.FromResult(0);
        });
        return command;
    }

    private static Severity ParseSeverity(string text) =>
        Enum.TryParse<Severity>(text, ignoreCase: true, out var s) && s != Severity.None
            ? s
            : throw new ArgumentException($"--min-severity: '{text}' is none of low, medium, high, critical");

    private static string Colour(Severity s) => s switch
    {
        Severity.Critical => "[bold red]critical[/]",
        Severity.High => "[red]high[/]",
        Severity.Medium => "[yellow]medium[/]",
        _ => "low",
    };
}
