using System.CommandLine;

namespace Detect.Cli.Commands;

/// <summary>`detect bench`: the benchmark group; each benchmark is a subcommand (Parent => "bench") that prints one JSON object last.</summary>
public sealed class BenchGroupCommand : ICliCommand
{
    public Command Create() => new("bench", "Benchmarks: human-readable progress, then one JSON object as the last line of stdout");
}
