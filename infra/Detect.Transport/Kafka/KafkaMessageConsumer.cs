using System.Buffers;
using System.Globalization;
using System.Threading.Channels;
using Confluent.Kafka;

namespace Detect.Transport.Kafka;

/// <summary>
/// A member of a Kafka consumer group. A poll thread reads, validates (refused messages go to
/// the dead-letters topic), checks stream sequences, and hands messages to the caller through a
/// bounded queue. Offsets are committed only up to what the caller committed (at-least-once),
/// every CommitInterval, when partitions are revoked, and on Dispose. Offsets that jump while a
/// partition is held, or past the committed offset at assignment, are messages the broker no
/// longer kept ("offset out of range", reset to the earliest): counted in MessagesLostToRetention.
/// </summary>
public sealed class KafkaMessageConsumer : IMessageConsumer
{
    private readonly KafkaTransport _transport;
    private readonly ConsumerOptions _options;
    private readonly ConsumerCounters _counters = new();
    private readonly MessageGate _gate;
    private readonly Action<string> _log;
    private readonly IConsumer<Ignore, PooledBytes> _consumer;
    private readonly Channel<InboundMessage> _queue;
    private readonly Thread _pollThread;
    private readonly object _state = new();
    private readonly Dictionary<(string Topic, int Partition), PartitionState> _partitions = [];
    private readonly Lazy<IProducer<byte[]?, byte[]>> _deadLetters;
    private readonly string _deadLetterTopic;
    private volatile bool _stopping;
    private bool _abandoned;
    private int _generation;
    private int _disposed;

    internal KafkaMessageConsumer(KafkaTransport transport, ConsumerOptions options)
    {
        if (options.Families.Count == 0) throw new ArgumentException("no families to read", nameof(options));
        _transport = transport;
        _options = options;
        _log = transport.Log(options.Log);
        _gate = new MessageGate(options, _counters, _log);
        _queue = Channel.CreateBounded<InboundMessage>(new BoundedChannelOptions(Math.Max(1, options.MaxBufferedMessages))
        {
            SingleReader = true,
            SingleWriter = true,
        });
        _deadLetterTopic = MessageFamilies.Topic(MessageFamily.DeadLetters, transport.TopicPrefix);
        _deadLetters = new(() => transport.CreateRawProducer($"detect-dead-letters-{options.GroupId}"));
        var sessionMs = (int)options.SessionTimeout.TotalMilliseconds;
        var config = transport.BaseConfig(new Dictionary<string, string>
        {
            ["group.id"] = options.GroupId,
            ["client.id"] = $"detect-consumer-{options.GroupId}",
            ["enable.auto.commit"] = "false",
            ["enable.auto.offset.store"] = "false",
            ["auto.offset.reset"] = "earliest",
            ["session.timeout.ms"] = sessionMs.ToString(CultureInfo.InvariantCulture),
            ["heartbeat.interval.ms"] = Math.Max(100, sessionMs / 5).ToString(CultureInfo.InvariantCulture),
            ["queued.max.messages.kbytes"] = "16384",
            ["fetch.wait.max.ms"] = "50",
            ["enable.partition.eof"] = "false",
            ["allow.auto.create.topics"] = "false",
        });
        _consumer = new ConsumerBuilder<Ignore, PooledBytes>(config)
            .SetValueDeserializer(PooledBytes.Deserializer)
            .SetPartitionsAssignedHandler((_, partitions) => OnAssigned(partitions))
            .SetPartitionsRevokedHandler((_, partitions) => OnRevoked(partitions.Select(p => p.TopicPartition), commit: true))
            .SetPartitionsLostHandler((_, partitions) => OnRevoked(partitions.Select(p => p.TopicPartition), commit: false))
            .SetErrorHandler((_, e) => OnError(e))
            .SetLogHandler((_, m) => { if (m.Level <= SyslogLevel.Error) _log($"kafka consumer: {m.Message}"); })
            .Build();
        _consumer.Subscribe(options.Families.Select(f => MessageFamilies.Topic(f, transport.TopicPrefix)).Distinct());
        _pollThread = new Thread(PollLoop) { IsBackground = true, Name = $"detect-consumer-{options.GroupId}" };
        _pollThread.Start();
    }

    public ConsumerStats Stats => _counters.Snapshot();

    public IReadOnlyDictionary<ulong, long> LossByHost()
    {
        lock (_state) return _gate.Streams.LossByHost();
    }

    public IReadOnlyList<string> Assignment
    {
        get
        {
            lock (_state) return _partitions.Keys.OrderBy(k => k.Topic, StringComparer.Ordinal).ThenBy(k => k.Partition).Select(k => $"{k.Topic}[{k.Partition}]").ToArray();
        }
    }

    public async ValueTask<InboundMessage> ReceiveAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            var message = await _queue.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            if (IsCurrent(message)) return message;
            message.Dispose();
        }
    }

    public bool TryReceive(out InboundMessage? message)
    {
        while (_queue.Reader.TryRead(out message))
        {
            if (IsCurrent(message)) return true;
            message.Dispose();
        }
        message = null;
        return false;
    }

    // A message read before its partition was revoked belongs to the partition's new owner now.
    private bool IsCurrent(InboundMessage message)
    {
        lock (_state)
            return _partitions.TryGetValue((message.Topic, message.Partition), out var p) && p.Generation == message.Generation;
    }

    public void Commit(InboundMessage message)
    {
        if (!ReferenceEquals(message.Owner, this)) throw new ArgumentException("the message was received by another consumer", nameof(message));
        lock (_state)
        {
            if (!_partitions.TryGetValue((message.Topic, message.Partition), out var p) || p.Generation != message.Generation) return;
            if (p.Pending.Commit(message.Offset)) Interlocked.Increment(ref _counters.MessagesCommitted);
        }
    }

    private long _nextCommit;

    // Commits what the caller processed, when CommitInterval has passed. Poll thread only.
    private void CommitIfDue()
    {
        if (Environment.TickCount64 < _nextCommit) return;
        CommitProcessed(null);
        _nextCommit = Environment.TickCount64 + (long)_options.CommitInterval.TotalMilliseconds;
    }

    private void PollLoop()
    {
        _nextCommit = Environment.TickCount64 + (long)_options.CommitInterval.TotalMilliseconds;
        while (!_stopping)
        {
            try
            {
                var result = _consumer.Consume(TimeSpan.FromMilliseconds(100));
                if (result?.Message != null) Handle(result);
            }
            catch (ConsumeException e)
            {
                HandleConsumeError(e);
            }
            catch (KafkaException e)
            {
                Volatile.Write(ref _counters.LastError, e.Error.Reason);
                _log($"kafka consumer: {e.Error.Reason}");
                if (e.Error.IsFatal) Thread.Sleep(1000);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // The loop must survive anything a message or the client throws.
                Volatile.Write(ref _counters.LastError, e.Message);
                _log($"consumer loop: {e}");
                Thread.Sleep(100);
            }
            CommitIfDue();
        }
    }

    private void Handle(ConsumeResult<Ignore, PooledBytes> result)
    {
        var value = result.Message.Value;
        var topic = result.Topic;
        var partition = result.Partition.Value;
        var offset = result.Offset.Value;
        PartitionState? state;
        lock (_state)
        {
            if (!_partitions.TryGetValue((topic, partition), out state))
            {
                value.Return();
                return;
            }
            // Offsets of a plain topic are contiguous: a jump is what retention deleted before we read it.
            var expected = state.LastOffset + 1;
            if (state.LastOffset >= -1 && expected >= 0 && offset > expected)
            {
                Interlocked.Add(ref _counters.MessagesLostToRetention, offset - expected);
                _log($"{topic}[{partition}]: offsets {expected}..{offset - 1} were no longer on the broker (offset out of range): {offset - expected} messages lost");
            }
            state.LastOffset = offset;
        }
        var bytes = value.Span;
        var key = (FamilyIndex(topic) << 16) | partition;
        MessageGate.Outcome outcome;
        MessageHeader header;
        MessageError error;
        string? detail;
        lock (_state) outcome = _gate.Inspect(bytes, topic, partition, key, out header, out error, out detail);
        switch (outcome)
        {
            case MessageGate.Outcome.Refuse:
                DeadLetter(bytes, error, detail, topic, partition, offset);
                value.Return();
                lock (_state) state.Pending.DoneInternally(offset);
                return;
            case MessageGate.Outcome.Skip:
                value.Return();
                lock (_state) state.Pending.DoneInternally(offset);
                return;
        }
        lock (_state) state.Pending.HandedOut(offset);
        _gate.CountHandedOut(header, value.Length);
        var message = new InboundMessage(value.Buffer!, value.Length, header, topic, partition, offset,
            outcome == MessageGate.Outcome.HandOutDuplicate, PooledBytes.ReturnBuffer)
        { Owner = this, Generation = state.Generation };
        // Bounded: a slow caller holds the poll thread here (backpressure to the broker), never memory.
        while (!_queue.Writer.TryWrite(message))
        {
            if (_stopping)
            {
                message.Dispose();
                return;
            }
            _queue.Writer.WaitToWriteAsync().AsTask().Wait(100);
            // The caller goes on committing while this thread waits for room.
            CommitIfDue();
        }
    }

    private int FamilyIndex(string topic)
    {
        foreach (var f in _options.Families)
        {
            if (topic == MessageFamilies.Topic(f, _transport.TopicPrefix)) return (int)f;
        }
        return 0;
    }

    private void HandleConsumeError(ConsumeException e)
    {
        Volatile.Write(ref _counters.LastError, e.Error.Reason);
        var record = e.ConsumerRecord;
        if (record?.Message?.Value is { } raw && record.Offset.Value >= 0)
        {
            // A message the client could not read (corrupt batch, bad compression): dead-letter what there is.
            var topic = record.Topic;
            var partition = record.Partition.Value;
            DeadLetter(raw, MessageError.CarrierError, e.Error.Reason, topic, partition, record.Offset.Value);
            lock (_state)
            {
                if (_partitions.TryGetValue((topic, partition), out var state))
                {
                    state.LastOffset = record.Offset.Value;
                    state.Pending.DoneInternally(record.Offset.Value);
                }
            }
            return;
        }
        _log($"kafka consumer: {e.Error.Reason}");
    }

    private void DeadLetter(ReadOnlySpan<byte> refused, MessageError error, string? detail, string topic, int partition, long offset)
    {
        var published = false;
        try
        {
            var letter = _gate.BuildDeadLetter(refused, error, detail, topic, partition, offset);
            _deadLetters.Value.Produce(_deadLetterTopic, new Message<byte[]?, byte[]> { Key = KafkaTransport.KeyOf(0), Value = letter }, report =>
            {
                // The letter itself could not be stored (no such topic, no ACL): count it, say why.
                if (!report.Error.IsError) return;
                Interlocked.Increment(ref _counters.DeadLetterFailures);
                Volatile.Write(ref _counters.LastError, $"dead letter not stored: {report.Error.Reason}");
                _log($"a dead letter for {topic}[{partition}]@{offset} could not be stored in {_deadLetterTopic}: {report.Error.Reason}");
            });
            published = true;
        }
        catch (KafkaException e)
        {
            Volatile.Write(ref _counters.LastError, e.Error.Reason);
        }
        _gate.CountDeadLetter(error, detail, topic, partition, offset, published);
    }

    private void OnError(Error error)
    {
        Volatile.Write(ref _counters.LastError, error.Reason);
        if (error.IsFatal || error.Code != ErrorCode.Local_Transport) _log($"kafka consumer: {error.Reason}");
    }

    private void OnAssigned(List<TopicPartition> partitions)
    {
        // Where the group left off, so a first offset beyond it is counted as lost to retention.
        var committed = new Dictionary<TopicPartition, long>();
        try
        {
            foreach (var tpo in _consumer.Committed(partitions, TimeSpan.FromSeconds(5)))
                committed[tpo.TopicPartition] = tpo.Offset.Value;
        }
        catch (KafkaException e)
        {
            _log($"reading committed offsets: {e.Error.Reason}");
        }
        lock (_state)
        {
            var generation = ++_generation;
            foreach (var tp in partitions)
            {
                // LastOffset -2: unknown (no committed offset: start at the earliest, count nothing).
                var last = committed.TryGetValue(tp, out var c) && c >= 0 ? c - 1 : -2;
                _partitions[(tp.Topic, tp.Partition.Value)] = new PartitionState(generation) { LastOffset = last };
            }
        }
        Interlocked.Increment(ref _counters.Rebalances);
        _log($"group {_options.GroupId}: assigned {string.Join(", ", partitions.Select(p => $"{p.Topic}[{p.Partition.Value}]"))}");
    }

    private void OnRevoked(IEnumerable<TopicPartition> partitions, bool commit)
    {
        var list = partitions.ToList();
        if (commit) CommitProcessed(list);
        lock (_state)
        {
            foreach (var tp in list) _partitions.Remove((tp.Topic, tp.Partition.Value));
            var gone = list.Select(tp => (FamilyIndex(tp.Topic) << 16) | tp.Partition.Value).ToHashSet();
            _gate.Streams.ForgetPartitions(gone.Contains);
        }
        Interlocked.Increment(ref _counters.Rebalances);
    }

    // On the poll thread (or in a rebalance callback, which runs on it).
    private void CommitProcessed(List<TopicPartition>? only)
    {
        if (_abandoned) return;
        var offsets = new List<TopicPartitionOffset>();
        lock (_state)
        {
            foreach (var ((topic, partition), state) in _partitions)
            {
                if (only != null && !only.Contains(new TopicPartition(topic, partition))) continue;
                var committable = state.Pending.Committable;
                if (committable > state.Committed)
                {
                    offsets.Add(new TopicPartitionOffset(topic, partition, committable));
                    state.Committed = committable;
                }
            }
        }
        if (offsets.Count == 0) return;
        try
        {
            _consumer.Commit(offsets);
        }
        catch (KafkaException e)
        {
            Interlocked.Increment(ref _counters.CommitFailures);
            Volatile.Write(ref _counters.LastError, e.Error.Reason);
            _log($"commit failed ({e.Error.Reason}); those messages may be delivered again");
        }
    }

    /// <summary>
    /// Stops as if the process were killed: no last commit, no leaving the group (the group
    /// notices after the session timeout). For tests of what a crash loses.
    /// </summary>
    internal void Abandon()
    {
        _abandoned = true;
        Dispose();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stopping = true;
        _pollThread.Join();
        try
        {
            if (!_abandoned)
            {
                CommitProcessed(null);
                _consumer.Close();
            }
        }
        catch (KafkaException e)
        {
            _log($"closing the consumer: {e.Error.Reason}");
        }
        finally
        {
            _consumer.Dispose();
            if (_deadLetters.IsValueCreated)
            {
                _deadLetters.Value.Flush(TimeSpan.FromSeconds(2));
                _deadLetters.Value.Dispose();
            }
            _queue.Writer.TryComplete();
            while (_queue.Reader.TryRead(out var left)) left.Dispose();
        }
    }

    private sealed class PartitionState(int generation)
    {
        public readonly int Generation = generation;
        public readonly PendingOffsets Pending = new();
        public long LastOffset;
        public long Committed = -1;
    }

    /// <summary>A message value copied out of librdkafka into a pooled array (one copy, no per-message array allocation).</summary>
    private readonly struct PooledBytes(byte[]? buffer, int length)
    {
        public readonly byte[]? Buffer = buffer;
        public readonly int Length = length;
        public ReadOnlySpan<byte> Span => Buffer.AsSpan(0, Length);

        public void Return()
        {
            if (Buffer != null) ReturnBuffer(Buffer);
        }

        public static void ReturnBuffer(byte[] buffer) => ArrayPool<byte>.Shared.Return(buffer);

        public static readonly IDeserializer<PooledBytes> Deserializer = new PooledDeserializer();

        private sealed class PooledDeserializer : IDeserializer<PooledBytes>
        {
            public PooledBytes Deserialize(ReadOnlySpan<byte> data, bool isNull, SerializationContext context)
            {
                var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(1, data.Length));
                data.CopyTo(buffer);
                return new PooledBytes(buffer, data.Length);
            }
        }
    }
}
