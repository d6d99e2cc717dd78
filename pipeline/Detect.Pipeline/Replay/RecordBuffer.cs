using System.Runtime.InteropServices;
using Detect.Records;

namespace Detect.Pipeline.Replay;

/// <summary>
/// Records laid end to end in one reusable buffer, exactly as a sensor batch carries them: what
/// replays (and tests) build before handing the bytes to <see cref="FeaturePipeline.Process"/>.
/// </summary>
public sealed class RecordBuffer
{
    private byte[] _buffer;

    public RecordBuffer(int initialBytes = 1 << 16) => _buffer = new byte[initialBytes];

    public int Length { get; private set; }
    public int Count { get; private set; }
    public ReadOnlySpan<byte> Span => _buffer.AsSpan(0, Length);

    public void Clear()
    {
        Length = 0;
        Count = 0;
    }

    public static RecordHeader Header(RecordType type, int size, ulong ktimeNs) => new()
    {
        Magic = RecordFormat.Magic,
        Version = RecordFormat.Version,
        Type = type,
        Length = (ushort)size,
        KtimeNs = ktimeNs,
    };

    /// <summary>Appends one record (its header's magic, version, type and length are set here).</summary>
    public void Add<T>(T record) where T : unmanaged
    {
        var size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        if (Length + size > _buffer.Length) System.Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, Length + size));
        var span = _buffer.AsSpan(Length, size);
        MemoryMarshal.Write(span, in record);
        Length += size;
        Count++;
    }

    public void AddSyscall(ulong ktimeNs, uint tgid, ulong startNs, uint nr, long ret = 0, SyscallFlags flags = SyscallFlags.None)
    {
        var r = new SyscallRecord
        {
            Header = Header(RecordType.Syscall, SyscallRecord.Size, ktimeNs),
            Ret = ret,
            Nr = nr,
            Flags = flags,
        };
        r.Task.Pid = tgid;
        r.Task.Tgid = tgid;
        r.Task.StartNs = startNs;
        Add(r);
    }

    public void AddFlow(in FlowRecord flow)
    {
        var r = flow;
        r.Header = Header(RecordType.Flow, FlowRecord.Size, flow.Header.KtimeNs);
        Add(r);
    }
}
