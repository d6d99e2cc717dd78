using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Apache.Arrow;
using Detect.Models.Features;
using Detect.Models.Scoring;
using Detect.Models.Training;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect bench score`: windows scored per second on one thread (= per core) for each detector,
/// through the same ModelScorer.Score(RecordBatch) call the pipeline makes, and the time from a
/// window batch being handed over at window close to its scores being back (p50/p99).
/// </summary>
public sealed class BenchScoreCommand : ICliCommand
{
    public string? Parent => "bench";

    public Command Create()
    {
        var features = new Option<int>("--features") { Description = "Feature columns per window (flow/1 has 31, syscall/1 470)", DefaultValueFactory = _ => 31 };
        var seconds = new Option<double>("--seconds") { Description = "Timed seconds per detector", DefaultValueFactory = _ => 2 };
        var detectors = new Option<string>("--detectors") { Description = "Comma-separated detectors", DefaultValueFactory = _ => "robustz,pca,iforest,ewma,knn,cover" };
        var command = new Command("score", "Scoring throughput (windows/s/core) and window-close-to-score latency; one JSON object last") { features, seconds, detectors };
        command.SetAction((parse, ct) =>
        {
            var d = parse.GetValue(features);
            var budget = TimeSpan.FromSeconds(parse.GetValue(seconds));
            var results = new JsonObject();
            var train = Windows(20_000, d, seed: 1);
            var big = Windows(4096, d, seed: 2).ToArrow();
            var small = Windows(64, d, seed: 3).ToArrow();
            // cover reads call sequences: syscall/2-shaped windows of 50-500 calls (mean 275) from a few Markov "programs".
            var seqTrain = SequenceWindows(5_000, seed: 1);
            var seqBig = SequenceWindows(4096, seed: 2).ToArrow();
            var seqSmall = SequenceWindows(64, seed: 3).ToArrow();
            foreach (var kind in parse.GetValue(detectors)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                ct.ThrowIfCancellationRequested();
                var sequences = kind == "cover";
                var model = ModelTrainer.Train(sequences ? seqTrain : train, new TrainOptions { Detector = kind, DetectorOptions = new() { MaxReference = 5_000 } });
                using var scorer = new ModelScorer(model);
                var reuse = new ScoredBatch();
                var (bigBatch, smallBatch) = sequences ? (seqBig, seqSmall) : (big, small);
                for (var i = 0; i < 20; i++) scorer.Score(bigBatch, reuse); // JIT and tiering warm-up
                var (rate, batches) = Throughput(scorer, bigBatch, reuse, budget, ct);
                var latency = Latency(scorer, smallBatch, reuse, budget / 2, ct);
                Console.WriteLine($"{kind,-8} {rate,12:N0} windows/s/core ({batches} batches of {bigBatch.Length}{(sequences ? $", {MeanCalls} calls per window" : "")}); 64-window batch close->scored p50 {latency.P50:F3} ms, p99 {latency.P99:F3} ms, max {latency.Max:F3} ms");
                results[kind] = new JsonObject
                {
                    ["windows"] = sequences ? $"syscall/2-shaped, {MeanCalls} calls each on average" : $"{d} features",
                    ["windows_per_s_per_core"] = Math.Round(rate),
                    ["close_to_score_ms_p50"] = Math.Round(latency.P50, 4),
                    ["close_to_score_ms_p99"] = Math.Round(latency.P99, 4),
                    ["close_to_score_ms_max"] = Math.Round(latency.Max, 4),
                };
            }
            var json = new JsonObject
            {
                ["bench"] = "score",
                ["features"] = d,
                ["batch_rows"] = big.Length,
                ["latency_batch_rows"] = small.Length,
                ["threads"] = 1,
                ["detectors"] = results,
            };
            Console.WriteLine(json.ToJsonString());
            return Task.FromResult(0);
        });
        return command;
    }

    private static (double Rate, int Batches) Throughput(ModelScorer scorer, RecordBatch batch, ScoredBatch reuse, TimeSpan budget, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var batches = 0;
        while (sw.Elapsed < budget && !ct.IsCancellationRequested)
        {
            scorer.Score(batch, reuse);
            batches++;
        }
        return ((double)batches * batch.Length / sw.Elapsed.TotalSeconds, batches);
    }

    private static (double P50, double P99, double Max) Latency(ModelScorer scorer, RecordBatch batch, ScoredBatch reuse, TimeSpan budget, CancellationToken ct)
    {
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        while ((total.Elapsed < budget || samples.Count < 100) && !ct.IsCancellationRequested && samples.Count < 1_000_000)
        {
            var start = Stopwatch.GetTimestamp(); // the window batch is handed over as its windows close
            scorer.Score(batch, reuse);
            samples.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        samples.Sort();
        return (samples[samples.Count / 2], samples[(int)(samples.Count * 0.99)], samples[^1]);
    }

    private const int MeanCalls = 275;

    /// <summary>
    /// Windows with call sequences: each walks one of eight sparse Markov chains over 120 call numbers
    /// (two or three likely successors per call), 50-500 calls long; one in twenty has a stretch of
    /// calls in random order spliced in (a code path the chains never take).
    /// </summary>
    private static FeatureMatrix SequenceWindows(int n, int seed)
    {
        const int calls = 120;
        var chains = new Random(7);
        var programs = Enumerable.Range(0, 8).Select(_ =>
            Enumerable.Range(0, calls).Select(_ => Enumerable.Range(0, chains.Next(2, 4)).Select(_ => chains.Next(calls)).ToArray()).ToArray()).ToArray();
        var rng = new Random(seed);
        var rows = new ushort[n][];
        var values = new float[n * 2];
        for (var r = 0; r < n; r++)
        {
            var chain = programs[rng.Next(programs.Length)];
            var s = new ushort[rng.Next(50, 2 * MeanCalls - 50)];
            var c = rng.Next(calls);
            for (var i = 0; i < s.Length; i++)
            {
                s[i] = (ushort)c;
                c = chain[c][rng.Next(chain[c].Length)];
            }
            if (rng.Next(20) == 0)
                for (var i = s.Length / 2; i < Math.Min(s.Length, s.Length / 2 + 12); i++) s[i] = (ushort)rng.Next(calls);
            rows[r] = s;
            values[r * 2] = s.Length;
            values[r * 2 + 1] = s.Distinct().Count();
        }
        var entities = Enumerable.Range(0, n).Select(i => (string?)$"{1000 + i}@1").ToArray();
        return new FeatureMatrix("syscall", "syscall/2", ["f_calls", "f_distinct_syscalls"], values, n, entities,
            null, null, null, null, SequenceColumn.FromRows(rows));
    }

    /// <summary>Correlated, heavy-tailed synthetic windows (rates, ratios, sparse counts) of d features.</summary>
    private static FeatureMatrix Windows(int n, int d, int seed)
    {
        var rng = new Random(seed);
        var values = new float[n * d];
        for (var r = 0; r < n; r++)
        {
            var a = rng.NextDouble();
            var b = rng.NextDouble();
            for (var j = 0; j < d; j++)
            {
                values[r * d + j] = (j % 4) switch
                {
                    0 => (float)(1000 * Math.Exp(3 * a) * (1 + 0.1 * rng.NextDouble())),
                    1 => (float)Math.Clamp(0.3 * a + 0.2 * b + 0.05 * rng.NextDouble(), 0, 1),
                    2 => rng.NextDouble() < 0.05 ? rng.Next(1, 5) : 0,
                    _ => (float)(j * a - b + 0.1 * rng.NextDouble()),
                };
            }
        }
        var names = Enumerable.Range(0, d).Select(j => $"f_bench_{j}").ToArray();
        var entities = Enumerable.Range(0, n).Select(i => (string?)$"10.0.{i % 250}.{i % 200}").ToArray();
        return new FeatureMatrix("flow", "flow/bench", names, values, n, entities);
    }
}
