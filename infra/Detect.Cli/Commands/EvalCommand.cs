using System.CommandLine;
using System.Diagnostics;
using Detect.Models.Detectors;
using Detect.Models.Evaluation;
using Detect.Models.Features;
using Detect.Models.Training;
using Detect.Pipeline;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect eval adfa-ld|cicids2017|archive`: trains on normal data, scores labelled data and
/// reports ROC AUC, TPR at 1% FPR and per-class rates at the calibrated threshold. The data sets
/// go through the pipeline's replay and feature code (the live path), never a separate one.
/// </summary>
public sealed class EvalCommand : ICliCommand
{
    public Command Create()
    {
        var command = new Command("eval", "Measure detection on labelled data (ROC AUC, TPR at 1% FPR, per-class rates); prints one JSON object last.");
        command.Subcommands.Add(AdfaLd());
        command.Subcommands.Add(CicIds2017());
        command.Subcommands.Add(Archive());
        return command;
    }

    private sealed record Common(Option<string> Detector, Option<double> Fpr, Option<string?> Report, Option<string?> Registry, Option<int> Folds);

    private static Common AddCommon(Command c, string defaultDetector)
    {
        var common = new Common(
            new Option<string>("--detector") { Description = $"{string.Join(", ", Detectors.Kinds)} (default {defaultDetector}; cover reads the syscall sequences of syscall/2)", DefaultValueFactory = _ => defaultDetector },
            new Option<double>("--fpr") { Description = "Target false-positive rate per window on held-out training normals (score 1.0)", DefaultValueFactory = _ => 0.01 },
            new Option<string?>("--report") { Description = "Folder for report.md and roc.png (default: out/eval-<set>)" },
            new Option<string?>("--registry") { Description = "Also save the trained model (with its figures) as a version of this registry folder" },
            new Option<int>("--calibration-folds") { Description = "0: threshold on a held-out quarter of the training samples; K >= 2: cross-fitted over K folds, model fitted on all", DefaultValueFactory = _ => 0 });
        c.Options.Add(common.Detector);
        c.Options.Add(common.Fpr);
        c.Options.Add(common.Report);
        c.Options.Add(common.Registry);
        c.Options.Add(common.Folds);
        return common;
    }

    private static Command AdfaLd()
    {
        var train = new Option<string>("--train") { Description = "Folder of normal trace files (e.g. adfa-ld/Training_Data_Master)", Required = true };
        var test = new Option<string>("--test") { Description = "Folder holding Validation_Data_Master/ and Attack_Data_Master/<Class>_<n>/", Required = true };
        var c = new Command("adfa-ld", "ADFA-LD: train on normal traces, test on validation traces and attack runs; one score per trace") { train, test };
        var common = AddCommon(c, "cover");
        c.SetAction((parse, ct) => Task.FromResult(Run(parse, common, "adfa-ld", ct, () =>
        {
            var trainDir = parse.GetValue(train)!;
            var testDir = parse.GetValue(test)!;
            DatasetLayout.CheckAdfaTrain(trainDir);
            DatasetLayout.CheckAdfaTest(testDir);
            var trainM = Replay(FeatureFamily.Syscall, p => AdfaLdReplay.Run(trainDir, p, onProblem: Warn, ct: ct), "train");
            var testM = FeatureMatrix.Concat([
                Replay(FeatureFamily.Syscall, p => AdfaLdReplay.Run(Path.Combine(testDir, "Validation_Data_Master"), p, onProblem: Warn, ct: ct), "validation"),
                Replay(FeatureFamily.Syscall, p => AdfaLdReplay.Run(Path.Combine(testDir, "Attack_Data_Master"), p, onProblem: Warn, ct: ct), "attack"),
            ]);
            var notes = new[] { $"Data: ADFA-LD, train `{Path.GetFullPath(trainDir)}`, test `{Path.GetFullPath(testDir)}` (Validation_Data_Master + Attack_Data_Master), replayed by the pipeline (AdfaLdReplay -> FeaturePipeline, family syscall): each trace is one process in one window, so a trace's score is its window's score." };
            return (trainM, testM, notes);
        })));
        return c;
    }

    private static Command CicIds2017()
    {
        var train = new Option<string>("--train") { Description = "Folder of CIC-IDS2017 CSV files; only BENIGN rows are used", Required = true };
        var test = new Option<string>("--test") { Description = "Folder of CIC-IDS2017 CSV files; every row is scored with its Label", Required = true };
        var c = new Command("cicids2017", "CIC-IDS2017: train on BENIGN flows, test on every labelled flow row; one score per flow row") { train, test };
        var common = AddCommon(c, "knn");
        c.SetAction((parse, ct) => Task.FromResult(Run(parse, common, "cicids2017", ct, () =>
        {
            var trainDir = parse.GetValue(train)!;
            var testDir = parse.GetValue(test)!;
            DatasetLayout.CheckCsvFolder(trainDir, needBenign: true);
            DatasetLayout.CheckCsvFolder(testDir, needBenign: false);
            var trainAll = Replay(FeatureFamily.Flow, p => CicIds2017Replay.Run([trainDir], p, CicGrouping.Row, onProblem: Warn, ct: ct), "train");
            var testAll = Replay(FeatureFamily.Flow, p => CicIds2017Replay.Run([testDir], p, CicGrouping.Row, onProblem: Warn, ct: ct), "test");
            var notes = new List<string> { $"Data: CIC-IDS2017, train `{Path.GetFullPath(trainDir)}` (BENIGN rows only), test `{Path.GetFullPath(testDir)}` (every row), replayed by the pipeline (CicIds2017Replay, one row per window -> FeaturePipeline, family flow): a flow row takes the score of its own window." };
            var trainNormal = trainAll.NormalRows();
            // The same CSV rows on both sides (e.g. both options name the shared folder): split
            // them by row, half to train and half to test, so no scored row was trained on.
            var shared = new HashSet<string>(trainNormal.SampleIds.OfType<string>(), StringComparer.Ordinal);
            shared.IntersectWith(testAll.SampleIds.OfType<string>());
            if (shared.Count > 0)
            {
                bool TrainHalf(string id) => (uint)StableHash(id) % 2 == 0;
                trainNormal = trainNormal.Where(r => trainNormal.SampleIds[r] is not { } id || !shared.Contains(id) || TrainHalf(id));
                testAll = testAll.Where(r => testAll.SampleIds[r] is not { } id || !shared.Contains(id) || !TrainHalf(id));
                notes.Add($"{shared.Count} BENIGN rows were in both folders: split by a hash of FILE:LINE, half trained on, the other half tested.");
            }
            return (trainNormal, testAll, notes.ToArray());
        })));
        return c;
    }

    private static Command Archive()
    {
        var train = new Option<string>("--train-archive") { Description = "Parquet archive with normal windows", Required = true };
        var test = new Option<string>("--test-archive") { Description = "Parquet archive with labelled windows (label, sample_id)", Required = true };
        var family = new Option<string>("--family") { Description = "syscall or flow", Required = true };
        var c = new Command("archive", "Labelled Parquet feature archives (e.g. archived replays): train on normal windows of one, score the other per sample_id") { train, test, family };
        var common = AddCommon(c, "knn");
        c.SetAction((parse, ct) => Task.FromResult(Run(parse, common, "archive", ct, () =>
        {
            var fam = parse.GetValue(family)!;
            var trainM = ParquetArchive.ReadFamilyAsync(parse.GetValue(train)!, fam, ct: ct).GetAwaiter().GetResult().NormalRows();
            var testM = ParquetArchive.ReadFamilyAsync(parse.GetValue(test)!, fam, ct: ct).GetAwaiter().GetResult();
            return (trainM, testM, new[] { $"Data: archives `{parse.GetValue(train)}` (normal windows) and `{parse.GetValue(test)}`, family {fam}." });
        })));
        return c;
    }

    private static int Run(ParseResult parse, Common common, string set, CancellationToken ct,
        Func<(FeatureMatrix Train, FeatureMatrix Test, string[] Notes)> load)
    {
        var sw = Stopwatch.StartNew();
        var kind = parse.GetValue(common.Detector)!;
        if (!Detectors.Kinds.Contains(kind))
        {
            Console.Error.WriteLine($"detect eval {set}: unknown detector '{kind}' ({string.Join(", ", Detectors.Kinds)})");
            return 2;
        }
        FeatureMatrix train, test;
        string[] notes;
        try
        {
            (train, test, notes) = load();
        }
        catch (Exception e) when (e is DatasetLayoutException or IOException or InvalidDataException or FeatureSchemaMismatchException)
        {
            Console.Error.WriteLine($"detect eval {set}: {e.Message}");
            return 2;
        }
        ct.ThrowIfCancellationRequested();
        Console.WriteLine($"features: {train.Rows} training windows, {test.Rows} test windows, schema {train.FeatureSchema} ({train.Columns} features) in {sw.Elapsed.TotalSeconds:F1} s");
        var reportDir = parse.GetValue(common.Report) ?? Path.Combine("out", "eval-" + set);
        var options = new TrainOptions { Detector = kind, TargetFpr = parse.GetValue(common.Fpr), Source = set, CalibrationFolds = parse.GetValue(common.Folds) };
        EvaluationResult result;
        try
        {
            result = Evaluator.Run(train, test, options, $"{set}: {options.Detector} on {train.FeatureSchema}", reportDir, parse.GetValue(common.Registry), notes);
        }
        catch (Exception e) when (e is FeatureSchemaMismatchException or ArgumentException)
        {
            Console.Error.WriteLine($"detect eval {set}: {e.Message}");
            return 2;
        }
        var r = result.Report;
        r.Extra["detector"] = options.Detector;
        r.Extra["feature_schema"] = train.FeatureSchema;
        r.Extra["report"] = Path.GetFullPath(result.ReportPath!);
        r.Extra["seconds"] = Math.Round(sw.Elapsed.TotalSeconds, 1);
        foreach (var c in r.PerClass) Console.WriteLine($"  {c.Label,-28} {c.Samples,6} samples  {c.Rate,7:P1} flagged");
        Console.WriteLine($"ROC AUC {r.Auc:F4}, TPR at 1% FPR {r.TprAt1PctFpr:F4}; report {result.ReportPath}");
        Console.WriteLine(r.ToJson());
        return 0;
    }

    /// <summary>Runs one replay through a fresh pipeline and collects the family's feature batches.</summary>
    private static FeatureMatrix Replay(FeatureFamily family, Func<FeaturePipeline, ReplayResult> replay, string what)
    {
        var pipeline = new FeaturePipeline(new PipelineOptions());
        var parts = new List<FeatureMatrix>();
        // The batch is valid only during the call: FromArrow copies it.
        pipeline.AddSink((f, batch) =>
        {
            if (f == family && batch.Length > 0) parts.Add(FeatureMatrix.FromArrow(batch));
        });
        var result = replay(pipeline);
        Console.WriteLine($"replayed {what}: {result.Units} units ({string.Join(", ", result.UnitsByLabel.Select(kv => $"{kv.Key} {kv.Value}"))}), {result.Skipped} skipped, {result.Records} records");
        if (parts.Count == 0) throw new InvalidDataException($"the {what} replay produced no {FeatureSchema.NameOf(family)} windows");
        return FeatureMatrix.Concat(parts);
    }

    private static void Warn(string problem) => Console.Error.WriteLine($"  skipped: {problem}");

    private static int StableHash(string s)
    {
        var h = 2166136261u;
        foreach (var ch in s) h = (h ^ ch) * 16777619u;
        return (int)h;
    }
}

public sealed class DatasetLayoutException(string message) : Exception(message);

/// <summary>Checks a data folder's layout before a long replay, naming what is missing.</summary>
public static class DatasetLayout
{
    public static void CheckAdfaTrain(string dir)
    {
        if (!Directory.Exists(dir)) throw new DatasetLayoutException($"--train {dir} does not exist (expected a folder of normal ADFA-LD trace files, e.g. Training_Data_Master)");
        if (!Directory.EnumerateFiles(dir, "*.txt", SearchOption.AllDirectories).Any())
            throw new DatasetLayoutException($"--train {dir} holds no trace files (*.txt: space-separated i386 syscall numbers)");
        if (Directory.Exists(Path.Combine(dir, "Attack_Data_Master")))
            throw new DatasetLayoutException($"--train {dir} holds Attack_Data_Master/: training takes normal traces only (name Training_Data_Master)");
    }

    public static void CheckAdfaTest(string dir)
    {
        if (!Directory.Exists(dir)) throw new DatasetLayoutException($"--test {dir} does not exist");
        var missing = new[] { "Validation_Data_Master", "Attack_Data_Master" }.Where(d => !Directory.Exists(Path.Combine(dir, d))).ToList();
        if (missing.Count > 0)
            throw new DatasetLayoutException($"--test {dir} lacks {string.Join(" and ", missing.Select(m => m + "/"))} (expected Validation_Data_Master/ with normal traces and Attack_Data_Master/<Class>_<n>/ with attack traces)");
        var runs = Directory.GetDirectories(Path.Combine(dir, "Attack_Data_Master"));
        if (runs.Length == 0) throw new DatasetLayoutException($"{Path.Combine(dir, "Attack_Data_Master")} holds no attack run folders (<Class>_<n>/)");
        var badRun = runs.Select(Path.GetFileName).FirstOrDefault(n => n == null || n.LastIndexOf('_') <= 0 || !int.TryParse(n.AsSpan(n.LastIndexOf('_') + 1), out _));
        if (badRun != null) throw new DatasetLayoutException($"attack run folder '{badRun}' is not named <Class>_<n> (e.g. Adduser_1)");
        if (!Directory.EnumerateFiles(Path.Combine(dir, "Validation_Data_Master"), "*.txt").Any())
            throw new DatasetLayoutException($"{Path.Combine(dir, "Validation_Data_Master")} holds no trace files (*.txt)");
    }

    public static void CheckCsvFolder(string dir, bool needBenign)
    {
        var option = needBenign ? "--train" : "--test";
        if (!Directory.Exists(dir)) throw new DatasetLayoutException($"{option} {dir} does not exist (expected a folder of CIC-IDS2017 CSV files)");
        var files = Directory.GetFiles(dir, "*.csv").Where(f => new FileInfo(f).Length > 0).ToList();
        if (files.Count == 0) throw new DatasetLayoutException($"{option} {dir} holds no CSV files");
        foreach (var f in files)
        {
            var header = File.ReadLines(f).FirstOrDefault() ?? "";
            var columns = header.Split(',').Select(c => c.Trim()).ToHashSet(StringComparer.Ordinal);
            var missing = new[] { "Src IP", "Dst IP", "Dst Port", "Protocol", "Flow Duration", "Label" }.Where(c => !columns.Contains(c)).ToList();
            if (missing.Count > 0) throw new DatasetLayoutException($"{f}: header lacks column(s) {string.Join(", ", missing)} (expected the CIC-IDS2017 CSV format)");
        }
        if (needBenign && !files.Any(f => File.ReadLines(f).Skip(1).Take(100_000).Any(l => l.EndsWith(",BENIGN", StringComparison.Ordinal) || l.Contains(",BENIGN,", StringComparison.Ordinal))))
            throw new DatasetLayoutException($"--train {dir}: no row is labelled BENIGN, and training uses only BENIGN rows");
    }
}
