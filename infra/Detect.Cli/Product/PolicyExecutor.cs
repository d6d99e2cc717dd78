using System.Globalization;
using System.Net;
using System.Text.Json;
using Detect.Alerts;
using Detect.Alerts.Policy;
using Detect.Sensors.Enforcement;
using Detect.Transport;

namespace Detect.Cli.Product;

/// <summary>Settings of the sensor side of the policy engine.</summary>
public sealed record PolicyExecutorOptions
{
    /// <summary>This host (commands keyed to it or to 0 are ours).</summary>
    public required ulong HostId { get; init; }

    /// <summary>The sensors' enforcer when this host enforces (`--enforce`); null: nothing is applied, commands are checked and logged.</summary>
    public Enforcer? Enforcer { get; init; }

    /// <summary>Prefixes never to block, checked in dry run (an enforcer checks its own pinned allowlist).</summary>
    public Allowlist Allowlist { get; init; } = Allowlist.ForThisHost();

    /// <summary>Where each decision is told.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>
/// The sensors' side of the policy engine: reads the commands for this host from the policy topic,
/// applies them through the sensors' <see cref="Enforcer"/> (block a source prefix with its TTL,
/// kill a process that is still the one the alert was about, deny connects in an enforced cgroup),
/// or in dry run only checks them (allowlist, process) and logs what it would do, and answers every
/// command on the policy-acks topic. A command the allowlist protects is refused, never applied.
/// </summary>
public sealed class PolicyExecutor : IDisposable
{
    private const ulong TickNs = 10_000_000; // /proc/PID/stat start times are in USER_HZ (100) ticks

    private readonly ITransport? _transport;
    private readonly PolicyExecutorOptions _options;
    private readonly RecordPublisher? _acks;
    private readonly Lock _gate = new();
    private readonly Queue<PolicyAck> _recent = new();
    private readonly Dictionary<PolicyAckStatus, long> _byStatus = [];
    private long _malformed;
    private int _disposed;

    /// <param name="transport">Where acknowledgements go (null: nowhere, for tests of <see cref="Apply"/>).</param>
    public PolicyExecutor(ITransport? transport, PolicyExecutorOptions options)
    {
        _transport = transport;
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _acks = transport?.CreatePublisher(new PublisherOptions { HostId = options.HostId, Linger = TimeSpan.FromMilliseconds(5), Log = options.Log });
    }

    public bool Enforcing => _options.Enforcer != null;

    public long Count(PolicyAckStatus status)
    {
        lock (_gate) return _byStatus.GetValueOrDefault(status);
    }

    /// <summary>Policy records that were not commands, or whose JSON did not parse.</summary>
    public long Malformed => Interlocked.Read(ref _malformed);

    public IReadOnlyList<PolicyAck> Recent
    {
        get
        {
            lock (_gate) return [.. _recent];
        }
    }

    /// <summary>Reads this host's commands until cancelled, applying and acknowledging each.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        if (_transport == null) throw new InvalidOperationException("no transport to read commands from");
        using var consumer = _transport.Subscribe(new ConsumerOptions
        {
            GroupId = $"detect-policy-{_options.HostId:x16}",
            Families = [MessageFamily.Policy],
            OnlyHost = _options.HostId,
            SessionTimeout = TimeSpan.FromSeconds(6),
            Log = m => _options.Log?.Invoke("policy consumer: " + m),
        });
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                using var message = await consumer.ReceiveAsync(cancellationToken).ConfigureAwait(false);
                if (!message.IsDuplicate) OnPayload(message.Payload);
                consumer.Commit(message);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private void OnPayload(ReadOnlySpan<byte> payload)
    {
        var commands = new List<PolicyCommand>();
        ControlRecord.ForEach(payload, (type, json) =>
        {
            if (type != ControlRecordType.PolicyCommand)
            {
                Interlocked.Increment(ref _malformed);
                return;
            }
            try
            {
                commands.Add(PolicyCommand.FromJson(json));
            }
            catch (JsonException e)
            {
                Interlocked.Increment(ref _malformed);
                _options.Log?.Invoke($"policy: a command did not parse: {e.Message}");
            }
        }, (offset, error) =>
        {
            Interlocked.Increment(ref _malformed);
            _options.Log?.Invoke($"policy: bad record at payload offset {offset}: {error}");
        });
        foreach (var c in commands) Apply(c);
    }

    /// <summary>Applies (or in dry run checks) one command, records and publishes the acknowledgement.</summary>
    public PolicyAck Apply(PolicyCommand command)
    {
        ArgumentNullException.ThrowIfNull(command);
        PolicyAck ack;
        try
        {
            ack = command.Action switch
            {
                PolicyAction.BlockSource => BlockSource(command),
                PolicyAction.Kill => Kill(command),
                PolicyAction.DenyConnect => DenyConnect(command),
                _ => Ack(command, PolicyAckStatus.Refused, $"unknown action {command.Action}"),
            };
        }
        catch (AllowlistException e)
        {
            ack = Ack(command, PolicyAckStatus.Refused, e.Message);
        }
        catch (ArgumentException e)
        {
            ack = Ack(command, PolicyAckStatus.Refused, e.Message);
        }
        catch (Exception e) when (e is Detect.Sensors.Bpf.BpfException or IOException or InvalidOperationException)
        {
            ack = Ack(command, PolicyAckStatus.Failed, e.Message);
        }
        lock (_gate)
        {
            _byStatus[ack.Status] = _byStatus.GetValueOrDefault(ack.Status) + 1;
            _recent.Enqueue(ack);
            while (_recent.Count > 50) _recent.Dequeue();
        }
        _options.Log?.Invoke($"policy: {ack} (command {command.Id}, alert {command.AlertId})");
        if (_acks != null && _acks.TryAppend(MessageFamily.PolicyAcks, ack.ToRecord())) _acks.Flush();
        return ack;
    }

    private PolicyAck BlockSource(PolicyCommand c)
    {
        var prefix = BlockRequest.ParsePrefix(c.Target);
        var enforcer = _options.Enforcer;
        if (enforcer == null)
        {
            _options.Allowlist.Check(prefix, BlockKind.Source);
            return c.DryRun
                ? Ack(c, PolicyAckStatus.DryRun, $"would drop packets from {prefix}{Ttl(c)}; nothing applied (dry run)")
                : Ack(c, PolicyAckStatus.Refused, "this host does not enforce: start its sensors with --enforce");
        }
        var entry = enforcer.Table.Add(new BlockRequest { Kind = BlockKind.Source, Prefix = prefix, Ttl = c.Ttl, Reason = c.Reason, DryRun = c.DryRun });
        return Ack(c, c.DryRun ? PolicyAckStatus.DryRun : PolicyAckStatus.Applied,
            c.DryRun ? $"counting packets from {prefix}{Ttl(c)} without dropping them (dry run)" : $"dropping packets from {prefix}{Ttl(c)} at {Interfaces(enforcer)}",
            entry.Expires);
    }

    private PolicyAck Kill(PolicyCommand c)
    {
        var pid = Pid(c);
        var enforcer = _options.Enforcer;
        if (enforcer == null)
        {
            return c.DryRun
                ? Ack(c, PolicyAckStatus.DryRun, $"would kill process {pid} ({Comm(pid)}); nothing applied (dry run)")
                : Ack(c, PolicyAckStatus.Refused, "this host does not enforce: start its sensors with --enforce");
        }
        var comm = Comm(pid);
        var entry = enforcer.Table.Add(new BlockRequest { Kind = BlockKind.Process, Pid = pid, Reason = c.Reason, DryRun = c.DryRun });
        return Ack(c, c.DryRun ? PolicyAckStatus.DryRun : PolicyAckStatus.Applied,
            c.DryRun ? $"listed process {pid} ({comm}) without killing it (dry run)" : $"process {pid} ({comm}) is killed on its next syscall", entry.Expires);
    }

    private PolicyAck DenyConnect(PolicyCommand c)
    {
        var pid = Pid(c);
        var cgroup = CgroupOf(pid) ?? throw new ArgumentException($"process {pid} has no cgroup v2 path");
        var prefixes = c.Destinations.Select(BlockRequest.ParsePrefix).ToList();
        if (prefixes.Count == 0) throw new ArgumentException("deny-connect without destinations");
        var enforcer = _options.Enforcer;
        if (enforcer == null)
        {
            foreach (var p in prefixes) _options.Allowlist.Check(p, BlockKind.Destination);
            return c.DryRun
                ? Ack(c, PolicyAckStatus.DryRun, $"would deny connects to {string.Join(", ", prefixes)} from cgroup {cgroup}{Ttl(c)}; nothing applied (dry run)")
                : Ack(c, PolicyAckStatus.Refused, "this host does not enforce: start its sensors with --enforce");
        }
        // The deny programs act in the cgroups the enforcer was started on, for every process there.
        var enforced = enforcer.Options.Cgroups.Select(g => "/" + g.Trim('/')).ToList();
        if (!enforced.Any(g => cgroup == g || cgroup.StartsWith(g + "/", StringComparison.Ordinal) || g.EndsWith(cgroup, StringComparison.Ordinal)))
            return Ack(c, PolicyAckStatus.Refused, $"process {pid} is in cgroup {cgroup}, which is not enforced (start with --enforce-cgroup for it)");
        DateTimeOffset? expires = null;
        foreach (var p in prefixes)
            expires = enforcer.Table.Add(new BlockRequest { Kind = BlockKind.Destination, Prefix = p, Ttl = c.Ttl, Reason = c.Reason, DryRun = c.DryRun }).Expires;
        return Ack(c, c.DryRun ? PolicyAckStatus.DryRun : PolicyAckStatus.Applied,
            $"{(c.DryRun ? "counting" : "denying")} connects to {string.Join(", ", prefixes)} from cgroup {cgroup}{Ttl(c)}", expires);
    }

    /// <summary>The command's process, if it is still the process the alert was about (same start time).</summary>
    private static int Pid(PolicyCommand c)
    {
        if (!int.TryParse(c.Target, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0)
            throw new ArgumentException($"'{c.Target}' is not a process id");
        if (pid == 1 || pid == Environment.ProcessId) throw new ArgumentException($"process {pid} is {(pid == 1 ? "init" : "Detect itself")}: never acted on");
        var ticks = EnforcementTable.StartTicks(pid) ?? throw new ArgumentException($"process {pid} is gone");
        if (c.ProcessStartNs > 0 && ticks != (ulong)c.ProcessStartNs / TickNs)
            throw new ArgumentException($"process {pid} is not the one the alert was about (it started at tick {ticks}, that one at {(ulong)c.ProcessStartNs / TickNs}): the pid was reused");
        return pid;
    }

    private static string Comm(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
            return "?";
        }
    }

    /// <summary>The cgroup v2 path of a process ("0::/system.slice/x.service" -> "/system.slice/x.service").</summary>
    internal static string? CgroupOf(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/cgroup"))
                if (line.StartsWith("0::", StringComparison.Ordinal)) return line[3..];
        }
        catch (IOException)
        {
        }
        return null;
    }

    private static string Interfaces(Enforcer e) => e.Options.Interfaces.Count == 0 ? "no interface (pass --iface)" : string.Join(", ", e.Options.Interfaces);

    private static string Ttl(PolicyCommand c) => c.Ttl is { } t ? " for " + t.ToString("c", CultureInfo.InvariantCulture) : "";

    private PolicyAck Ack(PolicyCommand c, PolicyAckStatus status, string detail, DateTimeOffset? expires = null) => new()
    {
        CommandId = c.Id,
        Status = status,
        Detail = detail,
        HostId = _options.HostId.ToString("x16", CultureInfo.InvariantCulture),
        Action = c.Action,
        Target = c.Target,
        ExpiresNs = expires is { } e ? (e.UtcTicks - DateTime.UnixEpoch.Ticks) * 100 : null,
        AckedNs = (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100,
    };

    public async Task FlushAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (_acks != null) await _acks.FlushAsync(timeout, cancellationToken).ConfigureAwait(false);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _acks?.Dispose();
    }

    /// <summary>Parses an `--allow` value (address or CIDR).</summary>
    public static IPNetwork ParseAllow(string text) => BlockRequest.ParsePrefix(text);
}
