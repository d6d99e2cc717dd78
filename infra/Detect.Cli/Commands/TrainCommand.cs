using System.CommandLine;
using System.Globalization;
using Detect.Models.Detectors;
using Detect.Models.Features;
using Detect.Models.Registry;
using Detect.Models.Training;

namespace Detect.Cli.Commands;

/// <summary>`detect train`: fits a model on the normal windows of a Parquet feature archive and saves it as the next version of a registry folder.</summary>
public sealed class TrainCommand : ICliCommand
{
    public Command Create()
    {
        var archive = new Option<string>("--archive") { Description = "Parquet feature archive (holds <family>/date=YYYY-MM-DD/hour=HH/part-N.parquet)", Required = true };
        var family = new Option<string>("--family") { Description = "Feature family: syscall or flow", Required = true };
        var output = new Option<string>("--out") { Description = "Registry folder of this model (e.g. models/registry/syscall); the new version goes to <out>/vNNNN", Required = true };
        var detector = new Option<string>("--detector") { Description = $"Detector: {string.Join(", ", Detectors.Kinds)}", DefaultValueFactory = _ => "knn" };
        var fpr = new Option<double>("--fpr") { Description = "Target false-positive rate per window on held-out normal windows (sets score 1.0)", DefaultValueFactory = _ => 0.01 };
        var from = new Option<string?>("--from") { Description = "Only windows from this UTC time (e.g. 2025-01-31T00:00)" };
        var to = new Option<string?>("--to") { Description = "Only windows up to this UTC time" };
        var noPromote = new Option<bool>("--no-promote") { Description = "Save the version without making it current" };
        var folds = new Option<int>("--calibration-folds") { Description = "0: threshold on a held-out quarter of the samples; K >= 2: cross-fitted over K folds, model fitted on all", DefaultValueFactory = _ => 0 };
        var command = new Command("train", "Train an anomaly model on the normal windows of a Parquet feature archive (rows labelled as attacks are left out).")
        {
            archive, family, output, detector, fpr, from, to, noPromote, folds,
        };
        command.SetAction(async (parse, ct) =>
        {
            var fam = parse.GetValue(family)!;
            if (!FeatureColumns.Families.Contains(fam))
            {
                Console.Error.WriteLine($"detect train: unknown family '{fam}' (syscall, flow or host)");
                return 2;
            }
            var kind = parse.GetValue(detector)!;
            if (!Detectors.Kinds.Contains(kind))
            {
                Console.Error.WriteLine($"detect train: unknown detector '{kind}' ({string.Join(", ", Detectors.Kinds)})");
                return 2;
            }
            FeatureMatrix all;
            try
            {
                all = await ParquetArchive.ReadFamilyAsync(parse.GetValue(archive)!, fam, ParseTime(parse.GetValue(from)), ParseTime(parse.GetValue(to)), ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or InvalidDataException or FeatureSchemaMismatchException or FormatException)
            {
                Console.Error.WriteLine($"detect train: {e.Message}");
                return 2;
            }
            var normal = all.NormalRows();
            Console.WriteLine($"read {all.Rows} {fam} windows of schema {all.FeatureSchema} ({all.Columns} features); training on {normal.Rows} normal windows with {kind}");
            var registry = new ModelRegistry(parse.GetValue(output)!);
            var model = ModelTrainer.Train(normal, new TrainOptions
            {
                Detector = kind,
                TargetFpr = parse.GetValue(fpr),
                CalibrationFolds = parse.GetValue(folds),
                Source = Path.GetFullPath(parse.GetValue(archive)!),
                Name = registry.Name,
            });
            var version = registry.Save(model);
            if (!parse.GetValue(noPromote)) registry.Promote(version);
            var c = model.Calibrator;
            Console.WriteLine($"saved {registry.Root}/{version}{(parse.GetValue(noPromote) ? "" : " (current)")}: {c.Description}");
            return 0;
        });
        return command;
    }

    private static DateTime? ParseTime(string? s) =>
        s == null ? null : DateTime.Parse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);
}
