using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Detect.Records;

/// <summary>Why a record was refused.</summary>
public enum RecordError
{
    None = 0,
    /// <summary>Fewer bytes remain than a header, or than the record's length says.</summary>
    Truncated,
    /// <summary>The length is larger than any record of its type.</summary>
    Oversized,
    /// <summary>The length is smaller than a record of its type.</summary>
    Undersized,
    /// <summary>The format version is not one this build reads.</summary>
    UnknownVersion,
    /// <summary>The record type is not one this build knows.</summary>
    UnknownType,
    /// <summary>The first two bytes are not the record magic: the stream lost its framing.</summary>
    BadMagic,
}

/// <summary>Counts of what a reader accepted and refused. Plain fields: a reader is single-threaded.</summary>
public struct RecordReaderStats
{
    public long Records;
    public long Truncated;
    public long Oversized;
    public long Undersized;
    public long UnknownVersion;
    public long UnknownType;
    public long BadMagic;
    /// <summary>Bytes passed over while looking for the next record after a framing error.</summary>
    public long SkippedBytes;

    public readonly long Errors => Truncated + Oversized + Undersized + UnknownVersion + UnknownType + BadMagic;

    public void Add(in RecordReaderStats other)
    {
        Records += other.Records;
        Truncated += other.Truncated;
        Oversized += other.Oversized;
        Undersized += other.Undersized;
        UnknownVersion += other.UnknownVersion;
        UnknownType += other.UnknownType;
        BadMagic += other.BadMagic;
        SkippedBytes += other.SkippedBytes;
    }

    internal void Count(RecordError error)
    {
        switch (error)
        {
            case RecordError.Truncated: Truncated++; break;
            case RecordError.Oversized: Oversized++; break;
            case RecordError.Undersized: Undersized++; break;
            case RecordError.UnknownVersion: UnknownVersion++; break;
            case RecordError.UnknownType: UnknownType++; break;
            case RecordError.BadMagic: BadMagic++; break;
        }
    }
}

/// <summary>One record, viewed in place over the bytes it arrived in.</summary>
public readonly ref struct RecordView
{
    public RecordView(ReadOnlySpan<byte> bytes)
    {
        Bytes = bytes;
    }

    /// <summary>The whole record, header included.</summary>
    public ReadOnlySpan<byte> Bytes { get; }

    public ref readonly RecordHeader Header => ref MemoryMarshal.AsRef<RecordHeader>(Bytes);

    public RecordType Type => (RecordType)Bytes[3];

    /// <summary>The record as its struct, without copying. The caller has checked <see cref="Type"/>.</summary>
    public ref readonly T As<T>() where T : unmanaged
    {
        if (Bytes.Length < Unsafe.SizeOf<T>())
            throw new InvalidOperationException($"a {Type} record of {Bytes.Length} bytes cannot be read as {typeof(T).Name}");
        return ref MemoryMarshal.AsRef<T>(Bytes);
    }
}

/// <summary>
/// Validates and walks records laid end to end (a capture file, a transport message) or one
/// record at a time (a ring-buffer sample). A bad record is counted and reported, never thrown:
/// the reader moves on to the next record it can frame.
/// </summary>
public ref struct RecordReader
{
    private readonly ReadOnlySpan<byte> _buffer;
    private readonly long _baseOffset;
    private readonly RecordErrorHandler? _onError;
    private int _offset;
    private RecordReaderStats _stats;

    /// <param name="buffer">Records laid end to end.</param>
    /// <param name="onError">Told of each refused record (offset, error, detail); may be null.</param>
    /// <param name="baseOffset">Where <paramref name="buffer"/> starts in its file or stream, for error offsets.</param>
    public RecordReader(ReadOnlySpan<byte> buffer, RecordErrorHandler? onError = null, long baseOffset = 0)
    {
        _buffer = buffer;
        _onError = onError;
        _baseOffset = baseOffset;
        _offset = 0;
        _stats = default;
    }

    public readonly RecordReaderStats Stats => _stats;

    /// <summary>Bytes consumed so far. After the last record, what is left is a truncated tail.</summary>
    public readonly int Offset => _offset;

    /// <summary>Moves to the next valid record. Returns false at the end of the buffer.</summary>
    public bool TryRead(out RecordView record)
    {
        while (_offset < _buffer.Length)
        {
            var rest = _buffer[_offset..];
            var error = Check(rest, out var length, out var detail);
            if (error == RecordError.None)
            {
                record = new RecordView(rest[..length]);
                _offset += length;
                _stats.Records++;
                return true;
            }

            _stats.Count(error);
            _onError?.Invoke(_baseOffset + _offset, error, detail);
            switch (error)
            {
                case RecordError.Truncated:
                    // Nothing after a truncated tail can be framed.
                    _stats.SkippedBytes += rest.Length;
                    _offset = _buffer.Length;
                    break;
                case RecordError.UnknownVersion or RecordError.UnknownType or RecordError.Oversized or RecordError.Undersized
                    when length >= RecordHeader.Size && length % 8 == 0 && length <= rest.Length:
                    // The header is intact: trust its length to step over the record.
                    _offset += length;
                    break;
                default:
                    var skipped = Resync(rest);
                    _stats.SkippedBytes += skipped;
                    _offset += skipped;
                    break;
            }
        }
        record = default;
        return false;
    }

    /// <summary>Checks one record at the start of <paramref name="bytes"/>.</summary>
    /// <param name="length">The record's declared length (0 when not even a header is there).</param>
    public static RecordError Check(ReadOnlySpan<byte> bytes, out int length, out string? detail)
    {
        detail = null;
        length = 0;
        if (bytes.Length < RecordHeader.Size)
        {
            detail = $"{bytes.Length} bytes left, a record header needs {RecordHeader.Size}";
            return RecordError.Truncated;
        }
        ref readonly var header = ref MemoryMarshal.AsRef<RecordHeader>(bytes);
        length = header.Length;
        if (header.Magic != RecordFormat.Magic)
        {
            detail = $"magic 0x{header.Magic:x4}, expected 0x{RecordFormat.Magic:x4}";
            return RecordError.BadMagic;
        }
        if (!RecordFormat.IsKnownVersion(header.Version))
        {
            detail = $"record format version {header.Version}; this build reads version {RecordFormat.Version}";
            return RecordError.UnknownVersion;
        }
        var expected = RecordFormat.SizeOf(header.Type);
        if (expected == 0)
        {
            detail = $"record type {(byte)header.Type} is unknown";
            return RecordError.UnknownType;
        }
        if (header.Length > expected)
        {
            detail = $"{RecordFormat.NameOf(header.Type)} record says {header.Length} bytes, the type has {expected}";
            return RecordError.Oversized;
        }
        if (header.Length < expected)
        {
            detail = $"{RecordFormat.NameOf(header.Type)} record says {header.Length} bytes, the type has {expected}";
            return RecordError.Undersized;
        }
        if (bytes.Length < expected)
        {
            detail = $"{RecordFormat.NameOf(header.Type)} record of {expected} bytes has only {bytes.Length}";
            return RecordError.Truncated;
        }
        return RecordError.None;
    }

    // Records are 8-byte multiples written back to back: the next plausible start is an
    // 8-aligned offset whose first bytes are the magic and a known version.
    private static int Resync(ReadOnlySpan<byte> rest)
    {
        for (var i = 8; i + RecordHeader.Size <= rest.Length; i += 8)
        {
            if (rest[i] == (byte)(RecordFormat.Magic & 0xff) && rest[i + 1] == (byte)(RecordFormat.Magic >> 8)
                && RecordFormat.IsKnownVersion(rest[i + 2]))
                return i;
        }
        return rest.Length;
    }
}

/// <summary>Told of a refused record: where it was, why, and a sentence saying what was wrong.</summary>
public delegate void RecordErrorHandler(long offset, RecordError error, string? detail);
