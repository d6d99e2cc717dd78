using System.Globalization;
using Apache.Arrow;
using Detect.Pipeline.Arrow;
using Parquet;
using Parquet.Schema;

namespace Detect.Pipeline.Archive;

public sealed record ArchiveOptions
{
    /// <summary>The archive's top folder; files go to &lt;Root&gt;/&lt;family&gt;/date=YYYY-MM-DD/hour=HH/part-N.parquet.</summary>
    public required string Root { get; init; }

    /// <summary>A file is closed (and becomes visible) once it reaches this size.</summary>
    public long MaxFileBytes { get; init; } = 128L << 20;

    /// <summary>... or once it has been open this long (wall clock), so recent data reaches readers.</summary>
    public TimeSpan MaxFileAge { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Rows buffered before a row group is written.</summary>
    public int RowGroupRows { get; init; } = 65_536;
}

/// <summary>Counters of the archive.</summary>
public sealed record ArchiveStats(long Rows, long RowGroups, long FilesClosed, long BytesClosed, long StaleTempFilesRemoved);

/// <summary>
/// Archives feature batches as Parquet (Parquet.Net): one folder per family, date and hour of the
/// window start (UTC), files rolled by size and age. A file is written under a hidden temporary name
/// (`.part-PID-SEQ.parquet.tmp`) and renamed to `part-N.parquet` only once its footer is on disk, so
/// no reader (pyarrow, DuckDB, Spark globbing *.parquet) ever sees a partial file. Temporary files
/// of a process that no longer runs are removed when an archive opens.
/// </summary>
public sealed class ParquetArchive : IFeatureSink, IDisposable
{
    private readonly ArchiveOptions _options;
    private readonly Dictionary<(FeatureFamily, long Hour), Partition> _open = [];
    private long _rows, _rowGroups, _files, _bytes, _stale;
    private int _sequence;
    private int _disposed;

    public ParquetArchive(ArchiveOptions options)
    {
        _options = options;
        Directory.CreateDirectory(options.Root);
        RemoveStaleTempFiles();
    }

    public ArchiveStats Stats => new(_rows, _rowGroups, _files, _bytes, _stale);

    /// <summary>Files closed so far (final paths).</summary>
    public List<string> ClosedFiles { get; } = [];

    public void OnBatch(FeatureFamily family, RecordBatch batch)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var starts = (Int64Array)batch.Column(2);
        var schema = FeaturePipeline.SchemaOf(family);
        for (var row = 0; row < batch.Length;)
        {
            // Rows of one batch nearly always share an hour: copy runs of rows, not single ones.
            var hour = HourOf(starts.GetValue(row)!.Value);
            var end = row + 1;
            while (end < batch.Length && HourOf(starts.GetValue(end)!.Value) == hour) end++;
            var part = PartitionFor(family, schema, hour);
            part.Buffer.Append(batch, row, end - row);
            _rows += end - row;
            if (part.Buffer.Rows >= _options.RowGroupRows) WriteRowGroup(part);
            row = end;
        }
        RollAged();
    }

    /// <summary>Writes what is buffered and closes every open file (they become visible).</summary>
    public void Flush()
    {
        foreach (var part in _open.Values.ToList()) Close(part);
        _open.Clear();
    }

    /// <summary>Closes files that have been open longer than <see cref="ArchiveOptions.MaxFileAge"/>.</summary>
    public void RollAged()
    {
        if (_open.Count == 0) return;
        var now = DateTime.UtcNow;
        foreach (var (key, part) in _open.ToList())
        {
            if (now - part.Opened < _options.MaxFileAge) continue;
            Close(part);
            _open.Remove(key);
        }
    }

    private static long HourOf(long unixNs) => Math.DivRem(unixNs, 3_600_000_000_000L, out var r) - (r < 0 ? 1 : 0);

    private Partition PartitionFor(FeatureFamily family, FeatureSchema schema, long hour)
    {
        if (_open.TryGetValue((family, hour), out var part)) return part;
        var time = DateTime.UnixEpoch.AddHours(hour);
        var dir = Path.Combine(_options.Root, schema.FamilyName,
            "date=" + time.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), "hour=" + time.ToString("HH", CultureInfo.InvariantCulture));
        part = new Partition(dir, schema) { Opened = DateTime.UtcNow };
        _open[(family, hour)] = part;
        return part;
    }

    private void WriteRowGroup(Partition part)
    {
        if (part.Buffer.Rows == 0) return;
        if (part.Writer == null)
        {
            Directory.CreateDirectory(part.Directory);
            part.TempPath = Path.Combine(part.Directory, $".part-{Environment.ProcessId}-{Interlocked.Increment(ref _sequence)}.parquet.tmp");
            part.Stream = new FileStream(part.TempPath, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
            part.Writer = ParquetWriter.CreateAsync(part.ParquetSchema, part.Stream).GetAwaiter().GetResult();
            part.Writer.CustomMetadata = new Dictionary<string, string>
            {
                [FeatureSchema.FamilyKey] = part.Schema.FamilyName,
                [FeatureSchema.SchemaKey] = part.Schema.SchemaString,
            };
        }
        part.Buffer.WriteTo(part.Writer, part.ParquetSchema).GetAwaiter().GetResult();
        _rowGroups++;
        part.Buffer.Clear();
        if (part.Stream!.Position >= _options.MaxFileBytes)
        {
            Close(part);
        }
    }

    private void Close(Partition part)
    {
        WriteRowGroup(part);
        if (part.Writer == null) return;
        part.Writer.DisposeAsync().AsTask().GetAwaiter().GetResult(); // writes the footer
        part.Stream!.Flush(flushToDisk: true);
        var size = part.Stream.Length;
        part.Stream.Dispose();
        part.Writer = null;
        part.Stream = null;
        // The rename is what makes the file visible: pick the next free part number.
        for (var n = NextPartNumber(part.Directory); ; n++)
        {
            var final = Path.Combine(part.Directory, $"part-{n:D5}.parquet");
            try
            {
                File.Move(part.TempPath!, final, overwrite: false);
                ClosedFiles.Add(final);
                break;
            }
            catch (IOException) when (File.Exists(final))
            {
                // Another writer took that number: try the next.
            }
        }
        _files++;
        _bytes += size;
        part.Opened = DateTime.UtcNow; // a partition kept open after a size roll starts its age anew
    }

    private static int NextPartNumber(string dir)
    {
        var max = -1;
        foreach (var f in Directory.EnumerateFiles(dir, "part-*.parquet"))
        {
            var name = Path.GetFileNameWithoutExtension(f);
            if (int.TryParse(name.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > max) max = n;
        }
        return max + 1;
    }

    private void RemoveStaleTempFiles()
    {
        foreach (var f in Directory.EnumerateFiles(_options.Root, ".part-*.parquet.tmp", SearchOption.AllDirectories))
        {
            var parts = Path.GetFileName(f).Split('-');
            if (parts.Length >= 3 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && pid != Environment.ProcessId && !Directory.Exists($"/proc/{pid}"))
            {
                File.Delete(f);
                _stale++;
            }
        }
    }

    /// <summary>Drops open files without finishing them, as a crash would (tests only).</summary>
    internal void Abandon()
    {
        foreach (var part in _open.Values)
        {
            part.Stream?.Dispose();
            part.Writer = null;
        }
        _open.Clear();
        _disposed = 1;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Flush();
    }

    private sealed class Partition(string directory, FeatureSchema schema)
    {
        public readonly string Directory = directory;
        public readonly FeatureSchema Schema = schema;
        public readonly ParquetSchema ParquetSchema = FeatureParquet.SchemaOf(schema);
        public readonly ColumnBuffer Buffer = new(schema.Features.Count, schema.HasSequence);
        public string? TempPath;
        public FileStream? Stream;
        public ParquetWriter? Writer;
        public DateTime Opened;
    }
}
