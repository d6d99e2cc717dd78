using System.Diagnostics;
using Xunit.Sdk;

namespace Detect.Sensors.Tests;

/// <summary>Runs detect-workload (sensors/Detect.Sensors/Workload): a process whose syscalls are known exactly.</summary>
internal static class Workload
{
    public static string Path
    {
        get
        {
            var path = System.IO.Path.Combine(AppContext.BaseDirectory, "detect-workload");
            if (!File.Exists(path))
                throw SkipException.ForSkip($"needs {path} (built on x86-64 only, with clang)");
            return path;
        }
    }

    /// <summary>Runs to the end; returns the pid and the wait status's exit code.</summary>
    public static (int Pid, int ExitCode) Run(string mode, long n)
    {
        using var p = Process.Start(new ProcessStartInfo(Path) { ArgumentList = { mode, n.ToString(System.Globalization.CultureInfo.InvariantCulture) }, UseShellExecute = false })!;
        if (!p.WaitForExit(TimeSpan.FromSeconds(60))) throw new TimeoutException($"detect-workload {mode} {n} did not end");
        return (p.Id, p.ExitCode);
    }

    /// <summary>
    /// Starts "storm N" (N getppid calls) or "mix N": the process waits for <see cref="Gated.Go"/>
    /// first, so a test knows its pid before it makes the calls that count.
    /// </summary>
    public static Gated StartGated(long n, string mode = "storm") => new(Process.Start(new ProcessStartInfo(Path)
    {
        ArgumentList = { mode, n.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        RedirectStandardInput = true,
        UseShellExecute = false,
    })!);

    public sealed class Gated(Process process) : IDisposable
    {
        public int Pid => process.Id;

        public void Go()
        {
            process.StandardInput.Write('g');
            process.StandardInput.Flush();
        }

        public int WaitForExit()
        {
            if (!process.WaitForExit(TimeSpan.FromSeconds(60))) throw new TimeoutException("detect-workload storm did not end");
            return process.ExitCode;
        }

        public void Dispose()
        {
            if (!process.HasExited)
            {
                process.Kill();
                process.WaitForExit();
            }
            process.Dispose();
        }
    }
}
