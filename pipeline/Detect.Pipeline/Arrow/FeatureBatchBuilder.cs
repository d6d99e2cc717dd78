using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Apache.Arrow;

namespace Detect.Pipeline.Arrow;

/// <summary>
/// Builds one family's Arrow RecordBatches into column buffers it keeps and reuses: after warm-up a
/// batch costs no buffer allocation, only the small Arrow wrapper objects. The batch handed out by
/// <see cref="Build"/> views these buffers: it is valid until the next <see cref="Clear"/>
/// (a sink that keeps it calls <c>Clone()</c>).
/// </summary>
internal sealed class FeatureBatchBuilder
{
    private readonly FeatureSchema _schema;
    private readonly Utf8Column _host = new(), _entity = new(), _label = new(), _sample = new();
    private byte[] _start, _end, _count;
    private readonly byte[][] _features;
    private int _capacity;
    // Sequence columns (schemas with HasSequence): offsets into _seqData per row, and seq_dropped.
    private byte[] _seqData = [], _seqOffsets = [], _seqDropped = [];
    private int _seqLength;

    public FeatureBatchBuilder(FeatureSchema schema, int initialCapacity = 1024)
    {
        _schema = schema;
        _capacity = Math.Max(16, initialCapacity);
        _start = new byte[_capacity * 8];
        _end = new byte[_capacity * 8];
        _count = new byte[_capacity * 8];
        _features = new byte[schema.Features.Count][];
        for (var i = 0; i < _features.Length; i++) _features[i] = new byte[_capacity * 4];
        if (schema.HasSequence)
        {
            _seqData = new byte[64 * 1024];
            _seqOffsets = new byte[(_capacity + 1) * 4];
            _seqDropped = new byte[_capacity * 4];
        }
    }

    public int Rows { get; private set; }

    public FeatureSchema Schema => _schema;

    /// <summary>Starts a row with its key and label columns; returns its index for <see cref="Set"/>.</summary>
    public int AddRow(ReadOnlySpan<byte> host, ReadOnlySpan<byte> entity, long windowStartNs, long windowEndNs, long recordCount,
        byte[]? label, byte[]? sample)
    {
        if (Rows == _capacity) Grow();
        var row = Rows++;
        _host.Add(host);
        _entity.Add(entity);
        _label.Add(label);
        _sample.Add(sample);
        At<long>(_start, row) = windowStartNs;
        At<long>(_end, row) = windowEndNs;
        At<long>(_count, row) = recordCount;
        if (_schema.HasSequence) At<int>(_seqOffsets, row + 1) = _seqLength; // empty until the family appends calls
        return row;
    }

    /// <summary>Sets a feature of a row. Cells start at zero: a zero need not be written.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(int feature, int row, float value) => At<float>(_features[feature], row) = value;

    /// <summary>Sets features [first, first + values.Length) of a row.</summary>
    public void SetRange(int first, int row, ReadOnlySpan<float> values)
    {
        for (var i = 0; i < values.Length; i++) At<float>(_features[first + i], row) = values[i];
    }

    public float Get(int feature, int row) => At<float>(_features[feature], row);

    /// <summary>Appends calls to the sequence of the row being written (rows are written in order; see <see cref="EndSequence"/>).</summary>
    public void AppendSequence(ReadOnlySpan<ushort> calls)
    {
        var bytes = MemoryMarshal.AsBytes(calls); // little-endian on every platform .NET runs Detect on
        if (_seqLength + bytes.Length > _seqData.Length)
            System.Array.Resize(ref _seqData, Math.Max(_seqData.Length * 2, _seqLength + bytes.Length));
        bytes.CopyTo(_seqData.AsSpan(_seqLength));
        _seqLength += bytes.Length;
    }

    /// <summary>Ends the sequence of <paramref name="row"/> (the last row added) with its count of calls left out.</summary>
    public void EndSequence(int row, int dropped)
    {
        if (!_schema.HasSequence || row != Rows - 1) throw new InvalidOperationException("sequences are written row by row, for the row just added, in a schema with sequence columns");
        At<int>(_seqOffsets, row + 1) = _seqLength;
        At<int>(_seqDropped, row) = dropped;
    }

    public RecordBatch Build()
    {
        var n = Rows;
        var arrays = new IArrowArray[FeatureSchema.KeyColumns.Count + _features.Length + (_schema.HasSequence ? 2 : 0)];
        arrays[0] = _host.Build(n);
        arrays[1] = _entity.Build(n);
        arrays[2] = Int64(_start, n);
        arrays[3] = Int64(_end, n);
        arrays[4] = Int64(_count, n);
        arrays[5] = _label.Build(n);
        arrays[6] = _sample.Build(n);
        for (var i = 0; i < _features.Length; i++)
            arrays[7 + i] = new FloatArray(new ArrowBuffer(_features[i].AsMemory(0, n * 4)), ArrowBuffer.Empty, n, 0, 0);
        if (_schema.HasSequence)
        {
            var s = 7 + _features.Length;
            arrays[s] = new BinaryArray(Apache.Arrow.Types.BinaryType.Default, n, new ArrowBuffer(_seqOffsets.AsMemory(0, (n + 1) * 4)),
                new ArrowBuffer(_seqData.AsMemory(0, _seqLength)), ArrowBuffer.Empty, 0, 0);
            arrays[s + 1] = new Int32Array(new ArrowBuffer(_seqDropped.AsMemory(0, n * 4)), ArrowBuffer.Empty, n, 0, 0);
        }
        return new RecordBatch(_schema.Arrow, arrays, n);
    }

    /// <summary>Empties the builder. Feature cells of the used rows are zeroed here, in bulk, so that rows
    /// need only write their non-zero features (most n-gram buckets of a window are empty).</summary>
    public void Clear()
    {
        var bytes = Rows * 4;
        foreach (var column in _features) System.Array.Clear(column, 0, bytes);
        if (_schema.HasSequence)
        {
            System.Array.Clear(_seqDropped, 0, bytes);
            _seqLength = 0;
        }
        Rows = 0;
        _host.Clear();
        _entity.Clear();
        _label.Clear();
        _sample.Clear();
    }

    private static Int64Array Int64(byte[] data, int n) => new(new ArrowBuffer(data.AsMemory(0, n * 8)), ArrowBuffer.Empty, n, 0, 0);

    private void Grow()
    {
        var cap = _capacity * 2;
        System.Array.Resize(ref _start, cap * 8);
        System.Array.Resize(ref _end, cap * 8);
        System.Array.Resize(ref _count, cap * 8);
        for (var i = 0; i < _features.Length; i++) System.Array.Resize(ref _features[i], cap * 4);
        if (_schema.HasSequence)
        {
            System.Array.Resize(ref _seqOffsets, (cap + 1) * 4);
            System.Array.Resize(ref _seqDropped, cap * 4);
        }
        _capacity = cap;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ref T At<T>(byte[] buffer, int index) where T : unmanaged
    {
        if ((uint)((index + 1) * Unsafe.SizeOf<T>()) > (uint)buffer.Length) Throw();
        return ref Unsafe.Add(ref Unsafe.As<byte, T>(ref MemoryMarshal.GetArrayDataReference(buffer)), index);
    }

    private static void Throw() => throw new IndexOutOfRangeException();

    /// <summary>A UTF-8 column with offsets and a validity bitmap, buffers reused.</summary>
    private sealed class Utf8Column
    {
        private byte[] _data = new byte[4096];
        private byte[] _offsets = new byte[4 * 1025];
        private byte[] _validity = new byte[128];
        private int _rows, _dataLength, _nulls;

        public void Add(ReadOnlySpan<byte> value)
        {
            Ensure(value.Length);
            value.CopyTo(_data.AsSpan(_dataLength));
            _dataLength += value.Length;
            _validity[_rows >> 3] |= (byte)(1 << (_rows & 7));
            _rows++;
            At<int>(_offsets, _rows) = _dataLength;
        }

        public void Add(byte[]? value)
        {
            if (value != null)
            {
                Add(value.AsSpan());
                return;
            }
            Ensure(0);
            _validity[_rows >> 3] &= (byte)~(1 << (_rows & 7));
            _nulls++;
            _rows++;
            At<int>(_offsets, _rows) = _dataLength;
        }

        private void Ensure(int bytes)
        {
            if (_dataLength + bytes > _data.Length) System.Array.Resize(ref _data, Math.Max(_data.Length * 2, _dataLength + bytes));
            if ((_rows + 2) * 4 > _offsets.Length) System.Array.Resize(ref _offsets, _offsets.Length * 2);
            if ((_rows >> 3) + 1 > _validity.Length) System.Array.Resize(ref _validity, _validity.Length * 2);
        }

        public StringArray Build(int n)
        {
            var validity = _nulls == 0 ? ArrowBuffer.Empty : new ArrowBuffer(_validity.AsMemory(0, (n + 7) >> 3));
            return new StringArray(n, new ArrowBuffer(_offsets.AsMemory(0, (n + 1) * 4)), new ArrowBuffer(_data.AsMemory(0, _dataLength)),
                validity, _nulls, 0);
        }

        public void Clear()
        {
            System.Array.Clear(_validity, 0, Math.Min(_validity.Length, (_rows >> 3) + 1));
            _rows = 0;
            _dataLength = 0;
            _nulls = 0;
            At<int>(_offsets, 0) = 0;
        }
    }
}

/// <summary>Receives feature batches. The batch is valid only during the call: Clone() it to keep it.</summary>
public interface IFeatureSink
{
    void OnBatch(FeatureFamily family, RecordBatch batch);
}
