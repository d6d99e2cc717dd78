using Detect.Pipeline.Archive;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;

namespace Detect.Pipeline.Tests;

/// <summary>syscall/2 `seq`: each window's calls in order, bounded per window and by one pool, in Arrow and Parquet.</summary>
public sealed class SequenceTests : IDisposable
{
    private const long S = 1_000_000_000L;
    private static readonly RecordSource Host = new("h1");
    private readonly string _tmp = Path.Combine(Path.GetTempPath(), "detect-seq-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_tmp)) Directory.Delete(_tmp, recursive: true);
    }

    /// <summary>Calls of processes 100.. spread over the first window ([0, 10 s)), then one record that closes it.</summary>
    private static void Drive(FeaturePipeline p, int processes, int callsEach, Func<int, int, uint> nr)
    {
        var b = new RecordBuffer();
        for (var i = 0; i < callsEach; i++)
            for (var k = 0; k < processes; k++)
                b.AddSyscall((ulong)(S + (long)i * 1000 + k), (uint)(100 + k), 5, nr(k, i), 0);
        p.Process(b.Span, Host);
        b.Clear();
        b.AddSyscall((ulong)(13 * S), 99, 5, 0, 0);
        p.Process(b.Span, Host);
    }

    [Fact]
    public void Sequence_OfAWindow_HoldsItsCallsInOrder()
    {
        var sink = new Collect();
        var p = new FeaturePipeline().AddSink(sink);
        uint[] calls = [0, 1, 0, 0, 257, 59, 231, 1023];
        Drive(p, 1, calls.Length, (_, i) => calls[i]);
        var row = Assert.Single(sink.Rows(FeatureFamily.Syscall), r => r.Entity == "100@5");
        Assert.Equal(calls.Select(c => (ushort)c), row.Sequence);
        Assert.Equal(0, row.SequenceDropped);
        Assert.Equal("syscall/2", row.Batch.Schema.Metadata[FeatureSchema.SchemaKey]);
        // Features first, in the positions syscall/1 had them, then the sequence columns.
        var names = row.Batch.Schema.FieldsList.Select(f => f.Name).ToList();
        Assert.Equal(7 + 470 + 2, names.Count);
        Assert.Equal(["seq", "seq_dropped"], names[^2..]);
        Assert.All(names.Skip(7).Take(470), n => Assert.StartsWith("f_", n));
    }

    [Fact]
    public void Sequence_NumbersAbove1023_CountAs1023_AsInTheFeatures()
    {
        var sink = new Collect();
        var p = new FeaturePipeline().AddSink(sink);
        Drive(p, 1, 3, (_, i) => i == 1 ? 5000u : 3u);
        var row = Assert.Single(sink.Rows(FeatureFamily.Syscall), r => r.Entity == "100@5");
        Assert.Equal(new ushort[] { 3, 1023, 3 }, row.Sequence);
    }

    [Fact]
    public void Sequence_PastThePerWindowCap_KeepsTheFirstCalls_AndCountsTheRest()
    {
        var sink = new Collect();
        var p = new FeaturePipeline(new PipelineOptions { MaxSequenceCalls = 100 }).AddSink(sink);
        Drive(p, 1, 150, (_, i) => (uint)(i % 7));
        var row = Assert.Single(sink.Rows(FeatureFamily.Syscall), r => r.Entity == "100@5");
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (ushort)(i % 7)), row.Sequence);
        Assert.Equal(50, row.SequenceDropped);
        Assert.Equal(150f, row["f_calls"]); // the features still count every call
        Assert.Equal(50, p.Stats.Syscall.SequenceDroppedCalls);
    }

    [Fact]
    public void Sequence_PoolFull_KeepsWhatFits_CountsTheRest_AndFreedBlocksAreReused()
    {
        var sink = new Collect();
        // 4 blocks of 64 calls for every open window together.
        var p = new FeaturePipeline(new PipelineOptions { SequencePoolCalls = 4 * 64 }).AddSink(sink);
        Drive(p, 10, 100, (k, i) => (uint)(k + i));
        var rows = sink.Rows(FeatureFamily.Syscall).Where(r => r.Entity != "99@5").ToList();
        Assert.Equal(10, rows.Count);
        var kept = rows.Sum(r => r.Sequence.Length);
        Assert.True(kept <= 4 * 64, $"{kept} calls kept");
        Assert.True(kept >= 128, $"{kept} calls kept"); // the first windows to ask got whole blocks
        Assert.Equal(1000 - kept, rows.Sum(r => r.SequenceDropped));
        Assert.Equal(1000 - kept, p.Stats.Syscall.SequenceDroppedCalls);
        foreach (var r in rows)
        {
            var k = int.Parse(r.Entity.Split('@')[0], System.Globalization.CultureInfo.InvariantCulture) - 100;
            Assert.Equal(Enumerable.Range(0, r.Sequence.Length).Select(i => (ushort)(k + i)), r.Sequence); // a prefix, no holes
            Assert.Equal(100, r.Sequence.Length + r.SequenceDropped);
        }

        // The closed windows gave their blocks back: the next window of every process fits again, within the same memory.
        sink.Batches.Clear();
        var b = new RecordBuffer();
        for (var k = 0; k < 2; k++)
            for (var i = 0; i < 64; i++) b.AddSyscall((ulong)(21 * S + i * 1000 + k), (uint)(100 + k), 5, 7, 0);
        b.AddSyscall((ulong)(33 * S), 99, 5, 0, 0);
        p.Process(b.Span, Host);
        var again = sink.Rows(FeatureFamily.Syscall).Where(r => r.Entity is "100@5" or "101@5").ToList();
        Assert.Equal(2, again.Count);
        Assert.All(again, r => Assert.Equal(64, r.Sequence.Length));
        Assert.All(again, r => Assert.Equal(0, r.SequenceDropped));
    }

    [Fact]
    public async Task Sequence_RoundTripsThroughArrowAndParquet()
    {
        var sink = new Collect();
        using (var archive = new ParquetArchive(new ArchiveOptions { Root = _tmp, RowGroupRows = 3 }))
        {
            var p = new FeaturePipeline(new PipelineOptions { MaxSequenceCalls = 40 }).AddSink(sink).AddSink(archive);
            Drive(p, 7, 50, (k, i) => (uint)((k * 31 + i * i) % 400));
            p.Flush();
        }
        var expected = sink.Rows(FeatureFamily.Syscall).ToList();
        var files = Directory.GetFiles(Path.Combine(_tmp, "syscall"), "*.parquet", SearchOption.AllDirectories).Order().ToList();
        var read = new List<Row>();
        foreach (var f in files)
        {
            var batch = await FeatureParquet.ReadAsync(f, TestContext.Current.CancellationToken);
            Assert.Equal("syscall/2", batch.Schema.Metadata[FeatureSchema.SchemaKey]);
            Assert.Equal(Apache.Arrow.Types.ArrowTypeId.Binary, batch.Schema.GetFieldByName("seq").DataType.TypeId);
            Assert.Equal(Apache.Arrow.Types.ArrowTypeId.Int32, batch.Schema.GetFieldByName("seq_dropped").DataType.TypeId);
            for (var i = 0; i < batch.Length; i++) read.Add(new Row(batch, i));
        }
        Assert.Equal(expected.Count, read.Count);
        Assert.Equal(8, read.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Entity, read[i].Entity);
            Assert.Equal(expected[i].Sequence, read[i].Sequence);
            Assert.Equal(expected[i].SequenceDropped, read[i].SequenceDropped);
        }
        Assert.Contains(read, r => r.Sequence.Length == 40 && r.SequenceDropped == 10);
    }
}
