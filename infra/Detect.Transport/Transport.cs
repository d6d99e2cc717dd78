using Detect.Records;

namespace Detect.Transport;

// How record batches travel from the sensors to the pipeline (and alerts/policy back), over
// one small interface with two carriers of the same message bytes (see MessageFormat.cs):
//
//   ITransport transport = Transports.InProcess();                 // one host, no broker (./detect up)
//   ITransport transport = Transports.Kafka(KafkaOptions.Parse("host:9092"));  // --kafka host:port
//
// Sensors (publisher: batches, bounded memory, never blocks, counts what it drops):
//   using var publisher = transport.CreatePublisher(new PublisherOptions { HostId = HostIdentity.Local });
//   publisher.TryAppend(MessageFamily.Syscalls, recordBytes);   // from the ring-buffer callback
//   publisher.Stats.RecordsDropped                              // what never left this host
//
// Pipeline (consumer group, at-least-once: commit after processing):
//   using var consumer = transport.Subscribe(new ConsumerOptions { GroupId = "detect-pipeline" });
//   while (true)
//   {
//       using var message = await consumer.ReceiveAsync(ct);
//       if (!message.IsDuplicate)
//       {
//           var reader = message.Records();
//           while (reader.TryRead(out var record)) { ... }
//       }
//       consumer.Commit(message);            // processed: this and every earlier message of its partition
//   }
//   consumer.Stats.MissingRecords          // sequence gaps, per host in consumer.LossByHost()
//
// Rules: every message a consumer hands out has passed MessageFormat.Validate; refused ones go to
// the dead-letters topic with the reason and are counted, never thrown. A message's bytes are
// valid until it is committed or disposed. Commit in the order messages were received.

/// <summary>A carrier of transport messages: in-process bus or Kafka.</summary>
public interface ITransport : IDisposable
{
    /// <summary>"in-process" or "kafka host:port,...", for logs.</summary>
    string Name { get; }

    /// <summary>The topic prefix ("detect." unless configured): topic = prefix + family name.</summary>
    string TopicPrefix { get; }

    /// <summary>A publisher for one host's records. Thread-safe; one per agent is enough.</summary>
    RecordPublisher CreatePublisher(PublisherOptions options);

    /// <summary>Joins a consumer group reading the given families.</summary>
    IMessageConsumer Subscribe(ConsumerOptions options);
}

/// <summary>One member of a consumer group. Not thread-safe: one reading loop per consumer.</summary>
public interface IMessageConsumer : IDisposable
{
    /// <summary>
    /// The next valid message of this member's partitions; waits until one arrives.
    /// Throws OperationCanceledException when <paramref name="cancellationToken"/> fires.
    /// </summary>
    ValueTask<InboundMessage> ReceiveAsync(CancellationToken cancellationToken);

    /// <summary>The next message when one is already here, without waiting.</summary>
    bool TryReceive(out InboundMessage? message);

    /// <summary>
    /// Marks <paramref name="message"/> and every earlier message of its partition processed; the
    /// carrier commits the group's offset past them (Kafka: within CommitInterval, and on
    /// rebalance and close). A message of a partition this member lost in a rebalance is ignored.
    /// </summary>
    void Commit(InboundMessage message);

    /// <summary>A snapshot of the counters.</summary>
    ConsumerStats Stats { get; }

    /// <summary>Records missing per host (sequence gaps), for the hosts that lost any.</summary>
    IReadOnlyDictionary<ulong, long> LossByHost();

    /// <summary>The partitions this member holds now, as "topic[partition]".</summary>
    IReadOnlyList<string> Assignment { get; }
}

/// <summary>Settings of a publisher.</summary>
public sealed record PublisherOptions
{
    /// <summary>Identifies this host in every message (and is the Kafka key). Default: from /etc/machine-id.</summary>
    public ulong HostId { get; init; } = HostIdentity.Local;

    /// <summary>Largest message (header + records). 0: the carrier's default (Kafka 64 KiB, in-process 256 KiB).</summary>
    public int MaxMessageBytes { get; init; }

    /// <summary>A batch that is not full is sent after this long anyway.</summary>
    public TimeSpan Linger { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Bound on bytes sealed but not yet delivered (Kafka: the client's queue). Beyond it, batches are dropped and counted.</summary>
    public long MaxPendingBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Compute the payload CRC32C (consumers check it when present). Null: the carrier decides:
    /// on for Kafka (bytes cross networks, brokers, disks, mirroring tools), off in process
    /// (the bytes never leave this process's memory; the flag in the header says so).
    /// </summary>
    public bool? Crc { get; init; }

    /// <summary>
    /// The boot-to-realtime offset written in every message (records carry CLOCK_BOOTTIME). Null:
    /// this machine's, read at each seal (KernelClock). A replay of a capture file passes the file's.
    /// </summary>
    public long? BootToRealtimeNs { get; init; }

    /// <summary>How long Dispose waits for undelivered messages.</summary>
    public TimeSpan CloseTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Where the publisher says what went wrong (broker errors, drops); null: stderr.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>Settings of a consumer.</summary>
public sealed record ConsumerOptions
{
    /// <summary>Members of one group share the partitions; every group sees every message.</summary>
    public string GroupId { get; init; } = "detect-pipeline";

    /// <summary>The families (topics) to read.</summary>
    public IReadOnlyList<MessageFamily> Families { get; init; } = MessageFamilies.Telemetry;

    /// <summary>When set, only messages of this host (and of host 0, "every host") are handed out; the rest are committed unseen. For a sensor reading policy.</summary>
    public ulong? OnlyHost { get; init; }

    /// <summary>Messages read ahead of the caller (bounded memory).</summary>
    public int MaxBufferedMessages { get; init; } = 64;

    /// <summary>Kafka: the group session timeout (a killed member's partitions move after this).</summary>
    public TimeSpan SessionTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Kafka: how often processed offsets are committed.</summary>
    public TimeSpan CommitInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Where the consumer says what went wrong (gaps, dead letters, rebalances); null: stderr.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>What a publisher did, from its start. RecordsDropped never reached the carrier or failed delivery.</summary>
public sealed record PublisherStats
{
    public long RecordsAppended { get; init; }
    /// <summary>Records refused by TryAppend: malformed, wrong family, or bigger than a message.</summary>
    public long RecordsRejected { get; init; }
    public long MessagesSealed { get; init; }
    public long RecordsSealed { get; init; }
    public long MessagesDelivered { get; init; }
    public long RecordsDelivered { get; init; }
    /// <summary>Message bytes (header + payload, before compression) delivered.</summary>
    public long BytesDelivered { get; init; }
    /// <summary>Messages dropped because the carrier was full (broker slow or gone, bus full).</summary>
    public long MessagesDroppedFull { get; init; }
    public long RecordsDroppedFull { get; init; }
    /// <summary>Messages the carrier accepted but could not deliver (timed out, refused by the broker).</summary>
    public long MessagesDroppedFailed { get; init; }
    public long RecordsDroppedFailed { get; init; }
    /// <summary>Records whose delivery failed although the broker may have stored them (possibly persisted).</summary>
    public long RecordsUncertain { get; init; }
    /// <summary>Times the Kafka producer was rebuilt after a fatal error.</summary>
    public long ProducerRestarts { get; init; }
    public string? LastError { get; init; }

    public long MessagesDropped => MessagesDroppedFull + MessagesDroppedFailed;
    public long RecordsDropped => RecordsDroppedFull + RecordsDroppedFailed;
    /// <summary>Sealed records still waiting for a delivery report.</summary>
    public long RecordsInFlight => RecordsSealed - RecordsDelivered - RecordsDropped - RecordsUncertain;
}

/// <summary>What a consumer saw, from its start.</summary>
public sealed record ConsumerStats
{
    /// <summary>Valid messages handed out (duplicates included).</summary>
    public long MessagesReceived { get; init; }
    public long RecordsReceived { get; init; }
    public long BytesReceived { get; init; }
    public long MessagesCommitted { get; init; }
    /// <summary>Messages seen again (redelivery after a restart or rebalance); handed out with IsDuplicate.</summary>
    public long DuplicateMessages { get; init; }
    public long DuplicateRecords { get; init; }
    /// <summary>Holes in a stream's sequence: messages that never arrived.</summary>
    public long Gaps { get; init; }
    public long MissingMessages { get; init; }
    /// <summary>Records lost upstream (publisher drops, broker retention), from the first-record field.</summary>
    public long MissingRecords { get; init; }
    /// <summary>Streams (host, family, publisher session) seen for the first time.</summary>
    public long StreamsStarted { get; init; }
    /// <summary>Messages refused and sent to the dead-letters topic (or counted when that failed).</summary>
    public long DeadLettered { get; init; }
    public long DeadLetterFailures { get; init; }
    /// <summary>Dead-lettered messages by reason, indexed by MessageError.</summary>
    public IReadOnlyList<long> DeadLetteredByReason { get; init; } = [];
    /// <summary>Broker messages skipped because the consumer's offset was no longer retained ("offset out of range").</summary>
    public long MessagesLostToRetention { get; init; }
    /// <summary>Messages of other hosts skipped (ConsumerOptions.OnlyHost).</summary>
    public long SkippedOtherHosts { get; init; }
    public long Rebalances { get; init; }
    public long CommitFailures { get; init; }
    public string? LastError { get; init; }
}

/// <summary>One message handed out by a consumer: header, payload, and where it came from.</summary>
public sealed class InboundMessage : IDisposable
{
    private byte[]? _buffer;
    private readonly int _length;
    private readonly Action<byte[]>? _release;

    internal InboundMessage(byte[] buffer, int length, in MessageHeader header, string topic, int partition, long offset,
        bool isDuplicate, Action<byte[]>? release)
    {
        _buffer = buffer;
        _length = length;
        Header = header;
        Topic = topic;
        Partition = partition;
        Offset = offset;
        IsDuplicate = isDuplicate;
        _release = release;
    }

    public MessageHeader Header { get; }
    public MessageFamily Family => Header.Family;
    public ulong HostId => Header.HostId;
    public ulong Sequence => Header.Sequence;
    public int RecordCount => (int)Header.RecordCount;
    public string Topic { get; }
    public int Partition { get; }
    /// <summary>Position in its partition (Kafka offset, or the bus's).</summary>
    public long Offset { get; }

    /// <summary>This consumer already handed out this message's records: skip them, but Commit it.</summary>
    public bool IsDuplicate { get; }

    /// <summary>Owner-side token used by the consumer that handed this message out.</summary>
    internal object? Owner { get; init; }
    internal long Generation { get; init; }

    /// <summary>The whole message, header included.</summary>
    public ReadOnlySpan<byte> Bytes => (_buffer ?? throw new ObjectDisposedException(nameof(InboundMessage))).AsSpan(0, _length);

    /// <summary>The records, back to back.</summary>
    public ReadOnlySpan<byte> Payload => Bytes.Slice(MessageHeader.Size, (int)Header.PayloadLength);

    /// <summary>A reader over the records (already validated: it will not refuse any).</summary>
    public RecordReader Records(RecordErrorHandler? onError = null) => new(Payload, onError);

    /// <summary>Gives the bytes back to the pool they came from. Commit first.</summary>
    public void Dispose()
    {
        var buffer = Interlocked.Exchange(ref _buffer, null);
        if (buffer != null) _release?.Invoke(buffer);
    }
}
