using System.CommandLine;
using System.Text.Json;
using Detect.Sensors.Enforcement;

namespace Detect.Cli.Commands;

/// <summary>`detect block list [--json]`: every entry with its hits, and what enforcement did and missed.</summary>
public sealed class BlockListCommand : ICliCommand
{
    public string? Parent => "block";

    public Command Create()
    {
        var json = new Option<bool>("--json") { Description = "One JSON object: entries and counters" };
        var pinRoot = BlockCli.PinRoot();
        var command = new Command("list", "List the blocks with their hits, expiry and reason, and the enforcement counters") { json, pinRoot };
        command.SetAction((parse, ct) => Task.FromResult(BlockCli.Guard("block list", () =>
        {
            var root = parse.GetValue(pinRoot)!;
            if (!File.Exists(Path.Combine(root, "detect_enforce_ctl")))
            {
                Console.Error.WriteLine($"block list: nothing is blocked ({root} holds no enforcement maps)");
                if (parse.GetValue(json)) Console.WriteLine("{\"entries\":[],\"counters\":{}}");
                return 0;
            }
            using var table = EnforcementTable.Open(root, create: false);
            var entries = table.List().OrderBy(e => e.Kind).ThenBy(e => e.Target, StringComparer.Ordinal).ToList();
            var c = table.ReadCounters();
            var ctl = table.ReadControl();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["entries"] = entries.Select(e => new Dictionary<string, object?>
                    {
                        ["kind"] = BlockEntry.KindName(e.Kind),
                        ["target"] = e.Target,
                        ["hits"] = e.Hits,
                        ["added"] = e.Added.ToUnixTimeMilliseconds(),
                        ["expires"] = e.Expires?.ToUnixTimeMilliseconds(),
                        ["expired"] = e.Expired,
                        ["last_hit"] = e.LastHit?.ToUnixTimeMilliseconds(),
                        ["reason"] = e.Reason,
                        ["dry_run"] = e.DryRun,
                    }).ToList(),
                    ["counters"] = new Dictionary<string, ulong>
                    {
                        ["packets_checked"] = c.PacketsChecked, ["dropped"] = c.Dropped, ["drop_dry_run"] = c.DropDryRun,
                        ["denied"] = c.Denied, ["deny_dry_run"] = c.DenyDryRun, ["killed"] = c.Killed, ["kill_dry_run"] = c.KillDryRun,
                        ["expired_seen"] = c.ExpiredSeen, ["allowlist_overrode"] = c.AllowlistOverrode,
                        ["missed_signal"] = c.MissedSignal, ["missed_stale_pid"] = c.MissedStalePid, ["missed_unparsed"] = c.MissedUnparsed,
                    },
                    ["agent_pid"] = ctl.AgentTgid,
                }));
                return 0;
            }
            Console.WriteLine($"{"kind",-7} {"target",-28} {"hits",10}  {"expires",-22} {"reason"}");
            foreach (var e in entries)
            {
                var expires = e.Expires is { } x ? (e.Expired ? "expired" : x.UtcDateTime.ToString("u", System.Globalization.CultureInfo.InvariantCulture)) : "never";
                Console.WriteLine($"{BlockEntry.KindName(e.Kind),-7} {e.Target,-28} {e.Hits,10:N0}  {expires,-22} {e.Reason}{(e.DryRun ? " [dry run]" : "")}");
            }
            Console.WriteLine($"{entries.Count} entr{(entries.Count == 1 ? "y" : "ies")}; dropped {c.Dropped:N0} packets, denied {c.Denied:N0} calls, killed {c.Killed:N0}; " +
                $"dry run: {c.DropDryRun + c.DenyDryRun + c.KillDryRun:N0}; spared (expired {c.ExpiredSeen:N0}, allowlisted {c.AllowlistOverrode:N0}); " +
                $"missed: signal {c.MissedSignal:N0}, stale pid {c.MissedStalePid:N0}, unparsed packets {c.MissedUnparsed:N0}");
            if (BlockCli.AgentNote(table) is { } note) Console.Error.WriteLine(note);
            return 0;
        })));
        return command;
    }
}
