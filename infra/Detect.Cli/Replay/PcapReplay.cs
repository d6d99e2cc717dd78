using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Detect.Pipeline;
using Detect.Records;
using Detect.Sensors;
using Detect.Sensors.Flows;

namespace Detect.Cli.Replay;

/// <summary>How captures are replayed.</summary>
internal sealed record PcapReplayOptions
{
    /// <summary>null: as fast as possible (tcpreplay --topspeed); else a multiple of the capture's own pace (1 = real time).</summary>
    public double? Speed { get; init; }

    /// <summary>No replay sends for longer than this (tcpreplay --duration; the process is killed a little after).</summary>
    public TimeSpan MaxDuration { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Flow table of the sensor (a flood of spoofed sources is one flow each).</summary>
    public int MaxFlows { get; init; } = 131_072;

    public Action<string>? Log { get; init; }
}

/// <summary>What one capture gave.</summary>
internal sealed record PcapReplayResult
{
    public required string File { get; init; }
    public required string Label { get; init; }
    public PcapCapture? Capture { get; init; }
    /// <summary>Why the capture was not replayed (not a capture, not Ethernet, no intact packet); null when it was.</summary>
    public string? Skipped { get; init; }
    public long PacketsSent { get; init; }
    public long PacketsFailed { get; init; }
    /// <summary>Frames the receiving veth counted.</summary>
    public long RxPackets { get; init; }
    /// <summary>Packets the flow sensor counted, and those it had no table room for.</summary>
    public long SensorPackets { get; init; }
    public long UncountedPackets { get; init; }
    public long FlowRecords { get; init; }
    public IReadOnlyDictionary<string, long> FlowsByReason { get; init; } = new Dictionary<string, long>();
    /// <summary>Distinct source addresses among the flow records (the flow family's entities).</summary>
    public long Sources { get; init; }
    public long Windows { get; set; }
    public double Seconds { get; init; }
}

/// <summary>
/// `detect replay pcap`: a capture's packets, sent with tcpreplay from one network namespace into
/// a veth whose other end, in a second namespace, carries the real flow sensor (TC); the flow
/// records go through the same FeaturePipeline path as live ones, labelled with the file name. The
/// capture is checked first: its real format (by magic number), its link type, and any damage,
/// whose offset is reported while the intact packets before it are still replayed. Namespaces,
/// veths and programs are removed afterwards, also on errors and Ctrl-C.
/// </summary>
internal static partial class PcapReplay
{
    public static PcapReplayResult ReplayOne(string file, FeaturePipeline pipeline, TimeSpan window, PcapReplayOptions options, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var label = Path.GetFileName(file);
        PcapCapture capture;
        try
        {
            capture = PcapCapture.Read(file);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            return new PcapReplayResult { File = file, Label = label, Skipped = e.Message };
        }
        options.Log?.Invoke(capture.ToString());
        if (capture.LinkType != PcapCapture.LinkEthernet)
            return new PcapReplayResult { File = file, Label = label, Capture = capture, Skipped = $"link type {capture.LinkType} is not Ethernet (1): convert it first (tcprewrite --dlt=enet)" };
        if (capture.Packets == 0)
            return new PcapReplayResult { File = file, Label = label, Capture = capture, Skipped = capture.DamageOffset is { } o ? $"no intact packet before the damage at byte offset {o}" : "no packets" };

        string? intact = null;
        var toSend = file;
        if (capture.DamageOffset != null)
        {
            intact = Path.Combine(Path.GetTempPath(), $"detect-replay-{Environment.ProcessId}-{Guid.NewGuid():N}{(capture.Format == CaptureFormat.PcapNg ? ".pcapng" : ".pcap")}");
            capture.WriteIntactPart(intact);
            toSend = intact;
        }
        try
        {
            using var lab = ReplayLab.Create();
            var handler = new PipelineHandler(pipeline);
            using var flows = FlowCapture.Start([lab.RxSpec], handler, new FlowSensorOptions
            {
                MaxFlows = options.MaxFlows,
                RingBytes = 32u << 20,
                AttributeConnects = false,
            });
            // Event time: the capture's own clock, from the start of the window its first packet
            // fell in, plus the replay's elapsed time. A replay shorter than a window is one window
            // per source, whenever it runs.
            var windowNs = window.Ticks * 100;
            var alignedStart = capture.FirstPacketUnixNs - (((capture.FirstPacketUnixNs % windowNs) + windowNs) % windowNs);
            var bootNow = KernelClock.BootTimeNs();
            handler.Source = new RecordSource($"pcap:{label}", alignedStart - bootNow, label, label);
            var (sent, failed) = Send(lab, toSend, options, ct);
            // The veth hands frames over synchronously; let the last ones reach the sensor's table.
            var expected = sent;
            var settle = Stopwatch.StartNew();
            while (settle.ElapsedMilliseconds < 2000 && lab.RxPackets() < expected) Thread.Sleep(20);
            var rx = lab.RxPackets();
            var stats = flows.Stop(); // exports every pending flow (reason Flush) into the handler
            return new PcapReplayResult
            {
                File = file,
                Label = label,
                Capture = capture,
                PacketsSent = sent,
                PacketsFailed = failed,
                RxPackets = rx,
                SensorPackets = (long)stats.Counters.Packets,
                UncountedPackets = (long)stats.Counters.UncountedPackets,
                FlowRecords = handler.Records,
                FlowsByReason = handler.ByReason.ToDictionary(p => p.Key, p => p.Value),
                Sources = handler.Sources.Count,
                Seconds = clock.Elapsed.TotalSeconds,
            };
        }
        finally
        {
            if (intact != null) File.Delete(intact);
        }
    }

    /// <summary>Runs tcpreplay in the tx namespace; returns the packets it sent and failed to send.</summary>
    private static (long Sent, long Failed) Send(ReplayLab lab, string file, PcapReplayOptions options, CancellationToken ct)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        var seconds = Math.Max(1, (int)Math.Ceiling(options.MaxDuration.TotalSeconds));
        foreach (var a in new[] { "netns", "exec", lab.TxNetns, "tcpreplay", "-i", lab.TxInterface, $"--duration={seconds}" }) psi.ArgumentList.Add(a);
        if (options.Speed is { } x) psi.ArgumentList.Add($"--multiplier={x.ToString(CultureInfo.InvariantCulture)}");
        else psi.ArgumentList.Add("--topspeed");
        psi.ArgumentList.Add(file);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start tcpreplay");
        var stdout = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
        using (ct.Register(() => Kill(p)))
        {
            if (!p.WaitForExit(TimeSpan.FromSeconds(seconds + 15)))
            {
                Kill(p);
                throw new TimeoutException($"tcpreplay did not end within {seconds + 15} s");
            }
        }
        ct.ThrowIfCancellationRequested();
        var output = stdout.Result + stderr.Result;
        if (p.ExitCode != 0) throw new InvalidOperationException($"tcpreplay failed (exit {p.ExitCode}): {output.Trim()}");
        var sent = ActualPackets().Match(output);
        var failed = FailedPackets().Match(output);
        return (sent.Success ? long.Parse(sent.Groups[1].Value, CultureInfo.InvariantCulture) : 0,
            failed.Success ? long.Parse(failed.Groups[1].Value, CultureInfo.InvariantCulture) : 0);
    }

    private static void Kill(Process p)
    {
        try
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
    }

    [GeneratedRegex(@"Actual:\s+(\d+) packets")]
    private static partial Regex ActualPackets();

    [GeneratedRegex(@"Failed packets:\s+(\d+)")]
    private static partial Regex FailedPackets();

    /// <summary>On the flow capture's thread: copies each batch's records into one buffer and applies it to the pipeline.</summary>
    private sealed class PipelineHandler(FeaturePipeline pipeline) : ISensorBatchHandler
    {
        private byte[] _buffer = new byte[64 * 1024];

        public RecordSource? Source { get; set; }
        public long Records { get; private set; }
        public Dictionary<string, long> ByReason { get; } = new(StringComparer.Ordinal);
        public HashSet<IPAddress> Sources { get; } = [];

        public void OnBatch(SensorBatch batch)
        {
            var length = 0;
            foreach (var record in batch)
            {
                if (record.Type != RecordType.Flow) continue;
                if (length + record.Bytes.Length > _buffer.Length) Array.Resize(ref _buffer, _buffer.Length * 2);
                record.Bytes.CopyTo(_buffer.AsSpan(length));
                length += record.Bytes.Length;
                var flow = MemoryMarshal.Read<FlowRecord>(record.Bytes);
                var reason = flow.Reason.ToString();
                ByReason[reason] = ByReason.GetValueOrDefault(reason) + 1;
                ReadOnlySpan<byte> s = flow.Saddr;
                Sources.Add(new IPAddress(flow.Family == 6 ? s : s[..4]));
                Records++;
            }
            if (length > 0 && Source != null) pipeline.Process(_buffer.AsSpan(0, length), Source);
        }
    }
}
