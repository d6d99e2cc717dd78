using Detect.Alerts.Policy;
using Detect.Records;
using Detect.Sensors.Enforcement;
using Detect.Testing;
using Detect.Transport;
using Detect.Transport.Kafka;

namespace Detect.Cli.Tests;

/// <summary>`detect sensor --kafka` as a host's agent in the distributed mode: flows out, policy commands in.</summary>
public class SensorOverKafkaTests
{
    private static void Log(string text) => TestContext.Current.TestOutputHelper?.WriteLine(text);

    [Fact]
    public async Task SensorOverKafka_WithIfaceAndEnforce_PublishesFlows_AppliesABlockForItsHost_AndDetachesAtExit()
    {
        Needs.KernelBtf();
        var ct = TestContext.Current.CancellationToken;
        using var broker = new LocalKafkaBroker();
        using var net = NetNs.Create();
        var pinRoot = $"/sys/fs/bpf/detect-test-{Random.Shared.Next():x8}";
        var hostName = $"detect-test-{Guid.NewGuid():N}";
        var hostId = HostIdentity.FromName(hostName);
        try
        {
            using var transport = new KafkaTransport(KafkaOptions.Parse(broker.BootstrapServers) with { Log = Log });
            // Subscribed before the sensor starts, so nothing it publishes is missed.
            using var flows = transport.Subscribe(new ConsumerOptions { GroupId = $"t-flows-{Guid.NewGuid():N}", Families = [MessageFamily.Flows], Log = Log });
            using var acks = transport.Subscribe(new ConsumerOptions { GroupId = $"t-acks-{Guid.NewGuid():N}", Families = [MessageFamily.PolicyAcks], Log = Log });
            using var sensor = new ProductEndToEndTests.Child("sensor", "--kafka", broker.BootstrapServers, "--host-name", hostName,
                "--iface", $"{net.B.Interface}@{net.B.Netns}", "--enforce", "--pin-root", pinRoot, "--mode", "summary", "--no-process", "--pid", "1", "--refresh", "1");
            Assert.True(await sensor.WaitForStderr("policy ENFORCING", TimeSpan.FromSeconds(60), ct), "the sensor started, enforcing\n" + sensor.Stderr);
            Assert.Contains("enforcement", sensor.Stderr, StringComparison.Ordinal);

            var port = Random.Shared.Next(20000, 30000);
            using var listener = PolicyEnforceTests.Listen(net.B, port);
            // A SYN sent while the veth takes its new XDP program can be lost (retransmitted after 1 s): try a few times.
            Assert.True(await ProductEndToEndTests.WaitFor(() => PolicyEnforceTests.TryConnect(net.A, net.B.Address, port), TimeSpan.FromSeconds(10), ct),
                "connects before any command\n" + sensor.Stderr);

            // The flow of that connection reaches Kafka, from this host, with both addresses.
            var sawFlow = false;
            using (var limit = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                limit.CancelAfter(TimeSpan.FromSeconds(60));
                while (!sawFlow)
                {
                    using var message = await flows.ReceiveAsync(limit.Token);
                    Assert.Equal(hostId, message.HostId);
                    var reader = message.Records();
                    while (reader.TryRead(out var record))
                    {
                        ref readonly var f = ref record.As<FlowRecord>();
                        if ((f.Dport == port || f.Sport == port) && (f.SourceAddress.Equals(net.A.Address) || f.DestinationAddress.Equals(net.A.Address))) sawFlow = true;
                    }
                    flows.Commit(message);
                }
            }

            // A policy command for this host (as the pipeline's policy engine publishes it): block A.
            var command = new PolicyCommand
            {
                Id = "cmd-" + Guid.NewGuid().ToString("N")[..8],
                Rule = "test",
                Action = PolicyAction.BlockSource,
                Target = net.A.Address + "/32",
                TtlSeconds = 300,
                Reason = "test: sensor --kafka --enforce",
                DryRun = false,
                AlertId = "test-alert",
                Host = hostName,
                HostId = hostId.ToString("x16"),
                Family = "flow",
                Entity = net.A.Address.ToString(),
                Score = 2f,
                IssuedNs = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100,
            };
            using (var publisher = transport.CreatePublisher(new PublisherOptions { HostId = hostId, Log = Log }))
            {
                Assert.True(publisher.TryAppend(MessageFamily.Policy, command.ToRecord()));
                Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(30), ct));
            }
            var tracker = new AckTracker();
            using (var limit = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                limit.CancelAfter(TimeSpan.FromSeconds(60));
                while (tracker.Total == 0)
                {
                    using var message = await acks.ReceiveAsync(limit.Token);
                    tracker.Apply(message.Payload);
                    acks.Commit(message);
                }
            }
            var ack = Assert.Single(tracker.Recent);
            Log($"ack: {ack}");
            Assert.Equal((command.Id, PolicyAckStatus.Applied), (ack.CommandId, ack.Status));
            Assert.False(PolicyEnforceTests.TryConnect(net.A, net.B.Address, port), "the blocked source cannot connect");
            using (var table = EnforcementTable.Open(pinRoot))
            {
                var entry = table.Find(BlockKind.Source, net.A.Address + "/32");
                Assert.NotNull(entry);
                Assert.True(entry!.Hits >= 1, $"hits {entry.Hits}");
            }

            sensor.Signal("INT");
            var (code, stdout, stderr) = await sensor.Finish(TimeSpan.FromSeconds(60), ct);
            Log(stderr);
            Assert.True(code == 0, $"sensor exit {code}\n{stderr}");
            Assert.Contains("enforcement programs detached", stderr, StringComparison.Ordinal);
            Assert.Contains("policy applied 1", stdout.TrimEnd().Split('\n')[^1], StringComparison.Ordinal);
            Assert.True(await ProductEndToEndTests.WaitFor(() => PolicyEnforceTests.TryConnect(net.A, net.B.Address, port), TimeSpan.FromSeconds(10), ct),
                "connects again once the agent detached its programs");
        }
        finally
        {
            EnforcementTable.Purge(pinRoot);
            if (Directory.Exists(pinRoot)) Directory.Delete(pinRoot, recursive: true);
        }
    }
}
