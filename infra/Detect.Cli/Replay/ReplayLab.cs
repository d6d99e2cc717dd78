using System.Globalization;

namespace Detect.Cli.Replay;

/// <summary>
/// Two network namespaces made for one replay, `detect-replay-&lt;pid&gt;-&lt;n&gt;-tx` and `-rx`, joined by
/// a veth pair (`drp&lt;id&gt;t` / `drp&lt;id&gt;r`) that carries nothing but the replayed frames: no
/// addresses, IPv6 off (no neighbour discovery), the largest MTU (captures hold frames bigger
/// than 1500 bytes). tcpreplay sends from the tx end; the flow sensor listens on the rx end.
/// Dispose deletes both namespaces, which takes the veths and every program attached to them
/// along. Namespaces left by a replay whose process died are removed by the next one.
/// </summary>
internal sealed class ReplayLab : IDisposable
{
    private const string Prefix = "detect-replay-";
    private static int _counter;
    private int _disposed;

    private ReplayLab(string id)
    {
        Id = id;
        TxNetns = $"{Prefix}{id}-tx";
        RxNetns = $"{Prefix}{id}-rx";
        var shortId = (Environment.ProcessId * 31 + _counter).ToString("x6", CultureInfo.InvariantCulture)[^6..];
        TxInterface = $"drp{shortId}t";
        RxInterface = $"drp{shortId}r";
    }

    public string Id { get; }
    public string TxNetns { get; }
    public string RxNetns { get; }
    public string TxInterface { get; }
    public string RxInterface { get; }

    /// <summary>The receiving end as the flow sensor names it ("drp..r@detect-replay-...-rx").</summary>
    public string RxSpec => $"{RxInterface}@{RxNetns}";

    public static ReplayLab Create()
    {
        RemoveOrphans();
        var n = Interlocked.Increment(ref _counter);
        var lab = new ReplayLab($"{Environment.ProcessId}-{n}");
        try
        {
            Ip("netns", "add", lab.TxNetns);
            Ip("netns", "add", lab.RxNetns);
            foreach (var ns in new[] { lab.TxNetns, lab.RxNetns })
            {
                // Before the veth exists, so it never gets an IPv6 link-local address or sends a solicitation.
                Exec(ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
            }
            Ip("link", "add", lab.TxInterface, "netns", lab.TxNetns, "type", "veth", "peer", "name", lab.RxInterface, "netns", lab.RxNetns);
            Ip("-n", lab.TxNetns, "link", "set", lab.TxInterface, "mtu", "65535", "up");
            Ip("-n", lab.RxNetns, "link", "set", lab.RxInterface, "mtu", "65535", "up");
            return lab;
        }
        catch
        {
            lab.Dispose();
            throw;
        }
    }

    /// <summary>Frames the receiving end got (its kernel counter), or -1 when it cannot be read.</summary>
    public long RxPackets()
    {
        var r = Run("ip", "-n", RxNetns, "-j", "-s", "link", "show", "dev", RxInterface);
        if (r.Code != 0) return -1;
        using var doc = System.Text.Json.JsonDocument.Parse(r.Stdout);
        return doc.RootElement[0].GetProperty("stats64").GetProperty("rx").GetProperty("packets").GetInt64();
    }

    /// <summary>Removes the namespaces of replays whose process no longer runs (a crash, a kill -9).</summary>
    public static void RemoveOrphans()
    {
        if (!Directory.Exists("/run/netns")) return;
        foreach (var path in Directory.GetFiles("/run/netns", Prefix + "*"))
        {
            var name = Path.GetFileName(path);
            var rest = name[Prefix.Length..];
            var dash = rest.IndexOf('-', StringComparison.Ordinal);
            if (dash <= 0 || !int.TryParse(rest.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) continue;
            if (Directory.Exists($"/proc/{pid}")) continue;
            Run("ip", "netns", "del", name);
        }
    }

    private static void Ip(params string[] args)
    {
        var r = Run("ip", args);
        if (r.Code != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed: {r.Stderr.Trim()}");
    }

    private static void Exec(string netns, params string[] argv)
    {
        var r = Run("ip", ["netns", "exec", netns, .. argv]);
        if (r.Code != 0) throw new InvalidOperationException($"{string.Join(' ', argv)} in {netns} failed: {r.Stderr.Trim()}");
    }

    private static (int Code, string Stdout, string Stderr) Run(string program, params string[] args) => ChildProcess.Run(program, args);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var ns in new[] { TxNetns, RxNetns })
        {
            // Whatever still runs inside (a tcpreplay we could not stop) goes first.
            var pids = Run("ip", "netns", "pids", ns).Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var pid in pids) Run("kill", "-9", pid);
            if (File.Exists(Path.Combine("/run/netns", ns))) Run("ip", "netns", "del", ns);
        }
    }
}
