using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;
using Detect.Records;

namespace Detect.Transport.Tests;

public sealed class MessageFormatTests
{
    [Fact]
    public void Header_Is64BytesWithFieldsWhereTheReadmeSays()
    {
        Assert.Equal(MessageHeader.Size, Unsafe.SizeOf<MessageHeader>());
        var bytes = new byte[MessageHeader.Size];
        MessageFormat.WriteHeader(bytes, MessageFamily.Flows, hostId: 0x1122334455667788, session: 7, sequence: 9, firstRecord: 100,
            recordCount: 0, payloadLength: 0, sealedUnixNs: 42, bootToRealtimeNs: 1_700_000_000_000_000_000);
        Assert.Equal(0xDE7B, BinaryPrimitives.ReadUInt16LittleEndian(bytes));
        Assert.Equal(1, bytes[2]);
        Assert.Equal((byte)MessageFamily.Flows, bytes[3]);
        Assert.Equal(64, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(4)));
        Assert.Equal(0x1122334455667788UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(8)));
        Assert.Equal(9UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(16)));
        Assert.Equal(100UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(24)));
        Assert.Equal(7u, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(44)));
        Assert.Equal(42L, BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(48)));
        Assert.Equal(1_700_000_000_000_000_000L, BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(56)));
    }

    [Fact]
    public void Crc32C_MatchesTheCastagnoliCheckValue()
    {
        Assert.Equal(0xE3069283u, MessageFormat.Crc32C(Encoding.ASCII.GetBytes("123456789")));
        Assert.Equal(0u, MessageFormat.Crc32C([]));
    }

    [Fact]
    public void Validate_WellFormedMessage_IsAccepted()
    {
        var message = TestRecords.Message(5, 1, 1, 0, 10);
        Assert.Equal(MessageError.None, MessageFormat.Validate(message, out var header, out var detail));
        Assert.Null(detail);
        Assert.Equal(10u, header.RecordCount);
        Assert.Equal(5UL, header.HostId);
    }

    public static TheoryData<string, MessageError> Corruptions => new()
    {
        { "flip-payload-bit", MessageError.CrcMismatch },
        { "truncate", MessageError.PayloadTruncated },
        { "version-9", MessageError.UnknownVersion },
        { "bad-magic", MessageError.BadMagic },
        { "family-99", MessageError.UnknownFamily },
        { "trailing", MessageError.TrailingBytes },
        { "short", MessageError.TooShort },
        { "count", MessageError.RecordCountMismatch },
        { "record-version", MessageError.BadRecord },
        { "flow-in-syscalls", MessageError.BadRecord },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void Validate_DamagedMessage_IsRefusedWithItsReason(string damage, MessageError expected)
    {
        var message = TestRecords.Message(5, 1, 1, 0, 10);
        byte[] damaged = damage switch
        {
            "flip-payload-bit" => Flip(message, MessageHeader.Size + 100),
            "truncate" => message[..^40],
            "version-9" => Set(message, 2, 9),
            "bad-magic" => Set(message, 0, 0),
            "family-99" => Set(message, 3, 99),
            "trailing" => [.. message, .. new byte[8]],
            "short" => message[..20],
            "count" => Rewrite(message, recordCount: 11),
            "record-version" => Reseal(Set(message, MessageHeader.Size + 2, 9)),
            "flow-in-syscalls" => Reseal([.. message.AsSpan(0, MessageHeader.Size), .. TestRecords.Flow(1, 1)]),
            _ => throw new ArgumentException(damage),
        };
        var error = MessageFormat.Validate(damaged, out _, out var detail);
        Assert.Equal(expected, error);
        Assert.False(string.IsNullOrEmpty(detail));
    }

    [Fact]
    public void DeadLetter_RoundTripsReasonSourceAndTheRefusedBytes()
    {
        var refused = TestRecords.Message(5, 1, 1, 0, 3)[..^8];
        var payload = new byte[DeadLetter.PayloadSize("why", refused.Length)];
        var written = DeadLetter.Write(payload, MessageError.PayloadTruncated, "why", 3, 1234, 99, refused);
        Assert.Equal(payload.Length, written);
        Assert.True(DeadLetter.Check(payload, out _));
        var letter = DeadLetter.Parse(payload);
        Assert.Equal(MessageError.PayloadTruncated, letter.Reason);
        Assert.Equal("why", letter.Text);
        Assert.Equal(3, letter.SourcePartition);
        Assert.Equal(1234, letter.SourceOffset);
        Assert.Equal(refused, letter.Stored);
    }

    [Fact]
    public void Families_RouteEverySensorRecordType()
    {
        Assert.Equal(MessageFamily.Syscalls, MessageFamilies.Of(RecordType.Syscall));
        Assert.Equal(MessageFamily.Syscalls, MessageFamilies.Of(RecordType.SyscallSummary));
        Assert.Equal(MessageFamily.Process, MessageFamilies.Of(RecordType.Exec));
        Assert.Equal(MessageFamily.Process, MessageFamilies.Of(RecordType.Exit));
        Assert.Equal(MessageFamily.Process, MessageFamilies.Of(RecordType.Fork));
        Assert.Equal(MessageFamily.Flows, MessageFamilies.Of(RecordType.Flow));
        Assert.Equal("detect.policy-acks", MessageFamilies.Topic(MessageFamily.PolicyAcks));
    }

    private static byte[] Flip(byte[] m, int at)
    {
        var copy = m.ToArray();
        copy[at] ^= 0x10;
        return copy;
    }

    private static byte[] Set(byte[] m, int at, byte value)
    {
        var copy = m.ToArray();
        copy[at] = value;
        return copy;
    }

    // Header rewritten with a new CRC, so only the named damage remains.
    private static byte[] Reseal(byte[] m)
    {
        MessageFormat.TryReadHeader(m, out var h);
        var count = (int)MessageFormat.CountFramedRecords(m.AsSpan(MessageHeader.Size), out _, out _);
        MessageFormat.WriteHeader(m, h.Family, h.HostId, h.Session, h.Sequence, h.FirstRecord, count, m.Length - MessageHeader.Size, h.SealedUnixNs);
        return m;
    }

    private static byte[] Rewrite(byte[] m, int recordCount)
    {
        var copy = m.ToArray();
        MessageFormat.TryReadHeader(copy, out var h);
        MessageFormat.WriteHeader(copy, h.Family, h.HostId, h.Session, h.Sequence, h.FirstRecord, recordCount, copy.Length - MessageHeader.Size, h.SealedUnixNs);
        return copy;
    }
}
