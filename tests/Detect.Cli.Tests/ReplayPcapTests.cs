using System.Buffers.Binary;
using System.Diagnostics;
using System.Text.Json;
using Detect.Cli.Replay;
using Detect.Testing;

namespace Detect.Cli.Tests;

/// <summary>Capture files read by magic number, damage found with its offset (no kernel needed).</summary>
public sealed class PcapCaptureTests
{
    [Fact]
    public void PcapCapture_SharedCaptures_AreReadByTheirMagicNumber_NotTheirName()
    {
        var dir = Needs.SharedData("pcaps");
        var snmp = PcapCapture.Read(Path.Combine(dir, "amp.UDP.snmp.src161.pcapng"));
        Assert.Equal(CaptureFormat.Pcap, snmp.Format);
        Assert.True(snmp.NameMismatch);
        Assert.Contains("classic pcap despite its name", snmp.ToString(), StringComparison.Ordinal);
        Assert.Equal(4373, snmp.Packets);
        Assert.Null(snmp.DamageOffset);
        var flood = PcapCapture.Read(Path.Combine(dir, "pkt.TCP.synflood.spoofed.pcap"));
        Assert.Equal(37841, flood.Packets);
        Assert.Equal(PcapCapture.LinkEthernet, flood.LinkType);
        Assert.InRange(flood.Duration.TotalSeconds, 23.6, 23.8); // capinfos: 23.683853 s
    }

    [Fact]
    public void PcapCapture_TruncatedPacket_IsReportedWithItsOffset_AndTheIntactPartReadsBackWhole()
    {
        var path = Path.Combine(Path.GetTempPath(), $"detect-pcap-{Guid.NewGuid():N}.pcap");
        var intact = path + ".intact";
        try
        {
            var bytes = Synthetic(packets: 5, frameBytes: 60);
            var third = 24 + 2 * (16 + 60);
            File.WriteAllBytes(path, bytes[..(third + 16 + 30)]); // the third packet cut in its middle
            var c = PcapCapture.Read(path);
            Assert.Equal(2, c.Packets);
            Assert.Equal(third, c.DamageOffset);
            Assert.Contains("cut short", c.Damage, StringComparison.Ordinal);
            Assert.Contains($"damaged at byte offset {third}", c.ToString(), StringComparison.Ordinal);
            c.WriteIntactPart(intact);
            var back = PcapCapture.Read(intact);
            Assert.Equal(2, back.Packets);
            Assert.Null(back.DamageOffset);

            var garbled = (byte[])bytes.Clone();
            BinaryPrimitives.WriteUInt32LittleEndian(garbled.AsSpan(24 + 16 + 60 + 8), 0x7fffffff); // second packet: impossible length
            File.WriteAllBytes(path, garbled);
            var g = PcapCapture.Read(path);
            Assert.Equal(1, g.Packets);
            Assert.Equal(24 + 16 + 60, g.DamageOffset);
            Assert.Contains("impossible", g.Damage, StringComparison.Ordinal);

            File.WriteAllText(path, "this is not a capture");
            var e = Assert.Throws<InvalidDataException>(() => PcapCapture.Read(path));
            Assert.Contains("magic number", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
            File.Delete(intact);
        }
    }

    /// <summary>A classic little-endian pcap of Ethernet frames (IPv4/UDP from 198.51.100.1 to .2, one port each).</summary>
    internal static byte[] Synthetic(int packets, int frameBytes)
    {
        var b = new byte[24 + packets * (16 + frameBytes)];
        BinaryPrimitives.WriteUInt32LittleEndian(b, 0xa1b2c3d4);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(4), 2);
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(6), 4);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(16), 65535);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(20), 1);
        for (var i = 0; i < packets; i++)
        {
            var at = 24 + i * (16 + frameBytes);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at), 1_700_000_000 + (uint)i);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at + 8), (uint)frameBytes);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at + 12), (uint)frameBytes);
            var f = b.AsSpan(at + 16, frameBytes);
            f[..6].Fill(0x02);
            f[6..12].Fill(0x04);
            BinaryPrimitives.WriteUInt16BigEndian(f[12..], 0x0800);
            var ip = f[14..];
            ip[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(frameBytes - 14));
            ip[8] = 64;
            ip[9] = 17;
            ip[12] = 198; ip[13] = 51; ip[14] = 100; ip[15] = 1;
            ip[16] = 198; ip[17] = 51; ip[18] = 100; ip[19] = 2;
            var udp = ip[20..];
            BinaryPrimitives.WriteUInt16BigEndian(udp, (ushort)(40000 + i));
            BinaryPrimitives.WriteUInt16BigEndian(udp[2..], 53);
            BinaryPrimitives.WriteUInt16BigEndian(udp[4..], (ushort)(frameBytes - 34));
        }
        return b;
    }
}

/// <summary>`detect replay pcap` with the real flow sensor in test namespaces, driven as a user does.</summary>
[Trait("Needs", "Kernel")]
public sealed class ReplayPcapTests
{
    /// <summary>Per capture: packets in the file, packets the sensor counted, flow records, sources (= windows: each replay fits in one window).</summary>
    private static readonly (string File, long Packets, long Counted, long Flows, long Sources)[] Captures =
    [
        // 4 frames of amp.TCP.reflection are not IP (tshark: "not ip and not ipv6" = 4).
        ("amp.TCP.reflection.SYNACK.pcap", 8000, 7996, 7834, 7055),
        ("amp.UDP.snmp.src161.pcapng", 4373, 4373, 4293, 4276),
        // One source scanning 1,000 ports; 4 connections end (RST) and go on, hence 1,003 records for tshark's 1,001 conversations.
        ("masscan_tcp_0_1000.pcap", 1005, 1005, 1003, 1),
        // nmap reuses source ports: a 5-tuple that ended (TcpEnd) and starts again is a new flow.
        ("nmap_80_all.pcap", 431, 431, 53, 2),
        ("nmap_80_vanilla.pcap", 11, 11, 3, 1),
        ("nmap_80_w_service_detection.pcap", 154, 154, 31, 2),
        // tshark: 37,669 TCP conversations from 37,623 source addresses.
        ("pkt.TCP.synflood.spoofed.pcap", 37841, 37841, 37669, 37623),
        ("whois.pcap", 11, 11, 1, 1),
    ];

    private static JsonElement Replay(params string[] args)
    {
        var (code, stdout, stderr) = Cli.Run(TimeSpan.FromMinutes(3), ["replay", "pcap", .. args]);
        TestContext.Current.TestOutputHelper?.WriteLine(stderr);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        AssertNoReplayNamespaces();
        return JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]).RootElement.Clone();
    }

    internal static void AssertNoReplayNamespaces()
    {
        var left = Directory.Exists("/run/netns") ? Directory.GetFiles("/run/netns", "detect-replay-*").Select(Path.GetFileName).ToList() : [];
        // Another replay may run at the same time; ours are gone once the process ended.
        Assert.DoesNotContain(left, n => n!.Split('-') is { Length: > 3 } p && int.TryParse(p[2], out var pid) && !Directory.Exists($"/proc/{pid}"));
    }

    [Fact]
    public void ReplayPcap_EveryCapture_GivesItsExpectedFlowsAndWindows_AndLeavesNoNamespaceBehind()
    {
        Needs.KernelBtf();
        Needs.Program("tcpreplay");
        var dir = Needs.SharedData("pcaps");
        var json = Replay(dir);
        var captures = json.GetProperty("captures").EnumerateArray().ToDictionary(c => c.GetProperty("label").GetString()!);
        long windows = 0;
        foreach (var (file, packets, counted, flows, sources) in Captures)
        {
            var c = captures[file];
            Assert.True(c.GetProperty("skipped").ValueKind == JsonValueKind.Null, $"{file}: {c.GetProperty("skipped")}");
            Assert.Equal(packets, c.GetProperty("packets_in_file").GetInt64());
            Assert.Equal(packets, c.GetProperty("packets_sent").GetInt64());
            Assert.Equal(packets, c.GetProperty("rx_packets").GetInt64());
            Assert.Equal(counted, c.GetProperty("sensor_packets").GetInt64());
            Assert.Equal(0, c.GetProperty("uncounted_packets").GetInt64());
            Assert.Equal(flows, c.GetProperty("flow_records").GetInt64());
            Assert.Equal(sources, c.GetProperty("sources").GetInt64());
            Assert.Equal(sources, c.GetProperty("windows").GetInt64());
            windows += sources;
        }
        Assert.True(captures["amp.UDP.snmp.src161.pcapng"].GetProperty("name_mismatch").GetBoolean());
        Assert.Equal("pcap", captures["amp.UDP.snmp.src161.pcapng"].GetProperty("format").GetString());
        Assert.Equal(windows, json.GetProperty("windows").GetInt64());
        Assert.Equal(0, json.GetProperty("late_records").GetInt64());
        Assert.Equal(0, json.GetProperty("decode_errors").GetInt64());
    }

    [Fact]
    public void ReplayPcap_SynFlood_MatchesTsharksConversationsAndSources()
    {
        Needs.KernelBtf();
        Needs.Program("tcpreplay");
        var tshark = Needs.Program("tshark");
        var file = Path.Combine(Needs.SharedData("pcaps"), "pkt.TCP.synflood.spoofed.pcap");
        var conversations = NetNs.Run(tshark, "-r", file, "-q", "-z", "conv,tcp").Stdout.Split('\n').Count(l => l.Contains("<->", StringComparison.Ordinal));
        var sources = NetNs.Run(tshark, "-r", file, "-T", "fields", "-e", "ip.src").Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Distinct().Count();
        var c = Replay(file).GetProperty("captures")[0];
        Assert.Equal(conversations, c.GetProperty("flow_records").GetInt64());
        Assert.Equal(sources, c.GetProperty("sources").GetInt64());
        Assert.Equal(sources, c.GetProperty("windows").GetInt64());
    }

    [Fact]
    public void ReplayPcap_DamagedCapture_IsReportedWithItsOffset_ItsIntactPartReplayed_AndTheNextCaptureStillRuns()
    {
        Needs.KernelBtf();
        Needs.Program("tcpreplay");
        var dir = Path.Combine(Path.GetTempPath(), $"detect-pcaps-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var whole = PcapCaptureTests.Synthetic(packets: 6, frameBytes: 60);
            var cut = 24 + 4 * (16 + 60) + 10; // the fifth packet's header cut short
            File.WriteAllBytes(Path.Combine(dir, "a-damaged.pcap"), whole[..cut]);
            File.WriteAllText(Path.Combine(dir, "b-not-a-capture.pcap"), "hello");
            File.WriteAllBytes(Path.Combine(dir, "c-whole.pcap"), whole);
            var captures = Replay(dir).GetProperty("captures").EnumerateArray().ToDictionary(c => c.GetProperty("label").GetString()!);

            var damaged = captures["a-damaged.pcap"];
            Assert.Equal(24 + 4 * (16 + 60), damaged.GetProperty("damaged_at").GetInt64());
            Assert.Equal(4, damaged.GetProperty("packets_sent").GetInt64());
            Assert.Equal(4, damaged.GetProperty("sensor_packets").GetInt64());
            Assert.Equal(4, damaged.GetProperty("flow_records").GetInt64()); // one UDP flow per source port
            Assert.Equal(1, damaged.GetProperty("windows").GetInt64());

            Assert.Contains("magic number", captures["b-not-a-capture.pcap"].GetProperty("skipped").GetString(), StringComparison.Ordinal);

            var next = captures["c-whole.pcap"];
            Assert.Equal(6, next.GetProperty("sensor_packets").GetInt64());
            Assert.Equal(6, next.GetProperty("flow_records").GetInt64());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task ReplayPcap_InterruptedWithCtrlC_RemovesItsNamespacesAndExits()
    {
        Needs.KernelBtf();
        Needs.Program("tcpreplay");
        var file = Path.Combine(Needs.SharedData("pcaps"), "pkt.TCP.synflood.spoofed.pcap");
        using var replay = Cli.Start("replay", "pcap", file, "--speed", "1"); // real time: 24 s of sending
        var ours = await WaitForNamespaces(replay.Process.Id, TimeSpan.FromSeconds(60));
        Assert.NotEmpty(ours);
        await Task.Delay(1000, TestContext.Current.CancellationToken);
        Signal(replay.Process.Id, "INT");
        var (code, _, stderr) = replay.Finish(TimeSpan.FromSeconds(60));
        Assert.True(code == 130, $"exit {code}: {stderr}");
        Assert.Contains("stopped (Ctrl-C)", stderr, StringComparison.Ordinal);
        foreach (var ns in ours) Assert.False(File.Exists(Path.Combine("/run/netns", ns)), $"{ns} is left behind");
    }

    private static async Task<List<string>> WaitForNamespaces(int pid, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            var ours = Directory.Exists("/run/netns")
                ? Directory.GetFiles("/run/netns", $"detect-replay-{pid}-*").Select(p => Path.GetFileName(p)!).ToList()
                : [];
            if (ours.Count == 2) return ours;
            await Task.Delay(100, TestContext.Current.CancellationToken);
        }
        return [];
    }

    internal static void Signal(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture) } })!;
        kill.WaitForExit();
    }

}
