using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;
using Detect.Pipeline.Syscalls;
using Detect.Transport;

namespace Detect.Pipeline.Tests;

public class FeaturePublisherTests
{
    private const long S = 1_000_000_000L;

    [Fact]
    public async Task PublishedFeatureBatches_ReadBackAsArrow_EqualToThePipelinesOwn_LargeOnesInSlices()
    {
        // 3,000 processes of 40 calls each: one syscall/2 batch of 3,000 rows (470 features and seq),
        // several megabytes: more than one message holds.
        using var transport = Transports.InProcess();
        using var consumer = transport.Subscribe(new ConsumerOptions { GroupId = "features-test", Families = [MessageFamily.Features] });
        using var carrier = transport.CreatePublisher(new PublisherOptions { HostId = 42 });
        var publisher = new FeaturePublisher(carrier);
        var own = new Collect();
        var pipeline = new FeaturePipeline(new PipelineOptions { Window = TimeSpan.FromSeconds(10), AllowedLateness = TimeSpan.FromSeconds(1) })
            .AddSink(own).AddSink(publisher);
        var buffer = new RecordBuffer(1 << 20);
        var read = (uint)SyscallTable.X8664("read");
        var write = (uint)SyscallTable.X8664("write");
        for (var i = 0; i < 40; i++)
        {
            buffer.Clear();
            for (uint p = 0; p < 3000; p++) buffer.AddSyscall((ulong)(S + i * 1_000_000L), 1000 + p, 7, (i + p) % 3 == 0 ? write : read);
            pipeline.Process(buffer.Span, new RecordSource("h1"));
        }
        pipeline.Flush();
        Assert.True(await carrier.FlushAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken));
        var expected = own.Rows(FeatureFamily.Syscall).ToList();
        Assert.Equal(3000, expected.Count);

        var rows = new List<Row>();
        var messages = 0;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(TimeSpan.FromSeconds(30));
        while (rows.Count < expected.Count)
        {
            using var message = await consumer.ReceiveAsync(cts.Token);
            Assert.InRange(message.Payload.Length, 1, MessageFormat.MaxWholePayloadBytes);
            var batch = FeaturePublisher.Read(message.Payload);
            Assert.Equal(message.RecordCount, batch.Length);
            Assert.Equal("syscall/2", batch.Schema.Metadata["detect.feature_schema"]);
            for (var i = 0; i < batch.Length; i++) rows.Add(new Row(batch, i));
            messages++;
            consumer.Commit(message);
        }
        Assert.True(messages > 1, $"{messages} message(s) for a batch of several MB");
        Assert.Equal((1L, (long)messages, 3000L, 0L), (publisher.Batches, publisher.Messages, publisher.Rows, publisher.Refused));
        Assert.Equal(expected.Select(r => r.Entity), rows.Select(r => r.Entity));
        Assert.Equal(expected.Select(r => r["f_sc_write"]), rows.Select(r => r["f_sc_write"]));
        Assert.Equal(expected.Select(r => r["f_ng2_000"]), rows.Select(r => r["f_ng2_000"]));
        Assert.Equal(expected.Select(r => string.Join(",", r.Sequence)), rows.Select(r => string.Join(",", r.Sequence)));
        Assert.All(rows, r => Assert.Equal(40, r.Sequence.Length));
    }
}
