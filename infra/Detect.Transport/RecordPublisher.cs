using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using Detect.Records;

namespace Detect.Transport;

/// <summary>A sealed message handed to a carrier. The carrier owns <see cref="Buffer"/> (rented from ArrayPool.Shared) from then on.</summary>
internal readonly record struct OutboundMessage(byte[] Buffer, int Length, MessageFamily Family, ulong HostId, ulong Sequence, int RecordCount);

internal enum SendResult
{
    /// <summary>Stored: delivered.</summary>
    Delivered,
    /// <summary>Queued: a delivery report will follow through IDeliveryListener.</summary>
    Accepted,
    /// <summary>No room (bounded memory) or carrier unavailable: the caller counts it dropped.</summary>
    Full,
}

/// <summary>Told of delivery outcomes that arrive after TrySend returned Accepted.</summary>
internal interface IDeliveryListener
{
    void Delivered(MessageFamily family, int recordCount, int bytes);
    void Failed(MessageFamily family, int recordCount, bool possiblyStored, string error);
    void ProducerRestarted(string reason);
}

/// <summary>The carrier side of a publisher.</summary>
internal interface IMessageSink : IDisposable
{
    int DefaultMaxMessageBytes { get; }

    /// <summary>Whether messages carry a CRC unless PublisherOptions.Crc says otherwise.</summary>
    bool DefaultCrc { get; }

    /// <summary>Never blocks. Takes ownership of the message's buffer whatever the result.</summary>
    SendResult TrySend(in OutboundMessage message);

    /// <summary>Waits until every accepted message has a delivery report, or the timeout.</summary>
    Task FlushAsync(TimeSpan timeout, CancellationToken cancellationToken);
}

/// <summary>
/// Batches one host's records into messages per family and hands them to a carrier. Appending
/// copies the record into the family's open batch and never blocks on the carrier: a batch the
/// carrier cannot take is dropped and counted (the kernel side must never stall). Sequence
/// numbers are given at sealing, so a dropped message leaves a hole that consumers see and
/// measure exactly. Thread-safe.
/// </summary>
public sealed class RecordPublisher : IDisposable, IDeliveryListener
{
    private readonly IMessageSink _sink;
    private readonly PublisherOptions _options;
    private readonly OpenBatch[] _batches;
    private readonly int _maxMessageBytes;
    private readonly bool _crc;
    private readonly long _lingerTicks;
    private readonly Timer _lingerTimer;
    private readonly Action<string> _log;
    private int _disposed;

    // Counters: written under a batch lock or from delivery callbacks, read for snapshots.
    private long _recordsRejected;
    private long _messagesDelivered, _recordsDelivered, _bytesDelivered;
    private long _messagesDroppedFull, _recordsDroppedFull, _messagesDroppedFailed, _recordsDroppedFailed;
    private long _recordsUncertain, _producerRestarts, _lastDropLogTicks;
    private string? _lastError;

    internal RecordPublisher(Func<IDeliveryListener, IMessageSink> sinkFactory, PublisherOptions options)
    {
        _options = options;
        _log = options.Log ?? (m => Console.Error.WriteLine("transport: " + m));
        _sink = sinkFactory(this);
        _maxMessageBytes = options.MaxMessageBytes > 0 ? options.MaxMessageBytes : _sink.DefaultMaxMessageBytes;
        _crc = options.Crc ?? _sink.DefaultCrc;
        if (_maxMessageBytes < MessageHeader.Size + SyscallSummaryRecord.Size)
            throw new ArgumentException($"MaxMessageBytes {_maxMessageBytes} cannot hold the largest record", nameof(options));
        Session = (uint)RandomNumberGenerator.GetInt32(1, int.MaxValue);
        _batches = new OpenBatch[MessageFamilies.Count];
        for (var i = 0; i < _batches.Length; i++) _batches[i] = new OpenBatch((MessageFamily)i);
        _lingerTicks = (long)(options.Linger.TotalSeconds * Stopwatch.Frequency);
        var period = TimeSpan.FromMilliseconds(Math.Clamp(options.Linger.TotalMilliseconds / 2, 1, 1000));
        _lingerTimer = new Timer(_ => SealLingering(), null, period, period);
    }

    public ulong HostId => _options.HostId;

    /// <summary>This publisher's session id (random per start), in every message it sends.</summary>
    public uint Session { get; }

    /// <summary>Largest message this publisher builds.</summary>
    public int MaxMessageBytes => _maxMessageBytes;

    /// <summary>
    /// Appends one record (a whole record, as RecordReader accepts it; of <paramref name="family"/>).
    /// Returns false when the record is refused (malformed, wrong family): counted in RecordsRejected.
    /// A record accepted here may still be dropped later when the carrier is full: see Stats.
    /// </summary>
    public bool TryAppend(MessageFamily family, ReadOnlySpan<byte> record)
    {
        if (!CheckRecord(family, record))
        {
            Interlocked.Increment(ref _recordsRejected);
            return false;
        }
        var batch = _batches[(int)family];
        using (batch.Enter())
        {
            if (batch.Length + record.Length > _maxMessageBytes) Seal(batch);
            if (batch.Buffer == null) Open(batch);
            record.CopyTo(batch.Buffer.AsSpan(batch.Length));
            batch.Length += record.Length;
            batch.Count++;
            batch.Appended++;
        }
        return true;
    }

    /// <summary>
    /// Sends one whole payload as one message of a family that carries whole payloads (Features:
    /// one Arrow IPC stream of <paramref name="count"/> rows), in that family's stream (sequence,
    /// first record), never blocking. False when refused (another family, no rows, larger than
    /// <see cref="MessageFormat.MaxWholePayloadBytes"/>, not an Arrow IPC stream): the rows are
    /// counted in RecordsRejected. Like records, a message the carrier cannot take is dropped and counted.
    /// </summary>
    public bool TryPublishWhole(MessageFamily family, ReadOnlySpan<byte> payload, int count)
    {
        if (!MessageFamilies.CarriesWholePayload(family) || count <= 0 || payload.Length > MessageFormat.MaxWholePayloadBytes
            || !MessageFormat.CheckArrowStream(payload, out _))
        {
            Interlocked.Add(ref _recordsRejected, Math.Max(1, count));
            return false;
        }
        var batch = _batches[(int)family];
        using (batch.Enter())
        {
            batch.Buffer = ArrayPool<byte>.Shared.Rent(MessageHeader.Size + payload.Length);
            payload.CopyTo(batch.Buffer.AsSpan(MessageHeader.Size));
            batch.Length = MessageHeader.Size + payload.Length;
            batch.Count = count;
            batch.Appended += count;
            batch.OpenedTicks = Stopwatch.GetTimestamp();
            Seal(batch);
        }
        return true;
    }

    /// <summary>
    /// Appends records laid back to back (for example a capture file's body). Stops at the first
    /// refused record and counts the rest of the span as rejected. Returns the records appended.
    /// </summary>
    public int TryAppendRecords(MessageFamily family, ReadOnlySpan<byte> records)
    {
        var appended = 0;
        var batch = _batches[(int)family];
        using (batch.Enter())
        {
            while (records.Length > 0)
            {
                var length = RecordLength(family, records);
                if (length == 0)
                {
                    Interlocked.Increment(ref _recordsRejected);
                    break;
                }
                if (batch.Length + length > _maxMessageBytes) Seal(batch);
                if (batch.Buffer == null) Open(batch);
                records[..length].CopyTo(batch.Buffer.AsSpan(batch.Length));
                batch.Length += length;
                batch.Count++;
                appended++;
                records = records[length..];
            }
            batch.Appended += appended;
        }
        return appended;
    }

    /// <summary>Seals every open batch now and hands it to the carrier (without waiting for delivery).</summary>
    public void Flush()
    {
        foreach (var batch in _batches)
        {
            using (batch.Enter()) Seal(batch);
        }
    }

    /// <summary>Seals every open batch and waits until the carrier reported on every message, or the timeout. True when nothing is left in flight.</summary>
    public async Task<bool> FlushAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        Flush();
        await _sink.FlushAsync(timeout, cancellationToken).ConfigureAwait(false);
        return Stats.RecordsInFlight == 0;
    }

    public PublisherStats Stats
    {
        get
        {
            long appended = 0, messagesSealed = 0, recordsSealed = 0;
            foreach (var batch in _batches)
            {
                using (batch.Enter())
                {
                    appended += batch.Appended;
                    messagesSealed += batch.MessagesSealed;
                    recordsSealed += (long)batch.RecordsSealed;
                }
            }
            return Snapshot(appended, messagesSealed, recordsSealed);
        }
    }

    private PublisherStats Snapshot(long appended, long messagesSealed, long recordsSealed) => new()
    {
        RecordsAppended = appended,
        RecordsRejected = Interlocked.Read(ref _recordsRejected),
        MessagesSealed = messagesSealed,
        RecordsSealed = recordsSealed,
        MessagesDelivered = Interlocked.Read(ref _messagesDelivered),
        RecordsDelivered = Interlocked.Read(ref _recordsDelivered),
        BytesDelivered = Interlocked.Read(ref _bytesDelivered),
        MessagesDroppedFull = Interlocked.Read(ref _messagesDroppedFull),
        RecordsDroppedFull = Interlocked.Read(ref _recordsDroppedFull),
        MessagesDroppedFailed = Interlocked.Read(ref _messagesDroppedFailed),
        RecordsDroppedFailed = Interlocked.Read(ref _recordsDroppedFailed),
        RecordsUncertain = Interlocked.Read(ref _recordsUncertain),
        ProducerRestarts = Interlocked.Read(ref _producerRestarts),
        LastError = Volatile.Read(ref _lastError),
    };

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _lingerTimer.Dispose();
        try
        {
            Flush();
            _sink.FlushAsync(_options.CloseTimeout, CancellationToken.None).GetAwaiter().GetResult();
        }
        finally
        {
            _sink.Dispose();
            // No report will come for what is still in flight now: it did not leave this host.
            var left = Stats.RecordsInFlight;
            if (left > 0)
            {
                Interlocked.Add(ref _recordsDroppedFailed, left);
                _log($"closed with {left} records undelivered (counted as dropped)");
            }
            foreach (var batch in _batches)
            {
                using (batch.Enter())
                {
                    if (batch.Buffer != null) ArrayPool<byte>.Shared.Return(batch.Buffer);
                    batch.Buffer = null;
                }
            }
        }
    }

    private void Open(OpenBatch batch)
    {
        batch.Buffer = ArrayPool<byte>.Shared.Rent(_maxMessageBytes);
        batch.Length = MessageHeader.Size;
        batch.Count = 0;
        batch.OpenedTicks = Stopwatch.GetTimestamp();
    }

    // Under the batch lock. Sequence and first record are given here, so the stream's numbering
    // matches the order messages reach the carrier, and a dropped message is a visible hole.
    private void Seal(OpenBatch batch)
    {
        if (batch.Buffer == null || batch.Count == 0) return;
        var buffer = batch.Buffer;
        var count = batch.Count;
        var length = batch.Length;
        batch.Buffer = null;
        batch.Count = 0;
        batch.Length = 0;
        var sequence = ++batch.Sequence;
        MessageFormat.WriteHeader(buffer, batch.Family, _options.HostId, Session, sequence, batch.RecordsSealed, count,
            length - MessageHeader.Size, UnixNowNs(), _crc, _options.BootToRealtimeNs ?? KernelClock.BootToRealtimeOffsetNs());
        batch.RecordsSealed += (ulong)count;
        batch.MessagesSealed++;

        SendResult result;
        try
        {
            result = _sink.TrySend(new OutboundMessage(buffer, length, batch.Family, _options.HostId, sequence, count));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A carrier that throws is a carrier that did not take the message: count, never crash the caller.
            Volatile.Write(ref _lastError, e.Message);
            result = SendResult.Full;
        }
        switch (result)
        {
            case SendResult.Delivered:
                Interlocked.Increment(ref _messagesDelivered);
                Interlocked.Add(ref _recordsDelivered, count);
                Interlocked.Add(ref _bytesDelivered, length);
                break;
            case SendResult.Accepted:
                break;
            default:
                Interlocked.Increment(ref _messagesDroppedFull);
                Interlocked.Add(ref _recordsDroppedFull, count);
                LogDrop($"carrier full: dropped {count} {MessageFamilies.Name(batch.Family)} records (message {sequence})");
                break;
        }
    }

    private void SealLingering()
    {
        var now = Stopwatch.GetTimestamp();
        foreach (var batch in _batches)
        {
            if (Volatile.Read(ref batch.Count) == 0 || now - Volatile.Read(ref batch.OpenedTicks) < _lingerTicks) continue;
            using (batch.Enter())
            {
                if (batch.Count > 0 && now - batch.OpenedTicks >= _lingerTicks) Seal(batch);
            }
        }
    }

    private static bool CheckRecord(MessageFamily family, ReadOnlySpan<byte> record) =>
        record.Length > 0 && RecordLength(family, record) == record.Length;

    // The length of the record at the start of `records` if it may be published in `family`, else 0.
    private static int RecordLength(MessageFamily family, ReadOnlySpan<byte> records)
    {
        if (MessageFamilies.CarriesSensorRecords(family)) return MessageFormat.SensorRecordLength(records, family);
        if (family is MessageFamily.None or MessageFamily.DeadLetters || !MessageFamilies.IsKnown(family) || MessageFamilies.CarriesWholePayload(family)) return 0;
        if (records.Length < RecordHeader.Size || (records[0] | (records[1] << 8)) != RecordFormat.Magic) return 0;
        var framed = records[4] | (records[5] << 8);
        return framed >= RecordHeader.Size && framed % 8 == 0 && framed <= records.Length ? framed : 0;
    }

    private void LogDrop(string message)
    {
        // At most one line a second: a broker outage must not flood the log.
        var now = Stopwatch.GetTimestamp();
        var last = Interlocked.Read(ref _lastDropLogTicks);
        if (now - last < Stopwatch.Frequency || Interlocked.CompareExchange(ref _lastDropLogTicks, now, last) != last) return;
        var dropped = Interlocked.Read(ref _recordsDroppedFull) + Interlocked.Read(ref _recordsDroppedFailed);
        _log($"{message}; {dropped} records dropped so far");
    }

    internal static long UnixNowNs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) * 100;

    void IDeliveryListener.Delivered(MessageFamily family, int recordCount, int bytes)
    {
        Interlocked.Increment(ref _messagesDelivered);
        Interlocked.Add(ref _recordsDelivered, recordCount);
        Interlocked.Add(ref _bytesDelivered, bytes);
    }

    void IDeliveryListener.Failed(MessageFamily family, int recordCount, bool possiblyStored, string error)
    {
        Volatile.Write(ref _lastError, error);
        if (possiblyStored)
        {
            Interlocked.Add(ref _recordsUncertain, recordCount);
        }
        else
        {
            Interlocked.Increment(ref _messagesDroppedFailed);
            Interlocked.Add(ref _recordsDroppedFailed, recordCount);
        }
        LogDrop($"delivery failed ({error}): {recordCount} {MessageFamilies.Name(family)} records{(possiblyStored ? " possibly stored" : " dropped")}");
    }

    void IDeliveryListener.ProducerRestarted(string reason)
    {
        Interlocked.Increment(ref _producerRestarts);
        Volatile.Write(ref _lastError, reason);
        _log($"producer rebuilt after a fatal error: {reason}");
    }

    private sealed class OpenBatch(MessageFamily family)
    {
        public readonly MessageFamily Family = family;
        private int _busy;

        // A spin lock: the owner holds it for a copy of one record (or one seal); a CAS and a
        // store are cheaper than Monitor or Lock on this path, and contention (the linger timer,
        // a second draining thread) is rare and short.
        public Scope Enter()
        {
            if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0) Contended();
            return new Scope(this);
        }

        private void Contended()
        {
            var spinner = new SpinWait();
            while (Interlocked.CompareExchange(ref _busy, 1, 0) != 0) spinner.SpinOnce();
        }

        public readonly ref struct Scope(OpenBatch batch)
        {
            public void Dispose() => Volatile.Write(ref batch._busy, 0);
        }
        public byte[]? Buffer;
        public int Length;
        public int Count;
        public long OpenedTicks;
        public ulong Sequence;
        public ulong RecordsSealed;
        public long MessagesSealed;
        public long Appended;
    }
}
