using System.Diagnostics;
using System.Text.Json;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// Enforcement driven as an operator drives it: `detect block run` is the agent (a child
/// process), `detect block add|list|remove` are separate processes editing the pinned lists.
/// </summary>
[Trait("Needs", "Kernel")]
[Collection(NetworkCollection.Name)]
public sealed class EnforceRestartTests
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(1);

    private static void Log(string text) => TestContext.Current.TestOutputHelper?.WriteLine(text);

    private static ProcessStartInfo Cli(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Repo.CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DETECT_ROOT"] = Repo.Root;
        return psi;
    }

    private static NetNs.CommandResult RunCli(params string[] args)
    {
        using var p = Process.Start(Cli(args))!;
        var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        Assert.True(p.WaitForExit(60_000), $"detect {string.Join(' ', args)} did not finish");
        var result = new NetNs.CommandResult(p.ExitCode, stdout.Result, stderr.Result);
        Log($"$ detect {string.Join(' ', args)}\n{result.Stdout}{result.Stderr}");
        return result;
    }

    /// <summary>Starts `detect block run` and waits until it says it enforces.</summary>
    private static Process StartAgent(NetNs net, string pinRoot, List<string> output)
    {
        var agent = Process.Start(Cli("block", "run", "--iface", $"{net.B.Interface}@{net.B.Netns}", "--no-kill", "--pin-root", pinRoot))!;
        var ready = new TaskCompletionSource();
        agent.OutputDataReceived += (_, e) =>
        {
            if (e.Data == null) return;
            lock (output) output.Add(e.Data);
            if (e.Data.Contains("enforcing at", StringComparison.Ordinal)) ready.TrySetResult();
        };
        agent.ErrorDataReceived += (_, e) =>
        {
            if (e.Data != null) lock (output) output.Add("stderr: " + e.Data);
        };
        agent.BeginOutputReadLine();
        agent.BeginErrorReadLine();
        if (!ready.Task.Wait(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken))
        {
            agent.Kill();
            Assert.Fail("the agent did not start enforcing: " + string.Join('\n', output));
        }
        return agent;
    }

    [Fact]
    public void Enforce_BlocksHoldWhileTheAgentRestarts_AndTheCliEditsThemFromAnotherProcess()
    {
        using var net = NetNs.Create();
        using var pins = new EnforcePins();
        var port = NetTraffic.FreePort();
        using var listener = NetTraffic.Listen(net.B, port);
        NetTraffic.AcceptForever(listener);
        var output = new List<string>();
        Process? agent = null;
        try
        {
            agent = StartAgent(net, pins.Root, output);
            Assert.True(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "connects before any block");

            var add = RunCli("block", "add", "source", net.A.Address.ToString(), "--ttl", "10m", "--reason", "restart test", "--pin-root", pins.Root);
            Assert.Equal(0, add.ExitCode);
            Assert.Contains($"blocked source {net.A.Address}/32", add.Stdout, StringComparison.Ordinal);
            Assert.False(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "blocked while the agent runs");

            // The agent dies (SIGKILL, as in a crash): the pinned program keeps dropping.
            agent.Kill();
            agent.WaitForExit();
            agent.Dispose();
            agent = null;
            Assert.False(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "still blocked with no agent running");

            // A new agent takes the pinned link over and swaps its own program in.
            output.Clear();
            agent = StartAgent(net, pins.Root, output);
            lock (output) Assert.Contains(output, l => l.Contains("detect_enforce_xdp", StringComparison.Ordinal) && l.Contains("replaced", StringComparison.Ordinal));
            Assert.False(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "still blocked after the restart");

            var list = RunCli("block", "list", "--json", "--pin-root", pins.Root);
            Assert.Equal(0, list.ExitCode);
            using (var doc = JsonDocument.Parse(list.Stdout.Trim().Split('\n')[^1]))
            {
                var entry = Assert.Single(doc.RootElement.GetProperty("entries").EnumerateArray());
                Assert.Equal("source", entry.GetProperty("kind").GetString());
                Assert.Equal($"{net.A.Address}/32", entry.GetProperty("target").GetString());
                Assert.Equal("restart test", entry.GetProperty("reason").GetString());
                Assert.True(entry.GetProperty("hits").GetInt64() >= 3, "hits counted across both agents and the gap between them");
                Assert.True(doc.RootElement.GetProperty("counters").GetProperty("dropped").GetInt64() >= 3);
            }

            var remove = RunCli("block", "remove", "source", net.A.Address.ToString(), "--pin-root", pins.Root);
            Assert.Equal(0, remove.ExitCode);
            Assert.True(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "connects once the block is removed");

            var refused = RunCli("block", "add", "source", net.B.Address.ToString(), "--pin-root", pins.Root);
            Assert.Equal(3, refused.ExitCode);
            Assert.Contains("refusing to block traffic from", refused.Stderr, StringComparison.Ordinal);
            Assert.Contains("an address of this host", refused.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            if (agent != null)
            {
                agent.Kill();
                agent.WaitForExit();
                agent.Dispose();
            }
            lock (output) Log(string.Join('\n', output));
        }
    }

    [Fact]
    public void Block_WithoutRootOrCapBpf_SaysSoPlainly()
    {
        Needs.Root(); // to drop to an unprivileged user
        var setpriv = Needs.Program("setpriv");
        var psi = new ProcessStartInfo(setpriv) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", FindDotnet(), Repo.CliDll, "block", "list" })
            psi.ArgumentList.Add(a);
        psi.Environment["HOME"] = "/tmp";
        psi.Environment["DOTNET_CLI_HOME"] = "/tmp";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Log(stderr);
        if (stderr.Contains("Permission denied", StringComparison.Ordinal) && !stderr.Contains("needs root", StringComparison.Ordinal))
            Assert.Skip("user nobody cannot run dotnet or read the build output on this machine: " + stderr);
        Assert.Equal(4, p.ExitCode);
        Assert.Contains("needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)", stderr, StringComparison.Ordinal);
    }

    private static string FindDotnet()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
        {
            var path = Path.Combine(dir, "dotnet");
            if (dir.Length > 0 && File.Exists(path)) return Path.GetFullPath(path);
        }
        return "/usr/bin/dotnet";
    }
}
