using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Detect.Models.Features;

namespace Detect.Models.Evaluation;

/// <summary>One scored unit (ADFA-LD trace, CIC-IDS2017 flow row): its class and score.</summary>
public readonly record struct ScoredSample(string Id, string Label, double Score)
{
    public bool IsAttack => !FeatureColumns.IsNormalLabel(Label);
}

/// <summary>Detection rate of one class at the calibrated threshold (for the normal class: its false-positive rate).</summary>
public sealed record ClassRate(string Label, int Samples, int Detected)
{
    public double Rate => Samples == 0 ? 0 : (double)Detected / Samples;
}

/// <summary>
/// Evaluation figures of a model on labelled samples: ROC AUC, TPR at 1% FPR, per-class rates
/// at the calibrated threshold (score >= 1.0), a Markdown report and a ROC plot (PNG).
/// </summary>
public sealed class EvaluationReport
{
    private EvaluationReport(string title, IReadOnlyList<ScoredSample> samples, Roc roc, IReadOnlyList<ClassRate> perClass, double threshold)
    {
        Title = title;
        Samples = samples;
        Roc = roc;
        PerClass = perClass;
        Threshold = threshold;
    }

    public string Title { get; }
    public IReadOnlyList<ScoredSample> Samples { get; }
    public Roc Roc { get; }
    public double Auc => Roc.Auc;
    public double TprAt1PctFpr => Roc.TprAtFpr(0.01);
    public IReadOnlyList<ClassRate> PerClass { get; }
    public double Threshold { get; }
    /// <summary>Share of normal samples at or above the threshold.</summary>
    public double FalsePositiveRate => PerClass.Where(c => FeatureColumns.IsNormalLabel(c.Label)).Sum(c => c.Detected) / (double)Math.Max(1, PerClass.Where(c => FeatureColumns.IsNormalLabel(c.Label)).Sum(c => c.Samples));
    /// <summary>Extra lines for the report (data, commands, what a sample is).</summary>
    public List<string> Notes { get; } = [];
    public Dictionary<string, object> Extra { get; } = [];

    public static EvaluationReport Create(string title, IReadOnlyList<ScoredSample> samples, double threshold = 1.0)
    {
        var roc = Roc.Compute(samples.Select(s => s.Score).ToList(), samples.Select(s => s.IsAttack).ToList());
        var perClass = samples.GroupBy(s => s.Label, StringComparer.Ordinal)
            .Select(g => new ClassRate(g.Key, g.Count(), g.Count(s => s.Score >= threshold)))
            .OrderBy(c => c.Label == "normal" || c.Label == "BENIGN" ? 0 : 1).ThenBy(c => c.Label, StringComparer.Ordinal).ToList();
        return new EvaluationReport(title, samples, roc, perClass, threshold);
    }

    /// <summary>Scores of windows turned into scores of samples: a sample (trace, flow) takes its highest window score.</summary>
    public static List<ScoredSample> MaxBySample(IReadOnlyList<string?> sampleIds, IReadOnlyList<string?> labels, IReadOnlyList<float> scores)
    {
        var best = new Dictionary<string, (string Label, double Score)>(StringComparer.Ordinal);
        for (var i = 0; i < scores.Count; i++)
        {
            var id = sampleIds[i] ?? "#" + i.ToString(CultureInfo.InvariantCulture);
            var label = labels[i] ?? "normal";
            if (!best.TryGetValue(id, out var b) || scores[i] > b.Score) best[id] = (label, scores[i]);
        }
        return best.Select(kv => new ScoredSample(kv.Key, kv.Value.Label, kv.Value.Score)).OrderBy(s => s.Id, StringComparer.Ordinal).ToList();
    }

    public Dictionary<string, double> Figures() => new()
    {
        ["auc"] = Math.Round(Auc, 4),
        ["tpr_at_1pct_fpr"] = Math.Round(TprAt1PctFpr, 4),
        ["fpr_at_threshold"] = Math.Round(FalsePositiveRate, 4),
    };

    /// <summary>The one JSON object `detect eval` prints last.</summary>
    public string ToJson()
    {
        var perClass = new JsonObject();
        foreach (var c in PerClass) perClass[c.Label] = new JsonObject { ["samples"] = c.Samples, ["detected"] = c.Detected, ["rate"] = Math.Round(c.Rate, 4) };
        var o = new JsonObject
        {
            ["title"] = Title,
            ["auc"] = Math.Round(Auc, 4),
            ["tpr_at_1pct_fpr"] = Math.Round(TprAt1PctFpr, 4),
            ["fpr_at_threshold"] = Math.Round(FalsePositiveRate, 4),
            ["threshold"] = Threshold,
            ["normal_samples"] = Roc.Negatives,
            ["attack_samples"] = Roc.Positives,
            ["per_class"] = perClass,
        };
        foreach (var (k, v) in Extra) o[k] = JsonSerializer.SerializeToNode(v);
        return o.ToJsonString();
    }

    /// <summary>Writes report.md and roc.png into a folder; returns the Markdown path.</summary>
    public string Write(string folder)
    {
        Directory.CreateDirectory(folder);
        var png = Path.Combine(folder, "roc.png");
        WriteRocPlot(png, [(Title, Roc)]);
        var md = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        md.AppendLine(inv, $"# {Title}").AppendLine();
        foreach (var note in Notes) md.AppendLine(note);
        if (Notes.Count > 0) md.AppendLine();
        md.AppendLine("| figure | value |").AppendLine("| --- | --- |");
        md.AppendLine(inv, $"| ROC AUC | {Auc:F4} |");
        md.AppendLine(inv, $"| TPR at 1% FPR | {TprAt1PctFpr:F4} |");
        md.AppendLine(inv, $"| FPR at the calibrated threshold (score >= {Threshold:0.##}) | {FalsePositiveRate:F4} |");
        md.AppendLine(inv, $"| normal / attack samples | {Roc.Negatives} / {Roc.Positives} |").AppendLine();
        md.AppendLine("Per class at the calibrated threshold (for the normal class: the share wrongly flagged):").AppendLine();
        md.AppendLine("| class | samples | flagged | rate |").AppendLine("| --- | ---: | ---: | ---: |");
        foreach (var c in PerClass) md.AppendLine(inv, $"| {c.Label} | {c.Samples} | {c.Detected} | {c.Rate:P1} |");
        md.AppendLine().AppendLine("![ROC curve](roc.png)");
        var path = Path.Combine(folder, "report.md");
        File.WriteAllText(path, md.ToString());
        return path;
    }

    /// <summary>ROC curves of one or more models in one PNG (the notebooks compare versions with it).</summary>
    public static void WriteRocPlot(string path, IReadOnlyList<(string Name, Roc Roc)> curves)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (name, roc) in curves)
        {
            var line = plot.Add.Scatter(roc.Points.Select(p => p.FalsePositiveRate).ToArray(), roc.Points.Select(p => p.TruePositiveRate).ToArray());
            line.LegendText = string.Create(CultureInfo.InvariantCulture, $"{name} (AUC {roc.Auc:F3})");
            line.MarkerSize = 0;
            line.LineWidth = 2;
        }
        var diagonal = plot.Add.Line(0, 0, 1, 1);
        diagonal.LinePattern = ScottPlot.LinePattern.Dashed;
        diagonal.Color = ScottPlot.Colors.Gray;
        plot.Axes.SetLimits(0, 1, 0, 1.02);
        plot.XLabel("false-positive rate");
        plot.YLabel("true-positive rate");
        plot.Title("ROC");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        plot.SavePng(path, 640, 480);
    }
}
