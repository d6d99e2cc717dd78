using Detect.Models.Features;

namespace Detect.Models.Tests;

/// <summary>
/// A deterministic feature set: normal windows lie near a 2-D plane in 12 features (correlated
/// rates and fractions, two sparse features), attacks move off it in one of three ways. Same
/// seed, same data, so AUCs are reproducible to the last digit.
/// </summary>
public static class Synthetic
{
    public const int Features = 12;
    public static readonly string[] Names = Enumerable.Range(0, Features).Select(i => i switch
    {
        0 => "f_calls", 1 => "f_sc_class_net", 2 => "f_sc_class_file", 3 => "f_failed_ratio",
        _ => $"f_x{i}",
    }).ToArray();

    public static FeatureMatrix Windows(int normal, int attacks, int seed, string schema = "syscall/1", string[]? names = null, long startNs = 1_700_000_000_000_000_000)
    {
        var rng = new Random(seed);
        var d = Features;
        var rows = normal + attacks;
        var values = new float[rows * d];
        var labels = new string?[rows];
        var samples = new string?[rows];
        var entities = new string?[rows];
        var starts = new long[rows];
        for (var r = 0; r < rows; r++)
        {
            var a = (float)Gauss(rng);
            var b = (float)Gauss(rng);
            var v = values.AsSpan(r * d, d);
            v[0] = 100 + 20 * a + 2 * (float)Gauss(rng);
            v[1] = 0.02f + 0.005f * (float)Math.Abs(b) + 0.002f * (float)Math.Abs(Gauss(rng));
            v[2] = 0.5f + 0.05f * (float)a + 0.01f * (float)Gauss(rng);
            v[3] = 0.01f + 0.003f * (float)Math.Abs(Gauss(rng));
            for (var j = 4; j < 10; j++) v[j] = j * a - (j - 3) * b + 0.3f * (float)Gauss(rng);
            v[10] = rng.NextDouble() < 0.05 ? 1f : 0f;
            v[11] = rng.NextDouble() < 0.02 ? (float)rng.Next(1, 4) : 0f;
            var isAttack = r >= normal;
            labels[r] = isAttack ? "Attack" + ((r - normal) % 3) : "normal";
            if (isAttack)
            {
                switch ((r - normal) % 3)
                {
                    case 0: v[1] += 0.3f + 0.1f * (float)rng.NextDouble(); break; // network share far out of range
                    case 1: v[6] += 8 * (float)Gauss(rng) + (rng.NextDouble() < 0.5 ? 9 : -9); break; // off the plane
                    default: v[0] *= 4; v[3] += 0.2f; break; // burst of failing calls
                }
            }
            samples[r] = $"trace-{r / 2}";
            entities[r] = $"{1000 + r / 4}@1";
            starts[r] = startNs + r * 1_000_000_000L;
        }
        return new FeatureMatrix("syscall", schema, names ?? Names, values, rows, entities, labels, samples, starts);
    }

    private static double Gauss(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
