using System.Buffers.Text;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Apache.Arrow;
using Detect.Pipeline.Arrow;
using Detect.Pipeline.Windows;
using Detect.Records;

namespace Detect.Pipeline.Features;

/// <summary>A process: host, tgid and start time (a tgid alone is reused), plus the labelled sample for replays.</summary>
[StructLayout(LayoutKind.Sequential)]
internal readonly struct ProcessKey(int host, int sample, uint tgid, ulong startNs) : IEntityKey<ProcessKey>
{
    public readonly ulong StartNs = startNs;
    public readonly uint Tgid = tgid;
    public readonly int HostIdx = host;
    public readonly int Sample = sample;

    public int HostIndex => HostIdx;

    public int Hash
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            var h = (StartNs ^ ((ulong)Tgid << 32 | (uint)Sample) * 0x9E3779B97F4A7C15UL ^ (ulong)HostIdx * 0xC2B2AE3D27D4EB4FUL) * 0xBF58476D1CE4E5B9UL;
            return (int)(h >> 32) ^ (int)h;
        }
    }

    public bool Equals(ProcessKey other) => StartNs == other.StartNs && Tgid == other.Tgid && HostIdx == other.HostIdx && Sample == other.Sample;
    public override bool Equals(object? obj) => obj is ProcessKey k && Equals(k);
    public override int GetHashCode() => Hash;
}

/// <summary>Per-process state across windows: the last two calls, for n-grams that span a window edge, and the command name.</summary>
internal struct ProcessState
{
    public int Prev1; // syscall number + 1; 0 = none
    public int Prev2;
    public CommBuffer Comm; // as of the window's first record or the last exec; named in the entity
}

/// <summary>One process's counts in one window. The first 64 bytes are what every syscall record updates.</summary>
internal struct SyscallAcc : IAccumulator
{
    public int RecordCount, LabelId;
    public int Calls, RetKnown, Failed, Bigrams, Trigrams, SeqCount;
    public long FirstNs, LastNs;
    // The window's calls in order: a chain of pool blocks (1-based ids, 0 = none); calls past the cap or an empty pool are counted.
    public int SeqTail, SeqDropped, SeqHead, Execs;
    public int Forks, Exits;
    public Counts16 Classes;
    public Bitmap1024 Distinct;
    public Counts64 Tracked;
    public Counts128 Grams2;
    public Counts256 Grams3;

    public int Records { readonly get => RecordCount; set => RecordCount = value; }
    public int Label { readonly get => LabelId; set => LabelId = value; }
}

/// <summary>
/// The `syscall` family: one row per process per window from syscall, syscall-summary, exec, fork
/// and exit records. Features are listed in FEATURES.md (schema syscall/2: the features of
/// syscall/1 plus the window's calls in order, `seq`, bounded per window and by one pool).
/// </summary>
internal sealed class SyscallFamily : WindowedFamily<ProcessKey, ProcessState, SyscallAcc>
{
    public const int Version = 2;
    public const int Bigram = 128, Trigram = 256;

    public static readonly FeatureSchema Schema = new(FeatureFamily.Syscall, Version, FeatureNames(), sequence: true);

    // Feature positions.
    private const int FCalls = 0, FCallsPerS = 1, FActive = 2, FDistinct = 3, FFailedRatio = 4, FFailed = 5, FExecs = 6,
        FForks = 7, FExits = 8, FClassEntropy = 9, FBigramDistinct = 10, FTrigramDistinct = 11, FBigramDistinctRatio = 12,
        FTrigramDistinctRatio = 13, FBigramEntropy = 14, FTrigramEntropy = 15, FScalars = 16;
    private static readonly int FClass = FScalars;
    private static readonly int FTracked = FClass + SyscallClasses.Names.Length;
    private static readonly int FGram2 = FTracked + SyscallClasses.Tracked.Length;
    private static readonly int FGram3 = FGram2 + Bigram;

    private static readonly byte[] ClassOf = SyscallClasses.ClassOf;
    private static readonly sbyte[] TrackedOf = SyscallClasses.TrackedIndex;

    private readonly FeatureBatchBuilder _builder;
    private readonly Action<FeatureFamily, RecordBatch> _sink;
    private readonly int _maxRows;
    private readonly float _windowSeconds;
    private readonly SequencePool _sequences;
    private readonly int _maxSequence;

    public SyscallFamily(PipelineOptions options, LabelTable labels, Action<FeatureFamily, RecordBatch> sink)
        : base(options, options.MaxProcesses, labels)
    {
        _builder = new FeatureBatchBuilder(Schema);
        _sink = sink;
        _maxRows = options.MaxBatchRows;
        _windowSeconds = (float)options.Window.TotalSeconds;
        _sequences = new SequencePool(options.SequencePoolCalls);
        _maxSequence = options.MaxSequenceCalls;
    }

    /// <summary>The pool holding the calls of open windows (tests, status).</summary>
    internal SequencePool Sequences => _sequences;

    public static string[] FeatureNames()
    {
        var names = new List<string>
        {
            "f_calls", "f_calls_per_s", "f_active_s", "f_distinct_syscalls", "f_failed_ratio", "f_failed", "f_execs", "f_forks",
            "f_exits", "f_class_entropy", "f_bigram_distinct", "f_trigram_distinct", "f_bigram_distinct_ratio",
            "f_trigram_distinct_ratio", "f_bigram_entropy", "f_trigram_entropy",
        };
        names.AddRange(SyscallClasses.Names.Select(n => "f_class_" + n));
        names.AddRange(SyscallClasses.Tracked.Select(n => "f_sc_" + n));
        for (var i = 0; i < Bigram; i++) names.Add($"f_ng2_{i:D3}");
        for (var i = 0; i < Trigram; i++) names.Add($"f_ng3_{i:D3}");
        return [.. names];
    }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref SyscallAcc Open(in TaskInfo task, int host, int sample, long eventNs, int label, out int slot)
    {
        var key = new ProcessKey(host, sample, task.Tgid, task.StartNs);
        var acc = Resolve(in key, eventNs, label, out slot, out var isNew);
        if (acc < 0) return ref Unsafe.NullRef<SyscallAcc>();
        ref var a = ref Acc(acc);
        if (isNew)
        {
            a.FirstNs = eventNs;
            Entity(slot).Comm = task.Comm; // once per window, not per record
        }
        if (eventNs > a.LastNs) a.LastNs = eventNs;
        if (eventNs < a.FirstNs) a.FirstNs = eventNs;
        return ref a;
    }

    /// <summary>Bucket of a bigram/trigram key (multiplicative hashing, FEATURES.md).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Bucket2(uint key) => (int)((key * 0x9E3779B1u) >> 25);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Bucket3(uint key) => (int)((key * 0x9E3779B1u) >> 24);

    public void OnSyscall(in SyscallRecord r, int host, int sample, long offsetNs, int label)
    {
        ref var a = ref Open(in r.Task, host, sample, (long)r.Header.KtimeNs + offsetNs, label, out var slot);
        if (Unsafe.IsNullRef(ref a)) return;
        var n = r.Nr < 1024 ? (int)r.Nr : 1023;
        a.Calls++;
        if ((r.Flags & SyscallFlags.NoReturn) == 0)
        {
            a.RetKnown++;
            if (r.Ret < 0) a.Failed++;
        }
        a.Classes[ClassOf[n]]++;
        FeatureMath.SetBit(ref a.Distinct, n);
        var t = TrackedOf[n];
        if (t >= 0) a.Tracked[t]++;
        ref var e = ref Entity(slot);
        if (e.Prev1 != 0)
        {
            var k2 = (uint)((e.Prev1 - 1) << 10 | n);
            a.Grams2[Bucket2(k2)]++;
            a.Bigrams++;
            if (e.Prev2 != 0)
            {
                var k3 = (uint)((e.Prev2 - 1) << 20) | k2;
                a.Grams3[Bucket3(k3)]++;
                a.Trigrams++;
            }
        }
        e.Prev2 = e.Prev1;
        e.Prev1 = n + 1;
        AppendCall(ref a, (ushort)n);
    }

    /// <summary>
    /// Records a call in the window's sequence. The sequence is a prefix of the window's calls: once
    /// one call does not fit (the per-window cap, or no free block in the pool), it and every later
    /// call of that window are only counted, so `seq` never has holes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AppendCall(ref SyscallAcc a, ushort n)
    {
        var count = a.SeqCount;
        if (a.SeqDropped != 0 || count >= _maxSequence)
        {
            Dropped(ref a);
            return;
        }
        var offset = count & (SequencePool.BlockCalls - 1);
        if (offset == 0)
        {
            var block = _sequences.Allocate();
            if (block == 0)
            {
                Dropped(ref a);
                return;
            }
            if (count == 0) a.SeqHead = block;
            else _sequences.Link(a.SeqTail, block);
            a.SeqTail = block;
        }
        _sequences.At(a.SeqTail, offset) = n;
        a.SeqCount = count + 1;
    }

    private void Dropped(ref SyscallAcc a)
    {
        a.SeqDropped++;
        StatsField.SequenceDroppedCalls++;
    }

    /// <summary>Prefetch for a syscall record a few places ahead (see <see cref="WindowedFamily{TKey,TEnt,TAcc}.Prefetch"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void PrefetchSyscall(in SyscallRecord r, int host, int sample, int depth)
    {
        var key = new ProcessKey(host, sample, r.Task.Tgid, r.Task.StartNs);
        var acc = Prefetch(in key, depth, out var slot);
        if (acc < 0) return;
        ref var a = ref Acc(acc);
        var n = r.Nr < 1024 ? (int)r.Nr : 1023;
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a));
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.Classes));
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.Distinct[n >> 6]));
        var t = TrackedOf[n];
        if (t >= 0) System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.Tracked[t]));
        // The n-gram buckets depend on the entity's last calls, read from its slot (prefetched one step earlier).
        ref var e = ref Entity(slot);
        if (e.Prev1 != 0)
        {
            var k2 = (uint)((e.Prev1 - 1) << 10 | n);
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.Grams2[Bucket2(k2)]));
            if (e.Prev2 != 0)
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref a.Grams3[Bucket3((uint)((e.Prev2 - 1) << 20) | k2)]));
        }
    }

    public void OnSummary(in SyscallSummaryRecord r, int host, int sample, long offsetNs, int label)
    {
        ref var a = ref Open(in r.Task, host, sample, (long)r.Header.KtimeNs + offsetNs, label, out _);
        if (Unsafe.IsNullRef(ref a)) return;
        a.Calls += (int)r.Total;
        a.RetKnown += (int)r.Total;
        a.Failed += (int)r.Failed;
        ReadOnlySpan<uint> counts = r.Counts;
        for (var i = 0; i < counts.Length; i++)
        {
            var c = counts[i];
            if (c == 0) continue;
            a.Classes[ClassOf[i]] += c;
            FeatureMath.SetBit(ref a.Distinct, i);
            var t = TrackedOf[i];
            if (t >= 0) a.Tracked[t] += c;
        }
        if (r.Other > 0)
        {
            a.Classes[SyscallClasses.Other] += r.Other;
            FeatureMath.SetBit(ref a.Distinct, 1023);
        }
    }

    public void OnExec(in ExecRecord r, int host, int sample, long offsetNs, int label)
    {
        ref var a = ref Open(in r.Task, host, sample, (long)r.Header.KtimeNs + offsetNs, label, out var slot);
        if (Unsafe.IsNullRef(ref a)) return;
        a.Execs++;
        Entity(slot) = new ProcessState { Comm = r.Task.Comm }; // a new image: n-grams start over, under its new name
    }

    public void OnFork(in ForkRecord r, int host, int sample, long offsetNs, int label)
    {
        ref var a = ref Open(in r.Task, host, sample, (long)r.Header.KtimeNs + offsetNs, label, out _);
        if (Unsafe.IsNullRef(ref a)) return;
        a.Forks++;
    }

    public void OnExit(in ExitRecord r, int host, int sample, long offsetNs, int label)
    {
        ref var a = ref Open(in r.Task, host, sample, (long)r.Header.KtimeNs + offsetNs, label, out var slot);
        if (Unsafe.IsNullRef(ref a)) return;
        a.Exits++;
        MarkFinished(slot);
    }

    protected override int PendingRows => _builder.Rows;
    protected override int MaxPendingRows => _maxRows;

    protected override void FlushRows()
    {
        if (_builder.Rows == 0) return;
        var batch = _builder.Build();
        try
        {
            _sink(FeatureFamily.Syscall, batch);
        }
        finally
        {
            _builder.Clear();
        }
    }

    /// <summary>
    /// "tgid@start_ns", then " comm" when the records named the command, so an alert still says which
    /// program it was after the process is gone. Bytes of the name outside printable ASCII become '?'
    /// (the column is UTF-8 and the name is whatever the process set).
    /// </summary>
    internal static int FormatEntity(in ProcessKey key, in CommBuffer comm, Span<byte> entity)
    {
        Utf8Formatter.TryFormat(key.Tgid, entity, out var w);
        entity[w++] = (byte)'@';
        Utf8Formatter.TryFormat(key.StartNs, entity[w..], out var w2);
        w += w2;
        ReadOnlySpan<byte> name = comm;
        var end = name.IndexOf((byte)0);
        if (end < 0) end = name.Length;
        if (end == 0) return w;
        entity[w++] = (byte)' ';
        for (var i = 0; i < end; i++) entity[w++] = name[i] is >= 0x20 and < 0x7f ? name[i] : (byte)'?';
        return w;
    }

    protected override void EmitRow(in ProcessKey key, int slot, ref SyscallAcc a, long windowStartNs)
    {
        var recordCount = a.RecordCount;
        var labelId = a.LabelId;
        Span<byte> entity = stackalloc byte[64];
        var length = FormatEntity(key, Entity(slot).Comm, entity);
        var b = _builder;
        var row = b.AddRow(Labels.HostUtf8(key.HostIdx), entity[..length], windowStartNs, windowStartNs + WindowNs, recordCount,
            Labels.LabelUtf8(labelId), Labels.SampleUtf8(labelId));

        var calls = a.Calls;
        b.Set(FCalls, row, calls);
        b.Set(FCallsPerS, row, calls / _windowSeconds);
        b.Set(FActive, row, (a.LastNs - a.FirstNs) / 1e9f);
        b.Set(FDistinct, row, FeatureMath.PopCount(a.Distinct));
        b.Set(FFailedRatio, row, FeatureMath.Ratio(a.Failed, a.RetKnown));
        b.Set(FFailed, row, a.Failed);
        b.Set(FExecs, row, a.Execs);
        b.Set(FForks, row, a.Forks);
        b.Set(FExits, row, a.Exits);
        ReadOnlySpan<uint> classes = a.Classes;
        b.Set(FClassEntropy, row, FeatureMath.Entropy(classes, calls));
        var invCalls = calls > 0 ? 1f / calls : 0f;
        for (var i = 0; i < SyscallClasses.Names.Length; i++)
            if (classes[i] != 0) b.Set(FClass + i, row, classes[i] * invCalls);
        ReadOnlySpan<uint> tracked = a.Tracked;
        for (var i = 0; i < SyscallClasses.Tracked.Length; i++)
            if (tracked[i] != 0) b.Set(FTracked + i, row, tracked[i] * invCalls);

        // One pass per histogram: frequencies (non-zero buckets only), entropy and occupied buckets.
        var (d2, h2) = Grams(b, row, FGram2, a.Grams2, a.Bigrams);
        var (d3, h3) = Grams(b, row, FGram3, a.Grams3, a.Trigrams);
        b.Set(FBigramDistinct, row, d2);
        b.Set(FTrigramDistinct, row, d3);
        b.Set(FBigramDistinctRatio, row, a.Bigrams > 0 ? Math.Min(1f, d2 / a.Bigrams) : 0f);
        b.Set(FTrigramDistinctRatio, row, a.Trigrams > 0 ? Math.Min(1f, d3 / a.Trigrams) : 0f);
        b.Set(FBigramEntropy, row, h2);
        b.Set(FTrigramEntropy, row, h3);

        // The calls in order, copied block by block, and the blocks returned to the pool.
        var left = a.SeqCount;
        for (var block = a.SeqHead; block != 0 && left > 0; block = _sequences.Next(block))
        {
            var take = Math.Min(left, SequencePool.BlockCalls);
            b.AppendSequence(_sequences.Block(block, take));
            left -= take;
        }
        b.EndSequence(row, a.SeqDropped);
        _sequences.FreeChain(a.SeqHead);
    }

    /// <summary>Writes a hashed n-gram histogram's frequencies; returns its distinct estimate (linear counting over the buckets) and entropy in bits.</summary>
    private static (float Distinct, float Entropy) Grams(FeatureBatchBuilder b, int row, int first, ReadOnlySpan<uint> buckets, int total)
    {
        if (total <= 0) return (0, 0);
        var inv = 1f / total;
        var occupied = 0;
        double h = 0;
        for (var i = 0; i < buckets.Length; i++)
        {
            var c = buckets[i];
            if (c == 0) continue;
            occupied++;
            var p = c * inv;
            b.Set(first + i, row, p);
            h -= p * Math.Log2(p);
        }
        return (FeatureMath.LinearCount(occupied, buckets.Length), (float)h);
    }
}
