using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json;
using Detect.Cli.Product;
using Detect.Pipeline.Arrow;
using Detect.Transport;
using Detect.Transport.Kafka;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect pipeline --kafka host:port [--group G]`: the pipeline half of a distributed deployment.
/// A member of a consumer group (run any number: the partitions, hence the hosts, are shared among
/// them) that windows the sensors' records, learns a baseline per family where the state folder
/// has no model, scores, and publishes alerts (alerts topic) and policy commands (policy topic,
/// keyed by the target host, whose `detect up --kafka` or sensors apply and acknowledge them).
/// The same code as `detect up`, without the sensors.
/// </summary>
public sealed class PipelineCommand : ICliCommand
{
    public Command Create()
    {
        var productOptions = new ProductCliOptions();
        var kafka = new Option<string>("--kafka") { Description = "Kafka bootstrap servers host:port[,...]; 'local' for the address ./detect broker wrote", Required = true };
        var kafkaConfig = new Option<string[]>("--kafka-config") { Description = "librdkafka setting key=value (repeatable: TLS, SASL)", AllowMultipleArgumentsPerToken = true };
        var group = new Option<string>("--group") { Description = "Consumer group: instances of one group share the partitions", DefaultValueFactory = _ => "detect-pipeline" };
        var refresh = new Option<double>("--refresh") { Description = "Seconds between status lines", DefaultValueFactory = _ => 5.0 };
        var seconds = new Option<double?>("--seconds") { Description = "Stop after this long (default: run until Ctrl-C)" };
        var json = new Option<bool>("--json") { Description = "At exit, print one JSON object (records, windows, phases, alerts, latencies) as the last line" };
        var command = new Command("pipeline", "Run the pipeline half (windows, models, alerts, policy) as a Kafka consumer-group member until Ctrl-C")
        {
            kafka, kafkaConfig, group, refresh, seconds, json,
        };
        productOptions.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            ProductOptions options;
            KafkaOptions kafkaOptions;
            try
            {
                options = productOptions.Read(parse) with { GroupId = parse.GetValue(group)! };
                kafkaOptions = KafkaOptions.Parse(parse.GetValue(kafka)!, parse.GetValue(kafkaConfig)) with { Log = m => Console.Error.WriteLine("pipeline: kafka: " + m) };
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"pipeline: {e.Message}");
                return 2;
            }
            return await Run(options, kafkaOptions, TimeSpan.FromSeconds(Math.Max(0.5, parse.GetValue(refresh))), parse.GetValue(seconds), parse.GetValue(json), ct).ConfigureAwait(false);
        });
        return command;
    }

    private static async Task<int> Run(ProductOptions options, KafkaOptions kafka, TimeSpan refresh, double? seconds, bool json, CancellationToken ct)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (seconds is { } s) stop.CancelAfter(TimeSpan.FromSeconds(s));
        var signals = 0;
        void OnSignal(PosixSignalContext c)
        {
            c.Cancel = true;
            if (Interlocked.Increment(ref signals) > 1) Environment.Exit(130);
            stop.Cancel();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);

        using var transport = new KafkaTransport(kafka);
        using var pipeline = new ProductPipeline(transport, options, [FeatureFamily.Syscall, FeatureFamily.Flow], HostIdentity.Local,
            m => Console.Error.WriteLine("pipeline: " + m));
        pipeline.Start();
        Console.Error.WriteLine($"pipeline: group {options.GroupId} on {transport.Name}; state in {options.StateDirectory}; window {options.Window.TotalSeconds:G} s; " +
            $"policy {(options.Policy.Enforce ? "ENFORCING" : "dry run")}; alerts to {transport.TopicPrefix}alerts and {options.AlertLogPath}");
        var view = new ProductView("pipeline", pipeline, null, null, null, null, transport.Name);
        var shownAlerts = 0L;
        while (!stop.Token.WaitHandle.WaitOne(refresh))
        {
            Console.WriteLine(view.Line() + Assignment(pipeline));
            shownAlerts = PrintAlerts(pipeline, shownAlerts);
        }
        Console.Error.WriteLine("pipeline: stopping: reading what is still arriving, closing every open window");
        await pipeline.StopAsync(TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        PrintAlerts(pipeline, shownAlerts);
        Console.WriteLine(view.Line() + Assignment(pipeline));
        Console.Error.WriteLine($"pipeline: stopped; offsets committed; alerts in {pipeline.AlertLogPath}");
        if (json)
        {
            var snap = pipeline.Snapshot;
            var records = snap == null ? null : MessageFamilies.Telemetry.ToDictionary(MessageFamilies.Name, f => snap.RecordsByFamily[(int)f]);
            Console.WriteLine(JsonSerializer.Serialize(ProductSummary.Build(pipeline, records, null, null)));
        }
        return 0;
    }

    private static string Assignment(ProductPipeline pipeline) =>
        pipeline.Snapshot is { Assignment.Count: > 0 } snap ? $" | partitions {string.Join(",", snap.Assignment)}" : " | no partitions yet";

    private static long PrintAlerts(ProductPipeline pipeline, long shown)
    {
        var raised = pipeline.Alerts.Engine.Stats.Raised;
        var recent = pipeline.Alerts.RecentAlerts;
        var fresh = (int)Math.Min(raised - shown, recent.Count);
        foreach (var a in recent.Skip(recent.Count - fresh)) Console.WriteLine($"alert: {a}");
        return raised;
    }
}
