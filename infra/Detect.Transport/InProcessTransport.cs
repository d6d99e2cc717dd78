using System.Buffers;

namespace Detect.Transport;

/// <summary>Settings of the in-process bus.</summary>
public sealed record InProcessOptions
{
    /// <summary>Partitions per topic (one host's records always go to the same one).</summary>
    public int Partitions { get; init; } = 1;

    /// <summary>Bound on message bytes held per partition. A partition someone reads keeps what is not yet committed and refuses new messages beyond it (the publisher drops and counts them); a partition nobody reads drops its oldest.</summary>
    public long MaxBytesPerPartition { get; init; } = 64L << 20;

    public string TopicPrefix { get; init; } = MessageFamilies.DefaultTopicPrefix;
}

/// <summary>
/// The embedded carrier for one host (`./detect up`): a bounded in-memory log per topic and
/// partition with consumer groups, committed offsets and rebalancing, so the sensors and the
/// pipeline run in one process with the same message bytes, backpressure and accounting as over
/// Kafka. Messages are passed by reference (zero copy): the publisher's buffer is what the
/// consumer reads, and it goes back to the pool once every group has committed past it.
/// </summary>
public sealed class InProcessTransport : ITransport
{
    private readonly BusTopic[] _topics;
    private readonly Dictionary<string, BusGroup> _groups = [];
    private TaskCompletionSource _changed = NewSignal();
    private int _disposed;

    public InProcessTransport(InProcessOptions? options = null)
    {
        Options = options ?? new InProcessOptions();
        if (Options.Partitions < 1) throw new ArgumentException("Partitions must be at least 1", nameof(options));
        _topics = new BusTopic[MessageFamilies.Count];
        foreach (var family in MessageFamilies.All)
            _topics[(int)family] = new BusTopic(MessageFamilies.Topic(family, Options.TopicPrefix), family, Options.Partitions, Options.MaxBytesPerPartition);
    }

    public InProcessOptions Options { get; }
    public string Name => "in-process";
    public string TopicPrefix => Options.TopicPrefix;

    public RecordPublisher CreatePublisher(PublisherOptions options)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        return new RecordPublisher(_ => new Sink(this), options);
    }

    public IMessageConsumer Subscribe(ConsumerOptions options)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (options.Families.Count == 0) throw new ArgumentException("no families to read", nameof(options));
        BusGroup group;
        lock (_groups)
        {
            if (!_groups.TryGetValue(options.GroupId, out group!))
                _groups[options.GroupId] = group = new BusGroup(options.GroupId);
        }
        var consumer = new Consumer(this, group, options);
        group.Join(consumer, options.Families.Select(f => _topics[(int)f]));
        Signal();
        return consumer;
    }

    /// <summary>Appends raw message bytes (copied) as a producer would, valid or not: for tools and tests. Returns false when the partition is full.</summary>
    public bool Append(MessageFamily family, ulong key, ReadOnlySpan<byte> message)
    {
        var copy = message.ToArray();
        return Append(family, key, copy, copy.Length, pooled: false);
    }

    /// <summary>Message bytes held now, over every topic.</summary>
    public long BytesHeld => _topics.Where(t => t != null).Sum(t => t.Partitions.Sum(p => p.Bytes));

    internal bool Append(MessageFamily family, ulong key, byte[] buffer, int length, bool pooled)
    {
        if (Volatile.Read(ref _disposed) != 0) return false;
        var topic = _topics[(int)family];
        var partition = topic.Partitions[PartitionOf(key, topic.Partitions.Length)];
        if (!partition.Append(buffer, length, pooled)) return false;
        Signal();
        return true;
    }

    /// <summary>The partition of a key: a fixed mix of the host id, so one host always lands in one partition.</summary>
    public static int PartitionOf(ulong key, int partitions) => (int)(((key * 0x9E3779B97F4A7C15UL) >> 32) % (ulong)partitions);

    internal Task Changed => Volatile.Read(ref _changed).Task;

    internal void Signal() => Interlocked.Exchange(ref _changed, NewSignal()).TrySetResult();

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        foreach (var topic in _topics)
        {
            if (topic == null) continue;
            foreach (var partition in topic.Partitions) partition.Clear();
        }
        Signal();
    }

    private sealed class Sink(InProcessTransport bus) : IMessageSink
    {
        public int DefaultMaxMessageBytes => 256 * 1024;

        // The bytes never leave this process's memory.
        public bool DefaultCrc => false;

        public SendResult TrySend(in OutboundMessage message)
        {
            if (bus.Append(message.Family, message.HostId, message.Buffer, message.Length, pooled: true)) return SendResult.Delivered;
            ArrayPool<byte>.Shared.Return(message.Buffer);
            return SendResult.Full;
        }

        public Task FlushAsync(TimeSpan timeout, CancellationToken cancellationToken) => Task.CompletedTask;

        public void Dispose()
        {
        }
    }

    internal sealed class BusTopic(string name, MessageFamily family, int partitions, long maxBytes)
    {
        public readonly string Name = name;
        public readonly MessageFamily Family = family;
        public readonly BusPartition[] Partitions = Enumerable.Range(0, partitions).Select(_ => new BusPartition(maxBytes)).ToArray();
    }

    /// <summary>A group's committed offset in one partition; the partition reads it (without the group's lock) to know what it may free.</summary>
    internal sealed class GroupCursor(long committed)
    {
        public long Committed = committed;
    }

    internal readonly record struct Entry(byte[] Buffer, int Length, bool Pooled);

    internal sealed class BusPartition(long maxBytes)
    {
        private readonly object _gate = new();
        private Entry[] _ring = new Entry[64];
        private int _head;
        private int _count;
        private long _baseOffset;
        private long _bytes;
        private GroupCursor[] _cursors = [];

        public long Bytes => Interlocked.Read(ref _bytes);

        public long BaseOffset
        {
            get { lock (_gate) return _baseOffset; }
        }

        /// <summary>A new group starts at the earliest message still held.</summary>
        public GroupCursor AddCursor()
        {
            lock (_gate)
            {
                var cursor = new GroupCursor(_baseOffset);
                _cursors = [.. _cursors, cursor];
                return cursor;
            }
        }

        public bool Append(byte[] buffer, int length, bool pooled)
        {
            Entry[] freed = [];
            lock (_gate)
            {
                // Free what every group has committed on each append, so buffers go back to the pool early.
                if (_cursors.Length > 0 || _bytes + length > maxBytes) freed = Evict(length);
                if (_bytes + length > maxBytes) return false;
                if (_count == _ring.Length) Grow();
                _ring[(_head + _count) % _ring.Length] = new Entry(buffer, length, pooled);
                _count++;
                _bytes += length;
            }
            foreach (var e in freed)
            {
                if (e.Pooled) ArrayPool<byte>.Shared.Return(e.Buffer);
            }
            return true;
        }

        /// <summary>The entry at <paramref name="offset"/>; false when it is not there yet. <paramref name="earliest"/> says where the partition starts now.</summary>
        public bool TryRead(long offset, out Entry entry, out long earliest)
        {
            lock (_gate)
            {
                earliest = _baseOffset;
                if (offset < _baseOffset || offset >= _baseOffset + _count)
                {
                    entry = default;
                    return false;
                }
                entry = _ring[(_head + (int)(offset - _baseOffset)) % _ring.Length];
                return true;
            }
        }

        public void Clear()
        {
            lock (_gate)
            {
                for (var i = 0; i < _count; i++)
                {
                    var e = _ring[(_head + i) % _ring.Length];
                    if (e.Pooled) ArrayPool<byte>.Shared.Return(e.Buffer);
                }
                _baseOffset += _count;
                _head = 0;
                _count = 0;
                _bytes = 0;
                _ring = new Entry[64];
            }
        }

        // Under the lock: frees what every group has committed; with no group reading, the oldest.
        private Entry[] Evict(int needed)
        {
            var limit = long.MaxValue;
            foreach (var c in _cursors) limit = Math.Min(limit, Volatile.Read(ref c.Committed));
            if (_count == 0 || _baseOffset >= limit) return [];
            var freed = new List<Entry>();
            while (_count > 0 && _baseOffset < limit && (_cursors.Length > 0 || _bytes + needed > maxBytes))
            {
                var e = _ring[_head];
                _ring[_head] = default;
                _head = (_head + 1) % _ring.Length;
                _count--;
                _baseOffset++;
                _bytes -= e.Length;
                freed.Add(e);
                if (_cursors.Length == 0 && _bytes + needed <= maxBytes) break;
            }
            return [.. freed];
        }

        private void Grow()
        {
            var bigger = new Entry[_ring.Length * 2];
            for (var i = 0; i < _count; i++) bigger[i] = _ring[(_head + i) % _ring.Length];
            _ring = bigger;
            _head = 0;
        }
    }

    /// <summary>A consumer group: members, who holds which partition, and committed offsets.</summary>
    internal sealed class BusGroup(string name)
    {
        public readonly string Name = name;
        private readonly object _lock = new();
        private readonly List<(Consumer Member, BusTopic[] Topics)> _members = [];
        private readonly Dictionary<(BusTopic, int), GroupCursor> _cursors = [];
        private int _nextMemberId;

        public int Generation { get; private set; }

        public void Join(Consumer member, IEnumerable<BusTopic> topics)
        {
            lock (_lock)
            {
                member.MemberId = _nextMemberId++;
                var list = topics.Distinct().ToArray();
                foreach (var topic in list)
                {
                    for (var p = 0; p < topic.Partitions.Length; p++)
                    {
                        if (!_cursors.ContainsKey((topic, p))) _cursors[(topic, p)] = topic.Partitions[p].AddCursor();
                    }
                }
                _members.Add((member, list));
                Rebalance();
            }
        }

        public void Leave(Consumer member)
        {
            lock (_lock)
            {
                _members.RemoveAll(m => m.Member == member);
                Rebalance();
            }
        }

        /// <summary>The partitions of <paramref name="member"/> in the current generation.</summary>
        public (int Generation, List<(BusTopic Topic, int Partition, GroupCursor Cursor)> Partitions) AssignmentOf(Consumer member)
        {
            lock (_lock) return (Generation, member.Assigned.ToList());
        }

        // Round-robin of every topic's partitions over the members that read the topic.
        private void Rebalance()
        {
            Generation++;
            foreach (var (m, _) in _members) m.Assigned.Clear();
            foreach (var topic in _members.SelectMany(m => m.Topics).Distinct())
            {
                var readers = _members.Where(m => m.Topics.Contains(topic)).Select(m => m.Member).OrderBy(m => m.MemberId).ToArray();
                for (var p = 0; p < topic.Partitions.Length; p++)
                    readers[p % readers.Length].Assigned.Add((topic, p, _cursors[(topic, p)]));
            }
        }
    }

    /// <summary>One member of an in-process consumer group.</summary>
    internal sealed class Consumer : IMessageConsumer
    {
        private readonly InProcessTransport _bus;
        private readonly BusGroup _group;
        private readonly ConsumerOptions _options;
        private readonly ConsumerCounters _counters = new();
        private readonly MessageGate _gate;
        private readonly Action<string> _log;
        private Slot[] _slots = [];
        private int _generation;
        private int _next;
        private int _disposed;

        public Consumer(InProcessTransport bus, BusGroup group, ConsumerOptions options)
        {
            _bus = bus;
            _group = group;
            _options = options;
            _log = options.Log ?? (m => Console.Error.WriteLine("transport: " + m));
            _gate = new MessageGate(options, _counters, _log);
        }

        public int MemberId { get; set; }

        /// <summary>Written by the group under its lock.</summary>
        public List<(BusTopic Topic, int Partition, GroupCursor Cursor)> Assigned { get; } = [];

        public ConsumerStats Stats => _counters.Snapshot();

        public IReadOnlyDictionary<ulong, long> LossByHost() => _gate.Streams.LossByHost();

        public IReadOnlyList<string> Assignment
        {
            get
            {
                Refresh();
                return _slots.Select(s => $"{s.Topic.Name}[{s.Partition}]").ToArray();
            }
        }

        public async ValueTask<InboundMessage> ReceiveAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                ObjectDisposedException.ThrowIf(_disposed != 0, this);
                var changed = _bus.Changed;
                if (TryReceive(out var message)) return message!;
                await changed.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        public bool TryReceive(out InboundMessage? message)
        {
            message = null;
            if (_disposed != 0) return false;
            Refresh();
            for (var tried = 0; tried < _slots.Length; tried++)
            {
                var slot = _slots[_next];
                while (TryTake(slot, out message))
                {
                    if (message != null) return true;
                }
                _next = (_next + 1) % _slots.Length;
            }
            return false;
        }

        // One entry of the slot's partition; true with message null when the entry was handled here (refused, skipped).
        private bool TryTake(Slot slot, out InboundMessage? message)
        {
            message = null;
            var partition = slot.Topic.Partitions[slot.Partition];
            if (!partition.TryRead(slot.Position, out var entry, out var earliest))
            {
                if (slot.Position >= earliest) return false;
                // Freed before this member read it (nobody else held it): lost to retention.
                Interlocked.Add(ref _counters.MessagesLostToRetention, earliest - slot.Position);
                _log($"{slot.Topic.Name}[{slot.Partition}]: {earliest - slot.Position} messages were dropped before they were read");
                slot.Position = earliest;
                return true;
            }
            var offset = slot.Position++;
            var bytes = entry.Buffer.AsSpan(0, entry.Length);
            var key = ((int)slot.Topic.Family << 16) | slot.Partition;
            switch (_gate.Inspect(bytes, slot.Topic.Name, slot.Partition, key, out var header, out var error, out var detail))
            {
                case MessageGate.Outcome.Refuse:
                    var letter = _gate.BuildDeadLetter(bytes, error, detail, slot.Topic.Name, slot.Partition, offset);
                    var published = _bus.Append(MessageFamily.DeadLetters, 0, letter, letter.Length, pooled: false);
                    _gate.CountDeadLetter(error, detail, slot.Topic.Name, slot.Partition, offset, published);
                    slot.Pending.DoneInternally(offset);
                    Publish(slot);
                    return true;
                case MessageGate.Outcome.Skip:
                    slot.Pending.DoneInternally(offset);
                    Publish(slot);
                    return true;
                case var outcome:
                    slot.Pending.HandedOut(offset);
                    _gate.CountHandedOut(header, entry.Length);
                    message = new InboundMessage(entry.Buffer, entry.Length, header, slot.Topic.Name, slot.Partition, offset,
                        isDuplicate: outcome == MessageGate.Outcome.HandOutDuplicate, release: null)
                    { Owner = this, Generation = slot.Generation };
                    return true;
            }
        }

        public void Commit(InboundMessage message)
        {
            if (!ReferenceEquals(message.Owner, this)) throw new ArgumentException("the message was received by another consumer", nameof(message));
            Refresh();
            foreach (var slot in _slots)
            {
                if (slot.Topic.Name != message.Topic || slot.Partition != message.Partition) continue;
                // A partition lost and regained since: the new owner's positions rule.
                if (slot.Generation != message.Generation) return;
                if (slot.Pending.Commit(message.Offset))
                {
                    Interlocked.Increment(ref _counters.MessagesCommitted);
                    Publish(slot);
                }
                return;
            }
        }

        private static void Publish(Slot slot)
        {
            if (slot.Pending.Committable > Volatile.Read(ref slot.Cursor.Committed))
                Volatile.Write(ref slot.Cursor.Committed, slot.Pending.Committable);
        }

        private void Refresh()
        {
            if (_group.Generation == _generation) return;
            var (generation, assigned) = _group.AssignmentOf(this);
            if (generation == _generation) return;
            var old = _slots;
            var slots = new List<Slot>();
            foreach (var (topic, partition, cursor) in assigned)
            {
                var kept = old.FirstOrDefault(s => s.Topic == topic && s.Partition == partition);
                slots.Add(kept ?? new Slot(topic, partition, cursor, Volatile.Read(ref cursor.Committed), generation));
            }
            var revoked = old.Where(s => !slots.Contains(s)).Select(s => ((int)s.Topic.Family << 16) | s.Partition).ToHashSet();
            if (revoked.Count > 0) _gate.Streams.ForgetPartitions(revoked.Contains);
            _slots = [.. slots];
            _next = 0;
            _generation = generation;
            Interlocked.Increment(ref _counters.Rebalances);
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            _group.Leave(this);
            _bus.Signal();
        }

        private sealed class Slot(BusTopic topic, int partition, GroupCursor cursor, long position, int generation)
        {
            public readonly BusTopic Topic = topic;
            public readonly int Partition = partition;
            public readonly GroupCursor Cursor = cursor;
            public readonly int Generation = generation;
            public readonly PendingOffsets Pending = new();
            public long Position = position;
        }
    }
}
