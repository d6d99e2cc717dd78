using Confluent.Kafka;
using Detect.Records;
using Detect.Transport.Kafka;

namespace Detect.Transport.Tests;

/// <summary>One local broker (librdkafka's mock cluster) for a test class; each test makes its own topics.</summary>
public sealed class BrokerFixture : IDisposable
{
    public LocalKafkaBroker Broker { get; } = new();

    public void Dispose() => Broker.Dispose();
}

/// <summary>The delivery guarantees through a real Kafka-protocol broker.</summary>
public sealed class KafkaDeliveryTests(BrokerFixture fixture) : DeliveryTests, IClassFixture<BrokerFixture>
{
    internal static KafkaTransport OpenOn(LocalKafkaBroker broker, int partitions, Func<KafkaOptions, KafkaOptions>? adjust = null)
    {
        var prefix = $"t{Guid.NewGuid():N}.";
        broker.CreateTopics(prefix, partitions, 1);
        var options = new KafkaOptions { BootstrapServers = broker.BootstrapServers, TopicPrefix = prefix, Log = _ => { } };
        return new KafkaTransport(adjust?.Invoke(options) ?? options);
    }

    protected override ITransport Open(int partitions, long maxBytesPerPartition = 64L << 20) => OpenOn(fixture.Broker, partitions);

    protected override void Inject(ITransport transport, MessageFamily family, ulong key, byte[] message)
    {
        using var producer = ((KafkaTransport)transport).CreateRawProducer("test-injector");
        producer.Produce(MessageFamilies.Topic(family, transport.TopicPrefix),
            new Message<byte[]?, byte[]> { Key = KafkaTransport.KeyOf(key), Value = message });
        Assert.Equal(0, producer.Flush(TimeSpan.FromSeconds(10)));
    }

    protected override void Kill(IMessageConsumer consumer) => ((KafkaMessageConsumer)consumer).Abandon();

    // Java clients and every murmur2 partitioner put a host's key where KafkaTransport.PartitionOf says.
    private protected override void CheckPartitioning(StreamCheck check, ITransport transport, int partitions)
    {
        foreach (var (host, seen) in check.HostPartitions)
            Assert.Equal([KafkaTransport.PartitionOf(host, partitions)], seen);
    }

    [Fact]
    public void Broker_StartsWithTheProjectTopicsAndAnAddress()
    {
        Assert.Matches(@"^127\.0\.0\.1:\d+$", fixture.Broker.BootstrapServers);
        Assert.EndsWith("centos8-librdkafka.so", KafkaNative.LoadedPath);
        using var admin = new AdminClientBuilder(new AdminClientConfig { BootstrapServers = fixture.Broker.BootstrapServers }).Build();
        var topics = admin.GetMetadata(TimeSpan.FromSeconds(10)).Topics.ToDictionary(t => t.Topic, t => t.Partitions.Count);
        foreach (var family in MessageFamilies.All)
            Assert.True(topics.ContainsKey(MessageFamilies.Topic(family)), $"{MessageFamilies.Topic(family)} missing");
        Assert.Equal(6, topics["detect.syscalls"]);
    }

    [Fact]
    public async Task Publisher_BrokerStoppedForSecondsAndRestarted_ReportsExactlyWhatItDroppedAndTheConsumerMissesThat()
    {
        using var broker = new LocalKafkaBroker(new LocalBrokerOptions { TelemetryPartitions = 2 });
        using var transport = OpenOn(broker, partitions: 2);
        // A session longer than the outage: the group does not rebalance (which would redeliver, legitimately).
        using var consumer = transport.Subscribe(Group("outage") with { SessionTimeout = TimeSpan.FromSeconds(10) });
        // 1 MiB of undelivered messages at most: during the outage the client queue fills and batches are dropped.
        using var publisher = transport.CreatePublisher(Host(3) with { MaxPendingBytes = 1 << 20 });
        var check = new StreamCheck();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var draining = Drain(consumer, check, () => cts.IsCancellationRequested, patience: TimeSpan.FromSeconds(90));

        var record = new byte[SyscallRecord.Size];
        ulong index = 0;
        void PublishFor(TimeSpan span)
        {
            // About 200,000 records a second, in bursts, as a busy host would.
            var until = DateTime.UtcNow + span;
            while (DateTime.UtcNow < until)
            {
                for (var i = 0; i < 2000; i++)
                {
                    TestRecords.Syscall(record, 3, index++);
                    Assert.True(publisher.TryAppend(MessageFamily.Syscalls, record));
                }
                Thread.Sleep(10);
            }
        }
        PublishFor(TimeSpan.FromSeconds(1));
        broker.Stop();
        PublishFor(TimeSpan.FromSeconds(3));
        broker.Start();
        // Until the client has reconnected and sent its backlog, then a while more: the last
        // dropped message is visible downstream only once a later one arrives.
        PublishFor(TimeSpan.FromSeconds(1));
        Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken), "messages still in flight after the outage");
        var droppedBeforeTail = publisher.Stats.RecordsDropped;
        PublishFor(TimeSpan.FromSeconds(0.5));
        Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
        var sent = publisher.Stats;
        while (check.Unique < sent.RecordsDelivered && !TestContext.Current.CancellationToken.IsCancellationRequested)
            await Task.Delay(50, TestContext.Current.CancellationToken);
        await Task.Delay(200, TestContext.Current.CancellationToken);
        cts.Cancel();
        await draining;

        Assert.True(sent.RecordsDropped > 0, $"nothing was dropped: the outage did not fill the client queue ({sent})");
        Assert.Equal(droppedBeforeTail, sent.RecordsDropped);
        Assert.True(sent.RecordsUncertain == 0, $"{sent.RecordsUncertain} records possibly stored: {sent.LastError}");
        Assert.Equal((long)index, sent.RecordsDelivered + sent.RecordsDropped);
        Assert.Equal(sent.RecordsDelivered, check.Unique);
        Assert.Equal(0, check.Duplicates);
        // What the publisher says it dropped is exactly what the consumer finds missing.
        Assert.Equal(sent.RecordsDropped, check.Missing);
        Assert.Equal(sent.RecordsDropped, consumer.Stats.MissingRecords);
    }

    [Fact]
    public async Task Consumer_FallingBehindTheBrokersRetention_ReportsTheRecordsItLost()
    {
        // The mock broker keeps ~5 MB per partition: 20 MB uncompressed pushes the consumer's position out.
        using var transport = OpenOn(fixture.Broker, partitions: 1, o => o with
        {
            Compression = "none",
            Config = new Dictionary<string, string> { ["queued.max.messages.kbytes"] = "1024", ["fetch.max.bytes"] = "1048576" },
        });
        using var consumer = transport.Subscribe(Group("slow") with { MaxBufferedMessages = 1 });
        using var publisher = transport.CreatePublisher(Host(5));
        var record = new byte[SyscallRecord.Size];
        const int total = 250_000;
        var check = new StreamCheck();
        for (var i = 0; i < 1000; i++)
        {
            TestRecords.Syscall(record, 5, (ulong)i);
            publisher.TryAppend(MessageFamily.Syscalls, record);
        }
        await publisher.FlushAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);
        await Drain(consumer, check, () => check.Messages >= 1);
        // The consumer stops reading while the host goes on.
        for (var i = 1000; i < total; i++)
        {
            TestRecords.Syscall(record, 5, (ulong)i);
            publisher.TryAppend(MessageFamily.Syscalls, record);
        }
        Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
        await Drain(consumer, check, () => check.NextOf(5) >= total);

        Assert.Equal((ulong)total, check.NextOf(5));
        Assert.True(check.Missing > 0, "the broker kept everything: the test did not outrun its retention");
        var stats = consumer.Stats;
        Assert.True(stats.MessagesLostToRetention > 0);
        Assert.Equal(check.Missing, stats.MissingRecords);
        Assert.Equal(total, check.Unique + check.Missing);
    }
}
