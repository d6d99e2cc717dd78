using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Detect.Records;

// Mirror of bpf/records.h, byte for byte. Every struct names its C twin with [CStruct]; fields
// map to C fields by name (PascalCase of the C name, or [CName] where they differ). The test
// Records_MatchTheCompiledHeader compares each size and offset with the compiled object's BTF.

/// <summary>Names the C struct a C# mirror stands for.</summary>
[AttributeUsage(AttributeTargets.Struct)]
public sealed class CStructAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

/// <summary>Names the C field a C# field mirrors when the names differ beyond casing.</summary>
[AttributeUsage(AttributeTargets.Field)]
public sealed class CNameAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

/// <summary>enum detect_record_type.</summary>
public enum RecordType : byte
{
    None = 0,
    Syscall = 1,
    Exec = 2,
    Exit = 3,
    Fork = 4,
    SyscallSummary = 5,
    Flow = 6,
}

public static class RecordFormat
{
    public const ushort Magic = 0xDE7E;
    public const byte Version = 1;
    /// <summary>DETECT_REC_TYPE_COUNT: loss counters are indexed by record type below this.</summary>
    public const int TypeCount = 7;
    public const int CommLength = 16;
    public const int FilenameLength = 256;
    public const int ArgsLength = 256;
    public const int SyscallSlots = 512;

    /// <summary>Versions this build can read. A record of any other version is refused.</summary>
    public static bool IsKnownVersion(byte version) => version == Version;

    /// <summary>The exact size of a record of each type, or 0 for a type this build does not know.</summary>
    public static int SizeOf(RecordType type) => type switch
    {
        RecordType.Syscall => SyscallRecord.Size,
        RecordType.Exec => ExecRecord.Size,
        RecordType.Exit => ExitRecord.Size,
        RecordType.Fork => ForkRecord.Size,
        RecordType.SyscallSummary => SyscallSummaryRecord.Size,
        RecordType.Flow => FlowRecord.Size,
        _ => 0,
    };

    /// <summary>Lower-case names used in CLI output and JSON keys.</summary>
    public static string NameOf(RecordType type) => type switch
    {
        RecordType.Syscall => "syscall",
        RecordType.Exec => "exec",
        RecordType.Exit => "exit",
        RecordType.Fork => "fork",
        RecordType.SyscallSummary => "syscall_summary",
        RecordType.Flow => "flow",
        _ => "unknown",
    };
}

[InlineArray(RecordFormat.CommLength)]
public struct CommBuffer
{
    private byte _element0;
}

[InlineArray(RecordFormat.FilenameLength)]
public struct FilenameBuffer
{
    private byte _element0;
}

[InlineArray(RecordFormat.ArgsLength)]
public struct ArgsBuffer
{
    private byte _element0;
}

[InlineArray(RecordFormat.SyscallSlots)]
public struct SyscallCounts
{
    private uint _element0;
}

[InlineArray(16)]
public struct AddressBuffer
{
    private byte _element0;
}

[InlineArray(3)]
public struct Pad3
{
    private byte _element0;
}

[CStruct("detect_header")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct RecordHeader
{
    public const int Size = 16;
    [FieldOffset(0)] public ushort Magic;
    [FieldOffset(2)] public byte Version;
    [FieldOffset(3)] public RecordType Type;
    [FieldOffset(4)] public ushort Length;
    [FieldOffset(6)] public ushort Cpu;
    [FieldOffset(8)] public ulong KtimeNs;
}

[CStruct("detect_task")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct TaskInfo
{
    public const int Size = 48;
    [FieldOffset(0)] public uint Pid;
    [FieldOffset(4)] public uint Tgid;
    [FieldOffset(8)] public uint Ppid;
    [FieldOffset(12)] public uint Uid;
    [FieldOffset(16)] public ulong CgroupId;
    [FieldOffset(24)] public ulong StartNs;
    [FieldOffset(32)] public CommBuffer Comm;

    /// <summary>The command name up to its first NUL (allocates: not for hot paths).</summary>
    public readonly string CommString => RecordText.Decode(Comm);
}

[Flags]
public enum SyscallFlags : uint
{
    None = 0,
    NoReturn = 0x1,
}

[CStruct("detect_syscall")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct SyscallRecord
{
    public const int Size = 80;
    [FieldOffset(0), CName("hdr")] public RecordHeader Header;
    [FieldOffset(16)] public TaskInfo Task;
    [FieldOffset(64)] public long Ret;
    [FieldOffset(72)] public uint Nr;
    [FieldOffset(76)] public SyscallFlags Flags;
}

[Flags]
public enum ExecFlags : uint
{
    None = 0,
    FilenameTruncated = 0x1,
    ArgsTruncated = 0x2,
}

[CStruct("detect_exec")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct ExecRecord
{
    public const int Size = 592;
    [FieldOffset(0), CName("hdr")] public RecordHeader Header;
    [FieldOffset(16)] public TaskInfo Task;
    [FieldOffset(64)] public uint OldPid;
    [FieldOffset(68)] public ExecFlags Flags;
    [FieldOffset(72)] public ushort FilenameLen;
    [FieldOffset(74)] public ushort ArgsLen;
    [FieldOffset(76)] public uint Pad0;
    [FieldOffset(80)] public FilenameBuffer Filename;
    [FieldOffset(336)] public ArgsBuffer Args;

    public readonly string FilenameString => RecordText.Decode(Filename, FilenameLen);

    /// <summary>argv as a list (allocates: not for hot paths).</summary>
    public readonly string[] ArgsList => RecordText.SplitNul(Args, ArgsLen);
}

[CStruct("detect_exit")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct ExitRecord
{
    public const int Size = 80;
    [FieldOffset(0), CName("hdr")] public RecordHeader Header;
    [FieldOffset(16)] public TaskInfo Task;
    [FieldOffset(64)] public int ExitCode;
    [FieldOffset(68)] public uint Pad0;
    [FieldOffset(72)] public ulong DurationNs;

    /// <summary>The code passed to exit(), as a shell shows it (0-255), when not killed by a signal.</summary>
    public readonly int ExitStatus => (ExitCode >> 8) & 0xff;
    /// <summary>The signal that ended the process, or 0.</summary>
    public readonly int TermSignal => ExitCode & 0x7f;
}

[CStruct("detect_fork")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct ForkRecord
{
    public const int Size = 80;
    [FieldOffset(0), CName("hdr")] public RecordHeader Header;
    [FieldOffset(16)] public TaskInfo Task;
    [FieldOffset(64)] public uint ChildPid;
    [FieldOffset(68)] public uint Pad0;
    [FieldOffset(72)] public ulong ChildStartNs;
}

[Flags]
public enum SummaryFlags : uint
{
    None = 0,
    ProcessExited = 0x1,
    UserFlushed = 0x2,
}

[CStruct("detect_syscall_summary")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct SyscallSummaryRecord
{
    public const int Size = 2136;
    [FieldOffset(0), CName("hdr")] public RecordHeader Header;
    [FieldOffset(16)] public TaskInfo Task;
    [FieldOffset(64)] public ulong IntervalStartNs;
    [FieldOffset(72)] public uint Total;
    [FieldOffset(76)] public uint Failed;
    [FieldOffset(80)] public SummaryFlags Flags;
    [FieldOffset(84)] public uint Other;
    [FieldOffset(88)] public SyscallCounts Counts;
}

public enum FlowDirection : byte
{
    Unknown = 0,
    Ingress = 1,
    Egress = 2,
}

public enum FlowEndReason : byte
{
    None = 0,
    TcpEnd = 1,
    Idle = 2,
    Active = 3,
    Evicted = 4,
    Flush = 5,
}

[CStruct("detect_flow")]
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct FlowRecord
{
    public const int Size = 144;
    [FieldOffset(0), CName("hdr")] public RecordHeader Header;
    [FieldOffset(16)] public byte Family;
    [FieldOffset(17)] public byte Protocol;
    [FieldOffset(18)] public FlowDirection Direction;
    [FieldOffset(19)] public FlowEndReason Reason;
    [FieldOffset(20)] public uint Ifindex;
    [FieldOffset(24)] public AddressBuffer Saddr;
    [FieldOffset(40)] public AddressBuffer Daddr;
    [FieldOffset(56)] public ushort Sport;
    [FieldOffset(58)] public ushort Dport;
    [FieldOffset(60)] public byte TcpFlags;
    [FieldOffset(61)] public Pad3 Pad0;
    [FieldOffset(64)] public ulong FirstNs;
    [FieldOffset(72)] public ulong LastNs;
    [FieldOffset(80)] public ulong PacketsFwd;
    [FieldOffset(88)] public ulong BytesFwd;
    [FieldOffset(96)] public ulong PacketsRev;
    [FieldOffset(104)] public ulong BytesRev;
    [FieldOffset(112)] public uint SynCount;
    [FieldOffset(116)] public uint FinCount;
    [FieldOffset(120)] public uint RstCount;
    [FieldOffset(124)] public uint Pid;
    [FieldOffset(128)] public ulong SocketCookie;
    [FieldOffset(136)] public ulong CgroupId;

    /// <summary>The source address (allocates: not for hot paths).</summary>
    public readonly System.Net.IPAddress SourceAddress => RecordText.Address(Family, Saddr);
    public readonly System.Net.IPAddress DestinationAddress => RecordText.Address(Family, Daddr);
}

/// <summary>Turns fixed byte fields into strings for display and tests (off the hot path).</summary>
public static class RecordText
{
    public static string Decode(ReadOnlySpan<byte> bytes, int length = -1)
    {
        if (length < 0 || length > bytes.Length)
        {
            length = bytes.IndexOf((byte)0);
            if (length < 0) length = bytes.Length;
        }
        else
        {
            var nul = bytes[..length].IndexOf((byte)0);
            if (nul >= 0) length = nul;
        }
        return System.Text.Encoding.UTF8.GetString(bytes[..length]);
    }

    public static string[] SplitNul(ReadOnlySpan<byte> bytes, int length)
    {
        length = Math.Clamp(length, 0, bytes.Length);
        var text = System.Text.Encoding.UTF8.GetString(bytes[..length]);
        return text.TrimEnd('\0').Split('\0');
    }

    public static System.Net.IPAddress Address(byte family, ReadOnlySpan<byte> bytes) =>
        new(family == 6 ? bytes[..16] : bytes[..4]);
}
