using System.Globalization;
using System.Text.Json;

namespace Detect.Alerts.Policy;

/// <summary>
/// An enforcement decision, as the policy topic carries it (record type 65) from the policy engine
/// to the sensors of the target host, which apply it (or, in dry run, only check and log it) and
/// answer with a <see cref="PolicyAck"/>.
/// </summary>
public sealed record PolicyCommand
{
    /// <summary>Unique id (16 hex digits), echoed by the acknowledgement.</summary>
    public required string Id { get; init; }

    /// <summary>The rule that decided.</summary>
    public required string Rule { get; init; }

    public required PolicyAction Action { get; init; }

    /// <summary>block-source: the prefix ("203.0.113.7/32"); kill and deny-connect: the process id.</summary>
    public required string Target { get; init; }

    /// <summary>kill and deny-connect: the process's start time (CLOCK_BOOTTIME ns, from the entity key), so a reused pid is spared.</summary>
    public long ProcessStartNs { get; init; }

    /// <summary>deny-connect: the destination prefixes.</summary>
    public IReadOnlyList<string> Destinations { get; init; } = [];

    /// <summary>How long the action holds, in seconds; null: until removed.</summary>
    public double? TtlSeconds { get; init; }

    /// <summary>Why, in words (stored with the block entry, at most 120 bytes there).</summary>
    public required string Reason { get; init; }

    /// <summary>Decide and log only; the sensors check the target (allowlist, pid) but change nothing.</summary>
    public required bool DryRun { get; init; }

    public required string AlertId { get; init; }

    public required string Host { get; init; }

    /// <summary>The transport host id of the target host (hex), or null when unknown (then every host's sensors may act).</summary>
    public string? HostId { get; init; }

    public required string Family { get; init; }

    public required string Entity { get; init; }

    public float Score { get; init; }

    public long IssuedNs { get; init; }

    public TimeSpan? Ttl => TtlSeconds is { } s ? TimeSpan.FromSeconds(s) : null;

    public byte[] ToJsonUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, AlertJson.Options);

    public static PolicyCommand FromJson(ReadOnlySpan<byte> json) =>
        JsonSerializer.Deserialize<PolicyCommand>(json, AlertJson.Options) ?? throw new JsonException("a policy command cannot be null");

    public byte[] ToRecord() => ControlRecord.Encode(ControlRecordType.PolicyCommand, ToJsonUtf8(), IssuedNs);

    public override string ToString()
    {
        var ttl = TtlSeconds is { } s ? string.Create(CultureInfo.InvariantCulture, $" for {TimeSpan.FromSeconds(s):c}") : "";
        return $"{(DryRun ? "dry run: " : "")}{PolicyRule.ActionName(Action)} {Target}{ttl} on {Host} (rule {Rule}, alert {AlertId})";
    }
}

/// <summary>What became of a command.</summary>
public enum PolicyAckStatus
{
    /// <summary>In force in the kernel's maps.</summary>
    Applied,
    /// <summary>Checked (allowlist, process) and logged; nothing changed.</summary>
    DryRun,
    /// <summary>Not done on purpose: the allowlist protects the target, the process is gone or reused, the cgroup is not enforced.</summary>
    Refused,
    /// <summary>Tried and failed (the kernel or the maps said no).</summary>
    Failed,
}

/// <summary>A sensor host's answer to a <see cref="PolicyCommand"/> (policy-acks topic, record type 66).</summary>
public sealed record PolicyAck
{
    public required string CommandId { get; init; }

    public required PolicyAckStatus Status { get; init; }

    /// <summary>What was done or why not, in words.</summary>
    public required string Detail { get; init; }

    /// <summary>The host that answered (transport id, hex).</summary>
    public required string HostId { get; init; }

    public PolicyAction Action { get; init; }

    public string Target { get; init; } = "";

    /// <summary>When the entry stops acting, unix ns (null: never, or nothing applied).</summary>
    public long? ExpiresNs { get; init; }

    public long AckedNs { get; init; }

    public byte[] ToJsonUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, AlertJson.Options);

    public static PolicyAck FromJson(ReadOnlySpan<byte> json) =>
        JsonSerializer.Deserialize<PolicyAck>(json, AlertJson.Options) ?? throw new JsonException("a policy acknowledgement cannot be null");

    public byte[] ToRecord() => ControlRecord.Encode(ControlRecordType.PolicyAck, ToJsonUtf8(), AckedNs);

    public override string ToString() => $"{StatusName(Status)}: {PolicyRule.ActionName(Action)} {Target}: {Detail}";

    public static string StatusName(PolicyAckStatus status) => status switch
    {
        PolicyAckStatus.DryRun => "dry-run",
        _ => status.ToString().ToLowerInvariant(),
    };
}
