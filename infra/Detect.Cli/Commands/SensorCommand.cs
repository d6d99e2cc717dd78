using System.CommandLine;
using System.Runtime.InteropServices;
using Detect.Cli.Product;
using Detect.Cli.Sensors;
using Detect.Sensors;
using Detect.Transport;
using Detect.Transport.Kafka;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect sensor --kafka host:port`: the sensor half of a distributed deployment (one per
/// host): the sensors' records (syscalls, processes, and flows on the interfaces named with
/// --iface) go to Kafka (topics detect.syscalls, detect.process, detect.flows, key = host id) for
/// any number of pipeline instances to consume; the policy commands for this host come back and
/// are applied with --enforce (else checked and acknowledged as a dry run). Prints what was
/// published and what was lost (in the kernel, or dropped while the broker was unreachable).
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
        var iface = new Option<string[]>("--iface") { Description = "Also watch network flows (and, with --enforce, drop blocked sources) on this interface (NAME or NAME@NETNS; repeatable). None by default", AllowMultipleArgumentsPerToken = true };
        var enforce = new Option<bool>("--enforce") { Description = "Apply the policy engine's commands for this host (default: dry run: checked, logged and acknowledged, nothing applied)" };
        var policyOptions = new HostPolicyCliOptions();
        var command = new Command("sensor", "Run this host's sensors and publish their records to Kafka (distributed mode); take the policy's commands for this host; until Ctrl-C")
        {
            kafka, kafkaConfig, host, iface, enforce, refresh, seconds,
        };
        policyOptions.AddTo(command);
        sensorOptions.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            SensorOptions options;
            KafkaOptions kafkaOptions;
            HostPolicySettings policy;
            try
            {
                options = sensorOptions.Read(parse);
                policy = policyOptions.Read(parse, parse.GetValue(enforce), parse.GetValue(iface) ?? []);
                kafkaOptions = KafkaOptions.Parse(parse.GetValue(kafka)!, parse.GetValue(kafkaConfig)) with
                {
                    Log = m => Console.Error.WriteLine("sensor: " + m),
                };
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"sensor: {e.Message}");
                return 2;
            }
            var hostId = parse.GetValue(host) is { } name ? HostIdentity.FromName(name) : HostIdentity.Local;
            return await Run(options, policy, kafkaOptions, hostId, TimeSpan.FromSeconds(Math.Max(0.5, parse.GetValue(refresh))), parse.GetValue(seconds), ct).ConfigureAwait(false);
        });
        return command;
    }

    private static async Task<int> Run(SensorOptions options, HostPolicySettings policySettings, KafkaOptions kafka, ulong hostId, TimeSpan refresh, double? seconds, CancellationToken ct)
    {
        try
        {
            Detect.Sensors.Bpf.BpfSystem.EnsurePrivileged();
        }
        catch (Detect.Sensors.Bpf.BpfPrivilegeException e)
        {
            Console.Error.WriteLine($"sensor: {e.Message}");
            return SensorStart.StartFailed;
        }
        static void Say(string m) => Console.Error.WriteLine("sensor: " + m);
        using var transport = new KafkaTransport(kafka);
        // The policy commands for this host: applied with --enforce, else checked (allowlist,
        // process), logged and acknowledged on policy-acks as a dry run.
        using var policy = HostPolicy.TryStart("sensor", transport, hostId, policySettings, Say);
        if (policy == null) return SensorStart.StartFailed;
        using var publisher = transport.CreatePublisher(new PublisherOptions { HostId = hostId, Log = Say });
        using var sensors = SensorRunner.TryStart("sensor", options, policySettings.Interfaces, publisher);
        if (sensors == null) return SensorStart.StartFailed; // disposing the policy detaches its programs
        Console.Error.WriteLine($"sensor: publishing as host {hostId:x16} to {transport.Name} (topics {transport.TopicPrefix}*); policy {(policySettings.Enforce ? "ENFORCING" : "dry run")}");
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
        while (!stop.Token.WaitHandle.WaitOne(refresh) && !sensors.Faulted)
            Console.WriteLine(Line(sensors, publisher, policy));
        stop.Cancel();
        sensors.Stop();
        var delivered = await publisher.FlushAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
        await policy.StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        Console.WriteLine(Line(sensors, publisher, policy));
        var flowNote = sensors.FlowStats is { } fs ? $"; flows: {fs.Counters.Packets:N0} packets in {fs.Counters.Records:N0} records" : "";
        Console.Error.WriteLine(delivered
            ? $"sensor: sensors detached; every published record delivered{flowNote}"
            : $"sensor: sensors detached; {publisher.Stats.RecordsInFlight:N0} records still undelivered at exit{flowNote}");
        return sensors.Faulted ? 1 : 0;
    }

    private static string Line(SensorRunner sensors, RecordPublisher publisher, HostPolicy policy)
    {
        var p = publisher.Stats;
        var losses = sensors.Agent.ReadLosses();
        var e = policy.Executor;
        return $"sensor: appended {p.RecordsAppended:N0}, delivered {p.RecordsDelivered:N0}, in flight {p.RecordsInFlight:N0}, " +
            $"dropped {p.RecordsDropped:N0} (broker full/unreachable {p.RecordsDroppedFull:N0}, failed {p.RecordsDroppedFailed:N0}), " +
            $"refused {p.RecordsRejected:N0}; lost in the kernel {losses.TotalLost:N0}" +
            (sensors.Flows != null ? $"; flow records {sensors.Handler.Count(Detect.Records.RecordType.Flow):N0}" : "") +
            $"; policy {(e.Enforcing ? "applied" : "dry-run")} {e.Count(e.Enforcing ? Detect.Alerts.Policy.PolicyAckStatus.Applied : Detect.Alerts.Policy.PolicyAckStatus.DryRun):N0}, refused {e.Count(Detect.Alerts.Policy.PolicyAckStatus.Refused):N0}, failed {e.Count(Detect.Alerts.Policy.PolicyAckStatus.Failed):N0}" +
            (p.LastError is { } err ? $"; last error: {err}" : "");
    }
}
