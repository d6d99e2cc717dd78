using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using Confluent.Kafka;

namespace Detect.Transport.Kafka;

/// <summary>
/// The Kafka carrier (Confluent.Kafka over the bundled librdkafka). One message = one Kafka
/// record: key = host id (8 bytes, little-endian; murmur2 partitioner, as Java clients use),
/// value = the message bytes, topic = prefix + family. Producers compress (lz4 by default),
/// are idempotent (no duplicates from retries), and reconnect by themselves.
/// </summary>
public sealed class KafkaTransport : ITransport
{
    private long _txBytes;
    private readonly List<Sink> _sinks = [];

    public KafkaTransport(KafkaOptions options)
    {
        Options = options;
        KafkaNative.EnsureLoaded();
    }

    public KafkaOptions Options { get; }
    public string Name => "kafka " + Options.BootstrapServers;
    public string TopicPrefix => Options.TopicPrefix;

    /// <summary>Bytes the producers of this transport sent to brokers (librdkafka tx_bytes: compressed, protocol included). Needs StatisticsInterval.</summary>
    public long ProducerWireBytes
    {
        get
        {
            lock (_sinks) return _txBytes + _sinks.Sum(s => Interlocked.Read(ref s.TxBytes));
        }
    }

    public RecordPublisher CreatePublisher(PublisherOptions options) =>
        new(listener =>
        {
            var sink = new Sink(this, options, listener);
            lock (_sinks) _sinks.Add(sink);
            return sink;
        }, options);

    public IMessageConsumer Subscribe(ConsumerOptions options) => new KafkaMessageConsumer(this, options);

    internal Action<string> Log(Action<string>? preferred) =>
        preferred ?? Options.Log ?? (m => Console.Error.WriteLine("transport: " + m));

    /// <summary>Properties every client gets: the bootstrap servers, then the user's settings over Detect's defaults.</summary>
    internal Dictionary<string, string> BaseConfig(IEnumerable<KeyValuePair<string, string>> defaults)
    {
        var config = new Dictionary<string, string>(StringComparer.Ordinal) { ["bootstrap.servers"] = Options.BootstrapServers };
        foreach (var (k, v) in defaults) config[k] = v;
        if (Options.StatisticsInterval > TimeSpan.Zero)
            config["statistics.interval.ms"] = ((int)Options.StatisticsInterval.TotalMilliseconds).ToString(CultureInfo.InvariantCulture);
        foreach (var (k, v) in Options.Config) config[k] = v;
        return config;
    }

    /// <summary>A plain producer of raw bytes, for dead letters, tools and tests.</summary>
    internal IProducer<byte[]?, byte[]> CreateRawProducer(string clientId)
    {
        var config = BaseConfig(new Dictionary<string, string>
        {
            ["client.id"] = clientId,
            ["compression.type"] = Options.Compression,
            ["linger.ms"] = "5",
        });
        return new ProducerBuilder<byte[]?, byte[]>(config)
            .SetErrorHandler((_, e) => { if (e.IsFatal) Log(null)($"{clientId}: {e.Reason}"); })
            .SetLogHandler((_, m) => { if (m.Level <= SyslogLevel.Error) Log(null)($"{clientId}: {m.Message}"); })
            .Build();
    }

    public void Dispose()
    {
        lock (_sinks)
        {
            _txBytes += _sinks.Sum(s => Interlocked.Read(ref s.TxBytes));
            _sinks.Clear();
        }
    }

    /// <summary>
    /// The partition a host's messages go to in a topic of <paramref name="partitions"/> partitions:
    /// murmur2 of the 8-byte key, as Java clients and librdkafka's murmur2 partitioners compute it.
    /// </summary>
    public static int PartitionOf(ulong hostId, int partitions)
    {
        Span<byte> key = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(key, hostId);
        return (int)((Murmur2(key) & 0x7fffffff) % (uint)partitions);
    }

    private static uint Murmur2(ReadOnlySpan<byte> data)
    {
        const uint m = 0x5bd1e995;
        var h = 0x9747b28cu ^ (uint)data.Length;
        var i = 0;
        for (; i + 4 <= data.Length; i += 4)
        {
            var k = BinaryPrimitives.ReadUInt32LittleEndian(data[i..]);
            k *= m;
            k ^= k >> 24;
            k *= m;
            h *= m;
            h ^= k;
        }
        switch (data.Length - i)
        {
            case 3:
                h ^= (uint)data[i + 2] << 16;
                goto case 2;
            case 2:
                h ^= (uint)data[i + 1] << 8;
                goto case 1;
            case 1:
                h ^= data[i];
                h *= m;
                break;
        }
        h ^= h >> 13;
        h *= m;
        h ^= h >> 15;
        return h;
    }

    internal static byte[] KeyOf(ulong hostId)
    {
        var key = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(key, hostId);
        return key;
    }

    /// <summary>Reads the top-level tx_bytes of a librdkafka statistics document.</summary>
    internal static long ParseTxBytes(string json)
    {
        var reader = new Utf8JsonReader(System.Text.Encoding.UTF8.GetBytes(json));
        var depth = 0;
        while (reader.Read())
        {
            switch (reader.TokenType)
            {
                case JsonTokenType.StartObject or JsonTokenType.StartArray: depth++; break;
                case JsonTokenType.EndObject or JsonTokenType.EndArray: depth--; break;
                case JsonTokenType.PropertyName when depth == 1 && reader.ValueTextEquals("tx_bytes"):
                    reader.Read();
                    return reader.TokenType == JsonTokenType.Number ? reader.GetInt64() : 0;
            }
        }
        return 0;
    }

    /// <summary>
    /// The publisher's producer. Produce never blocks: when the client's bounded queue is full
    /// (broker slow or gone) it refuses and the batch is counted dropped. Delivery reports say
    /// what was stored and what failed. After a fatal error the producer is rebuilt.
    /// </summary>
    private sealed class Sink : IMessageSink
    {
        private readonly KafkaTransport _transport;
        private readonly PublisherOptions _options;
        private readonly IDeliveryListener _listener;
        private readonly Action<string> _log;
        private readonly byte[]?[] _spares = new byte[MessageFamilies.Count][];
        private readonly object _swap = new();
        private readonly string[] _topics;
        private IProducer<byte[], byte[]> _producer;
        private byte[] _key;
        private ulong _keyHost;
        private volatile string? _fatal;
        private long _lastErrorLog;
        private int _disposed;
        public long TxBytes;

        public Sink(KafkaTransport transport, PublisherOptions options, IDeliveryListener listener)
        {
            _transport = transport;
            _options = options;
            _listener = listener;
            _log = transport.Log(options.Log);
            _topics = Enumerable.Range(0, MessageFamilies.Count).Select(f => MessageFamilies.Topic((MessageFamily)f, transport.TopicPrefix)).ToArray();
            _keyHost = options.HostId;
            _key = KeyOf(options.HostId);
            _producer = Build();
        }

        // Kafka messages are copied into an exact-size array; under 85 KB it stays out of the large-object heap.
        public int DefaultMaxMessageBytes => 64 * 1024;

        public bool DefaultCrc => true;

        private IProducer<byte[], byte[]> Build()
        {
            var pendingKb = Math.Max(1024, _options.MaxPendingBytes / 1024);
            var config = _transport.BaseConfig(new Dictionary<string, string>
            {
                ["client.id"] = $"detect-publisher-{_options.HostId:x16}",
                ["compression.type"] = _transport.Options.Compression,
                ["enable.idempotence"] = "true",
                ["acks"] = "all",
                ["linger.ms"] = "5",
                ["batch.size"] = "1000000",
                ["partitioner"] = "murmur2_random",
                ["queue.buffering.max.kbytes"] = Math.Min(pendingKb, int.MaxValue).ToString(CultureInfo.InvariantCulture),
                ["queue.buffering.max.messages"] = "1000000",
                ["message.timeout.ms"] = ((long)_transport.Options.MessageTimeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture),
                ["socket.keepalive.enable"] = "true",
                ["reconnect.backoff.max.ms"] = "2000",
            });
            return new ProducerBuilder<byte[], byte[]>(config)
                .SetErrorHandler(OnError)
                .SetLogHandler((_, m) => { if (m.Level <= SyslogLevel.Error) RateLimitedLog($"kafka producer: {m.Message}"); })
                .SetStatisticsHandler((_, json) => Interlocked.Exchange(ref TxBytes, ParseTxBytes(json)))
                .Build();
        }

        public SendResult TrySend(in OutboundMessage message)
        {
            // librdkafka copies the value during Produce (MSG_F_COPY), so one exact-size array per
            // family is reused: full batches all have the same length. TrySend for a family runs
            // under that family's batch lock, so the spare slot is never shared.
            var family = (int)message.Family;
            var value = _spares[family] is { } spare && spare.Length == message.Length ? spare : new byte[message.Length];
            message.Buffer.AsSpan(0, message.Length).CopyTo(value);
            ArrayPool<byte>.Shared.Return(message.Buffer);
            if (Volatile.Read(ref _disposed) != 0) return SendResult.Full;
            if (_fatal != null) Rebuild();
            if (message.HostId != _keyHost)
            {
                _key = KeyOf(message.HostId);
                _keyHost = message.HostId;
            }
            try
            {
                var report = new Delivery(_listener, message.Family, message.RecordCount, message.Length);
                _producer.Produce(_topics[family], new Message<byte[], byte[]> { Key = _key, Value = value }, report.Handle);
                return SendResult.Accepted;
            }
            catch (ProduceException<byte[], byte[]> e) when (e.Error.Code == ErrorCode.Local_QueueFull)
            {
                return SendResult.Full;
            }
            catch (KafkaException e)
            {
                RateLimitedLog($"produce to {_topics[family]} failed: {e.Error.Reason}");
                if (e.Error.IsFatal) _fatal = e.Error.Reason;
                return SendResult.Full;
            }
            finally
            {
                _spares[family] = value;
            }
        }

        /// <summary>What a delivery report is about (the value array has been reused by then).</summary>
        private sealed class Delivery(IDeliveryListener listener, MessageFamily family, int records, int bytes)
        {
            public void Handle(DeliveryReport<byte[], byte[]> report)
            {
                if (report.Error.IsError)
                    listener.Failed(family, records, report.Status == PersistenceStatus.PossiblyPersisted, report.Error.Reason);
                else
                    listener.Delivered(family, records, bytes);
            }
        }

        private void OnError(IProducer<byte[], byte[]> producer, Error error)
        {
            if (error.IsFatal)
            {
                _fatal = error.Reason;
                _log($"kafka producer fatal error: {error.Reason}");
            }
            else
            {
                // Broker down, connection refused...: librdkafka reconnects by itself; say so now and then.
                RateLimitedLog($"kafka producer: {error.Reason} (retrying)");
            }
        }

        // After a fatal error (for example the idempotent producer lost its sequence state) the
        // client cannot go on: build a new one; the old one's messages fail and are counted.
        private void Rebuild()
        {
            lock (_swap)
            {
                var reason = _fatal;
                if (reason == null) return;
                var old = _producer;
                _producer = Build();
                _fatal = null;
                _listener.ProducerRestarted(reason);
                _ = Task.Run(() =>
                {
                    try
                    {
                        old.Flush(TimeSpan.FromSeconds(1));
                    }
                    catch (KafkaException)
                    {
                    }
                    old.Dispose();
                });
            }
        }

        private void RateLimitedLog(string message)
        {
            var now = Environment.TickCount64;
            var last = Interlocked.Read(ref _lastErrorLog);
            if (now - last < 5000 || Interlocked.CompareExchange(ref _lastErrorLog, now, last) != last) return;
            _log(message);
        }

        public Task FlushAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
            Task.Run(() =>
            {
                try
                {
                    _producer.Flush(timeout);
                }
                catch (KafkaException e)
                {
                    _log($"flush: {e.Error.Reason}");
                }
            }, cancellationToken).WaitAsync(cancellationToken);

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            lock (_swap) _producer.Dispose();
        }
    }
}
