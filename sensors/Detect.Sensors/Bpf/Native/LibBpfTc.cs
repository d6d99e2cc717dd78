using System.Runtime.InteropServices;

namespace Detect.Sensors.Bpf.Native;

// libbpf 1.1's TC attach (netlink clsact filters in direct-action mode), program test runs and
// link updates: the calls the flow sensor and enforcement add to the loader (Sensors II).
internal static unsafe partial class LibBpf
{
    internal const int BpfTcIngress = 1, BpfTcEgress = 2;
    internal const uint BpfTcFReplace = 1;

    /// <summary>struct bpf_tc_hook (libbpf.h): ends with size_t :0, so 24 bytes on 64-bit.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TcHook
    {
        public nuint Sz;
        public int Ifindex;
        public int AttachPoint;
        public uint Parent;
        private uint _pad;
    }

    /// <summary>struct bpf_tc_opts (libbpf.h): 32 bytes on 64-bit.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TcOpts
    {
        public nuint Sz;
        public int ProgFd;
        public uint Flags;
        public uint ProgId;
        public uint Handle;
        public uint Priority;
        private uint _pad;
    }

    /// <summary>struct bpf_test_run_opts (bpf.h of libbpf 1.1).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct TestRunOpts
    {
        public nuint Sz;
        public void* DataIn;
        public void* DataOut;
        public uint DataSizeIn;
        public uint DataSizeOut;
        public void* CtxIn;
        public void* CtxOut;
        public uint CtxSizeIn;
        public uint CtxSizeOut;
        public uint Retval;
        public int Repeat;
        public uint Duration;
        public uint Flags;
        public uint Cpu;
        public uint BatchSize;
    }

    [LibraryImport(Lib)]
    internal static partial int bpf_tc_hook_create(TcHook* hook);

    [LibraryImport(Lib)]
    internal static partial int bpf_tc_hook_destroy(TcHook* hook);

    [LibraryImport(Lib)]
    internal static partial int bpf_tc_attach(TcHook* hook, TcOpts* opts);

    [LibraryImport(Lib)]
    internal static partial int bpf_tc_detach(TcHook* hook, TcOpts* opts);

    [LibraryImport(Lib)]
    internal static partial int bpf_tc_query(TcHook* hook, TcOpts* opts);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_prog_test_run_opts(int progFd, TestRunOpts* opts);

    /// <summary>Replaces the program of a link (XDP and cgroup links; not tracing links).</summary>
    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int bpf_link_update(int linkFd, int newProgFd, void* opts);
}

/// <summary>libc calls for network namespaces and interfaces (Sensors II).</summary>
internal static unsafe partial class NetLibc
{
    private const string Lib = "libc";
    internal const int CloneNewNet = 0x40000000;
    internal const int ORdOnly = 0, OCloexec = 0x80000;

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int setns(int fd, int nstype);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial uint if_nametoindex(byte* name);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int open(byte* path, int flags, int mode);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int close(int fd);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int flock(int fd, int operation);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int stat(byte* path, byte* buf);
}
