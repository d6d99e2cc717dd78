using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;
using Detect.Pipeline.Syscalls;
using Detect.Records;

namespace Detect.Pipeline.Tests;

public class WindowTests
{
    private const long S = 1_000_000_000L;
    private static readonly RecordSource Host = new("h1");
    private static readonly uint Read = (uint)SyscallTable.X8664("read"), Write = (uint)SyscallTable.X8664("write");

    private static void One(FeaturePipeline p, long t, uint tgid, uint nr, long ret = 0)
    {
        var b = new RecordBuffer(256);
        b.AddSyscall((ulong)t, tgid, 5, nr, ret);
        p.Process(b.Span, Host);
    }

    [Fact]
    public void Window_ClosesExactlyOnceAtTheWatermark_WithExactFeatures()
    {
        var sink = new Collect();
        var p = new FeaturePipeline(new PipelineOptions { Window = TimeSpan.FromSeconds(10), AllowedLateness = TimeSpan.FromSeconds(2) }).AddSink(sink);
        One(p, 1 * S, 100, Read, 5);
        One(p, 2 * S, 100, Write, -1);
        One(p, 3 * S, 100, Read, 3);
        One(p, 4 * S, 100, Read, 0);
        One(p, 11_900_000_000, 200, Read); // watermark 9.9 s: window [0,10) stays open
        Assert.Empty(sink.Rows(FeatureFamily.Syscall));
        One(p, 12 * S, 200, Read); // watermark 10 s: it closes
        var rows = sink.Rows(FeatureFamily.Syscall).ToList();
        var row = Assert.Single(rows);
        One(p, 25 * S, 200, Read); // closes [10,20) (process 200) only; [0,10) never again
        p.Flush();
        rows = sink.Rows(FeatureFamily.Syscall).ToList();
        Assert.Single(rows, r => r.Start == 0);
        Assert.Equal(3, rows.Count);

        Assert.Equal("h1", row.Host);
        Assert.Equal("100@5", row.Entity);
        Assert.Equal(0, row.Start);
        Assert.Equal(10 * S, row.End);
        Assert.Equal(4, row.Records);
        Assert.Null(row.Label);
        Assert.Null(row.Sample);
        Assert.Equal(4f, row["f_calls"]);
        Assert.Equal(0.4f, row["f_calls_per_s"]);
        Assert.Equal(3f, row["f_active_s"]);
        Assert.Equal(2f, row["f_distinct_syscalls"]);
        Assert.Equal(0.25f, row["f_failed_ratio"]);
        Assert.Equal(1f, row["f_failed"]);
        Assert.Equal(0.75f, row["f_class_file_read"]);
        Assert.Equal(0.25f, row["f_class_file_write"]);
        Assert.Equal(0f, row["f_class_network"]);
        Assert.Equal(0.75f, row["f_sc_read"]);
        Assert.Equal(0.25f, row["f_sc_write"]);
        Assert.Equal(0.8112781f, row["f_class_entropy"], 5);
        // read write read read: bigrams rw, wr, rr (3 distinct); trigrams rwr, wrr (2 distinct).
        static float Linear(int k, float m) => MathF.Round(-m * MathF.Log(1f - k / m));
        var buckets2 = new[] { (Read, Write), (Write, Read), (Read, Read) }.Select(g => Features.SyscallFamily.Bucket2(g.Item1 << 10 | g.Item2)).Distinct().Count();
        var buckets3 = new[] { (Read, Write, Read), (Write, Read, Read) }.Select(g => Features.SyscallFamily.Bucket3(g.Item1 << 20 | g.Item2 << 10 | g.Item3)).Distinct().Count();
        Assert.Equal(Linear(buckets2, 128), row["f_bigram_distinct"]);
        Assert.Equal(Linear(buckets3, 256), row["f_trigram_distinct"]);
        Assert.Equal(3f, row["f_bigram_distinct"]); // no two of these share a bucket
        Assert.Equal(2f, row["f_trigram_distinct"]);
        Assert.Equal(1f, row["f_bigram_distinct_ratio"]);
        Assert.Equal(MathF.Log2(3), row["f_bigram_entropy"], 5);
        Assert.Equal(1f, row["f_trigram_entropy"], 5);
        var expected2 = new float[Features.SyscallFamily.Bigram];
        foreach (var (a, c) in new[] { (Read, Write), (Write, Read), (Read, Read) })
            expected2[Features.SyscallFamily.Bucket2(a << 10 | c)] += 1f / 3;
        for (var i = 0; i < Features.SyscallFamily.Bigram; i++) Assert.Equal(expected2[i], row[$"f_ng2_{i:D3}"], 6);
        var expected3 = new float[Features.SyscallFamily.Trigram];
        foreach (var (a, c, d) in new[] { (Read, Write, Read), (Write, Read, Read) })
            expected3[Features.SyscallFamily.Bucket3(a << 20 | c << 10 | d)] += 0.5f;
        for (var i = 0; i < Features.SyscallFamily.Trigram; i++) Assert.Equal(expected3[i], row[$"f_ng3_{i:D3}"], 6);
        Assert.Equal(0, p.Stats.LateRecords);
    }

    private static void Named(FeaturePipeline p, long t, uint tgid, string comm, RecordType type = RecordType.Syscall)
    {
        var b = new RecordBuffer(1024);
        var task = new TaskInfo { Pid = tgid, Tgid = tgid, StartNs = 5 };
        System.Text.Encoding.Latin1.GetBytes(comm).CopyTo((Span<byte>)task.Comm);
        if (type == RecordType.Exec)
            b.Add(new ExecRecord { Header = RecordBuffer.Header(RecordType.Exec, ExecRecord.Size, (ulong)t), Task = task });
        else
            b.Add(new SyscallRecord { Header = RecordBuffer.Header(RecordType.Syscall, SyscallRecord.Size, (ulong)t), Task = task, Nr = Read });
        p.Process(b.Span, Host);
    }

    [Fact]
    public void ProcessEntity_NamesTheCommand_AsOfItsWindowOrItsLastExec()
    {
        var sink = new Collect();
        var p = new FeaturePipeline(new PipelineOptions { Window = TimeSpan.FromSeconds(10), AllowedLateness = TimeSpan.FromSeconds(1) }).AddSink(sink);
        Named(p, 1 * S, 100, "bash");
        Named(p, 2 * S, 100, "bash");
        Named(p, 12 * S, 100, "bash");
        Named(p, 13 * S, 100, "nc", RecordType.Exec); // same process, a new image and name
        Named(p, 14 * S, 100, "nc");
        Named(p, 15 * S, 300, "evil\u0001\u00e9");   // bytes outside printable ASCII
        p.Flush();
        var rows = sink.Rows(FeatureFamily.Syscall).OrderBy(r => r.Start).ThenBy(r => r.Entity, StringComparer.Ordinal).ToList();
        Assert.Equal(["100@5 bash", "100@5 nc", "300@5 evil??"], rows.Select(r => r.Entity));
        Assert.Equal([0L, 10 * S, 10 * S], rows.Select(r => r.Start));
    }

    [Fact]
    public void OutOfOrderRecord_WithinLateness_LandsInItsWindow_LaterOneIsCountedLate()
    {
        var sink = new Collect();
        var p = new FeaturePipeline(new PipelineOptions { Window = TimeSpan.FromSeconds(10), AllowedLateness = TimeSpan.FromSeconds(2) }).AddSink(sink);
        One(p, 8 * S, 7, Read);
        One(p, 11 * S, 7, Read);            // window [10,20); watermark 9 s
        One(p, 9_500_000_000, 7, Write);    // 1.5 s behind: within lateness, lands in [0,10)
        One(p, 12_500_000_000, 7, Read);    // watermark 10.5 s: [0,10) closes
        One(p, 9_900_000_000, 7, Write);    // its window has closed: late
        p.Flush();
        var rows = sink.Rows(FeatureFamily.Syscall).OrderBy(r => r.Start).ToList();
        Assert.Equal(2, rows.Count);
        Assert.Equal(2, rows[0].Records);
        Assert.Equal(0.5f, rows[0]["f_sc_write"]);
        Assert.Equal(2, rows[1].Records);
        Assert.Equal(0f, rows[1]["f_sc_write"]);
        Assert.Equal(1, p.Stats.Syscall.LateRecords);
        Assert.Equal(4, p.Stats.Syscall.Records);
    }

    [Fact]
    public void QuietHost_WindowCloses_WhenProcessingTimeAdvances()
    {
        var sink = new Collect();
        var p = new FeaturePipeline().AddSink(sink);
        One(p, 3 * S, 1, Read);
        p.AdvanceTo(11 * S);
        Assert.Empty(sink.Rows(FeatureFamily.Syscall));
        p.AdvanceTo(12 * S);
        Assert.Single(sink.Rows(FeatureFamily.Syscall));
    }

    [Fact]
    public void DamagedRecords_AreCountedAndSkipped_TheRestIsApplied()
    {
        var b = new RecordBuffer();
        b.AddSyscall((ulong)S, 1, 1, Read);
        b.AddSyscall((ulong)S, 1, 1, Read);
        b.AddSyscall((ulong)S, 1, 1, Read);
        var bytes = b.Span.ToArray();
        bytes[SyscallRecord.Size] = 0; // break the second record's magic
        var errors = new List<long>();
        var p = new FeaturePipeline(onDecodeError: (offset, _, _) => errors.Add(offset));
        p.Process(bytes, Host);                                // records 1 and 3
        p.Process(bytes.AsSpan(0, bytes.Length - 10), Host);   // record 1; record 3 is cut short
        Assert.Equal(3, p.Stats.Syscall.Records);
        Assert.Equal(2, p.Stats.Decode.BadMagic);
        Assert.Equal(1, p.Stats.Decode.Truncated);
        Assert.Contains((long)SyscallRecord.Size, errors);
    }
}
