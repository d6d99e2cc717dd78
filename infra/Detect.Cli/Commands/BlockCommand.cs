using System.CommandLine;
using System.Globalization;
using Detect.Sensors.Bpf;
using Detect.Sensors.Enforcement;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect block`: the enforcement lists (drop a source, deny a destination, kill a process) in
/// their pinned maps. The subcommands work from any process, also while an agent runs: they open
/// the maps pinned under --pin-root (/sys/fs/bpf/detect).
/// </summary>
public sealed class BlockCommand : ICliCommand
{
    public Command Create() => new("block",
        "Enforcement: block source prefixes (XDP drop), deny destinations (connect EPERM in chosen cgroups), kill processes; " +
        "entries live in maps pinned under /sys/fs/bpf/detect, so they hold while the agent restarts");
}

/// <summary>What every block subcommand shares: the pin root, durations, and plain errors.</summary>
internal static class BlockCli
{
    public const int Refused = 3;
    public const int NoPrivilege = 4;

    public static Option<string> PinRoot() => new("--pin-root")
    {
        Description = "Where the enforcement maps and links are pinned",
        DefaultValueFactory = _ => EnforcementTable.DefaultPinRoot,
    };

    /// <summary>"90s", "10m", "2h", "7d", or a TimeSpan ("00:10:00").</summary>
    public static TimeSpan ParseDuration(string text)
    {
        text = text.Trim();
        if (text.Length > 1 && double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n > 0)
        {
            switch (char.ToLowerInvariant(text[^1]))
            {
                case 's': return TimeSpan.FromSeconds(n);
                case 'm': return TimeSpan.FromMinutes(n);
                case 'h': return TimeSpan.FromHours(n);
                case 'd': return TimeSpan.FromDays(n);
            }
        }
        if (TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var t) && t > TimeSpan.Zero) return t;
        throw new ArgumentException($"'{text}' is not a duration (e.g. 90s, 10m, 2h, 7d)");
    }

    /// <summary>Runs a subcommand body, turning the expected failures into one plain line and an exit code.</summary>
    public static int Guard(string command, Func<int> body)
    {
        try
        {
            // Before anything else: without the privilege even the pins are invisible (bpffs is 0700).
            BpfSystem.EnsurePrivileged();
            return body();
        }
        catch (BpfPrivilegeException e)
        {
            Console.Error.WriteLine($"{command}: {e.Message}");
            return NoPrivilege;
        }
        catch (AllowlistException e)
        {
            Console.Error.WriteLine($"{command}: {e.Message}");
            return Refused;
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"{command}: {e.Message}");
            return 2;
        }
        catch (InvalidOperationException e)
        {
            Console.Error.WriteLine($"{command}: {e.Message}");
            return 1;
        }
        catch (BpfException e)
        {
            Console.Error.WriteLine($"{command}: {e.Message}");
            return 1;
        }
    }

    public static string Describe(BlockEntry e)
    {
        var expires = e.Expires is { } x ? (e.Expired ? "expired" : $"until {x.UtcDateTime:u}") : "no expiry";
        return $"{BlockEntry.KindName(e.Kind)} {e.Target} ({expires}{(e.DryRun ? ", dry run" : "")}{(e.Reason.Length > 0 ? ": " + e.Reason : "")})";
    }

    /// <summary>A note when no live agent enforces the lists at this pin root.</summary>
    public static string? AgentNote(EnforcementTable table)
    {
        var agent = table.ReadControl().AgentTgid;
        var linked = Directory.Exists(table.LinksDirectory) && Directory.EnumerateFiles(table.LinksDirectory).Any();
        if (linked) return null;
        return agent != 0 && Directory.Exists($"/proc/{agent}")
            ? null
            : $"note: nothing is attached at {table.PinRoot} yet; the entry acts once an agent attaches (`detect block run --iface IF`, or `detect up`)";
    }
}
