using System.Diagnostics;
using System.Text.RegularExpressions;
using Detect.Testing;

namespace Detect.Cli.Tests;

/// <summary>The systemd units in infra/systemd stay in step with the CLI and with systemd.</summary>
public partial class ServiceFilesTests
{
    private static string SystemdDir => Path.Combine(Repo.Root, "infra", "systemd");

    public static TheoryData<string> Units() => [.. Directory.GetFiles(Path.Combine(Repo.Root, "infra", "systemd"), "*.service").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal)];

    /// <summary>The example /etc/default/detect as systemd reads it (KEY=value lines).</summary>
    private static Dictionary<string, string> Defaults() =>
        File.ReadAllLines(Path.Combine(SystemdDir, "detect.default"))
            .Where(l => l.Length > 0 && l[0] != '#' && l.Contains('=', StringComparison.Ordinal))
            .ToDictionary(l => l[..l.IndexOf('=', StringComparison.Ordinal)], l => l[(l.IndexOf('=', StringComparison.Ordinal) + 1)..], StringComparer.Ordinal);

    [Theory]
    [MemberData(nameof(Units))]
    public void Unit_ExecStart_IsACommandLineTheCliAccepts(string unit)
    {
        var text = File.ReadAllText(Path.Combine(SystemdDir, unit));
        var exec = Assert.Single(text.Split('\n'), l => l.StartsWith("ExecStart=", StringComparison.Ordinal))["ExecStart=".Length..].Trim();
        var words = exec.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("/opt/detect/detect", words[0]);
        // systemd's expansion: ${X} is one word, $X splits into words.
        var env = Defaults();
        var args = new List<string>();
        foreach (var w in words.Skip(1))
        {
            if (OneWord().Match(w) is { Success: true } one) args.Add(env[one.Groups[1].Value]);
            else if (Split().Match(w) is { Success: true } many) args.AddRange(env[many.Groups[1].Value].Split(' ', StringSplitOptions.RemoveEmptyEntries));
            else args.Add(w);
        }
        var parse = Program.BuildRoot().Parse(args);
        Assert.True(parse.Errors.Count == 0, $"{unit}: detect {string.Join(' ', args)}: {string.Join("; ", parse.Errors.Select(e => e.Message))}");
        Assert.Contains(args[0], new[] { "up", "sensor", "pipeline" });
    }

    [Fact]
    public async Task Units_PassSystemdAnalyzeVerify()
    {
        var analyze = Needs.Program("systemd-analyze");
        var dir = Directory.CreateTempSubdirectory("detect-units-");
        try
        {
            // As installed, but pointing at this checkout's ./detect and example defaults (verify checks both exist).
            var files = new List<string>();
            foreach (var unit in Units().Select(u => u.Data))
            {
                var text = File.ReadAllText(Path.Combine(SystemdDir, unit))
                    .Replace("/opt/detect/detect", Path.Combine(Repo.Root, "detect"), StringComparison.Ordinal)
                    .Replace("EnvironmentFile=/etc/default/detect", "EnvironmentFile=" + Path.Combine(SystemdDir, "detect.default"), StringComparison.Ordinal);
                var path = Path.Combine(dir.FullName, unit);
                File.WriteAllText(path, text);
                files.Add(path);
            }
            var psi = new ProcessStartInfo(analyze) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            psi.ArgumentList.Add("verify");
            foreach (var f in files) psi.ArgumentList.Add(f);
            using var p = Process.Start(psi)!;
            var ct = TestContext.Current.CancellationToken;
            var stdoutTask = p.StandardOutput.ReadToEndAsync(ct);
            var stderr = await p.StandardError.ReadToEndAsync(ct);
            var stdout = await stdoutTask;
            await p.WaitForExitAsync(ct);
            // verify exits 0 on unknown keys and bad values too: any line about our files is a defect.
            var complaints = (stderr + stdout).Split('\n').Where(l => l.Contains(dir.FullName, StringComparison.Ordinal)).ToList();
            Assert.True(p.ExitCode == 0 && complaints.Count == 0, $"systemd-analyze verify exit {p.ExitCode}:\n{stderr}{stdout}");
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [GeneratedRegex(@"^\$\{(\w+)\}$")]
    private static partial Regex OneWord();

    [GeneratedRegex(@"^\$(\w+)$")]
    private static partial Regex Split();
}
