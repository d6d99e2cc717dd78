// Detect's BPF loader: libbpf 1.1 (Debian's libbpf.so.1) through [LibraryImport].
//
// API in one page (namespace Detect.Sensors.Bpf):
//
//   BpfSystem.EnsurePrivileged();            // plain error without root/CAP_BPF, before libbpf is touched
//   BpfSystem.EnsureMounted();               // bpffs at /sys/fs/bpf, tracefs at /sys/kernel/tracing
//   using var obj = BpfObject.Open(BpfObject.Find("process.bpf.o"), new BpfObjectOptions { PinRoot = "/sys/fs/bpf/detect" });
//   obj.SetReadOnly("detect_config", config);        // const volatile .rodata, by BTF variable name
//   obj.Maps["events"].MaxEntries = 1 << 24;         // before Load
//   obj.Maps["shared"].ReuseFrom(other.Maps["shared"]); // one map serving several objects
//   obj.Programs["optional_prog"].AutoLoad = false;
//   obj.Load();                              // a program the kernel refuses is left out (obj.Refusals
//                                            // names it, its section and the kernel's reason) and the
//                                            // rest load; BpfObjectOptions.StrictLoad makes it throw
//   var report = obj.AttachAll();            // tracing programs, each separately: report.Programs has
//                                            // Attached / Refused with the reason; others keep running
//   using var link = obj.Programs["xdp_prog"].AttachXdp(ifindex);  // or AttachCgroup(fd)
//   obj.Maps["table"].Update(key, value); TryLookup(key, out value); Delete(key); Keys<TKey>();
//   obj.Maps["table"].Pin("/sys/fs/bpf/detect/table"); BpfMap.OpenPinned(path); BpfLink.Pin(path)
//   using var ring = new RingBufferReader(obj.Maps["events"]);   // mmap'ed, zero-copy, batched
//   obj.Dispose();                           // links destroyed first, then the object closed
//
// Every kernel handle is an IDisposable over a SafeHandle; a second Dispose is harmless.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Detect.Records;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>Options of <see cref="BpfObject.Open"/>.</summary>
public sealed record BpfObjectOptions
{
    /// <summary>Directory for maps declared with LIBBPF_PIN_BY_NAME (libbpf's pin_root_path). Default /sys/fs/bpf.</summary>
    public string? PinRoot { get; init; }

    /// <summary>Overrides the object name (default: the file name without .bpf.o).</summary>
    public string? Name { get; init; }

    /// <summary>
    /// Throw when the kernel refuses any program at load, instead of leaving it out and loading
    /// the others. Off by default: one refused sensor must not blind the rest.
    /// </summary>
    public bool StrictLoad { get; init; }
}

/// <summary>Lifecycle of a <see cref="BpfObject"/>.</summary>
public enum BpfObjectState
{
    Opened,
    Loaded,
    Disposed,
}

/// <summary>A program the kernel (or libbpf, on the kernel's behalf) refused to load.</summary>
public sealed record ProgramRefusal(string Program, string AttachPoint, int Errno, string Reason)
{
    public override string ToString() =>
        $"program {Program} ({AttachPoint}) was refused at load: {(Errno != 0 ? Errnos.Describe(Errno) + ": " : "")}{Reason}";
}

/// <summary>
/// One BPF object file (a compiled *.bpf.o): its programs and maps, opened, configured, loaded
/// and attached through libbpf. See the API note at the top of this file.
/// </summary>
public sealed unsafe class BpfObject : IDisposable
{
    private static readonly Regex ProgName = new(@"prog '([^']+)'", RegexOptions.Compiled);
    private static readonly Regex FailedToLoad = new(@"prog '([^']+)': failed to load: (-?\d+)", RegexOptions.Compiled);

    private readonly BpfObjectOptions _options;
    private readonly List<Action> _setup = []; // replayed when the object is reopened after a refusal
    private readonly List<ProgramRefusal> _refusals = [];
    private SafeBpfObjectHandle _handle;
    private int _disposed;

    private BpfObject(string path, BpfObjectOptions options)
    {
        Path = path;
        _options = options;
        _handle = OpenNative(path, options);
        Name = LibBpf.Utf8(LibBpf.bpf_object__name(Native)) ?? System.IO.Path.GetFileName(path);
        var programs = new List<BpfProgram>();
        for (var p = LibBpf.bpf_object__next_program(Native, 0); p != 0; p = LibBpf.bpf_object__next_program(Native, p))
            programs.Add(new BpfProgram(this, p));
        Programs = new BpfProgramCollection(programs);
        var maps = new List<BpfMap>();
        for (var m = LibBpf.bpf_object__next_map(Native, 0); m != 0; m = LibBpf.bpf_object__next_map(Native, m))
            maps.Add(new BpfMap(this, m));
        Maps = new BpfMapCollection(maps);
    }

    /// <summary>The object file.</summary>
    public string Path { get; }

    /// <summary>libbpf's object name (the file name without .bpf.o, or <see cref="BpfObjectOptions.Name"/>).</summary>
    public string Name { get; }

    public BpfObjectState State { get; private set; } = BpfObjectState.Opened;

    public BpfProgramCollection Programs { get; }

    public BpfMapCollection Maps { get; }

    /// <summary>Programs the kernel refused at <see cref="Load"/>, with the reason; the others loaded.</summary>
    public IReadOnlyList<ProgramRefusal> Refusals => _refusals;

    internal nint Native => _handle.DangerousGetHandle();

    /// <summary>
    /// Opens a BPF object file (does not load it). Checks the privilege first so that a user
    /// without root gets a plain sentence, not a libbpf error.
    /// </summary>
    public static BpfObject Open(string path, BpfObjectOptions? options = null)
    {
        BpfSystem.EnsurePrivileged();
        if (!File.Exists(path)) throw new FileNotFoundException($"BPF object {path} does not exist (is the build complete? `make -C bpf`)", path);
        LibBpfLog.Install();
        return new BpfObject(System.IO.Path.GetFullPath(path), options ?? new BpfObjectOptions());
    }

    /// <summary>
    /// Finds a compiled object by file name: beside the assemblies in bpf/ (where the build
    /// copies them), then in the checkout's bpf/build.
    /// </summary>
    public static string Find(string fileName)
    {
        var candidates = new List<string>
        {
            System.IO.Path.Combine(AppContext.BaseDirectory, "bpf", fileName),
        };
        if (Environment.GetEnvironmentVariable("DETECT_ROOT") is { Length: > 0 } root)
            candidates.Add(System.IO.Path.Combine(root, "bpf", "build", fileName));
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Detect.sln")))
            {
                candidates.Add(System.IO.Path.Combine(dir.FullName, "bpf", "build", fileName));
                break;
            }
        }
        foreach (var c in candidates)
            if (File.Exists(c)) return c;
        throw new FileNotFoundException($"BPF object {fileName} not found; looked in: {string.Join(", ", candidates)}", fileName);
    }

    private static SafeBpfObjectHandle OpenNative(string path, BpfObjectOptions options)
    {
        using var log = LibBpfLog.Capture();
        var opts = new LibBpf.ObjectOpenOpts { Sz = (nuint)sizeof(LibBpf.ObjectOpenOpts) };
        fixed (byte* p = LibBpf.Z(path))
        fixed (byte* pin = options.PinRoot == null ? null : LibBpf.Z(options.PinRoot))
        fixed (byte* name = options.Name == null ? null : LibBpf.Z(options.Name))
        {
            opts.PinRootPath = pin;
            opts.ObjectName = name;
            var obj = LibBpf.bpf_object__open_file(p, &opts);
            if (obj == 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                throw new BpfException($"could not open BPF object {path}: {Errnos.Describe(errno)}{Warnings(log.Messages, null)}", errno, log: Join(log.Messages));
            }
            return new SafeBpfObjectHandle(obj);
        }
    }

    /// <summary>Runs a configuration step now and again whenever the object is reopened.</summary>
    internal void Setup(Action step)
    {
        RequireState(BpfObjectState.Opened, "configured");
        step();
        _setup.Add(step);
    }

    /// <summary>
    /// Writes <paramref name="value"/> over the const volatile global <paramref name="variable"/>
    /// in .rodata, found through the object's BTF (name, offset and size checked), before load.
    /// </summary>
    public void SetReadOnly<T>(string variable, in T value) where T : unmanaged
    {
        var copy = value;
        Setup(() => WriteReadOnly(variable, copy));
    }

    /// <summary>The sensors' configuration: the detect_config variable every Detect object declares.</summary>
    public void SetConfig(in SensorConfig config) => SetReadOnly("detect_config", config);

    private void WriteReadOnly<T>(string variable, T value) where T : unmanaged
    {
        var rodata = Maps.FirstOrDefault(m => m.IsInternal && m.Name.EndsWith(".rodata", StringComparison.Ordinal))
            ?? throw new BpfException($"{Name}: the object has no .rodata (no const volatile globals), so '{variable}' cannot be set");
        var (offset, size) = FindVariable(".rodata", variable);
        if (size != sizeof(T))
            throw new BpfException($"{Name}: .rodata variable '{variable}' has {size} bytes, {typeof(T).Name} has {sizeof(T)}: the C# mirror and the object disagree");
        nuint total;
        var data = LibBpf.bpf_map__initial_value(rodata.NativeMap, &total);
        if (data == 0 || offset + size > (int)total)
            throw new BpfException($"{Name}: .rodata of {total} bytes cannot hold '{variable}' at {offset}+{size}");
        Unsafe.WriteUnaligned((byte*)data + offset, value);
    }

    /// <summary>(offset, size) of a global variable in a data section, from the object's BTF.</summary>
    internal (int Offset, int Size) FindVariable(string section, string variable)
    {
        var btf = LibBpf.bpf_object__btf(Native);
        if (btf == 0) throw new BpfException($"{Name}: the object has no BTF (compile with clang -g)");
        int id;
        fixed (byte* s = LibBpf.Z(section)) id = LibBpf.btf__find_by_name_kind(btf, s, LibBpf.BtfKindDatasec);
        if (id <= 0) throw new BpfException($"{Name}: no {section} section in the object's BTF");
        var datasec = LibBpf.btf__type_by_id(btf, (uint)id);
        var info = (LibBpf.BtfVarSecinfo*)(datasec + 1);
        for (var i = 0; i < datasec->Vlen; i++)
        {
            var var = LibBpf.btf__type_by_id(btf, info[i].Type);
            if (var == null || var->Kind != LibBpf.BtfKindVar) continue;
            if (LibBpf.Utf8(LibBpf.btf__name_by_offset(btf, var->NameOff)) == variable)
                return ((int)info[i].Offset, (int)info[i].Size);
        }
        throw new BpfException($"{Name}: no variable '{variable}' in {section}");
    }

    /// <summary>
    /// Loads every program whose <see cref="BpfProgram.AutoLoad"/> is on, and creates the maps.
    /// A program the kernel refuses is recorded in <see cref="Refusals"/> and left out; the
    /// object is reopened, configured again and the others are loaded. Throws when a map cannot
    /// be created, when no program is left, or on any refusal with <see cref="BpfObjectOptions.StrictLoad"/>.
    /// </summary>
    public void Load()
    {
        RequireState(BpfObjectState.Opened, "loaded");
        while (true)
        {
            List<LibBpfMessage> messages;
            int rc;
            using (var log = LibBpfLog.Capture())
            {
                rc = LibBpf.bpf_object__load(Native);
                messages = log.Messages;
            }
            if (rc == 0) break;

            var refused = IdentifyRefusedProgram(messages);
            var text = Join(messages);
            if (refused == null)
                throw new BpfException($"could not load BPF object {Name}: {Errnos.Describe(rc)}{Warnings(messages, null)}", -rc, log: text);
            var errno = ProgramErrno(messages, refused.Name, rc);
            var refusal = new ProgramRefusal(refused.Name, refused.AttachPoint, errno, KernelReason(messages, refused.Name));
            if (_options.StrictLoad)
                throw new BpfException($"{Name}: {refusal}", errno, refused.Name, refused.AttachPoint, text);
            _refusals.Add(refusal);
            Reopen();
            foreach (var r in _refusals) Programs[r.Program].SetRefused(r);
            if (!Programs.Any(p => p.AutoLoad))
                throw new BpfException($"{Name}: the kernel refused every program: {string.Join("; ", _refusals)}", errno, log: text);
        }
        State = BpfObjectState.Loaded;
        foreach (var p in Programs) p.AfterLoad();
    }

    private BpfProgram? IdentifyRefusedProgram(List<LibBpfMessage> messages)
    {
        // libbpf 1.1 prefixes everything it reports about one program with "prog 'NAME': ".
        foreach (var m in messages)
        {
            if (m.Level != LibBpfLogLevel.Warning) continue;
            foreach (Match match in ProgName.Matches(m.Text))
            {
                if (Programs.TryGet(match.Groups[1].Value, out var p) && p.AutoLoad) return p;
            }
        }
        return null;
    }

    private static int ProgramErrno(List<LibBpfMessage> messages, string program, int fallback)
    {
        foreach (var m in messages)
        {
            var match = FailedToLoad.Match(m.Text);
            if (match.Success && match.Groups[1].Value == program && int.TryParse(match.Groups[2].Value, out var e) && e != 0)
                return Math.Abs(e);
        }
        return Math.Abs(fallback);
    }

    /// <summary>The lines libbpf printed about one program, with the end of the verifier log.</summary>
    private static string KernelReason(List<LibBpfMessage> messages, string program)
    {
        var lines = new List<string>();
        foreach (var m in messages.Where(m => m.Level == LibBpfLogLevel.Warning && m.Text.Contains($"prog '{program}'", StringComparison.Ordinal)))
        {
            var text = m.Text.Trim();
            var begin = text.IndexOf("-- BEGIN PROG LOAD LOG --", StringComparison.Ordinal);
            if (begin >= 0)
            {
                // The verifier's last lines say why; the rest is the walk through the program.
                var log = text[(begin + 25)..].Replace("-- END PROG LOAD LOG --", "", StringComparison.Ordinal)
                    .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                if (log.Length > 0) lines.Add("verifier: " + string.Join(" | ", log.TakeLast(6)));
                continue;
            }
            lines.Add(text.Replace("libbpf: ", "", StringComparison.Ordinal).Replace($"prog '{program}': ", "", StringComparison.Ordinal));
        }
        return lines.Count == 0 ? "no message from libbpf" : string.Join("; ", lines);
    }

    private void Reopen()
    {
        var old = _handle;
        _handle = OpenNative(Path, _options);
        old.Dispose();
        var programs = new Dictionary<string, nint>(StringComparer.Ordinal);
        for (var p = LibBpf.bpf_object__next_program(Native, 0); p != 0; p = LibBpf.bpf_object__next_program(Native, p))
            programs[LibBpf.Utf8(LibBpf.bpf_program__name(p))!] = p;
        var maps = new Dictionary<string, nint>(StringComparer.Ordinal);
        for (var m = LibBpf.bpf_object__next_map(Native, 0); m != 0; m = LibBpf.bpf_object__next_map(Native, m))
            maps[LibBpf.Utf8(LibBpf.bpf_map__name(m))!] = m;
        foreach (var p in Programs) p.Rebind(programs[p.Name]);
        foreach (var m in Maps) m.Rebind(maps[m.Name]);
        foreach (var step in _setup) step();
    }

    /// <summary>
    /// Attaches every loaded tracing program (tp_btf, raw_tp, tracepoint, fentry, ...) at the
    /// point its section names, one at a time. A refusal is reported (program, attach point,
    /// kernel's reason) and the others are attached still. Programs that need a target
    /// (XDP, TC, cgroup) are left for <see cref="BpfProgram.AttachXdp"/> and the like.
    /// </summary>
    public AttachReport AttachAll(Func<BpfProgram, bool>? include = null)
    {
        RequireState(BpfObjectState.Loaded, "attached");
        var results = new List<ProgramStatus>();
        foreach (var p in Programs)
        {
            if (p.State == ProgramState.Refused)
            {
                results.Add(new ProgramStatus(Name, p.Name, p.AttachPoint, ProgramState.Refused, p.Refusal!.Errno, p.Refusal.Reason));
                continue;
            }
            if (!p.AutoLoad)
            {
                results.Add(new ProgramStatus(Name, p.Name, p.AttachPoint, ProgramState.Disabled, 0, "not loaded (disabled by the agent)"));
                continue;
            }
            if (!p.IsTracing || (include != null && !include(p)))
            {
                results.Add(new ProgramStatus(Name, p.Name, p.AttachPoint, p.State, 0, p.IsTracing ? "left out" : "needs a target (interface, cgroup)"));
                continue;
            }
            if (p.Link != null)
            {
                results.Add(new ProgramStatus(Name, p.Name, p.AttachPoint, ProgramState.Attached, 0, null));
                continue;
            }
            try
            {
                p.Attach();
                results.Add(new ProgramStatus(Name, p.Name, p.AttachPoint, ProgramState.Attached, 0, null));
            }
            catch (BpfException e)
            {
                results.Add(new ProgramStatus(Name, p.Name, p.AttachPoint, ProgramState.AttachRefused, e.Errno, e.Message));
            }
        }
        return new AttachReport(results);
    }

    internal void RequireState(BpfObjectState state, string what)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (State != state)
            throw new InvalidOperationException($"{Name}: cannot be {what} when {State.ToString().ToLowerInvariant()} (needs {state.ToString().ToLowerInvariant()})");
    }

    internal static string Join(List<LibBpfMessage> messages) => string.Concat(messages.Select(m => m.Text));

    /// <summary>"; libbpf: ..." with the warnings (optionally those about one program), or "".</summary>
    internal static string Warnings(List<LibBpfMessage> messages, string? program)
    {
        var lines = messages
            .Where(m => m.Level == LibBpfLogLevel.Warning && (program == null || m.Text.Contains($"'{program}'", StringComparison.Ordinal)))
            .Select(m => m.Text.Replace("libbpf: ", "", StringComparison.Ordinal).Trim())
            .Where(t => t.Length > 0 && !t.Contains("BEGIN PROG LOAD LOG", StringComparison.Ordinal))
            .ToList();
        return lines.Count == 0 ? "" : "; libbpf: " + string.Join("; ", lines);
    }

    public override string ToString() => $"{Name} ({Path})";

    /// <summary>Destroys every link (detaching the programs), then closes the object (unloading them).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var p in Programs) p.DisposeLink();
        foreach (var m in Maps) m.Detach();
        _handle.Dispose();
        State = BpfObjectState.Disposed;
    }
}

/// <summary>The programs of an object, in section order, and by name.</summary>
public sealed class BpfProgramCollection(IReadOnlyList<BpfProgram> programs) : IReadOnlyList<BpfProgram>
{
    private readonly Dictionary<string, BpfProgram> _byName = programs.ToDictionary(p => p.Name, StringComparer.Ordinal);

    public BpfProgram this[int index] => programs[index];

    public BpfProgram this[string name] => _byName.TryGetValue(name, out var p)
        ? p
        : throw new KeyNotFoundException($"no program '{name}'; the object has: {string.Join(", ", _byName.Keys)}");

    public bool TryGet(string name, out BpfProgram program) => _byName.TryGetValue(name, out program!);

    public int Count => programs.Count;

    public IEnumerator<BpfProgram> GetEnumerator() => programs.GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>The maps of an object (internal .rodata/.bss maps included), by name.</summary>
public sealed class BpfMapCollection(IReadOnlyList<BpfMap> maps) : IReadOnlyList<BpfMap>
{
    private readonly Dictionary<string, BpfMap> _byName = maps.ToDictionary(m => m.Name, StringComparer.Ordinal);

    public BpfMap this[int index] => maps[index];

    public BpfMap this[string name] => _byName.TryGetValue(name, out var m)
        ? m
        : throw new KeyNotFoundException($"no map '{name}'; the object has: {string.Join(", ", _byName.Keys)}");

    public bool TryGet(string name, out BpfMap map) => _byName.TryGetValue(name, out map!);

    public int Count => maps.Count;

    public IEnumerator<BpfMap> GetEnumerator() => maps.GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>Where a program stands.</summary>
public enum ProgramState
{
    /// <summary>Opened, not loaded yet.</summary>
    Opened,
    /// <summary>Left out by the agent (AutoLoad off).</summary>
    Disabled,
    /// <summary>The kernel refused to load it.</summary>
    Refused,
    /// <summary>In the kernel, not attached.</summary>
    Loaded,
    /// <summary>Running at its attach point.</summary>
    Attached,
    /// <summary>Loaded, but the kernel refused the attachment.</summary>
    AttachRefused,
}

/// <summary>The outcome for one program.</summary>
public sealed record ProgramStatus(string Object, string Program, string AttachPoint, ProgramState State, int Errno, string? Error)
{
    public override string ToString() => State switch
    {
        ProgramState.Attached => $"{Object}/{Program} attached at {AttachPoint}",
        _ => $"{Object}/{Program} ({AttachPoint}) {State.ToString().ToLowerInvariant()}: " +
             (Errno != 0 && Error?.Contains(Errnos.Name(Errno), StringComparison.Ordinal) != true ? Errnos.Describe(Errno) + ": " : "") + Error,
    };
}

/// <summary>Which programs run and which the kernel refused, with the reasons.</summary>
public sealed class AttachReport(IReadOnlyList<ProgramStatus> programs)
{
    public IReadOnlyList<ProgramStatus> Programs { get; } = programs;

    public IEnumerable<ProgramStatus> Attached => Programs.Where(p => p.State == ProgramState.Attached);

    public IEnumerable<ProgramStatus> Failed => Programs.Where(p => p.State is ProgramState.Refused or ProgramState.AttachRefused);

    public static AttachReport Combine(IEnumerable<AttachReport> reports) => new(reports.SelectMany(r => r.Programs).ToList());

    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (var p in Programs) sb.AppendLine(p.ToString());
        return sb.ToString();
    }
}
