using System.Buffers.Binary;
using System.Text;

namespace Detect.Transport;

// The payload of a dead-letters message: why a consumer refused a message, where it came from,
// and the refused bytes themselves (cut at MaxStoredBytes) so it can be inspected and replayed.
//
//   offset size field
//   0      2    reason (MessageError)
//   2      2    reason text length, UTF-8 bytes
//   4      4    source partition (-1 when unknown)
//   8      8    source offset (-1 when unknown)
//   16     8    dead-lettered at, unix ns
//   24     4    original length: the refused message's size
//   28     4    stored length: how many of its bytes follow (fewer when it was cut)
//   32          reason text ("topic[partition]@offset: reason: detail"), zero-padded to 8
//   ...         the refused bytes, zero-padded to 8

/// <summary>A refused message with its reason, as carried in the dead-letters family.</summary>
public sealed record DeadLetter(
    MessageError Reason,
    string Text,
    int SourcePartition,
    long SourceOffset,
    long UnixNs,
    int OriginalLength,
    byte[] Stored)
{
    public const int HeaderSize = 32;
    /// <summary>Refused bytes kept in a dead letter; the rest is cut so the letter fits any broker's message limit.</summary>
    public const int MaxStoredBytes = 256 * 1024;
    private const int MaxTextBytes = 4096;

    /// <summary>The payload size <see cref="Write"/> needs.</summary>
    public static int PayloadSize(string text, int originalLength)
    {
        var textBytes = Math.Min(Encoding.UTF8.GetByteCount(text), MaxTextBytes);
        return HeaderSize + Align8(textBytes) + Align8(Math.Min(originalLength, MaxStoredBytes));
    }

    /// <summary>Writes the payload; returns its length.</summary>
    public static int Write(Span<byte> payload, MessageError reason, string text, int sourcePartition, long sourceOffset,
        long unixNs, ReadOnlySpan<byte> original)
    {
        var textBytes = Encoding.UTF8.GetBytes(text);
        var textLength = Math.Min(textBytes.Length, MaxTextBytes);
        var stored = Math.Min(original.Length, MaxStoredBytes);
        var size = HeaderSize + Align8(textLength) + Align8(stored);
        var p = payload[..size];
        p.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(p, (ushort)reason);
        BinaryPrimitives.WriteUInt16LittleEndian(p[2..], (ushort)textLength);
        BinaryPrimitives.WriteInt32LittleEndian(p[4..], sourcePartition);
        BinaryPrimitives.WriteInt64LittleEndian(p[8..], sourceOffset);
        BinaryPrimitives.WriteInt64LittleEndian(p[16..], unixNs);
        BinaryPrimitives.WriteInt32LittleEndian(p[24..], original.Length);
        BinaryPrimitives.WriteInt32LittleEndian(p[28..], stored);
        textBytes.AsSpan(0, textLength).CopyTo(p[HeaderSize..]);
        original[..stored].CopyTo(p[(HeaderSize + Align8(textLength))..]);
        return size;
    }

    /// <summary>Checks the envelope's framing.</summary>
    public static bool Check(ReadOnlySpan<byte> payload, out string? detail)
    {
        if (payload.Length < HeaderSize)
        {
            detail = $"dead letter of {payload.Length} bytes, its header needs {HeaderSize}";
            return false;
        }
        int textLength = BinaryPrimitives.ReadUInt16LittleEndian(payload[2..]);
        var stored = BinaryPrimitives.ReadInt32LittleEndian(payload[28..]);
        var original = BinaryPrimitives.ReadInt32LittleEndian(payload[24..]);
        if (stored < 0 || original < stored || HeaderSize + Align8(textLength) + Align8(stored) != payload.Length)
        {
            detail = $"dead letter of {payload.Length} bytes with text {textLength} and stored {stored} of {original} bytes";
            return false;
        }
        detail = null;
        return true;
    }

    /// <summary>Reads a dead-letters payload (allocates: dead letters are rare).</summary>
    public static DeadLetter Parse(ReadOnlySpan<byte> payload)
    {
        if (!Check(payload, out var detail)) throw new FormatException(detail);
        int textLength = BinaryPrimitives.ReadUInt16LittleEndian(payload[2..]);
        var stored = BinaryPrimitives.ReadInt32LittleEndian(payload[28..]);
        return new DeadLetter(
            (MessageError)BinaryPrimitives.ReadUInt16LittleEndian(payload),
            Encoding.UTF8.GetString(payload.Slice(HeaderSize, textLength)),
            BinaryPrimitives.ReadInt32LittleEndian(payload[4..]),
            BinaryPrimitives.ReadInt64LittleEndian(payload[8..]),
            BinaryPrimitives.ReadInt64LittleEndian(payload[16..]),
            BinaryPrimitives.ReadInt32LittleEndian(payload[24..]),
            payload.Slice(HeaderSize + Align8(textLength), stored).ToArray());
    }

    private static int Align8(int n) => (n + 7) & ~7;
}
