using Detect.Models.Detectors;
using Detect.Models.Evaluation;
using Detect.Models.Features;
using Detect.Models.Registry;
using Detect.Models.Scoring;
using Detect.Models.Training;

namespace Detect.Models.Tests;

public class SuffixAutomatonTests
{
    private static ushort[] Seq(params int[] calls) => calls.Select(c => (ushort)c).ToArray();

    private static bool NaiveContains(IEnumerable<ushort[]> corpus, ReadOnlySpan<ushort> s)
    {
        foreach (var c in corpus)
            if (c.AsSpan().IndexOf(s) >= 0) return true;
        return false;
    }

    [Fact]
    public void SuffixAutomaton_AcceptsEverySubstringOfTheCorpus_AndNothingElse()
    {
        var rng = new Random(5);
        var corpus = Enumerable.Range(0, 40).Select(_ => Enumerable.Range(0, rng.Next(1, 30)).Select(_ => (ushort)rng.Next(5)).ToArray()).ToList();
        var sam = SuffixAutomaton.Build(corpus);
        foreach (var c in corpus)
            for (var i = 0; i < c.Length; i++)
                for (var j = i + 1; j <= c.Length; j++)
                    Assert.True(sam.Contains(c.AsSpan(i, j - i)));
        var rejected = 0;
        for (var t = 0; t < 5000; t++)
        {
            var s = Enumerable.Range(0, rng.Next(1, 12)).Select(_ => (ushort)rng.Next(6)).ToArray();
            var expected = NaiveContains(corpus, s);
            Assert.Equal(expected, sam.Contains(s));
            if (!expected) rejected++;
        }
        Assert.True(rejected > 1000, $"only {rejected} random strings were not substrings: the test would prove little");
    }

    [Fact]
    public void SuffixAutomaton_NoSubstringSpansTwoSequences()
    {
        var sam = SuffixAutomaton.Build([Seq(1, 2), Seq(3, 4)]);
        Assert.True(sam.Contains(Seq(1, 2)));
        Assert.True(sam.Contains(Seq(3, 4)));
        Assert.False(sam.Contains(Seq(2, 3)));
        Assert.Equal(2, sam.LongestPrefix(Seq(1, 2, 3, 4)));
    }

    [Fact]
    public void SuffixAutomaton_StaysLinearInTheCorpus()
    {
        var rng = new Random(9);
        var corpus = Enumerable.Range(0, 200).Select(_ => Enumerable.Range(0, 500).Select(_ => (ushort)rng.Next(300)).ToArray()).ToList();
        var sam = SuffixAutomaton.Build(corpus);
        Assert.Equal(100_000, sam.CorpusCalls);
        Assert.True(sam.States <= 2 * sam.CorpusCalls + 1, $"{sam.States} states");
        Assert.True(sam.Transitions <= 3 * sam.CorpusCalls, $"{sam.Transitions} transitions");
    }

    [Fact]
    public void Cover_GreedyLongestPieces_AreTheFewestPossible()
    {
        var rng = new Random(11);
        for (var round = 0; round < 200; round++)
        {
            var corpus = Enumerable.Range(0, 6).Select(_ => Enumerable.Range(0, rng.Next(2, 12)).Select(_ => (ushort)rng.Next(4)).ToArray()).ToList();
            var sam = SuffixAutomaton.Build(corpus);
            var s = Enumerable.Range(0, rng.Next(1, 16)).Select(_ => (ushort)rng.Next(5)).ToArray();
            // Fewest pieces by dynamic programming over every split (a call no sequence has costs one piece).
            var best = new int[s.Length + 1];
            for (var i = 1; i <= s.Length; i++)
            {
                best[i] = best[i - 1] + 1;
                for (var j = 0; j < i - 1; j++)
                    if (NaiveContains(corpus, s.AsSpan(j, i - j))) best[i] = Math.Min(best[i], best[j] + 1);
            }
            Assert.Equal(best[s.Length], sam.Cover(s, out _));
        }
    }

    [Fact]
    public void Cover_ACallNeverSeen_IsAPieceOfItsOwn_AndIsCounted()
    {
        var sam = SuffixAutomaton.Build([Seq(1, 2, 3, 4)]);
        Span<int> starts = stackalloc int[8];
        Assert.Equal(3, sam.Cover(Seq(1, 2, 9, 3, 4), out var unknown, starts));
        Assert.Equal(1, unknown);
        Assert.Equal([0, 2, 3], starts[..3].ToArray());
        Assert.Equal(1, sam.Cover(Seq(2, 3, 4), out unknown));
        Assert.Equal(0, unknown);
    }
}

public class SequenceDetectorTests
{
    private static SequenceColumn Column(params ushort[][] rows) => SequenceColumn.FromRows(rows);

    [Fact]
    public void Cover_SequenceWithUnseenSubsequences_ScoresAboveANormalOne()
    {
        var normal = SyntheticSequences.Windows(300, 0, seed: 1);
        var detector = CoveringDetector.Fit(normal.Sequences!, normal.Columns, new DetectorOptions());
        var test = SyntheticSequences.Windows(1, 1, seed: 2); // row 0 normal, row 1 the same kind with a spliced stretch
        var scores = new float[2];
        detector.Score([], 2, test.Sequences!, scores, default);
        Assert.True(scores[1] > scores[0], $"spliced {scores[1]} <= normal {scores[0]}");
        // A sequence made of one normal stretch scores 0; every call a new piece scores 1.
        var stretch = normal.Sequences![0][5..40].ToArray();
        Assert.Equal(0f, detector.ScoreOne(stretch));
        Assert.Equal(1f, detector.ScoreOne([900, 901, 902]));
        Assert.Equal(0f, detector.ScoreOne([]));
    }

    [Fact]
    public void Cover_TrainedOnNormalSequences_ReproducesItsAuc_OnADeterministicSet()
    {
        var model = ModelTrainer.Train(SyntheticSequences.Windows(600, 0, seed: 3), new TrainOptions { Detector = "cover", Source = "synthetic" });
        var test = SyntheticSequences.Windows(800, 200, seed: 4);
        var result = Evaluator.Run(SyntheticSequences.Windows(600, 0, seed: 3), test, new TrainOptions { Detector = "cover" }, "synthetic sequences");
        var (_, calibrated) = model.Score(test);
        var auc = EvaluationReport.Create("again", EvaluationReport.MaxBySample(test.SampleIds, test.Labels, calibrated)).Auc;
        Assert.Equal(result.Report.Auc, auc, 10); // the one evaluation path and a direct scoring agree
        Assert.Equal(0.9962, Math.Round(auc, 4)); // and the figure is reproducible to the digit
        var splice = result.Report.PerClass.Single(c => c.Label == "Splice");
        Assert.True(splice.Rate > 0.8, $"detected {splice.Rate:P1} at the calibrated threshold");
        Assert.True(result.Report.FalsePositiveRate < 0.05, $"FPR {result.Report.FalsePositiveRate:P1}");
    }

    [Fact]
    public void Cover_SavedAndLoaded_ScoresIdentically_FromArrowBatches()
    {
        using var dir = new TempDir();
        var model = ModelTrainer.Train(SyntheticSequences.Windows(300, 0, seed: 5), new TrainOptions { Detector = "cover" });
        var registry = new ModelRegistry(Path.Combine(dir.Path, "syscall"));
        registry.Promote(registry.Save(model));
        var test = SyntheticSequences.Windows(50, 20, seed: 6);
        var (_, direct) = model.Score(test);
        using var scorer = ModelScorer.FromRegistry(registry.Root, new ScorerOptions { PollInterval = TimeSpan.FromHours(1) });
        var scored = scorer.Score(test.ToArrow());
        Assert.Equal(direct, scored.Scores.Take(test.Rows).ToArray());
        Assert.Equal("cover", scorer.Model.Manifest.Detector);
        Assert.Equal("syscall/2", scorer.Model.FeatureSchema);
    }

    [Fact]
    public void Cover_Explanation_SaysWhereTheCallsLeaveNormalSequences()
    {
        var model = ModelTrainer.Train(SyntheticSequences.Windows(400, 0, seed: 7), new TrainOptions { Detector = "cover" });
        using var scorer = new ModelScorer(model);
        var normal = SyntheticSequences.Windows(1, 0, seed: 8).Sequences![0].ToArray();
        ushort[] attack = [.. normal[..30], 950, 951, 952, 953, .. normal[30..]];
        var batch = new FeatureMatrix("syscall", "syscall/2", SyntheticSequences.Names, new float[4], 2, sequences: Column(normal, attack)).ToArrow();
        var scored = scorer.Score(batch);
        Assert.True(scored.IsAnomalous(1), $"score {scored.Scores[1]}");
        var first = scored.Explain(1)[0];
        Assert.Equal(ModelScorer.SequencePiecesFeature, first.Feature);
        Assert.True(first.Value > model.Calibrator.Threshold);
        var text = scored.Describe(1);
        Assert.Contains("4 calls never seen", text);
        // The shortest pieces, in call order, each with the two calls before it: the unseen calls start at call 30.
        Assert.True(text.Contains("shortest pieces at call ", StringComparison.Ordinal) && text.Contains($"30 ({normal[28]} {normal[29]} | 950)", StringComparison.Ordinal), text);
        Assert.True(scored.Scores[1] > scored.Scores[0]);
    }

    [Fact]
    public void Cover_BatchWithoutSequences_IsRefused_NamingTheColumn()
    {
        var model = ModelTrainer.Train(SyntheticSequences.Windows(300, 0, seed: 9), new TrainOptions { Detector = "cover" });
        using var scorer = new ModelScorer(model);
        var withoutSeq = new FeatureMatrix("syscall", "syscall/2", SyntheticSequences.Names, new float[2], 1).ToArrow();
        var e = Assert.Throws<FeatureSchemaMismatchException>(() => scorer.Score(withoutSeq));
        Assert.Contains("`seq`", e.Message);
        var train = Assert.Throws<FeatureSchemaMismatchException>(() => ModelTrainer.Train(Synthetic.Windows(300, 0, 1), new TrainOptions { Detector = "cover" }));
        Assert.Contains("`seq`", train.Message);
    }

    [Fact]
    public void Scorer_ModelOfSyscall1_RefusesSyscall2Batches_NamingBothSchemas()
    {
        var old = ModelTrainer.Train(Synthetic.Windows(500, 0, 1, schema: "syscall/1"), new TrainOptions { Detector = "knn" });
        using var scorer = new ModelScorer(old);
        var batch = Synthetic.Windows(5, 0, 2, schema: "syscall/2").ToArrow();
        var e = Assert.Throws<FeatureSchemaMismatchException>(() => scorer.Score(batch));
        Assert.Contains("'syscall/1'", e.Message);
        Assert.Contains("'syscall/2'", e.Message);
    }

    [Fact]
    public async Task SequenceColumn_RoundTripsThroughArrowAndParquet()
    {
        using var dir = new TempDir();
        var m = SyntheticSequences.Windows(20, 5, seed: 10);
        var batch = m.ToArrow();
        Assert.Equal(Apache.Arrow.Types.ArrowTypeId.Binary, batch.Schema.GetFieldByName("seq").DataType.TypeId);
        var fromArrow = FeatureMatrix.FromArrow(batch);
        var path = await ParquetArchive.WriteAsync(dir.Path, m, TestContext.Current.CancellationToken);
        var fromParquet = await ParquetArchive.ReadFileAsync(path, TestContext.Current.CancellationToken);
        foreach (var back in new[] { fromArrow, fromParquet })
        {
            Assert.Equal(m.Rows, back.Rows);
            for (var r = 0; r < m.Rows; r++) Assert.Equal(m.Sequences![r].ToArray(), back.Sequences![r].ToArray());
            Assert.Equal(m.Values, back.Values);
        }
        // In place over the batch's buffers, including a sliced batch.
        var column = SequenceColumn.FromArrow(batch.Slice(3, 4))!;
        Assert.Equal(4, column.Count);
        Assert.Equal(m.Sequences![5].ToArray(), column[2].ToArray());
    }
}
