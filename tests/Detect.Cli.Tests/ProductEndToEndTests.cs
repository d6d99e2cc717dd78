using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Detect.Testing;
using Detect.Transport.Kafka;

namespace Detect.Cli.Tests;

/// <summary>
/// The whole product as a user runs it, in the real kernel and (for the distributed mode) against
/// the local Kafka-protocol broker: `detect up` learns a baseline from this host, scores a
/// workload's windows and stops in order on SIGINT leaving nothing attached; `detect pipeline
/// --kafka` with `detect sensor --kafka` does the same over the broker. Bounded in time: short
/// windows (2 s) and learning periods (12 s).
/// </summary>
[Trait("Needs", "Kernel")]
public sealed class ProductEndToEndTests
{
    private static void Log(string text) => TestContext.Current.TestOutputHelper?.WriteLine(text);

    [Fact]
    public async Task Up_LearnsABaseline_ScoresAWorkloadsWindows_AndSigintLeavesNothingAttached()
    {
        Needs.KernelBtf();
        var ct = TestContext.Current.CancellationToken;
        var state = Path.Combine(Path.GetTempPath(), $"detect-up-e2e-{Guid.NewGuid():N}");
        var scores = Path.Combine(state, "scores.jsonl");
        using var net = NetNs.Create();
        using var normal = new NormalActivity();
        using var up = new Child("up", "--state", state, "--window", "2", "--lateness", "0.4", "--learn", "12s", "--refresh", "1",
            "--score-log", scores, "--json", "--iface", $"{net.B.Interface}@{net.B.Netns}");
        try
        {
            // Learning (12 s, longer if the host was too quiet), training, then scoring.
            Assert.True(await up.WaitForStderr("syscall: scoring with syscall/v", TimeSpan.FromSeconds(150), ct), "up reached the scoring phase\n" + up.Stderr);
            var held = BpfObjectsOf(up.Pid);
            Log($"up holds {held.Programs.Count} programs, {held.Links.Count} links");
            Assert.Contains(held.Programs, p => p.Name.StartsWith("detect_sys_exit", StringComparison.Ordinal));
            Assert.Contains(held.Programs, p => p.Name.StartsWith("detect_flow_in", StringComparison.Ordinal));
            Assert.NotEmpty(TcFilters(net));

            // A workload started now: its windows are scored (the score log names its process).
            using var workload = Process.Start(new ProcessStartInfo("sh", ["-c", "i=0; while [ $i -lt 2000 ]; do cat /etc/hostname > /dev/null; i=$((i+1)); done; sleep 3"]) { UseShellExecute = false })!;
            var entity = $"\"entity\":\"{workload.Id}@";
            Assert.True(await WaitFor(() => File.Exists(scores) && ReadShared(scores).Contains(entity, StringComparison.Ordinal), TimeSpan.FromSeconds(60), ct),
                $"a window of the workload (pid {workload.Id}) was scored\n{up.Stderr}");
            var line = ReadShared(scores).Split('\n').First(l => l.Contains(entity, StringComparison.Ordinal));
            using (var doc = JsonDocument.Parse(line))
            {
                Assert.Equal("syscall", doc.RootElement.GetProperty("family").GetString());
                Assert.StartsWith("syscall/v", doc.RootElement.GetProperty("model").GetString(), StringComparison.Ordinal);
                Assert.True(doc.RootElement.GetProperty("records").GetInt64() > 0);
                var lag = (doc.RootElement.GetProperty("scored_ns").GetInt64() - doc.RootElement.GetProperty("window_end_ns").GetInt64()) / 1e6;
                Log($"workload window scored {lag:F0} ms after its end");
                Assert.InRange(lag, 0, 30_000);
            }
            // Some traffic for the flow sensor on the veth: connects to closed ports (SYN, RST).
            NetNs.Enter(net.A.Netns, () =>
            {
                for (var port = 7000; port < 7005; port++)
                {
                    using var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                    try
                    {
                        s.Connect(new System.Net.IPEndPoint(net.B.Address, port));
                    }
                    catch (System.Net.Sockets.SocketException)
                    {
                    }
                }
            });

            up.Signal("INT");
            var (code, stdout, stderr) = await up.Finish(TimeSpan.FromSeconds(90), ct);
            Log(stderr);
            Assert.True(code == 0, $"exit {code}\n{stderr}");
            Assert.Contains("sensors detached", stderr, StringComparison.Ordinal);
            using var summary = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
            var syscall = summary.RootElement.GetProperty("families").GetProperty("syscall");
            Assert.Equal("scoring", syscall.GetProperty("phase").GetString());
            Assert.True(syscall.GetProperty("scored").GetInt64() > 0);
            Assert.True(summary.RootElement.GetProperty("records").GetProperty("flow").GetProperty("records").GetInt64() >= 5, "each connect was a flow");
            Assert.Equal(0, summary.RootElement.GetProperty("consumer").GetProperty("missing_records").GetInt64());
            var p50 = summary.RootElement.GetProperty("window_end_to_score_ms").GetProperty("p50").GetDouble();
            Log($"window end -> score: p50 {p50} ms; transport p50 {summary.RootElement.GetProperty("transport_ms").GetProperty("p50").GetDouble()} ms");

            // Nothing attached any more: every program and link it held is gone, the veth has no filter.
            foreach (var p in held.Programs) Assert.False(ProgramExists(p.Id), $"program {p.Id} ({p.Name}) is still loaded");
            foreach (var l in held.Links) Assert.False(LinkExists(l), $"link {l} is still there");
            Assert.Empty(TcFilters(net));
            Assert.True(Directory.Exists(Path.Combine(state, "models", "syscall")), "the baseline is in the state folder's registry");
            Assert.True(File.Exists(Path.Combine(state, "models", "syscall", "CURRENT")));
        }
        finally
        {
            if (Directory.Exists(state)) Directory.Delete(state, recursive: true);
        }
    }

    [Fact]
    public async Task PipelineOverKafka_WithSensorOverKafka_ScoresWindows_AndStopsInOrder()
    {
        Needs.KernelBtf();
        var ct = TestContext.Current.CancellationToken;
        using var broker = new LocalKafkaBroker();
        var state = Path.Combine(Path.GetTempPath(), $"detect-pipeline-e2e-{Guid.NewGuid():N}");
        var scores = Path.Combine(state, "scores.jsonl");
        using var normal = new NormalActivity();
        try
        {
            using var pipeline = new Child("pipeline", "--kafka", broker.BootstrapServers, "--group", $"e2e-{Guid.NewGuid():N}", "--state", state,
                "--window", "2", "--lateness", "0.4", "--learn", "12s", "--refresh", "2", "--score-log", scores, "--json", "--publish-features");
            using var sensor = new Child("sensor", "--kafka", broker.BootstrapServers, "--refresh", "5");
            Assert.True(await pipeline.WaitForStderr("syscall: scoring with syscall/v", TimeSpan.FromSeconds(150), ct), "the pipeline reached the scoring phase\n" + pipeline.Stderr + "\n" + sensor.Stderr);
            Assert.True(await WaitFor(() => File.Exists(scores) && ReadShared(scores).Split('\n').Count(l => l.Length > 0) >= 5, TimeSpan.FromSeconds(60), ct),
                "windows were scored\n" + pipeline.Stderr);

            sensor.Signal("INT");
            var (sensorCode, _, sensorErr) = await sensor.Finish(TimeSpan.FromSeconds(60), ct);
            Assert.True(sensorCode == 0, $"sensor exit {sensorCode}\n{sensorErr}");
            pipeline.Signal("INT");
            var (code, stdout, stderr) = await pipeline.Finish(TimeSpan.FromSeconds(90), ct);
            Log(stderr);
            Assert.True(code == 0, $"pipeline exit {code}\n{stderr}");
            Assert.Contains("offsets committed", stderr, StringComparison.Ordinal);
            using var summary = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
            var root = summary.RootElement;
            Assert.True(root.GetProperty("records").GetProperty("syscalls").GetInt64() > 0);
            Assert.True(root.GetProperty("families").GetProperty("syscall").GetProperty("scored").GetInt64() >= 5);
            Assert.Equal(0, root.GetProperty("consumer").GetProperty("dead_lettered").GetInt64());
            Assert.Equal(0, root.GetProperty("pipeline").GetProperty("failed_messages").GetInt64());
            // --publish-features: every window also left as Arrow IPC on detect.features, nothing refused or dropped.
            var published = root.GetProperty("features_published");
            Assert.Equal(root.GetProperty("pipeline").GetProperty("windows").GetProperty("syscall").GetInt64(), published.GetProperty("rows").GetInt64());
            Assert.Equal((0L, 0L), (published.GetProperty("refused_rows").GetInt64(), published.GetProperty("dropped_rows").GetInt64()));
            Log($"transport p50 {root.GetProperty("transport_ms").GetProperty("p50").GetDouble()} ms, window end -> score p50 {root.GetProperty("window_end_to_score_ms").GetProperty("p50").GetDouble()} ms");
        }
        finally
        {
            if (Directory.Exists(state)) Directory.Delete(state, recursive: true);
        }
    }

    /// <summary>Short-lived processes every 100 ms, so a quiet test machine still has enough windows to learn from.</summary>
    private sealed class NormalActivity : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;

        public NormalActivity()
        {
            _loop = Task.Run(async () =>
            {
                var commands = new[] { ("/bin/true", ""), ("ls", "/"), ("cat", "/proc/loadavg"), ("uname", "-a"), ("date", "") };
                var i = 0;
                while (!_stop.IsCancellationRequested)
                {
                    var (file, args) = commands[i++ % commands.Length];
                    using (var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, UseShellExecute = false }))
                    {
                        if (p != null)
                        {
                            await p.StandardOutput.ReadToEndAsync(CancellationToken.None);
                            await p.WaitForExitAsync(CancellationToken.None);
                        }
                    }
                    try
                    {
                        await Task.Delay(100, _stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                    }
                }
            });
        }

        public void Dispose()
        {
            _stop.Cancel();
            _loop.Wait(TimeSpan.FromSeconds(10));
            _stop.Dispose();
        }
    }

    /// <summary>The built CLI as a child process whose stderr is watched line by line.</summary>
    internal sealed class Child : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _stderr = new();
        private readonly Task<string> _stdout;
        private readonly Task _stderrPump;

        public Child(params string[] args)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add(Repo.CliDll);
            foreach (var a in args) psi.ArgumentList.Add(a);
            psi.Environment["DETECT_ROOT"] = Repo.Root;
            _process = Process.Start(psi)!;
            _stdout = _process.StandardOutput.ReadToEndAsync();
            _stderrPump = Task.Run(async () =>
            {
                while (await _process.StandardError.ReadLineAsync() is { } line)
                {
                    lock (_stderr) _stderr.AppendLine(line);
                }
            });
        }

        public int Pid => _process.Id;

        public string Stderr
        {
            get
            {
                lock (_stderr) return _stderr.ToString();
            }
        }

        public Task<bool> WaitForStderr(string text, TimeSpan timeout, CancellationToken ct) =>
            WaitFor(() => Stderr.Contains(text, StringComparison.Ordinal) || _process.HasExited, timeout, ct)
                .ContinueWith(t => t.Result && Stderr.Contains(text, StringComparison.Ordinal), ct, TaskContinuationOptions.None, TaskScheduler.Default);

        public void Signal(string signal) => ReplayPcapTests.Signal(_process.Id, signal);

        public async Task<(int Code, string Stdout, string Stderr)> Finish(TimeSpan timeout, CancellationToken ct)
        {
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(timeout);
            try
            {
                await _process.WaitForExitAsync(limit.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
                Assert.Fail($"detect did not end within {timeout}\n{Stderr}");
            }
            await _stderrPump;
            return (_process.ExitCode, await _stdout, Stderr);
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(10_000);
            }
            _process.Dispose();
        }
    }

    private sealed record HeldObjects(List<(int Id, string Name)> Programs, List<int> Links);

    /// <summary>
    /// The BPF programs and links a process holds: its file descriptors' fdinfo names them
    /// (prog_id, link_id); bpftool gives the programs' names.
    /// </summary>
    private static HeldObjects BpfObjectsOf(int pid)
    {
        var programIds = new HashSet<int>();
        var links = new HashSet<int>();
        foreach (var info in Directory.GetFiles($"/proc/{pid}/fdinfo"))
        {
            string[] lines;
            try
            {
                lines = File.ReadAllLines(info);
            }
            catch (IOException)
            {
                continue; // closed meanwhile
            }
            var link = lines.FirstOrDefault(l => l.StartsWith("link_id:", StringComparison.Ordinal));
            if (link != null) links.Add(int.Parse(link[8..].Trim(), CultureInfo.InvariantCulture));
            var prog = lines.FirstOrDefault(l => l.StartsWith("prog_id:", StringComparison.Ordinal));
            if (prog != null) programIds.Add(int.Parse(prog[8..].Trim(), CultureInfo.InvariantCulture));
        }
        var bpftool = Needs.Program("bpftool");
        var programs = new List<(int, string)>();
        using (var doc = JsonDocument.Parse(NetNs.Run(bpftool, "-j", "prog", "show").Stdout))
        {
            foreach (var p in doc.RootElement.EnumerateArray())
            {
                var id = p.GetProperty("id").GetInt32();
                if (programIds.Contains(id)) programs.Add((id, p.TryGetProperty("name", out var n) ? n.GetString() ?? "" : ""));
            }
        }
        return new HeldObjects(programs, [.. links]);
    }

    private static bool ProgramExists(int id) => ShowSucceeds("prog", id);

    private static bool LinkExists(int id) => ShowSucceeds("link", id);

    private static bool ShowSucceeds(string kind, int id)
    {
        var psi = new ProcessStartInfo(Needs.Program("bpftool")) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { kind, "show", "id", id.ToString(CultureInfo.InvariantCulture) }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    /// <summary>TC filters on the receiving veth (ingress and egress).</summary>
    private static List<string> TcFilters(NetNs net) =>
        new[] { "ingress", "egress" }
            .SelectMany(dir => net.Exec(net.B.Netns, "tc", "filter", "show", "dev", net.B.Interface, dir).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            .ToList();

    private static string ReadShared(string path)
    {
        using var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    internal static async Task<bool> WaitFor(Func<bool> condition, TimeSpan timeout, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (condition()) return true;
            await Task.Delay(200, ct);
        }
        return condition();
    }
}
