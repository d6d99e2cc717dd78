using System.Diagnostics;
using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Detect.Records;
using Detect.Sensors.Flows;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// The flow sensor in the real kernel, on a veth pair between two namespaces this test makes
/// (and deletes). The veth's own kernel counters are the reference: the pair carries nothing but
/// the test's traffic (IPv6 off, static neighbours), and one skb is one packet (gso_max_segs 1)
/// unless a test turns offloads on.
/// </summary>
[Trait("Needs", "Kernel")]
[Collection(NetworkCollection.Name)]
public sealed class FlowTests
{
    private static FlowSensor StartSensor(FlowSensorOptions? options = null)
    {
        Needs.KernelBtf();
        return FlowSensor.Start(options ?? new FlowSensorOptions());
    }

    /// <summary>Drains (and sweeps) until <paramref name="done"/> holds for what arrived, or the time is up.</summary>
    private static List<FlowRecord> Collect(FlowSensor sensor, Func<List<FlowRecord>, bool> done, TimeSpan timeout, bool sweep = true)
    {
        var records = new List<FlowRecord>();
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (sweep) sensor.Sweep();
            sensor.DrainRecords(records);
            if (done(records) || clock.Elapsed > timeout) return records;
            sensor.WaitForRecords(TimeSpan.FromMilliseconds(100));
        }
    }

    private static bool IsTcp(in FlowRecord r, int port) => r.Protocol == 6 && (r.Dport == port || r.Sport == port);

    private static void Log(string text) => TestContext.Current.TestOutputHelper?.WriteLine(text);

    private static string Show(in FlowRecord r) =>
        $"{r.Reason} {r.Protocol} {r.SourceAddress}:{r.Sport} -> {r.DestinationAddress}:{r.Dport} dir {r.Direction} " +
        $"fwd {r.PacketsFwd}p/{r.BytesFwd}B rev {r.PacketsRev}p/{r.BytesRev}B syn {r.SynCount} fin {r.FinCount} rst {r.RstCount} " +
        $"flags 0x{r.TcpFlags:x2} pid {r.Pid} cookie {r.SocketCookie} cgroup {r.CgroupId} if {r.Ifindex}";

    [Fact]
    public void Flow_TcpExchange_YieldsOneRecordWithExactCountsEachWayAndTheTcpEnd()
    {
        using var net = NetNs.Create();
        using var sensor = StartSensor(new FlowSensorOptions { IdleTimeout = TimeSpan.FromSeconds(30), TcpLinger = TimeSpan.FromMilliseconds(300) });
        var watched = sensor.Attach(net.A.Interface, net.A.Netns);
        var before = net.Counters(net.A);

        const int Up = 300_000, Down = 120_000;
        var port = NetTraffic.FreePort();
        var clientPort = NetTraffic.TcpExchange(net.A, net.B, port, Up, Down).ClientPort;

        var records = Collect(sensor, rs => rs.Any(r => IsTcp(r, port) && r.Reason == FlowEndReason.TcpEnd), TimeSpan.FromSeconds(10), sweep: false);
        // Everything still in the table goes out at stop: a packet of this connection that came after
        // its TCP-end record (a last ACK later than the linger on a loaded machine) is in a record too.
        sensor.Stop();
        sensor.DrainRecords(records);
        var link = net.Counters(net.A) - before;
        foreach (var r in records) Log(Show(r));
        Log($"veth {net.A.Interface}: {link}");

        var flow = Assert.Single(records, r => IsTcp(r, port) && r.Reason == FlowEndReason.TcpEnd);
        Assert.Equal(FlowDirection.Egress, flow.Direction);
        Assert.Equal(4, flow.Family);
        Assert.Equal(net.A.Address, flow.SourceAddress);
        Assert.Equal(net.B.Address, flow.DestinationAddress);
        Assert.Equal(clientPort, flow.Sport);
        Assert.Equal(port, flow.Dport);
        Assert.Equal(watched.Ifindex, (int)flow.Ifindex);
        // Exact: what the veth sent is the forward direction, what it received the reverse
        // (veth counters count the 14-byte Ethernet header too), over this connection's records.
        var mine = records.Where(r => IsTcp(r, port)).ToList();
        Assert.Equal(link.TxPackets, mine.Sum(r => (long)r.PacketsFwd));
        Assert.Equal(link.TxBytes - 14 * link.TxPackets, mine.Sum(r => (long)r.BytesFwd));
        Assert.Equal(link.RxPackets, mine.Sum(r => (long)r.PacketsRev));
        Assert.Equal(link.RxBytes - 14 * link.RxPackets, mine.Sum(r => (long)r.BytesRev));
        Assert.True(mine.Count <= 2, $"{mine.Count} records for one connection");
        Assert.True(flow.BytesFwd > Up && flow.BytesRev > Down, "payload is part of the L3 bytes");
        Assert.Equal(2u, flow.SynCount); // SYN and SYN-ACK
        Assert.Equal(2u, flow.FinCount);
        Assert.Equal(0u, flow.RstCount);
        Assert.Equal(0x13, flow.TcpFlags & 0x17); // FIN, SYN, ACK; no RST
        Assert.True(flow.FirstNs > 0 && flow.LastNs >= flow.FirstNs);
        // Attribution: the client socket is this process's (the connect went through SYN_SENT here).
        Assert.Equal((uint)Environment.ProcessId, flow.Pid);
        Assert.NotEqual(0UL, flow.SocketCookie);
        Assert.NotEqual(0UL, flow.CgroupId);

        // Nothing counted twice, nothing lost: every packet seen is in a record.
        var stats = sensor.ReadStats();
        Assert.Equal(stats.Counters.Packets, stats.Counters.ExportedPackets);
        Assert.Equal(0L, stats.Unaccounted);
        Assert.Equal(0UL, stats.Counters.UncountedPackets);
    }

    [Fact]
    public void Flow_UdpExchange_EndsByIdleTimeoutWithExactCounts()
    {
        using var net = NetNs.Create();
        using var sensor = StartSensor(new FlowSensorOptions { IdleTimeout = TimeSpan.FromSeconds(1) });
        sensor.Attach(net.A.Interface, net.A.Netns);
        var before = net.Counters(net.A);
        var port = NetTraffic.FreePort();
        int[] up = [100, 200, 300, 400, 1000], down = [50, 60, 1400];
        using var server = NetNs.Enter(net.B.Netns, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        server.Bind(new IPEndPoint(net.B.Address, port));
        server.ReceiveTimeout = 5000;
        using var client = NetNs.Enter(net.A.Netns, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        client.Bind(new IPEndPoint(net.A.Address, 0));
        var buffer = new byte[2048];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        foreach (var n in up)
        {
            client.SendTo(buffer.AsSpan(0, n), new IPEndPoint(net.B.Address, port));
            Assert.Equal(n, server.ReceiveFrom(buffer, ref from));
        }
        foreach (var n in down) server.SendTo(buffer.AsSpan(0, n), from);
        client.ReceiveTimeout = 5000;
        foreach (var n in down) Assert.Equal(n, client.Receive(buffer));
        var clientPort = ((IPEndPoint)client.LocalEndPoint!).Port;

        // Not before the idle timeout: the flow is quiet, but not for long enough yet.
        sensor.Sweep();
        var early = new List<FlowRecord>();
        sensor.DrainRecords(early);
        Assert.DoesNotContain(early, r => r.Protocol == 17 && r.Dport == port);

        var records = Collect(sensor, rs => rs.Any(r => r.Protocol == 17 && r.Dport == port), TimeSpan.FromSeconds(5));
        var link = net.Counters(net.A) - before;
        foreach (var r in records) Log(Show(r));
        var flow = Assert.Single(records, r => r.Protocol == 17 && r.Dport == port);
        Assert.Equal(FlowEndReason.Idle, flow.Reason);
        Assert.Equal(FlowDirection.Egress, flow.Direction);
        Assert.Equal(clientPort, flow.Sport);
        Assert.Equal((ulong)up.Length, flow.PacketsFwd);
        Assert.Equal((ulong)down.Length, flow.PacketsRev);
        Assert.Equal((ulong)up.Sum(n => n + 28), flow.BytesFwd); // IPv4 20 + UDP 8 per datagram
        Assert.Equal((ulong)down.Sum(n => n + 28), flow.BytesRev);
        Assert.Equal(link.TxPackets, (long)flow.PacketsFwd);
        Assert.Equal(link.RxPackets, (long)flow.PacketsRev);
        Assert.True(flow.LastNs - flow.FirstNs < 1_000_000_000UL, "first and last packet of the record");
        Assert.NotEqual(0UL, flow.SocketCookie);
        Assert.NotEqual(0UL, flow.CgroupId); // the socket's cgroup, from the skb
    }

    [Fact]
    public void Flow_LongTcpFlow_YieldsActiveTimeoutSlicesThatSumToTheTotals()
    {
        using var net = NetNs.Create();
        using var sensor = StartSensor(new FlowSensorOptions { ActiveTimeout = TimeSpan.FromSeconds(1), IdleTimeout = TimeSpan.FromSeconds(30), TcpLinger = TimeSpan.FromMilliseconds(300) });
        sensor.Attach(net.A.Interface, net.A.Netns);
        var before = net.Counters(net.A);
        var port = NetTraffic.FreePort();
        // 3.6 s of traffic while the agent sweeps as it would (every 200 ms here).
        var stop = false;
        var sweeper = new Thread(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                sensor.Sweep();
                Thread.Sleep(200);
            }
        });
        sweeper.Start();
        NetTraffic.TcpExchange(net.A, net.B, port, up: 36 * 20_000, down: 10_000, chunks: 36, pause: TimeSpan.FromMilliseconds(100));
        Volatile.Write(ref stop, true);
        sweeper.Join();
        var records = Collect(sensor, rs => rs.Any(r => IsTcp(r, port) && r.Reason == FlowEndReason.TcpEnd), TimeSpan.FromSeconds(10));
        var link = net.Counters(net.A) - before;
        var slices = records.Where(r => IsTcp(r, port)).OrderBy(r => r.FirstNs).ToList();
        foreach (var r in slices) Log(Show(r));

        Assert.True(slices.Count(r => r.Reason == FlowEndReason.Active) >= 2, $"expected at least 2 active-timeout slices, got {slices.Count}");
        Assert.Equal(FlowEndReason.TcpEnd, slices[^1].Reason);
        Assert.Single(slices, r => r.Reason == FlowEndReason.TcpEnd);
        foreach (var r in slices.Where(r => r.Reason == FlowEndReason.Active))
            Assert.True(r.LastNs - r.FirstNs < 1_500_000_000UL, $"an active slice covers about the active timeout: {Show(r)}");
        for (var i = 1; i < slices.Count; i++)
            Assert.True(slices[i].FirstNs > slices[i - 1].LastNs, "slices do not overlap: no packet is in two records");
        Assert.Equal(link.TxPackets, slices.Sum(r => (long)r.PacketsFwd));
        Assert.Equal(link.TxBytes - 14 * link.TxPackets, slices.Sum(r => (long)r.BytesFwd));
        Assert.Equal(link.RxPackets, slices.Sum(r => (long)r.PacketsRev));
        Assert.Equal(link.RxBytes - 14 * link.RxPackets, slices.Sum(r => (long)r.BytesRev));
        Assert.Equal(2u, (uint)slices.Sum(r => r.SynCount));
        Assert.Equal(2u, (uint)slices.Sum(r => r.FinCount));
        Assert.All(slices, r => Assert.Equal(net.A.Address, r.SourceAddress)); // src stays the initiator in every slice
    }

    [Fact]
    public void Flow_TsoPackets_AreCountedAsTheirSegments()
    {
        using var net = NetNs.Create(new NetNs.Options { Offloads = true });
        using var sensor = StartSensor(new FlowSensorOptions { TcpLinger = TimeSpan.FromMilliseconds(300) });
        sensor.Attach(net.A.Interface, net.A.Netns);
        var before = net.Counters(net.A);
        var port = NetTraffic.FreePort();
        var result = NetTraffic.TcpExchange(net.A, net.B, port, up: 4_000_000, down: 1_000_000);
        var records = Collect(sensor, rs => rs.Any(r => IsTcp(r, port) && r.Reason == FlowEndReason.TcpEnd), TimeSpan.FromSeconds(10), sweep: false);
        var link = net.Counters(net.A) - before;
        foreach (var r in records) Log(Show(r));
        Log($"veth: {link}; client tcp_info: {result.Client}");

        var flow = Assert.Single(records, r => IsTcp(r, port));
        Assert.True(link.TxPackets < (long)flow.PacketsFwd, "the veth carried GSO packets: fewer skbs than segments");
        // The socket's own segment counters are the reference once packets are GSO.
        Assert.Equal(result.Client.SegsOut, (uint)flow.PacketsFwd);
        Assert.Equal(result.Client.SegsIn, (uint)flow.PacketsRev);
        // Each segment repeats the 40-60 bytes of IPv4 + TCP headers around its payload.
        Assert.InRange((long)flow.BytesFwd - (long)result.Client.BytesSent, 40L * (long)flow.PacketsFwd, 60L * (long)flow.PacketsFwd);
        Assert.InRange((long)flow.BytesRev - (long)result.Client.BytesReceived, 40L * (long)flow.PacketsRev, 60L * (long)flow.PacketsRev);
    }

    [Fact]
    public void Flow_Ipv6_TcpCountsMatchTheSocket_APingIsOneFlow_AndEveryPacketIsInOneRecord()
    {
        using var net = NetNs.Create(new NetNs.Options { Ipv6 = true });
        using var sensor = StartSensor(new FlowSensorOptions { TcpLinger = TimeSpan.FromMilliseconds(300) });
        sensor.Attach(net.A.Interface, net.A.Netns);
        var port = NetTraffic.FreePort();
        var tcpResult = NetTraffic.TcpExchange(net.A, net.B, port, up: 50_000, down: 20_000, v6: true);
        NetNs.Enter(net.A.Netns, () =>
        {
            using var ping = new Ping();
            for (var i = 0; i < 3; i++) Assert.Equal(IPStatus.Success, ping.Send(net.B.Address6!, 2000).Status);
        });
        Thread.Sleep(200);
        sensor.Stop(); // detach, then export everything pending (Flush)
        var records = new List<FlowRecord>();
        sensor.DrainRecords(records);
        foreach (var r in records) Log(Show(r));

        var tcp = Assert.Single(records, r => IsTcp(r, port));
        Assert.Equal(6, tcp.Family);
        Assert.Equal(net.A.Address6, tcp.SourceAddress);
        Assert.Equal(net.B.Address6, tcp.DestinationAddress);
        Assert.Equal(FlowEndReason.TcpEnd, tcp.Reason);
        // IPv6 brings neighbour discovery and MLD at times of the kernel's choosing, so the
        // reference here is the socket's own segment counters.
        Assert.Equal(tcpResult.Client.SegsOut, (uint)tcp.PacketsFwd);
        Assert.Equal(tcpResult.Client.SegsIn, (uint)tcp.PacketsRev);
        Assert.InRange((long)tcp.BytesFwd - (long)tcpResult.Client.BytesSent, 60L * (long)tcp.PacketsFwd, 80L * (long)tcp.PacketsFwd);
        Assert.Equal((uint)Environment.ProcessId, tcp.Pid);

        // Each ping (its own echo identifier here) is one flow: the reply joins its request.
        var echoes = records.Where(r => r.Protocol == 58 && (r.Sport >> 8) == 128).ToList();
        Assert.Equal(3, echoes.Count);
        Assert.All(echoes, e =>
        {
            Assert.Equal(1UL, e.PacketsFwd);
            Assert.Equal(1UL, e.PacketsRev);
            Assert.Equal(net.A.Address6, e.SourceAddress);
            Assert.NotEqual(0, e.Dport);
        });

        // Neighbour discovery and MLD are flows too; every packet the sensor saw is in exactly one record.
        var stats = sensor.ReadStats();
        Assert.Equal((long)stats.Counters.Packets, records.Sum(r => (long)(r.PacketsFwd + r.PacketsRev)));
        Assert.Equal((long)stats.Counters.Bytes, records.Sum(r => (long)(r.BytesFwd + r.BytesRev)));
        Assert.Equal(0L, stats.Unaccounted);
    }

    [Fact]
    public void Flow_FullTable_RefusedFlowsAreCounted_AndPressureEvictsIdleFlowsWithARecord()
    {
        using var net = NetNs.Create();
        using var sensor = StartSensor(new FlowSensorOptions
        {
            MaxFlows = 4, PressureMark = 0.5, PressureIdle = TimeSpan.FromMilliseconds(200), IdleTimeout = TimeSpan.FromSeconds(30),
        });
        sensor.Attach(net.A.Interface, net.A.Netns);
        var basePort = NetTraffic.FreePort() & ~15;
        var servers = Enumerable.Range(0, 10).Select(i =>
        {
            var s = NetNs.Enter(net.B.Netns, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
            s.Bind(new IPEndPoint(net.B.Address, basePort + i));
            return s;
        }).ToList();
        try
        {
            using var client = NetNs.Enter(net.A.Netns, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
            for (var i = 0; i < 10; i++) client.SendTo(new byte[100], new IPEndPoint(net.B.Address, basePort + i));
            Thread.Sleep(100);
            var stats = sensor.ReadStats();
            Assert.Equal(10UL, stats.Counters.Packets);
            Assert.Equal(4UL, stats.Counters.FlowsCreated);
            Assert.Equal(6UL, stats.Counters.TableFull);
            Assert.Equal(6UL, stats.Counters.UncountedPackets); // counted as refused, not hidden
            Assert.Equal(6UL * 128, stats.Counters.UncountedBytes);

            Thread.Sleep(300);
            var sweep = sensor.Sweep(); // 4 of 4 entries: over the mark, and idle for longer than PressureIdle
            var records = new List<FlowRecord>();
            sensor.DrainRecords(records);
            foreach (var r in records) Log(Show(r));
            Assert.Equal(4UL, sweep.Evicted);
            Assert.Equal(4, records.Count(r => r.Reason == FlowEndReason.Evicted));
            Assert.Equal(4UL, sweep.Deleted);

            // Room again: a new flow gets an entry.
            client.SendTo(new byte[100], new IPEndPoint(net.B.Address, basePort + 9));
            Thread.Sleep(100);
            sensor.Stop();
            sensor.DrainRecords(records);
            stats = sensor.ReadStats();
            Assert.Equal(5UL, stats.Counters.FlowsCreated);
            Assert.Equal(0L, stats.Unaccounted); // 11 seen = 5 exported + 6 uncounted
            Assert.Equal(5UL, stats.Counters.ExportedPackets);
        }
        finally
        {
            foreach (var s in servers) s.Dispose();
        }
    }

    [Fact]
    public void Flow_UdpFromAChildCgroup_IsAttributedToTheSendingProcess()
    {
        using var net = NetNs.Create();
        using var cgroup = NetCgroup.Create();
        using var sensor = StartSensor(new FlowSensorOptions { IdleTimeout = TimeSpan.FromSeconds(1), AttributionCgroups = [cgroup.Path] });
        Log(sensor.Report.ToString());
        Assert.Equal(5, sensor.Report.Attached.Count()); // tp_btf + connect4/6 + sendmsg4/6 on the child cgroup
        sensor.Attach(net.A.Interface, net.A.Netns);
        var port = NetTraffic.FreePort();
        using var server = NetNs.Enter(net.B.Netns, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        server.Bind(new IPEndPoint(net.B.Address, port));
        // bash's /dev/udp connects a UDP socket (cgroup/connect4 runs in the shell) and writes to it.
        using var shell = cgroup.StartShell(net.A.Netns, $"echo $$; exec 3<>/dev/udp/{net.B.Address}/{port}; printf hello >&3; printf again >&3");
        var shellPid = int.Parse(shell.StandardOutput.ReadLine()!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(shell.WaitForExit(10_000));
        Assert.Equal(0, shell.ExitCode);

        var records = Collect(sensor, rs => rs.Any(r => r.Protocol == 17 && r.Dport == port), TimeSpan.FromSeconds(5));
        foreach (var r in records) Log(Show(r));
        var flow = Assert.Single(records, r => r.Protocol == 17 && r.Dport == port);
        Assert.Equal(2UL, flow.PacketsFwd);
        Assert.Equal((uint)shellPid, flow.Pid);
        Assert.Equal(Detect.Sensors.Bpf.CgroupTarget.Id(cgroup.Path), flow.CgroupId);
    }

    private sealed class FlowHandler : ISensorBatchHandler
    {
        public List<FlowRecord> Flows { get; } = [];
        public int Batches { get; private set; }

        public void OnBatch(SensorBatch batch)
        {
            Batches++;
            foreach (var record in batch)
                if (record.Type == RecordType.Flow) Flows.Add(System.Runtime.InteropServices.MemoryMarshal.Read<FlowRecord>(record.Bytes));
        }
    }

    [Fact]
    public void FlowCapture_HandsFlowRecordsToTheHandlerTheOtherSensorsFeed()
    {
        Needs.KernelBtf();
        using var net = NetNs.Create();
        var handler = new FlowHandler();
        using var capture = FlowCapture.Start([$"{net.A.Interface}@{net.A.Netns}"], handler, new FlowSensorOptions { TcpLinger = TimeSpan.FromMilliseconds(200) });
        var port = NetTraffic.FreePort();
        NetTraffic.TcpExchange(net.A, net.B, port, up: 10_000, down: 5_000);
        var stats = capture.Stop();
        var flow = Assert.Single(handler.Flows, r => IsTcp(r, port));
        Assert.Equal(FlowEndReason.TcpEnd, flow.Reason);
        Assert.Equal(capture.Records, handler.Flows.Count);
        Assert.Equal(0L, stats.Unaccounted);
    }
}

/// <summary>Tests that make namespaces and attach to them run one at a time (timeouts stay honest on 2 cores).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NetworkCollection
{
    public const string Name = "Network namespaces";
}
