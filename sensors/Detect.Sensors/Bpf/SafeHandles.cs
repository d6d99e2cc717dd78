using Detect.Sensors.Bpf.Native;
using Microsoft.Win32.SafeHandles;

namespace Detect.Sensors.Bpf;

/// <summary>A file descriptor from the bpf() world (a map, a program, a stats switch); closed on release.</summary>
public sealed class SafeBpfFd : SafeHandleMinusOneIsInvalid
{
    public SafeBpfFd() : base(true) { }

    public SafeBpfFd(int fd) : base(true) => SetHandle(fd);

    public int Fd => (int)handle;

    protected override bool ReleaseHandle() => Libc.close((int)handle) == 0;
}

/// <summary>A struct bpf_object*; bpf_object__close on release (unloads what it loaded).</summary>
internal sealed class SafeBpfObjectHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public SafeBpfObjectHandle() : base(true) { }

    public SafeBpfObjectHandle(nint obj) : base(true) => SetHandle(obj);

    protected override bool ReleaseHandle()
    {
        LibBpf.bpf_object__close(handle);
        return true;
    }
}

/// <summary>A struct bpf_link*; bpf_link__destroy on release detaches the program (unless pinned).</summary>
internal sealed class SafeBpfLinkHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public SafeBpfLinkHandle() : base(true) { }

    public SafeBpfLinkHandle(nint link) : base(true) => SetHandle(link);

    protected override bool ReleaseHandle() => LibBpf.bpf_link__destroy(handle) == 0;
}
