namespace Detect.Transport;

/// <summary>What a stream's next message means.</summary>
internal enum StreamVerdict
{
    /// <summary>First message of a stream this consumer has not seen.</summary>
    New,
    InOrder,
    /// <summary>Messages are missing before this one.</summary>
    Gap,
    /// <summary>Seen before (redelivery).</summary>
    Duplicate,
}

/// <summary>
/// Follows each stream (host, family, publisher session) through its sequence numbers and
/// first-record indexes: a hole is a gap whose exact record count the headers give; an old
/// sequence is a duplicate. Streams live in one partition (the key is the host), so when a
/// partition moves to another member its streams are forgotten here, not reported as gaps.
/// </summary>
internal sealed class StreamTracker
{
    private const int MaxStreams = 1 << 16;
    private readonly Dictionary<StreamKey, StreamState> _streams = [];
    private readonly Dictionary<ulong, long> _lossByHost = [];

    public StreamVerdict Observe(in MessageHeader header, int partitionKey, out ulong missingMessages, out ulong missingRecords)
    {
        missingMessages = 0;
        missingRecords = 0;
        var key = new StreamKey(header.HostId, header.Family, header.Session);
        if (!_streams.TryGetValue(key, out var state))
        {
            if (_streams.Count >= MaxStreams) Trim();
            _streams[key] = new StreamState(header.Sequence + 1, header.NextRecord, partitionKey, Environment.TickCount64);
            return StreamVerdict.New;
        }
        if (header.Sequence < state.NextSequence) return StreamVerdict.Duplicate;
        var verdict = StreamVerdict.InOrder;
        if (header.Sequence > state.NextSequence)
        {
            verdict = StreamVerdict.Gap;
            missingMessages = header.Sequence - state.NextSequence;
            missingRecords = header.FirstRecord > state.NextRecord ? header.FirstRecord - state.NextRecord : 0;
            _lossByHost[header.HostId] = _lossByHost.GetValueOrDefault(header.HostId) + (long)missingRecords;
        }
        _streams[key] = new StreamState(header.Sequence + 1, header.NextRecord, partitionKey, Environment.TickCount64);
        return verdict;
    }

    /// <summary>Forgets the streams of partitions this member no longer holds.</summary>
    public void ForgetPartitions(Func<int, bool> revoked)
    {
        foreach (var (key, state) in _streams.ToArray())
        {
            if (revoked(state.PartitionKey)) _streams.Remove(key);
        }
    }

    public IReadOnlyDictionary<ulong, long> LossByHost() => new Dictionary<ulong, long>(_lossByHost);

    // Streams of restarted publishers linger; past the bound, the oldest half goes.
    private void Trim()
    {
        var cutoff = _streams.Values.Select(s => s.LastSeen).Order().ElementAt(_streams.Count / 2);
        foreach (var (key, state) in _streams.ToArray())
        {
            if (state.LastSeen <= cutoff) _streams.Remove(key);
        }
    }

    private readonly record struct StreamKey(ulong HostId, MessageFamily Family, uint Session);

    private readonly record struct StreamState(ulong NextSequence, ulong NextRecord, int PartitionKey, long LastSeen);
}

/// <summary>
/// Per partition, the offsets handed out and not yet committed, in order. The user commits in
/// order; messages the consumer handled itself (dead-lettered, other hosts') are done at once
/// but may only be committed once everything before them is. Gives the offset to commit.
/// </summary>
internal sealed class PendingOffsets
{
    private readonly Queue<(long Offset, bool Done)> _pending = new();

    /// <summary>The next offset to commit (one past the last processed), or -1 when unchanged.</summary>
    public long Committable { get; private set; } = -1;

    public void HandedOut(long offset) => _pending.Enqueue((offset, false));

    /// <summary>A message the consumer disposed of itself.</summary>
    public void DoneInternally(long offset)
    {
        _pending.Enqueue((offset, true));
        Advance();
    }

    /// <summary>The user processed <paramref name="offset"/> and everything before it. Returns false when the offset is not pending here.</summary>
    public bool Commit(long offset)
    {
        var found = false;
        while (_pending.TryPeek(out var head) && head.Offset <= offset)
        {
            _pending.Dequeue();
            Committable = head.Offset + 1;
            found = true;
        }
        Advance();
        return found;
    }

    private void Advance()
    {
        while (_pending.TryPeek(out var head) && head.Done)
        {
            _pending.Dequeue();
            Committable = head.Offset + 1;
        }
    }
}

/// <summary>The counters behind ConsumerStats, shared by both carriers' consumers.</summary>
internal sealed class ConsumerCounters
{
    public long MessagesReceived, RecordsReceived, BytesReceived, MessagesCommitted;
    public long DuplicateMessages, DuplicateRecords, Gaps, MissingMessages, MissingRecords, StreamsStarted;
    public long DeadLettered, DeadLetterFailures, MessagesLostToRetention, SkippedOtherHosts, Rebalances, CommitFailures;
    public readonly long[] DeadLetteredByReason = new long[16];
    public string? LastError;

    public ConsumerStats Snapshot() => new()
    {
        MessagesReceived = Interlocked.Read(ref MessagesReceived),
        RecordsReceived = Interlocked.Read(ref RecordsReceived),
        BytesReceived = Interlocked.Read(ref BytesReceived),
        MessagesCommitted = Interlocked.Read(ref MessagesCommitted),
        DuplicateMessages = Interlocked.Read(ref DuplicateMessages),
        DuplicateRecords = Interlocked.Read(ref DuplicateRecords),
        Gaps = Interlocked.Read(ref Gaps),
        MissingMessages = Interlocked.Read(ref MissingMessages),
        MissingRecords = Interlocked.Read(ref MissingRecords),
        StreamsStarted = Interlocked.Read(ref StreamsStarted),
        DeadLettered = Interlocked.Read(ref DeadLettered),
        DeadLetterFailures = Interlocked.Read(ref DeadLetterFailures),
        DeadLetteredByReason = DeadLetteredByReason.Select(v => Interlocked.Read(ref v)).ToArray(),
        MessagesLostToRetention = Interlocked.Read(ref MessagesLostToRetention),
        SkippedOtherHosts = Interlocked.Read(ref SkippedOtherHosts),
        Rebalances = Interlocked.Read(ref Rebalances),
        CommitFailures = Interlocked.Read(ref CommitFailures),
        LastError = Volatile.Read(ref LastError),
    };
}

/// <summary>
/// The checks every consumer makes on a message before handing it out: validation (refused ->
/// dead letter), host filter, stream sequence (gap, duplicate). Carrier-independent.
/// </summary>
internal sealed class MessageGate(ConsumerOptions options, ConsumerCounters counters, Action<string> log)
{
    private readonly StreamTracker _streams = new();
    private long _lastGapLog;

    public StreamTracker Streams => _streams;

    public enum Outcome
    {
        HandOut,
        HandOutDuplicate,
        /// <summary>Refused: dead-letter it (error and detail set).</summary>
        Refuse,
        /// <summary>Not for this consumer (another host): done internally.</summary>
        Skip,
    }

    public Outcome Inspect(ReadOnlySpan<byte> message, string topic, int partition, int partitionKey, out MessageHeader header,
        out MessageError error, out string? detail)
    {
        error = MessageFormat.Validate(message, out header, out detail);
        if (error != MessageError.None) return Outcome.Refuse;
        var familyWanted = false;
        foreach (var f in options.Families) familyWanted |= f == header.Family;
        if (!familyWanted)
        {
            error = MessageError.UnknownFamily;
            detail = $"a {MessageFamilies.Name(header.Family)} message in topic {topic}";
            return Outcome.Refuse;
        }
        if (options.OnlyHost is { } only && header.HostId != only && header.HostId != 0)
        {
            Interlocked.Increment(ref counters.SkippedOtherHosts);
            return Outcome.Skip;
        }
        var verdict = _streams.Observe(header, partitionKey, out var missingMessages, out var missingRecords);
        switch (verdict)
        {
            case StreamVerdict.New:
                Interlocked.Increment(ref counters.StreamsStarted);
                break;
            case StreamVerdict.Gap:
                Interlocked.Increment(ref counters.Gaps);
                Interlocked.Add(ref counters.MissingMessages, (long)missingMessages);
                Interlocked.Add(ref counters.MissingRecords, (long)missingRecords);
                if (Environment.TickCount64 - _lastGapLog > 1000)
                {
                    _lastGapLog = Environment.TickCount64;
                    log($"gap in {MessageFamilies.Name(header.Family)} of host {header.HostId:x16}: {missingMessages} messages, {missingRecords} records missing before sequence {header.Sequence} ({topic}[{partition}])");
                }
                break;
            case StreamVerdict.Duplicate:
                Interlocked.Increment(ref counters.DuplicateMessages);
                Interlocked.Add(ref counters.DuplicateRecords, header.RecordCount);
                return Outcome.HandOutDuplicate;
        }
        return Outcome.HandOut;
    }

    public void CountHandedOut(in MessageHeader header, int bytes)
    {
        Interlocked.Increment(ref counters.MessagesReceived);
        Interlocked.Add(ref counters.RecordsReceived, header.RecordCount);
        Interlocked.Add(ref counters.BytesReceived, bytes);
    }

    /// <summary>
    /// Builds a dead-letters message (header + envelope) for a refused message. Dead letters of
    /// one consumer form their own stream: host 0, a random session, sequence 1, 2, 3...
    /// </summary>
    public byte[] BuildDeadLetter(ReadOnlySpan<byte> refused, MessageError error, string? detail, string topic, int partition, long offset)
    {
        var text = $"{topic}[{partition}]@{offset}: {error}: {detail}";
        var payloadSize = DeadLetter.PayloadSize(text, refused.Length);
        var bytes = new byte[MessageHeader.Size + payloadSize];
        var now = RecordPublisher.UnixNowNs();
        var written = DeadLetter.Write(bytes.AsSpan(MessageHeader.Size), error, text, partition, offset, now, refused);
        var sequence = (ulong)Interlocked.Increment(ref _deadLetterSequence);
        MessageFormat.WriteHeader(bytes, MessageFamily.DeadLetters, 0, _deadLetterSession, sequence, sequence - 1, 1, written, now);
        return bytes;
    }

    /// <summary>Counts a refused message and logs it.</summary>
    public void CountDeadLetter(MessageError error, string? detail, string topic, int partition, long offset, bool published)
    {
        Interlocked.Increment(ref counters.DeadLettered);
        Interlocked.Increment(ref counters.DeadLetteredByReason[Math.Min((int)error, counters.DeadLetteredByReason.Length - 1)]);
        if (!published) Interlocked.Increment(ref counters.DeadLetterFailures);
        var line = $"refused {topic}[{partition}]@{offset}: {error}: {detail}{(published ? " (to dead letters)" : " (dead-letter topic unavailable: counted only)")}";
        Volatile.Write(ref counters.LastError, line);
        log(line);
    }

    private readonly uint _deadLetterSession = (uint)Random.Shared.Next(1, int.MaxValue);
    private long _deadLetterSequence;
}
