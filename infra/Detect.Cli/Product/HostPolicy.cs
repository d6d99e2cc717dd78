using System.CommandLine;
using System.Net;
using Detect.Records;
using Detect.Sensors.Bpf;
using Detect.Sensors.Enforcement;
using Detect.Transport;

namespace Detect.Cli.Product;

/// <summary>How a sensor host takes the policy engine's commands (`up`, `sensor`).</summary>
public sealed record HostPolicySettings
{
    /// <summary>Apply commands through the enforcement programs; false: check, log and acknowledge only.</summary>
    public bool Enforce { get; init; }
    /// <summary>Interfaces the XDP drop program goes on ("eth1", "veth0@ns"): the ones whose flows are watched.</summary>
    public IReadOnlyList<string> Interfaces { get; init; } = [];
    public IReadOnlyList<string> EnforceCgroups { get; init; } = [];
    public IReadOnlyList<IPNetwork> Allow { get; init; } = [];
    public string PinRoot { get; init; } = EnforcementTable.DefaultPinRoot;
    public bool KeepEnforcing { get; init; }
}

/// <summary>The enforcement options every sensor-side command shares.</summary>
public sealed class HostPolicyCliOptions
{
    public Option<string[]> EnforceCgroup { get; } = new("--enforce-cgroup") { Description = "With --enforce: cgroup v2 directory whose processes' connects the policy may deny (repeatable; never the root)", AllowMultipleArgumentsPerToken = true };
    public Option<string[]> Allow { get; } = new("--allow") { Description = "Address or CIDR the policy must never block (repeatable; loopback and this host's addresses always are)", AllowMultipleArgumentsPerToken = true };
    public Option<string> PinRoot { get; } = new("--pin-root") { Description = "With --enforce: where enforcement maps and links are pinned", DefaultValueFactory = _ => EnforcementTable.DefaultPinRoot };
    public Option<bool> Keep { get; } = new("--keep-enforcing") { Description = "With --enforce: leave the enforcement programs attached (pinned) at exit, so blocks hold until the next start" };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { EnforceCgroup, Allow, PinRoot, Keep }) command.Options.Add(o);
    }

    /// <exception cref="ArgumentException">An interface, address or option combination that cannot work.</exception>
    public HostPolicySettings Read(ParseResult parse, bool enforce, IReadOnlyList<string> interfaces)
    {
        foreach (var i in interfaces) NetInterface.Parse(i);
        var settings = new HostPolicySettings
        {
            Enforce = enforce,
            Interfaces = interfaces,
            EnforceCgroups = parse.GetValue(EnforceCgroup) ?? [],
            Allow = (parse.GetValue(Allow) ?? []).Select(PolicyExecutor.ParseAllow).ToList(),
            PinRoot = parse.GetValue(PinRoot)!,
            KeepEnforcing = parse.GetValue(Keep),
        };
        if (settings.EnforceCgroups.Count > 0 && !enforce) throw new ArgumentException("--enforce-cgroup needs --enforce");
        return settings;
    }
}

/// <summary>
/// A sensor host's side of the policy engine: the enforcement programs (when enforcing) with their
/// sweeper, and the <see cref="PolicyExecutor"/> that reads this host's commands, applies or
/// dry-runs them and acknowledges each. <see cref="StopAsync"/> ends both in order and detaches
/// the programs unless they are to keep enforcing.
/// </summary>
public sealed class HostPolicy : IDisposable
{
    private readonly HostPolicySettings _settings;
    private readonly Action<string> _say;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _executorTask;
    private readonly Task _sweepTask;
    private int _stopped;

    private HostPolicy(HostPolicySettings settings, Enforcer? enforcer, PolicyExecutor executor, Action<string> say)
    {
        _settings = settings;
        _say = say;
        Enforcer = enforcer;
        Executor = executor;
        _executorTask = executor.RunAsync(_stop.Token);
        _sweepTask = enforcer?.RunAsync(_stop.Token) ?? Task.CompletedTask;
    }

    public Enforcer? Enforcer { get; }
    public PolicyExecutor Executor { get; }

    /// <summary>
    /// Starts enforcement when asked (saying what attached, on stderr with <paramref name="command"/>'s
    /// name) and the executor. Null, after a plain message, when enforcement cannot start.
    /// </summary>
    public static HostPolicy? TryStart(string command, ITransport transport, ulong hostId, HostPolicySettings settings, Action<string> say)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(settings);
        Enforcer? enforcer = null;
        if (settings.Enforce)
        {
            try
            {
                enforcer = Enforcer.Start(new EnforcementOptions
                {
                    PinRoot = settings.PinRoot,
                    DryRun = false,
                    Interfaces = settings.Interfaces.Select(NetInterface.Parse).ToList(),
                    Cgroups = settings.EnforceCgroups,
                    Allow = settings.Allow,
                    KillProcesses = true,
                    Log = say,
                });
                foreach (var a in enforcer.Attachments) Console.Error.WriteLine($"{command}: enforcement {a}");
            }
            catch (Exception e) when (e is BpfException or ArgumentException or InvalidOperationException or IOException)
            {
                Console.Error.WriteLine($"{command}: enforcement could not start: {e.Message}");
                return null;
            }
        }
        var allowlist = Allowlist.ForThisHost();
        foreach (var a in settings.Allow) allowlist.Add(a, AllowKind.Configured, "--allow");
        var executor = new PolicyExecutor(transport, new PolicyExecutorOptions { HostId = hostId, Enforcer = enforcer, Allowlist = allowlist, Log = say });
        return new HostPolicy(settings, enforcer, executor, say);
    }

    /// <summary>Stops reading commands, sends the last acknowledgements, and detaches the programs unless they keep enforcing.</summary>
    public async Task StopAsync(TimeSpan ackTimeout)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0) return;
        await _stop.CancelAsync().ConfigureAwait(false);
        await _executorTask.ConfigureAwait(false);
        await _sweepTask.ConfigureAwait(false);
        await Executor.FlushAsync(ackTimeout, CancellationToken.None).ConfigureAwait(false);
        if (Enforcer == null) return;
        if (_settings.KeepEnforcing) _say($"enforcement programs stay attached (pinned under {_settings.PinRoot}): `detect block purge` lifts them");
        else
        {
            Enforcer.Detach();
            _say($"enforcement programs detached (the block lists stay pinned under {_settings.PinRoot} for the next start)");
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            // Not stopped in order (a start failed further on): nothing stays attached.
            _stop.Cancel();
            try
            {
                Task.WaitAll([_executorTask, _sweepTask], TimeSpan.FromSeconds(10));
            }
            catch (AggregateException)
            {
                // Their failures were told by their own logs; the programs are detached below either way.
            }
            Enforcer?.Detach();
        }
        Executor.Dispose();
        Enforcer?.Dispose();
        _stop.Dispose();
    }
}
