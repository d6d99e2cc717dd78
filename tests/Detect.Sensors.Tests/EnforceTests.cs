using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Detect.Sensors.Enforcement;
using Detect.Testing;

namespace Detect.Sensors.Tests;

/// <summary>
/// A pin root of its own (/sys/fs/bpf/detect-test-&lt;id&gt;) for one test, so tests never touch the
/// host's real enforcement lists; Dispose purges it (maps and links), which lifts every block.
/// </summary>
internal sealed class EnforcePins : IDisposable
{
    public EnforcePins()
    {
        Needs.KernelBtf();
        Root = $"/sys/fs/bpf/detect-test-{Random.Shared.Next():x8}";
    }

    public string Root { get; }

    public void Dispose()
    {
        EnforcementTable.Purge(Root);
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
    }
}

/// <summary>
/// Enforcement in the real kernel: XDP drops on a veth in a namespace this test makes, connect
/// deny in a child cgroup it makes, SIGKILL of a process it starts; lists in pinned maps under a
/// pin root of its own. Everything is removed at the end, also when a test fails.
/// </summary>
[Trait("Needs", "Kernel")]
[Collection(NetworkCollection.Name)]
public sealed class EnforceTests
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(1);

    private static void Log(string text) => TestContext.Current.TestOutputHelper?.WriteLine(text);

    private static Enforcer StartOn(EnforcePins pins, NetNs net, EnforcementOptions? options = null)
    {
        var enforcer = Enforcer.Start((options ?? new EnforcementOptions()) with
        {
            PinRoot = pins.Root,
            Interfaces = [new NetInterface(net.B.Interface, net.B.Netns)],
            KillProcesses = false,
        });
        foreach (var a in enforcer.Attachments) Log(a.ToString());
        Assert.All(enforcer.Attachments, a => Assert.NotEqual(EnforcementAttachState.Failed, a.State));
        return enforcer;
    }

    [Fact]
    public void Enforce_BlockedSource_CannotConnect_ItsHitCounterRises_AndRemovingTheBlockRestoresIt()
    {
        using var net = NetNs.Create();
        using var pins = new EnforcePins();
        using var enforcer = StartOn(pins, net);
        var port = NetTraffic.FreePort();
        using var listener = NetTraffic.Listen(net.B, port);
        NetTraffic.AcceptForever(listener);

        Assert.True(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "connects before the block");
        var entry = enforcer.Table.Add(new BlockRequest { Kind = BlockKind.Source, Prefix = new IPNetwork(net.A.Address, 32), Reason = "test: scanner", Ttl = TimeSpan.FromMinutes(5) });
        Assert.False(entry.DryRun);
        Assert.False(NetNs_TryConnectTwice(net, port), "a blocked source cannot connect");

        var after = enforcer.Table.Find(BlockKind.Source, net.A.Address.ToString())!;
        Log($"{after}");
        Assert.True(after.Hits >= 2, $"every dropped SYN is a hit (got {after.Hits})");
        Assert.NotNull(after.LastHit);
        Assert.Equal("test: scanner", after.Reason);
        Assert.True(enforcer.Table.ReadCounters().Dropped >= after.Hits);

        Assert.True(enforcer.Table.Remove(BlockKind.Source, net.A.Address + "/32"));
        Assert.True(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "connects again once the block is removed");
        listener.Dispose();
    }

    private static bool NetNs_TryConnectTwice(NetNs net, int port) =>
        NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout) || NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout);

    [Fact]
    public void Enforce_BlockWithTtl_StopsActingWhenItExpires_AndTheSweepRemovesIt()
    {
        using var net = NetNs.Create();
        using var pins = new EnforcePins();
        using var enforcer = StartOn(pins, net);
        var port = NetTraffic.FreePort();
        using var listener = NetTraffic.Listen(net.B, port);
        NetTraffic.AcceptForever(listener);

        // A /31 around the source (.0-.1; the enforced side is .2, which the allowlist protects),
        // to show prefixes, not only addresses, match.
        var bytes = net.A.Address.GetAddressBytes();
        bytes[3] = 0;
        var prefix = new IPNetwork(new IPAddress(bytes), 31);
        var entry = enforcer.Table.Add(new BlockRequest { Kind = BlockKind.Source, Prefix = prefix, Ttl = TimeSpan.FromSeconds(3), Reason = "ttl" });
        Assert.NotNull(entry.Expires);
        Assert.False(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "blocked while the TTL runs");
        Assert.Equal(0, enforcer.Table.Sweep()); // not expired yet: the sweep keeps it

        var wait = entry.Expires!.Value - DateTimeOffset.UtcNow + TimeSpan.FromMilliseconds(300);
        if (wait > TimeSpan.Zero) Thread.Sleep(wait);
        // Expired entries stop acting in the kernel, before any sweep.
        Assert.True(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "connects once the TTL ran out");
        Assert.True(enforcer.Table.Find(BlockKind.Source, prefix.ToString())!.Expired);
        Assert.Equal(1, enforcer.Table.Sweep());
        Assert.Null(enforcer.Table.Find(BlockKind.Source, prefix.ToString()));
    }

    [Fact]
    public void Enforce_DeniedDestination_FailsWithEpermOnlyInsideTheChosenCgroup()
    {
        using var net = NetNs.Create();
        using var pins = new EnforcePins();
        using var cgroup = NetCgroup.Create();
        using var enforcer = Enforcer.Start(new EnforcementOptions { PinRoot = pins.Root, Cgroups = [cgroup.Path], KillProcesses = false });
        foreach (var a in enforcer.Attachments) Log(a.ToString());
        Assert.Equal(4, enforcer.Attachments.Count(a => a.State == EnforcementAttachState.Attached));
        var port = NetTraffic.FreePort();
        using var listener = NetTraffic.Listen(net.B, port);
        NetTraffic.AcceptForever(listener);
        enforcer.Table.Add(new BlockRequest { Kind = BlockKind.Destination, Prefix = new IPNetwork(net.B.Address, 32), Reason = "c2 server" });

        var connect = $"exec 3<>/dev/tcp/{net.B.Address}/{port} && echo connected";
        using (var inside = cgroup.StartShell(net.A.Netns, connect))
        {
            Assert.True(inside.WaitForExit(10_000));
            var err = inside.StandardError.ReadToEnd();
            Log("inside: " + err);
            Assert.NotEqual(0, inside.ExitCode);
            Assert.Contains("Operation not permitted", err, StringComparison.Ordinal);
        }
        // The same connect outside the cgroup (this process, in the same namespace) works.
        Assert.True(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "outside the chosen cgroup the connect is allowed");
        // And so does a process in the cgroup to an address that is not denied.
        var port2 = port + 1;
        using var local = NetTraffic.Listen(net.A, port2);
        NetTraffic.AcceptForever(local);
        using (var other = cgroup.StartShell(net.A.Netns, $"exec 3<>/dev/tcp/{net.A.Address}/{port2} && echo connected"))
        {
            Assert.True(other.WaitForExit(10_000));
            Assert.Equal("connected", other.StandardOutput.ReadToEnd().Trim());
        }
        var entry = enforcer.Table.Find(BlockKind.Destination, net.B.Address.ToString())!;
        Assert.Equal(1UL, entry.Hits);
        Assert.Equal(1UL, enforcer.Table.ReadCounters().Denied);
    }

    [Fact]
    public void Enforce_ListedPid_IsKilledOnItsNextSyscall_AndOthersAreNot()
    {
        using var pins = new EnforcePins();
        using var enforcer = Enforcer.Start(new EnforcementOptions { PinRoot = pins.Root });
        Assert.Single(enforcer.Attachments, a => a.Program == "detect_kill_sys_enter" && a.State == EnforcementAttachState.Attached);
        using var target = Process.Start("bash", ["-c", "while true; do sleep 0.05; done"]);
        using var bystander = Process.Start("bash", ["-c", "while true; do sleep 0.05; done"]);
        try
        {
            Assert.Equal(0u, enforcer.Table.ReadControl().KillArmed);
            enforcer.Table.Add(new BlockRequest { Kind = BlockKind.Process, Pid = target.Id, Reason = "ransomware" });
            Assert.Equal(1u, enforcer.Table.ReadControl().KillArmed);
            Assert.True(target.WaitForExit(5000), "the listed process was killed");
            Assert.Equal(128 + 9, target.ExitCode); // SIGKILL
            Assert.False(bystander.HasExited);
            var counters = enforcer.Table.ReadCounters();
            Assert.True(counters.Killed >= 1);
            Assert.Equal(0UL, counters.MissedSignal);
            // The dead process's entry goes with the next sweep, and the kill program goes quiet.
            Assert.Equal(1, enforcer.Table.Sweep());
            Assert.Equal(0u, enforcer.Table.ReadControl().KillArmed);
        }
        finally
        {
            if (!target.HasExited) target.Kill();
            bystander.Kill();
        }
    }

    [Fact]
    public void Enforce_Allowlist_RefusesLoopbackHostAndConfiguredAddresses_WithAClearError()
    {
        using var net = NetNs.Create();
        using var pins = new EnforcePins();
        var configured = new IPNetwork(IPAddress.Parse("198.51.100.0"), 24);
        using var enforcer = StartOn(pins, net, new EnforcementOptions { Allow = [configured] });
        var table = enforcer.Table;

        void Refused(BlockKind kind, string target, string why)
        {
            var e = Assert.Throws<AllowlistException>(() => table.Add(new BlockRequest { Kind = kind, Prefix = BlockRequest.ParsePrefix(target) }));
            Log(e.Message);
            Assert.Contains("refusing", e.Message, StringComparison.Ordinal);
            Assert.Contains("allowlist", e.Message, StringComparison.Ordinal);
            Assert.Contains(why, e.Message, StringComparison.Ordinal);
        }

        Refused(BlockKind.Source, "127.0.0.1", "loopback");
        Refused(BlockKind.Destination, "::1", "loopback");
        Refused(BlockKind.Source, "0.0.0.0/0", "loopback"); // would cover everything
        Refused(BlockKind.Source, net.B.Address.ToString(), "an address of this host"); // the enforced namespace's own
        Refused(BlockKind.Source, "198.51.100.77", "configured allowlist");
        var hostAddress = Allowlist.HostAddresses(null).Select(a => a.Address).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));
        if (hostAddress != null) Refused(BlockKind.Source, hostAddress.ToString(), "an address of this host");

        // Another process (a fresh table on the same pins) refuses the configured CIDR as well.
        using (var other = EnforcementTable.Open(pins.Root, create: false))
            Assert.Throws<AllowlistException>(() => other.Add(new BlockRequest { Kind = BlockKind.Source, Prefix = BlockRequest.ParsePrefix("198.51.100.1") }));

        var kill1 = Assert.Throws<ArgumentException>(() => table.Add(new BlockRequest { Kind = BlockKind.Process, Pid = 1 }));
        Assert.Contains("init", kill1.Message, StringComparison.Ordinal);
        var killSelf = Assert.Throws<ArgumentException>(() => table.Add(new BlockRequest { Kind = BlockKind.Process, Pid = Environment.ProcessId }));
        Assert.Contains("this process", killSelf.Message, StringComparison.Ordinal);
        var sloppy = Assert.Throws<ArgumentException>(() => BlockRequest.ParsePrefix("10.1.2.3/8"));
        Assert.Contains("did you mean 10.0.0.0/8", sloppy.Message, StringComparison.Ordinal);

        // Not protected: accepted.
        table.Add(new BlockRequest { Kind = BlockKind.Source, Prefix = new IPNetwork(net.A.Address, 32) });
        Assert.Single(table.List());
    }

    [Fact]
    public void Enforce_AgentDecision_IsDryRunByDefault_CountsHitsAndLetsTrafficPass()
    {
        using var net = NetNs.Create();
        using var pins = new EnforcePins();
        var log = new List<string>();
        using var enforcer = StartOn(pins, net, new EnforcementOptions { Log = log.Add });
        var port = NetTraffic.FreePort();
        using var listener = NetTraffic.Listen(net.B, port);
        NetTraffic.AcceptForever(listener);

        var entry = enforcer.Block(new BlockRequest { Kind = BlockKind.Source, Prefix = new IPNetwork(net.A.Address, 32), Reason = "model score 0.97" });
        Assert.True(entry.DryRun);
        Assert.Contains(log, l => l.StartsWith("dry run: would block source", StringComparison.Ordinal));
        Assert.True(NetTraffic.TryConnect(net.A, net.B.Address, port, ConnectTimeout), "a dry-run entry lets traffic pass");
        var after = enforcer.Table.Find(BlockKind.Source, net.A.Address.ToString())!;
        Assert.True(after.Hits >= 1, "but counts what it would have dropped");
        var counters = enforcer.Table.ReadCounters();
        Assert.True(counters.DropDryRun >= 1);
        Assert.Equal(0UL, counters.Dropped);
    }
}
