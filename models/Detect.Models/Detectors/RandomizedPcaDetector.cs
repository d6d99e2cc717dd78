using System.Numerics;
using System.Runtime.InteropServices;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;

namespace Detect.Models.Detectors;

/// <summary>
/// The baseline: ML.NET's RandomizedPca anomaly detector. Training and the saved model are
/// ML.NET's (mlnet.zip inside model.zip); scoring reads the fitted mean and eigenvectors out of
/// that model and computes the same reconstruction distance in a tight loop, because a
/// PredictionEngine per window is far too slow for the live path. A test checks both agree.
/// </summary>
public sealed class RandomizedPcaDetector : IAnomalyDetector
{
    public const string MlNetEntry = "mlnet.zip";

    private readonly byte[] _mlnetModel;
    private readonly float[] _mean;
    private readonly float[] _eigen; // rank rows of d values
    private readonly int _rank;

    private RandomizedPcaDetector(byte[] mlnetModel, int d)
    {
        _mlnetModel = mlnetModel;
        FeatureCount = d;
        var ml = new MLContext(seed: 1);
        using var ms = new MemoryStream(mlnetModel);
        var transformer = ml.Model.Load(ms, out _);
        var parameters = FindPca(transformer) ?? throw new InvalidDataException("mlnet.zip holds no PCA anomaly model");
        VBuffer<float> mean = default;
        parameters.GetMean(ref mean);
        _mean = new float[d];
        if (mean.Length == d) mean.CopyTo(_mean);
        VBuffer<float>[] vectors = [];
        parameters.GetEigenVectors(ref vectors, out var rank);
        _rank = rank;
        _eigen = new float[rank * d];
        for (var k = 0; k < rank; k++) vectors[k].CopyTo(_eigen.AsSpan(k * d, d));
    }

    public string Kind => "pca";
    public int FeatureCount { get; }
    public int Rank => _rank;

    public static RandomizedPcaDetector Fit(ReadOnlySpan<float> rows, int n, int d, DetectorOptions options)
    {
        if (n < 2) throw new ArgumentException("pca needs at least 2 normal windows");
        var ml = new MLContext(seed: options.Seed);
        var data = LoadData(ml, rows, n, d);
        // At most a quarter of the features: a subspace nearly as wide as the data leaves no residual to score.
        var rank = Math.Clamp(options.PcaRank, 1, Math.Max(1, Math.Min(d / 4, n - 1)));
        var trainer = ml.AnomalyDetection.Trainers.RandomizedPca(new RandomizedPcaTrainer.Options
        {
            FeatureColumnName = "Features",
            Rank = rank,
            EnsureZeroMean = true,
            Seed = options.Seed,
        });
        var model = trainer.Fit(data);
        using var ms = new MemoryStream();
        ml.Model.Save(model, data.Schema, ms);
        return new RandomizedPcaDetector(ms.ToArray(), d);
    }

    /// <summary>Scores through ML.NET itself (slow; tests compare it with Score).</summary>
    public float[] ScoreWithMlNet(ReadOnlySpan<float> rows, int n)
    {
        var ml = new MLContext(seed: 1);
        using var ms = new MemoryStream(_mlnetModel);
        var transformer = ml.Model.Load(ms, out _);
        var scored = transformer.Transform(LoadData(ml, rows, n, FeatureCount));
        return scored.GetColumn<float>("Score").ToArray();
    }

    public void Score(ReadOnlySpan<float> rows, int n, Span<float> scores, ReadOnlySpan<string?> entities)
    {
        var d = FeatureCount;
        Span<float> centred = d <= 2048 ? stackalloc float[d] : new float[d];
        var mean = _mean.AsSpan();
        for (var r = 0; r < n; r++)
        {
            var x = rows.Slice(r * d, d);
            for (var j = 0; j < d; j++) centred[j] = x[j] - mean[j];
            var norm2 = Dot(centred, centred);
            var proj2 = 0f;
            for (var k = 0; k < _rank; k++)
            {
                var p = Dot(centred, _eigen.AsSpan(k * d, d));
                proj2 += p * p;
            }
            // ML.NET's score: the share of the centred window's length outside the principal subspace.
            scores[r] = norm2 > 0 ? MathF.Sqrt(Math.Max(0f, (norm2 - proj2) / norm2)) : 0f;
        }
    }

    private static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var sum = 0f;
        var i = 0;
        if (Vector.IsHardwareAccelerated && a.Length >= Vector<float>.Count)
        {
            var va = MemoryMarshal.Cast<float, Vector<float>>(a);
            var vb = MemoryMarshal.Cast<float, Vector<float>>(b);
            var acc = Vector<float>.Zero;
            for (var v = 0; v < va.Length; v++) acc += va[v] * vb[v];
            sum = Vector.Sum(acc);
            i = va.Length * Vector<float>.Count;
        }
        for (; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    public void Save(ModelWriter writer)
    {
        var w = writer.Entry("detector.bin");
        w.Write(FeatureCount);
        writer.Close();
        using var s = writer.Zip.CreateEntry(MlNetEntry).Open();
        s.Write(_mlnetModel);
    }

    public static RandomizedPcaDetector Load(ModelReader reader)
    {
        var d = reader.Entry("detector.bin").ReadInt32();
        var bytes = ((MemoryStream)reader.Entry(MlNetEntry).BaseStream).ToArray();
        return new RandomizedPcaDetector(bytes, d);
    }

    private static IDataView LoadData(MLContext ml, ReadOnlySpan<float> rows, int n, int d)
    {
        var list = new List<Row>(n);
        for (var r = 0; r < n; r++) list.Add(new Row { Features = rows.Slice(r * d, d).ToArray() });
        var schema = SchemaDefinition.Create(typeof(Row));
        schema[nameof(Row.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, d);
        return ml.Data.LoadFromEnumerable(list, schema);
    }

    private static PcaModelParameters? FindPca(ITransformer t) => t switch
    {
        // A loaded model is typed on the predictor interface, the fitted one on PCA itself.
        // A loaded model is typed on an internal predictor interface, the fitted one on PCA itself.
        ISingleFeaturePredictionTransformer<PcaModelParameters> p => p.Model,
        _ when t.GetType().GetProperty("Model")?.GetValue(t) is PcaModelParameters p => p,
        TransformerChain<ITransformer> chain => chain.Select(FindPca).FirstOrDefault(p => p != null),
        _ => null,
    };

    private sealed class Row
    {
        public float[] Features { get; set; } = [];
    }
}
