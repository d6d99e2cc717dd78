using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Detect.Cli.Product;
using Detect.Models.Features;
using Detect.Models.Registry;
using Detect.Models.Training;
using Detect.Pipeline;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;
using Detect.Transport;
using Detect.Transport.Kafka;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect bench product`: the throughput of `detect pipeline --kafka` (the same ProductPipeline:
/// consumer group member, TransportInput, FeaturePipeline, scoring with a registry model, alerts)
/// fed by publishers flooding the local broker with synthetic syscall records of several hosts
/// and a few hundred processes each; records per second from the first append to the last record
/// applied, windows scored, CPU per record and transport latency. JSON last.
/// </summary>
public sealed class BenchProductCommand : ICliCommand
{
    public string? Parent => "bench";

    public Command Create()
    {
        var records = new Option<long>("--records") { Description = "Records to publish in all", DefaultValueFactory = _ => 3_000_000 };
        var hosts = new Option<int>("--hosts") { Description = "Publishing hosts", DefaultValueFactory = _ => 4 };
        var processes = new Option<int>("--processes") { Description = "Processes per host", DefaultValueFactory = _ => 300 };
        var eventSeconds = new Option<double>("--event-seconds") { Description = "Event time the records span (windows of 10 s close as it passes)", DefaultValueFactory = _ => 60 };
        var detector = new Option<string>("--detector") { Description = "Detector of the model the pipeline scores with", DefaultValueFactory = _ => "knn" };
        var ahead = new Option<long>("--ahead") { Description = "Most records the publishers may be ahead of the pipeline (the local broker keeps ~5 MB per partition)", DefaultValueFactory = _ => 120_000 };
        var command = new Command("product", "Throughput of the pipeline half (detect pipeline --kafka: windows, scoring, alerts) over the local broker; JSON last")
        {
            records, hosts, processes, eventSeconds, detector, ahead,
        };
        command.SetAction(async (parse, ct) => await Run(parse.GetValue(records), parse.GetValue(hosts), parse.GetValue(processes),
            parse.GetValue(eventSeconds), parse.GetValue(detector)!, parse.GetValue(ahead), ct).ConfigureAwait(false));
        return command;
    }

    private static async Task<int> Run(long total, int hosts, int processes, double eventSeconds, string detector, long ahead, CancellationToken ct)
    {
        var state = Path.Combine(Path.GetTempPath(), $"detect-bench-product-{Environment.ProcessId}");
        var window = TimeSpan.FromSeconds(10);
        try
        {
            Console.Error.WriteLine($"product bench: {total:N0} records from {hosts} hosts x {processes} processes over {eventSeconds} s of event time; {Environment.ProcessorCount} cores, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            // A model of the same kind of data, so the pipeline scores from the first window.
            var training = Stopwatch.StartNew();
            var trained = TrainModel(Path.Combine(state, "models", "syscall"), detector, processes, window);
            Console.Error.WriteLine($"model {trained} trained in {training.Elapsed.TotalSeconds:F1} s");

            using var broker = new LocalKafkaBroker();
            using var transport = new KafkaTransport(new KafkaOptions { BootstrapServers = broker.BootstrapServers });
            var options = new ProductOptions
            {
                StateDirectory = state,
                Window = window,
                Lateness = TimeSpan.FromSeconds(2),
                Learning = TimeSpan.FromHours(1),
                Detector = detector,
                GroupId = $"bench-{Guid.NewGuid():N}",
                Alerts = new Detect.Alerts.AlertOptions { MaxAlertsPerMinute = 1_000_000 },
            };
            using var pipeline = new ProductPipeline(transport, options, [FeatureFamily.Syscall], HostIdentity.Local, m => Console.Error.WriteLine("pipeline: " + m));
            pipeline.Start();
            var joined = Stopwatch.StartNew();
            while ((pipeline.Snapshot?.Assignment.Count ?? 0) == 0 && joined.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(100, ct).ConfigureAwait(false);
            Console.Error.WriteLine($"consumer group joined in {joined.Elapsed.TotalSeconds:F1} s");

            var bootNow = Detect.Records.KernelClock.BootTimeNs();
            var offset = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100 - bootNow;
            var publishers = Enumerable.Range(0, hosts)
                .Select(h => transport.CreatePublisher(new PublisherOptions { HostId = (ulong)(0xbe00 + h), BootToRealtimeNs = offset, Log = m => Console.Error.WriteLine("publisher: " + m) }))
                .ToArray();
            var perHost = total / hosts;
            var stepNs = (long)(eventSeconds * 1e9 / perHost);
            var generators = Enumerable.Range(0, hosts).Select(h => new Generator(h, processes, bootNow, stepNs)).ToArray();
            var buffer = new RecordBuffer(4096 * Detect.Records.SyscallRecord.Size);
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            var clock = Stopwatch.StartNew();
            long appended = 0;
            while (appended < perHost * hosts)
            {
                ct.ThrowIfCancellationRequested();
                while (appended - pipeline.RecordsApplied > ahead) await Task.Delay(2, ct).ConfigureAwait(false);
                for (var h = 0; h < hosts; h++)
                {
                    buffer.Clear();
                    generators[h].Fill(buffer, 2048);
                    appended += publishers[h].TryAppendRecords(MessageFamily.Syscalls, buffer.Span);
                }
            }
            foreach (var p in publishers) await p.FlushAsync(TimeSpan.FromSeconds(30), ct).ConfigureAwait(false);
            var dropped = publishers.Sum(p => p.Stats.RecordsDropped);
            while (pipeline.RecordsApplied < appended - dropped && clock.Elapsed < TimeSpan.FromMinutes(5)) await Task.Delay(5, ct).ConfigureAwait(false);
            var seconds = clock.Elapsed.TotalSeconds;
            var applied = pipeline.RecordsApplied;
            var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
            await pipeline.StopAsync(TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            foreach (var p in publishers) p.Dispose();

            var snap = pipeline.Snapshot!;
            var family = pipeline.Families.Single();
            var transportLatency = pipeline.TransportLatency.Snapshot();
            var rate = applied / seconds;
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{applied:N0} records applied in {seconds:F1} s: {rate:N0} records/s; {snap.Pipeline.Syscall.Rows:N0} windows, {family.WindowsScored:N0} scored by {family.Model}; " +
                $"CPU {cpu / applied * 1e9:F0} ns per record (all threads, broker included); dropped {dropped:N0}"));
            var json = new Dictionary<string, object?>
            {
                ["benchmark"] = "product",
                ["cores"] = Environment.ProcessorCount,
                ["hosts"] = hosts,
                ["processes_per_host"] = processes,
                ["records"] = applied,
                ["seconds"] = Math.Round(seconds, 2),
                ["records_per_second"] = Math.Round(rate),
                ["cpu_ns_per_record"] = Math.Round(cpu / applied * 1e9),
                ["windows"] = snap.Pipeline.Syscall.Rows,
                ["windows_scored"] = family.WindowsScored,
                ["windows_scored_per_second"] = Math.Round(family.WindowsScored / seconds),
                ["model"] = family.Model,
                ["alerts"] = pipeline.Alerts.Engine.Stats.Raised,
                ["late_records"] = snap.Pipeline.LateRecords,
                ["missing_records"] = snap.Consumer.MissingRecords,
                ["publisher_dropped"] = dropped,
                // No window-end-to-score figure here: the generator's event time runs far ahead of the wall
                // clock, so windows "end" in the future. `up --json` measures it live; `bench score` the scoring.
                ["transport_ms"] = new Dictionary<string, double> { ["p50"] = Math.Round(transportLatency.P50, 1), ["p99"] = Math.Round(transportLatency.P99, 1) },
                ["load_average_1m"] = File.ReadAllText("/proc/loadavg").Split(' ')[0],
            };
            Console.WriteLine(JsonSerializer.Serialize(json));
            return 0;
        }
        finally
        {
            if (Directory.Exists(state)) Directory.Delete(state, recursive: true);
        }
    }

    /// <summary>Trains, saves and promotes a model on windows of the generator's kind of data (another seed).</summary>
    private static string TrainModel(string registryRoot, string detector, int processes, TimeSpan window)
    {
        var pipeline = new FeaturePipeline(new PipelineOptions { Window = window });
        var parts = new List<FeatureMatrix>();
        pipeline.AddSink((_, batch) => parts.Add(FeatureMatrix.FromArrow(batch)));
        var generator = new Generator(99, processes, 1_000_000_000_000, 100_000);
        var buffer = new RecordBuffer(4096 * Detect.Records.SyscallRecord.Size);
        for (var i = 0; i < 600; i++) // 60 s of event time
        {
            buffer.Clear();
            generator.Fill(buffer, 1000);
            pipeline.Process(buffer.Span, new RecordSource("training-host", 1_700_000_000_000_000_000));
        }
        pipeline.Flush();
        var registry = new ModelRegistry(registryRoot);
        var model = ModelTrainer.Train(FeatureMatrix.Concat(parts), new TrainOptions { Detector = detector, Name = registry.Name, Source = "bench product" });
        var version = registry.Save(model);
        registry.Promote(version);
        return $"syscall/{version} ({detector}, {FeatureMatrix.Concat(parts).Rows} windows)";
    }

    /// <summary>One host's processes, each with its own few favourite syscalls, in event-time order.</summary>
    private sealed class Generator(int host, int processes, long startKtimeNs, long stepNs)
    {
        private readonly Random _rng = new(host * 7919 + 1);
        private readonly uint[][] _profiles = Enumerable.Range(0, processes).Select(p =>
        {
            var r = new Random(p * 31 + 7);
            return Enumerable.Range(0, 6).Select(_ => (uint)r.Next(0, 300)).ToArray();
        }).ToArray();
        private long _ktime = startKtimeNs;

        public void Fill(RecordBuffer buffer, int count)
        {
            for (var i = 0; i < count; i++)
            {
                _ktime += stepNs;
                var p = _rng.Next(processes);
                var profile = _profiles[p];
                var nr = profile[Math.Min(profile.Length - 1, (int)(-Math.Log(1 - _rng.NextDouble()) * 1.5))];
                buffer.AddSyscall((ulong)_ktime, (uint)(1000 + p), (ulong)(host * 1000 + p), nr, _rng.Next(20) == 0 ? -2 : 0);
            }
        }
    }
}
