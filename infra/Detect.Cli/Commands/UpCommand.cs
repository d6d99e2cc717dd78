using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json;
using Detect.Cli.Product;
using Detect.Cli.Sensors;
using Detect.Pipeline.Arrow;
using Detect.Records;
using Detect.Sensors;
using Detect.Sensors.Bpf;
using Detect.Transport;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect up`: the whole product on this host in one process. Sensors (syscall and process; flows
/// on the interfaces the user names) -> transport (the in-process bus, or Kafka with --kafka) ->
/// pipeline (windows, features) -> per family: a baseline learnt from this host when no model
/// exists, then scoring -> alerts (log, alerts topic) -> policy (dry run unless --enforce) ->
/// the sensors' enforcement, acknowledged. A live terminal view until Ctrl-C/SIGTERM, then an
/// orderly stop: sensors detached and drained, every open window closed and scored, archives and
/// logs flushed, enforcement programs detached.
/// </summary>
public sealed class UpCommand : ICliCommand
{
    public Command Create()
    {
        var sensorOptions = new SensorCliOptions();
        var productOptions = new ProductCliOptions();
        var iface = new Option<string[]>("--iface") { Description = "Also watch network flows on this interface (NAME or NAME@NETNS; repeatable). None by default: Detect never attaches to an interface you did not name", AllowMultipleArgumentsPerToken = true };
        var kafka = new Option<string?>("--kafka") { Description = "Run the same path through Kafka (host:port[,...], 'local' for ./detect broker's address) instead of the in-process bus" };
        var kafkaConfig = new Option<string[]>("--kafka-config") { Description = "librdkafka setting key=value (repeatable)", AllowMultipleArgumentsPerToken = true };
        var group = new Option<string?>("--group") { Description = "Consumer group of the pipeline (default detect-pipeline)" };
        var policyOptions = new HostPolicyCliOptions();
        var refresh = new Option<double>("--refresh") { Description = "Seconds between display updates", DefaultValueFactory = _ => 1.0 };
        var seconds = new Option<double?>("--seconds") { Description = "Stop after this long (default: run until Ctrl-C)" };
        var json = new Option<bool>("--json") { Description = "At exit, print one JSON object (counts, windows, phases, alerts, latencies) as the last line" };
        var command = new Command("up", "Run Detect on this host: sensors, pipeline, models (a baseline is learnt first where none exists), alerts and policy, with a live view, until Ctrl-C")
        {
            iface, kafka, kafkaConfig, group, refresh, seconds, json,
        };
        policyOptions.AddTo(command);
        sensorOptions.AddTo(command);
        productOptions.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            UpSettings settings;
            try
            {
                var product = productOptions.Read(parse);
                if (parse.GetValue(group) is { } g) product = product with { GroupId = g };
                settings = new UpSettings
                {
                    Sensors = sensorOptions.Read(parse),
                    Product = product,
                    Policy = policyOptions.Read(parse, product.Policy.Enforce, parse.GetValue(iface) ?? []),
                    Kafka = parse.GetValue(kafka),
                    KafkaConfig = parse.GetValue(kafkaConfig) ?? [],
                    Refresh = TimeSpan.FromSeconds(Math.Max(0.1, parse.GetValue(refresh))),
                    Seconds = parse.GetValue(seconds),
                    Json = parse.GetValue(json),
                };
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"up: {e.Message}");
                return 2;
            }
            return await Run(settings, ct).ConfigureAwait(false);
        });
        return command;
    }

    private sealed record UpSettings
    {
        public required SensorOptions Sensors { get; init; }
        public required ProductOptions Product { get; init; }
        public required HostPolicySettings Policy { get; init; }
        public IReadOnlyList<string> Interfaces => Policy.Interfaces;
        public string? Kafka { get; init; }
        public required IReadOnlyList<string> KafkaConfig { get; init; }
        public TimeSpan Refresh { get; init; }
        public double? Seconds { get; init; }
        public bool Json { get; init; }
    }

    private static async Task<int> Run(UpSettings s, CancellationToken ct)
    {
        try
        {
            BpfSystem.EnsurePrivileged();
        }
        catch (BpfPrivilegeException e)
        {
            Console.Error.WriteLine($"up: {e.Message}");
            return SensorStart.StartFailed;
        }
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var signals = 0;
        void OnSignal(PosixSignalContext c)
        {
            c.Cancel = true;
            // A second Ctrl-C means now: the orderly stop is taking too long for the user.
            if (Interlocked.Increment(ref signals) > 1)
            {
                Console.Error.WriteLine("up: stopping now (second signal); attached programs are released as the process exits");
                Environment.Exit(130);
            }
            stop.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);

        ProductView? view = null;
        var terminal = ProductView.IsTerminal;
        void Say(string text)
        {
            if (terminal && view != null) view.Event(text);
            else Console.Error.WriteLine("up: " + text);
        }

        ITransport transport;
        try
        {
            transport = Transports.FromCommandLine(s.Kafka, s.KafkaConfig, m => Say("kafka: " + m));
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"up: {e.Message}");
            return 2;
        }
        using var transportScope = transport;
        var hostId = HostIdentity.Local;
        var families = new List<FeatureFamily>();
        if (s.Sensors.SyscallMode != SyscallMode.Off || s.Sensors.ProcessEvents) families.Add(FeatureFamily.Syscall);
        if (s.Interfaces.Count > 0) families.Add(FeatureFamily.Flow);

        // The pipeline joins its group first, so nothing the sensors publish is missed.
        using var pipeline = new ProductPipeline(transport, s.Product, families, hostId, Say);
        pipeline.Start();
        Console.Error.WriteLine($"up: state in {s.Product.StateDirectory}; transport {transport.Name}; window {s.Product.Window.TotalSeconds:G} s; " +
            $"policy {(s.Product.Policy.Enforce ? "ENFORCING" : "dry run")} ({string.Join("; ", s.Product.Policy.Config.Rules)})");

        using var policy = HostPolicy.TryStart("up", transport, hostId, s.Policy, Say);
        if (policy == null)
        {
            await pipeline.StopAsync(TimeSpan.Zero, TimeSpan.Zero).ConfigureAwait(false);
            return SensorStart.StartFailed;
        }

        using var publisher = transport.CreatePublisher(new PublisherOptions { HostId = hostId, Log = Say });
        var sensors = SensorRunner.TryStart("up", s.Sensors, s.Interfaces, publisher);
        if (sensors == null)
        {
            await pipeline.StopAsync(TimeSpan.Zero, TimeSpan.Zero).ConfigureAwait(false);
            return SensorStart.StartFailed; // disposing the policy detaches its programs
        }
        using (sensors)
        {
            view = new ProductView("up", pipeline, sensors, publisher, policy.Executor, policy.Enforcer, transport.Name);
            if (s.Seconds is { } secs) stop.CancelAfter(TimeSpan.FromSeconds(secs)); // counted from when everything runs
            view.Run(s.Refresh, stop.Token, () => sensors.Faulted);
            stop.Cancel();

            Console.Error.WriteLine("up: stopping: detaching sensors, draining rings");
            sensors.Stop();
            var delivered = await publisher.FlushAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
            Console.Error.WriteLine("up: closing every open window, scoring and flushing");
            await pipeline.StopAsync(s.Kafka == null ? TimeSpan.FromMilliseconds(300) : TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(30)).ConfigureAwait(false);
            terminal = false;
            await policy.StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            Console.WriteLine(view.Line());
            var flowNote = sensors.FlowStats is { } fs ? $"; flows: {fs.Counters.Packets:N0} packets in {fs.Counters.Records:N0} records" : "";
            Console.Error.WriteLine($"up: sensors detached; rings drained; windows closed and scored; {(delivered ? "every record delivered" : $"{publisher.Stats.RecordsInFlight:N0} records undelivered")}{flowNote}; " +
                $"alerts in {pipeline.AlertLogPath}");
            if (s.Json) Console.WriteLine(JsonSerializer.Serialize(Summary(sensors, publisher, pipeline, policy.Executor)));
        }
        return 0;
    }

    private static Dictionary<string, object?> Summary(SensorRunner sensors, RecordPublisher publisher, ProductPipeline pipeline, PolicyExecutor executor)
    {
        var losses = sensors.Agent.ReadLosses();
        var records = new Dictionary<string, object>();
        for (var t = 1; t < RecordFormat.TypeCount; t++)
        {
            var type = (RecordType)t;
            records[RecordFormat.NameOf(type)] = new Dictionary<string, long> { ["records"] = sensors.Handler.Count(type), ["lost"] = (long)losses.Lost(type) };
        }
        return ProductSummary.Build(pipeline, records, publisher.Stats, executor);
    }
}
