using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Detect.Alerts.Policy;

/// <summary>How the policy engine runs.</summary>
public sealed record PolicyOptions
{
    public PolicyConfig Config { get; init; } = new();

    /// <summary>
    /// Apply decisions. Off (the default): every command says dry run; the sensors check the target
    /// (allowlist, process) and log what they would do, and change nothing.
    /// </summary>
    public bool Enforce { get; init; }

    /// <summary>A kill of the same process is not decided twice within this long (it is either dead or spared).</summary>
    public TimeSpan KillRepeat { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Targets remembered to avoid repeating a decision (bounded memory).</summary>
    public int MaxActiveTargets { get; init; } = 100_000;
}

/// <summary>What the engine decided, from its start.</summary>
public sealed record PolicyStats
{
    public long AlertsSeen { get; init; }
    /// <summary>Commands issued (dry run or not).</summary>
    public long Decisions { get; init; }
    public long DryRunDecisions { get; init; }
    /// <summary>Alerts a rule matched whose target already had the same action in force (not decided again).</summary>
    public long Repeats { get; init; }
    /// <summary>Alerts a rule matched whose entity could not be turned into a target (with the reason in LastProblem).</summary>
    public long Unusable { get; init; }
    public string? LastProblem { get; init; }
    public IReadOnlyDictionary<string, long> ByRule { get; init; } = new Dictionary<string, long>();
}

/// <summary>
/// Confident alerts -> enforcement commands. The first rule whose family and minimum score match
/// an alert decides, at most once per alert; a target whose action is still in force (its TTL, or
/// the kill repeat window) is not decided again. Commands say DryRun unless
/// <see cref="PolicyOptions.Enforce"/>. The engine only decides: the sensors of the target host
/// check the allowlist and the process, apply, and acknowledge. Single-threaded (the pipeline
/// thread); Stats may be read from any thread.
/// </summary>
public sealed class PolicyEngine
{
    private readonly PolicyOptions _options;
    private readonly Func<DateTime> _clock;
    private readonly Dictionary<(PolicyAction, string Host, string Target), DateTime> _active = [];
    private readonly Dictionary<string, long> _byRule = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private long _seen, _decisions, _dry, _repeats, _unusable;
    private string? _lastProblem;

    public PolicyEngine(PolicyOptions? options = null, Func<DateTime>? clock = null)
    {
        _options = options ?? new PolicyOptions();
        _options.Config.Validate();
        _clock = clock ?? (() => DateTime.UtcNow);
    }

    public PolicyOptions Options => _options;

    public IReadOnlyList<PolicyRule> Rules => _options.Config.Rules;

    /// <summary>The command for <paramref name="alert"/>, or null when no rule acts on it (or its action is already in force).</summary>
    public PolicyCommand? Decide(Alert alert)
    {
        ArgumentNullException.ThrowIfNull(alert);
        Interlocked.Increment(ref _seen);
        var rule = _options.Config.Rules.FirstOrDefault(r => r.Family == alert.Family && alert.Score >= r.MinScore);
        if (rule == null) return null;

        string target;
        long startNs = 0;
        try
        {
            (target, startNs) = TargetOf(rule, alert);
        }
        catch (FormatException e)
        {
            lock (_gate)
            {
                _unusable++;
                _lastProblem = $"rule {rule.Name}, alert {alert.Id}: {e.Message}";
            }
            return null;
        }

        var now = _clock();
        var key = (rule.Action, alert.Host, target);
        lock (_gate)
        {
            if (_active.TryGetValue(key, out var until) && until > now)
            {
                _repeats++;
                return null;
            }
            var holds = rule.Action == PolicyAction.Kill ? _options.KillRepeat : rule.Ttl ?? TimeSpan.MaxValue;
            if (_active.Count >= _options.MaxActiveTargets)
            {
                foreach (var (k, u) in _active.ToList())
                    if (u <= now) _active.Remove(k);
                if (_active.Count >= _options.MaxActiveTargets) _active.Clear();
            }
            _active[key] = holds == TimeSpan.MaxValue || now > DateTime.MaxValue - holds ? DateTime.MaxValue : now + holds;
            _decisions++;
            if (!_options.Enforce) _dry++;
            _byRule[rule.Name] = _byRule.GetValueOrDefault(rule.Name) + 1;
        }

        var nowNs = (now - DateTime.UnixEpoch).Ticks * 100;
        return new PolicyCommand
        {
            Id = Alert.MakeId("policy", rule.Name, target, alert.WindowStartNs ^ nowNs),
            Rule = rule.Name,
            Action = rule.Action,
            Target = target,
            ProcessStartNs = startNs,
            Destinations = rule.Action == PolicyAction.DenyConnect ? rule.Destinations : [],
            TtlSeconds = rule.Action == PolicyAction.Kill ? null : rule.Ttl?.TotalSeconds,
            Reason = Truncate(string.Create(CultureInfo.InvariantCulture,
                $"detect {rule.Name}: {alert.Family} score {alert.Score:F2} {alert.Severity} ({alert.Model}) alert {alert.Id}"), 120),
            DryRun = !_options.Enforce,
            AlertId = alert.Id,
            Host = alert.Host,
            HostId = alert.HostId,
            Family = alert.Family,
            Entity = alert.Entity,
            Score = alert.Score,
            IssuedNs = nowNs,
        };
    }

    /// <summary>The target of a rule's action for an alert's entity: a masked prefix for a source, a pid (and start time) for a process.</summary>
    public static (string Target, long ProcessStartNs) TargetOf(PolicyRule rule, Alert alert)
    {
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentNullException.ThrowIfNull(alert);
        switch (rule.Action)
        {
            case PolicyAction.BlockSource:
            {
                if (!IPAddress.TryParse(alert.Entity, out var address))
                    throw new FormatException($"flow entity '{alert.Entity}' is not an IP address");
                if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
                var v4 = address.AddressFamily == AddressFamily.InterNetwork;
                var length = v4 ? rule.PrefixV4 : rule.PrefixV6;
                var bytes = address.GetAddressBytes();
                for (var i = 0; i < bytes.Length; i++)
                    bytes[i] &= (byte)(0xFF << (8 - Math.Clamp(length - i * 8, 0, 8)));
                return (string.Create(CultureInfo.InvariantCulture, $"{new IPAddress(bytes)}/{length}"), 0);
            }
            default:
            {
                // Syscall entities are "<tgid>@<start_ns>", then " <comm>" when the sensor named the command (FEATURES.md).
                var at = alert.Entity.IndexOf('@', StringComparison.Ordinal);
                var startText = at < 0 ? default : alert.Entity.AsSpan(at + 1);
                var space = startText.IndexOf(' ');
                if (space >= 0) startText = startText[..space];
                if (at <= 0
                    || !int.TryParse(alert.Entity.AsSpan(0, at), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0
                    || !long.TryParse(startText, NumberStyles.None, CultureInfo.InvariantCulture, out var start))
                    throw new FormatException($"syscall entity '{alert.Entity}' is not <tgid>@<start_ns>[ <comm>]");
                return (pid.ToString(CultureInfo.InvariantCulture), start);
            }
        }
    }

    private static string Truncate(string text, int maxBytes)
    {
        if (System.Text.Encoding.UTF8.GetByteCount(text) <= maxBytes) return text;
        while (text.Length > 0 && System.Text.Encoding.UTF8.GetByteCount(text) > maxBytes) text = text[..^1];
        return text;
    }

    public PolicyStats Stats
    {
        get
        {
            lock (_gate)
            {
                return new PolicyStats
                {
                    AlertsSeen = Interlocked.Read(ref _seen),
                    Decisions = _decisions,
                    DryRunDecisions = _dry,
                    Repeats = _repeats,
                    Unusable = _unusable,
                    LastProblem = _lastProblem,
                    ByRule = new Dictionary<string, long>(_byRule, StringComparer.Ordinal),
                };
            }
        }
    }
}
