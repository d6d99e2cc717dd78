namespace Detect.Transport.Kafka;

/// <summary>
/// Where the Kafka cluster is and how to talk to it. <see cref="Config"/> is passed to every
/// client as librdkafka properties: TLS and SASL go there (security.protocol=SASL_SSL,
/// ssl.ca.location=..., sasl.mechanism=SCRAM-SHA-512, sasl.username=..., sasl.password=...).
/// The bundled librdkafka has PLAIN, SCRAM and OAUTHBEARER but no GSSAPI (Kerberos).
/// </summary>
public sealed record KafkaOptions
{
    /// <summary>"host:port[,host:port...]".</summary>
    public required string BootstrapServers { get; init; }

    /// <summary>librdkafka properties for every client (TLS, SASL, timeouts); they win over Detect's defaults.</summary>
    public IReadOnlyDictionary<string, string> Config { get; init; } = new Dictionary<string, string>();

    public string TopicPrefix { get; init; } = MessageFamilies.DefaultTopicPrefix;

    /// <summary>Producer compression: lz4 (default), zstd, snappy, gzip or none.</summary>
    public string Compression { get; init; } = "lz4";

    /// <summary>How long the producer retries a message before reporting it failed (counted as dropped).</summary>
    public TimeSpan MessageTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>librdkafka statistics every this often (for wire byte counts); zero: off.</summary>
    public TimeSpan StatisticsInterval { get; init; } = TimeSpan.Zero;

    /// <summary>Where the consumer and producer say what went wrong; null: stderr.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// Reads the --kafka argument and --kafka-config key=value settings. "local" stands for the
    /// address `./detect broker` wrote (LocalKafkaBroker.DefaultAddressFile); "@FILE" for the address in FILE.
    /// </summary>
    public static KafkaOptions Parse(string bootstrap, IEnumerable<string>? settings = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(bootstrap);
        var servers = bootstrap.Trim();
        if (servers == "local" || servers.StartsWith('@'))
        {
            var file = servers == "local" ? LocalKafkaBroker.DefaultAddressFile : servers[1..];
            if (!File.Exists(file))
                throw new ArgumentException($"--kafka {servers}: {file} does not exist (start the local broker with ./detect broker)");
            servers = File.ReadAllText(file).Trim();
        }
        var config = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var setting in settings ?? [])
        {
            var eq = setting.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0) throw new ArgumentException($"--kafka-config {setting}: expected key=value");
            var key = setting[..eq].Trim();
            if (!config.TryAdd(key, setting[(eq + 1)..]))
                throw new ArgumentException($"--kafka-config {key} is given twice");
        }
        var options = new KafkaOptions { BootstrapServers = servers, Config = config };
        if (config.Remove("detect.topic.prefix", out var prefix)) options = options with { TopicPrefix = prefix };
        if (config.TryGetValue("compression.type", out var compression)) options = options with { Compression = compression };
        return options;
    }
}
