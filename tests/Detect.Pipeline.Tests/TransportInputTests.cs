using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;
using Detect.Transport;

namespace Detect.Pipeline.Tests;

public class TransportInputTests
{
    [Fact]
    public async Task RecordsPublishedOnTheInProcessBus_BecomeTheSameWindows_AsWhenProcessedDirectly()
    {
        const long S = 1_000_000_000L;
        var t0 = 1_000_000L * S;             // CLOCK_BOOTTIME: eleven days after boot
        const long Offset = 1_699_000_000L * S; // boot-to-realtime offset the sensor host announces
        var records = new RecordBuffer();
        for (var i = 0; i < 3000; i++) records.AddSyscall((ulong)(t0 + i * 10_000_000L), (uint)(100 + i % 7), 5, (uint)(i % 40), i % 9 == 0 ? -1 : 0);

        // Directly.
        var direct = new Project(FeatureFamily.Syscall, "f_calls", "f_failed", "f_ng2_000", "f_ng3_017");
        var p1 = new FeaturePipeline().AddSink(direct);
        p1.Process(records.Span, new RecordSource("bus-host", Offset));
        p1.Flush();

        // Through the transport: publisher -> in-process bus -> consumer -> TransportInput.
        var viaBus = new Project(FeatureFamily.Syscall, "f_calls", "f_failed", "f_ng2_000", "f_ng3_017");
        var p2 = new FeaturePipeline().AddSink(viaBus);
        var hostId = HostIdentity.FromName("bus-host");
        var input = new TransportInput(p2, id => id == hostId ? "bus-host" : "other");
        using var transport = Transports.InProcess();
        using var consumer = transport.Subscribe(new ConsumerOptions { GroupId = "pipeline-test", Families = [MessageFamily.Syscalls] });
        using (var publisher = transport.CreatePublisher(new PublisherOptions { HostId = hostId, BootToRealtimeNs = Offset }))
        {
            Assert.Equal(3000, publisher.TryAppendRecords(MessageFamily.Syscalls, records.Span));
            publisher.Flush();
        }
        var applied = 0L;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        while (p2.Stats.Syscall.Records < 3000)
        {
            using var message = await consumer.ReceiveAsync(timeout.Token);
            input.Apply(message);
            consumer.Commit(message);
            applied++;
        }
        p2.Flush();

        Assert.True(applied >= 1);
        Assert.Equal(0, p2.Stats.Decode.Errors);
        var a = direct.Rows.OrderBy(r => (r.Entity, r.Start)).ToList();
        var b = viaBus.Rows.OrderBy(r => (r.Entity, r.Start)).ToList();
        Assert.Equal(7 * 3, a.Count); // 7 processes over 30 s: three windows each
        Assert.All(b, r => Assert.True(r.Start >= Offset + t0 - 10 * S, "the header's clock offset was applied"));
        Assert.Equal(a.Count, b.Count);
        for (var i = 0; i < a.Count; i++)
        {
            Assert.Equal((a[i].Entity, a[i].Start, a[i].Records), (b[i].Entity, b[i].Start, b[i].Records));
            Assert.Equal(a[i].Features, b[i].Features);
        }
    }
}
