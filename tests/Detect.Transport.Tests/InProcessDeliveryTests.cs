using Detect.Records;

namespace Detect.Transport.Tests;

/// <summary>The delivery guarantees on the in-process bus (the carrier of ./detect up).</summary>
public sealed class InProcessDeliveryTests : DeliveryTests
{
    protected override ITransport Open(int partitions, long maxBytesPerPartition = 64L << 20) =>
        new InProcessTransport(new InProcessOptions { Partitions = partitions, MaxBytesPerPartition = maxBytesPerPartition });

    protected override void Inject(ITransport transport, MessageFamily family, ulong key, byte[] message) =>
        Assert.True(((InProcessTransport)transport).Append(family, key, message));

    protected override void Kill(IMessageConsumer consumer) => consumer.Dispose();

    private protected override void CheckPartitioning(StreamCheck check, ITransport transport, int partitions)
    {
        foreach (var (host, seen) in check.HostPartitions)
            Assert.Equal([InProcessTransport.PartitionOf(host, partitions)], seen);
    }

    [Fact]
    public async Task Publisher_BusFull_DropsAndCountsAndTheConsumerMissesExactlyThat()
    {
        const int perPhase = 60_000;
        // 1 MB of messages per partition: a consumer that does not read lets the publisher fill it.
        using var transport = Open(partitions: 1, maxBytesPerPartition: 1 << 20);
        using var consumer = transport.Subscribe(Group("full"));
        using var publisher = transport.CreatePublisher(Host(7));
        var record = new byte[SyscallRecord.Size];
        for (var i = 0; i < perPhase; i++)
        {
            TestRecords.Syscall(record, 7, (ulong)i);
            Assert.True(publisher.TryAppend(MessageFamily.Syscalls, record));
        }
        Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
        var check = new StreamCheck();
        await Drain(consumer, check, () => check.Unique >= publisher.Stats.RecordsDelivered, patience: TimeSpan.FromSeconds(10));
        // The hole is visible once a later message of the stream arrives.
        for (var i = perPhase; i < perPhase + 1000; i++)
        {
            TestRecords.Syscall(record, 7, (ulong)i);
            Assert.True(publisher.TryAppend(MessageFamily.Syscalls, record));
        }
        Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
        await Drain(consumer, check, () => check.NextOf(7) >= perPhase + 1000);

        var sent = publisher.Stats;
        Assert.True(sent.RecordsDropped > 0, "nothing was dropped: the test did not fill the bus");
        Assert.Equal(perPhase + 1000, sent.RecordsDelivered + sent.RecordsDropped);
        Assert.Equal(sent.RecordsDropped, check.Missing);
        Assert.Equal(sent.RecordsDropped, consumer.Stats.MissingRecords);
        Assert.Equal(sent.RecordsDelivered, check.Unique);
    }
}
