using System.Globalization;
using Parquet;
using Parquet.Schema;

namespace Detect.Models.Features;

/// <summary>
/// The Parquet feature archive (CONTRACTS.md): `ROOT/&lt;family&gt;/date=YYYY-MM-DD/hour=HH/part-&lt;n&gt;.parquet`,
/// the same columns as the Arrow batches, the schema strings in the key-value metadata.
/// Training and notebooks read it; the pipeline writes it (Write here serves tests and tools).
/// </summary>
public static class ParquetArchive
{
    /// <summary>The part files of one family, oldest partition first. A wrong layout is an error that names what is missing.</summary>
    public static IReadOnlyList<string> PartFiles(string root, string family, DateTime? fromUtc = null, DateTime? toUtc = null)
    {
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"archive folder {root} does not exist");
        var familyDir = Path.Combine(root, family);
        if (!Directory.Exists(familyDir))
        {
            var present = Directory.GetDirectories(root).Select(Path.GetFileName).ToList();
            throw new DirectoryNotFoundException(
                $"archive {root} has no '{family}/' folder (expected layout {family}/date=YYYY-MM-DD/hour=HH/part-N.parquet; found: {(present.Count == 0 ? "nothing" : string.Join(", ", present))})");
        }
        var files = new List<(DateTime Hour, string Path)>();
        foreach (var dateDir in Directory.GetDirectories(familyDir, "date=*"))
        {
            if (!DateTime.TryParseExact(Path.GetFileName(dateDir)[5..], "yyyy-MM-dd", CultureInfo.InvariantCulture,
                    DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var date)) continue;
            foreach (var hourDir in Directory.GetDirectories(dateDir, "hour=*"))
            {
                if (!int.TryParse(Path.GetFileName(hourDir)[5..], NumberStyles.None, CultureInfo.InvariantCulture, out var h) || h > 23) continue;
                var hour = date.AddHours(h);
                // A partition overlaps [from, to] when its hour does.
                if (fromUtc is { } from && hour.AddHours(1) <= from) continue;
                if (toUtc is { } to && hour > to) continue;
                foreach (var f in Directory.GetFiles(hourDir, "part-*.parquet")) files.Add((hour, f));
            }
        }
        if (files.Count == 0)
            throw new FileNotFoundException($"archive {familyDir} holds no part files (expected date=YYYY-MM-DD/hour=HH/part-N.parquet{(fromUtc != null || toUtc != null ? " in the requested time range" : "")})");
        return files.OrderBy(f => f.Hour).ThenBy(f => PartNumber(f.Path)).ThenBy(f => f.Path, StringComparer.Ordinal).Select(f => f.Path).ToList();
    }

    /// <summary>Reads every part of one family into one matrix; all parts must share one feature schema.</summary>
    public static async Task<FeatureMatrix> ReadFamilyAsync(string root, string family, DateTime? fromUtc = null, DateTime? toUtc = null, CancellationToken ct = default)
    {
        var parts = new List<FeatureMatrix>();
        foreach (var file in PartFiles(root, family, fromUtc, toUtc))
        {
            ct.ThrowIfCancellationRequested();
            var m = await ReadFileAsync(file, ct).ConfigureAwait(false);
            if (m.Rows > 0) parts.Add(m);
        }
        if (parts.Count == 0) throw new InvalidDataException($"archive {Path.Combine(root, family)} holds no rows");
        var all = FeatureMatrix.Concat(parts);
        if (fromUtc == null && toUtc == null) return all;
        var from = fromUtc is { } f0 ? ToUnixNs(f0) : long.MinValue;
        var to = toUtc is { } t0 ? ToUnixNs(t0) : long.MaxValue;
        return all.Where(r => all.WindowStarts[r] >= from && all.WindowStarts[r] <= to);
    }

    public static async Task<FeatureMatrix> ReadFileAsync(string path, CancellationToken ct = default)
    {
        await using var reader = await ParquetReader.CreateAsync(path, cancellationToken: ct).ConfigureAwait(false);
        var meta = reader.CustomMetadata ?? new Dictionary<string, string>();
        if (!meta.TryGetValue(FeatureColumns.SchemaKey, out var schema) || string.IsNullOrEmpty(schema))
            throw new FeatureSchemaMismatchException($"{path} has no '{FeatureColumns.SchemaKey}' key-value metadata");
        var family = meta.TryGetValue(FeatureColumns.FamilyKey, out var fam) ? fam : schema.Split('/')[0];
        var fields = reader.Schema.GetDataFields();
        var features = fields.Where(f => FeatureColumns.IsFeature(f.Name)).ToArray();
        if (features.Length == 0) throw new FeatureSchemaMismatchException($"{path} has no feature (f_) columns");
        var names = features.Select(f => f.Name).ToArray();
        var d = features.Length;
        var values = new List<float[]>();
        var entities = new List<string?>();
        var labels = new List<string?>();
        var samples = new List<string?>();
        var hosts = new List<string?>();
        var starts = new List<long>();
        var seqField = fields.FirstOrDefault(f => f.Name == SequenceColumn.Column);
        var seqDroppedField = fields.FirstOrDefault(f => f.Name == SequenceColumn.DroppedColumn);
        var sequences = seqField != null ? new List<ushort[]>() : null;
        var dropped = new List<int>();
        var total = 0;
        for (var g = 0; g < reader.RowGroupCount; g++)
        {
            using var rg = reader.OpenRowGroupReader(g);
            var n = checked((int)rg.RowCount);
            var block = new float[(long)n * d];
            for (var j = 0; j < d; j++)
            {
                var column = await ReadFloatsAsync(rg, features[j], n, ct).ConfigureAwait(false);
                for (var r = 0; r < n; r++) block[(long)r * d + j] = column[r];
            }
            values.Add(block);
            entities.AddRange(await ReadStringsAsync(rg, fields, FeatureColumns.Entity, n, ct).ConfigureAwait(false));
            labels.AddRange(await ReadStringsAsync(rg, fields, FeatureColumns.Label, n, ct).ConfigureAwait(false));
            samples.AddRange(await ReadStringsAsync(rg, fields, FeatureColumns.SampleId, n, ct).ConfigureAwait(false));
            hosts.AddRange(await ReadStringsAsync(rg, fields, FeatureColumns.Host, n, ct).ConfigureAwait(false));
            starts.AddRange(await ReadLongsAsync(rg, fields, FeatureColumns.WindowStart, n, ct).ConfigureAwait(false));
            if (sequences != null)
            {
                if (seqField!.ClrType != typeof(byte[]) && seqField.ClrType != typeof(ReadOnlyMemory<byte>))
                    throw new FeatureSchemaMismatchException($"{path}: column '{SequenceColumn.Column}' is {seqField.ClrType.Name}, the contract says binary");
                var cells = new byte[]?[n];
                await rg.ReadAsync(seqField, cells.AsMemory(), null, ct).ConfigureAwait(false);
                foreach (var c in cells) sequences.Add(c == null ? [] : System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(c.AsSpan()).ToArray());
                var droppedHere = new int[n];
                if (seqDroppedField != null && seqDroppedField.ClrType == typeof(int)) await rg.ReadAsync<int>(seqDroppedField, droppedHere, null, ct).ConfigureAwait(false);
                dropped.AddRange(droppedHere);
            }
            total += n;
        }
        var all = new float[(long)total * d];
        var at = 0L;
        foreach (var b in values)
        {
            Array.Copy(b, 0, all, at, b.Length);
            at += b.Length;
        }
        return new FeatureMatrix(family, schema, names, all, total, [.. entities], [.. labels], [.. samples], [.. starts], [.. hosts],
            sequences != null ? SequenceColumn.FromRows(sequences, dropped) : null);
    }

    /// <summary>Writes a matrix as one part file under the archive layout (temporary name, then rename) and returns its path.</summary>
    public static async Task<string> WriteAsync(string root, FeatureMatrix m, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(m);
        var first = m.Rows > 0 ? DateTimeOffset.FromUnixTimeMilliseconds(m.WindowStarts[0] / 1_000_000).UtcDateTime : DateTime.UnixEpoch;
        var dir = Path.Combine(root, m.Family, $"date={first:yyyy-MM-dd}", $"hour={first:HH}");
        Directory.CreateDirectory(dir);
        var n = Directory.GetFiles(dir, "part-*.parquet").Length;
        string path;
        while (File.Exists(path = Path.Combine(dir, $"part-{n}.parquet"))) n++;
        var tmp = path + ".tmp";
        await WriteFileAsync(tmp, m, ct).ConfigureAwait(false);
        File.Move(tmp, path);
        return path;
    }

    public static async Task WriteFileAsync(string path, FeatureMatrix m, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(m);
        var host = new DataField<string>(FeatureColumns.Host, true);
        var entity = new DataField<string>(FeatureColumns.Entity, true);
        var start = new DataField<long>(FeatureColumns.WindowStart, false);
        var end = new DataField<long>(FeatureColumns.WindowEnd, false);
        var count = new DataField<long>(FeatureColumns.RecordCount, false);
        var label = new DataField<string>(FeatureColumns.Label, true);
        var sample = new DataField<string>(FeatureColumns.SampleId, true);
        var features = m.FeatureNames.Select(n => new DataField<float>(n, false)).ToArray();
        var seq = new DataField<byte[]>(SequenceColumn.Column, false);
        var seqDropped = new DataField<int>(SequenceColumn.DroppedColumn, false);
        Parquet.Schema.Field[] sequenceFields = m.Sequences != null ? [seq, seqDropped] : [];
        var schema = new ParquetSchema([host, entity, start, end, count, label, sample, .. features, .. sequenceFields]);
        await using var stream = File.Create(path);
        await using var writer = await ParquetWriter.CreateAsync(schema, stream, cancellationToken: ct).ConfigureAwait(false);
        writer.CustomMetadata = new Dictionary<string, string> { [FeatureColumns.FamilyKey] = m.Family, [FeatureColumns.SchemaKey] = m.FeatureSchema };
        using var rg = writer.CreateRowGroup();
        await rg.WriteAsync(host, m.Hosts).ConfigureAwait(false);
        await rg.WriteAsync(entity, m.Entities).ConfigureAwait(false);
        await rg.WriteAsync<long>(start, m.WindowStarts, null, null, ct).ConfigureAwait(false);
        await rg.WriteAsync<long>(end, m.WindowStarts, null, null, ct).ConfigureAwait(false);
        await rg.WriteAsync<long>(count, new long[m.Rows], null, null, ct).ConfigureAwait(false);
        await rg.WriteAsync(label, m.Labels).ConfigureAwait(false);
        await rg.WriteAsync(sample, m.SampleIds).ConfigureAwait(false);
        var column = new float[m.Rows];
        for (var j = 0; j < features.Length; j++)
        {
            for (var r = 0; r < m.Rows; r++) column[r] = m.Values[(long)r * m.Columns + j];
            await rg.WriteAsync<float>(features[j], column, null, null, ct).ConfigureAwait(false);
        }
        if (m.Sequences is { } sequences)
        {
            var cells = new byte[m.Rows][];
            var dropped = new int[m.Rows];
            for (var r = 0; r < m.Rows; r++)
            {
                cells[r] = System.Runtime.InteropServices.MemoryMarshal.AsBytes(sequences[r]).ToArray();
                dropped[r] = sequences.Dropped(r);
            }
            await rg.WriteAsync(seq, cells).ConfigureAwait(false);
            await rg.WriteAsync<int>(seqDropped, dropped, null, null, ct).ConfigureAwait(false);
        }
        rg.CompleteValidate();
    }

    private static async Task<float[]> ReadFloatsAsync(ParquetRowGroupReader rg, DataField field, int n, CancellationToken ct)
    {
        var result = new float[n];
        if (field.ClrType == typeof(float) && !field.IsNullable)
        {
            await rg.ReadAsync<float>(field, result, null, ct).ConfigureAwait(false);
            return result;
        }
        if (field.ClrType == typeof(float))
        {
            var nullable = new float?[n];
            await rg.ReadAsync<float>(field, nullable, null, ct).ConfigureAwait(false);
            for (var i = 0; i < n; i++) result[i] = nullable[i] ?? 0f;
            return result;
        }
        if (field.ClrType == typeof(double))
        {
            var nullable = new double?[n];
            await rg.ReadAsync<double>(field, nullable, null, ct).ConfigureAwait(false);
            for (var i = 0; i < n; i++) result[i] = (float)(nullable[i] ?? 0);
            return result;
        }
        throw new FeatureSchemaMismatchException($"feature column '{field.Name}' is {field.ClrType.Name}, the contract says float32");
    }

    private static async Task<string?[]> ReadStringsAsync(ParquetRowGroupReader rg, DataField[] fields, string name, int n, CancellationToken ct)
    {
        var result = new string?[n];
        var field = fields.FirstOrDefault(f => f.Name == name);
        // Parquet.Net 6 reports UTF-8 columns as ReadOnlyMemory<char>.
        if (field == null || (field.ClrType != typeof(string) && field.ClrType != typeof(ReadOnlyMemory<char>))) return result;
        var tmp = new string[n];
        await rg.ReadAsync(field, tmp, null, ct).ConfigureAwait(false);
        for (var i = 0; i < n; i++) result[i] = tmp[i];
        return result;
    }

    private static async Task<long[]> ReadLongsAsync(ParquetRowGroupReader rg, DataField[] fields, string name, int n, CancellationToken ct)
    {
        var result = new long[n];
        var field = fields.FirstOrDefault(f => f.Name == name);
        if (field == null || field.ClrType != typeof(long)) return result;
        if (!field.IsNullable)
        {
            await rg.ReadAsync<long>(field, result, null, ct).ConfigureAwait(false);
            return result;
        }
        var nullable = new long?[n];
        await rg.ReadAsync<long>(field, nullable, null, ct).ConfigureAwait(false);
        for (var i = 0; i < n; i++) result[i] = nullable[i] ?? 0;
        return result;
    }

    private static int PartNumber(string path)
    {
        var name = Path.GetFileNameWithoutExtension(path);
        return int.TryParse(name.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : int.MaxValue;
    }

    private static long ToUnixNs(DateTime utc) => (utc.ToUniversalTime() - DateTime.UnixEpoch).Ticks * 100;
}
