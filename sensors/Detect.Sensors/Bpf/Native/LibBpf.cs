using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Detect.Sensors.Bpf.Native;

/// <summary>
/// libbpf 1.1 (Debian's libbpf.so.1). Conventions of this API version: functions returning int
/// return 0 or a negative errno; functions returning a pointer return NULL and set errno.
/// Only the loader types in this folder call these.
/// </summary>
internal static unsafe partial class LibBpf
{
    private const string Lib = "libbpf.so.1";

    // bpf_object_open_opts of libbpf 1.1 (libbpf.h); sz tells libbpf which fields we know.
    [StructLayout(LayoutKind.Sequential)]
    internal struct ObjectOpenOpts
    {
        public nuint Sz;
        public byte* ObjectName;
        [MarshalAs(UnmanagedType.U1)] public bool RelaxedMaps;
        public byte* PinRootPath;
        public uint AttachProgFdRemoved;
        public byte* Kconfig;
        public byte* BtfCustomPath;
        public byte* KernelLogBuf;
        public nuint KernelLogSize;
        public uint KernelLogLevel;
    }

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint bpf_object__open_file(byte* path, ObjectOpenOpts* opts);

    [LibraryImport(Lib)]
    internal static partial int bpf_object__load(nint obj);

    [LibraryImport(Lib)]
    internal static partial void bpf_object__close(nint obj);

    [LibraryImport(Lib)]
    internal static partial nint bpf_object__name(nint obj);

    [LibraryImport(Lib)]
    internal static partial nint bpf_object__btf(nint obj);

    [LibraryImport(Lib)]
    internal static partial nint bpf_object__next_program(nint obj, nint prog);

    [LibraryImport(Lib)]
    internal static partial nint bpf_object__next_map(nint obj, nint map);

    // Programs
    [LibraryImport(Lib)]
    internal static partial nint bpf_program__name(nint prog);

    [LibraryImport(Lib)]
    internal static partial nint bpf_program__section_name(nint prog);

    [LibraryImport(Lib)]
    internal static partial int bpf_program__set_autoload(nint prog, [MarshalAs(UnmanagedType.U1)] bool autoload);

    [LibraryImport(Lib)]
    [return: MarshalAs(UnmanagedType.U1)]
    internal static partial bool bpf_program__autoload(nint prog);

    [LibraryImport(Lib)]
    internal static partial int bpf_program__fd(nint prog);

    [LibraryImport(Lib)]
    internal static partial int bpf_program__type(nint prog);

    [LibraryImport(Lib)]
    internal static partial int bpf_program__expected_attach_type(nint prog);

    [LibraryImport(Lib)]
    internal static partial nuint bpf_program__insn_cnt(nint prog);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint bpf_program__attach(nint prog);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint bpf_program__attach_xdp(nint prog, int ifindex);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint bpf_program__attach_cgroup(nint prog, int cgroupFd);

    // Links
    [LibraryImport(Lib)]
    internal static partial int bpf_link__destroy(nint link);

    [LibraryImport(Lib)]
    internal static partial int bpf_link__fd(nint link);

    [LibraryImport(Lib)]
    internal static partial int bpf_link__pin(nint link, byte* path);

    [LibraryImport(Lib)]
    internal static partial int bpf_link__unpin(nint link);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint bpf_link__open(byte* path);

    // Maps (object side, before and after load)
    [LibraryImport(Lib)]
    internal static partial nint bpf_map__name(nint map);

    [LibraryImport(Lib)]
    internal static partial int bpf_map__fd(nint map);

    [LibraryImport(Lib)]
    internal static partial int bpf_map__type(nint map);

    [LibraryImport(Lib)]
    internal static partial uint bpf_map__key_size(nint map);

    [LibraryImport(Lib)]
    internal static partial uint bpf_map__value_size(nint map);

    [LibraryImport(Lib)]
    internal static partial uint bpf_map__max_entries(nint map);

    [LibraryImport(Lib)]
    internal static partial int bpf_map__set_max_entries(nint map, uint maxEntries);

    [LibraryImport(Lib)]
    internal static partial uint bpf_map__map_flags(nint map);

    [LibraryImport(Lib)]
    internal static partial nint bpf_map__initial_value(nint map, nuint* size);

    [LibraryImport(Lib)]
    [return: MarshalAs(UnmanagedType.U1)]
    internal static partial bool bpf_map__is_internal(nint map);

    [LibraryImport(Lib)]
    internal static partial int bpf_map__reuse_fd(nint map, int fd);

    [LibraryImport(Lib)]
    internal static partial int bpf_map__pin(nint map, byte* path);

    [LibraryImport(Lib)]
    internal static partial int bpf_map__unpin(nint map, byte* path);

    [LibraryImport(Lib)]
    internal static partial int bpf_map__set_pin_path(nint map, byte* path);

    // Maps and objects by fd (bpf.h): these return -errno too, and set errno.
    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_map_lookup_elem(int fd, void* key, void* value);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_map_update_elem(int fd, void* key, void* value, ulong flags);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_map_delete_elem(int fd, void* key);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_map_lookup_and_delete_elem(int fd, void* key, void* value);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_map_get_next_key(int fd, void* key, void* nextKey);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_obj_pin(int fd, byte* path);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_obj_get(byte* path);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_obj_get_info_by_fd(int fd, void* info, uint* infoLen);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_enable_stats(int type);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_prog_get_fd_by_id(uint id);

    // BTF
    [LibraryImport(Lib)]
    internal static partial int btf__find_by_name_kind(nint btf, byte* name, uint kind);

    [LibraryImport(Lib)]
    internal static partial BtfType* btf__type_by_id(nint btf, uint id);

    [LibraryImport(Lib)]
    internal static partial byte* btf__name_by_offset(nint btf, uint offset);

    // Misc
    [LibraryImport(Lib)]
    internal static partial nint libbpf_set_print(delegate* unmanaged[Cdecl]<int, byte*, nint, int> fn);

    [LibraryImport(Lib)]
    internal static partial int libbpf_num_possible_cpus();

    [LibraryImport(Lib)]
    internal static partial int libbpf_strerror(int err, byte* buf, nuint size);

    internal const uint BtfKindVar = 14;
    internal const uint BtfKindDatasec = 15;

    [StructLayout(LayoutKind.Sequential)]
    internal struct BtfType
    {
        public uint NameOff;
        public uint Info;      // vlen in bits 0-15, kind in bits 24-28
        public uint SizeOrType;

        public readonly int Vlen => (int)(Info & 0xffff);
        public readonly uint Kind => (Info >> 24) & 0x1f;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct BtfVarSecinfo
    {
        public uint Type;
        public uint Offset;
        public uint Size;
    }

    internal static string? Utf8(nint p) => p == 0 ? null : Marshal.PtrToStringUTF8(p);

    internal static string? Utf8(byte* p) => p == null ? null : Marshal.PtrToStringUTF8((nint)p);

    /// <summary>A NUL-terminated UTF-8 copy of <paramref name="s"/> for a native call.</summary>
    internal static byte[] Z(string s)
    {
        var bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(s) + 1];
        System.Text.Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }
}

/// <summary>The few libc calls the loader and the ring reader need.</summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    internal const int ProtRead = 1, ProtWrite = 2, MapShared = 1;
    internal const int EpollCtlAdd = 1;
    internal const uint EpollIn = 1;
    internal const int EfdCloexec = 0x80000, EfdNonblock = 0x800;
    internal const int EpollCloexec = 0x80000;

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int munmap(nint addr, nuint length);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int close(int fd);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int epoll_create1(int flags);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int epoll_ctl(int epfd, int op, int fd, void* ev);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int epoll_wait(int epfd, void* events, int maxEvents, int timeout);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int eventfd(uint initval, int flags);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint write(int fd, void* buf, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint read(int fd, void* buf, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int mount(byte* source, byte* target, byte* fstype, nuint flags, byte* data);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int flock(int fd, int operation);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int open(byte* path, int flags, int mode);

    [LibraryImport(Lib)]
    internal static partial int getpagesize();

    [LibraryImport(Lib)]
    internal static partial int vsnprintf(byte* buf, nuint size, byte* format, nint args);

    [LibraryImport(Lib)]
    internal static partial byte* strerror(int errnum);

    internal static string StrError(int errno) => Marshal.PtrToStringUTF8((nint)strerror(errno)) ?? $"errno {errno}";

    /// <summary>epoll_event is packed on x86-64 (12 bytes), naturally aligned elsewhere (16).</summary>
    internal static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;
    internal static readonly int EpollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    internal static void WriteEpollEvent(byte* ev, uint events, ulong data)
    {
        Unsafe.WriteUnaligned(ev, events);
        Unsafe.WriteUnaligned(ev + EpollDataOffset, data);
    }

    internal static ulong ReadEpollData(byte* ev) => Unsafe.ReadUnaligned<ulong>(ev + EpollDataOffset);
}
