using Detect.Models.Calibration;
using Detect.Models.Evaluation;

namespace Detect.Models.Tests;

public class CalibrationTests
{
    [Fact]
    public void Calibrator_ThresholdAtTargetFpr_MapsToOne_AndFlagsThatShareOfNormals()
    {
        var rng = new Random(1);
        var normal = Enumerable.Range(0, 10_000).Select(_ => (float)rng.NextDouble() * 10).ToArray();
        var c = Calibrator.Fit(normal, 0.01);
        Assert.Equal(1f, c.Map(c.Threshold), 4);
        Assert.Equal(0.5f, c.Map(c.Median), 4);
        var fresh = Enumerable.Range(0, 10_000).Select(_ => (float)rng.NextDouble() * 10).ToArray();
        var flagged = fresh.Count(v => c.Map(v) >= 1f) / (double)fresh.Length;
        Assert.InRange(flagged, 0.005, 0.015);
    }

    [Fact]
    public void Calibrator_Mapping_IsMonotonic_AndSeveritiesFollowTheScale()
    {
        var c = Calibrator.Fit(Enumerable.Range(0, 1000).Select(i => (float)i).ToArray(), 0.01);
        var last = -1f;
        for (var raw = -100f; raw < 5000f; raw += 3.7f)
        {
            var m = c.Map(raw);
            Assert.True(m >= last, $"map({raw}) = {m} < {last}");
            last = m;
        }
        Assert.Equal(Severity.None, Calibrator.SeverityOf(c.Map(500)));
        Assert.Equal(Severity.Low, Calibrator.SeverityOf(c.Map(c.Threshold + 0.01f)));
        Assert.Equal(Severity.High, Calibrator.SeverityOf(c.Map(c.Max + 1)));
        Assert.Equal(Severity.Critical, Calibrator.SeverityOf(c.Map(c.Max + 10_000)));
    }

    [Fact]
    public void Calibrator_AllNormalScoresEqual_StillHasIncreasingAnchors()
    {
        var c = Calibrator.Fit(Enumerable.Repeat(0.25f, 100).ToArray(), 0.01);
        Assert.True(c.Median < c.Threshold && c.Threshold < c.Rare && c.Rare < c.Max);
        Assert.True(c.Map(0.25f) < 1f);
        Assert.True(c.Map(0.5f) > 1f);
    }

    [Fact]
    public void Roc_HandComputedExample_GivesKnownAuc_AndTiesCountHalf()
    {
        // Attacks 0.9, 0.4; normals 0.8, 0.3: pairs (0.9>0.8, 0.9>0.3, 0.4<0.8, 0.4>0.3) = 3/4.
        var roc = Roc.Compute([0.9, 0.4, 0.8, 0.3], [true, true, false, false]);
        Assert.Equal(0.75, roc.Auc, 10);
        var tied = Roc.Compute([0.5, 0.5], [true, false]);
        Assert.Equal(0.5, tied.Auc, 10);
        Assert.Equal(0.5, roc.TprAtFpr(0.0), 10);
    }

    [Fact]
    public void Roc_OneClassOnly_IsAnError()
    {
        Assert.Throws<ArgumentException>(() => Roc.Compute([0.1, 0.2], [false, false]));
    }
}
