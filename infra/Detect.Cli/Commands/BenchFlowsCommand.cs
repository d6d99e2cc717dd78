using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Detect.Records;
using Detect.Sensors.Bpf;
using Detect.Sensors.Flows;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect bench flows`: packets per second through a veth pair between two namespaces this
/// command makes (iperf3 in them, UDP with small datagrams and TCP), without and with the flow
/// sensor on one end, and the sensor's kernel time per packet (BPF run-time statistics:
/// run_time_ns / run_cnt, as kernel.bpf_stats_enabled=1 gives them). Also checks that the sensor
/// counted every packet the veth carried. One JSON object last.
/// </summary>
public sealed class BenchFlowsCommand : ICliCommand
{
    public string? Parent => "bench";

    public Command Create()
    {
        var seconds = new Option<int>("--seconds") { Description = "Length of each iperf3 run", DefaultValueFactory = _ => 5 };
        var udpSize = new Option<int>("--udp-size") { Description = "UDP payload bytes (small datagrams: many packets)", DefaultValueFactory = _ => 64 };
        var rounds = new Option<int>("--rounds") { Description = "Runs of each kind without/with the sensor, alternated (the medians are reported)", DefaultValueFactory = _ => 2 };
        var kinds = new Option<string[]>("--kind") { Description = "udp, tcp or both (repeatable)", DefaultValueFactory = _ => ["udp", "tcp"], AllowMultipleArgumentsPerToken = true };
        var objects = new Option<string?>("--object-dir") { Description = "Load flow.bpf.o from this folder (to compare builds of the program)" };
        var command = new Command("flows", "Flow sensor on a veth: packets/s without and with it (iperf3 UDP and TCP), kernel ns per packet")
        {
            seconds, udpSize, rounds, kinds, objects,
        };
        command.SetAction((parse, ct) => Task.FromResult(Execute(parse.GetValue(seconds), parse.GetValue(udpSize), parse.GetValue(rounds),
            parse.GetValue(kinds) ?? ["udp", "tcp"], parse.GetValue(objects), ct)));
        return command;
    }

    private enum Mode
    {
        Without,
        Floor,
        With,
    }

    private sealed record Run(string Kind, Mode Mode, double Seconds, long Packets, long Skbs, double Bits, long SensorSkbs, long SensorPackets, ProgramRunStats Kernel);

    private static int Execute(int seconds, int udpSize, int rounds, string[] kinds, string? objectDir, CancellationToken ct)
    {
        if (seconds <= 0 || udpSize is < 1 or > 1400 || rounds < 1 || kinds.Length == 0 || kinds.Any(k => k is not ("udp" or "tcp")))
        {
            Console.Error.WriteLine("bench flows: --seconds and --rounds must be positive, --udp-size 1-1400, --kind udp or tcp");
            return 2;
        }
        try
        {
            BpfSystem.EnsurePrivileged();
        }
        catch (BpfPrivilegeException e)
        {
            Console.Error.WriteLine($"bench flows: {e.Message}");
            return 4;
        }
        var iperf = FindProgram("iperf3");
        if (iperf == null)
        {
            Console.Error.WriteLine("bench flows: needs iperf3 (apt-get install iperf3; ./detect installs it)");
            return 1;
        }
        Console.Error.WriteLine($"bench flows: {Environment.ProcessorCount} cores; {rounds} round(s) of {seconds} s per kind");
        using var net = BenchNetwork.Create();
        Console.Error.WriteLine($"bench flows: namespaces {net.NsA} / {net.NsB}, veth {net.IfA} ({net.AddrA}) <-> {net.IfB} ({net.AddrB}), offloads as the kernel sets them");
        var port = 5201 + Random.Shared.Next(1000);
        net.Start(net.NsB, iperf, "-s", "-p", port.ToString(CultureInfo.InvariantCulture), "-B", net.AddrB); // the network kills it

        Thread.Sleep(500);

        var runs = new List<Run>();
        using var sensor = FlowSensor.Start(new FlowSensorOptions { IdleTimeout = TimeSpan.FromSeconds(5), SweepInterval = TimeSpan.FromSeconds(1), ObjectDirectory = objectDir });
        // The floor: an empty TC program where the sensor goes, timed the same way.
        using var floor = BpfObject.Open(objectDir != null ? Path.Combine(objectDir, FlowSensor.ObjectName) : BpfObject.Find(FlowSensor.ObjectName));
        foreach (var p in floor.Programs) p.AutoLoad = p.Name is "detect_flow_floor" or "detect_flow_egress";
        floor.Maps["detect_flows"].MaxEntries = 1024;
        floor.Load();
        // Warm caches, no traffic around it: the program alone on one 64-byte UDP packet, many
        // times in a row (BPF_PROG_TEST_RUN), on a copy of the sensor with a table of its own.
        var (hot, hotFloor) = (HotNs(floor.Programs["detect_flow_egress"], udpSize), HotNs(floor.Programs["detect_flow_floor"], udpSize));
        Console.Error.WriteLine($"bench flows: warm-cache cost (BPF_PROG_TEST_RUN x 200,000, best of 5): {hot} ns per packet, empty program {hotFloor} ns");
        using var stats = BpfSystem.EnableRunTimeStats(); // from here: run_time_ns / run_cnt, as kernel.bpf_stats_enabled=1
        Console.Error.WriteLine("bench flows: BPF run-time statistics on (BPF_ENABLE_STATS)");
        foreach (var kind in kinds.Distinct())
        {
            for (var round = 0; round < rounds && !ct.IsCancellationRequested; round++)
            {
                foreach (var mode in new[] { Mode.Without, Mode.Floor, Mode.With })
                {
                    var run = Measure(net, sensor, floor.Programs["detect_flow_floor"], iperf, port, kind, udpSize, seconds, mode, ct);
                    runs.Add(run);
                    Console.Error.WriteLine($"bench flows: {kind} {mode switch { Mode.Without => "without sensor", Mode.Floor => "empty program ", _ => "with sensor   " }}: " +
                        $"{run.Packets / run.Seconds:N0} packets/s ({run.Skbs / run.Seconds:N0} skbs/s, {run.Bits / 1e9:F2} Gbit/s)" +
                        (mode != Mode.Without ? $"; kernel {Ns(run.Kernel.RunTimeNs, run.Kernel.RunCount):F1} ns per program run" : "") +
                        (mode == Mode.With ? $", {Ns(run.Kernel.RunTimeNs, (ulong)run.SensorPackets):F1} ns per packet; the sensor counted {run.SensorSkbs:N0} of {run.Skbs:N0} skbs" : ""));
                }
            }
        }
        sensor.Stop();
        var drained = new List<FlowRecord>();
        sensor.DrainRecords(drained);
        var final = sensor.ReadStats();

        var result = new Dictionary<string, object>
        {
            ["bench"] = "flows",
            ["cores"] = Environment.ProcessorCount,
            ["seconds_per_run"] = seconds,
            ["rounds"] = rounds,
            ["udp_payload_bytes"] = udpSize,
            ["aim_ns_per_packet"] = 100,
        };
        foreach (var kind in new[] { "udp", "tcp" })
        {
            var without = runs.Where(r => r.Kind == kind && r.Mode == Mode.Without).ToList();
            var with = runs.Where(r => r.Kind == kind && r.Mode == Mode.With).ToList();
            var floors = runs.Where(r => r.Kind == kind && r.Mode == Mode.Floor).ToList();
            if (without.Count == 0 || with.Count == 0) continue;
            var floorNs = Ns(floors.Aggregate(0UL, (a, r) => a + r.Kernel.RunTimeNs), floors.Aggregate(0UL, (a, r) => a + r.Kernel.RunCount));
            var ppsWithout = Median(without.Select(r => r.Skbs / r.Seconds));
            var ppsWith = Median(with.Select(r => r.Skbs / r.Seconds));
            var gbitWithout = Median(without.Select(r => r.Bits / 1e9));
            var gbitWith = Median(with.Select(r => r.Bits / 1e9));
            var kernel = with.Aggregate(default(ProgramRunStats), (a, r) => new ProgramRunStats(a.RunTimeNs + r.Kernel.RunTimeNs, a.RunCount + r.Kernel.RunCount, a.RecursionMisses + r.Kernel.RecursionMisses));
            var packets = with.Sum(r => r.SensorPackets);
            result[kind] = new Dictionary<string, object>
            {
                // skbs through the veth (UDP: one packet each; TCP: GSO packets of many segments).
                ["skbs_per_s_without"] = Math.Round(ppsWithout),
                ["skbs_per_s_with"] = Math.Round(ppsWith),
                ["packets_per_s_with"] = Math.Round(Median(with.Select(r => r.SensorPackets / r.Seconds))),
                ["gbit_per_s_without"] = Math.Round(gbitWithout, 3),
                ["gbit_per_s_with"] = Math.Round(gbitWith, 3),
                ["throughput_change_pct"] = Math.Round((gbitWith - gbitWithout) / gbitWithout * 100, 1),
                ["kernel_ns_per_run"] = Math.Round(Ns(kernel.RunTimeNs, kernel.RunCount), 1),
                ["kernel_ns_per_packet"] = Math.Round(Ns(kernel.RunTimeNs, (ulong)packets), 1),
                ["floor_ns_per_run"] = Math.Round(floorNs, 1),
                ["net_ns_per_run"] = Math.Round(Ns(kernel.RunTimeNs, kernel.RunCount) - floorNs, 1),
                ["net_ns_per_packet"] = Math.Round((Ns(kernel.RunTimeNs, kernel.RunCount) - floorNs) * kernel.RunCount / Math.Max(1, packets), 1),
                ["program_runs"] = kernel.RunCount,
                ["packets_counted"] = packets,
                ["skbs_on_veth"] = with.Sum(r => r.Skbs),
                ["skbs_counted"] = with.Sum(r => r.SensorSkbs),
            };
        }
        result["warm_ns_per_packet"] = hot;
        result["warm_floor_ns"] = hotFloor;
        result["warm_net_ns_per_packet"] = (long)hot - hotFloor;
        result["flow_records"] = drained.Count;
        result["unaccounted_packets"] = final.Unaccounted;
        result["uncounted_packets"] = final.Counters.UncountedPackets;
        result["ring_full"] = final.Counters.RingFull;
        Console.WriteLine(JsonSerializer.Serialize(result));
        return 0;
    }

    private static Run Measure(BenchNetwork net, FlowSensor sensor, BpfProgram floor, string iperf, int port, string kind, int udpSize, int seconds, Mode mode, CancellationToken ct)
    {
        var withSensor = mode == Mode.With;
        FlowInterface? watched = withSensor ? sensor.Attach(net.IfA, net.NsA) : null;
        var floorAttached = new List<TcAttachment>();
        if (mode == Mode.Floor)
        {
            floorAttached.Add(TcAttachment.Attach(floor, net.IfA, TcDirection.Egress, net.NsA));
            floorAttached.Add(TcAttachment.Attach(floor, net.IfA, TcDirection.Ingress, net.NsA));
        }
        try
        {
            var before = net.Counters();
            var kernelBefore = sensor.ReadRunStats();
            var floorBefore = floor.ReadRunStats();
            var statsBefore = sensor.ReadStats().Counters;
            string[] args = kind == "udp"
                ? ["-c", net.AddrB, "-p", port.ToString(CultureInfo.InvariantCulture), "-t", seconds.ToString(CultureInfo.InvariantCulture), "-u", "-b", "0", "-l", udpSize.ToString(CultureInfo.InvariantCulture), "-J"]
                : ["-c", net.AddrB, "-p", port.ToString(CultureInfo.InvariantCulture), "-t", seconds.ToString(CultureInfo.InvariantCulture), "-J"];
            var clock = Stopwatch.StartNew();
            var client = net.Start(net.NsA, iperf, args);
            // Sweep as the agent would while traffic runs.
            var records = new List<FlowRecord>();
            while (!client.WaitForExit(200))
            {
                if (ct.IsCancellationRequested) client.Kill();
                if (withSensor)
                {
                    sensor.Sweep();
                    sensor.DrainRecords(records);
                }
            }
            var elapsed = clock.Elapsed.TotalSeconds;
            var json = client.StandardOutput.ReadToEnd();
            var after = net.Counters();
            var kernelAfter = sensor.ReadRunStats();
            var floorAfter = floor.ReadRunStats();
            var statsAfter = sensor.ReadStats().Counters;
            var bits = 0.0;
            double measured = seconds;
            try
            {
                using var doc = JsonDocument.Parse(json);
                var end = doc.RootElement.GetProperty("end");
                var sum = kind == "udp" ? end.GetProperty("sum") : end.GetProperty("sum_sent");
                bits = sum.GetProperty("bits_per_second").GetDouble();
                measured = sum.GetProperty("seconds").GetDouble();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                Console.Error.WriteLine($"bench flows: iperf3 output not understood ({e.Message}); using the wall clock");
                measured = elapsed;
            }
            var skbs = after.TxPackets - before.TxPackets + after.RxPackets - before.RxPackets;
            // Without the sensor the veth's skbs stand for packets (UDP: one each; TCP: GSO
            // skbs, so the sensor's segment count is the better packet count when it runs).
            var sensorPackets = (long)(statsAfter.Packets - statsBefore.Packets);
            var packets = withSensor ? sensorPackets : skbs;
            var ingress = kernelAfter.Ingress - kernelBefore.Ingress;
            var egress = kernelAfter.Egress - kernelBefore.Egress;
            var kernel = mode == Mode.Floor
                ? floorAfter - floorBefore
                : new ProgramRunStats(ingress.RunTimeNs + egress.RunTimeNs, ingress.RunCount + egress.RunCount, ingress.RecursionMisses + egress.RecursionMisses);
            return new Run(kind, mode, measured, packets, skbs, bits, (long)(statsAfter.Skbs - statsBefore.Skbs), sensorPackets, kernel);
        }
        finally
        {
            watched?.Dispose();
            foreach (var a in floorAttached) a.Dispose();
        }
    }

    /// <summary>Best of five BPF_PROG_TEST_RUN rounds on an Ethernet/IPv4/UDP packet.</summary>
    private static uint HotNs(BpfProgram program, int payload)
    {
        var packet = new byte[14 + 20 + 8 + payload];
        packet[12] = 0x08; // IPv4
        var ip = packet.AsSpan(14);
        ip[0] = 0x45;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + 8 + payload));
        ip[8] = 64;
        ip[9] = 17;
        ip[12] = 10; ip[15] = 1; ip[16] = 10; ip[19] = 2;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip[20..], 40000);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip[22..], 5201);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(ip[24..], (ushort)(8 + payload));
        var best = uint.MaxValue;
        for (var i = 0; i < 5; i++)
        {
            program.TestRun(packet, 200_000, out var ns);
            best = Math.Min(best, ns);
        }
        return best;
    }

    private static double Ns(ulong time, ulong count) => count == 0 ? 0 : (double)time / count;

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length == 0 ? 0 : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    private static string? FindProgram(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/bin").Append("/usr/sbin"))
        {
            var path = Path.Combine(dir, name);
            if (dir.Length > 0 && File.Exists(path)) return path;
        }
        return null;
    }

    /// <summary>Two `detect-bench-*` namespaces joined by a veth pair; Dispose deletes them (and whatever runs in them).</summary>
    private sealed class BenchNetwork : IDisposable
    {
        private readonly List<Process> _processes = [];

        private BenchNetwork(string id)
        {
            NsA = $"detect-bench-{id}-a";
            NsB = $"detect-bench-{id}-b";
            IfA = $"db{id}a";
            IfB = $"db{id}b";
        }

        public string NsA { get; }
        public string NsB { get; }
        public string IfA { get; }
        public string IfB { get; }
        public string AddrA => "10.254.77.1";
        public string AddrB => "10.254.77.2";

        public static BenchNetwork Create()
        {
            var net = new BenchNetwork(Random.Shared.Next(0x1000_0000, int.MaxValue).ToString("x8", CultureInfo.InvariantCulture));
            try
            {
                Ip("netns", "add", net.NsA);
                Ip("netns", "add", net.NsB);
                Ip("link", "add", net.IfA, "netns", net.NsA, "type", "veth", "peer", "name", net.IfB, "netns", net.NsB);
                Ip("-n", net.NsA, "addr", "add", net.AddrA + "/24", "dev", net.IfA);
                Ip("-n", net.NsB, "addr", "add", net.AddrB + "/24", "dev", net.IfB);
                foreach (var (ns, iface) in new[] { (net.NsA, net.IfA), (net.NsB, net.IfB) })
                {
                    Ip("-n", ns, "link", "set", "lo", "up");
                    Ip("-n", ns, "link", "set", iface, "up");
                }
                return net;
            }
            catch
            {
                net.Dispose();
                throw;
            }
        }

        public Process Start(string netns, string program, params string[] args)
        {
            var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in (string[])["netns", "exec", netns, program, .. args]) psi.ArgumentList.Add(a);
            var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program} in {netns}");
            _processes.Add(p);
            return p;
        }

        /// <summary>(tx, rx) packets of the A end.</summary>
        public (long TxPackets, long RxPackets) Counters()
        {
            var result = IpOut("-n", NsA, "-j", "-s", "link", "show", "dev", IfA);
            using var doc = JsonDocument.Parse(result);
            var s = doc.RootElement[0].GetProperty("stats64");
            return (s.GetProperty("tx").GetProperty("packets").GetInt64(), s.GetProperty("rx").GetProperty("packets").GetInt64());
        }

        private static void Ip(params string[] args) => IpOut(args);

        private static string IpOut(params string[] args)
        {
            var (code, stdout, stderr) = ChildProcess.Run("ip", args);
            if (code != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed: {stderr.Trim()}");
            return stdout;
        }

        public void Dispose()
        {
            foreach (var p in _processes)
            {
                try
                {
                    if (!p.HasExited) p.Kill(entireProcessTree: true);
                    p.WaitForExit(5000);
                }
                catch (InvalidOperationException)
                {
                }
                p.Dispose();
            }
            foreach (var ns in new[] { NsA, NsB })
            {
                if (!File.Exists(Path.Combine("/run/netns", ns))) continue;
                try
                {
                    // Anything still running inside keeps the namespace (and the veth) alive.
                    foreach (var pid in IpOut("netns", "pids", ns).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        try
                        {
                            using var stray = Process.GetProcessById(int.Parse(pid, CultureInfo.InvariantCulture));
                            stray.Kill();
                            stray.WaitForExit(5000);
                        }
                        catch (ArgumentException)
                        {
                        }
                    }
                    Ip("netns", "del", ns);
                }
                catch (InvalidOperationException e)
                {
                    Console.Error.WriteLine($"bench flows: {e.Message}");
                }
            }
        }
    }
}
