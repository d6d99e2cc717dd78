using Detect.Records;

namespace Detect.Transport.Tests;

/// <summary>
/// The delivery guarantees, run on each carrier (InProcessDeliveryTests, KafkaDeliveryTests):
/// once and in order per host, nothing lost across a consumer crash, dead letters for damaged
/// messages, exact gap accounting, group sharing, and drops the publisher reports exactly.
/// </summary>
public abstract class DeliveryTests
{
    /// <summary>A transport with fresh topics of <paramref name="partitions"/> partitions.</summary>
    protected abstract ITransport Open(int partitions, long maxBytesPerPartition = 64L << 20);

    /// <summary>Puts raw bytes into a family's topic with <paramref name="key"/>, bypassing the publisher.</summary>
    protected abstract void Inject(ITransport transport, MessageFamily family, ulong key, byte[] message);

    /// <summary>Stops a consumer as a crash would.</summary>
    protected abstract void Kill(IMessageConsumer consumer);

    protected virtual TimeSpan Patience => TimeSpan.FromSeconds(60);

    private protected static ConsumerOptions Group(string name, IReadOnlyList<MessageFamily>? families = null) => new()
    {
        GroupId = $"{name}-{Guid.NewGuid():N}",
        Families = families ?? [MessageFamily.Syscalls],
        SessionTimeout = TimeSpan.FromSeconds(3),
        CommitInterval = TimeSpan.FromMilliseconds(200),
        Log = _ => { },
    };

    private protected static PublisherOptions Host(uint host) => new()
    {
        HostId = HostIdentity.FromName($"test-host-{host}"),
        Linger = TimeSpan.FromMilliseconds(20),
        Log = _ => { },
    };

    /// <summary>Appends <paramref name="perHost"/> records for each host, hosts interleaved, and flushes.</summary>
    protected static PublisherStats[] Publish(ITransport transport, int hosts, int perHost, int firstHost = 0)
    {
        var publishers = Enumerable.Range(firstHost, hosts).Select(h => transport.CreatePublisher(Host((uint)h))).ToArray();
        var record = new byte[SyscallRecord.Size];
        for (var i = 0; i < perHost; i++)
        {
            for (var h = 0; h < hosts; h++)
            {
                TestRecords.Syscall(record, (uint)(firstHost + h), (ulong)i);
                Assert.True(publishers[h].TryAppend(MessageFamily.Syscalls, record));
            }
        }
        var stats = new PublisherStats[hosts];
        for (var h = 0; h < hosts; h++)
        {
            publishers[h].FlushAsync(TimeSpan.FromSeconds(30), CancellationToken.None).GetAwaiter().GetResult();
            stats[h] = publishers[h].Stats;
            publishers[h].Dispose();
        }
        return stats;
    }

    /// <summary>Receives (and commits, unless told not to) until <paramref name="done"/> or the patience runs out.</summary>
    private protected async Task Drain(IMessageConsumer consumer, IObserver check, Func<bool> done, bool commit = true, TimeSpan? patience = null)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(patience ?? Patience);
        // Another consumer may complete the condition while this one waits for a message that will not come.
        using var watch = new Timer(_ => { if (done()) cts.Cancel(); }, null, 20, 20);
        while (!done())
        {
            InboundMessage message;
            try
            {
                message = await consumer.ReceiveAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            using (message)
            {
                check.Observe(message);
                if (commit) consumer.Commit(message);
            }
        }
    }

    [Fact]
    public async Task Delivery_MillionRecordsFromSixteenHosts_ArriveOnceEachInOrderPerHostAcrossPartitions()
    {
        const int hosts = 16, perHost = 62_500;
        using var transport = Open(partitions: 4);
        using var consumer = transport.Subscribe(Group("million"));
        var check = new StreamCheck();
        var publishing = Task.Run(() => Publish(transport, hosts, perHost));
        await Drain(consumer, check, () => check.Unique >= hosts * perHost);
        var sent = await publishing;

        Assert.Equal(hosts * (long)perHost, sent.Sum(s => s.RecordsDelivered));
        Assert.Equal(0, sent.Sum(s => s.RecordsDropped));
        Assert.Equal(hosts * (long)perHost, check.Unique);
        Assert.Equal(0, check.Duplicates);
        Assert.Equal(0, check.Missing);
        for (var h = 0u; h < hosts; h++) Assert.Equal((ulong)perHost, check.NextOf(h));
        Assert.True(check.Partitions > 1, $"all records came through {check.Partitions} partition");
        var stats = consumer.Stats;
        Assert.Equal(0, stats.Gaps);
        Assert.Equal(0, stats.DuplicateMessages);
        Assert.Equal(hosts * (long)perHost, stats.RecordsReceived);
        Assert.Equal(hosts, stats.StreamsStarted);
        CheckPartitioning(check, transport, 4);
        // Every message says how to turn its records' boot-clock times into wall-clock times.
        Assert.InRange(check.LastBootToRealtimeNs - KernelClock.BootToRealtimeOffsetNs(), -1_000_000_000, 1_000_000_000);
    }

    /// <summary>Carrier-specific check that each host's messages landed where its key says.</summary>
    private protected virtual void CheckPartitioning(StreamCheck check, ITransport transport, int partitions)
    {
    }

    [Fact]
    public async Task Consumer_KilledMidStreamAndRestarted_LosesNothingAndGetsAgainExactlyWhatItHadNotCommitted()
    {
        const int hosts = 4, perHost = 50_000, total = hosts * perHost;
        using var transport = Open(partitions: 4);
        Publish(transport, hosts, perHost);
        var options = Group("crash");
        var check = new StreamCheck();

        var first = transport.Subscribe(options);
        await Drain(first, check, () => check.Unique >= total / 2);
        // Received but never committed: the crash must not lose these; they must come again.
        var committedRecords = check.Unique;
        var messages = check.Messages;
        await Drain(first, check, () => check.Messages >= messages + 3, commit: false);
        var held = check.Unique - committedRecords;
        await Task.Delay(options.CommitInterval * 3, TestContext.Current.CancellationToken); // the commits a running process would have made by now
        Kill(first);

        using var second = transport.Subscribe(options);
        await Drain(second, check, () => check.Unique >= total);

        Assert.Equal(total, check.Unique);
        Assert.Equal(0, check.Missing);
        for (var h = 0u; h < hosts; h++) Assert.Equal((ulong)perHost, check.NextOf(h));
        Assert.True(held > 0);
        Assert.Equal(held, check.Duplicates);
    }

    [Fact]
    public async Task Consumer_CorruptedTruncatedAndUnknownVersionMessages_GoToDeadLettersWithTheirReasonAndTheRestFlows()
    {
        using var transport = Open(partitions: 1);
        var hostId = HostIdentity.FromName("dead-letter-host");
        var good1 = TestRecords.Message(hostId, session: 1, sequence: 1, firstRecord: 0, count: 10);
        var corrupted = TestRecords.Message(hostId, session: 2, sequence: 1, firstRecord: 0, count: 10);
        corrupted[MessageHeader.Size + 200] ^= 0xff;
        var truncated = TestRecords.Message(hostId, session: 3, sequence: 1, firstRecord: 0, count: 10)[..^100];
        var unknownVersion = TestRecords.Message(hostId, session: 4, sequence: 1, firstRecord: 0, count: 10);
        unknownVersion[2] = 2;
        var good2 = TestRecords.Message(hostId, session: 1, sequence: 2, firstRecord: 10, count: 10);
        foreach (var m in new[] { good1, corrupted, truncated, unknownVersion, good2 }) Inject(transport, MessageFamily.Syscalls, hostId, m);

        using var consumer = transport.Subscribe(Group("dead"));
        var check = new StreamCheck();
        await Drain(consumer, check, () => check.Unique >= 20);
        Assert.Equal(20, check.Unique);
        Assert.Equal(2, check.Messages);

        using var letters = transport.Subscribe(Group("letters", [MessageFamily.DeadLetters]));
        var reasons = new List<DeadLetter>();
        using (var cts = new CancellationTokenSource(Patience))
        {
            while (reasons.Count < 3)
            {
                using var message = await letters.ReceiveAsync(cts.Token);
                Assert.Equal(MessageFamily.DeadLetters, message.Family);
                reasons.Add(DeadLetter.Parse(message.Payload));
                letters.Commit(message);
            }
        }
        Assert.Equal([MessageError.UnknownVersion, MessageError.PayloadTruncated, MessageError.CrcMismatch], reasons.Select(r => r.Reason).Order());
        Assert.All(reasons, r => Assert.Contains(MessageFamilies.Topic(MessageFamily.Syscalls, transport.TopicPrefix), r.Text));
        Assert.Equal(truncated, reasons.Single(r => r.Reason == MessageError.PayloadTruncated).Stored);

        var stats = consumer.Stats;
        Assert.Equal(3, stats.DeadLettered);
        Assert.Equal(0, stats.DeadLetterFailures);
        Assert.Equal(1, stats.DeadLetteredByReason[(int)MessageError.CrcMismatch]);
        Assert.Equal(1, stats.DeadLetteredByReason[(int)MessageError.PayloadTruncated]);
        Assert.Equal(1, stats.DeadLetteredByReason[(int)MessageError.UnknownVersion]);
        Assert.Equal(0, stats.Gaps);
    }

    [Fact]
    public async Task Consumer_SequenceGap_IsReportedWithTheExactNumberOfRecordsMissing()
    {
        using var transport = Open(partitions: 1);
        var hostId = HostIdentity.FromName("gap-host");
        Inject(transport, MessageFamily.Syscalls, hostId, TestRecords.Message(hostId, 9, sequence: 1, firstRecord: 0, count: 10));
        Inject(transport, MessageFamily.Syscalls, hostId, TestRecords.Message(hostId, 9, sequence: 2, firstRecord: 10, count: 10));
        // Message 3 (records 20..34) never arrives.
        Inject(transport, MessageFamily.Syscalls, hostId, TestRecords.Message(hostId, 9, sequence: 4, firstRecord: 35, count: 10));
        Inject(transport, MessageFamily.Syscalls, hostId, TestRecords.Message(hostId, 9, sequence: 2, firstRecord: 10, count: 10));

        using var consumer = transport.Subscribe(Group("gap"));
        var check = new StreamCheck();
        await Drain(consumer, check, () => check.Messages >= 4);
        var stats = consumer.Stats;
        Assert.Equal(1, stats.Gaps);
        Assert.Equal(1, stats.MissingMessages);
        Assert.Equal(15, stats.MissingRecords);
        Assert.Equal(15, consumer.LossByHost()[hostId]);
        Assert.Equal(1, stats.DuplicateMessages);
        Assert.Equal(10, stats.DuplicateRecords);
        Assert.Equal(15, check.Missing);
    }

    [Fact]
    public async Task Group_TwoConsumers_SharePartitionsAndTogetherSeeEveryRecordOnce()
    {
        const int hosts = 16, perHost = 10_000, total = hosts * perHost;
        using var transport = Open(partitions: 4);
        var options = Group("pair");
        using var a = transport.Subscribe(options);
        using var b = transport.Subscribe(options);
        using (var cts = new CancellationTokenSource(Patience))
        {
            while (a.Assignment.Count + b.Assignment.Count != 4 || a.Assignment.Count == 0 || b.Assignment.Count == 0)
                await Task.Delay(50, cts.Token);
        }
        Assert.Empty(a.Assignment.Intersect(b.Assignment));

        var check = new StreamCheck();
        var publishing = Task.Run(() => Publish(transport, hosts, perHost));
        var seenA = new StreamCheck();
        var seenB = new StreamCheck();
        await Task.WhenAll(
            Drain(a, new Tee(check, seenA), () => check.Unique >= total),
            Drain(b, new Tee(check, seenB), () => check.Unique >= total));
        await publishing;

        Assert.Equal(total, check.Unique);
        Assert.Equal(0, check.Duplicates);
        Assert.Equal(0, check.Missing);
        Assert.True(seenA.Unique > 0 && seenB.Unique > 0, $"one member got everything: {seenA.Unique} / {seenB.Unique}");
        Assert.Equal(total, seenA.Unique + seenB.Unique);
    }

    [Fact]
    public async Task Consumer_OnlyHost_GetsItsOwnAndBroadcastPolicyAndCommitsPastTheRest()
    {
        using var transport = Open(partitions: 1);
        var me = HostIdentity.FromName("policy-target");
        var other = HostIdentity.FromName("policy-other");
        // Policy records are defined by the policy engine; the transport checks their framing only.
        foreach (var (host, tag) in new[] { (other, 1u), (me, 2u), (0UL, 3u), (other, 4u), (me, 5u) })
        {
            using var publisher = transport.CreatePublisher(new PublisherOptions { HostId = host, Log = _ => { } });
            Assert.True(publisher.TryAppend(MessageFamily.Policy, TestRecords.Syscall(tag, 0)));
            Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken));
        }
        var options = Group("sensor-policy", [MessageFamily.Policy]) with { OnlyHost = me };
        var tags = new List<uint>();
        using (var consumer = transport.Subscribe(options))
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
            cts.CancelAfter(Patience);
            while (tags.Count < 3)
            {
                using var message = await consumer.ReceiveAsync(cts.Token);
                Assert.Equal(MessageFamily.Policy, message.Family);
                Assert.Contains(message.HostId, new[] { me, 0UL });
                tags.Add(System.Runtime.InteropServices.MemoryMarshal.Read<SyscallRecord>(message.Payload).Task.Pid);
                consumer.Commit(message);
            }
            Assert.Equal(2, consumer.Stats.SkippedOtherHosts);
            await Task.Delay(options.CommitInterval * 3, TestContext.Current.CancellationToken);
        }
        Assert.Equal([2u, 3u, 5u], tags);

        // The group's offset moved past everything, the other host's messages included: a new member's first message is a new one.
        using var again = transport.Subscribe(options);
        using (var publisher = transport.CreatePublisher(new PublisherOptions { HostId = me, Log = _ => { } }))
        {
            Assert.True(publisher.TryAppend(MessageFamily.Policy, TestRecords.Syscall(6, 0)));
            Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken));
        }
        using var next = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        next.CancelAfter(Patience);
        using var first = await again.ReceiveAsync(next.Token);
        Assert.Equal(6u, System.Runtime.InteropServices.MemoryMarshal.Read<SyscallRecord>(first.Payload).Task.Pid);
    }

    /// <summary>An Arrow-IPC-framed payload of <paramref name="length"/> bytes (continuation, metadata length, body, end of stream).</summary>
    private static byte[] ArrowFramed(int length, byte fill)
    {
        var p = new byte[length];
        p.AsSpan(8, length - 16).Fill(fill);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(p, 0xFFFFFFFF);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(p.AsSpan(4), 8);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(length - 8), 0xFFFFFFFF);
        return p;
    }

    [Fact]
    public async Task WholePayloads_ArriveWholeInOrder_TheWrongOnesAreRefused_AndABrokenOneIsDeadLettered()
    {
        using var transport = Open(partitions: 1);
        // First, a message whose framing is right but whose stream lost its end: the consumer passes it to the dead letters.
        var broken = ArrowFramed(128, 4);
        broken[^8] = 0;
        var hostId = HostIdentity.FromName("features-broken");
        var message = new byte[MessageHeader.Size + broken.Length];
        broken.CopyTo(message.AsSpan(MessageHeader.Size));
        MessageFormat.WriteHeader(message, MessageFamily.Features, hostId, 5, 1, 0, 1, broken.Length, 0);
        Inject(transport, MessageFamily.Features, hostId, message);
        var small = ArrowFramed(64, 1);
        var large = ArrowFramed(700_000, 2); // ten times a record batch message: one message all the same
        using (var publisher = transport.CreatePublisher(Host(21)))
        {
            Assert.True(publisher.TryPublishWhole(MessageFamily.Features, small, 3));
            Assert.True(publisher.TryPublishWhole(MessageFamily.Features, large, 100));
            Assert.False(publisher.TryPublishWhole(MessageFamily.Features, new byte[64], 1));                                   // no Arrow framing
            Assert.False(publisher.TryPublishWhole(MessageFamily.Features, ArrowFramed(MessageFormat.MaxWholePayloadBytes + 8, 3), 1)); // too large
            Assert.False(publisher.TryPublishWhole(MessageFamily.Syscalls, small, 1));                                          // a records family
            Assert.False(publisher.TryAppend(MessageFamily.Features, TestRecords.Syscall(21, 0)));                               // no records there
            Assert.True(await publisher.FlushAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
            var stats = publisher.Stats;
            Assert.Equal(4, stats.RecordsRejected);
            Assert.Equal(103, stats.RecordsDelivered);
        }
        using var consumer = transport.Subscribe(Group("features", [MessageFamily.Features]));
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(Patience);
        var received = new List<(byte[] Payload, int Rows, ulong Sequence)>();
        while (received.Count < 2)
        {
            using var m = await consumer.ReceiveAsync(cts.Token);
            Assert.Equal(MessageFamily.Features, m.Family);
            received.Add((m.Payload.ToArray(), m.RecordCount, m.Sequence));
            consumer.Commit(m);
        }
        Assert.Equal([(3, 1UL), (100, 2UL)], received.Select(r => (r.Rows, r.Sequence)));
        Assert.Equal(small, received[0].Payload);
        Assert.Equal(large, received[1].Payload);

        using var letters = transport.Subscribe(Group("features-letters", [MessageFamily.DeadLetters]));
        using var letter = await letters.ReceiveAsync(cts.Token);
        var dead = DeadLetter.Parse(letter.Payload);
        Assert.Equal(MessageError.BadRecord, dead.Reason);
        Assert.Contains("end-of-stream", dead.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Publisher_PartialBatch_LeavesAfterTheLingerWithoutAFlush()
    {
        using var transport = Open(partitions: 1);
        using var consumer = transport.Subscribe(Group("linger"));
        using var publisher = transport.CreatePublisher(Host(9) with { Linger = TimeSpan.FromMilliseconds(100) });
        var sent = System.Diagnostics.Stopwatch.StartNew();
        Assert.True(publisher.TryAppend(MessageFamily.Syscalls, TestRecords.Syscall(9, 0)));
        Assert.True(publisher.TryAppend(MessageFamily.Syscalls, TestRecords.Syscall(9, 1)));
        var check = new StreamCheck();
        await Drain(consumer, check, () => check.Unique >= 2);
        Assert.Equal(2, check.Unique);
        Assert.Equal(1, check.Messages);
        Assert.InRange(sent.Elapsed, TimeSpan.FromMilliseconds(90), Patience);
    }

    [Fact]
    public void Publisher_MalformedOrMisroutedRecord_IsRefusedAndCounted()
    {
        using var transport = Open(partitions: 1);
        using var publisher = transport.CreatePublisher(Host(1));
        var good = TestRecords.Syscall(1, 0);
        var badVersion = TestRecords.Syscall(1, 1);
        badVersion[2] = 9;
        Assert.True(publisher.TryAppend(MessageFamily.Syscalls, good));
        Assert.False(publisher.TryAppend(MessageFamily.Flows, good));             // a syscall record is not a flow
        Assert.False(publisher.TryAppend(MessageFamily.Syscalls, badVersion));
        Assert.False(publisher.TryAppend(MessageFamily.Syscalls, good.AsSpan(0, 40))); // truncated
        Assert.False(publisher.TryAppend(MessageFamily.DeadLetters, good));       // only consumers write dead letters
        Assert.Equal(2, publisher.TryAppendRecords(MessageFamily.Syscalls, [.. good, .. good, .. badVersion, .. good]));
        var stats = publisher.Stats;
        Assert.Equal(3, stats.RecordsAppended);
        Assert.Equal(5, stats.RecordsRejected);
    }
}

/// <summary>Observes into two checks at once.</summary>
internal sealed class Tee(StreamCheck all, StreamCheck mine) : IObserver
{
    public void Observe(InboundMessage message)
    {
        all.Observe(message);
        mine.Observe(message);
    }
}
