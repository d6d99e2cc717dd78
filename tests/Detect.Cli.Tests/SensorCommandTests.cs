using System.Diagnostics;
using System.Text.Json;
using Detect.Records;
using Detect.Testing;

namespace Detect.Cli.Tests;

/// <summary>`detect capture`, `detect up` and `detect bench sensors` driven as a user drives them, in the real kernel.</summary>
[Trait("Needs", "Kernel")]
public sealed class SensorCommandTests
{
    [Fact]
    public void Capture_WithOutAndJson_WritesAFileWhoseRecordsMatchTheCounts()
    {
        Needs.KernelBtf();
        var file = Path.Combine(Path.GetTempPath(), $"detect-capture-{Guid.NewGuid():N}.dcap");
        try
        {
            using var capture = Cli.Start("capture", "--seconds", "3", "--json", "--out", file);
            // Processes to see while it runs: each /bin/true is one exec and one exit.
            var started = 0;
            while (!capture.Process.HasExited && started < 200)
            {
                using var p = Process.Start(new ProcessStartInfo("/bin/true") { UseShellExecute = false })!;
                p.WaitForExit();
                started++;
                Thread.Sleep(50);
            }
            var (code, stdout, stderr) = capture.Finish(TimeSpan.FromSeconds(60));
            Assert.True(code == 0, $"exit {code}: {stderr}");

            using var json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
            var root = json.RootElement;
            var counted = new Dictionary<RecordType, long>();
            for (var t = 1; t < RecordFormat.TypeCount; t++)
            {
                var type = (RecordType)t;
                counted[type] = root.GetProperty(RecordFormat.NameOf(type)).GetProperty("records").GetInt64();
                Assert.True(root.GetProperty(RecordFormat.NameOf(type)).TryGetProperty("lost", out _));
            }
            Assert.True(counted[RecordType.Syscall] > 0, "the host makes syscalls");
            Assert.True(counted[RecordType.Exec] > 0 && counted[RecordType.Exit] > 0, "the /bin/true runs were seen");

            var inFile = new Dictionary<RecordType, long>();
            var trues = 0;
            var stats = RecordFile.ReadAll(file, r =>
            {
                inFile[r.Type] = inFile.GetValueOrDefault(r.Type) + 1;
                if (r.Type == RecordType.Exec && r.As<ExecRecord>().FilenameString == "/bin/true") trues++;
            });
            Assert.Equal(0, stats.Errors);
            foreach (var (type, n) in counted) Assert.Equal(n, inFile.GetValueOrDefault(type));
            Assert.True(trues > 0);
            Assert.Equal(RecordFile.HeaderSize + inFile.Sum(p => p.Value * RecordFormat.SizeOf(p.Key)), new FileInfo(file).Length);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Capture_SummaryMode_ReportsSummariesAndNoSyscallRecords()
    {
        Needs.KernelBtf();
        var (code, stdout, stderr) = Cli.Run(TimeSpan.FromSeconds(60), "capture", "--seconds", "2", "--mode", "summary", "--json");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        using var json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        Assert.Equal(0, json.RootElement.GetProperty("syscall").GetProperty("records").GetInt64());
        Assert.True(json.RootElement.GetProperty("syscall_summary").GetProperty("records").GetInt64() > 0);
        Assert.Equal("summary", json.RootElement.GetProperty("mode").GetString());
    }

    [Fact]
    public async Task Capture_WithoutPrivilege_SaysSoPlainlyAndTouchesNothing()
    {
        Needs.Root(); // to drop privilege we need it first
        var setpriv = Needs.Program("setpriv");
        var psi = new ProcessStartInfo(setpriv)
        {
            ArgumentList = { "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "dotnet", Repo.CliDll, "capture", "--seconds", "1" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["DOTNET_CLI_HOME"] = Path.GetTempPath();
        psi.Environment["HOME"] = Path.GetTempPath();
        using var p = Process.Start(psi)!;
        var ct = TestContext.Current.CancellationToken;
        var stderr = p.StandardError.ReadToEndAsync(ct);
        var stdout = await p.StandardOutput.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(60), ct);
        var err = await stderr;
        Assert.Equal(3, p.ExitCode);
        Assert.Contains("needs root", err, StringComparison.Ordinal);
        Assert.Contains("uid 65534", err, StringComparison.Ordinal);
        Assert.DoesNotContain("libbpf", err, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", err + stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Up_WithoutATerminal_PrintsCountsEachRefreshAndStopsInOrder()
    {
        Needs.KernelBtf();
        var state = Path.Combine(Path.GetTempPath(), $"detect-up-{Guid.NewGuid():N}");
        var (code, stdout, stderr) = Cli.Run(TimeSpan.FromSeconds(60), "up", "--seconds", "3", "--refresh", "0.5", "--state", state);
        Directory.Delete(state, recursive: true);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Count(l => l.StartsWith("up ", StringComparison.Ordinal)) >= 3, stdout);
        Assert.Contains("syscall", lines[^1], StringComparison.Ordinal);
        Assert.Contains("lost", lines[^1], StringComparison.Ordinal);
        Assert.Contains("sensors detached", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void BenchSensors_SmallStorm_EndsWithOneJsonObject_AndAccountsForEveryRecord()
    {
        Needs.KernelBtf();
        var (code, stdout, stderr) = Cli.Run(TimeSpan.FromMinutes(3), "bench", "sensors", "--calls", "300000", "--ring-mb", "1");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        using var json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        var records = json.RootElement.GetProperty("records");
        Assert.Equal(300_002, records.GetProperty("generated").GetInt64());
        Assert.Equal(0, records.GetProperty("unaccounted").GetInt64()); // drained + lost == generated
        Assert.Equal(records.GetProperty("generated").GetInt64(), records.GetProperty("drained").GetInt64() + records.GetProperty("lost").GetInt64());
        Assert.True(records.GetProperty("kernel_ns_per_event").GetDouble() > 0);
        var summary = json.RootElement.GetProperty("summary");
        Assert.Equal(0, summary.GetProperty("unaccounted").GetInt64()); // summaries counted every call
    }

    [Fact]
    public void Capture_OnAHostWithoutBpffsOrTracefs_MountsThem_AndRuns()
    {
        Needs.KernelBtf();
        var unshare = Needs.Program("unshare");
        // A fresh machine, in a private mount namespace: bpffs and tracefs unmounted there only
        // (the host's mounts, and what other agents pinned, are untouched).
        var psi = new ProcessStartInfo(unshare) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "--mount", "--propagation", "private", "--", "sh", "-c",
            "for m in /sys/fs/bpf /sys/kernel/tracing /sys/kernel/debug/tracing; do while umount \"$m\" 2>/dev/null; do :; done; done; " +
            "if grep -qE ' (bpf|tracefs) ' /proc/self/mounts; then echo 'still mounted' >&2; exit 99; fi; exec \"$@\"",
            "sh", "dotnet", Repo.CliDll, "capture", "--seconds", "1", "--no-process", "--json" })
            psi.ArgumentList.Add(a);
        psi.Environment["DETECT_ROOT"] = Repo.Root;
        using var process = Process.Start(psi)!;
        using var running = new Cli.Running(process);
        var (code, stdout, stderr) = running.Finish(TimeSpan.FromSeconds(90));
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("mounted bpffs at /sys/fs/bpf", stderr, StringComparison.Ordinal);
        Assert.Contains("mounted tracefs at /sys/kernel/tracing", stderr, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        Assert.True(json.RootElement.GetProperty("syscall").GetProperty("records").GetInt64() > 0, stdout);
        Assert.True(BpfMounts().Contains("bpf") && BpfMounts().Contains("tracefs"), "this namespace's mounts are still there");
    }

    private static string BpfMounts() => File.ReadAllText("/proc/self/mounts");
}

/// <summary>Runs the built CLI (Repo.CliDll) as a child process.</summary>
internal static class Cli
{
    public sealed class Running(Process process) : IDisposable
    {
        private readonly Task<string> _stdout = process.StandardOutput.ReadToEndAsync();
        private readonly Task<string> _stderr = process.StandardError.ReadToEndAsync();

        public Process Process => process;

        public (int Code, string Stdout, string Stderr) Finish(TimeSpan timeout)
        {
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"detect did not end within {timeout}");
            }
            return (process.ExitCode, _stdout.GetAwaiter().GetResult(), _stderr.GetAwaiter().GetResult());
        }

        public void Dispose()
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.Dispose();
        }
    }

    public static Running Start(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Repo.CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DETECT_ROOT"] = Repo.Root;
        return new Running(Process.Start(psi)!);
    }

    public static (int Code, string Stdout, string Stderr) Run(TimeSpan timeout, params string[] args)
    {
        using var running = Start(args);
        return running.Finish(timeout);
    }
}
