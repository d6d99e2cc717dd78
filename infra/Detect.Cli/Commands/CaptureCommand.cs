using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Detect.Cli.Sensors;
using Detect.Records;
using Detect.Sensors;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect capture --seconds N [--out FILE] [--json]`: runs the sensors for N seconds (or until
/// Ctrl-C), prints the records per type and the losses; --out writes every record to a capture
/// file (RecordFile format: 64-byte header, then the records as the sensors wrote them).
/// </summary>
public sealed class CaptureCommand : ICliCommand
{
    public Command Create()
    {
        var seconds = new Option<double>("--seconds") { Description = "How long to capture", DefaultValueFactory = _ => 5 };
        var output = new Option<string?>("--out") { Description = "Write the records to this capture file (format in README: Capture files)" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object as the last line (counts and losses keyed by record type)" };
        var iface = new Option<string[]>("--iface") { Description = "Also record network flows on this interface (NAME or NAME@NETNS; repeatable)", AllowMultipleArgumentsPerToken = true };
        var sensorOptions = new SensorCliOptions();
        var command = new Command("capture", "Run the sensors for a while and report records per type and losses; optionally write them to a file")
        {
            seconds, output, json, iface,
        };
        sensorOptions.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            SensorOptions options;
            try
            {
                options = sensorOptions.Read(parse);
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"capture: {e.Message}");
                return Task.FromResult(2);
            }
            return Task.FromResult(Run(parse.GetValue(seconds), parse.GetValue(output), parse.GetValue(json), options, parse.GetValue(iface) ?? [], ct));
        });
        return command;
    }

    private static int Run(double seconds, string? output, bool json, SensorOptions options, string[] ifaces, CancellationToken ct)
    {
        if (seconds <= 0)
        {
            Console.Error.WriteLine("capture: --seconds must be positive");
            return 2;
        }
        using var agent = SensorStart.TryStart("capture", options);
        if (agent == null) return SensorStart.StartFailed;

        RecordFileWriter? writer = null;
        if (output != null)
        {
            writer = new RecordFileWriter(output, new RecordFileHeader
            {
                BootToRealtimeNs = KernelClock.BootToRealtimeOffsetNs(),
                CreatedUnixNs = (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100,
                HostName = Environment.MachineName,
            });
        }
        var handler = new CountingHandler(writer);
        // Flows (Sensors II): a sensor of their own feeding the same handler, serialised with the others.
        Detect.Sensors.Flows.FlowCapture? flows;
        try
        {
            flows = ifaces.Length > 0 ? Detect.Sensors.Flows.FlowCapture.Start(ifaces, handler) : null;
        }
        catch (Exception e) when (e is ArgumentException or Detect.Sensors.Bpf.BpfException)
        {
            Console.Error.WriteLine($"capture: {e.Message}");
            writer?.Dispose();
            return 2;
        }
        using var flowCapture = flows;
        ISensorBatchHandler sink = flows?.Handler ?? handler;
        var clock = Stopwatch.StartNew();
        using (var stop = CancellationTokenSource.CreateLinkedTokenSource(ct))
        {
            stop.CancelAfter(TimeSpan.FromSeconds(seconds));
            Console.Error.WriteLine($"capture: {seconds.ToString(CultureInfo.InvariantCulture)} s, syscall mode {options.SyscallMode.ToString().ToLowerInvariant()}" +
                (output != null ? $", writing {output}" : "") + " (Ctrl-C stops early)");
            agent.Run(sink, stop.Token);
        }
        agent.Stop(sink); // detach, drain what is left, flush summaries
        var flowStats = flows?.Stop(); // detach, export what is pending, hand the last flow records over
        var elapsed = clock.Elapsed.TotalSeconds;
        var losses = agent.ReadLosses();
        writer?.Dispose();

        Console.WriteLine($"{"type",-16} {"records",12} {"lost",10}");
        var result = new Dictionary<string, object>();
        for (var t = 1; t < RecordFormat.TypeCount; t++)
        {
            var type = (RecordType)t;
            var name = RecordFormat.NameOf(type);
            Console.WriteLine($"{name,-16} {handler.Count(type),12:N0} {losses.Lost(type),10:N0}");
            result[name] = new Dictionary<string, object> { ["records"] = handler.Count(type), ["lost"] = losses.Lost(type) };
        }
        Console.WriteLine($"malformed {losses.Malformed:N0}; calls the summary table could not count {losses.SummaryUncounted:N0}; {elapsed:F1} s");
        if (output != null) Console.WriteLine($"wrote {handler.Total:N0} records ({handler.BytesWritten + RecordFile.HeaderSize:N0} bytes) to {output}");

        result["malformed"] = losses.Malformed;
        result["summary_uncounted"] = losses.SummaryUncounted;
        result["total_records"] = handler.Total;
        result["total_lost"] = losses.TotalLost;
        result["seconds"] = Math.Round(elapsed, 3);
        result["mode"] = options.SyscallMode.ToString().ToLowerInvariant();
        result["attached"] = agent.Report.Attached.Select(p => $"{p.Object}/{p.Program}").ToArray();
        result["refused"] = agent.Report.Failed.Select(p => p.ToString()).ToArray();
        if (output != null) result["out"] = Path.GetFullPath(output);
        if (flowStats is { } fs)
        {
            Console.WriteLine($"flows on {string.Join(", ", ifaces)}: {fs.Counters.Packets:N0} packets in {fs.Counters.Records:N0} records; packets in no flow (table full) {fs.Counters.UncountedPackets:N0}");
            result["flow_packets"] = fs.Counters.Packets;
            result["flow_uncounted_packets"] = fs.Counters.UncountedPackets;
        }
        if (json) Console.WriteLine(JsonSerializer.Serialize(result));
        return 0;
    }
}
