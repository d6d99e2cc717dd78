using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Detect.Alerts;

/// <summary>One feature that made a window unusual: its value and the normal range seen in training.</summary>
/// <param name="Detail">What the window's value was made of, where the pipeline can say (the calls behind a hashed n-gram feature), else null.</param>
public sealed record AlertFeature(string Feature, float Value, float NormalLow, float NormalHigh, string? Detail = null)
{
    /// <summary>In words, as the models explain: "fstat calls: 67% of calls, normally 0-1% (f_sc_fstat)".</summary>
    public override string ToString() =>
        Detect.Models.Scoring.FeatureWords.Describe(new Detect.Models.Scoring.FeatureContribution(Feature, Value, NormalLow, NormalHigh, 0f), Detail);
}

/// <summary>
/// An anomalous window: which entity of which host, when, how unusual (calibrated score: 1.0 is
/// the model's threshold), how severe, why (the features furthest outside their normal range),
/// and which model said so. The JSON form (snake_case names) is what the alerts topic and the
/// alert log carry; README.md (Alerts) documents every field.
/// </summary>
public sealed record Alert
{
    /// <summary>Stable id of this alert: 16 hex digits hashed from family, host, entity and window start.</summary>
    public required string Id { get; init; }

    /// <summary>Host name (the feature batch's `host` column).</summary>
    public required string Host { get; init; }

    /// <summary>The transport's host id (hex) where known, for routing enforcement back to that host's sensors.</summary>
    public string? HostId { get; init; }

    /// <summary>`syscall` (entity: a process, `tgid@start_ns comm`) or `flow` (entity: a source address).</summary>
    public required string Family { get; init; }

    public required string Entity { get; init; }

    public required long WindowStartNs { get; init; }

    public required long WindowEndNs { get; init; }

    /// <summary>Records that fell in the window.</summary>
    public long Records { get; init; }

    public required float Score { get; init; }

    /// <summary>none, low, medium, high, critical (from the score: 1, 1.5, 2, 3).</summary>
    public required string Severity { get; init; }

    /// <summary>The few features furthest outside their normal range.</summary>
    public IReadOnlyList<AlertFeature> Explanation { get; init; } = [];

    /// <summary>The explanation in words.</summary>
    public string Summary { get; init; } = "";

    /// <summary>The model that scored the window ("syscall/v0003").</summary>
    public required string Model { get; init; }

    public string FeatureSchema { get; init; } = "";

    /// <summary>Ground truth of a labelled replay (null live).</summary>
    public string? Label { get; init; }

    /// <summary>Anomalous windows of this entity not raised since its previous alert (deduplication and rate limit).</summary>
    public long Suppressed { get; init; }

    /// <summary>When the alert was raised, unix ns.</summary>
    public long CreatedNs { get; init; }

    [JsonIgnore]
    public DateTime WindowStart => DateTime.UnixEpoch.AddTicks(WindowStartNs / 100);

    [JsonIgnore]
    public DateTime WindowEnd => DateTime.UnixEpoch.AddTicks(WindowEndNs / 100);

    /// <summary>Severity as the models' enum (None for an unknown name).</summary>
    [JsonIgnore]
    public Detect.Models.Calibration.Severity SeverityLevel =>
        Enum.TryParse<Detect.Models.Calibration.Severity>(Severity, ignoreCase: true, out var s) ? s : Detect.Models.Calibration.Severity.None;

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture,
            $"{Severity} {Family} {Entity} on {Host}, window {WindowStart:HH:mm:ss}-{WindowEnd:HH:mm:ss}: score {Score:F2} ({Model}){(Summary.Length > 0 ? ": " + Summary : "")}");

    public byte[] ToJsonUtf8() => JsonSerializer.SerializeToUtf8Bytes(this, AlertJson.Options);

    public string ToJson() => Encoding.UTF8.GetString(ToJsonUtf8());

    public static Alert FromJson(ReadOnlySpan<byte> json) =>
        JsonSerializer.Deserialize<Alert>(json, AlertJson.Options) ?? throw new JsonException("an alert cannot be null");

    /// <summary>The transport record (type 64) for this alert.</summary>
    public byte[] ToRecord() => ControlRecord.Encode(ControlRecordType.Alert, ToJsonUtf8(), CreatedNs);

    /// <summary>Stable id of the window an alert is about.</summary>
    public static string MakeId(string family, string host, string entity, long windowStartNs)
    {
        // FNV-1a 64 over the identifying fields: the same window gives the same id on every pipeline instance.
        var hash = 14695981039346656037UL;
        void Mix(ReadOnlySpan<char> text)
        {
            foreach (var c in text)
            {
                hash ^= c;
                hash *= 1099511628211UL;
            }
            hash ^= 0xFF;
            hash *= 1099511628211UL;
        }
        Mix(family);
        Mix(host);
        Mix(entity);
        Mix(windowStartNs.ToString(CultureInfo.InvariantCulture));
        return hash.ToString("x16", CultureInfo.InvariantCulture);
    }
}

/// <summary>The JSON settings of alerts, policy commands and acknowledgements.</summary>
public static class AlertJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };
}
