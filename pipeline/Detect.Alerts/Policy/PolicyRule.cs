using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Detect.Alerts.Policy;

/// <summary>What a rule does to the entity of an alert.</summary>
public enum PolicyAction
{
    /// <summary>Flow alerts: drop the source prefix at the watched interfaces (XDP), for the rule's TTL.</summary>
    BlockSource,
    /// <summary>Syscall alerts: SIGKILL the process (if it is still the same process) on its next syscall.</summary>
    Kill,
    /// <summary>Syscall alerts: connect()/sendmsg() to the rule's destinations fail in the process's cgroup (which the sensors must enforce).</summary>
    DenyConnect,
}

/// <summary>
/// One rule: alerts of <see cref="Family"/> scoring at least <see cref="MinScore"/> get
/// <see cref="Action"/>. Rules are tried in order; the first that matches decides.
/// </summary>
public sealed record PolicyRule
{
    public required string Name { get; init; }

    /// <summary>`flow` or `syscall`.</summary>
    public required string Family { get; init; }

    public required PolicyAction Action { get; init; }

    /// <summary>Calibrated score from which the rule acts (1 threshold, 1.5 medium, 2 high, 3 critical).</summary>
    public float MinScore { get; init; } = 2f;

    /// <summary>How long the action holds (block-source, deny-connect); null: until removed. Ignored by kill.</summary>
    public TimeSpan? Ttl { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>block-source: prefix length for IPv4 sources (32: the address itself).</summary>
    public int PrefixV4 { get; init; } = 32;

    /// <summary>block-source: prefix length for IPv6 sources (64 would take the whole subnet).</summary>
    public int PrefixV6 { get; init; } = 128;

    /// <summary>deny-connect: destination prefixes the process's cgroup may no longer reach.</summary>
    public IReadOnlyList<string> Destinations { get; init; } = [];

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name)) throw new ArgumentException("a policy rule needs a name");
        if (Family is not ("flow" or "syscall")) throw new ArgumentException($"rule {Name}: family '{Family}' is not flow or syscall");
        if (Action == PolicyAction.BlockSource && Family != "flow") throw new ArgumentException($"rule {Name}: block-source acts on flow alerts (their entity is a source address)");
        if (Action is PolicyAction.Kill or PolicyAction.DenyConnect && Family != "syscall") throw new ArgumentException($"rule {Name}: {ActionName(Action)} acts on syscall alerts (their entity is a process)");
        if (!(MinScore >= 1f)) throw new ArgumentException($"rule {Name}: min_score {MinScore} is below 1.0, the models' threshold: it would act on windows that are not anomalous");
        if (Ttl is { } t && t <= TimeSpan.Zero) throw new ArgumentException($"rule {Name}: ttl must be positive");
        if (PrefixV4 is < 8 or > 32) throw new ArgumentException($"rule {Name}: prefix_v4 must be 8-32");
        if (PrefixV6 is < 16 or > 128) throw new ArgumentException($"rule {Name}: prefix_v6 must be 16-128");
        if (Action == PolicyAction.DenyConnect)
        {
            if (Destinations.Count == 0) throw new ArgumentException($"rule {Name}: deny-connect needs destinations (prefixes)");
            foreach (var d in Destinations)
                if (!IPNetwork.TryParse(d, out _) && !IPAddress.TryParse(d, out _))
                    throw new ArgumentException($"rule {Name}: destination '{d}' is not an address or prefix");
        }
    }

    public static string ActionName(PolicyAction action) => action switch
    {
        PolicyAction.BlockSource => "block-source",
        PolicyAction.Kill => "kill",
        PolicyAction.DenyConnect => "deny-connect",
        _ => action.ToString(),
    };

    public override string ToString()
    {
        var ttl = Action == PolicyAction.Kill ? "" : Ttl is { } t ? " for " + t.ToString("c", CultureInfo.InvariantCulture) : " until removed";
        return string.Create(CultureInfo.InvariantCulture, $"{Name}: {Family} score >= {MinScore:F1} -> {ActionName(Action)}{ttl}");
    }
}

/// <summary>
/// The policy file (JSON): rules in order. `detect up --policy FILE`; without one the defaults
/// below apply. Example:
/// <code>
/// { "rules": [
///   { "name": "block-scanners", "family": "flow", "action": "block-source", "min_score": 2.0, "ttl": "00:10:00" },
///   { "name": "kill-critical", "family": "syscall", "action": "kill", "min_score": 3.0 } ] }
/// </code>
/// </summary>
public sealed record PolicyConfig
{
    public IReadOnlyList<PolicyRule> Rules { get; init; } = Defaults;

    /// <summary>High flow alerts block their source for 10 minutes; critical syscall alerts kill their process.</summary>
    public static readonly IReadOnlyList<PolicyRule> Defaults =
    [
        new PolicyRule { Name = "block-flow-sources", Family = "flow", Action = PolicyAction.BlockSource, MinScore = 2f, Ttl = TimeSpan.FromMinutes(10) },
        new PolicyRule { Name = "kill-critical-processes", Family = "syscall", Action = PolicyAction.Kill, MinScore = 3f, Ttl = null },
    ];

    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    public static PolicyConfig Parse(string json)
    {
        PolicyConfig? config;
        try
        {
            config = JsonSerializer.Deserialize<PolicyConfig>(json, JsonOptions);
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"policy: {e.Message}", e);
        }
        if (config == null) throw new ArgumentException("policy: the file holds null");
        config.Validate();
        return config;
    }

    public static PolicyConfig Load(string path) => Parse(File.ReadAllText(path));

    public void Validate()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var r in Rules)
        {
            r.Validate();
            if (!names.Add(r.Name)) throw new ArgumentException($"policy: rule name '{r.Name}' appears twice");
        }
    }

    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions(JsonOptions) { WriteIndented = true });
}
