using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Detect.Records;
using Detect.Sensors.Bpf;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Enforcement;

/// <summary>
/// The enforcement lists in their pinned maps (bpf/enforce.h): add, list and remove entries with
/// a TTL and a reason, sweep expired ones, read the counters. Every process opens the same pinned
/// maps, so the agent and `detect block` (another process) see and edit one set of lists; changes
/// are serialised across processes by a file lock. Opening creates the maps when none are pinned
/// yet (loading bpf/enforce.bpf.o without its programs), so a block added before any agent runs
/// is enforced as soon as one attaches.
/// </summary>
public sealed unsafe class EnforcementTable : IDisposable
{
    /// <summary>Where the maps and links are pinned unless configured otherwise.</summary>
    public const string DefaultPinRoot = "/sys/fs/bpf/detect";
    public const string ObjectName = "enforce.bpf.o";

    internal static readonly string[] MapNames =
    [
        "detect_block_src4", "detect_block_src6", "detect_block_dst4", "detect_block_dst6", "detect_block_pid",
        "detect_allow4", "detect_allow6", "detect_enforce_reasons", "detect_enforce_ctl", "detect_enforce_stats",
    ];

    private const string LockPath = "/run/detect-enforce.lock";
    private const long ClockTicksPerSecond = 100; // USER_HZ: the unit of /proc/PID/stat start times

    private readonly Dictionary<string, BpfMap> _maps;
    private int _disposed;

    private EnforcementTable(string pinRoot, Dictionary<string, BpfMap> maps)
    {
        PinRoot = pinRoot;
        _maps = maps;
    }

    public string PinRoot { get; }

    /// <summary>Links of the programs (one pin per attachment) live here.</summary>
    public string LinksDirectory => Path.Combine(PinRoot, "links");

    internal BpfMap Map(string name) => _maps[name];

    /// <summary>
    /// Opens the pinned maps under <paramref name="pinRoot"/>; with <paramref name="create"/>,
    /// makes and pins them first when they are missing. Throws with a plain message without
    /// privilege, or when the pins were made by an incompatible version.
    /// </summary>
    public static EnforcementTable Open(string? pinRoot = null, bool create = true, string? objectDirectory = null)
    {
        pinRoot ??= DefaultPinRoot;
        BpfSystem.EnsurePrivileged();
        BpfSystem.EnsureMounted();
        using (Lock())
        {
            var missing = MapNames.Where(n => !File.Exists(Path.Combine(pinRoot, n))).ToList();
            if (missing.Count > 0)
            {
                if (!create)
                    throw new InvalidOperationException($"no enforcement maps are pinned at {pinRoot} (missing {string.Join(", ", missing)}): nothing is blocked there");
                if (missing.Count != MapNames.Length)
                    throw new InvalidOperationException($"the enforcement maps at {pinRoot} are incomplete (missing {string.Join(", ", missing)}); remove them with `detect block purge` and start again");
                CreatePinnedMaps(pinRoot, objectDirectory);
            }
            var maps = new Dictionary<string, BpfMap>(StringComparer.Ordinal);
            try
            {
                foreach (var name in MapNames) maps[name] = BpfMap.OpenPinned(Path.Combine(pinRoot, name));
                var table = new EnforcementTable(pinRoot, maps);
                table.CheckVersion();
                return table;
            }
            catch
            {
                foreach (var m in maps.Values) m.Dispose();
                throw;
            }
        }
    }

    /// <summary>Loads bpf/enforce.bpf.o without its programs: libbpf creates the maps and pins them by name.</summary>
    private static void CreatePinnedMaps(string pinRoot, string? objectDirectory)
    {
        Directory.CreateDirectory(pinRoot);
        using var obj = BpfObject.Open(FindObject(objectDirectory), new BpfObjectOptions { PinRoot = pinRoot });
        foreach (var p in obj.Programs) p.AutoLoad = false;
        obj.Load();
    }

    internal static string FindObject(string? directory) =>
        directory != null ? Path.Combine(directory, ObjectName) : BpfObject.Find(ObjectName);

    private void CheckVersion()
    {
        var ctl = ReadControl();
        if (ctl.Version == 0)
        {
            ctl.Version = EnforceFormat.Version;
            WriteControl(ctl);
        }
        else if (ctl.Version != EnforceFormat.Version)
        {
            throw new InvalidOperationException(
                $"the enforcement maps at {PinRoot} have layout version {ctl.Version}, this build knows {EnforceFormat.Version}: " +
                "remove them with `detect block purge` (this lifts every block) and add the blocks again");
        }
    }

    /// <summary>
    /// Serialises changes across processes (agent, `detect block`): flock on a file opened with
    /// open(2) directly, since .NET's own FileShare emulation takes a conflicting flock itself.
    /// </summary>
    internal static IDisposable Lock()
    {
        const int OCreat = 0x40;
        int fd;
        fixed (byte* p = LibBpf.Z(LockPath)) fd = NetLibc.open(p, 2 /* O_RDWR */ | OCreat | NetLibc.OCloexec, 0x180 /* 0600 */);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new BpfException($"could not open {LockPath}: {Errnos.Describe(errno)}", errno);
        }
        var handle = new SafeBpfFd(fd); // closing the fd releases the lock
        if (NetLibc.flock(fd, 2 /* LOCK_EX */) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw new BpfException($"could not lock {LockPath}: {Errnos.Describe(errno)}", errno);
        }
        return handle;
    }

    /// <summary>The allowlist as it stands: loopback, this host's addresses, and what agents pinned (their configured CIDRs and namespaces' addresses).</summary>
    public Allowlist ReadAllowlist()
    {
        var list = Allowlist.ForThisHost();
        foreach (var k in Map("detect_allow4").Keys<LpmKeyV4>())
            if (Map("detect_allow4").TryLookup(k, out AllowEntry e)) list.Add(k.Network, e.Kind, e.Kind == AllowKind.Host ? $"an address of this host (ifindex {e.Ifindex})" : "configured");
        foreach (var k in Map("detect_allow6").Keys<LpmKeyV6>())
            if (Map("detect_allow6").TryLookup(k, out AllowEntry e)) list.Add(k.Network, e.Kind, e.Kind == AllowKind.Host ? $"an address of this host (ifindex {e.Ifindex})" : "configured");
        return list;
    }

    /// <summary>Puts a prefix on the pinned allowlist (the programs honour it too).</summary>
    public void Allow(IPNetwork network, AllowKind kind, int ifindex = 0)
    {
        using var _ = Lock();
        var value = new AllowEntry { Kind = kind, Ifindex = (uint)ifindex };
        if (network.BaseAddress.AddressFamily == AddressFamily.InterNetwork) Map("detect_allow4").Update(LpmKeyV4.From(network), value);
        else Map("detect_allow6").Update(LpmKeyV6.From(network), value);
    }

    /// <summary>Replaces the pinned configured CIDRs (kind Configured) with <paramref name="networks"/>.</summary>
    public void SetConfiguredAllowlist(IEnumerable<IPNetwork> networks)
    {
        using var _ = Lock();
        foreach (var k in Map("detect_allow4").Keys<LpmKeyV4>())
            if (Map("detect_allow4").TryLookup(k, out AllowEntry e) && e.Kind == AllowKind.Configured) Map("detect_allow4").Delete(k);
        foreach (var k in Map("detect_allow6").Keys<LpmKeyV6>())
            if (Map("detect_allow6").TryLookup(k, out AllowEntry e) && e.Kind == AllowKind.Configured) Map("detect_allow6").Delete(k);
        var value = new AllowEntry { Kind = AllowKind.Configured };
        foreach (var n in networks)
        {
            if (n.BaseAddress.AddressFamily == AddressFamily.InterNetwork) Map("detect_allow4").Update(LpmKeyV4.From(n), value);
            else Map("detect_allow6").Update(LpmKeyV6.From(n), value);
        }
    }

    /// <summary>
    /// Adds (or renews) an entry. Refuses with <see cref="AllowlistException"/> what the allowlist
    /// protects, and with <see cref="ArgumentException"/> a process that cannot be killed safely
    /// (pid 1, a kernel thread, this process, the enforcing agent) or does not exist. A renewed
    /// entry keeps its hit counter.
    /// </summary>
    public BlockEntry Add(BlockRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Ttl is { } ttl && ttl <= TimeSpan.Zero) throw new ArgumentException($"the TTL must be positive (got {ttl})");
        using var _ = Lock();
        var now = (ulong)KernelClock.BootTimeNs();
        var entry = new EnforceEntry
        {
            AddedNs = now,
            ExpiresNs = request.Ttl is { } t ? now + (ulong)(t.Ticks * 100) : 0,
            ReasonId = InternReason(request.Reason),
            Flags = request.DryRun ? EnforceFlags.DryRun : EnforceFlags.None,
        };
        switch (request.Kind)
        {
            case BlockKind.Process:
            {
                var pid = request.Pid;
                CheckKillable(pid);
                entry.StartTicks = StartTicks(pid) ?? throw new ArgumentException($"there is no process {pid}");
                var map = Map("detect_block_pid");
                if (map.TryLookup((uint)pid, out EnforceEntry old) && old.StartTicks == entry.StartTicks)
                {
                    entry.Hits = old.Hits;
                    entry.LastHitNs = old.LastHitNs;
                }
                map.Update((uint)pid, entry);
                UpdateKillArmed();
                break;
            }
            case BlockKind.Source:
            case BlockKind.Destination:
            {
                var prefix = request.Prefix ?? throw new ArgumentException("a source or destination block needs a prefix");
                ReadAllowlist().Check(prefix, request.Kind);
                var (map, key) = PrefixMap(request.Kind, prefix);
                if (map.TryLookup(key, out var oldBytes) && oldBytes is { } ob)
                {
                    entry.Hits = ob.Hits;
                    entry.LastHitNs = ob.LastHitNs;
                }
                map.Update(key, MemoryMarshal.AsBytes(new ReadOnlySpan<EnforceEntry>(in entry)));
                break;
            }
        }
        return ToEntry(request.Kind, request.Target, request.Prefix, request.Kind == BlockKind.Process ? request.Pid : 0, entry, now, BootToUnixNs());
    }

    /// <summary>Removes an entry; false when there was none.</summary>
    public bool Remove(BlockKind kind, string target)
    {
        using var _ = Lock();
        if (kind == BlockKind.Process)
        {
            if (!uint.TryParse(target, NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) throw new ArgumentException($"'{target}' is not a process id");
            var removed = Map("detect_block_pid").Delete(pid);
            UpdateKillArmed();
            return removed;
        }
        var prefix = BlockRequest.ParsePrefix(target);
        var (map, key) = PrefixMap(kind, prefix);
        return map.Delete(key);
    }

    /// <summary>Every entry of every list, expired ones included (marked), until a sweep removes them.</summary>
    public List<BlockEntry> List()
    {
        var now = (ulong)KernelClock.BootTimeNs();
        var offset = BootToUnixNs();
        var result = new List<BlockEntry>();
        foreach (var kind in new[] { BlockKind.Source, BlockKind.Destination })
        {
            var (v4, v6) = kind == BlockKind.Source ? ("detect_block_src4", "detect_block_src6") : ("detect_block_dst4", "detect_block_dst6");
            foreach (var k in Map(v4).Keys<LpmKeyV4>())
                if (Map(v4).TryLookup(k, out EnforceEntry e)) result.Add(ToEntry(kind, k.Network.ToString(), k.Network, 0, e, now, offset));
            foreach (var k in Map(v6).Keys<LpmKeyV6>())
                if (Map(v6).TryLookup(k, out EnforceEntry e)) result.Add(ToEntry(kind, k.Network.ToString(), k.Network, 0, e, now, offset));
        }
        foreach (var pid in Map("detect_block_pid").Keys<uint>())
            if (Map("detect_block_pid").TryLookup(pid, out EnforceEntry e))
                result.Add(ToEntry(BlockKind.Process, pid.ToString(CultureInfo.InvariantCulture), null, (int)pid, e, now, offset));
        return result;
    }

    /// <summary>The entry for one target, or null.</summary>
    public BlockEntry? Find(BlockKind kind, string target)
    {
        var normal = kind == BlockKind.Process ? target : BlockRequest.ParsePrefix(target).ToString();
        return List().FirstOrDefault(e => e.Kind == kind && e.Target == normal);
    }

    /// <summary>
    /// Removes expired entries, kill entries whose process is gone (or whose pid now belongs to
    /// another process), and reasons no entry uses. Returns the number of entries removed.
    /// </summary>
    public int Sweep()
    {
        using var _ = Lock();
        var now = (ulong)KernelClock.BootTimeNs();
        var removed = 0;
        var reasons = new HashSet<uint>();
        bool Expired(in EnforceEntry e) => e.ExpiresNs != 0 && now >= e.ExpiresNs;
        foreach (var name in new[] { "detect_block_src4", "detect_block_dst4" })
        {
            foreach (var k in Map(name).Keys<LpmKeyV4>())
            {
                if (!Map(name).TryLookup(k, out EnforceEntry e)) continue;
                if (Expired(e)) removed += Map(name).Delete(k) ? 1 : 0;
                else reasons.Add(e.ReasonId);
            }
        }
        foreach (var name in new[] { "detect_block_src6", "detect_block_dst6" })
        {
            foreach (var k in Map(name).Keys<LpmKeyV6>())
            {
                if (!Map(name).TryLookup(k, out EnforceEntry e)) continue;
                if (Expired(e)) removed += Map(name).Delete(k) ? 1 : 0;
                else reasons.Add(e.ReasonId);
            }
        }
        var pids = Map("detect_block_pid");
        foreach (var pid in pids.Keys<uint>())
        {
            if (!pids.TryLookup(pid, out EnforceEntry e)) continue;
            if (Expired(e) || StartTicks((int)pid) != e.StartTicks) removed += pids.Delete(pid) ? 1 : 0;
            else reasons.Add(e.ReasonId);
        }
        var reasonMap = Map("detect_enforce_reasons");
        foreach (var id in reasonMap.Keys<uint>())
            if (!reasons.Contains(id)) reasonMap.Delete(id);
        UpdateKillArmed();
        return removed;
    }

    /// <summary>What the programs did and could not do, summed over CPUs.</summary>
    public EnforceCounters ReadCounters()
    {
        Span<EnforceCounters> perCpu = new EnforceCounters[BpfSystem.PossibleCpus];
        var sum = default(EnforceCounters);
        if (Map("detect_enforce_stats").TryLookupPerCpu(0u, perCpu))
            foreach (var c in perCpu) sum += c;
        return sum;
    }

    public EnforceControl ReadControl()
    {
        Map("detect_enforce_ctl").TryLookup(0u, out EnforceControl ctl);
        return ctl;
    }

    internal void WriteControl(in EnforceControl ctl) => Map("detect_enforce_ctl").Update(0u, ctl);

    /// <summary>Records the enforcing agent (whose pid the kill list refuses); 0 clears it.</summary>
    public void SetAgent(int pid)
    {
        using var _ = Lock();
        var ctl = ReadControl();
        ctl.AgentTgid = (uint)pid;
        WriteControl(ctl);
    }

    private void UpdateKillArmed()
    {
        var ctl = ReadControl();
        var armed = Map("detect_block_pid").Keys<uint>().Count > 0 ? 1u : 0u;
        if (ctl.KillArmed == armed) return;
        ctl.KillArmed = armed;
        WriteControl(ctl);
    }

    private void CheckKillable(int pid)
    {
        if (pid <= 1) throw new ArgumentException($"refusing to kill process {pid}: pid 1 (init) and lower are never killed");
        if (pid == Environment.ProcessId) throw new ArgumentException($"refusing to kill process {pid}: it is this process");
        var agent = ReadControl().AgentTgid;
        if (agent != 0 && pid == agent) throw new ArgumentException($"refusing to kill process {pid}: it is the enforcing agent");
        var stat = ReadStat(pid) ?? throw new ArgumentException($"there is no process {pid}");
        const ulong PfKthread = 0x00200000;
        if ((ulong.Parse(stat[6], CultureInfo.InvariantCulture) & PfKthread) != 0)
            throw new ArgumentException($"refusing to kill process {pid}: it is a kernel thread");
    }

    /// <summary>Fields of /proc/PID/stat after the command name (field 3 is index 0), or null.</summary>
    private static string[]? ReadStat(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
        var close = text.LastIndexOf(')');
        return close < 0 ? null : text[(close + 2)..].Split(' ');
    }

    /// <summary>A process's start time in clock ticks since boot (field 22), or null when it does not exist.</summary>
    public static ulong? StartTicks(int pid)
    {
        var f = ReadStat(pid);
        return f is { Length: > 19 } && ulong.TryParse(f[19], NumberStyles.None, CultureInfo.InvariantCulture, out var t) ? t : null;
    }

    private uint InternReason(string text)
    {
        var reason = EnforceReason.From(text);
        var stored = reason.ToString();
        var map = Map("detect_enforce_reasons");
        var id = Fnv1a(stored);
        for (var probe = 0; probe < 64; probe++, id++)
        {
            if (id == 0) id = 1;
            if (!map.TryLookup(id, out EnforceReason existing))
            {
                map.Update(id, reason);
                return id;
            }
            if (existing.ToString() == stored) return id;
        }
        throw new InvalidOperationException("the reason table has no free id near this reason's hash");
    }

    private static uint Fnv1a(string s)
    {
        var h = 2166136261u;
        foreach (var b in System.Text.Encoding.UTF8.GetBytes(s)) h = (h ^ b) * 16777619u;
        return h == 0 ? 1 : h;
    }

    private string ReasonText(uint id) =>
        id != 0 && Map("detect_enforce_reasons").TryLookup(id, out EnforceReason r) ? r.ToString() : "";

    private (PrefixMapRef Map, byte[] Key) PrefixMap(BlockKind kind, IPNetwork prefix)
    {
        var v4 = prefix.BaseAddress.AddressFamily == AddressFamily.InterNetwork;
        var name = (kind, v4) switch
        {
            (BlockKind.Source, true) => "detect_block_src4",
            (BlockKind.Source, false) => "detect_block_src6",
            (BlockKind.Destination, true) => "detect_block_dst4",
            _ => "detect_block_dst6",
        };
        byte[] key;
        if (v4)
        {
            var k = LpmKeyV4.From(prefix);
            key = MemoryMarshal.AsBytes(new ReadOnlySpan<LpmKeyV4>(in k)).ToArray();
        }
        else
        {
            var k = LpmKeyV6.From(prefix);
            key = MemoryMarshal.AsBytes(new ReadOnlySpan<LpmKeyV6>(in k)).ToArray();
        }
        return (new PrefixMapRef(Map(name)), key);
    }

    /// <summary>An LPM map addressed with key bytes (v4 and v6 keys differ in size).</summary>
    private readonly struct PrefixMapRef(BpfMap map)
    {
        public bool TryLookup(byte[] key, out EnforceEntry? entry)
        {
            Span<byte> value = stackalloc byte[EnforceEntry.Size];
            if (map.TryLookup(key, value))
            {
                entry = MemoryMarshal.Read<EnforceEntry>(value);
                return true;
            }
            entry = null;
            return false;
        }

        public void Update(byte[] key, ReadOnlySpan<byte> value) => map.Update(key, value);

        public bool Delete(byte[] key) => map.Delete(key);
    }

    private static long BootToUnixNs() => KernelClock.BootToRealtimeOffsetNs();

    private BlockEntry ToEntry(BlockKind kind, string target, IPNetwork? prefix, int pid, in EnforceEntry e, ulong now, long bootToUnixNs)
    {
        DateTimeOffset At(ulong bootNs) => DateTimeOffset.FromUnixTimeMilliseconds(((long)bootNs + bootToUnixNs) / 1_000_000);
        return new BlockEntry(
            kind, target, prefix, pid,
            At(e.AddedNs),
            e.ExpiresNs == 0 ? null : At(e.ExpiresNs),
            e.ExpiresNs != 0 && now >= e.ExpiresNs,
            e.Hits,
            e.LastHitNs == 0 ? null : At(e.LastHitNs),
            ReasonText(e.ReasonId),
            (e.Flags & EnforceFlags.DryRun) != 0);
    }

    /// <summary>
    /// Removes every enforcement pin under <paramref name="pinRoot"/> (lists and links): every
    /// block is lifted once no process holds the programs any longer. Returns what was removed.
    /// </summary>
    public static List<string> Purge(string? pinRoot = null)
    {
        pinRoot ??= DefaultPinRoot;
        BpfSystem.EnsurePrivileged();
        var removed = new List<string>();
        using var _ = Lock();
        var links = Path.Combine(pinRoot, "links");
        if (Directory.Exists(links))
        {
            foreach (var f in Directory.GetFiles(links))
            {
                File.Delete(f);
                removed.Add(f);
            }
            Directory.Delete(links);
        }
        foreach (var name in MapNames)
        {
            var path = Path.Combine(pinRoot, name);
            if (!File.Exists(path)) continue;
            File.Delete(path);
            removed.Add(path);
        }
        if (Directory.Exists(pinRoot) && !Directory.EnumerateFileSystemEntries(pinRoot).Any() && pinRoot != BpfSystem.BpfFsPath)
            Directory.Delete(pinRoot);
        return removed;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var m in _maps.Values) m.Dispose();
    }
}
