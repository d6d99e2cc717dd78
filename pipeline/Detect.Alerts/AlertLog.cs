using System.Text.Json;

namespace Detect.Alerts;

/// <summary>
/// The local alert log: one JSON object per line (the same document as on the alerts topic),
/// appended and flushed per call so `tail -f` and log shippers see each alert at once. When the
/// file passes <see cref="MaxBytes"/> it is renamed to `NAME.1` (replacing an older one) and a new
/// file starts, so the log's disk use is bounded by about twice that. Thread-safe.
/// </summary>
public sealed class AlertLog : IDisposable
{
    private static readonly byte[] Newline = "\n"u8.ToArray();
    private readonly Lock _gate = new();
    private FileStream? _stream;
    private long _written;
    private int _disposed;

    public AlertLog(string path, long maxBytes = 256L << 20)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (maxBytes < 4096) throw new ArgumentException("maxBytes must be at least 4096", nameof(maxBytes));
        Path = System.IO.Path.GetFullPath(path);
        MaxBytes = maxBytes;
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        Open();
    }

    public string Path { get; }

    public long MaxBytes { get; }

    /// <summary>Alerts written by this log object.</summary>
    public long Written => Interlocked.Read(ref _written);

    private void Open() => _stream = new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read, 64 * 1024);

    public void Write(IEnumerable<Alert> alerts)
    {
        ArgumentNullException.ThrowIfNull(alerts);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            var any = false;
            foreach (var alert in alerts)
            {
                _stream!.Write(alert.ToJsonUtf8());
                _stream.Write(Newline);
                _written++;
                any = true;
            }
            if (!any) return;
            _stream!.Flush();
            if (_stream.Length >= MaxBytes) Rotate();
        }
    }

    public void Write(Alert alert) => Write([alert]);

    private void Rotate()
    {
        _stream!.Dispose();
        File.Move(Path, Path + ".1", overwrite: true);
        Open();
    }

    /// <summary>Reads a log back (both files of a rotated log: call it with NAME.1 first). Lines that do not parse are skipped and counted.</summary>
    public static List<Alert> Read(string path, out int badLines)
    {
        var alerts = new List<Alert>();
        badLines = 0;
        if (!File.Exists(path)) return alerts;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0) continue;
            try
            {
                alerts.Add(Alert.FromJson(System.Text.Encoding.UTF8.GetBytes(line)));
            }
            catch (JsonException)
            {
                badLines++;
            }
        }
        return alerts;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            _stream?.Dispose();
        }
    }
}
