using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Apache.Arrow;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Windows;
using Detect.Records;

namespace Detect.Pipeline.Features;

/// <summary>A source address (the side that sent a flow's first packet) on a host, plus the labelled sample for replays.</summary>
[StructLayout(LayoutKind.Sequential)]
internal readonly struct SourceKey(int host, int sample, byte family, ulong addrLo, ulong addrHi) : IEntityKey<SourceKey>
{
    public readonly ulong AddrLo = addrLo;
    public readonly ulong AddrHi = addrHi;
    public readonly int HostIdx = host;
    public readonly int Sample = sample;
    public readonly byte Family = family;

    public int HostIndex => HostIdx;

    public int Hash
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            var h = (AddrLo * 0x9E3779B97F4A7C15UL) ^ (AddrHi * 0xC2B2AE3D27D4EB4FUL) ^ (((ulong)(uint)HostIdx << 32 | (uint)Sample) * 0x165667B19E3779F9UL) ^ Family;
            h ^= h >> 31;
            h *= 0xBF58476D1CE4E5B9UL;
            return (int)(h >> 32) ^ (int)h;
        }
    }

    public bool Equals(SourceKey o) => AddrLo == o.AddrLo && AddrHi == o.AddrHi && HostIdx == o.HostIdx && Sample == o.Sample && Family == o.Family;
    public override bool Equals(object? obj) => obj is SourceKey k && Equals(k);
    public override int GetHashCode() => Hash;
}

internal struct NoState;

/// <summary>One source address's flows in one window.</summary>
internal struct FlowAcc : IAccumulator
{
    public int RecordCount, LabelId;

    public int Records { readonly get => RecordCount; set => RecordCount = value; }
    public int Label { readonly get => LabelId; set => LabelId = value; }

    public long Flows, Tcp, Udp, Icmp, HalfOpen, Rst, Fin, Unanswered, SinglePacket, LowPort,
        PacketsFwd, PacketsRev, BytesFwd, BytesRev, DurationSumNs, DurationMaxNs, FirstNs, LastNs;
    // flow/2
    public long SynPackets, FinPackets, RstPackets, Psh, Ack, Urg, Ece, Cwr, RegisteredPort, DynamicPort, LowSrcPort, DynamicSrcPort,
        Gaps, RatedPackets, RatedBytes;
    public Bitmap1024 DstAddrs, DstPorts, SrcPorts;
    public Counts32 PortBuckets;
}

/// <summary>The `flow` family: one row per source address per window from flow records (schema flow/2, FEATURES.md).</summary>
internal sealed class FlowFamily : WindowedFamily<SourceKey, NoState, FlowAcc>
{
    public const int Version = 2;
    private const byte Fin = 0x01, Syn = 0x02, Rst = 0x04, Psh = 0x08, Ack = 0x10, Urg = 0x20, Ece = 0x40, Cwr = 0x80;

    public static readonly string[] Names =
    [
        "f_flows", "f_flows_per_s", "f_tcp_ratio", "f_udp_ratio", "f_icmp_ratio",
        "f_distinct_dst_addrs", "f_distinct_dst_ports", "f_distinct_src_ports",
        "f_dst_addrs_per_flow", "f_dst_ports_per_flow", "f_src_ports_per_flow",
        "f_dst_port_entropy", "f_top_dst_port_share", "f_low_dst_port_ratio",
        "f_half_open_ratio", "f_rst_ratio", "f_fin_ratio", "f_unanswered_ratio", "f_single_packet_ratio",
        "f_packets_fwd", "f_packets_rev", "f_bytes_fwd", "f_bytes_rev",
        "f_packets_per_flow", "f_bytes_per_flow", "f_bytes_per_packet_fwd", "f_bytes_per_packet_rev", "f_rev_fwd_bytes_ratio",
        "f_duration_mean_s", "f_duration_max_s", "f_active_s",
        // flow/2: per-flow shapes, flags, rates and port classes (from what the flow record carries)
        "f_syn_per_flow", "f_fin_per_flow", "f_rst_per_flow",
        "f_psh_ratio", "f_ack_ratio", "f_urg_ratio", "f_ece_ratio", "f_cwr_ratio",
        "f_packets_fwd_per_flow", "f_packets_rev_per_flow", "f_bytes_fwd_per_flow", "f_bytes_rev_per_flow", "f_rev_fwd_packets_ratio",
        "f_packets_per_s", "f_bytes_per_s", "f_gap_mean_s",
        "f_registered_dst_port_ratio", "f_dynamic_dst_port_ratio", "f_low_src_port_ratio", "f_dynamic_src_port_ratio",
    ];

    public static readonly FeatureSchema Schema = new(FeatureFamily.Flow, Version, Names);

    private readonly FeatureBatchBuilder _builder;
    private readonly Action<FeatureFamily, RecordBatch> _sink;
    private readonly int _maxRows;
    private readonly float _windowSeconds;

    public FlowFamily(PipelineOptions options, LabelTable labels, Action<FeatureFamily, RecordBatch> sink)
        : base(options, options.MaxSources, labels)
    {
        _builder = new FeatureBatchBuilder(Schema);
        _sink = sink;
        _maxRows = options.MaxBatchRows;
        _windowSeconds = (float)options.Window.TotalSeconds;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Mix(uint v) => (int)((v * 0x9E3779B1u) >> 22);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int PortBucket(ushort port) => (int)(((uint)port * 0x9E3779B1u) >> 27);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static SourceKey KeyOf(in FlowRecord r, int host, int sample)
    {
        ReadOnlySpan<byte> s = r.Saddr;
        return r.Family == 6
            ? new SourceKey(host, sample, 6, BinaryPrimitives.ReadUInt64LittleEndian(s), BinaryPrimitives.ReadUInt64LittleEndian(s[8..]))
            : new SourceKey(host, sample, 4, BinaryPrimitives.ReadUInt32LittleEndian(s), 0);
    }

    /// <summary>Prefetch for a flow record a few places ahead (see <see cref="WindowedFamily{TKey,TEnt,TAcc}.Prefetch"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void PrefetchFlow(in FlowRecord r, int host, int sample, int depth)
    {
        var key = KeyOf(in r, host, sample);
        var acc = Prefetch(in key, depth, out _);
        if (acc < 0) return;
        ref var a = ref Acc(acc);
        var p = (byte*)Unsafe.AsPointer(ref a);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(p);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + 64);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + 128);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + 192);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + 256);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.DstPorts[Mix(r.Dport) >> 6]));
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.SrcPorts[Mix(r.Sport) >> 6]));
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.PortBuckets[PortBucket(r.Dport)]));
    }

    public void OnFlow(in FlowRecord r, int host, int sample, long offsetNs, int label)
    {
        var key = KeyOf(in r, host, sample);
        var eventNs = (long)r.Header.KtimeNs + offsetNs;
        var acc = Resolve(in key, eventNs, label, out _, out var isNew);
        if (acc < 0) return;
        ref var a = ref Acc(acc);
        if (isNew) a.FirstNs = eventNs;
        if (eventNs > a.LastNs) a.LastNs = eventNs;
        if (eventNs < a.FirstNs) a.FirstNs = eventNs;

        a.Flows++;
        var tcp = r.Protocol == 6;
        if (tcp) a.Tcp++;
        else if (r.Protocol == 17) a.Udp++;
        else if (r.Protocol is 1 or 58) a.Icmp++;
        var flags = r.TcpFlags;
        var syn = r.SynCount > 0 || (flags & Syn) != 0;
        if (tcp && syn && r.PacketsRev == 0) a.HalfOpen++;
        if (r.RstCount > 0 || (flags & Rst) != 0) a.Rst++;
        if (r.FinCount > 0 || (flags & Fin) != 0) a.Fin++;
        if (r.PacketsRev == 0) a.Unanswered++;
        if (r.PacketsFwd + r.PacketsRev <= 1) a.SinglePacket++;
        if (r.Dport < 1024) a.LowPort++;
        else if (r.Dport < 49152) a.RegisteredPort++;
        else a.DynamicPort++;
        if (r.Sport < 1024) a.LowSrcPort++;
        else if (r.Sport >= 49152) a.DynamicSrcPort++;
        a.SynPackets += r.SynCount;
        a.FinPackets += r.FinCount;
        a.RstPackets += r.RstCount;
        if ((flags & Psh) != 0) a.Psh++;
        if ((flags & Ack) != 0) a.Ack++;
        if ((flags & Urg) != 0) a.Urg++;
        if ((flags & Ece) != 0) a.Ece++;
        if ((flags & Cwr) != 0) a.Cwr++;
        var flowPackets = (long)(r.PacketsFwd + r.PacketsRev);
        if (flowPackets > 1) a.Gaps += flowPackets - 1;
        a.PacketsFwd += (long)r.PacketsFwd;
        a.PacketsRev += (long)r.PacketsRev;
        a.BytesFwd += (long)r.BytesFwd;
        a.BytesRev += (long)r.BytesRev;
        var duration = r.LastNs > r.FirstNs ? (long)(r.LastNs - r.FirstNs) : 0;
        a.DurationSumNs += duration;
        if (duration > a.DurationMaxNs) a.DurationMaxNs = duration;
        if (duration > 0)
        {
            // Rates over the flows that lasted: a single-packet flow has no rate.
            a.RatedPackets += flowPackets;
            a.RatedBytes += (long)(r.BytesFwd + r.BytesRev);
        }

        ReadOnlySpan<byte> d = r.Daddr;
        var dst = r.Family == 6
            ? BinaryPrimitives.ReadUInt32LittleEndian(d) ^ BinaryPrimitives.ReadUInt32LittleEndian(d[4..]) * 31 ^ BinaryPrimitives.ReadUInt32LittleEndian(d[8..]) * 131 ^ BinaryPrimitives.ReadUInt32LittleEndian(d[12..]) * 1031
            : BinaryPrimitives.ReadUInt32LittleEndian(d);
        FeatureMath.SetBit(ref a.DstAddrs, Mix(dst));
        FeatureMath.SetBit(ref a.DstPorts, Mix(r.Dport));
        FeatureMath.SetBit(ref a.SrcPorts, Mix(r.Sport));
        a.PortBuckets[PortBucket(r.Dport)]++;
    }

    protected override int PendingRows => _builder.Rows;
    protected override int MaxPendingRows => _maxRows;

    protected override void FlushRows()
    {
        if (_builder.Rows == 0) return;
        var batch = _builder.Build();
        try
        {
            _sink(FeatureFamily.Flow, batch);
        }
        finally
        {
            _builder.Clear();
        }
    }

    /// <summary>An address as text (IPv4 dotted quad; IPv6 through IPAddress, off the hot path).</summary>
    internal static int FormatAddress(in SourceKey key, Span<byte> dest)
    {
        Span<byte> raw = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(raw, key.AddrLo);
        BinaryPrimitives.WriteUInt64LittleEndian(raw[8..], key.AddrHi);
        var ip = key.Family == 6 ? new System.Net.IPAddress(raw) : new System.Net.IPAddress(raw[..4]);
        return ip.TryFormat(dest, out var written) ? written : 0;
    }

    protected override void EmitRow(in SourceKey key, int slot, ref FlowAcc a, long windowStartNs)
    {
        var recordCount = a.RecordCount;
        var labelId = a.LabelId;
        Span<byte> entity = stackalloc byte[64];
        var n = FormatAddress(in key, entity);
        var b = _builder;
        var row = b.AddRow(Labels.HostUtf8(key.HostIdx), entity[..n], windowStartNs, windowStartNs + WindowNs, recordCount,
            Labels.LabelUtf8(labelId), Labels.SampleUtf8(labelId));
        var flows = a.Flows;
        var dAddrs = FeatureMath.DistinctEstimate(a.DstAddrs);
        var dPorts = FeatureMath.DistinctEstimate(a.DstPorts);
        var sPorts = FeatureMath.DistinctEstimate(a.SrcPorts);
        ReadOnlySpan<uint> buckets = a.PortBuckets;
        uint top = 0;
        foreach (var c in buckets) top = Math.Max(top, c);
        var packets = a.PacketsFwd + a.PacketsRev;
        var i = 0;
        b.Set(i++, row, flows);
        b.Set(i++, row, flows / _windowSeconds);
        b.Set(i++, row, FeatureMath.Ratio(a.Tcp, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Udp, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Icmp, flows));
        b.Set(i++, row, dAddrs);
        b.Set(i++, row, dPorts);
        b.Set(i++, row, sPorts);
        b.Set(i++, row, flows > 0 ? Math.Min(1f, dAddrs / flows) : 0f);
        b.Set(i++, row, flows > 0 ? Math.Min(1f, dPorts / flows) : 0f);
        b.Set(i++, row, flows > 0 ? Math.Min(1f, sPorts / flows) : 0f);
        b.Set(i++, row, FeatureMath.Entropy(buckets, flows));
        b.Set(i++, row, FeatureMath.Ratio(top, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.LowPort, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.HalfOpen, a.Tcp));
        b.Set(i++, row, FeatureMath.Ratio(a.Rst, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Fin, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Unanswered, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.SinglePacket, flows));
        b.Set(i++, row, a.PacketsFwd);
        b.Set(i++, row, a.PacketsRev);
        b.Set(i++, row, a.BytesFwd);
        b.Set(i++, row, a.BytesRev);
        b.Set(i++, row, FeatureMath.Ratio(packets, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.BytesFwd + a.BytesRev, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.BytesFwd, a.PacketsFwd));
        b.Set(i++, row, FeatureMath.Ratio(a.BytesRev, a.PacketsRev));
        b.Set(i++, row, (float)(a.BytesRev / (a.BytesFwd + 1.0)));
        b.Set(i++, row, flows > 0 ? (float)(a.DurationSumNs / 1e9 / flows) : 0f);
        b.Set(i++, row, a.DurationMaxNs / 1e9f);
        b.Set(i++, row, (a.LastNs - a.FirstNs) / 1e9f);
        // flow/2
        b.Set(i++, row, FeatureMath.Ratio(a.SynPackets, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.FinPackets, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.RstPackets, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Psh, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Ack, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Urg, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Ece, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.Cwr, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.PacketsFwd, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.PacketsRev, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.BytesFwd, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.BytesRev, flows));
        b.Set(i++, row, (float)(a.PacketsRev / (a.PacketsFwd + 1.0)));
        var ratedSeconds = a.DurationSumNs / 1e9;
        b.Set(i++, row, ratedSeconds > 0 ? (float)(a.RatedPackets / ratedSeconds) : 0f);
        b.Set(i++, row, ratedSeconds > 0 ? (float)(a.RatedBytes / ratedSeconds) : 0f);
        b.Set(i++, row, a.Gaps > 0 ? (float)(ratedSeconds / a.Gaps) : 0f);
        b.Set(i++, row, FeatureMath.Ratio(a.RegisteredPort, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.DynamicPort, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.LowSrcPort, flows));
        b.Set(i++, row, FeatureMath.Ratio(a.DynamicSrcPort, flows));
    }
}
