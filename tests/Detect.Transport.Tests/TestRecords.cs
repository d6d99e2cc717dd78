using System.Runtime.InteropServices;
using Detect.Records;

namespace Detect.Transport.Tests;

/// <summary>Synthetic sensor records that say who wrote them: Task.Pid = host number, KtimeNs = index in that host's stream.</summary>
internal static class TestRecords
{
    public static void Syscall(Span<byte> destination, uint host, ulong index)
    {
        var record = new SyscallRecord
        {
            Header = new RecordHeader
            {
                Magic = RecordFormat.Magic, Version = RecordFormat.Version, Type = RecordType.Syscall,
                Length = SyscallRecord.Size, Cpu = (ushort)(index % 2), KtimeNs = index,
            },
            Task = new TaskInfo { Pid = host, Tgid = host, Ppid = 1, Uid = 1000, StartNs = host * 1000UL },
            Ret = 0,
            Nr = (uint)(index % 64),
        };
        MemoryMarshal.Write(destination, in record);
    }

    public static byte[] Syscall(uint host, ulong index)
    {
        var bytes = new byte[SyscallRecord.Size];
        Syscall(bytes, host, index);
        return bytes;
    }

    public static byte[] Flow(uint host, ulong index)
    {
        var record = new FlowRecord
        {
            Header = new RecordHeader { Magic = RecordFormat.Magic, Version = RecordFormat.Version, Type = RecordType.Flow, Length = FlowRecord.Size, KtimeNs = index },
            Pid = host,
        };
        return MemoryMarshal.AsBytes(new ReadOnlySpan<FlowRecord>(ref record)).ToArray();
    }

    /// <summary>A whole message of <paramref name="count"/> syscall records, as a publisher would seal it.</summary>
    public static byte[] Message(ulong hostId, uint session, ulong sequence, ulong firstRecord, int count, uint host = 1)
    {
        var bytes = new byte[MessageHeader.Size + count * SyscallRecord.Size];
        for (var i = 0; i < count; i++)
            Syscall(bytes.AsSpan(MessageHeader.Size + i * SyscallRecord.Size), host, firstRecord + (ulong)i);
        MessageFormat.WriteHeader(bytes, MessageFamily.Syscalls, hostId, session, sequence, firstRecord, count, count * SyscallRecord.Size, 0);
        return bytes;
    }
}
