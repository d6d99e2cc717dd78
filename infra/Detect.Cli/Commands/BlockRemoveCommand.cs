using System.CommandLine;
using Detect.Sensors.Enforcement;

namespace Detect.Cli.Commands;

/// <summary>`detect block remove KIND TARGET`.</summary>
public sealed class BlockRemoveCommand : ICliCommand
{
    public string? Parent => "block";

    public Command Create()
    {
        var kind = new Argument<string>("kind") { Description = "source, dest or pid" };
        var target = new Argument<string>("target") { Description = "The prefix or process id, as `detect block list` shows it" };
        var pinRoot = BlockCli.PinRoot();
        var command = new Command("remove", "Remove a block (the traffic or process is no longer stopped)") { kind, target, pinRoot };
        command.SetAction((parse, ct) => Task.FromResult(BlockCli.Guard("block remove", () =>
        {
            var k = BlockRequest.ParseKind(parse.GetValue(kind)!);
            var t = parse.GetValue(target)!;
            using var table = EnforcementTable.Open(parse.GetValue(pinRoot), create: false);
            if (!table.Remove(k, t))
            {
                Console.Error.WriteLine($"block remove: no {BlockEntry.KindName(k)} entry {t}");
                return 1;
            }
            Console.WriteLine($"removed {BlockEntry.KindName(k)} {t}");
            return 0;
        })));
        return command;
    }
}
