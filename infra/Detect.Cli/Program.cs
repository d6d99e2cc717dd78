using System.CommandLine;
using System.Reflection;

namespace Detect.Cli;

/// <summary>
/// One command of the CLI. Each command lives in its own file and is found by reflection, so
/// adding a command never means editing a shared list. <see cref="Parent"/> names the group a
/// subcommand belongs to ("bench", "block", ...); null puts it at the top.
/// </summary>
public interface ICliCommand
{
    string? Parent => null;
    Command Create();
}

public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var root = BuildRoot();
        // Long-running commands (up, pipeline, sensor, broker) stop in order on Ctrl-C/SIGTERM:
        // detach, drain, close windows, flush. System.CommandLine's default ends the process 2 s
        // after the signal whatever the action is doing; give them a minute.
        var invocation = new InvocationConfiguration { ProcessTerminationTimeout = TimeSpan.FromSeconds(60) };
        return await root.Parse(args).InvokeAsync(invocation).ConfigureAwait(false);
    }

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand(
            "Detect: finds attacks on Linux hosts from eBPF telemetry and blocks them.\n" +
            "Start with `./detect up` (the whole product on this host) and `./detect test` (every test).");
        var modules = typeof(Program).Assembly.GetTypes()
            .Where(t => typeof(ICliCommand).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
            .Select(t => (ICliCommand)Activator.CreateInstance(t)!)
            .Select(m => (m.Parent, Command: m.Create()))
            .OrderBy(m => m.Command.Name, StringComparer.Ordinal)
            .ToList();
        var top = new Dictionary<string, Command>(StringComparer.Ordinal);
        foreach (var (parent, command) in modules.Where(m => m.Parent == null))
        {
            root.Subcommands.Add(command);
            top[command.Name] = command;
        }
        foreach (var (parent, command) in modules.Where(m => m.Parent != null))
        {
            if (!top.TryGetValue(parent!, out var group))
                throw new InvalidOperationException($"command {command.Name} names a parent '{parent}' that no command defines");
            group.Subcommands.Add(command);
        }
        return root;
    }

    /// <summary>The checkout's top folder: DETECT_ROOT (set by ./detect), else the folder above the build holding Detect.sln.</summary>
    public static string RepoRoot
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("DETECT_ROOT");
            if (!string.IsNullOrEmpty(env)) return env;
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Detect.sln"))) return dir.FullName;
            return Directory.GetCurrentDirectory();
        }
    }

    public static string Version =>
        typeof(Program).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0";
}
