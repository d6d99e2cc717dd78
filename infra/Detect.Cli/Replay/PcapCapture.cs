using System.Buffers.Binary;
using System.Globalization;

namespace Detect.Cli.Replay;

/// <summary>The file format a capture really has (by its magic number, whatever its name says).</summary>
public enum CaptureFormat
{
    Unknown,
    /// <summary>Classic libpcap: 0xa1b2c3d4 (µs) or 0xa1b23c4d (ns), either byte order.</summary>
    Pcap,
    /// <summary>pcapng: section header block 0x0a0d0d0a.</summary>
    PcapNg,
}

/// <summary>
/// What a capture file holds, read by walking it once: its real format (some `.pcapng` files are
/// classic pcap: the magic number decides, not the name), link type, packets, time span, and the
/// byte offset of the first damage (a truncated or impossible record). Damage is not fatal: the
/// packets before it can be replayed (<see cref="WriteIntactPart"/>), and the report says where
/// the file broke.
/// </summary>
public sealed class PcapCapture
{
    public const int LinkEthernet = 1;

    private PcapCapture(string path) => Path = path;

    public string Path { get; }
    public CaptureFormat Format { get; private set; }
    public bool BigEndian { get; private set; }
    public bool NanosecondTimestamps { get; private set; }
    /// <summary>Link type of the (first) interface: 1 Ethernet.</summary>
    public int LinkType { get; private set; } = -1;
    public long Packets { get; private set; }
    public long FileBytes { get; private set; }
    /// <summary>Bytes up to the end of the last intact packet (or block).</summary>
    public long IntactBytes { get; private set; }
    /// <summary>Offset of the first damaged record, or null when the file is whole.</summary>
    public long? DamageOffset { get; private set; }
    public string? Damage { get; private set; }
    public long FirstPacketUnixNs { get; private set; }
    public long LastPacketUnixNs { get; private set; }

    /// <summary>True when the name says one format and the content is another (told, not refused).</summary>
    public bool NameMismatch =>
        (Format == CaptureFormat.Pcap && Path.EndsWith(".pcapng", StringComparison.OrdinalIgnoreCase))
        || (Format == CaptureFormat.PcapNg && Path.EndsWith(".pcap", StringComparison.OrdinalIgnoreCase));

    public TimeSpan Duration => TimeSpan.FromTicks(Math.Max(0, LastPacketUnixNs - FirstPacketUnixNs) / 100);

    /// <summary>Reads and checks a capture. Throws <see cref="InvalidDataException"/> when it is no capture at all (unknown magic, header cut short).</summary>
    public static PcapCapture Read(string path)
    {
        var capture = new PcapCapture(path);
        var bytes = File.ReadAllBytes(path);
        capture.FileBytes = bytes.Length;
        if (bytes.Length < 4) throw new InvalidDataException($"{path}: {bytes.Length} bytes: too short for a capture file");
        var magic = BinaryPrimitives.ReadUInt32LittleEndian(bytes);
        switch (magic)
        {
            case 0xa1b2c3d4: capture.Classic(bytes, bigEndian: false, ns: false); break;
            case 0xd4c3b2a1: capture.Classic(bytes, bigEndian: true, ns: false); break;
            case 0xa1b23c4d: capture.Classic(bytes, bigEndian: false, ns: true); break;
            case 0x4d3cb2a1: capture.Classic(bytes, bigEndian: true, ns: true); break;
            case 0x0a0d0d0a: capture.Ng(bytes); break;
            default:
                throw new InvalidDataException($"{path}: magic number 0x{magic:x8} is neither pcap (a1b2c3d4, a1b23c4d) nor pcapng (0a0d0d0a)");
        }
        return capture;
    }

    private void Classic(byte[] b, bool bigEndian, bool ns)
    {
        Format = CaptureFormat.Pcap;
        BigEndian = bigEndian;
        NanosecondTimestamps = ns;
        if (b.Length < 24) throw new InvalidDataException($"{Path}: a pcap header needs 24 bytes, the file has {b.Length}");
        uint U32(int at) => bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(at)) : BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(at));
        var snap = U32(16);
        LinkType = (int)(U32(20) & 0x0fffffff);
        var maxCaptured = snap is > 0 and <= 0x4000000 ? snap : 262144u;
        long offset = 24;
        IntactBytes = 24;
        while (offset < b.Length)
        {
            if (offset + 16 > b.Length)
            {
                Damaged(offset, $"packet record header cut short ({b.Length - offset} of 16 bytes)");
                return;
            }
            var sec = U32((int)offset);
            var frac = U32((int)offset + 4);
            var caplen = U32((int)offset + 8);
            var origlen = U32((int)offset + 12);
            if (frac >= (ns ? 1_000_000_000u : 1_000_000u))
            {
                Damaged(offset, $"timestamp fraction {frac} is out of range");
                return;
            }
            if (caplen > maxCaptured || caplen > origlen && origlen != 0)
            {
                Damaged(offset, $"captured length {caplen} (original {origlen}, snap length {snap}) is impossible");
                return;
            }
            if (offset + 16 + caplen > b.Length)
            {
                Damaged(offset, $"packet of {caplen} bytes cut short ({b.Length - offset - 16} bytes left)");
                return;
            }
            var time = sec * 1_000_000_000L + (ns ? frac : frac * 1000L);
            Packet(time);
            offset += 16 + caplen;
            IntactBytes = offset;
        }
    }

    private void Ng(byte[] b)
    {
        Format = CaptureFormat.PcapNg;
        long offset = 0;
        var bigEndian = false;
        var resolution = new List<long>(); // per interface: ticks per second
        while (offset < b.Length)
        {
            if (offset + 12 > b.Length)
            {
                Damaged(offset, $"block header cut short ({b.Length - offset} bytes left)");
                return;
            }
            var type = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)offset));
            if (type == 0x0a0d0d0a)
            {
                var bom = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)offset + 8));
                if (bom is not (0x1a2b3c4d or 0x4d3c2b1a))
                {
                    Damaged(offset, $"section header byte-order magic 0x{bom:x8} is wrong");
                    return;
                }
                bigEndian = bom == 0x4d3c2b1a;
                BigEndian = bigEndian;
                resolution.Clear();
            }
            uint U32(long at) => bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan((int)at)) : BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)at));
            if (type != 0x0a0d0d0a) type = U32(offset);
            var length = U32(offset + 4);
            if (length < 12 || length % 4 != 0 || offset + length > b.Length)
            {
                Damaged(offset, $"block of type 0x{type:x8} claims {length} bytes ({b.Length - offset} left)");
                return;
            }
            if (U32(offset + length - 4) != length)
            {
                Damaged(offset, $"block of type 0x{type:x8}: its trailing length {U32(offset + length - 4)} differs from its leading {length}");
                return;
            }
            switch (type)
            {
                case 1: // interface description: link type, then options (if_tsresol)
                {
                    if (length < 20)
                    {
                        Damaged(offset, "interface description block too short");
                        return;
                    }
                    var link = (int)(bigEndian ? BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan((int)offset + 8)) : BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan((int)offset + 8)));
                    if (LinkType < 0) LinkType = link;
                    resolution.Add(TsResolution(b, offset + 16, offset + length - 4, bigEndian));
                    break;
                }
                case 6: // enhanced packet: interface, timestamp high/low, captured length
                {
                    var iface = (int)U32(offset + 8);
                    var ts = ((long)U32(offset + 12) << 32) | U32(offset + 16);
                    var caplen = U32(offset + 20);
                    if (28 + caplen + 4 > length)
                    {
                        Damaged(offset, $"enhanced packet of {caplen} bytes does not fit its block of {length}");
                        return;
                    }
                    var perSecond = iface < resolution.Count ? resolution[iface] : 1_000_000L;
                    Packet((long)(ts / (double)perSecond * 1e9));
                    break;
                }
                case 3: // simple packet: no timestamp
                case 2: // obsolete packet block
                    Packet(LastPacketUnixNs);
                    break;
            }
            offset += length;
            IntactBytes = offset;
        }
    }

    private static long TsResolution(byte[] b, long at, long end, bool bigEndian)
    {
        while (at + 4 <= end)
        {
            var code = bigEndian ? BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan((int)at)) : BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan((int)at));
            var len = bigEndian ? BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan((int)at + 2)) : BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan((int)at + 2));
            if (code == 0) break;
            if (code == 9 && len >= 1)
            {
                var v = b[at + 4];
                return (v & 0x80) != 0 ? 1L << (v & 0x7f) : (long)Math.Pow(10, v & 0x7f);
            }
            at += 4 + ((len + 3) & ~3);
        }
        return 1_000_000L;
    }

    private void Packet(long unixNs)
    {
        if (Packets == 0) FirstPacketUnixNs = unixNs;
        if (unixNs > LastPacketUnixNs || Packets == 0) LastPacketUnixNs = unixNs;
        Packets++;
    }

    private void Damaged(long offset, string what)
    {
        DamageOffset = offset;
        Damage = what;
    }

    /// <summary>Writes the intact part (everything before the damage) to <paramref name="path"/>, for tcpreplay.</summary>
    public void WriteIntactPart(string path)
    {
        using var input = File.OpenRead(Path);
        using var output = File.Create(path);
        var buffer = new byte[1 << 16];
        var left = IntactBytes;
        while (left > 0)
        {
            var n = input.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n <= 0) break;
            output.Write(buffer, 0, n);
            left -= n;
        }
    }

    public override string ToString()
    {
        var what = Format == CaptureFormat.PcapNg ? "pcapng" : $"classic pcap{(NanosecondTimestamps ? " (ns)" : "")}";
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{System.IO.Path.GetFileName(Path)}: {what}{(NameMismatch ? " despite its name" : "")}, link type {LinkType}, {Packets:N0} packets over {Duration.TotalSeconds:F3} s");
        if (DamageOffset is { } o) text += string.Create(CultureInfo.InvariantCulture, $"; damaged at byte offset {o}: {Damage} (the {Packets:N0} packets before it are replayed)");
        return text;
    }
}
