using Detect.Models.Evaluation;
using Detect.Models.Features;
using Detect.Models.Registry;
using Detect.Models.Scoring;
using Detect.Models.Training;

namespace Detect.Models.Tests;

public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("detect-models-").FullName;
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

public class ModelTests
{
    private static DetectorModel Train(string detector = "knn", string schema = "syscall/1", int seed = 11) =>
        ModelTrainer.Train(Synthetic.Windows(2000, 0, seed, schema), new TrainOptions { Detector = detector, Source = "synthetic" });

    [Fact]
    public void Training_OnNormalWindows_ReproducesTheReportedAucAfterSaveAndLoad()
    {
        using var dir = new TempDir();
        var model = Train();
        var heldOut = Synthetic.Windows(1000, 300, seed: 12);
        var (_, calibrated) = model.Score(heldOut);
        var report = EvaluationReport.Create("synthetic", EvaluationReport.MaxBySample(heldOut.SampleIds, heldOut.Labels, calibrated));
        var registry = new ModelRegistry(Path.Combine(dir.Path, "syscall-model"));
        var version = registry.Save(model);
        registry.RecordEvaluation(version, report.Figures());

        // Another process (here: a fresh load) scoring the same held-out set gets the recorded figure.
        var loaded = registry.Load(version);
        var (_, again) = loaded.Score(heldOut);
        var reproduced = EvaluationReport.Create("again", EvaluationReport.MaxBySample(heldOut.SampleIds, heldOut.Labels, again));
        Assert.Equal(registry.Manifest(version).Evaluation["auc"], Math.Round(reproduced.Auc, 4));
        Assert.True(reproduced.Auc > 0.9, $"AUC {reproduced.Auc:F4}");
        Assert.Equal(calibrated, again);
    }

    [Theory]
    [InlineData("pca")]
    [InlineData("iforest")]
    [InlineData("robustz")]
    [InlineData("knn")]
    [InlineData("ewma")]
    public void Model_SavedAndLoaded_ScoresIdentically(string detector)
    {
        using var dir = new TempDir();
        var model = Train(detector);
        var test = Synthetic.Windows(100, 50, seed: 13);
        var (_, before) = model.Score(test);
        model.Save(dir.Path);
        var loaded = DetectorModel.Load(dir.Path);
        var (_, after) = loaded.Score(test);
        Assert.Equal(before, after);
        Assert.Equal(model.Manifest.Calibration, loaded.Manifest.Calibration);
        Assert.Equal(detector, loaded.Manifest.Detector);
    }

    [Fact]
    public void Training_CalibratesOnHeldOutNormals_NearTheTargetFalsePositiveRate()
    {
        var model = ModelTrainer.Train(Synthetic.Windows(4000, 0, 21), new TrainOptions { Detector = "iforest", TargetFpr = 0.05 });
        var fresh = Synthetic.Windows(4000, 0, 22);
        var (_, scores) = model.Score(fresh);
        var fpr = scores.Count(s => s >= 1f) / (double)scores.Length;
        Assert.InRange(fpr, 0.02, 0.09);
    }

    [Fact]
    public void Training_WithAttackRows_IsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => ModelTrainer.Train(Synthetic.Windows(100, 5, 1), new TrainOptions()));
        Assert.Contains("normal windows only", e.Message);
    }

    [Fact]
    public void Scorer_BatchOfAnotherFeatureSchema_IsRefusedNamingBothSchemas()
    {
        using var scorer = new ModelScorer(Train());
        var batch = Synthetic.Windows(10, 0, 1, schema: "syscall/2").ToArrow();
        var e = Assert.Throws<FeatureSchemaMismatchException>(() => scorer.Score(batch));
        Assert.Contains("'syscall/1'", e.Message);
        Assert.Contains("'syscall/2'", e.Message);
    }

    [Fact]
    public void Scorer_BatchWithRenamedFeatureColumn_IsRefusedNamingTheColumn()
    {
        using var scorer = new ModelScorer(Train());
        var names = Synthetic.Names.ToArray();
        names[2] = "f_sc_class_ipc";
        var e = Assert.Throws<FeatureSchemaMismatchException>(() => scorer.Score(Synthetic.Windows(10, 0, 1, names: names).ToArrow()));
        Assert.Contains("f_sc_class_file", e.Message);
        Assert.Contains("f_sc_class_ipc", e.Message);
    }

    [Fact]
    public void Scorer_ArrowBatch_GivesTheSameScoresAsTheMatrixPath()
    {
        var model = Train("pca");
        var test = Synthetic.Windows(200, 60, seed: 14);
        var (_, expected) = model.Score(test);
        using var scorer = new ModelScorer(model);
        var scored = scorer.Score(test.ToArrow());
        Assert.Equal(test.Rows, scored.Count);
        Assert.Equal(expected, scored.Scores.AsSpan(0, scored.Count).ToArray());
        for (var r = 0; r < scored.Count; r++)
            Assert.Equal(scored.Scores[r] >= 1f, scored.Explanations[r] != null);
    }

    [Fact]
    public void Explanation_NamesTheFeatureATestMadeAnomalous_WithValueAndNormalRange()
    {
        var model = Train("knn");
        var test = Synthetic.Windows(20, 0, seed: 15);
        var row = 7;
        test.Values[row * test.Columns + 1] = 0.41f; // f_sc_class_net, normally about 0.02-0.04
        using var scorer = new ModelScorer(model);
        var scored = scorer.Score(test.ToArrow());
        Assert.True(scored.Scores[row] >= 1f, $"score {scored.Scores[row]}");
        var top = scored.Explain(row);
        Assert.Equal("f_sc_class_net", top[0].Feature);
        Assert.Equal(0.41f, top[0].Value);
        Assert.True(top[0].NormalHigh < 0.1f && top[0].NormalLow >= 0f);
        Assert.Matches(@"^class_net calls: 41% of calls, normally [2-4](\.\d)?-[2-9](\.\d)?% \(f_sc_class_net\)", scored.Describe(row));
    }

    [Fact]
    public async Task Registry_PromotedVersion_IsPickedUpByARunningScorer_WithoutLosingBatches()
    {
        using var dir = new TempDir();
        var registry = new ModelRegistry(Path.Combine(dir.Path, "m"));
        var v1 = registry.Save(Train("robustz", seed: 31));
        registry.Promote(v1);
        var v2 = registry.Save(Train("iforest", seed: 32));
        using var scorer = ModelScorer.FromRegistry(registry.Root, new ScorerOptions { PollInterval = TimeSpan.FromMilliseconds(50) });
        var changed = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        scorer.ModelChanged += (_, e) => changed.TrySetResult(e.Current);
        Assert.Equal(v1, scorer.CurrentVersion);

        var batch = Synthetic.Windows(500, 0, 33).ToArrow();
        var scoredBy = new List<string>();
        var windows = 0;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var scoring = Task.Run(() =>
        {
            var reuse = new ScoredBatch();
            // Keep scoring until the new model has scored a few batches.
            while (scoredBy.Count(id => id.EndsWith(v2, StringComparison.Ordinal)) < 5)
            {
                cts.Token.ThrowIfCancellationRequested();
                var result = scorer.Score(batch, reuse);
                windows += result.Count;
                scoredBy.Add(result.ModelId);
            }
        }, cts.Token);
        await Task.Delay(100, cts.Token);
        registry.Promote(v2);
        Assert.Equal(v2, await changed.Task.WaitAsync(cts.Token));
        await scoring;
        Assert.Equal(scoredBy.Count * 500, windows);
        Assert.StartsWith("m/" + v1, scoredBy[0], StringComparison.Ordinal);
        Assert.Equal("m/" + v2, scoredBy[^1]);
        // Once switched, never back: each batch was scored whole by one model.
        var firstNew = scoredBy.FindIndex(id => id.EndsWith(v2, StringComparison.Ordinal));
        Assert.All(scoredBy.Skip(firstNew), id => Assert.Equal("m/" + v2, id));
    }

    [Fact]
    public void Registry_PromotedModelOfAnotherSchema_IsRefusedAndTheOldOneKeepsScoring()
    {
        using var dir = new TempDir();
        var registry = new ModelRegistry(Path.Combine(dir.Path, "m"));
        var v1 = registry.Save(Train("robustz"));
        registry.Promote(v1);
        using var scorer = ModelScorer.FromRegistry(registry.Root, new ScorerOptions { PollInterval = TimeSpan.FromHours(1), ExpectedSchema = "syscall/1" });
        Exception? refused = null;
        scorer.ReloadFailed += (_, e) => refused = e.Error;
        var v2 = registry.Save(Train("robustz", schema: "syscall/2"));
        registry.Promote(v2);
        Assert.False(scorer.CheckForPromotion());
        Assert.IsType<FeatureSchemaMismatchException>(refused);
        Assert.Contains("syscall/2", refused!.Message);
        Assert.Equal(v1, scorer.CurrentVersion);
        Assert.Equal(10, scorer.Score(Synthetic.Windows(10, 0, 1).ToArrow()).Count);
    }

    [Fact]
    public void Registry_WithoutPromotedVersion_SaysHowToMakeOne()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<InvalidOperationException>(() => ModelScorer.FromRegistry(Path.Combine(dir.Path, "empty")));
        Assert.Contains("detect train", e.Message);
    }

    [Fact]
    public async Task ParquetArchive_WrittenPartsReadBack_AsOneMatrixInTimeOrder()
    {
        using var dir = new TempDir();
        var a = Synthetic.Windows(50, 0, 1, startNs: 1_700_000_000_000_000_000);
        var b = Synthetic.Windows(30, 5, 2, startNs: 1_700_000_000_000_000_000 + 7_200_000_000_000);
        await ParquetArchive.WriteAsync(dir.Path, b, TestContext.Current.CancellationToken);
        await ParquetArchive.WriteAsync(dir.Path, a, TestContext.Current.CancellationToken);
        var files = ParquetArchive.PartFiles(dir.Path, "syscall");
        Assert.Equal(2, files.Count);
        Assert.Matches(@"syscall/date=\d{4}-\d\d-\d\d/hour=\d\d/part-0\.parquet$", files[0]);
        var m = await ParquetArchive.ReadFamilyAsync(dir.Path, "syscall", ct: TestContext.Current.CancellationToken);
        Assert.Equal(85, m.Rows);
        Assert.Equal("syscall/1", m.FeatureSchema);
        Assert.Equal(a.Values, m.Values.AsSpan(0, a.Values.Length).ToArray());
        Assert.Equal(a.SampleIds, m.SampleIds.Take(50));
        Assert.Equal(5, m.Labels.Count(l => l != "normal"));
    }

    [Fact]
    public void ParquetArchive_WrongLayout_ErrorNamesWhatIsMissing()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(Path.Combine(dir.Path, "flow"));
        var e = Assert.Throws<DirectoryNotFoundException>(() => ParquetArchive.PartFiles(dir.Path, "syscall"));
        Assert.Contains("no 'syscall/' folder", e.Message);
        Assert.Contains("flow", e.Message);
        Directory.CreateDirectory(Path.Combine(dir.Path, "syscall", "date=2025-01-01", "hour=03"));
        var e2 = Assert.Throws<FileNotFoundException>(() => ParquetArchive.PartFiles(dir.Path, "syscall"));
        Assert.Contains("part-N.parquet", e2.Message);
    }
}
