using Apache.Arrow;
using Apache.Arrow.Types;
using Detect.Pipeline.Arrow;
using Parquet;
using Parquet.Schema;

namespace Detect.Pipeline.Archive;

/// <summary>Feature batches in Parquet: the schema mapping, and a reader back into Arrow (for training and tests).</summary>
public static class FeatureParquet
{
    public static ParquetSchema SchemaOf(FeatureSchema schema)
    {
        var fields = new List<Parquet.Schema.Field>
        {
            new DataField<string>("host", false),
            new DataField<string>("entity", false),
            new DataField<long>("window_start_ns"),
            new DataField<long>("window_end_ns"),
            new DataField<long>("record_count"),
            new DataField<string>("label", true),
            new DataField<string>("sample_id", true),
        };
        foreach (var f in schema.Features) fields.Add(new DataField<float>(f));
        if (schema.HasSequence)
        {
            // Binary (little-endian uint16 per call), not a nested list: readable everywhere, and no definition levels for empty windows.
            fields.Add(new DataField<byte[]>(FeatureSchema.SequenceColumn, false));
            fields.Add(new DataField<int>(FeatureSchema.SequenceDroppedColumn));
        }
        return new ParquetSchema(fields);
    }

    /// <summary>Reads a whole feature file into one Arrow RecordBatch with the pipeline's schema and metadata.</summary>
    public static async Task<RecordBatch> ReadAsync(string path, CancellationToken ct = default)
    {
        await using var reader = await ParquetReader.CreateAsync(path, cancellationToken: ct).ConfigureAwait(false);
        var fields = reader.Schema.GetDataFields();
        var meta = reader.CustomMetadata;
        var schemaBuilder = new Schema.Builder();
        foreach (var f in fields)
        {
            IArrowType type = f.ClrType == typeof(long) ? Int64Type.Default : f.ClrType == typeof(float) ? FloatType.Default
                : f.ClrType == typeof(int) ? Int32Type.Default : IsBinary(f) ? BinaryType.Default : StringType.Default;
            schemaBuilder.Field(new Apache.Arrow.Field(f.Name, type, f.IsNullable));
        }
        foreach (var (k, v) in meta) schemaBuilder.Metadata(k, v);
        var total = 0;
        for (var g = 0; g < reader.RowGroupCount; g++)
        {
            using var rg = reader.OpenRowGroupReader(g);
            total += (int)rg.RowCount;
        }
        var columns = new IArrowArray[fields.Length];
        for (var c = 0; c < fields.Length; c++)
        {
            var f = fields[c];
            if (IsBinary(f))
            {
                var b = new BinaryArray.Builder();
                for (var g = 0; g < reader.RowGroupCount; g++)
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    var values = new byte[]?[rg.RowCount];
                    await rg.ReadAsync(f, values.AsMemory(), cancellationToken: ct).ConfigureAwait(false);
                    foreach (var v in values)
                        if (v == null) b.AppendNull(); else b.Append(v.AsSpan());
                }
                columns[c] = b.Build();
            }
            else if (f.ClrType == typeof(int))
            {
                var b = new Int32Array.Builder();
                for (var g = 0; g < reader.RowGroupCount; g++)
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    var values = new int[rg.RowCount];
                    await rg.ReadAsync(f, values.AsMemory(), cancellationToken: ct).ConfigureAwait(false);
                    b.Append(values);
                }
                columns[c] = b.Build();
            }
            else if (f.ClrType != typeof(long) && f.ClrType != typeof(float))
            {
                var b = new StringArray.Builder();
                for (var g = 0; g < reader.RowGroupCount; g++)
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    var values = new string?[rg.RowCount];
                    await rg.ReadAsync(f, values.AsMemory(), cancellationToken: ct).ConfigureAwait(false);
                    foreach (var v in values)
                        if (v == null) b.AppendNull(); else b.Append(v);
                }
                columns[c] = b.Build();
            }
            else if (f.ClrType == typeof(long))
            {
                var b = new Int64Array.Builder();
                for (var g = 0; g < reader.RowGroupCount; g++)
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    var values = new long[rg.RowCount];
                    await rg.ReadAsync(f, values.AsMemory(), cancellationToken: ct).ConfigureAwait(false);
                    b.Append(values);
                }
                columns[c] = b.Build();
            }
            else
            {
                var b = new FloatArray.Builder();
                for (var g = 0; g < reader.RowGroupCount; g++)
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    var values = new float[rg.RowCount];
                    await rg.ReadAsync(f, values.AsMemory(), cancellationToken: ct).ConfigureAwait(false);
                    b.Append(values);
                }
                columns[c] = b.Build();
            }
        }
        return new RecordBatch(schemaBuilder.Build(), columns, total);
    }

    // Parquet.Net reports a BYTE_ARRAY column without a string annotation as ReadOnlyMemory<byte> (or byte[]).
    private static bool IsBinary(DataField f) => f.ClrType == typeof(byte[]) || f.ClrType == typeof(ReadOnlyMemory<byte>);
}

/// <summary>Rows buffered for one row group, copied out of Arrow batches (which are only lent to sinks).</summary>
internal sealed class ColumnBuffer(int features, bool sequence = false)
{
    private string[] _host = new string[1024], _entity = new string[1024];
    private string?[] _label = new string?[1024], _sample = new string?[1024];
    private long[] _start = new long[1024], _end = new long[1024], _count = new long[1024];
    private readonly float[][] _features = Enumerable.Range(0, features).Select(_ => new float[1024]).ToArray();
    private byte[][] _seq = sequence ? new byte[1024][] : [];
    private int[] _seqDropped = sequence ? new int[1024] : [];

    public int Rows { get; private set; }

    public void Append(RecordBatch batch, int first, int count)
    {
        Ensure(Rows + count);
        var host = (StringArray)batch.Column(0);
        var entity = (StringArray)batch.Column(1);
        var label = (StringArray)batch.Column(5);
        var sample = (StringArray)batch.Column(6);
        for (var i = 0; i < count; i++)
        {
            var r = first + i;
            _host[Rows + i] = host.GetString(r);
            _entity[Rows + i] = entity.GetString(r);
            _label[Rows + i] = label.IsNull(r) ? null : label.GetString(r);
            _sample[Rows + i] = sample.IsNull(r) ? null : sample.GetString(r);
        }
        ((Int64Array)batch.Column(2)).Values.Slice(first, count).CopyTo(_start.AsSpan(Rows));
        ((Int64Array)batch.Column(3)).Values.Slice(first, count).CopyTo(_end.AsSpan(Rows));
        ((Int64Array)batch.Column(4)).Values.Slice(first, count).CopyTo(_count.AsSpan(Rows));
        for (var c = 0; c < _features.Length; c++)
            ((FloatArray)batch.Column(7 + c)).Values.Slice(first, count).CopyTo(_features[c].AsSpan(Rows));
        if (sequence)
        {
            var seq = (BinaryArray)batch.Column(7 + _features.Length);
            for (var i = 0; i < count; i++) _seq[Rows + i] = seq.GetBytes(first + i).ToArray(); // Parquet.Net writes byte[] cells
            ((Int32Array)batch.Column(8 + _features.Length)).Values.Slice(first, count).CopyTo(_seqDropped.AsSpan(Rows));
        }
        Rows += count;
    }

    public async Task WriteTo(ParquetWriter writer, ParquetSchema schema)
    {
        var fields = schema.GetDataFields();
        using var rg = writer.CreateRowGroup();
        var n = Rows;
        await rg.WriteAsync(fields[0], new ArraySegment<string>(_host, 0, n), null).ConfigureAwait(false);
        await rg.WriteAsync(fields[1], new ArraySegment<string>(_entity, 0, n), null).ConfigureAwait(false);
        await rg.WriteAsync<long>(fields[2], _start.AsMemory(0, n)).ConfigureAwait(false);
        await rg.WriteAsync<long>(fields[3], _end.AsMemory(0, n)).ConfigureAwait(false);
        await rg.WriteAsync<long>(fields[4], _count.AsMemory(0, n)).ConfigureAwait(false);
        await rg.WriteAsync(fields[5], new ArraySegment<string>(_label!, 0, n), null).ConfigureAwait(false);
        await rg.WriteAsync(fields[6], new ArraySegment<string>(_sample!, 0, n), null).ConfigureAwait(false);
        for (var c = 0; c < _features.Length; c++)
            await rg.WriteAsync<float>(fields[7 + c], _features[c].AsMemory(0, n)).ConfigureAwait(false);
        if (sequence)
        {
            await rg.WriteAsync(fields[7 + _features.Length], new ArraySegment<byte[]>(_seq, 0, n), null).ConfigureAwait(false);
            await rg.WriteAsync<int>(fields[8 + _features.Length], _seqDropped.AsMemory(0, n)).ConfigureAwait(false);
        }
        rg.CompleteValidate();
    }

    public void Clear()
    {
        System.Array.Clear(_host, 0, Rows);
        System.Array.Clear(_entity, 0, Rows);
        System.Array.Clear(_label, 0, Rows);
        System.Array.Clear(_sample, 0, Rows);
        if (sequence) System.Array.Clear(_seq, 0, Rows);
        Rows = 0;
    }

    private void Ensure(int rows)
    {
        if (rows <= _start.Length) return;
        var cap = Math.Max(rows, _start.Length * 2);
        System.Array.Resize(ref _host, cap);
        System.Array.Resize(ref _entity, cap);
        System.Array.Resize(ref _label, cap);
        System.Array.Resize(ref _sample, cap);
        System.Array.Resize(ref _start, cap);
        System.Array.Resize(ref _end, cap);
        System.Array.Resize(ref _count, cap);
        for (var c = 0; c < _features.Length; c++) System.Array.Resize(ref _features[c], cap);
        if (sequence)
        {
            System.Array.Resize(ref _seq, cap);
            System.Array.Resize(ref _seqDropped, cap);
        }
    }
}
