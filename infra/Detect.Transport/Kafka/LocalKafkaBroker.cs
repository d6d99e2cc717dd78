using System.Runtime.InteropServices;

namespace Detect.Transport.Kafka;

/// <summary>Settings of the local broker.</summary>
public sealed record LocalBrokerOptions
{
    /// <summary>Brokers in the mock cluster (partition leaders are spread over them).</summary>
    public int Brokers { get; init; } = 1;

    /// <summary>Partitions of the telemetry topics (syscalls, process, flows).</summary>
    public int TelemetryPartitions { get; init; } = 6;

    /// <summary>Partitions of the other topics (alerts, policy, policy-acks, dead-letters).</summary>
    public int ControlPartitions { get; init; } = 2;

    public string TopicPrefix { get; init; } = MessageFamilies.DefaultTopicPrefix;

    /// <summary>Log level of the librdkafka instance that hosts the cluster (syslog levels: 3 errors, 6 info, 7 debug).</summary>
    public int LogLevel { get; init; } = 3;
}

/// <summary>
/// A Kafka-protocol broker on 127.0.0.1: librdkafka's mock cluster, hosted through P/Invoke to
/// the librdkafka that Confluent.Kafka ships. For tests and for trying the distributed mode on
/// one machine. Known limits: it keeps about 5 MB or 100,000 message sets per partition and
/// drops older ones (a consumer behind that gets "offset out of range"); no TLS/SASL; no
/// persistence; its admin API (CreateTopics...) times out, so topics are created here with
/// rd_kafka_mock_topic_create; random ports. The first join of a consumer group is immediate
/// here (initial rebalance delay 0).
/// </summary>
public sealed class LocalKafkaBroker : IDisposable
{
    private readonly object _gate = new();
    private IntPtr _rk;
    private IntPtr _cluster;

    public LocalKafkaBroker(LocalBrokerOptions? options = null)
    {
        Options = options ?? new LocalBrokerOptions();
        KafkaNative.EnsureLoaded();
        _rk = CreateHandle(Options.LogLevel);
        _cluster = KafkaNative.rd_kafka_mock_cluster_new(_rk, Options.Brokers);
        if (_cluster == IntPtr.Zero)
        {
            KafkaNative.rd_kafka_destroy(_rk);
            throw new InvalidOperationException("rd_kafka_mock_cluster_new failed");
        }
        KafkaNative.rd_kafka_mock_group_initial_rebalance_delay_ms(_cluster, 0);
        BootstrapServers = Marshal.PtrToStringUTF8(KafkaNative.rd_kafka_mock_cluster_bootstraps(_cluster))
            ?? throw new InvalidOperationException("the mock cluster has no bootstrap address");
        CreateTopics(Options.TopicPrefix, Options.TelemetryPartitions, Options.ControlPartitions);
    }

    /// <summary>Creates every family's topic under <paramref name="prefix"/> (tests use a prefix each, for isolation).</summary>
    public void CreateTopics(string prefix, int telemetryPartitions, int controlPartitions)
    {
        foreach (var family in MessageFamilies.All)
        {
            CreateTopic(MessageFamilies.Topic(family, prefix),
                MessageFamilies.CarriesSensorRecords(family) ? telemetryPartitions : controlPartitions);
        }
    }

    public LocalBrokerOptions Options { get; }

    /// <summary>"127.0.0.1:port[,...]".</summary>
    public string BootstrapServers { get; }

    /// <summary>Creates a topic (the mock's admin API does not work).</summary>
    public void CreateTopic(string topic, int partitions)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_cluster == IntPtr.Zero, this);
            var err = KafkaNative.rd_kafka_mock_topic_create(_cluster, topic, partitions, 1);
            if (err != 0) throw new InvalidOperationException($"creating topic {topic}: {ErrorString(err)}");
        }
    }

    /// <summary>Disconnects every broker and refuses connections (a broker outage); <see cref="Start"/> ends it.</summary>
    public void Stop() => Call(KafkaNative.rd_kafka_mock_broker_set_down, "set_down");

    /// <summary>Accepts connections again after <see cref="Stop"/>.</summary>
    public void Start() => Call(KafkaNative.rd_kafka_mock_broker_set_up, "set_up");

    private void Call(Func<IntPtr, int, int> action, string what)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_cluster == IntPtr.Zero, this);
            for (var id = 1; id <= Options.Brokers; id++)
            {
                var err = action(_cluster, id);
                if (err != 0) throw new InvalidOperationException($"broker {id} {what}: {ErrorString(err)}");
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_cluster != IntPtr.Zero) KafkaNative.rd_kafka_mock_cluster_destroy(_cluster);
            if (_rk != IntPtr.Zero) KafkaNative.rd_kafka_destroy(_rk);
            _cluster = IntPtr.Zero;
            _rk = IntPtr.Zero;
        }
    }

    private static unsafe IntPtr CreateHandle(int logLevel)
    {
        var conf = KafkaNative.rd_kafka_conf_new();
        var errstr = stackalloc byte[512];
        if (KafkaNative.rd_kafka_conf_set(conf, "log_level", logLevel.ToString(System.Globalization.CultureInfo.InvariantCulture), errstr, 512) != 0)
        {
            KafkaNative.rd_kafka_conf_destroy(conf);
            throw new InvalidOperationException("rd_kafka_conf_set log_level: " + Utf8(errstr));
        }
        // A producer handle with no bootstrap servers: it only owns the cluster's thread.
        var rk = KafkaNative.rd_kafka_new(0, conf, errstr, 512);
        if (rk == IntPtr.Zero)
        {
            KafkaNative.rd_kafka_conf_destroy(conf);
            throw new InvalidOperationException("rd_kafka_new: " + Utf8(errstr));
        }
        return rk;
    }

    private static unsafe string Utf8(byte* s) => Marshal.PtrToStringUTF8((IntPtr)s) ?? "";

    private static string ErrorString(int err) => $"{Marshal.PtrToStringUTF8(KafkaNative.rd_kafka_err2str(err))} ({err})";

    /// <summary>Writes the bootstrap address to <paramref name="path"/> (atomically) for other processes to find.</summary>
    public void WriteAddressFile(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, BootstrapServers + "\n"); // no BOM: shells read this file too
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Where `./detect broker` writes its address unless told otherwise.</summary>
    public static string DefaultAddressFile => Path.Combine(Path.GetTempPath(), "detect-broker.address");
}
