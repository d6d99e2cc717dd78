using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Detect.Records;
using Detect.Sensors.Bpf;

namespace Detect.Sensors.Enforcement;

/// <summary>One protected prefix and why it is protected.</summary>
public sealed record AllowRule(IPNetwork Network, AllowKind Kind, string Note)
{
    public string Describe() => Kind switch
    {
        AllowKind.Loopback => $"{Network} (loopback)",
        AllowKind.Host => $"{Network} ({Note})",
        AllowKind.Configured => $"{Network} (configured allowlist)",
        _ => Network.ToString(),
    };
}

/// <summary>
/// A block was refused because it would cut what the allowlist protects. The message says which
/// prefix and why, e.g. "refusing to block 127.0.0.0/8: it overlaps 127.0.0.0/8 (loopback) on the allowlist".
/// </summary>
public sealed class AllowlistException : InvalidOperationException
{
    public AllowlistException(string message) : base(message) { }

    public AllowlistException() : base("the allowlist protects this target") { }

    public AllowlistException(string message, Exception inner) : base(message, inner) { }

    public AllowRule? Rule { get; init; }
}

/// <summary>
/// What enforcement must never cut: loopback, the host's own addresses (and those of the
/// namespaces it enforces in), and the CIDRs the operator configured. A block overlapping any of
/// them, in either direction (a /8 that contains the host's address, or a /32 inside a protected
/// /16), is refused. The programs check the same prefixes again in the kernel.
/// </summary>
public sealed class Allowlist
{
    private readonly List<AllowRule> _rules = [];

    public IReadOnlyList<AllowRule> Rules => _rules;

    public static readonly IPNetwork LoopbackV4 = new(IPAddress.Parse("127.0.0.0"), 8);
    public static readonly IPNetwork LoopbackV6 = new(IPAddress.IPv6Loopback, 128);

    /// <summary>Loopback and the addresses of this process's network namespace.</summary>
    public static Allowlist ForThisHost()
    {
        var list = new Allowlist();
        list.Add(LoopbackV4, AllowKind.Loopback, "loopback");
        list.Add(LoopbackV6, AllowKind.Loopback, "loopback");
        list.AddHostAddresses(null);
        return list;
    }

    public void Add(IPNetwork network, AllowKind kind, string note)
    {
        if (_rules.Any(r => r.Network.Equals(network))) return;
        _rules.Add(new AllowRule(network, kind, note));
    }

    /// <summary>Every unicast address of the interfaces in <paramref name="netns"/> (null: this process's namespace).</summary>
    public void AddHostAddresses(string? netns)
    {
        foreach (var (address, iface) in HostAddresses(netns))
        {
            var net = new IPNetwork(address, address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128);
            Add(net, IPAddress.IsLoopback(address) ? AllowKind.Loopback : AllowKind.Host,
                $"an address of this host on {iface}{(netns != null ? " in " + netns : "")}");
        }
    }

    public static List<(IPAddress Address, string Interface)> HostAddresses(string? netns) => NetNamespace.Run(netns, () =>
    {
        var result = new List<(IPAddress, string)>();
        foreach (var nic in NetworkInterface.GetAllNetworkInterfaces())
        {
            foreach (var u in nic.GetIPProperties().UnicastAddresses)
            {
                var a = u.Address;
                if (a.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)) continue;
                result.Add((new IPAddress(a.GetAddressBytes()), nic.Name));
            }
        }
        return result;
    });

    /// <summary>The first rule <paramref name="network"/> overlaps, or null.</summary>
    public AllowRule? FindOverlap(IPNetwork network)
    {
        foreach (var r in _rules)
        {
            if (r.Network.BaseAddress.AddressFamily != network.BaseAddress.AddressFamily) continue;
            if (r.Network.Contains(network.BaseAddress) || network.Contains(r.Network.BaseAddress)) return r;
        }
        return null;
    }

    /// <summary>Throws <see cref="AllowlistException"/> when <paramref name="network"/> overlaps a protected prefix.</summary>
    public void Check(IPNetwork network, BlockKind kind)
    {
        var rule = FindOverlap(network);
        if (rule == null) return;
        var what = kind == BlockKind.Source ? "block traffic from" : "deny connections to";
        throw new AllowlistException($"refusing to {what} {network}: it overlaps {rule.Describe()} on the allowlist") { Rule = rule };
    }
}
