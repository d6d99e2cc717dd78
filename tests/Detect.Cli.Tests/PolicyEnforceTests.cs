using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Detect.Alerts;
using Detect.Alerts.Policy;
using Detect.Cli.Product;
using Detect.Models.Features;
using Detect.Models.Scoring;
using Detect.Models.Training;
using Detect.Pipeline;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;
using Detect.Records;
using Detect.Sensors;
using Detect.Sensors.Enforcement;
using Detect.Sensors.Flows;
using Detect.Testing;
using Detect.Transport;

namespace Detect.Cli.Tests;

/// <summary>
/// The policy engine's commands applied by the sensors' side (PolicyExecutor): in dry run only
/// checked and acknowledged; with enforcement on, a real port scan seen by the real flow sensor,
/// scored by a flow model, becomes an alert whose command blocks the scanner at XDP (its hit
/// counter rises) until the block's TTL ends. Namespaces, pins and programs are the test's own.
/// </summary>
[Trait("Needs", "Kernel")]
public sealed class PolicyEnforceTests
{
    private static void Log(string text) => TestContext.Current.TestOutputHelper?.WriteLine(text);

    private static PolicyCommand Command(PolicyAction action, string target, bool dryRun, long startNs = 0, double? ttl = 60) => new()
    {
        Id = Guid.NewGuid().ToString("N")[..16],
        Rule = "test",
        Action = action,
        Target = target,
        ProcessStartNs = startNs,
        TtlSeconds = action == PolicyAction.Kill ? null : ttl,
        Reason = "test",
        DryRun = dryRun,
        AlertId = "a1",
        Host = Environment.MachineName,
        HostId = HostIdentity.Local.ToString("x16"),
        Family = action == PolicyAction.BlockSource ? "flow" : "syscall",
        Entity = target,
    };

    [Fact]
    public void PolicyExecutor_DryRun_ChecksTheTargetAndChangesNothing_AndRefusesWhatTheAllowlistProtects()
    {
        Needs.Root();
        using var transport = Transports.InProcess();
        using var acks = transport.Subscribe(new ConsumerOptions { GroupId = "acks", Families = [MessageFamily.PolicyAcks], Log = _ => { } });
        using var executor = new PolicyExecutor(transport, new PolicyExecutorOptions { HostId = HostIdentity.Local, Log = Log });

        var block = executor.Apply(Command(PolicyAction.BlockSource, "203.0.113.7/32", dryRun: true));
        Assert.Equal(PolicyAckStatus.DryRun, block.Status);
        Assert.Contains("would drop packets from 203.0.113.7/32", block.Detail, StringComparison.Ordinal);

        var loopback = executor.Apply(Command(PolicyAction.BlockSource, "127.0.0.1/32", dryRun: true));
        Assert.Equal(PolicyAckStatus.Refused, loopback.Status);
        Assert.Contains("allowlist", loopback.Detail, StringComparison.Ordinal);

        // A process that runs: in dry run it is named, not killed; with a wrong start time it is spared.
        using var sleeper = Process.Start(new ProcessStartInfo("sleep", "30") { UseShellExecute = false })!;
        try
        {
            var ticks = EnforcementTable.StartTicks(sleeper.Id)!.Value;
            var kill = executor.Apply(Command(PolicyAction.Kill, sleeper.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), dryRun: true, startNs: (long)ticks * 10_000_000));
            Assert.Equal(PolicyAckStatus.DryRun, kill.Status);
            Assert.Contains("(sleep)", kill.Detail, StringComparison.Ordinal);
            var reused = executor.Apply(Command(PolicyAction.Kill, sleeper.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), dryRun: true, startNs: (long)(ticks + 500) * 10_000_000));
            Assert.Equal(PolicyAckStatus.Refused, reused.Status);
            Assert.Contains("reused", reused.Detail, StringComparison.Ordinal);
            Assert.False(sleeper.HasExited);
            // Not enforcing here, so a command that asks to act is refused, not silently dropped.
            var notEnforcing = executor.Apply(Command(PolicyAction.BlockSource, "203.0.113.9/32", dryRun: false));
            Assert.Equal(PolicyAckStatus.Refused, notEnforcing.Status);
        }
        finally
        {
            sleeper.Kill();
        }
        Assert.Equal(2, executor.Count(PolicyAckStatus.DryRun)); // the block and the kill
        Assert.Equal(3, executor.Count(PolicyAckStatus.Refused));
        var tracker = new AckTracker();
        while (acks.TryReceive(out var m))
        {
            using (m) tracker.Apply(m!.Payload);
        }
        Assert.Equal(5, tracker.Total);
        Assert.Equal(2, tracker.Count(PolicyAckStatus.DryRun));
        Assert.Equal(3, tracker.Count(PolicyAckStatus.Refused));
    }

    [Fact]
    public async Task Enforce_ScoredFlowAlertOfAPortScan_BlocksTheSourceAtXdp_ItsHitsRise_AndTheBlockExpires()
    {
        Needs.KernelBtf();
        using var net = NetNs.Create();
        var pinRoot = $"/sys/fs/bpf/detect-test-{Random.Shared.Next():x8}";
        try
        {
            using var enforcer = Enforcer.Start(new EnforcementOptions
            {
                PinRoot = pinRoot,
                DryRun = false,
                Interfaces = [new NetInterface(net.B.Interface, net.B.Netns)],
                KillProcesses = false,
                Log = Log,
            });
            Assert.All(enforcer.Attachments, a => Assert.NotEqual(EnforcementAttachState.Failed, a.State));
            var window = TimeSpan.FromSeconds(2);
            var scorer = new ModelScorer(TrainFlowModel(window));

            var port = Random.Shared.Next(20000, 30000);
            using var listener = Listen(net.B, port);
            Assert.True(TryConnect(net.A, net.B.Address, port), "connects before any alert");

            // The scan, seen by the real flow sensor on B's side.
            var records = new List<byte[]>();
            using (var flows = FlowCapture.Start([$"{net.B.Interface}@{net.B.Netns}"], new Collect(records), new FlowSensorOptions { AttributeConnects = false }))
            {
                NetNs.Enter(net.A.Netns, () =>
                {
                    for (var p = 1000; p < 1150; p++)
                    {
                        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                        try
                        {
                            s.Connect(new IPEndPoint(net.B.Address, p)); // closed: RST at once
                        }
                        catch (SocketException)
                        {
                        }
                    }
                });
                flows.Stop();
            }
            Assert.True(records.Count >= 150, $"{records.Count} flow records");

            // Pipeline -> model -> alert -> policy (enforcing) -> policy topic -> executor -> Enforcer.
            using var transport = Transports.InProcess();
            using var executor = new PolicyExecutor(transport, new PolicyExecutorOptions { HostId = HostIdentity.Local, Enforcer = enforcer, Log = Log });
            using var executorStop = new CancellationTokenSource();
            var executorTask = executor.RunAsync(executorStop.Token);
            var rule = new PolicyRule { Name = "block-scanners", Family = "flow", Action = PolicyAction.BlockSource, MinScore = 1.5f, Ttl = TimeSpan.FromSeconds(4) };
            var hostId = HostIdentity.Local.ToString("x16");
            using var stage = new AlertStage(new AlertEngine(hostIdOf: _ => hostId),
                new PolicyEngine(new PolicyOptions { Enforce = true, Config = new PolicyConfig { Rules = [rule] } }), transport, null, HostIdentity.Local, Log);
            var pipeline = new FeaturePipeline(new PipelineOptions { Window = window, AllowedLateness = TimeSpan.FromMilliseconds(200) });
            var alerts = new List<Alert>();
            pipeline.AddSink((family, batch) =>
            {
                Assert.Equal(FeatureFamily.Flow, family);
                var scored = scorer.Score(batch);
                alerts.AddRange(stage.OnScored(batch, scored));
            });
            var source = new RecordSource(Environment.MachineName, KernelClock.BootToRealtimeOffsetNs());
            foreach (var r in records) pipeline.Process(r, source);
            pipeline.Flush();
            var alert = Assert.Single(alerts, a => a.Entity == net.A.Address.ToString());
            Log($"alert: {alert}");
            Assert.True(alert.Score >= 1.5f, $"score {alert.Score}");

            var entry = await WaitFor(() => enforcer.Table.Find(BlockKind.Source, net.A.Address + "/32"), TimeSpan.FromSeconds(10));
            Assert.NotNull(entry);
            Assert.False(entry!.DryRun);
            Assert.Contains(alert.Id, entry.Reason, StringComparison.Ordinal);
            // The executor records its acknowledgement just after the map update: wait for it too.
            var acks = await WaitFor(() => executor.Recent.Count > 0 ? executor.Recent : null, TimeSpan.FromSeconds(10));
            var ack = Assert.Single(acks!);
            Assert.Equal(PolicyAckStatus.Applied, ack.Status);

            Assert.False(TryConnect(net.A, net.B.Address, port), "the scanner cannot connect while the block holds");
            var hit = enforcer.Table.Find(BlockKind.Source, net.A.Address + "/32")!;
            Assert.True(hit.Hits >= 1, $"hits {hit.Hits}");
            Assert.True(enforcer.Table.ReadCounters().Dropped >= hit.Hits);

            // The TTL (4 s from the decision) ends the block without anyone removing it.
            var until = hit.Expires!.Value;
            var wait = until - DateTimeOffset.UtcNow + TimeSpan.FromMilliseconds(500);
            if (wait > TimeSpan.Zero) await Task.Delay(wait, TestContext.Current.CancellationToken);
            Assert.True(TryConnect(net.A, net.B.Address, port), "connects again once the block expired");
            var after = enforcer.Table.Find(BlockKind.Source, net.A.Address + "/32");
            Assert.True(after == null || after.Expired, "the entry is expired (or swept)");
            executorStop.Cancel();
            await executorTask;
            enforcer.Detach();
        }
        finally
        {
            EnforcementTable.Purge(pinRoot);
            if (Directory.Exists(pinRoot)) Directory.Delete(pinRoot, recursive: true);
        }
    }

    /// <summary>
    /// A flow model trained on windows the real pipeline made from normal flow records: 60 sources,
    /// each a few complete HTTPS/HTTP connections per window to one or two servers.
    /// </summary>
    private static DetectorModel TrainFlowModel(TimeSpan window)
    {
        var pipeline = new FeaturePipeline(new PipelineOptions { Window = window, AllowedLateness = TimeSpan.FromMilliseconds(200) });
        var batches = new List<FeatureMatrix>();
        pipeline.AddSink((_, batch) => batches.Add(FeatureMatrix.FromArrow(batch)));
        var rng = new Random(5);
        var buffer = new RecordBuffer();
        var t0 = 1_750_000_000_000_000_000L;
        var windowNs = window.Ticks * 100;
        for (var w = 0; w < 6; w++)
        {
            for (var s = 0; s < 60; s++)
            {
                for (var f = 0; f < 2 + rng.Next(3); f++)
                {
                    var start = t0 + w * windowNs + rng.NextInt64(windowNs / 2);
                    var duration = rng.NextInt64(windowNs / 4);
                    var flow = new FlowRecord
                    {
                        Family = 4, Protocol = 6, Reason = FlowEndReason.TcpEnd,
                        Sport = (ushort)(32768 + rng.Next(20000)), Dport = (ushort)(rng.Next(2) == 0 ? 443 : 80),
                        PacketsFwd = (ulong)(6 + rng.Next(10)), PacketsRev = (ulong)(6 + rng.Next(20)),
                        SynCount = 2, FinCount = 2, TcpFlags = 0x1B,
                        FirstNs = (ulong)start, LastNs = (ulong)(start + duration),
                    };
                    flow.BytesFwd = flow.PacketsFwd * (ulong)(80 + rng.Next(400));
                    flow.BytesRev = flow.PacketsRev * (ulong)(200 + rng.Next(1200));
                    flow.Header.KtimeNs = (ulong)(start + duration);
                    flow.Saddr[0] = 10; flow.Saddr[1] = 99; flow.Saddr[2] = 0; flow.Saddr[3] = (byte)(10 + s);
                    flow.Daddr[0] = 192; flow.Daddr[1] = 0; flow.Daddr[2] = 2; flow.Daddr[3] = (byte)(1 + rng.Next(2));
                    buffer.AddFlow(flow);
                }
            }
            pipeline.Process(buffer.Span, new RecordSource("normal-host"));
            buffer.Clear();
        }
        pipeline.Flush();
        var normal = FeatureMatrix.Concat(batches);
        Assert.True(normal.Rows >= 300, $"{normal.Rows} normal windows");
        return ModelTrainer.Train(normal, new TrainOptions { Name = "flow", Source = "test" });
    }

    private sealed class Collect(List<byte[]> into) : ISensorBatchHandler
    {
        public void OnBatch(SensorBatch batch)
        {
            foreach (var r in batch)
                if (r.Type == RecordType.Flow) into.Add(r.Bytes.ToArray());
        }
    }

    internal static Socket Listen(NetNs.Side server, int port) => NetNs.Enter(server.Netns, () =>
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(server.Address, port));
        s.Listen(64);
        _ = Task.Run(() =>
        {
            try
            {
                while (true) s.Accept().Dispose();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        });
        return s;
    });

    internal static bool TryConnect(NetNs.Side client, IPAddress server, int port) => NetNs.Enter(client.Netns, () =>
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            return s.ConnectAsync(new IPEndPoint(server, port)).Wait(TimeSpan.FromSeconds(1)) && s.Connected;
        }
        catch (AggregateException)
        {
            return false;
        }
    });

    private static async Task<T?> WaitFor<T>(Func<T?> probe, TimeSpan timeout) where T : class
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (probe() is { } v) return v;
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
        return null;
    }
}
