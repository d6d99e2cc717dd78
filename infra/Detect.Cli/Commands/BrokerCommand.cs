using System.CommandLine;
using System.Runtime.InteropServices;
using Detect.Transport;
using Detect.Transport.Kafka;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect broker`: a local Kafka-protocol broker (librdkafka's mock cluster) with the project's
/// topics, for trying the distributed mode on one machine: `./detect broker` in one terminal,
/// then `--kafka local` (or the printed address) for the sensor and pipeline processes.
/// </summary>
public sealed class BrokerCommand : ICliCommand
{
    public Command Create()
    {
        var addressFile = new Option<string>("--address-file")
        {
            Description = "Where to write the bootstrap address (what --kafka local reads)",
            DefaultValueFactory = _ => LocalKafkaBroker.DefaultAddressFile,
        };
        var brokers = new Option<int>("--brokers") { Description = "Brokers in the cluster", DefaultValueFactory = _ => 1 };
        var partitions = new Option<int>("--partitions") { Description = "Partitions of the telemetry topics (syscalls, process, flows)", DefaultValueFactory = _ => 6 };
        var command = new Command("broker",
            "Run a local Kafka-protocol broker (librdkafka mock cluster: no persistence, ~5 MB kept per partition) with Detect's topics until Ctrl-C")
        {
            addressFile, brokers, partitions,
        };
        command.SetAction(async (parse, ct) =>
        {
            var file = parse.GetValue(addressFile)!;
            using var broker = new LocalKafkaBroker(new LocalBrokerOptions
            {
                Brokers = parse.GetValue(brokers),
                TelemetryPartitions = parse.GetValue(partitions),
            });
            broker.WriteAddressFile(file);
            Console.WriteLine(broker.BootstrapServers);
            Console.Error.WriteLine($"detect broker: listening at {broker.BootstrapServers} (written to {file}); librdkafka {KafkaNative.Version()}");
            Console.Error.WriteLine($"detect broker: topics {string.Join(", ", MessageFamilies.All.Select(f => MessageFamilies.Topic(f)))}; Ctrl-C stops it");
            // Ctrl-C arrives through ct; a service manager's SIGTERM should stop it the same way.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
            {
                c.Cancel = true;
                stop.Cancel();
            });
            try
            {
                await Task.Delay(Timeout.Infinite, stop.Token);
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                // Only our own address: another broker may have started since.
                if (File.Exists(file) && File.ReadAllText(file).Trim() == broker.BootstrapServers) File.Delete(file);
                Console.Error.WriteLine("detect broker: stopped");
            }
            return 0;
        });
        return command;
    }
}
