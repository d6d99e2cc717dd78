using System.Diagnostics;
using System.Text.Json;
using Detect.Testing;

namespace Detect.Models.Tests;

/// <summary>`detect eval` as a user runs it: the built CLI, the pipeline's replay, the real data sets.</summary>
public class EvalCommandTests
{
    private static async Task<(int Exit, string Out, string Err)> Cli(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        psi.ArgumentList.Add(Repo.CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DETECT_ROOT"] = Repo.Root;
        using var p = Process.Start(psi)!;
        var ct = TestContext.Current.CancellationToken;
        var o = p.StandardOutput.ReadToEndAsync(ct);
        var e = p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromMinutes(5), ct);
        return (p.ExitCode, await o, await e);
    }

    [Fact]
    public async Task EvalAdfaLd_TestFolderWithoutAttackRuns_ErrorNamesWhatIsMissing()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(Path.Combine(dir.Path, "train"));
        await File.WriteAllTextAsync(Path.Combine(dir.Path, "train", "t1.txt"), "6 6 63 6 42 120", TestContext.Current.CancellationToken);
        Directory.CreateDirectory(Path.Combine(dir.Path, "test", "Validation_Data_Master"));
        var (exit, _, err) = await Cli("eval", "adfa-ld", "--train", Path.Combine(dir.Path, "train"), "--test", Path.Combine(dir.Path, "test"));
        Assert.Equal(2, exit);
        Assert.Contains("lacks Attack_Data_Master/", err);
    }

    [Fact]
    public async Task EvalCicIds2017_CsvWithoutLabelColumn_ErrorNamesTheColumn()
    {
        using var dir = new TempDir();
        await File.WriteAllTextAsync(Path.Combine(dir.Path, "a.csv"), "id,Src IP,Dst IP,Dst Port,Protocol,Flow Duration\n1,1.1.1.1,2.2.2.2,80,6,5\n", TestContext.Current.CancellationToken);
        var (exit, _, err) = await Cli("eval", "cicids2017", "--train", dir.Path, "--test", dir.Path);
        Assert.Equal(2, exit);
        Assert.Contains("Label", err);
    }

    [Fact]
    public async Task EvalCicIds2017_SharedSample_ReportsAucAndEveryClass()
    {
        var data = Needs.SharedData("cicids2017");
        using var dir = new TempDir();
        var (exit, stdout, err) = await Cli("eval", "cicids2017", "--train", data, "--test", data, "--report", dir.Path);
        Assert.True(exit == 0, err);
        using var json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        var auc = json.RootElement.GetProperty("auc").GetDouble();
        Assert.True(auc > 0.9, $"AUC {auc}");
        var classes = json.RootElement.GetProperty("per_class").EnumerateObject().Select(p => p.Name).ToList();
        Assert.Contains("BENIGN", classes);
        Assert.True(classes.Count >= 13, string.Join(", ", classes));
        Assert.True(File.Exists(Path.Combine(dir.Path, "roc.png")));
        Assert.Contains("| ROC AUC |", await File.ReadAllTextAsync(Path.Combine(dir.Path, "report.md"), TestContext.Current.CancellationToken));
    }
}
