using System.CommandLine;
using Detect.Sensors.Enforcement;

namespace Detect.Cli.Commands;

/// <summary>`detect block add KIND TARGET [--ttl D] [--reason TEXT] [--dry-run]`: an operator's explicit block.</summary>
public sealed class BlockAddCommand : ICliCommand
{
    public string? Parent => "block";

    public Command Create()
    {
        var kind = new Argument<string>("kind") { Description = "source (drop packets from a prefix), dest (deny connects to a prefix) or pid (kill a process)" };
        var target = new Argument<string>("target") { Description = "An address or CIDR prefix (203.0.113.7, 203.0.113.0/24, 2001:db8::/32), or a process id" };
        var ttl = new Option<string?>("--ttl") { Description = "How long the entry acts (90s, 10m, 2h, 7d); default: until removed" };
        var reason = new Option<string>("--reason") { Description = "Why (kept with the entry)", DefaultValueFactory = _ => "operator" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Only count what the entry matches; do not act" };
        var pinRoot = BlockCli.PinRoot();
        var command = new Command("add", "Add (or renew) a block. Refuses loopback, the host's own addresses and allowlisted CIDRs")
        {
            kind, target, ttl, reason, dryRun, pinRoot,
        };
        command.SetAction((parse, ct) => Task.FromResult(BlockCli.Guard("block add", () =>
        {
            var ttlText = parse.GetValue(ttl);
            var request = BlockRequest.Parse(parse.GetValue(kind)!, parse.GetValue(target)!,
                ttlText == null ? null : BlockCli.ParseDuration(ttlText), parse.GetValue(reason) ?? "", parse.GetValue(dryRun));
            using var table = EnforcementTable.Open(parse.GetValue(pinRoot));
            var entry = table.Add(request);
            Console.WriteLine($"blocked {BlockCli.Describe(entry)}");
            if (BlockCli.AgentNote(table) is { } note) Console.Error.WriteLine(note);
            return 0;
        })));
        return command;
    }
}
