using System.Runtime.InteropServices;

namespace Detect.Records.Tests;

public sealed class RecordReaderTests
{
    private static byte[] Syscall(uint pid, uint nr, byte version = RecordFormat.Version, ushort? length = null)
    {
        var rec = new SyscallRecord
        {
            Header = new RecordHeader { Magic = RecordFormat.Magic, Version = version, Type = RecordType.Syscall, Length = length ?? SyscallRecord.Size },
            Task = new TaskInfo { Pid = pid, Tgid = pid },
            Nr = nr,
        };
        return MemoryMarshal.AsBytes(new ReadOnlySpan<SyscallRecord>(ref rec)).ToArray();
    }

    private static List<(long Offset, RecordError Error, string? Detail)> ReadAll(byte[] bytes, out List<uint> pids, out RecordReaderStats stats)
    {
        var errors = new List<(long, RecordError, string?)>();
        var seen = new List<uint>();
        var reader = new RecordReader(bytes, (o, e, d) => errors.Add((o, e, d)));
        while (reader.TryRead(out var rec)) seen.Add(rec.As<SyscallRecord>().Task.Pid);
        pids = seen;
        stats = reader.Stats;
        return errors;
    }

    [Fact]
    public void Reader_ValidRecords_AreReadInOrderWithoutErrors()
    {
        var bytes = Syscall(1, 39).Concat(Syscall(2, 110)).Concat(Syscall(3, 0)).ToArray();
        var errors = ReadAll(bytes, out var pids, out var stats);
        Assert.Empty(errors);
        Assert.Equal([1u, 2u, 3u], pids);
        Assert.Equal(3, stats.Records);
    }

    [Fact]
    public void Reader_TruncatedRecord_IsReportedAndTheRecordsBeforeItSurvive()
    {
        var bytes = Syscall(1, 39).Concat(Syscall(2, 39).AsSpan(0, 50).ToArray()).ToArray();
        var errors = ReadAll(bytes, out var pids, out var stats);
        Assert.Equal([1u], pids);
        var (offset, error, detail) = Assert.Single(errors);
        Assert.Equal(RecordError.Truncated, error);
        Assert.Equal(SyscallRecord.Size, offset);
        Assert.Contains("50", detail);
        Assert.Equal(1, stats.Truncated);
    }

    [Fact]
    public void Reader_UnknownVersion_IsRefusedWithItsVersionAndReadingCarriesOn()
    {
        var bytes = Syscall(1, 39).Concat(Syscall(2, 39, version: 9)).Concat(Syscall(3, 39)).ToArray();
        var errors = ReadAll(bytes, out var pids, out var stats);
        Assert.Equal([1u, 3u], pids);
        var (_, error, detail) = Assert.Single(errors);
        Assert.Equal(RecordError.UnknownVersion, error);
        Assert.Contains("version 9", detail);
        Assert.Equal(1, stats.UnknownVersion);
    }

    [Fact]
    public void Reader_OversizedRecord_IsRefusedAndReadingCarriesOnAfterIt()
    {
        // A syscall record claiming 88 bytes, followed by 8 extra bytes it covers, then a good one.
        var big = Syscall(2, 39, length: SyscallRecord.Size + 8).Concat(new byte[8]).ToArray();
        var bytes = Syscall(1, 39).Concat(big).Concat(Syscall(3, 39)).ToArray();
        var errors = ReadAll(bytes, out var pids, out var stats);
        Assert.Equal([1u, 3u], pids);
        Assert.Equal(RecordError.Oversized, Assert.Single(errors).Error);
        Assert.Equal(1, stats.Oversized);
    }

    [Fact]
    public void Reader_LengthBeyondTheBuffer_IsOversizedNotACrash()
    {
        var bytes = Syscall(1, 39, length: 60000);
        var errors = ReadAll(bytes, out var pids, out _);
        Assert.Empty(pids);
        Assert.Equal(RecordError.Oversized, Assert.Single(errors).Error);
    }

    [Fact]
    public void Reader_Garbage_IsSkippedUntilTheNextRecordMagic()
    {
        var garbage = Enumerable.Repeat((byte)0xAB, 40).ToArray();
        var bytes = Syscall(1, 39).Concat(garbage).Concat(Syscall(2, 39)).ToArray();
        var errors = ReadAll(bytes, out var pids, out var stats);
        Assert.Equal([1u, 2u], pids);
        Assert.Equal(RecordError.BadMagic, Assert.Single(errors).Error);
        Assert.Equal(40, stats.SkippedBytes);
    }

    [Fact]
    public void Reader_UnknownType_IsCountedNotThrown()
    {
        var bad = Syscall(2, 39);
        bad[3] = 200;
        var bytes = Syscall(1, 39).Concat(bad).Concat(Syscall(3, 39)).ToArray();
        var errors = ReadAll(bytes, out var pids, out var stats);
        Assert.Equal([1u, 3u], pids);
        Assert.Equal(RecordError.UnknownType, Assert.Single(errors).Error);
        Assert.Equal(1, stats.UnknownType);
    }

    [Fact]
    public void CaptureFile_RoundTripsHeaderAndRecords()
    {
        var path = Path.GetTempFileName();
        try
        {
            using (var writer = new RecordFileWriter(path, new RecordFileHeader { HostName = "host-a", BootToRealtimeNs = 123, CreatedUnixNs = 456 }))
            {
                writer.Write(Syscall(7, 39));
                writer.Write(Syscall(8, 110));
            }
            var pids = new List<uint>();
            var stats = RecordFile.ReadAll(path, r => pids.Add(r.As<SyscallRecord>().Task.Pid));
            Assert.Equal([7u, 8u], pids);
            Assert.Equal(0, stats.Errors);
            var header = RecordFile.ReadHeader(File.ReadAllBytes(path), path);
            Assert.Equal("host-a", header.HostName);
            Assert.Equal(123, header.BootToRealtimeNs);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void CaptureFile_OfAnotherFormat_IsRefusedWithAClearError()
    {
        var bytes = new byte[64];
        "NOTADETC"u8.CopyTo(bytes);
        var ex = Assert.Throws<InvalidDataException>(() => RecordFile.ReadHeader(bytes, "x.cap"));
        Assert.Contains("not a Detect capture file", ex.Message);
    }
}
