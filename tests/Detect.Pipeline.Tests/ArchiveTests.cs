using Apache.Arrow;
using Detect.Pipeline.Archive;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;
using Detect.Records;
using Parquet;

namespace Detect.Pipeline.Tests;

public sealed class ArchiveTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "detect-archive-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private const long Hour = 3_600_000_000_000L;
    // 2017-07-07 18:00 UTC, a CIC-IDS2017 day.
    private const long T0 = 1_499_450_400_000_000_000L;

    /// <summary>Feeds a few hundred processes and sources through a pipeline; returns the batches it emitted.</summary>
    private static Collect Drive(params IFeatureSink[] sinks)
    {
        var collect = new Collect();
        var p = new FeaturePipeline().AddSink(collect);
        foreach (var s in sinks) p.AddSink(s);
        var labelled = new RecordSource("replay-host", 0, "Portscan", "Portscan_5000.csv:17");
        var b = new RecordBuffer();
        var rnd = new Random(7);
        for (var i = 0; i < 5000; i++)
        {
            var t = T0 + i * 1_000_000L * 7; // 35 s of data: four windows
            b.AddSyscall((ulong)t, (uint)(1000 + i % 300), 42, (uint)rnd.Next(0, 320), rnd.Next(10) == 0 ? -2 : 0);
            var flow = new FlowRecord { Family = 4, Protocol = 6, Dport = (ushort)rnd.Next(1, 2000), Sport = 40000, PacketsFwd = 1, BytesFwd = 60, SynCount = 1 };
            flow.Header.KtimeNs = (ulong)t;
            flow.Saddr[0] = 10;
            flow.Saddr[3] = (byte)(i % 50);
            b.AddFlow(flow);
            if (b.Count >= 512)
            {
                p.Process(b.Span, i % 2 == 0 ? labelled : new RecordSource("live-host"));
                b.Clear();
            }
        }
        p.Process(b.Span, labelled);
        p.Flush();
        return collect;
    }

    [Fact]
    public async Task ParquetFile_TheArchiveWrote_ReadsBackEqual_SchemaAndValues()
    {
        Collect collect;
        using (var archive = new ParquetArchive(new ArchiveOptions { Root = _root, RowGroupRows = 100 }))
        {
            collect = Drive(archive);
        }
        foreach (var family in new[] { FeatureFamily.Syscall, FeatureFamily.Flow })
        {
            var schema = FeaturePipeline.SchemaOf(family);
            var files = Directory.GetFiles(Path.Combine(_root, schema.FamilyName), "*.parquet", SearchOption.AllDirectories);
            Assert.NotEmpty(files);
            Assert.All(files, f => Assert.Matches(@"/date=2017-07-07/hour=18/part-\d{5}\.parquet$", f));
            var expected = collect.Batches.Where(b => b.Family == family).Select(b => b.Batch).ToList();
            var read = new List<RecordBatch>();
            foreach (var f in files.Order()) read.Add(await FeatureParquet.ReadAsync(f, TestContext.Current.CancellationToken));

            // Schema: same names, types, nullability and metadata.
            var got = read[0].Schema;
            Assert.Equal(schema.Arrow.FieldsList.Select(f => (f.Name, f.DataType.TypeId, f.IsNullable)),
                got.FieldsList.Select(f => (f.Name, f.DataType.TypeId, f.IsNullable)));
            Assert.Equal(schema.FamilyName, got.Metadata[FeatureSchema.FamilyKey]);
            Assert.Equal(schema.SchemaString, got.Metadata[FeatureSchema.SchemaKey]);

            // Values: every row of every column, in order.
            var want = Rows(expected).ToList();
            var have = Rows(read).ToList();
            Assert.Equal(want.Count, have.Count);
            Assert.True(want.Count > 50);
            for (var i = 0; i < want.Count; i++) Assert.Equal(want[i], have[i]);
        }
    }

    private static IEnumerable<string> Rows(List<RecordBatch> batches)
    {
        foreach (var b in batches)
            for (var r = 0; r < b.Length; r++)
                yield return string.Join("|", Enumerable.Range(0, b.ColumnCount).Select(c => b.Column(c) switch
                {
                    StringArray s => s.IsNull(r) ? "<null>" : s.GetString(r),
                    Int64Array l => l.GetValue(r)!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    FloatArray f => BitConverter.SingleToInt32Bits(f.GetValue(r)!.Value).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    BinaryArray x => Convert.ToHexString(x.GetBytes(r)),
                    Int32Array i => i.GetValue(r)!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    var other => throw new InvalidOperationException(other.GetType().Name),
                }));
    }

    [Fact]
    public async Task Archive_InterruptedMidFile_LeavesNoPartialFileVisible()
    {
        var archive = new ParquetArchive(new ArchiveOptions { Root = _root, RowGroupRows = 50 });
        Drive(archive); // row groups are on disk, footers are not
        var temps = Directory.GetFiles(_root, "*", SearchOption.AllDirectories);
        Assert.NotEmpty(temps);
        archive.Abandon(); // the process dies here

        Assert.Empty(Directory.GetFiles(_root, "*.parquet", SearchOption.AllDirectories));
        var partial = Directory.GetFiles(_root, ".part-*.parquet.tmp", SearchOption.AllDirectories);
        Assert.NotEmpty(partial);
        Assert.All(partial, f => Assert.True(new FileInfo(f).Length > 0));
        // The partial file really is unreadable: only the rename after the footer makes a file visible.
        await Assert.ThrowsAnyAsync<Exception>(async () => await FeatureParquet.ReadAsync(partial[0], TestContext.Current.CancellationToken));
    }

    [Fact]
    public void Archive_Opening_RemovesTempFilesOfProcessesThatAreGone()
    {
        var dir = Path.Combine(_root, "flow", "date=2017-07-07", "hour=18");
        Directory.CreateDirectory(dir);
        var dead = Path.Combine(dir, ".part-2147480000-1.parquet.tmp"); // no such pid
        var mine = Path.Combine(dir, $".part-{Environment.ProcessId}-999.parquet.tmp");
        File.WriteAllBytes(dead, [1, 2, 3]);
        File.WriteAllBytes(mine, [1, 2, 3]);
        using var archive = new ParquetArchive(new ArchiveOptions { Root = _root });
        Assert.False(File.Exists(dead));
        Assert.True(File.Exists(mine));
        Assert.Equal(1, archive.Stats.StaleTempFilesRemoved);
    }

    [Fact]
    public async Task Archive_RollsFilesBySize_EachFileComplete()
    {
        Collect collect;
        ParquetArchive archive;
        using (archive = new ParquetArchive(new ArchiveOptions { Root = _root, RowGroupRows = 20, MaxFileBytes = 64 << 10 }))
            collect = Drive(archive);
        var files = Directory.GetFiles(Path.Combine(_root, "syscall"), "*.parquet", SearchOption.AllDirectories);
        Assert.True(files.Length > 1, $"{files.Length} files");
        long rows = 0;
        foreach (var f in files)
        {
            await using var reader = await ParquetReader.CreateAsync(f, cancellationToken: TestContext.Current.CancellationToken);
            for (var g = 0; g < reader.RowGroupCount; g++)
            {
                using var rg = reader.OpenRowGroupReader(g);
                rows += rg.RowCount;
            }
        }
        Assert.Equal(collect.Rows(FeatureFamily.Syscall).Count(), rows);
        _ = Hour;
    }
}
