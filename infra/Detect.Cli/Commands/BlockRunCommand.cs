using System.CommandLine;
using Detect.Sensors.Enforcement;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect block run --iface IF[@NETNS] [--cgroup DIR] [--allow CIDR]`: the enforcing part of the
/// agent on its own: attaches the programs (pinned links), keeps the allowlist, sweeps expired
/// entries until stopped. Stopping it leaves enforcement in place (the links stay pinned);
/// --detach-on-exit removes its attachments instead.
/// </summary>
public sealed class BlockRunCommand : ICliCommand
{
    public string? Parent => "block";

    public Command Create()
    {
        var iface = new Option<string[]>("--iface") { Description = "Drop blocked sources arriving on this interface (NAME or NAME@NETNS; repeatable)", AllowMultipleArgumentsPerToken = true };
        var cgroup = new Option<string[]>("--cgroup") { Description = "Deny blocked destinations to the processes of this cgroup v2 directory (repeatable; not the root)", AllowMultipleArgumentsPerToken = true };
        var allow = new Option<string[]>("--allow") { Description = "Never block this CIDR (repeatable; loopback and the host's addresses always are)", AllowMultipleArgumentsPerToken = true };
        var noKill = new Option<bool>("--no-kill") { Description = "Do not attach the kill-list program" };
        var seconds = new Option<double>("--seconds") { Description = "Stop after this long (default: until Ctrl-C)" };
        var detach = new Option<bool>("--detach-on-exit") { Description = "Remove this agent's attachments when it stops (default: they keep enforcing)" };
        var pinRoot = BlockCli.PinRoot();
        var command = new Command("run", "Attach enforcement to interfaces and cgroups and sweep expired entries until stopped; the blocks hold after it stops")
        {
            iface, cgroup, allow, noKill, seconds, detach, pinRoot,
        };
        command.SetAction(async (parse, ct) =>
        {
            Enforcer? enforcer = null;
            var rc = BlockCli.Guard("block run", () =>
            {
                enforcer = Enforcer.Start(new EnforcementOptions
                {
                    PinRoot = parse.GetValue(pinRoot)!,
                    Interfaces = (parse.GetValue(iface) ?? []).Select(NetInterface.Parse).ToList(),
                    Cgroups = parse.GetValue(cgroup) ?? [],
                    Allow = (parse.GetValue(allow) ?? []).Select(BlockRequest.ParsePrefix).ToList(),
                    KillProcesses = !parse.GetValue(noKill),
                    Log = line => Console.WriteLine($"block run: {line}"),
                });
                return 0;
            });
            if (enforcer == null) return rc;
            using (enforcer)
            {
                foreach (var a in enforcer.Attachments) Console.WriteLine($"block run: {a}");
                if (enforcer.Attachments.Any(a => a.State == EnforcementAttachState.Failed))
                {
                    Console.Error.WriteLine("block run: some attachments failed (above); the others enforce");
                }
                Console.WriteLine($"block run: enforcing at {enforcer.Table.PinRoot} (pid {Environment.ProcessId}); {enforcer.Table.List().Count} entries");
                using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
                if (parse.GetValue(seconds) is > 0 and var s) stop.CancelAfter(TimeSpan.FromSeconds(s));
                await enforcer.RunAsync(stop.Token).ConfigureAwait(false);
                if (parse.GetValue(detach))
                {
                    enforcer.Detach();
                    Console.WriteLine("block run: detached");
                }
                else
                {
                    Console.WriteLine("block run: stopped; the pinned programs keep enforcing (`detect block purge` lifts everything)");
                }
            }
            return 0;
        });
        return command;
    }
}
