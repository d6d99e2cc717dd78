using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Detect.Records;
using Detect.Transport;
using Detect.Transport.Kafka;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect bench transport`: records per second from publishers through the carrier to a
/// consumer group member that validates every message (CRC, every record), bytes per record on
/// the wire after compression, end-to-end latency; through the Kafka carrier (the local broker in
/// this process, or --kafka for a real cluster) for lz4 and zstd, and through the in-process bus.
/// Records are synthetic syscall records shaped like a busy host's (a few hundred processes,
/// skewed syscall mix, microsecond clock steps), appended one at a time as the ring-buffer drain does.
/// </summary>
public sealed class BenchTransportCommand : ICliCommand
{
    public string? Parent => "bench";

    public Command Create()
    {
        var kafkaRecords = new Option<long>("--kafka-records") { Description = "Records per Kafka run", DefaultValueFactory = _ => 5_000_000 };
        var busRecords = new Option<long>("--bus-records") { Description = "Records for the in-process run", DefaultValueFactory = _ => 40_000_000 };
        var hosts = new Option<int>("--hosts") { Description = "Publishing hosts (one publisher each)", DefaultValueFactory = _ => 8 };
        var window = new Option<long>("--window")
        {
            Description = "Kafka: most records the publishers may be ahead of the consumer (the local broker keeps ~5 MB per partition)",
            DefaultValueFactory = _ => 400_000,
        };
        var compressions = new Option<string>("--compression") { Description = "Comma-separated producer compressions to measure", DefaultValueFactory = _ => "lz4,zstd" };
        var kafka = new Option<string?>("--kafka") { Description = "A real cluster (host:port) instead of the local broker; topics must exist (see README)" };
        var kafkaConfig = new Option<string[]>("--kafka-config") { Description = "librdkafka key=value for every client (TLS, SASL)", AllowMultipleArgumentsPerToken = true };
        var command = new Command("transport", "Transport throughput: publisher -> broker -> consumer records/s, wire bytes per record, and the in-process bus")
        {
            kafkaRecords, busRecords, hosts, window, compressions, kafka, kafkaConfig,
        };
        command.SetAction((parse, ct) => Task.FromResult(Execute(
            parse.GetValue(kafkaRecords), parse.GetValue(busRecords), parse.GetValue(hosts), parse.GetValue(window),
            parse.GetValue(compressions)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            parse.GetValue(kafka), parse.GetValue(kafkaConfig) ?? [], ct)));
        return command;
    }

    private const int Partitions = 12;

    private static int Execute(long kafkaRecords, long busRecords, int hosts, long window, string[] compressions, string? kafka, string[] kafkaConfig, CancellationToken ct)
    {
        Console.Error.WriteLine($"transport bench: {hosts} hosts, {Environment.ProcessorCount} cores, load average {LoadAverage()}, librdkafka {KafkaNative.Version()} ({KafkaNative.LoadedPath})");
        var data = Enumerable.Range(0, hosts).Select(h => SyntheticHost.Generate(h, 65_536)).ToArray();
        var result = new Dictionary<string, object>
        {
            ["benchmark"] = "transport",
            ["cores"] = Environment.ProcessorCount,
            ["hosts"] = hosts,
            ["record_bytes"] = SyscallRecord.Size,
            ["load_average_1m"] = LoadAverage(),
        };

        LocalKafkaBroker? broker = null;
        try
        {
            if (kafka == null)
            {
                broker = new LocalKafkaBroker(new LocalBrokerOptions { TelemetryPartitions = Partitions });
                Console.Error.WriteLine($"local broker (librdkafka mock cluster) at {broker.BootstrapServers}");
            }
            var kafkaResults = new Dictionary<string, object>();
            foreach (var compression in compressions)
            {
                ct.ThrowIfCancellationRequested();
                var prefix = $"bench{Guid.NewGuid():N}.";
                broker?.CreateTopics(prefix, Partitions, 1);
                var options = (kafka == null
                    ? new KafkaOptions { BootstrapServers = broker!.BootstrapServers }
                    : KafkaOptions.Parse(kafka, kafkaConfig)) with
                {
                    TopicPrefix = kafka == null ? prefix : KafkaOptions.Parse(kafka, kafkaConfig).TopicPrefix,
                    Compression = compression,
                    StatisticsInterval = TimeSpan.FromMilliseconds(250),
                };
                using var transport = new KafkaTransport(options);
                var run = Measure(transport, data, kafkaRecords, window, ct, () => transport.ProducerWireBytes);
                Print($"kafka {compression}", run);
                kafkaResults[compression] = run;
                GC.Collect();
            }
            result["kafka"] = kafkaResults;
            result["kafka_broker"] = kafka == null ? "local mock cluster (in this process)" : "external";
        }
        finally
        {
            broker?.Dispose();
        }

        using (var bus = new InProcessTransport(new InProcessOptions { Partitions = hosts }))
        {
            var run = Measure(bus, data, busRecords, 0, ct, null);
            Print("in-process", run);
            result["in_process"] = run;
        }

        // A run that lost records (outran the local broker's retention) does not count.
        var best = ((Dictionary<string, object>)result["kafka"]).Values.Cast<Run>().Where(r => r.RecordsMissing == 0)
            .Select(r => r.RecordsPerS).DefaultIfEmpty(0).Max();
        result["aims"] = new
        {
            kafka_records_per_s = 1_000_000,
            kafka_met = best >= 1_000_000,
            in_process_records_per_s = 10_000_000,
            in_process_met = ((Run)result["in_process"]).RecordsPerS >= 10_000_000 && ((Run)result["in_process"]).RecordsMissing == 0,
        };
        Console.WriteLine(JsonSerializer.Serialize(result, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
        return 0;
    }

    // Hosts whose keys land in distinct partitions: the local broker keeps only ~5 MB per
    // partition, and three hosts sharing one would outrun it long before the path is saturated.
    private static ulong[] BenchHosts(int count)
    {
        var used = new HashSet<int>();
        var hosts = new List<ulong>();
        for (var n = 0; hosts.Count < count; n++)
        {
            var id = HostIdentity.FromName($"bench-host-{n}");
            if (count > Partitions || used.Add(KafkaTransport.PartitionOf(id, Partitions))) hosts.Add(id);
        }
        return [.. hosts];
    }

    // Other work on the machine skews every figure here: say how busy it was.
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

    private static void Print(string name, Run r) => Console.Error.WriteLine(
        $"{name,-12} {r.RecordsPerS / 1e6,6:F2} M records/s end to end ({r.RecordsReceived:N0} in {r.Seconds:F1} s), " +
        $"append {r.AppendRecordsPerS / 1e6:F1} M/s, {r.CpuNsPerRecord:F0} ns CPU/record (all threads), {r.MessageBytesPerRecord:F1} B/record in messages" +
        (r.WireBytesPerRecord is { } w ? $", {w:F1} B/record on the wire" : "") +
        $", latency p50 {r.LatencyMsP50:F1} ms p99 {r.LatencyMsP99:F1} ms, dropped {r.RecordsDropped:N0}, missing {r.RecordsMissing:N0}");

    /// <summary>One measured run: publishers on one thread, one consumer group member on another.</summary>
    public sealed record Run(
        long RecordsPublished, long RecordsReceived, long RecordsDropped, long RecordsMissing, double Seconds, double RecordsPerS,
        double AppendRecordsPerS, double CpuNsPerRecord, double MessageBytesPerRecord, double? WireBytesPerRecord,
        double LatencyMsP50, double LatencyMsP99, long Window, long DeadLettered);

    /// <summary>
    /// Publishes <paramref name="total"/> records (hosts interleaved, one TryAppend per record) while
    /// a consumer receives, validates and commits. The publisher keeps at most <paramref name="window"/>
    /// records ahead of the consumer (a closed loop, so the figure is what the path sustains, not
    /// what a broker with ~5 MB per partition can buffer); 0: no bound.
    /// </summary>
    private static Run Measure(ITransport transport, byte[][] data, long total, long window, CancellationToken ct, Func<long>? wireBytes)
    {
        using var consumer = transport.Subscribe(new ConsumerOptions
        {
            GroupId = $"bench-{Guid.NewGuid():N}",
            Families = [MessageFamily.Syscalls],
            SessionTimeout = TimeSpan.FromSeconds(6),
            MaxBufferedMessages = 256,
            // Losses and refusals are worth seeing; group assignments are not.
            Log = m => { if (!m.Contains(": assigned ", StringComparison.Ordinal)) Console.Error.WriteLine("  consumer: " + m); },
        });
        // Join the group before the clock starts.
        var joined = Stopwatch.StartNew();
        while (consumer.Assignment.Count == 0 && joined.Elapsed < TimeSpan.FromSeconds(30)) Thread.Sleep(20);

        var publishers = BenchHosts(data.Length).Select(id => transport.CreatePublisher(new PublisherOptions
        {
            HostId = id,
            Log = _ => { },
        })).ToArray();
        long received = 0, messageBytes = 0;
        var latencies = new List<double>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var consuming = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    using var message = await consumer.ReceiveAsync(stop.Token);
                    Interlocked.Add(ref received, message.RecordCount);
                    messageBytes += message.Bytes.Length;
                    if ((message.Sequence & 7) == 0)
                        latencies.Add((DateTime.UtcNow - DateTime.UnixEpoch).Ticks / 10_000.0 - message.Header.SealedUnixNs / 1e6);
                    consumer.Commit(message);
                }
            }
            catch (OperationCanceledException)
            {
            }
        }, CancellationToken.None);

        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        var perHost = total / data.Length;
        var records = data.Select(d => d.Length / SyscallRecord.Size).ToArray();
        var appendTicks = 0L;
        for (long i = 0; i < perHost; i += 1024)
        {
            ct.ThrowIfCancellationRequested();
            while (window > 0 && i * data.Length - Interlocked.Read(ref received) > window) Thread.Sleep(1);
            var started = Stopwatch.GetTimestamp();
            var end = Math.Min(perHost, i + 1024);
            for (var j = i; j < end; j++)
            {
                var at = (int)(j & 0xffff) % records[0] * SyscallRecord.Size;
                for (var h = 0; h < data.Length; h++)
                    publishers[h].TryAppend(MessageFamily.Syscalls, data[h].AsSpan(at, SyscallRecord.Size));
            }
            appendTicks += Stopwatch.GetTimestamp() - started;
        }
        foreach (var p in publishers) p.FlushAsync(TimeSpan.FromSeconds(60), ct).GetAwaiter().GetResult();
        var delivered = publishers.Sum(p => p.Stats.RecordsDelivered);
        // Done when every delivered record arrived or is known lost; or when nothing moves for 10 s.
        var lastProgress = Stopwatch.StartNew();
        var seen = 0L;
        while (Interlocked.Read(ref received) + consumer.Stats.MissingRecords < delivered && lastProgress.Elapsed < TimeSpan.FromSeconds(10))
        {
            Thread.Sleep(1);
            if (Interlocked.Read(ref received) != seen)
            {
                seen = Interlocked.Read(ref received);
                lastProgress.Restart();
            }
        }
        var seconds = clock.Elapsed.TotalSeconds;
        var cpuNs = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalNanoseconds;
        stop.Cancel();
        consuming.Wait(TimeSpan.FromSeconds(5), CancellationToken.None);
        var published = perHost * data.Length;
        var dropped = publishers.Sum(p => p.Stats.RecordsDropped);
        double? wire = null;
        if (wireBytes != null)
        {
            Thread.Sleep(600); // a statistics report after the last send
            wire = Math.Round(wireBytes() / (double)Math.Max(1, delivered), 2);
        }
        foreach (var p in publishers) p.Dispose();
        var stats = consumer.Stats;
        latencies.Sort();
        double Pct(double q) => latencies.Count == 0 ? 0 : Math.Round(latencies[(int)Math.Min(latencies.Count - 1, q * latencies.Count)], 2);
        var got = Interlocked.Read(ref received);
        return new Run(published, got, dropped, stats.MissingRecords, Math.Round(seconds, 3), Math.Round(got / seconds),
            Math.Round(published / (appendTicks / (double)Stopwatch.Frequency)), Math.Round(cpuNs / Math.Max(1, got), 1),
            Math.Round(messageBytes / (double)Math.Max(1, got), 2), wire, Pct(0.5), Pct(0.99), window, stats.DeadLettered);
    }

    /// <summary>Syscall records shaped like a busy host's, for benchmarks: what compression sees matters.</summary>
    public static class SyntheticHost
    {
        // A skewed x86-64 mix: read, write, futex, epoll_wait, recvfrom, sendto, close, openat, fstat, mmap, ...
        private static readonly (uint Nr, int Weight)[] Mix =
        [
            (0, 20), (1, 14), (202, 12), (232, 8), (45, 6), (44, 6), (3, 5), (257, 5), (5, 4), (9, 3),
            (11, 2), (7, 3), (23, 2), (228, 3), (262, 2), (17, 1), (18, 1), (72, 1), (16, 2), (39, 1),
        ];

        private static readonly string[] Comms =
            ["nginx", "postgres", "java", "python3", "sshd", "systemd", "containerd", "kubelet", "node", "redis-server", "bash", "cron"];

        public static byte[] Generate(int host, int count)
        {
            var random = new Random(1000 + host);
            var processes = Enumerable.Range(0, 300).Select(i =>
            {
                var tgid = (uint)random.Next(300, 4_000_000);
                var task = new TaskInfo
                {
                    Pid = tgid, Tgid = tgid, Ppid = (uint)random.Next(1, 3000), Uid = random.Next(4) == 0 ? 0u : (uint)random.Next(1000, 1010),
                    CgroupId = (ulong)random.Next(1000, 1100), StartNs = (ulong)random.NextInt64(1_000_000_000, 500_000_000_000),
                };
                var comm = System.Text.Encoding.ASCII.GetBytes(Comms[random.Next(Comms.Length)]);
                comm.CopyTo(MemoryMarshal.CreateSpan(ref task.Comm[0], RecordFormat.CommLength));
                return task;
            }).ToArray();
            var weights = Mix.Sum(m => m.Weight);
            var bytes = new byte[count * SyscallRecord.Size];
            var now = 600_000_000_000UL;
            for (var i = 0; i < count; i++)
            {
                // Busy processes are busy for a while: a few hot ones get most calls.
                var process = processes[(int)(Math.Pow(random.NextDouble(), 3) * processes.Length)];
                if (random.Next(8) == 0) process.Pid = process.Tgid + (uint)random.Next(1, 16);
                var pick = random.Next(weights);
                var nr = Mix[^1].Nr;
                foreach (var (n, w) in Mix)
                {
                    if ((pick -= w) < 0)
                    {
                        nr = n;
                        break;
                    }
                }
                now += (ulong)random.Next(200, 3000);
                var record = new SyscallRecord
                {
                    Header = new RecordHeader
                    {
                        Magic = RecordFormat.Magic, Version = RecordFormat.Version, Type = RecordType.Syscall,
                        Length = SyscallRecord.Size, Cpu = (ushort)random.Next(4), KtimeNs = now,
                    },
                    Task = process,
                    Nr = nr,
                    Ret = nr switch
                    {
                        0 or 1 or 44 or 45 => random.Next(10) == 0 ? -11 : random.Next(0, 4096),
                        257 => random.Next(20) == 0 ? -2 : random.Next(3, 200),
                        _ => 0,
                    },
                };
                MemoryMarshal.Write(bytes.AsSpan(i * SyscallRecord.Size), in record);
            }
            return bytes;
        }
    }

}
