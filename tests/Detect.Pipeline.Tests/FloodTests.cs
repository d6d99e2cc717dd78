using Detect.Pipeline.Replay;
using Detect.Records;

namespace Detect.Pipeline.Tests;

/// <summary>Runs alone: it measures the process's managed heap, which parallel tests would disturb.</summary>
[CollectionDefinition(nameof(FloodTests), DisableParallelization = true)]
public sealed class MemoryMeasuringCollection;

[Collection(nameof(FloodTests))]
public class FloodTests
{
    [Fact]
    public void TenMillionDistinctSources_DoNotGrowMemoryPastTheBound()
    {
        const int Bound = 100_000;
        const int Total = 10_000_000;
        var rows = 0L;
        var p = new FeaturePipeline(new PipelineOptions { MaxSources = Bound }).AddSink((_, batch) => rows += batch.Length);
        var source = new RecordSource("flooded");
        var buffer = new RecordBuffer(4096 * FlowRecord.Size);
        var flow = new FlowRecord { Family = 4, Protocol = 6, Dport = 80, PacketsFwd = 1, BytesFwd = 60, SynCount = 1, TcpFlags = 0x02 };
        long baseline = 0;
        var t = 1_000_000_000_000L;
        for (var i = 0; i < Total; i++)
        {
            // A spoofed SYN flood: every record from a new source address.
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(flow.Saddr, (uint)i + 1);
            flow.Header.KtimeNs = (ulong)(t + i * 100L);
            buffer.AddFlow(flow);
            if (buffer.Count == 4096)
            {
                p.Process(buffer.Span, source);
                buffer.Clear();
            }
            if (i == 2 * Bound) baseline = GC.GetTotalMemory(forceFullCollection: true);
        }
        p.Process(buffer.Span, source);
        var after = GC.GetTotalMemory(forceFullCollection: true);
        var stats = p.Stats.Flow;
        Assert.True(stats.Entities <= Bound, $"{stats.Entities} entities alive, bound {Bound}");
        Assert.True(stats.Evictions >= Total - Bound - stats.Expired, $"evictions {stats.Evictions}");
        Assert.True(after - baseline < 16 << 20, $"managed memory grew {(after - baseline) >> 20} MB from 200k to 10M sources (bound {Bound})");
        p.Flush();
        // Nothing is lost: every record is in exactly one emitted row.
        Assert.Equal(Total, p.Stats.Flow.Records);
        Assert.Equal(Total, rows);
        Assert.Equal(0, p.Stats.LateRecords);
    }
}
