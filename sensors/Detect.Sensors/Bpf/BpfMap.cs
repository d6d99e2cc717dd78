using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>enum bpf_map_type (the kinds Detect uses; others show as their number).</summary>
public enum BpfMapType
{
    Unspecified = 0,
    Hash = 1,
    Array = 2,
    ProgArray = 3,
    PerfEventArray = 4,
    PerCpuHash = 5,
    PerCpuArray = 6,
    LruHash = 9,
    LruPerCpuHash = 10,
    LpmTrie = 11,
    HashOfMaps = 13,
    DevMap = 14,
    SockMap = 15,
    CpuMap = 16,
    Queue = 22,
    RingBuf = 27,
}

/// <summary>BPF_ANY / BPF_NOEXIST / BPF_EXIST.</summary>
public enum BpfUpdate : ulong
{
    Any = 0,
    NoExist = 1,
    Exist = 2,
}

/// <summary>
/// A BPF map: one of an object's (configured before load, used after), or one opened from its
/// pin in bpffs (<see cref="OpenPinned"/>). Element calls take keys and values as spans or as
/// unmanaged structs; a missing key is a false return, any other failure a <see cref="BpfException"/>
/// naming the map. Per-CPU maps take and return one value per possible CPU.
/// </summary>
public sealed unsafe class BpfMap : IDisposable
{
    private readonly BpfObject? _owner;
    private readonly SafeBpfFd? _fd; // maps opened from a pin own their fd
    private nint _native;
    private int _disposed;

    internal BpfMap(BpfObject owner, nint native)
    {
        _owner = owner;
        _native = native;
        Name = LibBpf.Utf8(LibBpf.bpf_map__name(native)) ?? "?";
    }

    private BpfMap(SafeBpfFd fd, string name, BpfMapType type, int keySize, int valueSize, uint maxEntries, uint flags)
    {
        _fd = fd;
        Name = name;
        _type = type;
        _keySize = keySize;
        _valueSize = valueSize;
        _maxEntries = maxEntries;
        _flags = flags;
    }

    private readonly BpfMapType _type;
    private readonly int _keySize, _valueSize;
    private readonly uint _maxEntries, _flags;

    public string Name { get; }

    public BpfMapType Type => _fd != null ? _type : (BpfMapType)LibBpf.bpf_map__type(Native);

    public int KeySize => _fd != null ? _keySize : (int)LibBpf.bpf_map__key_size(Native);

    /// <summary>Size of one value (one CPU's value for per-CPU maps).</summary>
    public int ValueSize => _fd != null ? _valueSize : (int)LibBpf.bpf_map__value_size(Native);

    public uint Flags => _fd != null ? _flags : LibBpf.bpf_map__map_flags(Native);

    /// <summary>Capacity (for ring buffers: the size in bytes). Settable before load.</summary>
    public uint MaxEntries
    {
        get => _fd != null ? _maxEntries : LibBpf.bpf_map__max_entries(Native);
        set
        {
            RequireOwner("resized");
            _owner!.Setup(() =>
            {
                var rc = LibBpf.bpf_map__set_max_entries(_native, value);
                if (rc != 0) throw new BpfException($"map {Name}: could not set max_entries {value}: {Errnos.Describe(rc)}", -rc);
            });
        }
    }

    /// <summary>libbpf's own maps for globals (.rodata, .bss, .data).</summary>
    public bool IsInternal => _fd == null && LibBpf.bpf_map__is_internal(Native);

    public bool IsPerCpu => Type is BpfMapType.PerCpuArray or BpfMapType.PerCpuHash or BpfMapType.LruPerCpuHash;

    /// <summary>The map's fd (after load, or when opened from a pin).</summary>
    public int Fd
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (_fd != null) return _fd.Fd;
            var fd = LibBpf.bpf_map__fd(_native);
            if (fd < 0) throw new InvalidOperationException($"map {Name} has no fd yet: load the object first");
            return fd;
        }
    }

    internal nint NativeMap => Native;

    private nint Native
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            return _native;
        }
    }

    internal void Rebind(nint native) => _native = native;

    /// <summary>The owner was disposed: the map is gone with it.</summary>
    internal void Detach() => Interlocked.Exchange(ref _disposed, 1);

    /// <summary>
    /// Before load: this object uses <paramref name="other"/> (already created) instead of making
    /// its own map, so several objects share one ring, one counter table, one filter.
    /// </summary>
    public void ReuseFrom(BpfMap other)
    {
        RequireOwner("shared");
        _owner!.Setup(() =>
        {
            var rc = LibBpf.bpf_map__reuse_fd(_native, other.Fd);
            if (rc != 0) throw new BpfException($"map {Name}: could not reuse map {other.Name} (fd {other.Fd}): {Errnos.Describe(rc)}", -rc);
        });
    }

    private void RequireOwner(string what)
    {
        if (_owner == null) throw new InvalidOperationException($"map {Name} was opened from a pin: it cannot be {what}");
        _owner.RequireState(BpfObjectState.Opened, what);
    }

    /// <summary>Bytes a lookup writes: ValueSize, or one 8-byte-aligned value per possible CPU.</summary>
    public int ValueBufferSize => IsPerCpu ? ((ValueSize + 7) & ~7) * BpfSystem.PossibleCpus : ValueSize;

    public bool TryLookup(ReadOnlySpan<byte> key, Span<byte> value)
    {
        CheckSizes(key.Length, value.Length);
        fixed (byte* k = key, v = value)
        {
            var rc = LibBpf.bpf_map_lookup_elem(Fd, k, v);
            return Result(rc, "lookup");
        }
    }

    public bool TryLookup<TKey, TValue>(in TKey key, out TValue value) where TKey : unmanaged where TValue : unmanaged
    {
        value = default;
        var k = key;
        return TryLookup(AsBytes(ref k), AsBytes(ref value));
    }

    public void Update(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, BpfUpdate flags = BpfUpdate.Any)
    {
        CheckSizes(key.Length, value.Length);
        fixed (byte* k = key, v = value)
        {
            var rc = LibBpf.bpf_map_update_elem(Fd, k, v, (ulong)flags);
            if (rc != 0) throw Error(rc, $"update ({flags})");
        }
    }

    public void Update<TKey, TValue>(in TKey key, in TValue value, BpfUpdate flags = BpfUpdate.Any) where TKey : unmanaged where TValue : unmanaged
    {
        var k = key;
        var v = value;
        Update(AsBytes(ref k), AsBytes(ref v), flags);
    }

    /// <summary>Deletes a key; false when it was not there.</summary>
    public bool Delete(ReadOnlySpan<byte> key)
    {
        CheckSizes(key.Length, -1);
        fixed (byte* k = key)
        {
            return Result(LibBpf.bpf_map_delete_elem(Fd, k), "delete");
        }
    }

    public bool Delete<TKey>(in TKey key) where TKey : unmanaged
    {
        var k = key;
        return Delete(AsBytes(ref k));
    }

    /// <summary>Reads and removes one element in one step (hash maps: nothing counted between the two is lost).</summary>
    public bool TryLookupAndDelete(ReadOnlySpan<byte> key, Span<byte> value)
    {
        CheckSizes(key.Length, value.Length);
        fixed (byte* k = key, v = value)
        {
            return Result(LibBpf.bpf_map_lookup_and_delete_elem(Fd, k, v), "lookup-and-delete");
        }
    }

    /// <summary>The key after <paramref name="key"/> (or the first key when <paramref name="key"/> is empty); false at the end.</summary>
    public bool TryGetNextKey(ReadOnlySpan<byte> key, Span<byte> next)
    {
        if (next.Length != KeySize || (key.Length != 0 && key.Length != KeySize))
            throw new ArgumentException($"map {Name}: keys are {KeySize} bytes");
        fixed (byte* k = key, n = next)
        {
            return Result(LibBpf.bpf_map_get_next_key(Fd, key.Length == 0 ? null : k, n), "get-next-key");
        }
    }

    /// <summary>A snapshot of the keys (control-plane use: allocates a list).</summary>
    public List<TKey> Keys<TKey>() where TKey : unmanaged
    {
        if (sizeof(TKey) != KeySize) throw new ArgumentException($"map {Name}: keys are {KeySize} bytes, {typeof(TKey).Name} has {sizeof(TKey)}");
        var keys = new List<TKey>();
        TKey current = default, next = default;
        var first = true;
        while (TryGetNextKey(first ? default : AsBytes(ref current), AsBytes(ref next)))
        {
            keys.Add(next);
            current = next;
            first = false;
            if (keys.Count > 16_000_000) throw new BpfException($"map {Name}: key iteration does not end");
        }
        return keys;
    }

    /// <summary>One value per possible CPU for a per-CPU map's key.</summary>
    public bool TryLookupPerCpu<TKey, TValue>(in TKey key, Span<TValue> perCpu) where TKey : unmanaged where TValue : unmanaged
    {
        if (!IsPerCpu) throw new InvalidOperationException($"map {Name} is not a per-CPU map");
        if (sizeof(TValue) != ((ValueSize + 7) & ~7) && sizeof(TValue) != ValueSize)
            throw new ArgumentException($"map {Name}: values are {ValueSize} bytes, {typeof(TValue).Name} has {sizeof(TValue)}");
        if (sizeof(TValue) % 8 != 0) throw new ArgumentException("per-CPU values are read in 8-byte slots: pad the value type");
        if (perCpu.Length < BpfSystem.PossibleCpus) throw new ArgumentException($"per-CPU lookup needs {BpfSystem.PossibleCpus} slots");
        var k = key;
        return TryLookup(AsBytes(ref k), MemoryMarshal.AsBytes(perCpu[..BpfSystem.PossibleCpus]));
    }

    /// <summary>The sum over CPUs of a per-CPU u64 counter (0 when the key is absent).</summary>
    public ulong SumPerCpu<TKey>(in TKey key) where TKey : unmanaged
    {
        Span<ulong> values = stackalloc ulong[BpfSystem.PossibleCpus];
        if (!TryLookupPerCpu(key, values)) return 0;
        ulong sum = 0;
        foreach (var v in values) sum += v;
        return sum;
    }

    /// <summary>Pins the map at <paramref name="path"/> in bpffs (the directory is made).</summary>
    public void Pin(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        fixed (byte* p = LibBpf.Z(path))
        {
            var rc = _fd != null || _owner!.State == BpfObjectState.Loaded
                ? (LibBpf.bpf_obj_pin(Fd, p) == 0 ? 0 : -Marshal.GetLastPInvokeError())
                : LibBpf.bpf_map__set_pin_path(Native, p);
            if (rc != 0) throw new BpfException($"could not pin map {Name} at {path}: {Errnos.Describe(rc)}", -rc);
        }
    }

    /// <summary>Removes the pin at <paramref name="path"/>; false when there was none.</summary>
    public bool Unpin(string path)
    {
        if (!File.Exists(path)) return false;
        File.Delete(path); // unlink in bpffs is exactly unpinning
        return true;
    }

    /// <summary>Opens a map pinned at <paramref name="path"/>; dispose closes this process's fd (the pin stays).</summary>
    public static BpfMap OpenPinned(string path)
    {
        BpfSystem.EnsurePrivileged();
        LibBpfLog.Install();
        int fd;
        fixed (byte* p = LibBpf.Z(path)) fd = LibBpf.bpf_obj_get(p);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new BpfException($"could not open the map pinned at {path}: {Errnos.Describe(errno)}", errno);
        }
        var handle = new SafeBpfFd(fd);
        const int InfoSize = 88;
        var info = stackalloc byte[InfoSize];
        new Span<byte>(info, InfoSize).Clear();
        var len = (uint)InfoSize;
        var rc = LibBpf.bpf_obj_get_info_by_fd(fd, info, &len);
        if (rc != 0)
        {
            handle.Dispose();
            throw new BpfException($"{path} is not a BPF map: {Errnos.Describe(rc)}", -rc);
        }
        var name = LibBpf.Utf8(info + 24) ?? Path.GetFileName(path);
        return new BpfMap(handle, name, (BpfMapType)(*(uint*)info), (int)*(uint*)(info + 8), (int)*(uint*)(info + 12), *(uint*)(info + 16), *(uint*)(info + 20));
    }

    private void CheckSizes(int key, int value)
    {
        if (key != KeySize) throw new ArgumentException($"map {Name}: keys are {KeySize} bytes, got {key}");
        if (value >= 0 && value != ValueBufferSize)
            throw new ArgumentException($"map {Name}: values are {ValueBufferSize} bytes{(IsPerCpu ? " (all CPUs)" : "")}, got {value}");
    }

    private bool Result(int rc, string op)
    {
        if (rc == 0) return true;
        if (rc == -2) return false; // ENOENT
        throw Error(rc, op);
    }

    private BpfException Error(int rc, string op) => new($"map {Name}: {op} failed: {Errnos.Describe(rc)}", -rc);

    private static Span<byte> AsBytes<T>(ref T value) where T : unmanaged =>
        MemoryMarshal.AsBytes(MemoryMarshal.CreateSpan(ref value, 1));

    public override string ToString() => $"{Name} ({Type}, key {KeySize} B, value {ValueSize} B, max {MaxEntries})";

    /// <summary>Closes the fd of a map opened from a pin; maps of an object go with the object.</summary>
    public void Dispose()
    {
        if (_fd == null) return;
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _fd.Dispose();
    }
}
