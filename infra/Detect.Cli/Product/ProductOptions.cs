using System.CommandLine;
using System.Globalization;
using Detect.Alerts;
using Detect.Alerts.Policy;

namespace Detect.Cli.Product;

/// <summary>How the pipeline half of the product runs (`up` and `pipeline`).</summary>
public sealed record ProductOptions
{
    /// <summary>Registry, learning archives, alert log: STATE/models/&lt;family&gt;, STATE/learning, STATE/alerts.jsonl.</summary>
    public required string StateDirectory { get; init; }

    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(10);

    public TimeSpan Lateness { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How long a family without a model archives its windows before a baseline is trained.</summary>
    public TimeSpan Learning { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>Detector of baselines (the models library's names).</summary>
    public string Detector { get; init; } = "knn";

    /// <summary>Target false-positive rate of baselines (sets score 1.0).</summary>
    public double Fpr { get; init; } = 0.01;

    /// <summary>Most windows a baseline trains on (an even sample beyond it), bounding training time and memory.</summary>
    public int MaxTrainingWindows { get; init; } = 20_000;

    /// <summary>Archive every feature batch (STATE/archive) as well, not only while learning.</summary>
    public bool ArchiveAll { get; init; }

    /// <summary>Also publish every feature batch on the transport's `features` topic (Arrow IPC).</summary>
    public bool PublishFeatures { get; init; }

    /// <summary>Consumer group of the pipeline.</summary>
    public string GroupId { get; init; } = "detect-pipeline";

    public AlertOptions Alerts { get; init; } = new();

    public PolicyOptions Policy { get; init; } = new();

    /// <summary>Write every scored window (JSONL) here; null: only alerts are logged.</summary>
    public string? ScoreLog { get; init; }

    public string RegistryRoot(string family) => Path.Combine(StateDirectory, "models", family);
    public string LearningRoot => Path.Combine(StateDirectory, "learning");
    public string ArchiveRoot => Path.Combine(StateDirectory, "archive");
    public string AlertLogPath => Path.Combine(StateDirectory, "alerts.jsonl");
    public string DefaultPolicyPath => Path.Combine(StateDirectory, "policy.json");

    /// <summary>The state folder when none is given: /var/lib/detect for root, else ~/.local/state/detect.</summary>
    public static string DefaultStateDirectory =>
        Environment.IsPrivilegedProcess
            ? "/var/lib/detect"
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "state", "detect");
}

/// <summary>The options `up` and `pipeline` share, and their reading into <see cref="ProductOptions"/>.</summary>
internal sealed class ProductCliOptions
{
    public Option<string?> State { get; } = new("--state") { Description = $"State folder: model registry, learning archives, alert log (default {ProductOptions.DefaultStateDirectory})" };
    public Option<double> Window { get; } = new("--window") { Description = "Window length, seconds", DefaultValueFactory = _ => 10 };
    public Option<double?> Lateness { get; } = new("--lateness") { Description = "Allowed lateness of records, seconds (default: 2, or a fifth of a shorter window)" };
    public Option<string> Learn { get; } = new("--learn") { Description = "Learning period of a family without a model before its baseline is trained (e.g. 10m, 90s)", DefaultValueFactory = _ => "10m" };
    public Option<string> Detector { get; } = new("--detector") { Description = "Detector of baselines (knn, iforest, pca, robustz, ewma)", DefaultValueFactory = _ => "knn" };
    public Option<double> Fpr { get; } = new("--fpr") { Description = "Target false-positive rate per window of baselines", DefaultValueFactory = _ => 0.01 };
    public Option<bool> ArchiveAll { get; } = new("--archive") { Description = "Archive every feature batch as Parquet (STATE/archive), not only while learning" };
    public Option<bool> PublishFeatures { get; } = new("--publish-features") { Description = "Also publish every feature batch on the features topic (Arrow IPC streams, detect.features on Kafka)" };
    public Option<string?> Policy { get; } = new("--policy") { Description = "Policy rules (JSON; default STATE/policy.json when it exists, else built-in rules: see README)" };
    public Option<bool> Enforce { get; } = new("--enforce") { Description = "Apply policy decisions (default: dry run: decisions are checked, logged and shown, nothing is applied)" };
    public Option<double> MinScore { get; } = new("--alert-score") { Description = "Calibrated score from which a window is an alert (1.0 = the model's threshold)", DefaultValueFactory = _ => 1.0 };
    public Option<string> Cooldown { get; } = new("--alert-cooldown") { Description = "One alert per entity per this long unless it escalates (e.g. 5m)", DefaultValueFactory = _ => "5m" };
    public Option<string?> ScoreLog { get; } = new("--score-log") { Description = "Also write every scored window to this JSONL file" };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { State, Window, Lateness, Learn, Detector, Fpr, ArchiveAll, PublishFeatures, Policy, Enforce, MinScore, Cooldown, ScoreLog })
            command.Options.Add(o);
    }

    public ProductOptions Read(ParseResult parse)
    {
        var state = Path.GetFullPath(parse.GetValue(State) ?? ProductOptions.DefaultStateDirectory);
        var window = parse.GetValue(Window);
        if (window <= 0) throw new ArgumentException("--window must be positive");
        var lateness = parse.GetValue(Lateness) ?? Math.Min(2, window / 5);
        if (lateness < 0 || lateness >= window) throw new ArgumentException("--lateness must be at least 0 and shorter than --window");
        var fpr = parse.GetValue(Fpr);
        if (fpr is <= 0 or >= 0.5) throw new ArgumentException("--fpr must be in (0, 0.5)");
        var detector = parse.GetValue(Detector)!;
        if (!Detect.Models.Detectors.Detectors.Kinds.Contains(detector))
            throw new ArgumentException($"--detector {detector}: use one of {string.Join(", ", Detect.Models.Detectors.Detectors.Kinds)}");
        var policyPath = parse.GetValue(Policy);
        var defaultPolicy = Path.Combine(state, "policy.json");
        PolicyConfig config;
        if (policyPath != null)
        {
            if (!File.Exists(policyPath)) throw new ArgumentException($"--policy {policyPath}: no such file");
            config = PolicyConfig.Load(policyPath);
        }
        else config = File.Exists(defaultPolicy) ? PolicyConfig.Load(defaultPolicy) : new PolicyConfig();
        var minScore = parse.GetValue(MinScore);
        if (minScore <= 0) throw new ArgumentException("--alert-score must be positive");
        return new ProductOptions
        {
            StateDirectory = state,
            Window = TimeSpan.FromSeconds(window),
            Lateness = TimeSpan.FromSeconds(lateness),
            Learning = Durations.Parse(parse.GetValue(Learn)!, "--learn"),
            Detector = detector,
            Fpr = fpr,
            ArchiveAll = parse.GetValue(ArchiveAll),
            PublishFeatures = parse.GetValue(PublishFeatures),
            Alerts = new AlertOptions { MinScore = (float)minScore, Cooldown = Durations.Parse(parse.GetValue(Cooldown)!, "--alert-cooldown") },
            Policy = new PolicyOptions { Config = config, Enforce = parse.GetValue(Enforce) },
            ScoreLog = parse.GetValue(ScoreLog) is { } s ? Path.GetFullPath(s) : null,
        };
    }
}

/// <summary>"90s", "10m", "1h", "1.5" (seconds).</summary>
internal static class Durations
{
    public static TimeSpan Parse(string text, string option)
    {
        var t = text.Trim();
        var unit = 1.0;
        if (t.EndsWith("ms", StringComparison.Ordinal)) (unit, t) = (0.001, t[..^2]);
        else if (t.EndsWith('s')) t = t[..^1];
        else if (t.EndsWith('m')) (unit, t) = (60, t[..^1]);
        else if (t.EndsWith('h')) (unit, t) = (3600, t[..^1]);
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || v < 0 || double.IsInfinity(v))
            throw new ArgumentException($"{option} {text}: use a duration such as 30s, 10m or 1h");
        return TimeSpan.FromSeconds(v * unit);
    }

    public static string Format(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t.Minutes:00}:{t.Seconds:00}" : $"{t.Minutes}:{t.Seconds:00}";
}
