using Detect.Models.Detectors;
using Detect.Models.Evaluation;
using Detect.Models.Features;
using Detect.Models.Training;

namespace Detect.Models.Tests;

public class DetectorTests
{
    private static double Auc(IAnomalyDetector detector, FeatureMatrix test, FeatureTransform transform)
    {
        var prepared = new float[test.Values.Length];
        transform.Apply(test.Values, test.Rows, prepared);
        var scores = new float[test.Rows];
        detector.Score(prepared, test.Rows, scores, test.Entities);
        return Roc.Compute(scores.Select(s => (double)s).ToList(), test.Labels.Select(l => l != "normal").ToList()).Auc;
    }

    private static (FeatureTransform, float[]) Fit(FeatureMatrix train)
    {
        var transform = FeatureTransform.Fit(train.Values, train.Rows, train.Columns, new TransformOptions());
        var prepared = new float[train.Values.Length];
        transform.Apply(train.Values, train.Rows, prepared);
        return (transform, prepared);
    }

    [Theory]
    // Each must clearly beat chance (0.5); robustz and ewma see features one by one and so miss
    // the attacks that only break correlations, the isolation forest misses some of those too.
    [InlineData("iforest", 0.72)]
    [InlineData("pca", 0.9)]
    [InlineData("robustz", 0.8)]
    [InlineData("knn", 0.9)]
    [InlineData("ewma", 0.75)]
    public void Detector_TrainedOnNormalOnly_RanksAttacksAboveNormal(string kind, double minimumAuc)
    {
        var train = Synthetic.Windows(1500, 0, seed: 1);
        var test = Synthetic.Windows(600, 300, seed: 2);
        var (transform, prepared) = Fit(train);
        var detector = Detectors.Detectors.Fit(kind, prepared, train.Rows, train.Columns, new DetectorOptions());
        var auc = Auc(detector, test, transform);
        Assert.True(auc >= minimumAuc, $"{kind}: AUC {auc:F4} < {minimumAuc}");
    }

    [Fact]
    public void IsolationForest_SameSeed_GivesSameScores_OtherSeedDiffers()
    {
        var train = Synthetic.Windows(500, 0, seed: 3);
        var (_, prepared) = Fit(train);
        float[] ScoresWith(int seed)
        {
            var f = IsolationForest.Fit(prepared, train.Rows, train.Columns, new DetectorOptions { Seed = seed, Trees = 20 });
            var s = new float[50];
            f.Score(prepared.AsSpan(0, 50 * train.Columns), 50, s, default);
            return s;
        }
        Assert.Equal(ScoresWith(5), ScoresWith(5));
        Assert.NotEqual(ScoresWith(5), ScoresWith(6));
    }

    [Fact]
    public void IsolationForest_AveragePath_MatchesThePaperFormula()
    {
        Assert.Equal(0, IsolationForest.AveragePath(1));
        Assert.Equal(1, IsolationForest.AveragePath(2));
        // c(256) = 2 H(255) - 2*255/256, H(i) ~ ln(i) + Euler's constant.
        Assert.Equal(10.2448, IsolationForest.AveragePath(256), 3);
    }

    [Fact]
    public void IsolationForest_IsolatedPoint_ScoresNearOne_CentralPointNearHalf()
    {
        var rng = new Random(9);
        var n = 512;
        var rows = new float[n * 2];
        for (var i = 0; i < rows.Length; i++) rows[i] = (float)rng.NextDouble();
        var forest = IsolationForest.Fit(rows, n, 2, new DetectorOptions());
        var scores = new float[2];
        forest.Score(new float[] { 0.5f, 0.5f, 40f, -40f }, 2, scores, default);
        // Beyond the training range a point shares the leaf of the extreme training points, so it
        // scores well above the centre but not 1.
        Assert.InRange(scores[0], 0.3f, 0.5f);
        Assert.True(scores[1] > 0.6f && scores[1] > scores[0] + 0.15f, $"centre {scores[0]}, outlier {scores[1]}");
    }

    [Fact]
    public void Knn_WindowEqualToAReference_ScoresZero_AndDistanceGrowsAway()
    {
        var reference = new float[] { 0, 0, 1, 1, 2, 2 };
        var knn = KnnDetector.Fit(reference, 3, 2, new DetectorOptions { K = 1 });
        var scores = new float[3];
        knn.Score(new float[] { 1, 1, 1, 2, 5, 6 }, 3, scores, default);
        Assert.Equal(0f, scores[0]);
        Assert.Equal(1f, scores[1], 5);
        Assert.Equal(5f, scores[2], 5);
    }

    [Fact]
    public void Knn_PrunedSearch_GivesExactlyTheBruteForceScores_AndSkipsMostReferencesOnClusteredData()
    {
        // Clustered references (as traffic is: a few kinds of normal window), queries near and far.
        const int d = 24, m = 3000, n = 400, k = 5;
        var rng = new Random(11);
        var centres = Enumerable.Range(0, 12).Select(_ => Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 20)).ToArray()).ToArray();
        float[] Near(float spread) => centres[rng.Next(centres.Length)].Select(c => c + (float)((rng.NextDouble() - 0.5) * spread)).ToArray();
        var reference = Enumerable.Range(0, m).SelectMany(_ => Near(1f)).ToArray();
        var queries = Enumerable.Range(0, n).SelectMany(i => i % 10 == 0 ? Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 40 - 10)) : Near(1.5f)).ToArray();
        var knn = KnnDetector.Fit(reference, m, d, new DetectorOptions { K = k, MaxReference = m });
        var scores = new float[n];
        knn.Score(queries, n, scores, default);

        for (var q = 0; q < n; q++)
        {
            var distances = Enumerable.Range(0, m).Select(i =>
                Math.Sqrt(Enumerable.Range(0, d).Sum(j => Math.Pow(queries[q * d + j] - reference[i * d + j], 2)))).Order().Take(k).Average();
            Assert.Equal(distances, scores[q], 3);
        }
        Assert.True(knn.DistancesComputed < (long)n * m / 3, $"{knn.DistancesComputed:N0} of {(long)n * m:N0} distances computed");
    }

    [Fact]
    public void Knn_DuplicateTrainingWindows_AreKeptOnce()
    {
        var rows = Enumerable.Repeat(new float[] { 1, 2, 3 }, 100).SelectMany(x => x).ToArray();
        var knn = KnnDetector.Fit(rows, 100, 3, new DetectorOptions());
        Assert.Equal(1, knn.ReferenceCount);
    }

    [Fact]
    public void RobustZ_OneFeatureFarOutOfRange_ScoresByItsDistance()
    {
        var train = Synthetic.Windows(800, 0, seed: 4);
        var z = RobustZDetector.Fit(train.Values, train.Rows, train.Columns, new DetectorOptions { TopFeatures = 1 });
        var row = train.Row(0).ToArray();
        var scores = new float[2];
        var far = (float[])row.Clone();
        far[1] = z.Median[1] + 20 * z.Scale[1];
        z.Score(row.Concat(far).ToArray(), 2, scores, default);
        Assert.True(scores[0] < 5, $"normal row scored {scores[0]}");
        Assert.InRange(scores[1], 19.9f, 20.1f);
    }

    [Fact]
    public void Pca_FastScoring_AgreesWithMlNetTransform()
    {
        var train = Synthetic.Windows(400, 0, seed: 5);
        var test = Synthetic.Windows(30, 30, seed: 6);
        var (transform, prepared) = Fit(train);
        var pca = RandomizedPcaDetector.Fit(prepared, train.Rows, train.Columns, new DetectorOptions { PcaRank = 3 });
        var testPrepared = new float[test.Values.Length];
        transform.Apply(test.Values, test.Rows, testPrepared);
        var fast = new float[test.Rows];
        pca.Score(testPrepared, test.Rows, fast, default);
        var mlnet = pca.ScoreWithMlNet(testPrepared, test.Rows);
        Assert.Equal(3, pca.Rank);
        for (var i = 0; i < test.Rows; i++)
            Assert.True(Math.Abs(fast[i] - mlnet[i]) <= 1e-3 * Math.Max(1, Math.Abs(mlnet[i])), $"row {i}: ours {fast[i]}, ML.NET {mlnet[i]}");
    }

    [Fact]
    public void Ewma_EntityLeavingItsOwnSteadyPattern_ScoresHigherThanWhileSteady()
    {
        var d = 3;
        var global = new float[] { 0, 0, 0 };
        var ewma = new EwmaDetector(global, [10f, 10f, 10f], alpha: 0.2, warmup: 3, top: 1, maxEntities: 100);
        var steady = new float[] { 5, 5, 5 };
        var s = new float[1];
        for (var i = 0; i < 20; i++) ewma.Score(steady.Select(v => v + 0.1f * (i % 3)).ToArray(), 1, s, ["p1"]);
        var whileSteady = s[0];
        ewma.Score(new float[] { 5, 9, 5 }, 1, s, ["p1"]);
        // 9 is inside the global range (scale 10) but far from this entity's own history.
        Assert.True(s[0] > 5 * Math.Max(whileSteady, 0.1f), $"steady {whileSteady}, shifted {s[0]}");
        Assert.Equal(1, ewma.TrackedEntities);
        Assert.Equal(d, ewma.FeatureCount);
    }

    [Fact]
    public void Ewma_MoreEntitiesThanItsBound_ForgetsTheLeastRecentlySeen()
    {
        var ewma = new EwmaDetector([0f], [1f], 0.2, 3, 1, maxEntities: 10);
        var s = new float[1];
        for (var i = 0; i < 100; i++) ewma.Score(new float[] { 1 }, 1, s, [$"e{i}"]);
        Assert.InRange(ewma.TrackedEntities, 1, 10);
    }
}
