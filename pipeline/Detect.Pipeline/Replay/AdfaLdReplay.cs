using Detect.Pipeline.Syscalls;
using Detect.Records;

namespace Detect.Pipeline.Replay;

/// <summary>
/// Replays ADFA-LD: each trace file becomes one process's syscall records, through
/// <see cref="FeaturePipeline.Process"/> exactly as live sensor batches do.
///
/// Numbers: ADFA-LD traces hold i386 syscall numbers; each is mapped to the pipeline's numbering
/// through <see cref="SyscallTable.I386ToX8664"/> (generated from Debian's asm/unistd_32.h and
/// unistd_64.h). Time, synthesised: trace k (in ordinal order of its relative path) is process
/// tgid 100000+k started at Base + k·window, and its i-th call happens at that start + i·CallGap
/// (1 µs): every trace lies inside one window of its own, so a trace gives exactly one window and
/// traces never share one. exit and exit_group carry the no-return flag; return values are not in
/// the data set (0). Labels: `normal` for Training/Validation_Data_Master, the attack type
/// (Adduser, Hydra_FTP, Hydra_SSH, Meterpreter, Java_Meterpreter, Web_Shell) for
/// Attack_Data_Master/TYPE_N; sample_id is the trace's path relative to the data set's top folder.
/// </summary>
public static class AdfaLdReplay
{
    /// <summary>2013-01-01T00:00:00Z, the year the data set was published; a multiple of any whole-second window.</summary>
    public const long BaseUnixNs = 1_356_998_400_000_000_000L;
    public const long CallGapNs = 1_000;
    public const string Host = "adfa-ld";

    public static IEnumerable<string> Traces(string dir) =>
        Directory.EnumerateFiles(dir, "*.txt", SearchOption.AllDirectories).Order(StringComparer.Ordinal);

    /// <summary>Replays every trace under <paramref name="dir"/> (or the first <paramref name="limit"/>), then flushes the pipeline.</summary>
    public static ReplayResult Run(string dir, FeaturePipeline pipeline, int limit = int.MaxValue, Action<string>? onProblem = null,
        CancellationToken ct = default)
    {
        var result = new ReplayResult { Dataset = "adfa-ld" };
        var windowNs = pipeline.Options.Window.Ticks * 100;
        var gapLimit = windowNs / CallGapNs;
        var top = TopFolder(Path.GetFullPath(dir));
        var buffer = new RecordBuffer(1 << 20);
        var calls = new List<int>(8192);
        var k = 0L;
        var exit = SyscallTable.X8664("exit");
        var exitGroup = SyscallTable.X8664("exit_group");
        foreach (var path in Traces(dir))
        {
            if (result.Files >= limit) break;
            ct.ThrowIfCancellationRequested();
            result.Files++;
            var relative = Path.GetRelativePath(top, Path.GetFullPath(path)).Replace('\\', '/');
            if (!Parse(path, calls, out var problem))
            {
                result.Problem(problem!, onProblem);
                continue;
            }
            if (calls.Count > gapLimit)
            {
                result.Problem($"{path}: {calls.Count} calls do not fit one {pipeline.Options.Window.TotalSeconds} s window at 1 µs apart; skipped", onProblem);
                continue;
            }
            var label = LabelOf(relative);
            var source = new RecordSource(Host, 0, label, relative);
            var start = (ulong)(BaseUnixNs + k * windowNs);
            var tgid = (uint)(100_000 + k);
            k++;
            buffer.Clear();
            for (var i = 0; i < calls.Count; i++)
            {
                var nr = calls[i];
                var flags = nr == exit || nr == exitGroup ? SyscallFlags.NoReturn : SyscallFlags.None;
                buffer.AddSyscall(start + (ulong)(i * CallGapNs), tgid, start, (uint)nr, 0, flags);
                if (buffer.Count == 4096)
                {
                    pipeline.Process(buffer.Span, source);
                    buffer.Clear();
                }
            }
            if (buffer.Count > 0) pipeline.Process(buffer.Span, source);
            result.Records += calls.Count;
            result.Count(label);
        }
        pipeline.Flush();
        return result;
    }

    /// <summary>Reads one trace: whitespace-separated i386 numbers. False (with file and byte offset) on anything else, or no call at all.</summary>
    public static bool Parse(string path, List<int> calls, out string? problem)
    {
        calls.Clear();
        problem = null;
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException e)
        {
            problem = $"{path}: unreadable: {e.Message}";
            return false;
        }
        var i = 0;
        while (i < bytes.Length)
        {
            var c = bytes[i];
            if (c is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t')
            {
                i++;
                continue;
            }
            var start = i;
            var value = 0;
            while (i < bytes.Length && bytes[i] >= '0' && bytes[i] <= '9' && value < 100_000) value = value * 10 + (bytes[i++] - '0');
            if (i == start || (i < bytes.Length && bytes[i] is not ((byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t')))
            {
                var end = i;
                while (end < bytes.Length && bytes[end] is not ((byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t')) end++;
                var token = System.Text.Encoding.UTF8.GetString(bytes, start, Math.Min(end - start, 40));
                problem = $"{path}: byte offset {start}: '{token}' is not a syscall number; trace skipped";
                return false;
            }
            var mapped = SyscallTable.FromI386(value);
            if (mapped < 0)
            {
                problem = $"{path}: byte offset {start}: {value} is not an i386 syscall number; trace skipped";
                return false;
            }
            calls.Add(mapped);
        }
        if (calls.Count == 0)
        {
            problem = $"{path}: byte offset 0: empty trace (no syscall); skipped";
            return false;
        }
        return true;
    }

    /// <summary>`normal` or the attack type, from a path relative to the data set's top folder.</summary>
    public static string LabelOf(string relative)
    {
        var parts = relative.Split('/');
        var i = Array.IndexOf(parts, "Attack_Data_Master");
        if (i >= 0 && i + 1 < parts.Length - 1)
        {
            var run = parts[i + 1];
            var us = run.LastIndexOf('_');
            return us > 0 && run[(us + 1)..].All(char.IsAsciiDigit) ? run[..us] : run;
        }
        return "normal";
    }

    /// <summary>The folder holding the *_Data_Master folders, when <paramref name="dir"/> is it or lies inside it.</summary>
    private static string TopFolder(string dir)
    {
        for (var d = new DirectoryInfo(dir); d != null; d = d.Parent)
        {
            if (d.Name.EndsWith("_Data_Master", StringComparison.Ordinal)) return d.Parent?.FullName ?? dir;
            if (Directory.Exists(Path.Combine(d.FullName, "Attack_Data_Master")) || Directory.Exists(Path.Combine(d.FullName, "Training_Data_Master")))
                return d.FullName;
        }
        return dir;
    }
}
