using System.Globalization;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Replay;
using Detect.Pipeline.Syscalls;
using Detect.Testing;

namespace Detect.Pipeline.Tests;

public sealed class ReplayTests : IDisposable
{
    private readonly string _tmp = Path.Combine(Path.GetTempPath(), "detect-replay-" + Guid.NewGuid().ToString("N"));

    public ReplayTests() => Directory.CreateDirectory(_tmp);

    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    [Fact]
    public void AdfaLdReplay_EveryTrace_BecomesExactlyOneWindow_WithItsLabelAndCalls()
    {
        var dir = Needs.SharedData("adfa-ld");
        var sink = new Project(FeatureFamily.Syscall, "f_calls");
        var p = new FeaturePipeline().AddSink(sink);
        var result = AdfaLdReplay.Run(dir, p, ct: TestContext.Current.CancellationToken);
        var files = Directory.GetFiles(dir, "*.txt", SearchOption.AllDirectories);
        var rows = sink.Rows.ToDictionary(r => r.Sample!);
        Assert.Equal(files.Length, result.Units);
        Assert.Equal(0, result.Skipped);
        Assert.Equal(files.Length, rows.Count); // one row per trace, sample ids unique
        Assert.Equal(0, p.Stats.LateRecords);
        foreach (var f in files)
        {
            var rel = Path.GetRelativePath(dir, f).Replace('\\', '/');
            var row = rows[rel];
            var calls = File.ReadAllText(f).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
            Assert.Equal(calls, row.Records);
            Assert.Equal(calls, row["f_calls"]);
            var expected = rel.StartsWith("Attack_Data_Master/", StringComparison.Ordinal)
                ? rel.Split('/')[1][..rel.Split('/')[1].LastIndexOf('_')]
                : "normal";
            Assert.Equal(expected, row.Label);
        }
        Assert.Contains("Adduser", result.UnitsByLabel.Keys);
        Assert.Equal(5205, result.UnitsByLabel["normal"]);
    }

    [Fact]
    public void AdfaLdReplay_MapsI386Numbers_ToX8664()
    {
        var dir = Path.Combine(_tmp, "Training_Data_Master");
        Directory.CreateDirectory(dir);
        // close, dup2, pipe, clone, stat64, wait4, exit, exit_group (the data set's README example).
        File.WriteAllText(Path.Combine(dir, "UTD-0001.txt"), "6 63 42 120 195 114 1 252 ");
        var sink = new Collect();
        AdfaLdReplay.Run(_tmp, new FeaturePipeline().AddSink(sink), ct: TestContext.Current.CancellationToken);
        var row = Assert.Single(sink.Rows(FeatureFamily.Syscall));
        Assert.Equal(8f, row["f_calls"]);
        Assert.Equal(0.125f, row["f_sc_close"]);
        Assert.Equal(0.125f, row["f_sc_dup2"]);
        Assert.Equal(0.125f, row["f_sc_clone"]);
        Assert.Equal(0.125f, row["f_sc_stat"]); // stat64 -> stat
        Assert.Equal(0.125f, row["f_sc_exit_group"]);
        Assert.Equal(0.375f, row["f_class_fd"]); // close, dup2, pipe
        // syscall/2 `seq`: the trace itself, in this kernel's numbers.
        var names = new[] { "close", "dup2", "pipe", "clone", "stat", "wait4", "exit", "exit_group" };
        Assert.Equal(names.Select(n => (ushort)SyscallTable.X8664(n)), row.Sequence);
        Assert.Equal("normal", row.Label);
        Assert.Equal("Training_Data_Master/UTD-0001.txt", row.Sample);
    }

    [Fact]
    public void AdfaLdReplay_BadAndEmptyTraces_AreReportedWithOffset_Skipped_AndTheReplayCarriesOn()
    {
        var run = Path.Combine(_tmp, "Attack_Data_Master", "Adduser_1");
        Directory.CreateDirectory(run);
        File.WriteAllText(Path.Combine(run, "a.txt"), "6 6 63 ");
        File.WriteAllText(Path.Combine(run, "b.txt"), "6 6 x3 4");
        File.WriteAllText(Path.Combine(run, "c.txt"), "");
        File.WriteAllText(Path.Combine(run, "d.txt"), "6 99999 4");
        var sink = new Collect();
        var problems = new List<string>();
        var result = AdfaLdReplay.Run(_tmp, new FeaturePipeline().AddSink(sink), onProblem: problems.Add, ct: TestContext.Current.CancellationToken);
        Assert.Equal(1, result.Units);
        Assert.Equal(3, result.Skipped);
        Assert.Contains(problems, s => s.Contains("b.txt: byte offset 4: 'x3'", StringComparison.Ordinal));
        Assert.Contains(problems, s => s.Contains("c.txt", StringComparison.Ordinal) && s.Contains("empty", StringComparison.Ordinal));
        Assert.Contains(problems, s => s.Contains("d.txt: byte offset 2", StringComparison.Ordinal));
        Assert.Equal("Adduser", Assert.Single(sink.Rows(FeatureFamily.Syscall)).Label);
    }

    private static List<(string File, int Line, string[] Fields)> CsvRows(string dir)
    {
        var rows = new List<(string, int, string[])>();
        foreach (var f in Directory.GetFiles(dir, "*.csv").Order(StringComparer.Ordinal))
        {
            var line = 0;
            foreach (var text in File.ReadLines(f))
            {
                line++;
                if (line == 1 || text.Length == 0) continue;
                rows.Add((Path.GetFileName(f), line, text.Split(',')));
            }
        }
        return rows;
    }

    [Fact]
    public void CicIds2017Replay_EveryRow_BecomesExactlyOneWindow_WithItsLabel()
    {
        var dir = Needs.SharedData("cicids2017");
        var sink = new Project(FeatureFamily.Flow, "f_packets_fwd", "f_packets_rev", "f_bytes_fwd", "f_bytes_rev", "f_duration_max_s",
            "f_udp_ratio", "f_half_open_ratio");
        var p = new FeaturePipeline().AddSink(sink);
        var result = CicIds2017Replay.Run([dir], p, ct: TestContext.Current.CancellationToken);
        var csv = CsvRows(dir);
        var rows = sink.Rows.ToDictionary(r => r.Sample!);
        Assert.Equal(0, result.Skipped);
        Assert.Equal(csv.Count, result.Units);
        Assert.Equal(csv.Count, rows.Count);
        foreach (var (file, line, fields) in csv)
        {
            var row = rows[$"{file}:{line}"];
            Assert.Equal(fields[^2], row.Label);
            Assert.Equal(fields[2], row.Entity); // Src IP
            Assert.Equal(1, row.Records);
        }
        // BENIGN_4000.csv line 2: a DNS exchange, 2 packets each way, 70+16 and 102+16 bytes, 245 µs.
        var dns = rows["BENIGN_4000.csv:2"];
        Assert.Equal(2f, dns["f_packets_fwd"]);
        Assert.Equal(2f, dns["f_packets_rev"]);
        Assert.Equal(86f, dns["f_bytes_fwd"]);
        Assert.Equal(118f, dns["f_bytes_rev"]);
        Assert.Equal(0.000245f, dns["f_duration_max_s"], 6);
        Assert.Equal(1f, dns["f_udp_ratio"]);
        Assert.Equal(0f, dns["f_half_open_ratio"]);
    }

    [Fact]
    public void CicIds2017Replay_BySource_WindowsAreTheDistinctSourceAndWindowPairs()
    {
        var dir = Needs.SharedData("cicids2017");
        var file = Path.Combine(dir, "Portscan_5000.csv");
        var sink = new Project(FeatureFamily.Flow);
        var p = new FeaturePipeline().AddSink(sink);
        var result = CicIds2017Replay.Run([file], p, CicGrouping.Source, ct: TestContext.Current.CancellationToken);
        const long W = 10_000_000_000L;
        var expected = new HashSet<(string, long)>();
        foreach (var (_, _, f) in CsvRows(dir).Where(r => r.File == "Portscan_5000.csv"))
        {
            var start = DateTime.ParseExact(f[7], "yyyy-MM-dd HH:mm:ss.FFFFFF", CultureInfo.InvariantCulture,
                DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal);
            var end = (start - DateTime.UnixEpoch).Ticks * 100 + long.Parse(f[8], CultureInfo.InvariantCulture) * 1000;
            expected.Add((f[2], end - end % W));
        }
        var rows = sink.Rows;
        Assert.Equal(5000, result.Units);
        Assert.Equal(expected.Count, rows.Count);
        Assert.Equal(expected, rows.Select(r => (r.Entity, r.Start)).ToHashSet());
        Assert.Equal(5000, rows.Sum(r => r.Records));
        Assert.All(rows, r => Assert.Equal("Portscan", r.Label));
        Assert.Equal(0, p.Stats.LateRecords);
    }

    [Fact]
    public void CicIds2017Replay_MalformedRows_AreReportedWithFileAndLine_Skipped()
    {
        var path = Path.Combine(_tmp, "mixed.csv");
        var good = "1,f,10.0.0.1,5000,10.0.0.2,22,6,2017-07-05 10:00:00.5,1000,3,2,10,20,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,60,40";
        var header = "id,Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Total Fwd Packet,Total Bwd packets," +
            "Total Length of Fwd Packet,Total Length of Bwd Packet,Fwd Header Length,Bwd Header Length,FIN Flag Count,SYN Flag Count," +
            "RST Flag Count,PSH Flag Count,ACK Flag Count,URG Flag Count,CWR Flag Count,ECE Flag Count,Label";
        var row = "1,f,10.0.0.1,5000,10.0.0.2,22,6,2017-07-05 10:00:00.5,1000,3,2,10,20,60,40,1,1,0,0,1,0,0,0,SSH-Patator";
        File.WriteAllLines(path,
        [
            header,
            row,
            row.Replace("10.0.0.2", "10.0.0.999", StringComparison.Ordinal),      // line 3: bad address
            row.Replace(",3,2,", ",three,2,", StringComparison.Ordinal),          // line 4: bad count
            "1,f,10.0.0.1,5000",                                                  // line 5: truncated
            row.Replace("2017-07-05", "yesterday", StringComparison.Ordinal),     // line 6: bad time
            row,
        ]);
        _ = good;
        var problems = new List<string>();
        var sink = new Collect();
        var result = CicIds2017Replay.Run([path], new FeaturePipeline().AddSink(sink), onProblem: problems.Add, ct: TestContext.Current.CancellationToken);
        Assert.Equal(2, result.Units);
        Assert.Equal(4, result.Skipped);
        foreach (var line in new[] { 3, 4, 5, 6 }) Assert.Contains(problems, s => s.StartsWith($"{path}:{line}: ", StringComparison.Ordinal));
        var rows = sink.Rows(FeatureFamily.Flow).ToList();
        Assert.Equal(["mixed.csv:2", "mixed.csv:7"], rows.Select(r => r.Sample!).Order().ToArray());
        Assert.All(rows, r => Assert.Equal(1f, r["f_fin_ratio"]));
    }

    [Fact]
    public void SyscallTable_MatchesTheDebianHeaders()
    {
        if (!File.Exists(SyscallTableGenerator.Unistd32) || !File.Exists(SyscallTableGenerator.Unistd64))
            Assert.Skip("needs linux-libc-dev (asm/unistd_32.h, unistd_64.h); ./detect installs it");
        var generated = SyscallTableGenerator.Generate(File.ReadAllText(SyscallTableGenerator.Unistd32), File.ReadAllText(SyscallTableGenerator.Unistd64));
        var committed = Path.Combine(Repo.Root, "pipeline", "Detect.Pipeline", "Syscalls", "SyscallTable.g.cs");
        if (Environment.GetEnvironmentVariable("DETECT_REGENERATE") == "1") File.WriteAllText(committed, generated);
        Assert.Equal(generated, File.ReadAllText(committed));
        Assert.Equal(SyscallTable.X8664("stat"), SyscallTable.FromI386(195));    // stat64
        Assert.Equal(SyscallTable.X8664("wait4"), SyscallTable.FromI386(7));     // waitpid
        Assert.Equal(512 + 102, SyscallTable.FromI386(102));                     // socketcall: surrogate
        Assert.True(SyscallTable.X8664Names.Length < 512);
    }
}
