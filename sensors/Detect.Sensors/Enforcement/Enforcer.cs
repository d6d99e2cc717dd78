using System.Globalization;
using System.Net.Sockets;
using Detect.Records;
using Detect.Sensors.Bpf;

namespace Detect.Sensors.Enforcement;

/// <summary>How one enforcement attachment came to be.</summary>
public enum EnforcementAttachState
{
    /// <summary>Attached now and pinned.</summary>
    Attached,
    /// <summary>A pinned link from an earlier agent was found and now runs this agent's program.</summary>
    Replaced,
    /// <summary>A pinned link from an earlier agent was found and kept as it is (its kind of link cannot swap programs).</summary>
    Kept,
    /// <summary>The kernel refused.</summary>
    Failed,
}

/// <summary>One attachment of the enforcement programs.</summary>
public sealed record EnforcementAttachment(string Program, string Target, string PinPath, EnforcementAttachState State, string? Error)
{
    public override string ToString() => State == EnforcementAttachState.Failed
        ? $"{Program} at {Target}: failed: {Error}"
        : $"{Program} at {Target}: {State.ToString().ToLowerInvariant()} (pinned {PinPath})";
}

/// <summary>
/// The enforcing side of the agent: loads bpf/enforce.bpf.o over the pinned lists, attaches the
/// XDP drop to each named interface, the connect/sendmsg deny to each named cgroup and the kill
/// program to sys_enter, and pins every link under the pin root. A restarted agent finds the
/// pinned links and swaps its program in (XDP and cgroup links) or keeps the running one (the
/// tracing link), so enforcement never stops while the agent is away. Dispose closes this
/// process's handles only: the pinned programs keep enforcing. <see cref="Detach"/> removes this
/// agent's attachments; <see cref="EnforcementTable.Purge"/> removes everything.
/// </summary>
public sealed class Enforcer : IDisposable
{
    private readonly EnforcementOptions _options;
    private readonly BpfObject _obj;
    private readonly List<EnforcementAttachment> _attachments = [];
    private int _disposed;

    private Enforcer(EnforcementOptions options, EnforcementTable table, BpfObject obj)
    {
        _options = options;
        Table = table;
        _obj = obj;
    }

    /// <summary>The lists (add, list, remove, sweep, counters).</summary>
    public EnforcementTable Table { get; }

    public IReadOnlyList<EnforcementAttachment> Attachments => _attachments;

    public EnforcementOptions Options => _options;

    public static Enforcer Start(EnforcementOptions? options = null)
    {
        options ??= new EnforcementOptions();
        BpfSystem.EnsurePrivileged();
        BpfSystem.EnsureMounted();
        foreach (var cg in options.Cgroups) CgroupTarget.Check(cg, options.AllowRootCgroup);
        var table = EnforcementTable.Open(options.PinRoot, create: true, options.ObjectDirectory);
        BpfObject? obj = null;
        try
        {
            obj = BpfObject.Open(EnforcementTable.FindObject(options.ObjectDirectory), new BpfObjectOptions { PinRoot = options.PinRoot });
            if (options.Interfaces.Count == 0) obj.Programs["detect_enforce_xdp"].AutoLoad = false;
            if (options.Cgroups.Count == 0)
                foreach (var p in obj.Programs.Where(p => p.Name.StartsWith("detect_deny_", StringComparison.Ordinal))) p.AutoLoad = false;
            if (!options.KillProcesses) obj.Programs["detect_kill_sys_enter"].AutoLoad = false;
            obj.Load();
            var enforcer = new Enforcer(options, table, obj);
            enforcer.Setup();
            return enforcer;
        }
        catch
        {
            obj?.Dispose();
            table.Dispose();
            throw;
        }
    }

    private void Setup()
    {
        Table.SetAgent(Environment.ProcessId);
        Table.SetConfiguredAllowlist(_options.Allow);
        // The host's own addresses, and those of every namespace enforced in, go on the pinned
        // allowlist: `detect block` in another process refuses them too, and so do the programs.
        foreach (var ns in _options.Interfaces.Select(i => i.Netns).Prepend(null).Distinct())
        {
            foreach (var (address, iface) in Allowlist.HostAddresses(ns))
            {
                if (System.Net.IPAddress.IsLoopback(address)) continue;
                var net = new System.Net.IPNetwork(address, address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128);
                var ifindex = 0;
                try
                {
                    ifindex = NetNamespace.InterfaceIndex(iface, ns);
                }
                catch (ArgumentException)
                {
                    // gone between the two calls: keep the address, without its interface
                }
                Table.Allow(net, AllowKind.Host, ifindex);
            }
        }
        Table.Allow(Allowlist.LoopbackV4, AllowKind.Loopback);
        Table.Allow(Allowlist.LoopbackV6, AllowKind.Loopback);

        Directory.CreateDirectory(Table.LinksDirectory);
        foreach (var iface in _options.Interfaces)
        {
            var ino = NetNamespace.Inode(iface.Netns);
            Attach("detect_enforce_xdp", iface.ToString(), $"xdp-{ino}-{iface.Name}", p =>
                NetNamespace.Run(iface.Netns, () => p.AttachXdp(NetNamespace.InterfaceIndex(iface.Name))));
        }
        foreach (var cg in _options.Cgroups)
        {
            var id = CgroupTarget.Id(cg);
            foreach (var name in new[] { "detect_deny_connect4", "detect_deny_connect6", "detect_deny_sendmsg4", "detect_deny_sendmsg6" })
                Attach(name, cg, $"{name["detect_deny_".Length..]}-{id}", p => CgroupTarget.Attach(p, cg));
        }
        if (_options.KillProcesses)
            Attach("detect_kill_sys_enter", "sys_enter", "kill", p => p.Attach());
    }

    private void Attach(string programName, string target, string pinName, Func<BpfProgram, BpfLink> attach)
    {
        var program = _obj.Programs[programName];
        var pin = Path.Combine(Table.LinksDirectory, pinName);
        if (program.State == ProgramState.Refused)
        {
            _attachments.Add(new EnforcementAttachment(programName, target, pin, EnforcementAttachState.Failed, program.Refusal!.ToString()));
            return;
        }
        try
        {
            if (File.Exists(pin))
            {
                using var old = BpfLink.OpenPinned(pin);
                if (!old.ReadInfo().IsDefunct)
                {
                    try
                    {
                        old.UpdateProgram(program);
                        _attachments.Add(new EnforcementAttachment(programName, target, pin, EnforcementAttachState.Replaced, null));
                    }
                    catch (BpfException)
                    {
                        _attachments.Add(new EnforcementAttachment(programName, target, pin, EnforcementAttachState.Kept, null));
                    }
                    return;
                }
                File.Delete(pin); // its interface or cgroup is gone: attach anew
            }
            var link = attach(program);
            link.Pin(pin);
            _attachments.Add(new EnforcementAttachment(programName, target, pin, EnforcementAttachState.Attached, null));
        }
        catch (BpfException e)
        {
            _attachments.Add(new EnforcementAttachment(programName, target, pin, EnforcementAttachState.Failed, e.Message));
        }
    }

    /// <summary>
    /// The agent's own decision to block (the policy engine's): dry-run unless the options say
    /// otherwise, and told to <see cref="EnforcementOptions.Log"/> either way.
    /// </summary>
    public BlockEntry Block(BlockRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var applied = _options.DryRun ? request with { DryRun = true } : request;
        var entry = Table.Add(applied);
        var ttl = request.Ttl is { } t ? " for " + t.ToString("c", CultureInfo.InvariantCulture) : "";
        _options.Log?.Invoke(applied.DryRun
            ? $"dry run: would block {BlockEntry.KindName(request.Kind)} {request.Target}{ttl} ({request.Reason}); hits are counted, nothing is applied"
            : $"blocked {BlockEntry.KindName(request.Kind)} {request.Target}{ttl} ({request.Reason})");
        return entry;
    }

    /// <summary>Sweeps expired entries every <see cref="EnforcementOptions.SweepInterval"/> until cancelled.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.SweepInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                var removed = Table.Sweep();
                if (removed > 0) _options.Log?.Invoke($"swept {removed} expired or finished entr{(removed == 1 ? "y" : "ies")}");
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// Stops enforcing on this agent's targets: removes their link pins and closes the programs
    /// (the lists stay pinned). The enforcer is done afterwards; its <see cref="Table"/> still works
    /// until Dispose.
    /// </summary>
    public void Detach()
    {
        foreach (var a in _attachments.Where(a => a.State != EnforcementAttachState.Failed))
            if (File.Exists(a.PinPath)) File.Delete(a.PinPath);
        _obj.Dispose(); // destroys this process's links: with their pins gone, the programs detach
        if (Table.ReadControl().AgentTgid == (uint)Environment.ProcessId) Table.SetAgent(0);
    }

    /// <summary>Closes this process's handles. The pinned links keep the programs enforcing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _obj.Dispose();
        Table.Dispose();
    }
}
