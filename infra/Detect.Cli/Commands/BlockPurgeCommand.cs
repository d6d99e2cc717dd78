using System.CommandLine;
using Detect.Sensors.Enforcement;

namespace Detect.Cli.Commands;

/// <summary>`detect block purge`: removes every enforcement pin (lists and links): every block is lifted.</summary>
public sealed class BlockPurgeCommand : ICliCommand
{
    public string? Parent => "block";

    public Command Create()
    {
        var pinRoot = BlockCli.PinRoot();
        var command = new Command("purge", "Lift every block: remove the pinned enforcement maps and links") { pinRoot };
        command.SetAction((parse, ct) => Task.FromResult(BlockCli.Guard("block purge", () =>
        {
            var removed = EnforcementTable.Purge(parse.GetValue(pinRoot));
            Console.WriteLine(removed.Count == 0 ? "block purge: nothing to remove" : $"block purge: removed {removed.Count} pins");
            return 0;
        })));
        return command;
    }
}
