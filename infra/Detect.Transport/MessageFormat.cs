using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Detect.Records;

namespace Detect.Transport;

// The transport message: one batch of records behind a 64-byte header. The same bytes travel
// through every carrier (Kafka value, in-process bus entry), so a message can be dumped with
// kcat and decoded offline. Little-endian, like the records.
//
//   offset size field
//   0      2    magic 0xDE7B
//   2      1    message format version (1)
//   3      1    family (MessageFamily)
//   4      2    header length (64)
//   6      2    flags (bit 0: the CRC field is set; other bits must be 0)
//   8      8    host id (also the Kafka key, so one host's records stay in one partition)
//   16     8    sequence: 1, 2, 3 ... per (host, family, session); a hole is a lost message
//   24     8    first record: records this stream carried before this message; a hole in
//                 first record + record count is the exact number of records lost
//   32     4    record count
//   36     4    payload length in bytes
//   40     4    CRC32C (Castagnoli) of the payload
//   44     4    session: random per publisher start, so a restarted sensor is a new stream
//   48     8    sealed at, unix ns (latency measurement)
//   56     8    boot-to-realtime offset of the sensor host, ns: unix ns = record ktime_ns + this
//                 (records carry CLOCK_BOOTTIME, which means nothing on another machine)
//   64          payload: records exactly as the sensors wrote them, back to back (8-aligned)
//
// Payload by family: syscalls/process/flows carry the records of bpf/records.h (each checked
// with RecordReader and against its family); alerts, policy and policy-acks carry records that
// start with a detect_header (magic, version, type, length) defined by their owners, of which
// the transport checks only the framing; dead-letters carry one DeadLetter envelope.

/// <summary>What a message carries; each family has its own topic.</summary>
public enum MessageFamily : byte
{
    None = 0,
    /// <summary>SyscallRecord, SyscallSummaryRecord.</summary>
    Syscalls = 1,
    /// <summary>ExecRecord, ExitRecord, ForkRecord.</summary>
    Process = 2,
    /// <summary>FlowRecord.</summary>
    Flows = 3,
    /// <summary>Alerts from the pipeline (records defined by the pipeline).</summary>
    Alerts = 4,
    /// <summary>Enforcement commands from the policy engine to the sensors.</summary>
    Policy = 5,
    /// <summary>Sensors' acknowledgements of policy commands.</summary>
    PolicyAcks = 6,
    /// <summary>Messages a consumer refused, with the reason (payload: a DeadLetter envelope).</summary>
    DeadLetters = 7,
    /// <summary>Feature windows from the pipeline: the payload is one Arrow IPC stream (schema and one record batch); record count = rows.</summary>
    Features = 8,
}

[Flags]
public enum MessageFlags : ushort
{
    None = 0,
    /// <summary>PayloadCrc32C holds the payload's CRC32C.</summary>
    HasCrc = 0x1,
}

/// <summary>Names, topics and record routing of each family.</summary>
public static class MessageFamilies
{
    /// <summary>Families are numbered below this.</summary>
    public const int Count = 9;

    /// <summary>The topic prefix used unless a deployment sets another.</summary>
    public const string DefaultTopicPrefix = "detect.";

    public static IReadOnlyList<MessageFamily> All { get; } =
    [
        MessageFamily.Syscalls, MessageFamily.Process, MessageFamily.Flows, MessageFamily.Alerts,
        MessageFamily.Policy, MessageFamily.PolicyAcks, MessageFamily.DeadLetters, MessageFamily.Features,
    ];

    /// <summary>The families the sensors publish and the pipeline reads.</summary>
    public static IReadOnlyList<MessageFamily> Telemetry { get; } =
        [MessageFamily.Syscalls, MessageFamily.Process, MessageFamily.Flows];

    public static bool IsKnown(MessageFamily family) => family is > MessageFamily.None and <= MessageFamily.Features;

    /// <summary>True for the families whose message payload is one whole document, not records (Features: an Arrow IPC stream).</summary>
    public static bool CarriesWholePayload(MessageFamily family) => family == MessageFamily.Features;

    /// <summary>True for the families whose records are the sensors' records of bpf/records.h.</summary>
    public static bool CarriesSensorRecords(MessageFamily family) =>
        family is MessageFamily.Syscalls or MessageFamily.Process or MessageFamily.Flows;

    /// <summary>The family a sensor record is published in, or None for a type no family takes.</summary>
    public static MessageFamily Of(RecordType type) => type switch
    {
        RecordType.Syscall or RecordType.SyscallSummary => MessageFamily.Syscalls,
        RecordType.Exec or RecordType.Exit or RecordType.Fork => MessageFamily.Process,
        RecordType.Flow => MessageFamily.Flows,
        _ => MessageFamily.None,
    };

    public static string Name(MessageFamily family) => family switch
    {
        MessageFamily.Syscalls => "syscalls",
        MessageFamily.Process => "process",
        MessageFamily.Flows => "flows",
        MessageFamily.Alerts => "alerts",
        MessageFamily.Policy => "policy",
        MessageFamily.PolicyAcks => "policy-acks",
        MessageFamily.DeadLetters => "dead-letters",
        MessageFamily.Features => "features",
        _ => "unknown",
    };

    public static bool TryParse(string name, out MessageFamily family)
    {
        foreach (var f in All)
        {
            if (string.Equals(Name(f), name, StringComparison.OrdinalIgnoreCase))
            {
                family = f;
                return true;
            }
        }
        family = MessageFamily.None;
        return false;
    }

    /// <summary>The topic of a family: prefix + name, e.g. "detect.syscalls".</summary>
    public static string Topic(MessageFamily family, string prefix = DefaultTopicPrefix) => prefix + Name(family);
}

/// <summary>The 64-byte header in front of every message (layout in the comment at the top of this file).</summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct MessageHeader
{
    public const int Size = 64;
    public const ushort MagicValue = 0xDE7B;
    public const byte CurrentVersion = 1;

    [FieldOffset(0)] public ushort Magic;
    [FieldOffset(2)] public byte Version;
    [FieldOffset(3)] public MessageFamily Family;
    [FieldOffset(4)] public ushort HeaderLength;
    [FieldOffset(6)] public MessageFlags Flags;
    [FieldOffset(8)] public ulong HostId;
    [FieldOffset(16)] public ulong Sequence;
    [FieldOffset(24)] public ulong FirstRecord;
    [FieldOffset(32)] public uint RecordCount;
    [FieldOffset(36)] public uint PayloadLength;
    [FieldOffset(40)] public uint PayloadCrc32C;
    [FieldOffset(44)] public uint Session;
    [FieldOffset(48)] public long SealedUnixNs;
    [FieldOffset(56)] public long BootToRealtimeNs;

    /// <summary>The index one past this message's last record in its stream.</summary>
    public readonly ulong NextRecord => FirstRecord + RecordCount;
}

/// <summary>Why a message was refused (and dead-lettered).</summary>
public enum MessageError : ushort
{
    None = 0,
    /// <summary>Shorter than a message header.</summary>
    TooShort = 1,
    BadMagic = 2,
    /// <summary>A message format version this build does not read.</summary>
    UnknownVersion = 3,
    UnknownFamily = 4,
    BadHeaderLength = 5,
    UnknownFlags = 6,
    /// <summary>The header promises more payload bytes than the message holds (a truncated batch).</summary>
    PayloadTruncated = 7,
    /// <summary>Bytes after the declared payload.</summary>
    TrailingBytes = 8,
    CrcMismatch = 9,
    /// <summary>A record in the payload is malformed, of an unknown version/type, or of another family.</summary>
    BadRecord = 10,
    /// <summary>The payload holds another number of records than the header says.</summary>
    RecordCountMismatch = 11,
    /// <summary>The carrier reported an error for this message (for example a corrupt Kafka batch).</summary>
    CarrierError = 12,
}

/// <summary>Writes and checks message headers; computes CRC32C.</summary>
public static class MessageFormat
{
    /// <summary>Fills the header at the start of <paramref name="message"/> for the payload that follows it.</summary>
    public static void WriteHeader(Span<byte> message, MessageFamily family, ulong hostId, uint session, ulong sequence,
        ulong firstRecord, int recordCount, int payloadLength, long sealedUnixNs, bool withCrc = true, long bootToRealtimeNs = 0)
    {
        var payload = message.Slice(MessageHeader.Size, payloadLength);
        var header = new MessageHeader
        {
            Magic = MessageHeader.MagicValue,
            Version = MessageHeader.CurrentVersion,
            Family = family,
            HeaderLength = MessageHeader.Size,
            Flags = withCrc ? MessageFlags.HasCrc : MessageFlags.None,
            HostId = hostId,
            Sequence = sequence,
            FirstRecord = firstRecord,
            RecordCount = (uint)recordCount,
            PayloadLength = (uint)payloadLength,
            PayloadCrc32C = withCrc ? Crc32C(payload) : 0,
            Session = session,
            SealedUnixNs = sealedUnixNs,
            BootToRealtimeNs = bootToRealtimeNs,
        };
        MemoryMarshal.Write(message, in header);
    }

    /// <summary>Reads the header without checking anything beyond its size.</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> message, out MessageHeader header)
    {
        if (message.Length < MessageHeader.Size)
        {
            header = default;
            return false;
        }
        header = MemoryMarshal.Read<MessageHeader>(message);
        return true;
    }

    /// <summary>
    /// Checks a whole message: header, lengths, CRC, and every record's framing (and, for the
    /// sensor families, each record as RecordReader checks it and that it belongs to the family).
    /// Never throws on bad input.
    /// </summary>
    public static MessageError Validate(ReadOnlySpan<byte> message, out MessageHeader header, out string? detail)
    {
        detail = null;
        if (!TryReadHeader(message, out header))
        {
            detail = $"{message.Length} bytes, a message header needs {MessageHeader.Size}";
            return MessageError.TooShort;
        }
        if (header.Magic != MessageHeader.MagicValue)
        {
            detail = $"magic 0x{header.Magic:x4}, expected 0x{MessageHeader.MagicValue:x4}";
            return MessageError.BadMagic;
        }
        if (header.Version != MessageHeader.CurrentVersion)
        {
            detail = $"message format version {header.Version}; this build reads version {MessageHeader.CurrentVersion}";
            return MessageError.UnknownVersion;
        }
        if (!MessageFamilies.IsKnown(header.Family))
        {
            detail = $"family {(byte)header.Family} is unknown";
            return MessageError.UnknownFamily;
        }
        if (header.HeaderLength != MessageHeader.Size)
        {
            detail = $"header length {header.HeaderLength}, version 1 has {MessageHeader.Size}";
            return MessageError.BadHeaderLength;
        }
        if ((header.Flags & ~MessageFlags.HasCrc) != 0)
        {
            detail = $"unknown flags 0x{(ushort)header.Flags:x4}";
            return MessageError.UnknownFlags;
        }
        var available = message.Length - MessageHeader.Size;
        if (header.PayloadLength > available)
        {
            detail = $"payload of {header.PayloadLength} bytes declared, {available} present";
            return MessageError.PayloadTruncated;
        }
        if (header.PayloadLength < available)
        {
            detail = $"{available - header.PayloadLength} bytes after the declared payload of {header.PayloadLength}";
            return MessageError.TrailingBytes;
        }
        var payload = message[MessageHeader.Size..];
        if ((header.Flags & MessageFlags.HasCrc) != 0)
        {
            var crc = Crc32C(payload);
            if (crc != header.PayloadCrc32C)
            {
                detail = $"payload CRC32C 0x{crc:x8}, header says 0x{header.PayloadCrc32C:x8}";
                return MessageError.CrcMismatch;
            }
        }
        if (header.Family == MessageFamily.DeadLetters)
            return DeadLetter.Check(payload, out detail) ? MessageError.None : MessageError.BadRecord;
        if (MessageFamilies.CarriesWholePayload(header.Family))
            return CheckArrowStream(payload, out detail) ? MessageError.None : MessageError.BadRecord;

        var records = MessageFamilies.CarriesSensorRecords(header.Family)
            ? CountSensorRecords(payload, header.Family, out var error, out detail)
            : CountFramedRecords(payload, out error, out detail);
        if (error != MessageError.None) return error;
        if (records != header.RecordCount)
        {
            detail = $"{records} records in the payload, header says {header.RecordCount}";
            return MessageError.RecordCountMismatch;
        }
        return MessageError.None;
    }

    /// <summary>Largest payload of a whole-payload message: under Kafka's default 1 MB message limit, with room for the header.</summary>
    public const int MaxWholePayloadBytes = 960 * 1024;

    /// <summary>
    /// The framing of an Arrow IPC stream (the transport does not read Arrow): 8-aligned, starts with
    /// a message (continuation marker 0xFFFFFFFF, then a metadata length that fits), ends with the
    /// end-of-stream marker (0xFFFFFFFF, 0). The reader checks the rest.
    /// </summary>
    public static bool CheckArrowStream(ReadOnlySpan<byte> payload, out string? detail)
    {
        detail = null;
        if (payload.Length < 16 || payload.Length % 8 != 0)
            detail = $"an Arrow IPC stream of {payload.Length} bytes (needs 16 or more, a multiple of 8)";
        else if (BinaryPrimitives.ReadUInt32LittleEndian(payload) != 0xFFFFFFFF)
            detail = "no Arrow IPC continuation marker at the start";
        else if (BinaryPrimitives.ReadInt32LittleEndian(payload[4..]) is var meta && (meta <= 0 || meta > payload.Length - 16))
            detail = $"Arrow IPC metadata length {BinaryPrimitives.ReadInt32LittleEndian(payload[4..])} does not fit the {payload.Length}-byte payload";
        else if (BinaryPrimitives.ReadUInt32LittleEndian(payload[^8..]) != 0xFFFFFFFF || BinaryPrimitives.ReadInt32LittleEndian(payload[^4..]) != 0)
            detail = "the Arrow IPC stream does not end with its end-of-stream marker";
        return detail == null;
    }

    // Per record type: its exact size (0: not a sensor record) and family; per version: known or not.
    // Built from RecordFormat so they cannot drift from bpf/records.h's mirror.
    private static readonly ushort[] SensorSize = new ushort[256];
    private static readonly MessageFamily[] SensorFamily = new MessageFamily[256];
    private static readonly bool[] KnownVersion = new bool[256];

#pragma warning disable CA1810 // the tables need a loop
    static MessageFormat()
    {
        for (var t = 0; t < 256; t++)
        {
            SensorSize[t] = (ushort)RecordFormat.SizeOf((RecordType)t);
            SensorFamily[t] = MessageFamilies.Of((RecordType)t);
            KnownVersion[t] = RecordFormat.IsKnownVersion((byte)t);
        }
    }
#pragma warning restore CA1810

    /// <summary>
    /// The length of the sensor record at the start of <paramref name="bytes"/> when it is whole,
    /// valid as RecordReader.Check would say, and of <paramref name="family"/>; else 0. The hot-path
    /// check (a few ns): one 8-byte read and three table lookups.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SensorRecordLength(ReadOnlySpan<byte> bytes, MessageFamily family)
    {
        if (bytes.Length < RecordHeader.Size) return 0;
        var head = MemoryMarshal.Read<ulong>(bytes); // magic:16 version:8 type:8 length:16 cpu:16
        var type = (byte)(head >> 24);
        var length = (ushort)(head >> 32);
        if ((ushort)head != RecordFormat.Magic || !KnownVersion[(byte)(head >> 16)] || length == 0
            || length != SensorSize[type] || SensorFamily[type] != family || length > bytes.Length)
            return 0;
        return length;
    }

    /// <summary>Counts sensor records, refusing the payload at the first bad record or one of another family.</summary>
    public static long CountSensorRecords(ReadOnlySpan<byte> payload, MessageFamily family, out MessageError error, out string? detail)
    {
        // Fast pass; the slow one below only runs to say what is wrong.
        long fast = 0;
        var at = 0;
        while (at < payload.Length)
        {
            var length = SensorRecordLength(payload[at..], family);
            if (length == 0) break;
            at += length;
            fast++;
        }
        if (at == payload.Length)
        {
            error = MessageError.None;
            detail = null;
            return fast;
        }
        long count = 0;
        var offset = 0;
        while (offset < payload.Length)
        {
            var recordError = RecordReader.Check(payload[offset..], out var length, out detail);
            if (recordError != RecordError.None)
            {
                error = MessageError.BadRecord;
                detail = $"record {count} at payload offset {offset}: {recordError}: {detail}";
                return count;
            }
            var type = (RecordType)payload[offset + 3];
            if (MessageFamilies.Of(type) != family)
            {
                error = MessageError.BadRecord;
                detail = $"record {count} at payload offset {offset} is a {RecordFormat.NameOf(type)} record, which does not belong in {MessageFamilies.Name(family)}";
                return count;
            }
            offset += length;
            count++;
        }
        error = MessageError.None;
        detail = null;
        return count;
    }

    /// <summary>Counts records that start with a detect_header (magic and length), without knowing their types.</summary>
    public static long CountFramedRecords(ReadOnlySpan<byte> payload, out MessageError error, out string? detail)
    {
        long count = 0;
        var offset = 0;
        while (offset < payload.Length)
        {
            var rest = payload[offset..];
            if (rest.Length < RecordHeader.Size)
            {
                error = MessageError.BadRecord;
                detail = $"record {count} at payload offset {offset}: {rest.Length} bytes left, a record header needs {RecordHeader.Size}";
                return count;
            }
            var magic = BinaryPrimitives.ReadUInt16LittleEndian(rest);
            int length = BinaryPrimitives.ReadUInt16LittleEndian(rest[4..]);
            if (magic != RecordFormat.Magic || length < RecordHeader.Size || length % 8 != 0 || length > rest.Length)
            {
                error = MessageError.BadRecord;
                detail = $"record {count} at payload offset {offset}: magic 0x{magic:x4}, length {length}, {rest.Length} bytes left";
                return count;
            }
            offset += length;
            count++;
        }
        error = MessageError.None;
        detail = null;
        return count;
    }

    /// <summary>CRC32C (Castagnoli), as iSCSI and Kafka record batches use; hardware-accelerated where the CPU has it.</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        var crc = ~0u;
        var longs = MemoryMarshal.Cast<byte, ulong>(data);
        // Three independent streams would be faster still; one already runs at several GB/s.
        foreach (var v in longs)
            crc = BitOperations.Crc32C(crc, v);
        for (var i = longs.Length * 8; i < data.Length; i++)
            crc = BitOperations.Crc32C(crc, data[i]);
        return ~crc;
    }
}
