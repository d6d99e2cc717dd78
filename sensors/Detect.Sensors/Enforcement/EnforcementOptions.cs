using System.Net;

namespace Detect.Sensors.Enforcement;

/// <summary>An interface by name, in a network namespace (null: the agent's own).</summary>
public readonly record struct NetInterface(string Name, string? Netns = null)
{
    /// <summary>"eth1" or "veth0@detect-lab" (interface @ namespace name).</summary>
    public static NetInterface Parse(string text)
    {
        var at = text.IndexOf('@', StringComparison.Ordinal);
        if (at == 0 || at == text.Length - 1 || text.Length == 0) throw new ArgumentException($"'{text}' is not an interface (NAME or NAME@NETNS)");
        return at < 0 ? new NetInterface(text) : new NetInterface(text[..at], text[(at + 1)..]);
    }

    public override string ToString() => Netns == null ? Name : $"{Name}@{Netns}";
}

/// <summary>Options of <see cref="Enforcer.Start"/>.</summary>
public sealed record EnforcementOptions
{
    /// <summary>Where the maps and links are pinned (they outlive the agent).</summary>
    public string PinRoot { get; init; } = EnforcementTable.DefaultPinRoot;

    /// <summary>
    /// Entries the agent itself adds (<see cref="Enforcer.Block"/>, e.g. from the policy engine)
    /// only count their hits and log what they would have done. On by default: turning the
    /// product's own decisions into drops is the operator's explicit choice. Entries added
    /// through <see cref="EnforcementTable.Add"/> (`detect block add`) are explicit and act.
    /// </summary>
    public bool DryRun { get; init; } = true;

    /// <summary>Interfaces whose ingress drops blocked sources (XDP). The user names them; none by default.</summary>
    public IReadOnlyList<NetInterface> Interfaces { get; init; } = [];

    /// <summary>cgroup v2 directories whose processes may not connect to blocked destinations.</summary>
    public IReadOnlyList<string> Cgroups { get; init; } = [];

    /// <summary>
    /// Allow the cgroup v2 root in <see cref="Cgroups"/> (every process of the host). Off: the
    /// root is refused, so a mistaken path cannot put the whole host under the deny list.
    /// </summary>
    public bool AllowRootCgroup { get; init; }

    /// <summary>Attach the kill-list program (tp_btf/sys_enter: one array lookup per syscall while the list is empty).</summary>
    public bool KillProcesses { get; init; } = true;

    /// <summary>Prefixes never to block, beyond loopback and the host's own addresses.</summary>
    public IReadOnlyList<IPNetwork> Allow { get; init; } = [];

    /// <summary>How often expired entries are swept away.</summary>
    public TimeSpan SweepInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Where the agent's decisions (dry-run ones included) are told; null: nowhere.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>Folder of the BPF objects; default: beside the assemblies (bpf/), then the checkout's bpf/build.</summary>
    public string? ObjectDirectory { get; init; }
}
