using Detect.Transport.Kafka;

namespace Detect.Transport;

/// <summary>Builds the carrier a command line asks for: Kafka with --kafka, else the in-process bus.</summary>
public static class Transports
{
    public static ITransport InProcess(InProcessOptions? options = null) => new InProcessTransport(options);

    public static ITransport Kafka(KafkaOptions options) => new KafkaTransport(options);

    /// <summary>
    /// <paramref name="kafka"/> null or empty: the in-process bus; else the Kafka cluster it names
    /// ("host:port[,...]", "local" for ./detect broker's address, "@FILE"), with
    /// <paramref name="kafkaConfig"/> ("key=value" librdkafka properties: TLS, SASL) for every client.
    /// </summary>
    public static ITransport FromCommandLine(string? kafka, IEnumerable<string>? kafkaConfig = null, Action<string>? log = null) =>
        string.IsNullOrWhiteSpace(kafka)
            ? new InProcessTransport()
            : new KafkaTransport(KafkaOptions.Parse(kafka, kafkaConfig) with { Log = log });
}
