using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Detect.Sensors.Enforcement;

/// <summary>What an entry blocks.</summary>
public enum BlockKind
{
    /// <summary>Packets from a source prefix are dropped (XDP, on the enforced interfaces).</summary>
    Source,
    /// <summary>connect()/sendmsg() to a destination prefix fail with EPERM (in the enforced cgroups).</summary>
    Destination,
    /// <summary>The process is killed (SIGKILL) on its next syscall.</summary>
    Process,
}

/// <summary>A request to block something (<see cref="EnforcementTable.Add"/>).</summary>
public sealed record BlockRequest
{
    public required BlockKind Kind { get; init; }

    /// <summary>Source and destination entries: the prefix.</summary>
    public IPNetwork? Prefix { get; init; }

    /// <summary>Process entries: the process id (tgid).</summary>
    public int Pid { get; init; }

    /// <summary>How long the entry acts; null: until removed.</summary>
    public TimeSpan? Ttl { get; init; }

    /// <summary>Why (kept with the entry; at most 120 UTF-8 bytes are stored).</summary>
    public string Reason { get; init; } = "";

    /// <summary>Count the hits without acting.</summary>
    public bool DryRun { get; init; }

    /// <summary>"source", "dest"/"destination" or "pid"/"process".</summary>
    public static BlockKind ParseKind(string text) => text.ToLowerInvariant() switch
    {
        "source" or "src" => BlockKind.Source,
        "dest" or "destination" or "dst" => BlockKind.Destination,
        "pid" or "process" => BlockKind.Process,
        _ => throw new ArgumentException($"'{text}' is not a kind of block: use source, dest or pid"),
    };

    /// <summary>
    /// An address (a /32 or /128) or a prefix in CIDR notation. Host bits set beyond the prefix
    /// are refused rather than silently cleared: "10.1.2.3/8" blocks far more than it reads.
    /// </summary>
    public static IPNetwork ParsePrefix(string text)
    {
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var addressText = slash < 0 ? text : text[..slash];
        if (!IPAddress.TryParse(addressText, out var address))
            throw new ArgumentException($"'{text}' is not an IP address or prefix (e.g. 203.0.113.7, 203.0.113.0/24, 2001:db8::/32)");
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        address = new IPAddress(address.GetAddressBytes()); // no scope id
        var max = address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        var length = max;
        if (slash >= 0 && (!int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out length) || length < 0 || length > max))
            throw new ArgumentException($"'{text}': the prefix length must be 0-{max}");
        var masked = Mask(address, length);
        if (!masked.Equals(address))
            throw new ArgumentException($"'{text}' has bits set beyond its /{length} prefix; did you mean {masked}/{length}?");
        return new IPNetwork(masked, length);
    }

    internal static IPAddress Mask(IPAddress address, int length)
    {
        var bytes = address.GetAddressBytes();
        for (var i = 0; i < bytes.Length; i++)
        {
            var keep = Math.Clamp(length - i * 8, 0, 8);
            bytes[i] &= (byte)(0xFF << (8 - keep));
        }
        return new IPAddress(bytes);
    }

    public static BlockRequest Parse(string kind, string target, TimeSpan? ttl = null, string reason = "", bool dryRun = false)
    {
        var k = ParseKind(kind);
        if (k == BlockKind.Process)
        {
            if (!int.TryParse(target, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0)
                throw new ArgumentException($"'{target}' is not a process id");
            return new BlockRequest { Kind = k, Pid = pid, Ttl = ttl, Reason = reason, DryRun = dryRun };
        }
        return new BlockRequest { Kind = k, Prefix = ParsePrefix(target), Ttl = ttl, Reason = reason, DryRun = dryRun };
    }

    public string Target => Kind == BlockKind.Process ? Pid.ToString(CultureInfo.InvariantCulture) : Prefix?.ToString() ?? "?";
}

/// <summary>One entry of the block lists, as <see cref="EnforcementTable.List"/> reads it.</summary>
public sealed record BlockEntry(
    BlockKind Kind,
    string Target,
    IPNetwork? Prefix,
    int Pid,
    DateTimeOffset Added,
    DateTimeOffset? Expires,
    bool Expired,
    ulong Hits,
    DateTimeOffset? LastHit,
    string Reason,
    bool DryRun)
{
    public static string KindName(BlockKind kind) => kind switch
    {
        BlockKind.Source => "source",
        BlockKind.Destination => "dest",
        _ => "pid",
    };
}
