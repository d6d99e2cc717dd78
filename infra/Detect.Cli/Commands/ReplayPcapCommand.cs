using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Apache.Arrow;
using Detect.Cli.Replay;
using Detect.Pipeline;
using Detect.Pipeline.Archive;
using Detect.Sensors.Bpf;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect replay pcap FILE...`: each capture is sent with tcpreplay into a veth between two
/// `detect-replay-*` namespaces, where the real flow sensor listens; its flow records become
/// flow feature windows (label and sample_id: the file name) through the same pipeline as live
/// data. Per capture: packets sent and seen, flow records by reason, sources, windows; a damaged
/// capture is reported with its byte offset and its intact part replayed. One JSON object last.
/// </summary>
public sealed class ReplayPcapCommand : ICliCommand
{
    public string? Parent => "replay";

    public Command Create()
    {
        var files = new Argument<string[]>("FILE") { Description = "Packet captures (pcap or pcapng, Ethernet), or folders of them", Arity = ArgumentArity.OneOrMore };
        var speed = new Option<string>("--speed") { Description = "top (as fast as possible) or a multiple of the capture's own pace (1 = real time)", DefaultValueFactory = _ => "top" };
        var maxSeconds = new Option<double>("--max-seconds") { Description = "Longest a capture is sent for (tcpreplay --duration)", DefaultValueFactory = _ => 60 };
        var window = new Option<double>("--window") { Description = "Window length in seconds", DefaultValueFactory = _ => 10 };
        var archive = new Option<string?>("--archive") { Description = "Also archive the flow windows as Parquet in this folder (ARCHIVE/flow/date=.../hour=.../part-N.parquet)" };
        var maxFlows = new Option<int>("--max-flows") { Description = "Flow table of the sensor (entries)", DefaultValueFactory = _ => 131_072 };
        var command = new Command("pcap", "Send captures with tcpreplay through a veth in test namespaces where the flow sensor listens; flow windows labelled with the file name")
        {
            files, speed, maxSeconds, window, archive, maxFlows,
        };
        command.SetAction((parse, ct) =>
        {
            double? multiplier = null;
            var speedText = parse.GetValue(speed)!;
            if (speedText != "top")
            {
                if (!double.TryParse(speedText, NumberStyles.Float, CultureInfo.InvariantCulture, out var m) || m <= 0)
                {
                    Console.Error.WriteLine($"detect replay pcap: --speed {speedText}: use top or a positive multiple");
                    return Task.FromResult(2);
                }
                multiplier = m;
            }
            var paths = new List<string>();
            foreach (var p in parse.GetValue(files)!)
            {
                if (Directory.Exists(p))
                    paths.AddRange(Directory.GetFiles(p).Where(f => f.EndsWith(".pcap", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".pcapng", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".cap", StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal));
                else if (File.Exists(p)) paths.Add(p);
                else
                {
                    Console.Error.WriteLine($"detect replay pcap: {p} does not exist");
                    return Task.FromResult(2);
                }
            }
            var seconds = parse.GetValue(window);
            if (seconds <= 0)
            {
                Console.Error.WriteLine("detect replay pcap: --window must be positive");
                return Task.FromResult(2);
            }
            return Task.FromResult(Run(paths, new PcapReplayOptions
            {
                Speed = multiplier,
                MaxDuration = TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(maxSeconds))),
                MaxFlows = parse.GetValue(maxFlows),
                Log = m => Console.Error.WriteLine("replay pcap: " + m),
            }, TimeSpan.FromSeconds(seconds), parse.GetValue(archive), ct));
        });
        return command;
    }

    private static int Run(List<string> files, PcapReplayOptions options, TimeSpan window, string? archiveRoot, CancellationToken outer)
    {
        // Our own signal handlers: the replay runs inside the action's first synchronous part, before
        // System.CommandLine would listen for Ctrl-C, and its namespaces must go whatever happens.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(outer);
        void OnSignal(System.Runtime.InteropServices.PosixSignalContext c)
        {
            c.Cancel = true;
            stop.Cancel();
        }
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, OnSignal);
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, OnSignal);
        var ct = stop.Token;
        try
        {
            BpfSystem.EnsurePrivileged();
        }
        catch (BpfPrivilegeException e)
        {
            Console.Error.WriteLine($"detect replay pcap: {e.Message}");
            return 3;
        }
        if (!File.Exists("/usr/bin/tcpreplay") && !File.Exists("/usr/sbin/tcpreplay"))
        {
            Console.Error.WriteLine("detect replay pcap: needs tcpreplay (apt-get install tcpreplay; ./detect installs it)");
            return 3;
        }
        var pipeline = new FeaturePipeline(new PipelineOptions { Window = window, AllowedLateness = TimeSpan.FromSeconds(Math.Min(2, window.TotalSeconds / 5)) },
            (offset, error, detail) => Console.Error.WriteLine($"replay pcap: record at offset {offset}: {error}: {detail}"));
        var windowsByLabel = new Dictionary<string, long>(StringComparer.Ordinal);
        pipeline.AddSink((family, batch) =>
        {
            var labels = (StringArray)batch.Column(batch.Schema.GetFieldIndex("label"));
            for (var r = 0; r < batch.Length; r++)
            {
                var l = labels.GetString(r) ?? "";
                windowsByLabel[l] = windowsByLabel.GetValueOrDefault(l) + 1;
            }
        });
        using var archive = archiveRoot != null ? new ParquetArchive(new ArchiveOptions { Root = archiveRoot }) : null;
        if (archive != null) pipeline.AddSink(archive);

        var results = new List<PcapReplayResult>();
        var failures = 0;
        foreach (var file in files)
        {
            if (ct.IsCancellationRequested) break;
            PcapReplayResult result;
            try
            {
                result = PcapReplay.ReplayOne(file, pipeline, window, options, ct);
                pipeline.Flush(); // this capture's windows close now (each capture is a host of its own)
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine($"replay pcap: {Path.GetFileName(file)}: stopped (Ctrl-C); its namespaces are removed");
                break;
            }
            catch (Exception e) when (e is InvalidOperationException or TimeoutException or BpfException or IOException or ArgumentException)
            {
                failures++;
                Console.Error.WriteLine($"replay pcap: {Path.GetFileName(file)}: {e.Message}; going on with the next capture");
                results.Add(new PcapReplayResult { File = file, Label = Path.GetFileName(file), Skipped = e.Message });
                continue;
            }
            result.Windows = windowsByLabel.GetValueOrDefault(result.Label);
            results.Add(result);
            if (result.Skipped != null) Console.Error.WriteLine($"replay pcap: {result.Label}: skipped: {result.Skipped}");
            else
            {
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"replay pcap: {result.Label}: sent {result.PacketsSent:N0} packets ({result.PacketsFailed} failed), veth received {result.RxPackets:N0}, sensor counted {result.SensorPackets:N0}; " +
                    $"{result.FlowRecords:N0} flow records ({string.Join(", ", result.FlowsByReason.Select(r => $"{r.Key} {r.Value}"))}), {result.Sources:N0} sources, {result.Windows:N0} windows; {result.Seconds:F1} s"));
            }
        }
        archive?.Flush();
        var stats = pipeline.Stats;
        var json = new Dictionary<string, object?>
        {
            ["dataset"] = "pcap",
            ["files"] = results.Count,
            ["replayed"] = results.Count(r => r.Skipped == null),
            ["skipped"] = results.Count(r => r.Skipped != null),
            ["flow_records"] = results.Sum(r => r.FlowRecords),
            ["windows"] = stats.Flow.Rows,
            ["late_records"] = stats.LateRecords,
            ["decode_errors"] = stats.Decode.Errors,
            ["archive"] = archiveRoot != null ? Path.GetFullPath(archiveRoot) : null,
            ["captures"] = results.Select(r => new Dictionary<string, object?>
            {
                ["file"] = r.File,
                ["label"] = r.Label,
                ["format"] = r.Capture?.Format.ToString().ToLowerInvariant(),
                ["name_mismatch"] = r.Capture?.NameMismatch,
                ["link_type"] = r.Capture?.LinkType,
                ["packets_in_file"] = r.Capture?.Packets,
                ["damaged_at"] = r.Capture?.DamageOffset,
                ["damage"] = r.Capture?.Damage,
                ["skipped"] = r.Skipped,
                ["packets_sent"] = r.PacketsSent,
                ["packets_failed"] = r.PacketsFailed,
                ["rx_packets"] = r.RxPackets,
                ["sensor_packets"] = r.SensorPackets,
                ["uncounted_packets"] = r.UncountedPackets,
                ["flow_records"] = r.FlowRecords,
                ["flows_by_reason"] = r.FlowsByReason,
                ["sources"] = r.Sources,
                ["windows"] = r.Windows,
                ["seconds"] = Math.Round(r.Seconds, 2),
            }).ToList(),
        };
        Console.WriteLine(JsonSerializer.Serialize(json));
        return ct.IsCancellationRequested ? 130 : failures > 0 && failures == results.Count ? 1 : 0;
    }
}
