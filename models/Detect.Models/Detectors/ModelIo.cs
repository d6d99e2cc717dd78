using System.IO.Compression;
using System.Runtime.InteropServices;

namespace Detect.Models.Detectors;

/// <summary>Writes a model's parts as named entries of one zip (model.zip in a registry version folder).</summary>
public sealed class ModelWriter(ZipArchive zip)
{
    private BinaryWriter? _current;
    private Stream? _stream;

    public ZipArchive Zip { get; } = zip;

    /// <summary>Starts a binary entry; the previous one is closed.</summary>
    public BinaryWriter Entry(string name)
    {
        Close();
        _stream = Zip.CreateEntry(name, CompressionLevel.Fastest).Open();
        _current = new BinaryWriter(_stream);
        return _current;
    }

    public void Close()
    {
        _current?.Flush();
        _current?.Dispose();
        _stream?.Dispose();
        _current = null;
        _stream = null;
    }

    public static void WriteFloats(BinaryWriter w, ReadOnlySpan<float> values)
    {
        w.Write(values.Length);
        w.Write(MemoryMarshal.AsBytes(values));
    }

    public static void WriteInts(BinaryWriter w, ReadOnlySpan<int> values)
    {
        w.Write(values.Length);
        w.Write(MemoryMarshal.AsBytes(values));
    }
}

/// <summary>Reads the entries ModelWriter wrote.</summary>
public sealed class ModelReader(ZipArchive zip)
{
    public ZipArchive Zip { get; } = zip;

    public BinaryReader Entry(string name)
    {
        var entry = Zip.GetEntry(name) ?? throw new InvalidDataException($"model.zip has no '{name}' entry");
        var ms = new MemoryStream();
        using (var s = entry.Open()) s.CopyTo(ms);
        ms.Position = 0;
        return new BinaryReader(ms);
    }

    public static float[] ReadFloats(BinaryReader r)
    {
        var n = r.ReadInt32();
        var result = new float[n];
        r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(result.AsSpan()));
        return result;
    }

    public static int[] ReadInts(BinaryReader r)
    {
        var n = r.ReadInt32();
        var result = new int[n];
        r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(result.AsSpan()));
        return result;
    }
}
