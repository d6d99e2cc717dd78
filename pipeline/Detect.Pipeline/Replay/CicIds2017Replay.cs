using System.Globalization;
using System.Net;
using Detect.Records;

namespace Detect.Pipeline.Replay;

/// <summary>How CIC-IDS2017 rows are grouped into windows.</summary>
public enum CicGrouping
{
    /// <summary>One row = one window of its own (time synthesised): labels are exact per row.</summary>
    Row,
    /// <summary>Rows at their real time, aggregated per source address per window: a window may mix rows (attack label wins).</summary>
    Source,
}

/// <summary>
/// Replays CIC-IDS2017 CSV files (CICFlowMeter columns, Engelen et al. labels): each row becomes the
/// one flow record it describes, handed to <see cref="FeaturePipeline.Process"/> as a sensor batch is.
///
/// Row -> record: Src IP/Port -> saddr/sport (the side that sent the first packet), Dst IP/Port,
/// Protocol; packets_fwd/rev = Total Fwd Packet / Total Bwd packets; bytes_fwd/rev = Total Length of
/// Fwd/Bwd Packet + Fwd/Bwd Header Length (payload + headers: L3 bytes, as the sensor counts; a negative header length, a known
/// CICFlowMeter overflow, counts as 0); the
/// FIN/SYN/RST flag counts -> fin/syn/rst_count, and every flag count above zero sets its bit in
/// tcp_flags; reason = TCP end when FIN or RST was seen, else idle. Time: in <see cref="CicGrouping.Row"/>
/// mode (default) row k of the replay ends at Base + k·window + window/2 and starts Flow Duration earlier (µs),
/// so every row is exactly one window; in <see cref="CicGrouping.Source"/> mode the row's Timestamp (read as UTC) is the first
/// packet and the record is emitted at Timestamp + Flow Duration; rows are sorted by that end time first.
/// Labels: the row's Label; sample_id = FILE:LINE (line 1 is the header).
/// </summary>
public static class CicIds2017Replay
{
    /// <summary>2017-07-03T00:00:00Z, the first day of the capture.</summary>
    public const long BaseUnixNs = 1_499_040_000_000_000_000L;
    public const string Host = "cicids2017";

    private static readonly string[] Required =
    [
        "Src IP", "Src Port", "Dst IP", "Dst Port", "Protocol", "Timestamp", "Flow Duration", "Total Fwd Packet",
        "Total Bwd packets", "Total Length of Fwd Packet", "Total Length of Bwd Packet", "Fwd Header Length", "Bwd Header Length",
        "FIN Flag Count", "SYN Flag Count", "RST Flag Count", "PSH Flag Count", "ACK Flag Count", "URG Flag Count",
        "CWR Flag Count", "ECE Flag Count", "Label",
    ];

    private enum C { SrcIp, SrcPort, DstIp, DstPort, Protocol, Timestamp, Duration, FwdPackets, BwdPackets, FwdLength, BwdLength,
        FwdHeader, BwdHeader, Fin, Syn, Rst, Psh, Ack, Urg, Cwr, Ece, Label }

    /// <summary>CSV files named or inside named folders, in order.</summary>
    public static List<string> Files(IEnumerable<string> paths)
    {
        var files = new List<string>();
        foreach (var p in paths)
        {
            if (Directory.Exists(p)) files.AddRange(Directory.EnumerateFiles(p, "*.csv").Order(StringComparer.Ordinal));
            else files.Add(p);
        }
        return files;
    }

    public static ReplayResult Run(IEnumerable<string> paths, FeaturePipeline pipeline, CicGrouping grouping = CicGrouping.Row,
        int limitPerFile = int.MaxValue, Action<string>? onProblem = null, CancellationToken ct = default)
    {
        var result = new ReplayResult { Dataset = "cicids2017" };
        var windowNs = pipeline.Options.Window.Ticks * 100;
        var rows = new List<(long EndNs, FlowRecord Record, RecordSource Source)>();
        var buffer = new RecordBuffer(FlowRecord.Size * 4);
        long k = 0;
        foreach (var file in Files(paths))
        {
            result.Files++;
            var name = Path.GetFileName(file);
            IEnumerable<string> lines;
            try
            {
                lines = File.ReadLines(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                result.Problem($"{file}: unreadable: {e.Message}", onProblem);
                continue;
            }
            int[]? cols = null;
            var line = 0;
            var taken = 0;
            foreach (var text in lines)
            {
                ct.ThrowIfCancellationRequested();
                line++;
                if (cols == null)
                {
                    cols = Header(text, out var missing);
                    if (cols == null)
                    {
                        result.Problem($"{file}:{line}: not a CIC-IDS2017 header (missing {missing}); file skipped", onProblem);
                        break;
                    }
                    continue;
                }
                if (text.Length == 0) continue;
                if (taken >= limitPerFile) break;
                if (!TryRow(text, cols, out var record, out var label, out var durationNs, out var startNs, out var problem))
                {
                    result.Problem($"{file}:{line}: {problem}; row skipped", onProblem);
                    continue;
                }
                taken++;
                var source = new RecordSource(Host, 0, label, $"{name}:{line}");
                result.Count(label);
                result.Records++;
                if (grouping == CicGrouping.Row)
                {
                    // Mid-window: the next row (one window later) moves the watermark past this row's window, closing it.
                    var end = BaseUnixNs + k++ * windowNs + windowNs / 2;
                    Emit(pipeline, buffer, ref record, end - durationNs, end, source);
                }
                else
                {
                    record.FirstNs = (ulong)startNs;
                    record.LastNs = (ulong)(startNs + durationNs);
                    record.Header.KtimeNs = record.LastNs;
                    rows.Add((startNs + durationNs, record, source));
                }
            }
        }
        if (grouping == CicGrouping.Source)
        {
            rows.Sort((a, b) => a.EndNs.CompareTo(b.EndNs));
            foreach (var (end, record, source) in rows)
            {
                var r = record;
                Emit(pipeline, buffer, ref r, (long)r.FirstNs, end, source);
            }
        }
        pipeline.Flush();
        return result;
    }

    private static void Emit(FeaturePipeline pipeline, RecordBuffer buffer, ref FlowRecord record, long firstNs, long endNs, RecordSource source)
    {
        record.FirstNs = (ulong)firstNs;
        record.LastNs = (ulong)endNs;
        record.Header.KtimeNs = (ulong)endNs;
        buffer.Clear();
        buffer.AddFlow(record);
        pipeline.Process(buffer.Span, source);
    }

    private static int[]? Header(string text, out string? missing)
    {
        var names = text.Split(',').Select(s => s.Trim()).ToList();
        var cols = new int[Required.Length];
        for (var i = 0; i < Required.Length; i++)
        {
            cols[i] = names.FindIndex(n => n.Equals(Required[i], StringComparison.OrdinalIgnoreCase));
            if (cols[i] < 0)
            {
                missing = Required[i];
                return null;
            }
        }
        missing = null;
        return cols;
    }

    private static long HeaderBytes(string s) =>
        long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0 ? v : 0;

    /// <summary>Parses one data row into the flow record it describes (time fields are set by the caller).</summary>
    public static bool TryRow(string text, int[] cols, out FlowRecord record, out string label, out long durationNs, out long startNs,
        out string? problem)
    {
        record = default;
        label = "";
        durationNs = 0;
        startNs = 0;
        var fields = text.Split(',');
        var need = cols.Max() + 1;
        if (fields.Length < need)
        {
            problem = $"{fields.Length} fields, the header names at least {need}";
            return false;
        }
        string F(C c) => fields[cols[(int)c]].Trim();
        if (!IPAddress.TryParse(F(C.SrcIp), out var src) || !IPAddress.TryParse(F(C.DstIp), out var dst))
        {
            problem = $"bad address '{F(C.SrcIp)}' or '{F(C.DstIp)}'";
            return false;
        }
        if (src.AddressFamily != dst.AddressFamily)
        {
            problem = "source and destination are of different address families";
            return false;
        }
        string? err = null;
        long U(C c, long max)
        {
            var s = F(c);
            if (err != null) return 0;
            if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) || double.IsNaN(d) || d < 0 || d > max || d != Math.Floor(d))
            {
                err = $"{Required[(int)c]} '{s}' is not a count between 0 and {max}";
                return 0;
            }
            return (long)d;
        }
        var sport = U(C.SrcPort, 65535);
        var dport = U(C.DstPort, 65535);
        var proto = U(C.Protocol, 255);
        var duration = U(C.Duration, 10L * 24 * 3600 * 1_000_000); // µs, at most ten days
        var fwdPackets = U(C.FwdPackets, uint.MaxValue);
        var bwdPackets = U(C.BwdPackets, uint.MaxValue);
        // CICFlowMeter's header-length sums overflow to negative values in some rows: those count as 0 header bytes.
        var fwdBytes = U(C.FwdLength, long.MaxValue / 4) + HeaderBytes(F(C.FwdHeader));
        var bwdBytes = U(C.BwdLength, long.MaxValue / 4) + HeaderBytes(F(C.BwdHeader));
        var fin = U(C.Fin, uint.MaxValue);
        var syn = U(C.Syn, uint.MaxValue);
        var rst = U(C.Rst, uint.MaxValue);
        var psh = U(C.Psh, uint.MaxValue);
        var ack = U(C.Ack, uint.MaxValue);
        var urg = U(C.Urg, uint.MaxValue);
        var cwr = U(C.Cwr, uint.MaxValue);
        var ece = U(C.Ece, uint.MaxValue);
        problem = err;
        if (problem != null) return false;
        if (!DateTime.TryParseExact(F(C.Timestamp), ["yyyy-MM-dd HH:mm:ss.FFFFFF", "yyyy-MM-dd HH:mm:ss", "d/M/yyyy H:mm", "d/M/yyyy H:mm:ss"],
                CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var ts))
        {
            problem = $"Timestamp '{F(C.Timestamp)}' is not a date and time";
            return false;
        }
        label = F(C.Label);
        if (label.Length == 0)
        {
            problem = "empty Label";
            return false;
        }
        record.Family = src.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? (byte)6 : (byte)4;
        src.TryWriteBytes(record.Saddr, out _);
        dst.TryWriteBytes(record.Daddr, out _);
        record.Sport = (ushort)sport;
        record.Dport = (ushort)dport;
        record.Protocol = (byte)proto;
        record.PacketsFwd = (ulong)fwdPackets;
        record.PacketsRev = (ulong)bwdPackets;
        record.BytesFwd = (ulong)fwdBytes;
        record.BytesRev = (ulong)bwdBytes;
        record.FinCount = (uint)fin;
        record.SynCount = (uint)syn;
        record.RstCount = (uint)rst;
        record.TcpFlags = (byte)((fin > 0 ? 0x01 : 0) | (syn > 0 ? 0x02 : 0) | (rst > 0 ? 0x04 : 0) | (psh > 0 ? 0x08 : 0)
            | (ack > 0 ? 0x10 : 0) | (urg > 0 ? 0x20 : 0) | (ece > 0 ? 0x40 : 0) | (cwr > 0 ? 0x80 : 0));
        record.Reason = fin > 0 || rst > 0 ? FlowEndReason.TcpEnd : FlowEndReason.Idle;
        record.Direction = FlowDirection.Unknown;
        durationNs = duration * 1000;
        startNs = (ts - DateTime.UnixEpoch).Ticks * 100;
        return true;
    }
}
