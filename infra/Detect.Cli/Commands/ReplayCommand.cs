using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Detect.Pipeline;
using Detect.Pipeline.Archive;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;

namespace Detect.Cli.Commands;

/// <summary>
/// `detect replay adfa-ld DIR` and `detect replay cicids2017 CSV...`: labelled data sets through the
/// same pipeline path as live records, feature batches archived as Parquet, one JSON summary last.
/// (`replay pcap` needs the flow sensor and is not here yet.)
/// </summary>
public sealed class ReplayCommand : ICliCommand
{
    public Command Create()
    {
        var replay = new Command("replay", "Replay a labelled data set through the pipeline into Parquet feature files (labels in the label and sample_id columns)");
        replay.Subcommands.Add(Adfa());
        replay.Subcommands.Add(Cic());
        return replay;
    }

    private static Option<string> ArchiveOption() => new("--archive")
    {
        Description = "Archive folder: files go to ARCHIVE/<family>/date=YYYY-MM-DD/hour=HH/part-N.parquet",
        DefaultValueFactory = _ => "archive",
    };

    private static Option<double> WindowOption() => new("--window")
    {
        Description = "Window length in seconds",
        DefaultValueFactory = _ => 10,
    };

    private static Option<int> LimitOption(string what) => new("--limit")
    {
        Description = $"Replay only the first N {what}",
        DefaultValueFactory = _ => int.MaxValue,
    };

    private static Command Adfa()
    {
        var dir = new Argument<string>("DIR") { Description = "ADFA-LD folder (or one of its *_Data_Master folders)" };
        var archive = ArchiveOption();
        var window = WindowOption();
        var limit = LimitOption("traces");
        var command = new Command("adfa-ld", "Each trace becomes one process's syscall records (i386 numbers mapped to x86-64); one window per trace")
        {
            dir, archive, window, limit,
        };
        command.SetAction((parse, ct) =>
        {
            var path = parse.GetValue(dir)!;
            if (!Directory.Exists(path))
            {
                Console.Error.WriteLine($"detect replay adfa-ld: {path} is not a folder");
                return Task.FromResult(2);
            }
            return Task.FromResult(Run("adfa-ld", parse.GetValue(archive)!, parse.GetValue(window), p =>
                AdfaLdReplay.Run(path, p, parse.GetValue(limit), Console.Error.WriteLine, ct)));
        });
        return command;
    }

    private static Command Cic()
    {
        var files = new Argument<string[]>("CSV") { Description = "CIC-IDS2017 CSV files or folders of them", Arity = ArgumentArity.OneOrMore };
        var archive = ArchiveOption();
        var window = WindowOption();
        var limit = LimitOption("rows of each file");
        var group = new Option<string>("--group")
        {
            Description = "row: one window per row, exact labels (default); source: real time, windows per source address (attack label wins in a mixed window)",
            DefaultValueFactory = _ => "row",
        };
        group.AcceptOnlyFromAmong("row", "source");
        var command = new Command("cicids2017", "Each row becomes the flow record it describes")
        {
            files, archive, window, limit, group,
        };
        command.SetAction((parse, ct) =>
        {
            var paths = parse.GetValue(files)!;
            foreach (var p in paths)
                if (!File.Exists(p) && !Directory.Exists(p))
                {
                    Console.Error.WriteLine($"detect replay cicids2017: {p} does not exist");
                    return Task.FromResult(2);
                }
            var grouping = parse.GetValue(group) == "source" ? CicGrouping.Source : CicGrouping.Row;
            return Task.FromResult(Run("cicids2017", parse.GetValue(archive)!, parse.GetValue(window), p =>
                CicIds2017Replay.Run(paths, p, grouping, parse.GetValue(limit), Console.Error.WriteLine, ct)));
        });
        return command;
    }

    private static int Run(string name, string archiveRoot, double windowSeconds, Func<FeaturePipeline, ReplayResult> replay)
    {
        var stopwatch = Stopwatch.StartNew();
        var pipeline = new FeaturePipeline(new PipelineOptions
        {
            Window = TimeSpan.FromSeconds(windowSeconds),
            AllowedLateness = TimeSpan.FromSeconds(Math.Min(2, windowSeconds / 5)),
        }, (offset, error, detail) => Console.Error.WriteLine($"replay: record at offset {offset}: {error}: {detail}"));
        var rows = new Dictionary<string, long>();
        pipeline.AddSink((family, batch) =>
        {
            var f = FeatureSchema.NameOf(family);
            rows[f] = rows.GetValueOrDefault(f) + batch.Length;
        });
        ReplayResult result;
        ArchiveStats archived;
        using (var archive = new ParquetArchive(new ArchiveOptions { Root = archiveRoot }))
        {
            pipeline.AddSink(archive);
            result = replay(pipeline);
            archive.Flush();
            archived = archive.Stats;
        }
        var stats = pipeline.Stats;
        var seconds = stopwatch.Elapsed.TotalSeconds;
        Console.Error.WriteLine(
            $"replay {name}: {result.Files} files, {result.Units} units replayed, {result.Skipped} skipped, {result.Records} records, " +
            $"{stats.Rows} windows ({string.Join(", ", rows.Select(r => $"{r.Key} {r.Value}"))}), {stats.LateRecords} late, " +
            $"{archived.FilesClosed} Parquet files in {Path.GetFullPath(archiveRoot)}, {seconds:F1} s");
        foreach (var (label, count) in result.UnitsByLabel.OrderBy(l => l.Key, StringComparer.Ordinal))
            Console.Error.WriteLine($"  {label}: {count}");
        var json = new Dictionary<string, object>
        {
            ["dataset"] = name,
            ["files"] = result.Files,
            ["units"] = result.Units,
            ["skipped"] = result.Skipped,
            ["records"] = result.Records,
            ["windows"] = stats.Rows,
            ["windows_by_family"] = rows,
            ["late_records"] = stats.LateRecords,
            ["decode_errors"] = stats.Decode.Errors,
            ["units_by_label"] = result.UnitsByLabel,
            ["parquet_files"] = archived.FilesClosed,
            ["parquet_bytes"] = archived.BytesClosed,
            ["archive"] = Path.GetFullPath(archiveRoot),
            ["seconds"] = Math.Round(seconds, 2),
        };
        Console.WriteLine(JsonSerializer.Serialize(json));
        return 0;
    }
}
