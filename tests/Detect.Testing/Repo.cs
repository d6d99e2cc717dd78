namespace Detect.Testing;

/// <summary>Paths tests need: the checkout, its build outputs, and ../shared beside it.</summary>
public static class Repo
{
    private static readonly Lazy<string> RootLazy = new(FindRoot);

    /// <summary>The checkout's top folder (the one holding Detect.sln).</summary>
    public static string Root => RootLazy.Value;

    /// <summary>../shared/data beside the checkout, or null when this machine does not have it.</summary>
    public static string? SharedData
    {
        get
        {
            var path = Path.GetFullPath(Path.Combine(Root, "..", "shared", "data"));
            return Directory.Exists(path) ? path : null;
        }
    }

    /// <summary>The compiled BPF objects (bpf/build, made by `make -C bpf` during the build).</summary>
    public static string BpfBuild => Path.Combine(Root, "bpf", "build");

    /// <summary>The built CLI (detect.dll), for tests that drive the product as a user does.</summary>
    public static string CliDll
    {
        get
        {
            var artifacts = Environment.GetEnvironmentVariable("DETECT_ARTIFACTS") is { Length: > 0 } a ? a : Path.Combine(Root, "artifacts");
            foreach (var config in new[] { "release", "debug" })
            {
                var path = Path.Combine(artifacts, "bin", "Detect.Cli", config, "detect.dll");
                if (File.Exists(path)) return path;
            }
            throw new FileNotFoundException("the CLI is not built: run ./detect test (or dotnet build) first");
        }
    }

    private static string FindRoot()
    {
        var env = Environment.GetEnvironmentVariable("DETECT_ROOT");
        if (!string.IsNullOrEmpty(env) && File.Exists(Path.Combine(env, "Detect.sln"))) return env;
        // The build may live outside the checkout (DETECT_ARTIFACTS): try the working directory too.
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Detect.sln"))) return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"no Detect.sln above {AppContext.BaseDirectory} or {Directory.GetCurrentDirectory()}; set DETECT_ROOT");
    }
}
