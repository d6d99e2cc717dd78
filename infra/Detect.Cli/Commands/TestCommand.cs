using System.CommandLine;
using System.Diagnostics;

namespace Detect.Cli.Commands;

/// <summary>`detect test`: every test of the solution, in the real kernel where the machine allows.</summary>
public sealed class TestCommand : ICliCommand
{
    public Command Create()
    {
        var filter = new Option<string?>("--filter") { Description = "Run only matching tests (dotnet test --filter syntax), e.g. FullyQualifiedName~Records" };
        var project = new Option<string?>("--project") { Description = "Run one test project (e.g. Detect.Records.Tests) instead of the whole solution" };
        var command = new Command("test", "Run every test (unit, kernel, broker, replays, notebooks). Kernel tests need root; skips print their reason.")
        {
            filter, project,
        };
        command.SetAction(async (parse, ct) =>
        {
            var root = Program.RepoRoot;
            var target = parse.GetValue(project) is { } p
                ? Path.Combine(root, "tests", p, p + ".csproj")
                : Path.Combine(root, "Detect.sln");
            if (!File.Exists(target))
            {
                Console.Error.WriteLine($"detect test: {target} does not exist");
                return 2;
            }
            var psi = new ProcessStartInfo("dotnet")
            {
                ArgumentList = { "test", target, "-c", "Release", "--no-build", "--nologo", "--logger", "console;verbosity=normal" },
                WorkingDirectory = root,
            };
            if (parse.GetValue(filter) is { } f)
            {
                psi.ArgumentList.Add("--filter");
                psi.ArgumentList.Add(f);
            }
            psi.Environment["DETECT_ROOT"] = root;
            using var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start dotnet test");
            try
            {
                await process.WaitForExitAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw;
            }
            return process.ExitCode;
        });
        return command;
    }
}
