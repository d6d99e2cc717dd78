using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Detect.Records;

// Mirror of bpf/enforce.h, byte for byte (checked by Records_MatchTheCompiledHeader like the
// records): the keys and values of the pinned enforcement maps that the agent, `detect block`
// and bpf/enforce.bpf.c share.

public static class EnforceFormat
{
    /// <summary>DETECT_ENFORCE_VERSION.</summary>
    public const uint Version = 1;

    /// <summary>DETECT_REASON_LEN.</summary>
    public const int ReasonLength = 120;
}

[InlineArray(4)]
public struct Address4Buffer
{
    private byte _element0;
}

[InlineArray(EnforceFormat.ReasonLength)]
public struct ReasonBuffer
{
    private byte _element0;
}

/// <summary>struct detect_lpm_v4: an IPv4 prefix as the LPM trie wants it.</summary>
[CStruct("detect_lpm_v4")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct LpmKeyV4
{
    public const int Size = 8;
    [FieldOffset(0)] public uint Prefixlen;
    [FieldOffset(4)] public Address4Buffer Addr;

    public static LpmKeyV4 From(IPNetwork network)
    {
        if (network.BaseAddress.AddressFamily != AddressFamily.InterNetwork) throw new ArgumentException($"{network} is not IPv4", nameof(network));
        var key = new LpmKeyV4 { Prefixlen = (uint)network.PrefixLength };
        network.BaseAddress.TryWriteBytes(key.Addr, out _);
        return key;
    }

    public readonly IPNetwork Network => new(new IPAddress(Addr), (int)Prefixlen);
}

/// <summary>struct detect_lpm_v6.</summary>
[CStruct("detect_lpm_v6")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct LpmKeyV6
{
    public const int Size = 20;
    [FieldOffset(0)] public uint Prefixlen;
    [FieldOffset(4)] public AddressBuffer Addr;

    public static LpmKeyV6 From(IPNetwork network)
    {
        if (network.BaseAddress.AddressFamily != AddressFamily.InterNetworkV6) throw new ArgumentException($"{network} is not IPv6", nameof(network));
        var key = new LpmKeyV6 { Prefixlen = (uint)network.PrefixLength };
        network.BaseAddress.TryWriteBytes(key.Addr, out _);
        return key;
    }

    public readonly IPNetwork Network => new(new IPAddress(Addr), (int)Prefixlen);
}

/// <summary>DETECT_ENFORCE_F_*.</summary>
[Flags]
public enum EnforceFlags : uint
{
    None = 0,
    /// <summary>Count the hits, do not act.</summary>
    DryRun = 0x1,
}

/// <summary>struct detect_enforce_entry: the value of every block-list entry.</summary>
[CStruct("detect_enforce_entry")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct EnforceEntry
{
    public const int Size = 48;
    /// <summary>CLOCK_BOOTTIME ns after which the entry no longer acts; 0: never.</summary>
    [FieldOffset(0)] public ulong ExpiresNs;
    [FieldOffset(8)] public ulong AddedNs;
    [FieldOffset(16)] public ulong Hits;
    [FieldOffset(24)] public ulong LastHitNs;
    [FieldOffset(32)] public uint ReasonId;
    [FieldOffset(36)] public EnforceFlags Flags;
    /// <summary>Kill list: the process's start time in clock ticks since boot (/proc/PID/stat field 22).</summary>
    [FieldOffset(40)] public ulong StartTicks;
}

/// <summary>struct detect_enforce_reason.</summary>
[CStruct("detect_enforce_reason")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct EnforceReason
{
    public const int Size = 128;
    [FieldOffset(0)] public uint Length;
    [FieldOffset(4)] public uint Pad0;
    [FieldOffset(8)] public ReasonBuffer Text;

    public static EnforceReason From(string text)
    {
        var r = new EnforceReason();
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        var n = Math.Min(bytes.Length, EnforceFormat.ReasonLength);
        // Do not cut a UTF-8 sequence in half.
        while (n > 0 && n < bytes.Length && (bytes[n] & 0xC0) == 0x80) n--;
        bytes.AsSpan(0, n).CopyTo(r.Text);
        r.Length = (uint)n;
        return r;
    }

    public readonly override string ToString() => RecordText.Decode(Text, (int)Math.Min(Length, (uint)EnforceFormat.ReasonLength));
}

/// <summary>enum detect_allow_kind.</summary>
public enum AllowKind : uint
{
    None = 0,
    Loopback = 1,
    Host = 2,
    Configured = 3,
}

/// <summary>struct detect_allow_entry.</summary>
[CStruct("detect_allow_entry")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct AllowEntry
{
    public const int Size = 8;
    [FieldOffset(0)] public AllowKind Kind;
    [FieldOffset(4)] public uint Ifindex;
}

/// <summary>struct detect_enforce_control.</summary>
[CStruct("detect_enforce_control")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct EnforceControl
{
    public const int Size = 16;
    [FieldOffset(0)] public uint Version;
    [FieldOffset(4)] public uint KillArmed;
    [FieldOffset(8)] public uint AgentTgid;
    [FieldOffset(12)] public uint Pad0;
}

/// <summary>struct detect_enforce_counters: what enforcement did and could not do (summed over CPUs).</summary>
[CStruct("detect_enforce_counters")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct EnforceCounters
{
    public const int Size = 96;
    [FieldOffset(0)] public ulong PacketsChecked;
    [FieldOffset(8)] public ulong Dropped;
    [FieldOffset(16)] public ulong DropDryRun;
    [FieldOffset(24)] public ulong Denied;
    [FieldOffset(32)] public ulong DenyDryRun;
    [FieldOffset(40)] public ulong Killed;
    [FieldOffset(48)] public ulong KillDryRun;
    [FieldOffset(56)] public ulong ExpiredSeen;
    [FieldOffset(64)] public ulong AllowlistOverrode;
    [FieldOffset(72)] public ulong MissedSignal;
    [FieldOffset(80)] public ulong MissedStalePid;
    [FieldOffset(88)] public ulong MissedUnparsed;

    public static EnforceCounters operator +(EnforceCounters a, EnforceCounters b)
    {
        var sa = MemoryMarshal.Cast<EnforceCounters, ulong>(MemoryMarshal.CreateSpan(ref a, 1));
        var sb = MemoryMarshal.Cast<EnforceCounters, ulong>(MemoryMarshal.CreateSpan(ref b, 1));
        for (var i = 0; i < sa.Length; i++) sa[i] += sb[i];
        return a;
    }
}
