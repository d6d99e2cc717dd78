using System.Buffers.Binary;
using Detect.Records;

namespace Detect.Alerts;

// Records of the alerts, policy and policy-acks families: the transport only checks their framing
// (a detect_header: magic, version, type, length multiple of 8), so each is that header and a
// JSON document, little-endian like every record:
//
//   offset size field
//   0      2    magic 0xDE7E (RecordFormat.Magic)
//   2      1    record format version (1)
//   3      1    type: 64 alert, 65 policy command, 66 policy acknowledgement
//   4      2    length of the whole record (a multiple of 8, at most 65,528)
//   6      2    0
//   8      8    unix ns when the record was written (not a kernel time: these are made in user space)
//   16     4    JSON length in bytes
//   20     4    0 (reserved)
//   24     n    the JSON document (UTF-8), then zeros to the next multiple of 8
//
// JSON keeps these records readable by any consumer (kcat, a SIEM) and lets fields be added
// without a format version; they are rare (alerts, not telemetry), so its cost does not matter.

/// <summary>The record types of the control families (alerts, policy, policy-acks).</summary>
public enum ControlRecordType : byte
{
    Alert = 64,
    PolicyCommand = 65,
    PolicyAck = 66,
}

/// <summary>Frames and unframes the JSON records of the alerts, policy and policy-acks families.</summary>
public static class ControlRecord
{
    public const int BodyOffset = RecordHeader.Size + 8;

    /// <summary>Largest record (a u16 length, a multiple of 8).</summary>
    public const int MaxLength = ushort.MaxValue & ~7;

    public const int MaxJsonBytes = MaxLength - BodyOffset;

    /// <summary>The record for <paramref name="json"/>. Throws when the document is too long for one record.</summary>
    public static byte[] Encode(ControlRecordType type, ReadOnlySpan<byte> json, long unixNs)
    {
        if (json.Length > MaxJsonBytes)
            throw new ArgumentException($"a {type} record holds at most {MaxJsonBytes} bytes of JSON, this one has {json.Length}");
        var length = (BodyOffset + json.Length + 7) & ~7;
        var record = new byte[length];
        var span = record.AsSpan();
        BinaryPrimitives.WriteUInt16LittleEndian(span, RecordFormat.Magic);
        span[2] = RecordFormat.Version;
        span[3] = (byte)type;
        BinaryPrimitives.WriteUInt16LittleEndian(span[4..], (ushort)length);
        BinaryPrimitives.WriteInt64LittleEndian(span[8..], unixNs);
        BinaryPrimitives.WriteInt32LittleEndian(span[16..], json.Length);
        json.CopyTo(span[BodyOffset..]);
        return record;
    }

    /// <summary>
    /// Reads one record at the start of <paramref name="bytes"/>: its type, its JSON and its length.
    /// Returns false (with the reason) for bytes that are not a control record.
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> bytes, out ControlRecordType type, out ReadOnlySpan<byte> json, out int length, out string? error)
    {
        type = 0;
        json = default;
        length = 0;
        if (bytes.Length < BodyOffset)
        {
            error = $"{bytes.Length} bytes, a control record needs at least {BodyOffset}";
            return false;
        }
        var magic = BinaryPrimitives.ReadUInt16LittleEndian(bytes);
        length = BinaryPrimitives.ReadUInt16LittleEndian(bytes[4..]);
        if (magic != RecordFormat.Magic || bytes[2] != RecordFormat.Version)
        {
            error = $"magic 0x{magic:x4} version {bytes[2]}: not a Detect record of a known version";
            return false;
        }
        if (length < BodyOffset || length % 8 != 0 || length > bytes.Length)
        {
            error = $"record length {length} with {bytes.Length} bytes left";
            return false;
        }
        type = (ControlRecordType)bytes[3];
        if (type is not (ControlRecordType.Alert or ControlRecordType.PolicyCommand or ControlRecordType.PolicyAck))
        {
            error = $"record type {bytes[3]} is not a control record (64 alert, 65 policy command, 66 policy ack)";
            return false;
        }
        var jsonLength = BinaryPrimitives.ReadInt32LittleEndian(bytes[16..]);
        if (jsonLength < 0 || BodyOffset + jsonLength > length)
        {
            error = $"JSON length {jsonLength} does not fit in a record of {length} bytes";
            return false;
        }
        json = bytes.Slice(BodyOffset, jsonLength);
        error = null;
        return true;
    }

    /// <summary>
    /// Calls <paramref name="onRecord"/> for each record of a message payload; a bad record is
    /// reported to <paramref name="onError"/> and ends the walk (its length cannot be trusted).
    /// Returns the records read.
    /// </summary>
    public static int ForEach(ReadOnlySpan<byte> payload, ControlRecordHandler onRecord, Action<int, string>? onError = null)
    {
        var count = 0;
        var offset = 0;
        while (offset < payload.Length)
        {
            if (!TryDecode(payload[offset..], out var type, out var json, out var length, out var error))
            {
                onError?.Invoke(offset, error!);
                break;
            }
            onRecord(type, json);
            offset += length;
            count++;
        }
        return count;
    }
}

public delegate void ControlRecordHandler(ControlRecordType type, ReadOnlySpan<byte> json);
