using System.Diagnostics;
using System.Globalization;

namespace Detect.Cli.Sensors;

/// <summary>
/// A detect-workload child (sensors/Detect.Sensors/Workload) in "storm N" mode: it waits for a
/// start byte, then makes exactly N getppid calls - the load of `bench sensors`.
/// </summary>
internal sealed class StormProcess : IDisposable
{
    private readonly Process _process;

    public StormProcess(long calls)
    {
        var path = Path.Combine(AppContext.BaseDirectory, "detect-workload");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} is missing (it is built with clang on x86-64 hosts)", path);
        _process = Process.Start(new ProcessStartInfo(path)
        {
            ArgumentList = { "storm", calls.ToString(CultureInfo.InvariantCulture) },
            RedirectStandardInput = true,
            UseShellExecute = false,
        }) ?? throw new InvalidOperationException("could not start detect-workload");
        Calls = calls;
    }

    public int Pid => _process.Id;

    public long Calls { get; }

    /// <summary>Records the sensors must produce for it after the start byte: read, the calls, exit_group.</summary>
    public long ExpectedRecords => Calls + 2;

    public void Go()
    {
        _process.StandardInput.Write('g');
        _process.StandardInput.Flush();
    }

    public bool HasExited => _process.HasExited;

    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) throw new TimeoutException($"detect-workload {Pid} did not end within {timeout}");
        return _process.ExitCode;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit();
            }
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
    }
}
