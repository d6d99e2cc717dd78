using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Detect.Pipeline;
using Detect.Pipeline.Archive;
using Detect.Pipeline.Replay;
using Detect.Records;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect bench pipeline`: records per second on one core from a batch of record bytes in memory
/// to Arrow feature batches, for syscall records as the number of processes grows from 1,000 to
/// 1,000,000 (each window holds 64 records per process, so the share of window-close work per
/// record is the same at every size), in random and in per-process-run order; flow records; and
/// the Parquet write rate.
/// </summary>
public sealed class BenchPipelineCommand : ICliCommand
{
    public string? Parent => "bench";

    public Command Create()
    {
        var sizes = new Option<string>("--entities")
        {
            Description = "Comma-separated process counts",
            DefaultValueFactory = _ => "1000,10000,100000,1000000",
        };
        var seconds = new Option<double>("--seconds") { Description = "Least measured time per size", DefaultValueFactory = _ => 3 };
        var command = new Command("pipeline", "Pipeline throughput: records/s per core to Arrow feature batches, flat cost as entities grow, Parquet write rate")
        {
            sizes, seconds,
        };
        command.SetAction((parse, ct) =>
        {
            var counts = parse.GetValue(sizes)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
            return Task.FromResult(Run(counts, parse.GetValue(seconds), ct));
        });
        return command;
    }

    private const int BatchRecords = 4096;

    private static int Run(int[] counts, double minSeconds, CancellationToken ct)
    {
        var result = new Dictionary<string, object>();
        foreach (var (name, run) in new[] { ("random", 1), ("runs16", 16) })
        {
            var perSize = new Dictionary<string, object>();
            double? firstNs = null, lastNs = null;
            foreach (var n in counts)
            {
                ct.ThrowIfCancellationRequested();
                var m = Syscalls(n, run, minSeconds);
                var ns = 1e9 / m.CpuRate;
                firstNs ??= ns;
                lastNs = ns;
                Console.Error.WriteLine($"syscall records, {n,9:N0} processes, {(run == 1 ? "random order       " : "runs of 16 per process")}: " +
                    $"{m.CpuRate / 1e6,6:F2} M records/s per core ({ns,5:F0} ns/record; wall {m.WallRate / 1e6:F2} M/s), {m.Rows:N0} rows");
                perSize[n.ToString(System.Globalization.CultureInfo.InvariantCulture)] = new
                {
                    records_per_cpu_s = Math.Round(m.CpuRate),
                    ns_per_record = Math.Round(ns, 1),
                    records_per_wall_s = Math.Round(m.WallRate),
                    rows = m.Rows,
                };
                GC.Collect();
            }
            result["syscall_" + name] = perSize;
            result["syscall_" + name + "_cost_ratio_largest_to_smallest"] = Math.Round(lastNs!.Value / firstNs!.Value, 2);
        }

        var flow = Flows(100_000, minSeconds);
        Console.Error.WriteLine($"flow records, 100,000 sources, random order: {flow.CpuRate / 1e6:F2} M records/s per core, {flow.Rows:N0} rows");
        result["flow_records_per_cpu_s_100000_sources"] = Math.Round(flow.CpuRate);

        var (rowsPerS, bytesPerS, files) = Parquet(ct);
        Console.Error.WriteLine($"Parquet archive: {rowsPerS:N0} syscall feature rows/s ({bytesPerS / 1e6:F1} MB/s of Parquet, {files} files)");
        result["parquet_rows_per_s"] = Math.Round(rowsPerS);
        result["parquet_bytes_per_s"] = Math.Round(bytesPerS);
        result["records_per_process_window"] = RecordsPerWindow;
        result["feature_columns_syscall"] = FeaturePipeline.SchemaOf(Detect.Pipeline.Arrow.FeatureFamily.Syscall).Features.Count;
        result["processor_count"] = Environment.ProcessorCount;
        result["load_average_1m"] = LoadAverage();
        Console.WriteLine(JsonSerializer.Serialize(result));
        return 0;
    }

    /// <summary>Calls each process makes per 10-s window: 6.4 calls/s, a quiet process (busy ones make far more,
    /// which only lowers the per-record share of window closing).</summary>
    private const int RecordsPerWindow = 64;

    private readonly record struct Measure(double CpuRate, double WallRate, long Rows);

    private static double LoadAverage()
    {
        try
        {
            return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return -1;
        }
    }

    /// <summary>
    /// Syscall records of <paramref name="processes"/> processes, each making <see cref="RecordsPerWindow"/> calls per window,
    /// in random order (<paramref name="run"/> 1: every record from a random process, the worst case for caches) or in
    /// runs of <paramref name="run"/> records per process (what a scheduler time slice gives a per-CPU ring buffer).
    /// One pass of prepared batches is replayed with its clock shifted, so windows keep closing as in a live stream.
    /// Timed: CPU time of this process (one pipeline thread), so other load on the machine does not count.
    /// </summary>
    private static Measure Syscalls(int processes, int run, double minSeconds)
    {
        const long Window = 10_000_000_000L;
        var perWindow = (long)RecordsPerWindow * processes;
        var gap = Math.Max(1, Window / perWindow);
        var passRecords = (int)Math.Min(perWindow, 8L << 20);
        passRecords -= passRecords % BatchRecords;
        var rnd = new Random(1);
        var batches = new List<byte[]>();
        var buffer = new RecordBuffer(BatchRecords * SyscallRecord.Size);
        var zipf = new int[4096];
        for (var i = 0; i < zipf.Length; i++) zipf[i] = (int)(Math.Pow(rnd.NextDouble(), 3) * 330); // a few calls dominate, as in real traces
        uint p = 0;
        for (var i = 0; i < passRecords; i++)
        {
            if (i % run == 0) p = (uint)rnd.Next(processes);
            buffer.AddSyscall((ulong)(i * gap), 1000 + p, 77_000 + p, (uint)zipf[rnd.Next(zipf.Length)], rnd.Next(20) == 0 ? -1 : 0);
            if (buffer.Count == BatchRecords)
            {
                batches.Add(buffer.Span.ToArray());
                buffer.Clear();
            }
        }
        var passNs = passRecords * gap;
        long rows = 0;
        var pipeline = new FeaturePipeline(new PipelineOptions { MaxProcesses = Math.Max(1024, processes + processes / 4) })
            .AddSink((_, batch) => rows += batch.Length);
        var pass = 0;
        void RunPass()
        {
            var source = new RecordSource("bench", 1_700_000_000_000_000_000L + pass++ * passNs);
            foreach (var b in batches) pipeline.Process(b, source);
        }
        // Warm-up: JIT, and every process's slot and accumulators allocated (a window and its close).
        var warm = (int)(perWindow / passRecords) + 1;
        for (var i = 0; i < warm; i++) RunPass();
        rows = 0;
        var self = Process.GetCurrentProcess();
        self.Refresh();
        var cpu0 = self.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        long records = 0;
        do
        {
            RunPass();
            records += passRecords;
        }
        while (sw.Elapsed.TotalSeconds < minSeconds || records < perWindow); // at least one window close measured
        self.Refresh();
        var cpu = (self.TotalProcessorTime - cpu0).TotalSeconds;
        return new Measure(records / cpu, records / sw.Elapsed.TotalSeconds, rows);
    }

    private static Measure Flows(int sources, double minSeconds)
    {
        var rnd = new Random(2);
        var batches = new List<byte[]>();
        var buffer = new RecordBuffer(BatchRecords * FlowRecord.Size);
        const int PassRecords = 1 << 20;
        var gap = 10_000_000_000L / (16L * sources);
        for (var i = 0; i < PassRecords; i++)
        {
            var f = new FlowRecord
            {
                Family = 4, Protocol = (byte)(rnd.Next(4) == 0 ? 17 : 6), Sport = (ushort)rnd.Next(1024, 65535), Dport = (ushort)rnd.Next(1, 1024),
                PacketsFwd = (ulong)rnd.Next(1, 20), PacketsRev = (ulong)rnd.Next(0, 20), BytesFwd = 1000, BytesRev = 4000, SynCount = 1, TcpFlags = 0x12,
                FirstNs = (ulong)(i * gap), LastNs = (ulong)(i * gap + 1000),
            };
            f.Header.KtimeNs = (ulong)(i * gap);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(f.Saddr, 0x0a000000u + (uint)rnd.Next(sources));
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(f.Daddr, 0xc0a80000u + (uint)rnd.Next(256));
            buffer.AddFlow(f);
            if (buffer.Count == BatchRecords)
            {
                batches.Add(buffer.Span.ToArray());
                buffer.Clear();
            }
        }
        var passNs = PassRecords * gap;
        passNs += 10_000_000_000L - passNs % 10_000_000_000L;
        long rows = 0;
        var pipeline = new FeaturePipeline(new PipelineOptions { MaxSources = sources * 2 }).AddSink((_, b) => rows += b.Length);
        var pass = 0;
        void RunPass()
        {
            var source = new RecordSource("bench", 1_700_000_000_000_000_000L + pass++ * passNs);
            foreach (var b in batches) pipeline.Process(b, source);
        }
        RunPass();
        rows = 0;
        var self = Process.GetCurrentProcess();
        self.Refresh();
        var cpu0 = self.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        long records = 0;
        do
        {
            RunPass();
            records += PassRecords;
        }
        while (sw.Elapsed.TotalSeconds < minSeconds);
        self.Refresh();
        return new Measure(records / (self.TotalProcessorTime - cpu0).TotalSeconds, records / sw.Elapsed.TotalSeconds, rows);
    }

    /// <summary>Syscall feature rows (~440 float columns) collected once, then written through the archive.</summary>
    private static (double RowsPerS, double BytesPerS, long Files) Parquet(CancellationToken ct)
    {
        var collected = new List<Apache.Arrow.RecordBatch>();
        var pipeline = new FeaturePipeline().AddSink((_, b) => collected.Add(b.Clone()));
        var buffer = new RecordBuffer(BatchRecords * SyscallRecord.Size);
        var rnd = new Random(3);
        for (var i = 0; i < 4_000_000; i++)
        {
            buffer.AddSyscall((ulong)(1_700_000_000_000_000_000L + i * 250_000L), (uint)rnd.Next(20_000), 1, (uint)rnd.Next(300));
            if (buffer.Count == BatchRecords)
            {
                pipeline.Process(buffer.Span, new RecordSource("bench"));
                buffer.Clear();
            }
        }
        pipeline.Flush();
        var root = Path.Combine(Path.GetTempPath(), "detect-bench-archive-" + Environment.ProcessId);
        try
        {
            var sw = Stopwatch.StartNew();
            long rows = 0;
            ArchiveStats stats;
            using (var archive = new ParquetArchive(new ArchiveOptions { Root = root }))
            {
                foreach (var b in collected)
                {
                    ct.ThrowIfCancellationRequested();
                    archive.OnBatch(Detect.Pipeline.Arrow.FeatureFamily.Syscall, b);
                    rows += b.Length;
                }
                archive.Flush();
                stats = archive.Stats;
            }
            var s = sw.Elapsed.TotalSeconds;
            return (rows / s, stats.BytesClosed / s, stats.FilesClosed);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }
}
