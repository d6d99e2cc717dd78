using System.Runtime.InteropServices;
using Apache.Arrow;
using Apache.Arrow.Types;

namespace Detect.Models.Features;

/// <summary>
/// The `seq` column of syscall/2 batches: per window, its syscall numbers in call order (binary
/// cells of little-endian uint16), with `seq_dropped` (calls of the window left out, the sequence
/// being a prefix). Reads an Arrow BinaryArray in place (the scorer's path: no copy) or owns its
/// arrays (matrices, training). A sequence is a feature of the window, not a record.
/// </summary>
public sealed class SequenceColumn
{
    public const string Column = "seq";
    public const string DroppedColumn = "seq_dropped";

    private readonly ReadOnlyMemory<byte> _values; // little-endian uint16 per call
    private readonly ReadOnlyMemory<byte> _offsets; // int32 byte offsets into _values, Count + 1 of them from _first
    private readonly int _first;
    private readonly ReadOnlyMemory<byte> _dropped; // int32 per row from _first, or empty

    private SequenceColumn(ReadOnlyMemory<byte> values, ReadOnlyMemory<byte> offsets, int first, int count, ReadOnlyMemory<byte> dropped)
    {
        _values = values;
        _offsets = offsets;
        _first = first;
        Count = count;
        _dropped = dropped;
    }

    public int Count { get; }

    /// <summary>The calls of one row, in order.</summary>
    public ReadOnlySpan<ushort> this[int row]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)row, (uint)Count, nameof(row));
            var offsets = MemoryMarshal.Cast<byte, int>(_offsets.Span);
            var a = offsets[_first + row];
            var b = offsets[_first + row + 1];
            return MemoryMarshal.Cast<byte, ushort>(_values.Span[a..b]);
        }
    }

    /// <summary>Calls of the row's window that are not in its sequence (0 when the column is absent).</summary>
    public int Dropped(int row) => _dropped.IsEmpty ? 0 : MemoryMarshal.Cast<byte, int>(_dropped.Span)[_first + row];

    /// <summary>Total calls held.</summary>
    public long TotalCalls
    {
        get
        {
            var offsets = MemoryMarshal.Cast<byte, int>(_offsets.Span);
            return Count == 0 ? 0 : (offsets[_first + Count] - offsets[_first]) / sizeof(ushort);
        }
    }

    /// <summary>The batch's `seq` column in place (null when the batch has none); `seq_dropped` beside it when present.</summary>
    public static SequenceColumn? FromArrow(RecordBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var i = batch.Schema.GetFieldIndex(Column);
        if (i < 0) return null;
        if (batch.Column(i) is not BinaryArray seq)
            throw new FeatureSchemaMismatchException($"column '{Column}' is {batch.Schema.GetFieldByIndex(i).DataType.Name}, the contract says binary (little-endian uint16 per call)");
        if (seq.NullCount > 0) throw new FeatureSchemaMismatchException($"column '{Column}' has {seq.NullCount} null cells; the contract says not null");
        ReadOnlyMemory<byte> dropped = default;
        var d = batch.Schema.GetFieldIndex(DroppedColumn);
        if (d >= 0 && batch.Column(d) is Int32Array da)
        {
            if (da.Offset != seq.Offset) throw new FeatureSchemaMismatchException($"'{DroppedColumn}' and '{Column}' are sliced differently");
            dropped = da.ValueBuffer.Memory;
        }
        return new SequenceColumn(seq.ValueBuffer.Memory, seq.ValueOffsetsBuffer.Memory, seq.Offset, seq.Length, dropped);
    }

    /// <summary>Owned copies of the given sequences (tests, tools, matrices).</summary>
    public static SequenceColumn FromRows(IReadOnlyList<ushort[]> rows, IReadOnlyList<int>? dropped = null)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (dropped != null && dropped.Count != rows.Count) throw new ArgumentException($"{dropped.Count} dropped counts for {rows.Count} rows", nameof(dropped));
        var offsets = new int[rows.Count + 1];
        var total = 0L;
        for (var r = 0; r < rows.Count; r++)
        {
            total += rows[r].Length;
            offsets[r + 1] = checked((int)(total * sizeof(ushort)));
        }
        var values = new ushort[total];
        var at = 0;
        foreach (var row in rows)
        {
            row.CopyTo(values, at);
            at += row.Length;
        }
        var droppedArray = dropped?.ToArray() ?? new int[rows.Count];
        return new SequenceColumn(MemoryMarshal.AsBytes(values.AsSpan()).ToArray(), MemoryMarshal.AsBytes(offsets.AsSpan()).ToArray(), 0, rows.Count,
            MemoryMarshal.AsBytes(droppedArray.AsSpan()).ToArray());
    }

    /// <summary>Rows of one column, copied, in the given order.</summary>
    public SequenceColumn Select(IReadOnlyList<int> rows)
    {
        var list = new ushort[rows.Count][];
        var dropped = new int[rows.Count];
        for (var i = 0; i < rows.Count; i++)
        {
            list[i] = this[rows[i]].ToArray();
            dropped[i] = Dropped(rows[i]);
        }
        return FromRows(list, dropped);
    }

    public static SequenceColumn Concat(IReadOnlyList<SequenceColumn> parts)
    {
        var rows = new List<ushort[]>();
        var dropped = new List<int>();
        foreach (var p in parts)
        {
            for (var r = 0; r < p.Count; r++)
            {
                rows.Add(p[r].ToArray());
                dropped.Add(p.Dropped(r));
            }
        }
        return FromRows(rows, dropped);
    }

    /// <summary>The `seq` and `seq_dropped` arrays of the contract.</summary>
    public (BinaryArray Sequences, Int32Array Dropped) ToArrow()
    {
        var b = new BinaryArray.Builder();
        var d = new Int32Array.Builder();
        for (var r = 0; r < Count; r++)
        {
            b.Append(MemoryMarshal.AsBytes(this[r]));
            d.Append(Dropped(r));
        }
        return (b.Build(), d.Build());
    }

    public static readonly IArrowType ArrowType = BinaryType.Default;
}
