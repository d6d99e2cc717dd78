using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Detect.Models.Features;
using Detect.Testing;

namespace Detect.Models.Tests;

/// <summary>
/// Turns a C# notebook (.ipynb, kernel csharp) into a file-based C# program: `#r "nuget: X, V"`
/// becomes `#:package X@V`, the `#r` of Detect.Models.dll becomes `#:project` of its csproj,
/// using directives move to the top, `display(x)` prints. dotnet-interactive is not served here;
/// `dotnet run app.cs` (.NET 10 SDK) runs the cells in order instead.
/// </summary>
public static partial class NotebookProgram
{
    public static IReadOnlyList<string> CodeCells(string ipynbPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(ipynbPath));
        var kernel = doc.RootElement.GetProperty("metadata").GetProperty("polyglot_notebook").GetProperty("kernelInfo").GetProperty("defaultKernelName").GetString();
        if (kernel != "csharp") throw new InvalidDataException($"{ipynbPath}: kernel '{kernel}', expected csharp");
        return doc.RootElement.GetProperty("cells").EnumerateArray()
            .Where(c => c.GetProperty("cell_type").GetString() == "code")
            .Select(c => string.Concat(c.GetProperty("source").EnumerateArray().Select(l => l.GetString())))
            .ToList();
    }

    public static string ToProgram(IReadOnlyList<string> cells, string modelsProject)
    {
        var directives = new List<string> { $"#:project {modelsProject}", "#:property PublishAot=false", "#:property TreatWarningsAsErrors=false" };
        var usings = new List<string>();
        var body = new StringBuilder();
        for (var i = 0; i < cells.Count; i++)
        {
            body.AppendLine($"// cell {i + 1}");
            foreach (var line in cells[i].Split('\n'))
            {
                var t = line.Trim();
                if (NugetReference().Match(t) is { Success: true } m) directives.Add($"#:package {m.Groups[1].Value}@{m.Groups[2].Value}");
                else if (t.StartsWith("#r ", StringComparison.Ordinal) || t.StartsWith("#!", StringComparison.Ordinal)) continue; // the project reference covers the dll
                else if (UsingDirective().IsMatch(t)) usings.Add(t);
                else body.AppendLine(line);
            }
        }
        body.AppendLine("static void display(object? value) => Console.WriteLine(value);");
        return string.Join('\n', directives.Distinct()) + "\n" + string.Join('\n', usings.Distinct()) + "\n" + body;
    }

    [GeneratedRegex("""^#r\s+"nuget:\s*([^,\s"]+)\s*,\s*([^"\s]+)\s*"$""")]
    private static partial Regex NugetReference();

    [GeneratedRegex(@"^using\s+(static\s+)?[A-Za-z_][\w.]*\s*(=\s*[\w.<>]+\s*)?;$")]
    private static partial Regex UsingDirective();
}

public class NotebookTests
{
    public static TheoryData<string> Notebooks()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Path.Combine(Repo.Root, "notebooks"), "*.ipynb").Order(StringComparer.Ordinal)) data.Add(Path.GetFileName(f));
        return data;
    }

    [Fact]
    public void NotebookProgram_MovesUsingsUp_AndTurnsReferencesIntoDirectives()
    {
        var program = NotebookProgram.ToProgram(["#r \"nuget: ScottPlot, 5.1.59\"\n#r \"x/Detect.Models.dll\"\nusing System.Text;\nvar a = 1;", "using Detect.Models.Features;\ndisplay(a);"], "/p/M.csproj");
        var lines = program.Split('\n');
        Assert.Equal("#:project /p/M.csproj", lines[0]);
        Assert.Contains("#:package ScottPlot@5.1.59", lines);
        Assert.True(Array.IndexOf(lines, "using Detect.Models.Features;") < Array.IndexOf(lines, "var a = 1;"));
        Assert.DoesNotContain(lines, l => l.StartsWith("#r", StringComparison.Ordinal));
    }

    [Fact]
    public void Notebooks_AllThreeExist_WithCSharpKernel()
    {
        foreach (var name in new[] { "explore-archive.ipynb", "train-evaluate.ipynb", "compare-versions.ipynb" })
            Assert.NotEmpty(NotebookProgram.CodeCells(Path.Combine(Repo.Root, "notebooks", name)));
    }

    [Theory]
    [MemberData(nameof(Notebooks))]
    public async Task Notebook_EveryCodeCell_RunsAsAFileBasedProgram(string notebook)
    {
        var ct = TestContext.Current.CancellationToken;
        using var dir = new TempDir();
        var archive = Path.Combine(dir.Path, "archive");
        await ParquetArchive.WriteAsync(archive, Synthetic.Windows(600, 90, seed: 41), ct);
        await ParquetArchive.WriteAsync(archive, Synthetic.Windows(400, 60, seed: 42, startNs: 1_700_000_000_000_000_000 + 3_600_000_000_000), ct);
        // One place per checkout and notebook: `dotnet run` keeps a build (~0.5 GB) per program path
        // under ~/.local/share/dotnet/runfile, so a fresh path per run would add one every run.
        var checkout = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(Repo.Root)))[..12];
        var app = Path.Combine(Path.GetTempPath(), "detect-notebook-apps", checkout, Path.GetFileNameWithoutExtension(notebook) + ".cs");
        Directory.CreateDirectory(Path.GetDirectoryName(app)!);
        var models = Path.Combine(Repo.Root, "models", "Detect.Models", "Detect.Models.csproj");
        var program = NotebookProgram.ToProgram(NotebookProgram.CodeCells(Path.Combine(Repo.Root, "notebooks", notebook)), models);
        if (!File.Exists(app) || await File.ReadAllTextAsync(app, ct) != program) await File.WriteAllTextAsync(app, program, ct);
        var output = Path.Combine(dir.Path, "out");
        Directory.CreateDirectory(output);

        var psi = new ProcessStartInfo("dotnet") { ArgumentList = { "run", app }, WorkingDirectory = Path.GetDirectoryName(app)!, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["DETECT_ARCHIVE"] = archive;
        psi.Environment["DETECT_NOTEBOOK_OUT"] = output;
        // Its own build tree: the notebook's build of Detect.Models must not touch the one these tests run from.
        psi.Environment["DETECT_ARTIFACTS"] = Path.Combine(Path.GetTempPath(), "detect-notebook-artifacts");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromMinutes(5));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        var text = await stdout + await stderr;
        TestContext.Current.SendDiagnosticMessage(text);
        Assert.True(process.ExitCode == 0, $"{notebook} failed (exit {process.ExitCode}):\n{text}");
        switch (notebook)
        {
            case "explore-archive.ipynb":
                Assert.Contains("1150 windows, schema syscall/1", text);
                Assert.True(File.Exists(Path.Combine(output, "explore-histogram.png")));
                break;
            case "train-evaluate.ipynb":
                Assert.True(Regex.IsMatch(text, @"ROC AUC (0\.9\d{3}|1\.0000)"), text);
                Assert.True(File.Exists(Path.Combine(output, "report", "roc.png")));
                Assert.Contains("normal ", text);
                break;
            case "compare-versions.ipynb":
                Assert.Contains("v0002 knn", text);
                Assert.True(File.Exists(Path.Combine(output, "compare-roc.png")));
                break;
        }
    }
}
