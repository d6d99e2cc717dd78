using System.CommandLine;
using System.Runtime.InteropServices;
using Detect.Cli.Sensors;
using Detect.Sensors;
using Detect.Transport;
using Detect.Transport.Kafka;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect sensor --kafka host:port`: the sensor half of a distributed deployment (one per
/// host): the sensors' records go to Kafka (topics detect.syscalls, detect.process,
/// detect.flows, key = host id) for any number of pipeline instances to consume. Prints what
/// was published and what was lost (in the kernel, or dropped while the broker was unreachable).
/// </summary>
public sealed class SensorCommand : ICliCommand
{
    public Command Create()
    {
        var sensorOptions = new SensorCliOptions();
        var kafka = new Option<string>("--kafka")
        {
            Description = "Kafka bootstrap servers host:port[,...]; 'local' for the address ./detect broker wrote",
            Required = true,
        };
        var kafkaConfig = new Option<string[]>("--kafka-config")
        {
            Description = "librdkafka setting key=value for the producer, repeatable (TLS, SASL: security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, ...)",
            AllowMultipleArgumentsPerToken = true,
        };
        var host = new Option<string?>("--host-name") { Description = "Publish as this host (default: this machine's id from /etc/machine-id)" };
        var refresh = new Option<double>("--refresh") { Description = "Seconds between status lines", DefaultValueFactory = _ => 5.0 };
        var seconds = new Option<double?>("--seconds") { Description = "Stop after this long (default: run until Ctrl-C)" };
        var command = new Command("sensor", "Run this host's sensors and publish their records to Kafka (distributed mode) until Ctrl-C")
        {
            kafka, kafkaConfig, host, refresh, seconds,
        };
        sensorOptions.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            SensorOptions options;
            KafkaOptions kafkaOptions;
            try
            {
                options = sensorOptions.Read(parse);
                kafkaOptions = KafkaOptions.Parse(parse.GetValue(kafka)!, parse.GetValue(kafkaConfig)) with
                {
                    Log = m => Console.Error.WriteLine("sensor: " + m),
                };
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"sensor: {e.Message}");
                return Task.FromResult(2);
            }
            var hostId = parse.GetValue(host) is { } name ? HostIdentity.FromName(name) : HostIdentity.Local;
            return Task.FromResult(Run(options, kafkaOptions, hostId, TimeSpan.FromSeconds(Math.Max(0.5, parse.GetValue(refresh))), parse.GetValue(seconds), ct));
        });
        return command;
    }

    private static int Run(SensorOptions options, KafkaOptions kafka, ulong hostId, TimeSpan refresh, double? seconds, CancellationToken ct)
    {
        using var transport = new KafkaTransport(kafka);
        using var publisher = transport.CreatePublisher(new PublisherOptions { HostId = hostId, Log = m => Console.Error.WriteLine("sensor: " + m) });
        using var agent = SensorStart.TryStart("sensor", options);
        if (agent == null) return SensorStart.StartFailed;
        Console.Error.WriteLine($"sensor: publishing as host {hostId:x16} to {transport.Name} (topics {transport.TopicPrefix}*)");
        var handler = new PublishingHandler(publisher);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (seconds is { } s) stop.CancelAfter(TimeSpan.FromSeconds(s));
        // SIGTERM (systemd stop) ends the run as Ctrl-C does: detach, drain, deliver. SIGINT too: this
        // action runs before System.CommandLine would listen for Ctrl-C, which would otherwise kill it.
        void OnSignal(PosixSignalContext c)
        {
            c.Cancel = true;
            stop.Cancel();
        }
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        // The policy engine's commands for this host: checked (allowlist, process), logged and
        // acknowledged on policy-acks; this command does not enforce (detect up --kafka --enforce does).
        using var policy = new Detect.Cli.Product.PolicyExecutor(transport, new Detect.Cli.Product.PolicyExecutorOptions { HostId = hostId, Log = m => Console.Error.WriteLine("sensor: " + m) });
        var policyTask = policy.RunAsync(stop.Token);
        var drain = agent.RunAsync(handler, stop.Token);
        while (!stop.Token.WaitHandle.WaitOne(refresh) && !drain.IsCompleted)
            Console.WriteLine(Line(agent, publisher));
        stop.Cancel();
        drain.GetAwaiter().GetResult(); // rethrows a drain failure
        agent.Stop(handler);
        policyTask.GetAwaiter().GetResult();
        var delivered = publisher.FlushAsync(TimeSpan.FromSeconds(10), CancellationToken.None).GetAwaiter().GetResult();
        Console.WriteLine(Line(agent, publisher));
        Console.Error.WriteLine(delivered
            ? "sensor: sensors detached; every published record delivered"
            : $"sensor: sensors detached; {publisher.Stats.RecordsInFlight:N0} records still undelivered at exit");
        return 0;
    }

    private static string Line(SensorAgent agent, RecordPublisher publisher)
    {
        var p = publisher.Stats;
        var losses = agent.ReadLosses();
        return $"sensor: appended {p.RecordsAppended:N0}, delivered {p.RecordsDelivered:N0}, in flight {p.RecordsInFlight:N0}, " +
            $"dropped {p.RecordsDropped:N0} (broker full/unreachable {p.RecordsDroppedFull:N0}, failed {p.RecordsDroppedFailed:N0}), " +
            $"refused {p.RecordsRejected:N0}; lost in the kernel {losses.TotalLost:N0}" + (p.LastError is { } e ? $"; last error: {e}" : "");
    }

    /// <summary>On the drain thread: each validated record into its family's batch (a copy; never blocks).</summary>
    private sealed class PublishingHandler(RecordPublisher publisher) : ISensorBatchHandler
    {
        public void OnBatch(SensorBatch batch)
        {
            foreach (var record in batch)
            {
                var family = MessageFamilies.Of(record.Type);
                if (family != MessageFamily.None) publisher.TryAppend(family, record.Bytes);
            }
        }
    }
}
