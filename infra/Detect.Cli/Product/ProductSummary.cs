using Detect.Alerts.Policy;
using Detect.Transport;

namespace Detect.Cli.Product;

/// <summary>The one JSON object `up --json` and `pipeline --json` print last.</summary>
internal static class ProductSummary
{
    public static Dictionary<string, object?> Build(ProductPipeline pipeline, object? records, PublisherStats? publisher, PolicyExecutor? executor)
    {
        var snap = pipeline.Snapshot;
        var close = pipeline.CloseLatency.Snapshot();
        var transport = pipeline.TransportLatency.Snapshot();
        var alerts = pipeline.Alerts.Engine.Stats;
        var policy = pipeline.Alerts.Policy.Stats;
        var result = new Dictionary<string, object?>
        {
            ["records"] = records,
            ["families"] = pipeline.Families.ToDictionary(f => f.Family, f => (object)new Dictionary<string, object?>
            {
                ["phase"] = f.Phase.ToString().ToLowerInvariant(),
                ["model"] = f.Model,
                ["windows"] = f.WindowsSeen,
                ["scored"] = f.WindowsScored,
                ["archived"] = f.WindowsArchived,
                ["unscored"] = f.WindowsUnscored,
                ["detail"] = f.Detail,
            }),
            ["alerts"] = new Dictionary<string, object>
            {
                ["scored_windows"] = alerts.WindowsScored,
                ["anomalous"] = alerts.Anomalous,
                ["raised"] = alerts.Raised,
                ["deduplicated"] = alerts.Deduplicated,
                ["rate_limited"] = alerts.RateLimited,
                ["published"] = pipeline.Alerts.Published,
                ["log"] = pipeline.AlertLogPath,
            },
            ["policy"] = new Dictionary<string, object?>
            {
                ["enforce"] = pipeline.Alerts.Policy.Options.Enforce,
                ["decisions"] = policy.Decisions,
                ["dry_run_decisions"] = policy.DryRunDecisions,
                ["repeats"] = policy.Repeats,
                ["acks_received"] = pipeline.Acks.Total,
                ["applied"] = executor?.Count(PolicyAckStatus.Applied),
                ["dry_run"] = executor?.Count(PolicyAckStatus.DryRun),
                ["refused"] = executor?.Count(PolicyAckStatus.Refused),
                ["failed"] = executor?.Count(PolicyAckStatus.Failed),
            },
            ["window_end_to_score_ms"] = new Dictionary<string, double> { ["p50"] = Math.Round(close.P50, 1), ["p99"] = Math.Round(close.P99, 1), ["max"] = Math.Round(close.Max, 1) },
            ["transport_ms"] = new Dictionary<string, double> { ["p50"] = Math.Round(transport.P50, 1), ["p99"] = Math.Round(transport.P99, 1), ["max"] = Math.Round(transport.Max, 1) },
            ["window_seconds"] = pipeline.Options.Window.TotalSeconds,
            ["state"] = pipeline.Options.StateDirectory,
        };
        if (snap != null)
        {
            var p = snap.Pipeline;
            result["pipeline"] = new Dictionary<string, object>
            {
                ["records"] = p.Syscall.Records + p.Flow.Records,
                ["windows"] = new Dictionary<string, long> { ["syscall"] = p.Syscall.Rows, ["flow"] = p.Flow.Rows },
                ["late_records"] = p.LateRecords,
                ["evictions"] = p.Syscall.Evictions + p.Flow.Evictions,
                ["decode_errors"] = p.Decode.Errors,
                ["failed_messages"] = snap.MessageErrors,
            };
            if (pipeline.Features is { } features)
                result["features_published"] = new Dictionary<string, long>
                {
                    ["batches"] = features.Batches,
                    ["messages"] = features.Messages,
                    ["rows"] = features.Rows,
                    ["refused_rows"] = features.Refused,
                    ["dropped_rows"] = pipeline.FeatureCarrierStats?.RecordsDropped ?? 0,
                };
            result["consumer"] = new Dictionary<string, long>
            {
                ["records"] = snap.Consumer.RecordsReceived,
                ["messages"] = snap.Consumer.MessagesReceived,
                ["missing_records"] = snap.Consumer.MissingRecords,
                ["duplicates"] = snap.Consumer.DuplicateRecords,
                ["dead_lettered"] = snap.Consumer.DeadLettered,
            };
        }
        if (publisher != null)
        {
            result["publisher"] = new Dictionary<string, long>
            {
                ["appended"] = publisher.RecordsAppended,
                ["delivered"] = publisher.RecordsDelivered,
                ["dropped"] = publisher.RecordsDropped,
            };
        }
        return result;
    }
}
