using System.Diagnostics;
using System.Net;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Detect.Testing;

/// <summary>
/// Two network namespaces made for one test, `detect-&lt;id&gt;-a` and `detect-&lt;id&gt;-b`, joined by a
/// veth pair with IPv4 (and optionally IPv6) addresses. Tests attach XDP/TC only to these veths
/// (the kernel-safety rule); Dispose kills what the test started in them and deletes both
/// namespaces, which takes the veths and every program attached to them along. By default the
/// pair carries nothing but the test's traffic: IPv6 off (no neighbour discovery), static
/// neighbours (no ARP), so the veths' own counters are an exact reference for the sensor.
/// </summary>
public sealed class NetNs : IDisposable
{
    /// <summary>One end of the pair.</summary>
    public sealed record Side(string Netns, string Interface, IPAddress Address, IPAddress? Address6, string Mac);

    /// <summary>Packets and bytes an interface sent and received (its kernel counters; bytes include the Ethernet header).</summary>
    public readonly record struct LinkCounters(long RxPackets, long RxBytes, long TxPackets, long TxBytes)
    {
        public static LinkCounters operator -(LinkCounters a, LinkCounters b) =>
            new(a.RxPackets - b.RxPackets, a.RxBytes - b.RxBytes, a.TxPackets - b.TxPackets, a.TxBytes - b.TxBytes);
    }

    /// <summary>Result of a command.</summary>
    public sealed record CommandResult(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}; stdout: {Stdout.Trim()}; stderr: {Stderr.Trim()}";
    }

    public sealed record Options
    {
        /// <summary>Give both ends IPv6 addresses (and let the kernel's neighbour discovery run).</summary>
        public bool Ipv6 { get; init; }

        /// <summary>
        /// Let TCP hand the veth large (TSO/GSO) packets. Off: every skb is one packet
        /// (gso_max_segs 1), so interface counters count segments.
        /// </summary>
        public bool Offloads { get; init; }
    }

    private readonly List<Process> _processes = [];
    private int _disposed;

    private NetNs(string id, Side a, Side b)
    {
        Id = id;
        A = a;
        B = b;
    }

    /// <summary>The random part of every name: namespaces detect-{Id}-a/-b, interfaces d{Id}a/d{Id}b.</summary>
    public string Id { get; }

    public Side A { get; }

    public Side B { get; }

    public static NetNs Create(Options? options = null)
    {
        options ??= new Options();
        Needs.Root();
        Needs.Program("ip");
        var r = Random.Shared;
        var id = r.Next(0x1000_0000, int.MaxValue).ToString("x8", System.Globalization.CultureInfo.InvariantCulture);
        var subnet = $"10.{200 + r.Next(50)}.{r.Next(256)}";
        var macA = $"02:de:{id[0..2]}:{id[2..4]}:{id[4..6]}:01";
        var macB = $"02:de:{id[0..2]}:{id[2..4]}:{id[4..6]}:02";
        var v6 = $"fd00:de7e:{id[0..4]}:{id[4..8]}";
        var a = new Side($"detect-{id}-a", $"d{id}a", IPAddress.Parse(subnet + ".1"), options.Ipv6 ? IPAddress.Parse(v6 + "::1") : null, macA);
        var b = new Side($"detect-{id}-b", $"d{id}b", IPAddress.Parse(subnet + ".2"), options.Ipv6 ? IPAddress.Parse(v6 + "::2") : null, macB);
        var net = new NetNs(id, a, b);
        try
        {
            Ip("netns", "add", a.Netns);
            Ip("netns", "add", b.Netns);
            Ip("link", "add", a.Interface, "address", macA, "netns", a.Netns, "type", "veth", "peer", "name", b.Interface, "address", macB, "netns", b.Netns);
            foreach (var (self, peer) in new[] { (a, b), (b, a) })
            {
                if (!options.Ipv6)
                    net.ExecChecked(self.Netns, "sh", "-c", $"echo 1 > /proc/sys/net/ipv6/conf/{self.Interface}/disable_ipv6");
                if (!options.Offloads)
                    Ip("-n", self.Netns, "link", "set", "dev", self.Interface, "gso_max_segs", "1");
                Ip("-n", self.Netns, "addr", "add", self.Address + "/24", "dev", self.Interface);
                if (self.Address6 != null)
                    Ip("-n", self.Netns, "addr", "add", self.Address6 + "/64", "dev", self.Interface, "nodad");
                Ip("-n", self.Netns, "neigh", "replace", peer.Address.ToString(), "lladdr", peer.Mac, "dev", self.Interface, "nud", "permanent");
                Ip("-n", self.Netns, "link", "set", "lo", "up");
                Ip("-n", self.Netns, "link", "set", self.Interface, "up");
            }
            return net;
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    private static void Ip(params string[] args)
    {
        var result = Run("ip", args);
        if (result.ExitCode != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed: {result}");
    }

    /// <summary>Runs a program on the host (no namespace) and waits for it (at most a minute).</summary>
    public static CommandResult Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(60_000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in a minute");
        }
        return new CommandResult(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs a command inside <paramref name="netns"/> (ip netns exec) and waits for it.</summary>
    public CommandResult Exec(string netns, params string[] argv) => Run("ip", ["netns", "exec", netns, .. argv]);

    public CommandResult ExecChecked(string netns, params string[] argv)
    {
        var result = Exec(netns, argv);
        if (result.ExitCode != 0) throw new InvalidOperationException($"{string.Join(' ', argv)} in {netns} failed: {result}");
        return result;
    }

    /// <summary>Starts a command inside <paramref name="netns"/>; it is killed at Dispose at the latest.</summary>
    public Process Start(string netns, params string[] argv)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in (string[])["netns", "exec", netns, .. argv]) psi.ArgumentList.Add(a);
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {string.Join(' ', argv)} in {netns}");
        lock (_processes) _processes.Add(p);
        return p;
    }

    /// <summary>
    /// Runs <paramref name="action"/> on a thread that joined <paramref name="netns"/>: sockets it
    /// makes live in that namespace (and keep living there when used from other threads).
    /// </summary>
    public static T Enter<T>(string netns, Func<T> action)
    {
        T result = default!;
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle(Path.Combine("/run/netns", netns));
                if (setns((int)ns.DangerousGetHandle(), CloneNewNet) != 0)
                    throw new InvalidOperationException($"setns({netns}) failed: errno {Marshal.GetLastPInvokeError()}");
                result = action();
            }
            catch (Exception e)
            {
                error = ExceptionDispatchInfo.Capture(e);
            }
        })
        { IsBackground = true };
        thread.Start();
        thread.Join();
        error?.Throw();
        return result;
    }

    public static void Enter(string netns, Action action) => Enter(netns, () =>
    {
        action();
        return 0;
    });

    /// <summary>The kernel counters of one end's veth.</summary>
    public LinkCounters Counters(Side side)
    {
        var result = Run("ip", "-n", side.Netns, "-j", "-s", "link", "show", "dev", side.Interface);
        if (result.ExitCode != 0) throw new InvalidOperationException($"could not read counters of {side.Interface}: {result}");
        using var doc = JsonDocument.Parse(result.Stdout);
        var stats = doc.RootElement[0].GetProperty("stats64");
        var rx = stats.GetProperty("rx");
        var tx = stats.GetProperty("tx");
        return new LinkCounters(rx.GetProperty("packets").GetInt64(), rx.GetProperty("bytes").GetInt64(),
            tx.GetProperty("packets").GetInt64(), tx.GetProperty("bytes").GetInt64());
    }

    private const int CloneNewNet = 0x40000000;

#pragma warning disable SYSLIB1054 // DllImport: this helper library has no unsafe code for LibraryImport
    [DllImport("libc", SetLastError = true)]
    private static extern int setns(int fd, int nstype);
#pragma warning restore SYSLIB1054

    /// <summary>Kills what was started in the namespaces, then deletes both (their veths and attachments go with them).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        lock (_processes)
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
            _processes.Clear();
        }
        foreach (var ns in new[] { A.Netns, B.Netns })
        {
            // Processes that entered the namespace with `ip netns exec` and were not started here.
            var pids = Run("ip", "netns", "pids", ns);
            foreach (var pid in pids.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                Run("kill", "-9", pid);
            if (File.Exists(Path.Combine("/run/netns", ns))) Run("ip", "netns", "del", ns);
        }
    }
}
