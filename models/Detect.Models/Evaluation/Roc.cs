namespace Detect.Models.Evaluation;

public readonly record struct RocPoint(double FalsePositiveRate, double TruePositiveRate, double Threshold);

/// <summary>ROC curve of scores against binary truth (attack = positive), ties handled as one step.</summary>
public sealed class Roc
{
    private Roc(IReadOnlyList<RocPoint> points, double auc, int positives, int negatives)
    {
        Points = points;
        Auc = auc;
        Positives = positives;
        Negatives = negatives;
    }

    public IReadOnlyList<RocPoint> Points { get; }
    /// <summary>Area under the curve: the probability that a random attack outscores a random normal (ties count half).</summary>
    public double Auc { get; }
    public int Positives { get; }
    public int Negatives { get; }

    public static Roc Compute(IReadOnlyList<double> scores, IReadOnlyList<bool> isAttack)
    {
        if (scores.Count != isAttack.Count) throw new ArgumentException("scores and truth differ in length");
        var positives = isAttack.Count(a => a);
        var negatives = isAttack.Count - positives;
        if (positives == 0 || negatives == 0)
            throw new ArgumentException($"a ROC curve needs both classes: {positives} attack and {negatives} normal samples");
        var order = Enumerable.Range(0, scores.Count).OrderByDescending(i => scores[i]).ToArray();
        var points = new List<RocPoint> { new(0, 0, double.PositiveInfinity) };
        double tp = 0, fp = 0, auc = 0;
        var k = 0;
        while (k < order.Length)
        {
            var s = scores[order[k]];
            double dtp = 0, dfp = 0;
            while (k < order.Length && scores[order[k]] == s)
            {
                if (isAttack[order[k]]) dtp++; else dfp++;
                k++;
            }
            // Trapezoid over the tie block = the "ties count half" rule.
            auc += dfp / negatives * (tp + dtp / 2) / positives;
            tp += dtp;
            fp += dfp;
            points.Add(new RocPoint(fp / negatives, tp / positives, s));
        }
        return new Roc(points, auc, positives, negatives);
    }

    /// <summary>The best true-positive rate at a false-positive rate of at most maxFpr (a threshold set on these very normals).</summary>
    public double TprAtFpr(double maxFpr) => Points.Where(p => p.FalsePositiveRate <= maxFpr + 1e-12).Max(p => p.TruePositiveRate);
}
