using Apache.Arrow;
using Apache.Arrow.Types;
using Array = System.Array;

namespace Detect.Models.Features;

/// <summary>
/// Windows of one family as a dense row-major float matrix (rows = windows, columns = the `f_`
/// features in schema order), with the key and label columns beside it, and (syscall/2) each
/// window's call sequence. Training, calibration and evaluation work on this; live scoring reads
/// Arrow batches directly (see ModelScorer).
/// </summary>
public sealed class FeatureMatrix
{
    public FeatureMatrix(string family, string featureSchema, IReadOnlyList<string> featureNames, float[] values, int rows,
        string?[]? entities = null, string?[]? labels = null, string?[]? sampleIds = null, long[]? windowStarts = null, string?[]? hosts = null,
        SequenceColumn? sequences = null)
    {
        ArgumentNullException.ThrowIfNull(featureNames);
        ArgumentNullException.ThrowIfNull(values);
        if (featureNames.Count == 0) throw new ArgumentException("a feature matrix needs at least one feature column", nameof(featureNames));
        if ((long)rows * featureNames.Count > values.Length)
            throw new ArgumentException($"{rows} rows of {featureNames.Count} features need {(long)rows * featureNames.Count} values, got {values.Length}", nameof(values));
        Family = family;
        FeatureSchema = featureSchema;
        FeatureNames = featureNames;
        Values = values;
        Rows = rows;
        Entities = Check(entities, rows, nameof(entities)) ?? new string?[rows];
        Labels = Check(labels, rows, nameof(labels)) ?? new string?[rows];
        SampleIds = Check(sampleIds, rows, nameof(sampleIds)) ?? new string?[rows];
        WindowStarts = Check(windowStarts, rows, nameof(windowStarts)) ?? new long[rows];
        Hosts = Check(hosts, rows, nameof(hosts)) ?? new string?[rows];
        if (sequences != null && sequences.Count != rows) throw new ArgumentException($"{sequences.Count} sequences for {rows} rows", nameof(sequences));
        Sequences = sequences;
    }

    public string Family { get; }
    public string FeatureSchema { get; }
    public IReadOnlyList<string> FeatureNames { get; }
    /// <summary>Row-major: row r is Values[r*Columns .. (r+1)*Columns).</summary>
    public float[] Values { get; }
    public int Rows { get; }
    public int Columns => FeatureNames.Count;
    public string?[] Entities { get; }
    public string?[] Labels { get; }
    public string?[] SampleIds { get; }
    public long[] WindowStarts { get; }
    public string?[] Hosts { get; }
    /// <summary>Each window's calls in order (the `seq` column of syscall/2), or null when the batches carry none.</summary>
    public SequenceColumn? Sequences { get; }

    public ReadOnlySpan<float> Row(int row) => Values.AsSpan(row * Columns, Columns);

    public float this[int row, int column] => Values[row * Columns + column];

    /// <summary>A copy holding only the given rows, in the given order.</summary>
    public FeatureMatrix Select(IReadOnlyList<int> rows)
    {
        var d = Columns;
        var values = new float[rows.Count * d];
        var entities = new string?[rows.Count];
        var labels = new string?[rows.Count];
        var samples = new string?[rows.Count];
        var starts = new long[rows.Count];
        var hosts = new string?[rows.Count];
        for (var i = 0; i < rows.Count; i++)
        {
            var r = rows[i];
            Array.Copy(Values, r * d, values, i * d, d);
            entities[i] = Entities[r];
            labels[i] = Labels[r];
            samples[i] = SampleIds[r];
            starts[i] = WindowStarts[r];
            hosts[i] = Hosts[r];
        }
        return new FeatureMatrix(Family, FeatureSchema, FeatureNames, values, rows.Count, entities, labels, samples, starts, hosts, Sequences?.Select(rows));
    }

    /// <summary>The rows that satisfy a predicate on the row index.</summary>
    public FeatureMatrix Where(Func<int, bool> keep) => Select(Enumerable.Range(0, Rows).Where(keep).ToList());

    /// <summary>Rows labelled normal (or unlabelled, as live data is): what models train on.</summary>
    public FeatureMatrix NormalRows() => Where(r => FeatureColumns.IsNormalLabel(Labels[r]));

    /// <summary>Stacks matrices of one schema.</summary>
    public static FeatureMatrix Concat(IReadOnlyList<FeatureMatrix> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("nothing to concatenate", nameof(parts));
        var first = parts[0];
        foreach (var p in parts)
        {
            if (p.FeatureSchema != first.FeatureSchema || !p.FeatureNames.SequenceEqual(first.FeatureNames))
                throw new FeatureSchemaMismatchException($"cannot stack feature schema '{p.FeatureSchema}' ({p.Columns} features) onto '{first.FeatureSchema}' ({first.Columns} features)");
            if ((p.Sequences == null) != (first.Sequences == null))
                throw new FeatureSchemaMismatchException($"cannot stack windows with and without the '{SequenceColumn.Column}' column (schema '{first.FeatureSchema}')");
        }
        if (parts.Count == 1) return first;
        var rows = parts.Sum(p => p.Rows);
        var d = first.Columns;
        var values = new float[(long)rows * d];
        var entities = new string?[rows];
        var labels = new string?[rows];
        var samples = new string?[rows];
        var starts = new long[rows];
        var hosts = new string?[rows];
        var at = 0;
        foreach (var p in parts)
        {
            Array.Copy(p.Values, 0, values, (long)at * d, (long)p.Rows * d);
            Array.Copy(p.Entities, 0, entities, at, p.Rows);
            Array.Copy(p.Labels, 0, labels, at, p.Rows);
            Array.Copy(p.SampleIds, 0, samples, at, p.Rows);
            Array.Copy(p.WindowStarts, 0, starts, at, p.Rows);
            Array.Copy(p.Hosts, 0, hosts, at, p.Rows);
            at += p.Rows;
        }
        var sequences = first.Sequences == null ? null : SequenceColumn.Concat(parts.Select(p => p.Sequences!).ToList());
        return new FeatureMatrix(first.Family, first.FeatureSchema, first.FeatureNames, values, rows, entities, labels, samples, starts, hosts, sequences);
    }

    /// <summary>Reads a feature batch (the pipeline's Arrow RecordBatch) into a matrix.</summary>
    public static FeatureMatrix FromArrow(RecordBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var (family, schema) = ArrowFeatures.ReadMetadata(batch.Schema);
        var featureIndexes = ArrowFeatures.FeatureColumnIndexes(batch.Schema);
        var names = featureIndexes.Select(i => batch.Schema.GetFieldByIndex(i).Name).ToArray();
        var n = batch.Length;
        var d = names.Length;
        var values = new float[(long)n * d];
        for (var j = 0; j < d; j++)
        {
            var column = ArrowFeatures.FloatColumn(batch, featureIndexes[j]);
            var span = column.Values;
            for (var r = 0; r < n; r++) values[(long)r * d + j] = column.IsNull(r) ? 0f : span[r];
        }
        return new FeatureMatrix(family, schema, names, values, n,
            ArrowFeatures.Strings(batch, FeatureColumns.Entity), ArrowFeatures.Strings(batch, FeatureColumns.Label),
            ArrowFeatures.Strings(batch, FeatureColumns.SampleId), ArrowFeatures.Longs(batch, FeatureColumns.WindowStart),
            ArrowFeatures.Strings(batch, FeatureColumns.Host), SequenceColumn.FromArrow(batch)?.Select(Enumerable.Range(0, n).ToList()));
    }

    /// <summary>Writes the matrix as a feature batch of the contract's layout (tests, notebooks and tools; the pipeline has its own writer).</summary>
    public RecordBatch ToArrow()
    {
        var builder = new Schema.Builder()
            .Field(f => f.Name(FeatureColumns.Host).DataType(StringType.Default).Nullable(true))
            .Field(f => f.Name(FeatureColumns.Entity).DataType(StringType.Default).Nullable(true))
            .Field(f => f.Name(FeatureColumns.WindowStart).DataType(Int64Type.Default).Nullable(false))
            .Field(f => f.Name(FeatureColumns.WindowEnd).DataType(Int64Type.Default).Nullable(false))
            .Field(f => f.Name(FeatureColumns.RecordCount).DataType(Int64Type.Default).Nullable(false))
            .Field(f => f.Name(FeatureColumns.Label).DataType(StringType.Default).Nullable(true))
            .Field(f => f.Name(FeatureColumns.SampleId).DataType(StringType.Default).Nullable(true));
        foreach (var name in FeatureNames) builder.Field(f => f.Name(name).DataType(FloatType.Default).Nullable(false));
        if (Sequences != null)
        {
            builder.Field(f => f.Name(SequenceColumn.Column).DataType(BinaryType.Default).Nullable(false));
            builder.Field(f => f.Name(SequenceColumn.DroppedColumn).DataType(Int32Type.Default).Nullable(false));
        }
        builder.Metadata(FeatureColumns.FamilyKey, Family).Metadata(FeatureColumns.SchemaKey, FeatureSchema);
        var arrays = new List<IArrowArray>
        {
            StringArrayOf(Hosts), StringArrayOf(Entities),
            new Int64Array.Builder().AppendRange(WindowStarts).Build(),
            new Int64Array.Builder().AppendRange(WindowStarts).Build(),
            new Int64Array.Builder().AppendRange(new long[Rows]).Build(),
            StringArrayOf(Labels), StringArrayOf(SampleIds),
        };
        var column = new float[Rows];
        for (var j = 0; j < Columns; j++)
        {
            for (var r = 0; r < Rows; r++) column[r] = Values[(long)r * Columns + j];
            arrays.Add(new FloatArray.Builder().AppendRange(column).Build());
        }
        if (Sequences != null)
        {
            var (seq, dropped) = Sequences.ToArrow();
            arrays.Add(seq);
            arrays.Add(dropped);
        }
        return new RecordBatch(builder.Build(), arrays, Rows);
    }

    private static StringArray StringArrayOf(string?[] values)
    {
        var b = new StringArray.Builder();
        foreach (var v in values)
        {
            if (v == null) b.AppendNull(); else b.Append(v);
        }
        return b.Build();
    }

    private static T[]? Check<T>(T[]? array, int rows, string name) =>
        array == null || array.Length == rows ? array : throw new ArgumentException($"{name} has {array.Length} entries for {rows} rows", name);
}

/// <summary>Reading the contract's columns out of Arrow schemas and batches.</summary>
public static class ArrowFeatures
{
    public static (string Family, string FeatureSchema) ReadMetadata(Schema schema)
    {
        ArgumentNullException.ThrowIfNull(schema);
        var meta = schema.Metadata;
        if (meta == null || !meta.TryGetValue(FeatureColumns.SchemaKey, out var featureSchema) || string.IsNullOrEmpty(featureSchema))
            throw new FeatureSchemaMismatchException($"the batch has no '{FeatureColumns.SchemaKey}' schema metadata, so its features cannot be matched to a model");
        var family = meta.TryGetValue(FeatureColumns.FamilyKey, out var f) && !string.IsNullOrEmpty(f) ? f : featureSchema.Split('/')[0];
        return (family, featureSchema);
    }

    public static int[] FeatureColumnIndexes(Schema schema)
    {
        var list = new List<int>();
        for (var i = 0; i < schema.FieldsList.Count; i++)
        {
            if (FeatureColumns.IsFeature(schema.FieldsList[i].Name)) list.Add(i);
        }
        return [.. list];
    }

    public static FloatArray FloatColumn(RecordBatch batch, int index) =>
        batch.Column(index) as FloatArray
        ?? throw new FeatureSchemaMismatchException($"feature column '{batch.Schema.GetFieldByIndex(index).Name}' is {batch.Schema.GetFieldByIndex(index).DataType.Name}, the contract says float32");

    public static string?[]? Strings(RecordBatch batch, string name)
    {
        var i = batch.Schema.GetFieldIndex(name);
        if (i < 0) return null;
        if (batch.Column(i) is not StringArray a) return null;
        var result = new string?[batch.Length];
        for (var r = 0; r < result.Length; r++) result[r] = a.IsNull(r) ? null : a.GetString(r);
        return result;
    }

    public static long[]? Longs(RecordBatch batch, string name)
    {
        var i = batch.Schema.GetFieldIndex(name);
        if (i < 0 || batch.Column(i) is not Int64Array a) return null;
        var result = new long[batch.Length];
        for (var r = 0; r < result.Length; r++) result[r] = a.GetValue(r) ?? 0;
        return result;
    }
}
