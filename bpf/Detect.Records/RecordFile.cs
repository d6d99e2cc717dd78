using System.Buffers.Binary;
using System.Text;

namespace Detect.Records;

/// <summary>
/// The capture file (`./detect capture --out FILE`): a 64-byte header, then records exactly as
/// the sensors wrote them, back to back. Layout of the header (little-endian):
/// <code>
///  0  8  magic "DTCTCAP1"
///  8  4  file format version (1)
/// 12  4  header size in bytes (64; readers skip what they do not know)
/// 16  4  record format version of the writer (bpf/records.h DETECT_FORMAT_VERSION)
/// 20  4  flags (0)
/// 24  8  boot-to-realtime offset ns: unix ns = record ktime_ns + this
/// 32  8  created, unix ns
/// 40 24  host name, UTF-8, NUL padded
/// </code>
/// </summary>
public static class RecordFile
{
    public const int HeaderSize = 64;
    public const uint FileVersion = 1;
    public static ReadOnlySpan<byte> Magic => "DTCTCAP1"u8;

    public static void WriteHeader(Span<byte> destination, in RecordFileHeader header)
    {
        if (destination.Length < HeaderSize) throw new ArgumentException("destination too small", nameof(destination));
        destination[..HeaderSize].Clear();
        Magic.CopyTo(destination);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[8..], FileVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[12..], HeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[16..], header.RecordVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[20..], 0);
        BinaryPrimitives.WriteInt64LittleEndian(destination[24..], header.BootToRealtimeNs);
        BinaryPrimitives.WriteInt64LittleEndian(destination[32..], header.CreatedUnixNs);
        var name = Encoding.UTF8.GetBytes(header.HostName);
        name.AsSpan(0, Math.Min(name.Length, 23)).CopyTo(destination[40..]);
    }

    /// <summary>Reads and checks a file header; throws <see cref="InvalidDataException"/> naming what is wrong.</summary>
    public static RecordFileHeader ReadHeader(ReadOnlySpan<byte> source, string fileName)
    {
        if (source.Length < 16 || !source[..8].SequenceEqual(Magic))
            throw new InvalidDataException($"{fileName}: not a Detect capture file (no DTCTCAP1 magic)");
        var version = BinaryPrimitives.ReadUInt32LittleEndian(source[8..]);
        if (version != FileVersion)
            throw new InvalidDataException($"{fileName}: capture file version {version}; this build reads version {FileVersion}");
        var size = BinaryPrimitives.ReadUInt32LittleEndian(source[12..]);
        if (size < HeaderSize || source.Length < size)
            throw new InvalidDataException($"{fileName}: capture header of {size} bytes is truncated or too small");
        var recordVersion = BinaryPrimitives.ReadUInt32LittleEndian(source[16..]);
        if (recordVersion > byte.MaxValue || !RecordFormat.IsKnownVersion((byte)recordVersion))
            throw new InvalidDataException($"{fileName}: records are format version {recordVersion}; this build reads version {RecordFormat.Version}");
        var nameBytes = source.Slice(40, 24);
        var nul = nameBytes.IndexOf((byte)0);
        return new RecordFileHeader
        {
            HeaderSize = (int)size,
            RecordVersion = recordVersion,
            BootToRealtimeNs = BinaryPrimitives.ReadInt64LittleEndian(source[24..]),
            CreatedUnixNs = BinaryPrimitives.ReadInt64LittleEndian(source[32..]),
            HostName = Encoding.UTF8.GetString(nul < 0 ? nameBytes : nameBytes[..nul]),
        };
    }

    /// <summary>Reads a whole capture file and hands each valid record to <paramref name="onRecord"/>.</summary>
    public static RecordReaderStats ReadAll(string path, RecordVisitor onRecord, RecordErrorHandler? onError = null)
    {
        var bytes = File.ReadAllBytes(path);
        var header = ReadHeader(bytes, path);
        var reader = new RecordReader(bytes.AsSpan(header.HeaderSize), onError, header.HeaderSize);
        while (reader.TryRead(out var record)) onRecord(record);
        return reader.Stats;
    }
}

public delegate void RecordVisitor(RecordView record);

public sealed record RecordFileHeader
{
    public int HeaderSize { get; init; } = RecordFile.HeaderSize;
    public uint RecordVersion { get; init; } = RecordFormat.Version;
    public long BootToRealtimeNs { get; init; }
    public long CreatedUnixNs { get; init; }
    public string HostName { get; init; } = "";
}

/// <summary>Appends records to a capture file through a buffer; records are copied as they are.</summary>
public sealed class RecordFileWriter : IDisposable
{
    private readonly FileStream _stream;
    private int _disposed;

    public RecordFileWriter(string path, RecordFileHeader header)
    {
        _stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 20);
        Span<byte> head = stackalloc byte[RecordFile.HeaderSize];
        RecordFile.WriteHeader(head, header);
        _stream.Write(head);
    }

    public long RecordsWritten { get; private set; }

    /// <summary>Appends one or more whole records.</summary>
    public void Write(ReadOnlySpan<byte> records, int count = 1)
    {
        _stream.Write(records);
        RecordsWritten += count;
    }

    public void Flush() => _stream.Flush();

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stream.Dispose();
    }
}

/// <summary>Kernel boot time to wall-clock time.</summary>
public static class KernelClock
{
    /// <summary>unix ns minus CLOCK_BOOTTIME ns, measured now: add it to a record's ktime_ns.</summary>
    public static long BootToRealtimeOffsetNs()
    {
        // Bracket the boot-time read between two wall-clock reads and take the midpoint.
        var before = DateTime.UtcNow.Ticks;
        var boot = BootTimeNs();
        var after = DateTime.UtcNow.Ticks;
        var unixNs = ((before + after) / 2 - DateTime.UnixEpoch.Ticks) * 100;
        return unixNs - boot;
    }

    /// <summary>CLOCK_BOOTTIME now, in ns (what bpf_ktime_get_boot_ns returns).</summary>
    public static long BootTimeNs()
    {
        clock_gettime(ClockBoottime, out var ts);
        return ts.Seconds * 1_000_000_000L + ts.Nanoseconds;
    }

    private const int ClockBoottime = 7;

    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int clock_gettime(int clock, out Timespec ts);
}
