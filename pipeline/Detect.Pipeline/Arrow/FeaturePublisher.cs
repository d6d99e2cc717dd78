using Apache.Arrow;
using Apache.Arrow.Ipc;
using Detect.Transport;

namespace Detect.Pipeline.Arrow;

/// <summary>
/// Publishes feature batches on the transport's `features` topic as Arrow IPC streams (the schema,
/// with its detect.family and detect.feature_schema metadata, and one record batch per message),
/// for consumers beside the pipeline's own scoring: other scorers, a data-lake loader, notebooks.
/// A batch larger than a message (<see cref="MessageFormat.MaxWholePayloadBytes"/>) goes in row
/// slices. Runs on the pipeline thread when windows close; never blocks (the publisher counts what
/// the carrier could not take).
/// </summary>
public sealed class FeaturePublisher : IFeatureSink
{
    private readonly RecordPublisher _publisher;
    private readonly MemoryStream _buffer = new();
    private long _batches, _messages, _rows, _refused;

    public FeaturePublisher(RecordPublisher publisher) => _publisher = publisher ?? throw new ArgumentNullException(nameof(publisher));

    public long Batches => Interlocked.Read(ref _batches);
    public long Messages => Interlocked.Read(ref _messages);
    public long Rows => Interlocked.Read(ref _rows);
    /// <summary>Rows the publisher refused (a single row larger than a message, which 470 features never are).</summary>
    public long Refused => Interlocked.Read(ref _refused);

    public void OnBatch(FeatureFamily family, RecordBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Length == 0) return;
        var rowsPerMessage = batch.Length;
        var offset = 0;
        while (offset < batch.Length)
        {
            var rows = Math.Min(rowsPerMessage, batch.Length - offset);
            var bytes = Serialise(batch, offset, rows);
            if (bytes.Length > MessageFormat.MaxWholePayloadBytes && rows > 1)
            {
                // Too big: slices sized from what this one weighed, with room for the schema's share.
                rowsPerMessage = Math.Max(1, (int)(rows * 0.9 * MessageFormat.MaxWholePayloadBytes / bytes.Length));
                continue;
            }
            if (_publisher.TryPublishWhole(MessageFamily.Features, bytes, rows))
            {
                Interlocked.Increment(ref _messages);
                Interlocked.Add(ref _rows, rows);
            }
            else Interlocked.Add(ref _refused, rows);
            offset += rows;
        }
        Interlocked.Increment(ref _batches);
    }

    private ReadOnlySpan<byte> Serialise(RecordBatch batch, int offset, int rows)
    {
        _buffer.SetLength(0);
        using (var slice = offset == 0 && rows == batch.Length ? null : batch.Slice(offset, rows))
        using (var writer = new ArrowStreamWriter(_buffer, batch.Schema, leaveOpen: true))
        {
            writer.WriteRecordBatch(slice ?? batch);
            writer.WriteEnd();
        }
        return _buffer.GetBuffer().AsSpan(0, (int)_buffer.Length);
    }

    /// <summary>The record batch of a `features` message (its schema carries the family and feature schema).</summary>
    public static RecordBatch Read(ReadOnlySpan<byte> payload)
    {
        using var reader = new ArrowStreamReader(new MemoryStream(payload.ToArray()));
        return reader.ReadNextRecordBatch() ?? throw new InvalidDataException("the features message holds no record batch");
    }
}
