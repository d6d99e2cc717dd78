using System.Globalization;

namespace Detect.Models.Scoring;

/// <summary>
/// Feature names in words an analyst reads ("fstat calls: 67% of calls, normally 0-1%"), with the
/// column name kept at the end for whoever wants to look it up (pipeline FEATURES.md). Shares are
/// shown as percentages of what they are shares of; everything else in its own unit.
/// </summary>
public static class FeatureWords
{
    private static readonly Dictionary<string, (string Words, string? ShareOf)> Known = new(StringComparer.Ordinal)
    {
        // syscall family
        ["f_calls"] = ("calls in the window", null),
        ["f_calls_per_s"] = ("calls per second", null),
        ["f_active_s"] = ("seconds active in the window", null),
        ["f_distinct_syscalls"] = ("distinct syscalls", null),
        ["f_failed_ratio"] = ("failed calls", "calls with a known result"),
        ["f_failed"] = ("failed calls", null),
        ["f_execs"] = ("execs", null),
        ["f_forks"] = ("forks", null),
        ["f_exits"] = ("exits", null),
        ["f_class_entropy"] = ("spread of calls over classes (bits)", null),
        ["f_bigram_distinct"] = ("distinct call pairs", null),
        ["f_trigram_distinct"] = ("distinct call triples", null),
        ["f_bigram_distinct_ratio"] = ("distinct call pairs", "call pairs"),
        ["f_trigram_distinct_ratio"] = ("distinct call triples", "call triples"),
        ["f_bigram_entropy"] = ("spread of call pairs (bits)", null),
        ["f_trigram_entropy"] = ("spread of call triples (bits)", null),
        [ModelScorer.SequencePiecesFeature] = ("breaks from normal call sequences per call", null),
        // flow family (per source address)
        ["f_flows"] = ("flows", null),
        ["f_flows_per_s"] = ("flows per second", null),
        ["f_tcp_ratio"] = ("TCP flows", "flows"),
        ["f_udp_ratio"] = ("UDP flows", "flows"),
        ["f_icmp_ratio"] = ("ICMP flows", "flows"),
        ["f_distinct_dst_addrs"] = ("distinct destination addresses", null),
        ["f_distinct_dst_ports"] = ("distinct destination ports", null),
        ["f_distinct_src_ports"] = ("distinct source ports", null),
        ["f_dst_addrs_per_flow"] = ("distinct destination addresses per flow", null),
        ["f_dst_ports_per_flow"] = ("distinct destination ports per flow", null),
        ["f_src_ports_per_flow"] = ("distinct source ports per flow", null),
        ["f_dst_port_entropy"] = ("spread over destination ports (bits)", null),
        ["f_top_dst_port_share"] = ("flows to the busiest destination port group", "flows"),
        ["f_low_dst_port_ratio"] = ("flows to ports below 1024", "flows"),
        ["f_half_open_ratio"] = ("half-open TCP flows (SYN, no reply)", "TCP flows"),
        ["f_rst_ratio"] = ("flows reset (RST)", "flows"),
        ["f_fin_ratio"] = ("flows closed (FIN)", "flows"),
        ["f_unanswered_ratio"] = ("unanswered flows", "flows"),
        ["f_single_packet_ratio"] = ("single-packet flows", "flows"),
        ["f_packets_fwd"] = ("packets sent", null),
        ["f_packets_rev"] = ("packets received back", null),
        ["f_bytes_fwd"] = ("bytes sent", null),
        ["f_bytes_rev"] = ("bytes received back", null),
        ["f_packets_per_flow"] = ("packets per flow", null),
        ["f_bytes_per_flow"] = ("bytes per flow", null),
        ["f_bytes_per_packet_fwd"] = ("bytes per packet sent", null),
        ["f_bytes_per_packet_rev"] = ("bytes per packet received", null),
        ["f_rev_fwd_bytes_ratio"] = ("bytes back per byte sent", null),
        ["f_rev_fwd_packets_ratio"] = ("packets back per packet sent", null),
        ["f_duration_mean_s"] = ("mean flow duration (s)", null),
        ["f_duration_max_s"] = ("longest flow (s)", null),
        ["f_syn_per_flow"] = ("SYN packets per flow", null),
        ["f_fin_per_flow"] = ("FIN packets per flow", null),
        ["f_rst_per_flow"] = ("RST packets per flow", null),
        ["f_psh_ratio"] = ("flows with PSH", "flows"),
        ["f_ack_ratio"] = ("flows with ACK", "flows"),
        ["f_urg_ratio"] = ("flows with URG", "flows"),
        ["f_ece_ratio"] = ("flows with ECE", "flows"),
        ["f_cwr_ratio"] = ("flows with CWR", "flows"),
        ["f_packets_fwd_per_flow"] = ("packets sent per flow", null),
        ["f_packets_rev_per_flow"] = ("packets back per flow", null),
        ["f_bytes_fwd_per_flow"] = ("bytes sent per flow", null),
        ["f_bytes_rev_per_flow"] = ("bytes back per flow", null),
        ["f_packets_per_s"] = ("packets per second while flows last", null),
        ["f_bytes_per_s"] = ("bytes per second while flows last", null),
        ["f_gap_mean_s"] = ("mean gap between a flow's packets (s)", null),
        ["f_registered_dst_port_ratio"] = ("flows to ports 1024-49151", "flows"),
        ["f_dynamic_dst_port_ratio"] = ("flows to ports 49152 and up", "flows"),
        ["f_low_src_port_ratio"] = ("flows from ports below 1024", "flows"),
        ["f_dynamic_src_port_ratio"] = ("flows from ports 49152 and up", "flows"),
    };

    /// <summary>What a feature measures, and what it is a share of (null when it is no share).</summary>
    public static (string Words, string? ShareOf) Of(string feature)
    {
        ArgumentNullException.ThrowIfNull(feature);
        if (Known.TryGetValue(feature, out var known)) return known;
        if (feature.StartsWith("f_sc_", StringComparison.Ordinal)) return ($"{feature[5..]} calls", "calls");
        if (feature.StartsWith("f_class_", StringComparison.Ordinal)) return ($"{feature[8..].Replace('_', ' ')} calls", "calls");
        if (feature.StartsWith("f_ng2_", StringComparison.Ordinal)) return ($"call pairs hashed to bucket {feature[6..]}", "call pairs");
        if (feature.StartsWith("f_ng3_", StringComparison.Ordinal)) return ($"call triples hashed to bucket {feature[6..]}", "call triples");
        var bare = feature.StartsWith("f_", StringComparison.Ordinal) ? feature[2..] : feature;
        return (bare.Replace('_', ' '), bare.EndsWith("_ratio", StringComparison.Ordinal) ? "the whole" : null);
    }

    /// <summary>
    /// "fstat calls: 67% of calls, normally 0-1% (f_sc_fstat)"; with a detail (what the window's value
    /// was made of), after the words: "call pairs hashed to bucket 022 (read→mmap ×12): 33% of call pairs, ...".
    /// </summary>
    public static string Describe(in FeatureContribution c, string? detail = null)
    {
        var (words, shareOf) = Of(c.Feature);
        if (!string.IsNullOrEmpty(detail)) words = $"{words} ({detail})";
        return shareOf != null
            ? $"{words}: {Percent(c.Value)} of {shareOf}, normally {Percent(c.NormalLow, sign: false)}-{Percent(c.NormalHigh)} ({c.Feature})"
            : $"{words}: {Number(c.Value)}, normally {Number(c.NormalLow)}-{Number(c.NormalHigh)} ({c.Feature})";
    }

    private static string Percent(float v, bool sign = true)
    {
        var p = v * 100;
        var text = p == MathF.Round(p) || Math.Abs(p) >= 10 ? p.ToString("0", CultureInfo.InvariantCulture) : p.ToString("0.#", CultureInfo.InvariantCulture);
        return sign ? text + "%" : text;
    }

    internal static string Number(float v) =>
        Math.Abs(v) >= 1000 || v == MathF.Round(v) ? v.ToString("#,0.##", CultureInfo.InvariantCulture) : v.ToString("0.00##", CultureInfo.InvariantCulture);
}
