using System.Runtime.CompilerServices;

namespace Detect.Pipeline.Windows;

/// <summary>An accumulator keeps its own record count and label, so the per-record path touches its lines only.</summary>
internal interface IAccumulator
{
    int Records { get; set; }
    int Label { get; set; }
}

/// <summary>An entity key: a small unmanaged struct with its own hash, naming its host by index.</summary>
internal interface IEntityKey<TKey> : IEquatable<TKey> where TKey : unmanaged
{
    int HostIndex { get; }
    int Hash { get; }
}

/// <summary>Event-time clock of one host: its newest record, watermark and the windows still open.</summary>
internal sealed class HostClock
{
    public long MaxEventNs = long.MinValue;
    public long WatermarkNs = long.MinValue;
    /// <summary>Every window ending at or before this has closed; a record for one of them is late.</summary>
    public long ClosedThroughNs = long.MinValue;
    /// <summary>End of the oldest open window: the watermark reaching it is the only reason to look at the windows.</summary>
    public long NextCloseNs = long.MaxValue;
    // With lateness shorter than the window, a host has at most two open windows.
    public readonly long[] OpenStart = [NoWindow, NoWindow];
    public readonly int[] OpenHead = [-1, -1];
    public readonly int[] OpenCount = [0, 0];
    public const long NoWindow = long.MinValue;
}

/// <summary>Counters of one family's window machinery. Plain fields: a pipeline is single-threaded.</summary>
public struct WindowStats
{
    /// <summary>Records applied to a window.</summary>
    public long Records;
    /// <summary>Records whose window had already closed when they arrived (counted here, not applied).</summary>
    public long LateRecords;
    /// <summary>Feature rows emitted (window closes, early ones included).</summary>
    public long Rows;
    /// <summary>Entities pushed out because the configured bound was reached.</summary>
    public long Evictions;
    /// <summary>Windows emitted before the watermark reached their end because their entity was evicted.</summary>
    public long EarlyClosedWindows;
    /// <summary>Entities forgotten after their idle timeout (or exit) with no window open.</summary>
    public long Expired;
    /// <summary>Entities alive now.</summary>
    public long Entities;
    /// <summary>Windows open now (entity × window accumulators).</summary>
    public long OpenWindows;
    /// <summary>Windows whose label had to be chosen among differing labels (an attack label wins over a normal one).</summary>
    public long MixedLabelWindows;
    /// <summary>syscall: calls left out of their window's `seq` (per-window cap or sequence pool full); counted in `seq_dropped` too.</summary>
    public long SequenceDroppedCalls;
}

/// <summary>
/// Tumbling event-time windows over a bounded table of entities, shared by every feature family.
/// Entities live in fixed slots (one cache line each: key, per-entity state, open windows) found
/// through an open-addressing index; no per-record allocation. Each entity has at most two open
/// accumulators (current window and the previous one while it is within the allowed lateness).
/// When a host's watermark reaches a window's end, every accumulator of that window is emitted as
/// one feature row and freed: a window closes exactly once. A new entity beyond the bound evicts
/// the least recently active one (CLOCK), emitting its open windows early (counted).
/// </summary>
internal abstract class WindowedFamily<TKey, TEnt, TAcc>
    where TKey : unmanaged, IEntityKey<TKey>
    where TEnt : struct
    where TAcc : struct, IAccumulator
{
    private const int ChunkShift = 8;
    private const int ChunkSize = 1 << ChunkShift;
    private const int Used = 1, Referenced = 2, Finished = 4;

    /// <summary>One entity: what the per-record path needs, together.</summary>
    protected struct Slot
    {
        public TKey Key;
        public TEnt Ent;
        public long LastSeen;
        public int Acc0, Acc1;
        // Low 32 bits of the window index (start / window) of Acc0/Acc1: a window check without touching the accumulator.
        public int Win0, Win1;
        public int Flags;
    }

    private struct AccMeta
    {
        public long Start;
        public int Entity;
        public int Prev;
        public int Next;
    }

    protected readonly long WindowNs;
    private readonly long _latenessNs;
    private readonly long _idleNs;
    private readonly int _maxEntities;
    private readonly List<HostClock> _hosts = []; // per host index, this family's own clock

    private readonly Slot[] _slots;
    private readonly int[] _freeEntities;
    private int _freeEntityTop;
    private int _entityHighWater;
    private int _clockHand;
    private int _sweepCursor;

    // Index: (hash << 32) | (slot + 1), 0 = empty. Linear probing, backward-shift deletion.
    private readonly long[] _index;
    private readonly int _indexMask;

    // Accumulators (entity x window), allocated in chunks as they are first needed.
    private readonly TAcc[]?[] _accChunks;
    private readonly AccMeta[] _accMeta;
    private readonly int[] _freeAccs;
    private int _freeAccTop;
    private int _accHighWater;

    // Last entity looked up: consecutive records of one entity skip the index.
    private TKey _lastKey;
    private int _lastSlot = -1;

    protected WindowStats StatsField;

    protected readonly LabelTable Labels;

    protected WindowedFamily(PipelineOptions options, int maxEntities, LabelTable labels)
    {
        Labels = labels;
        WindowNs = options.WindowNs;
        _latenessNs = options.LatenessNs;
        _idleNs = options.IdleNs;
        _maxEntities = maxEntities;
        _slots = new Slot[maxEntities];
        _freeEntities = new int[maxEntities];
        var indexSize = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)maxEntities * 2);
        _index = new long[indexSize];
        _indexMask = indexSize - 1;
        var maxAccs = maxEntities * 2;
        _accChunks = new TAcc[]?[(maxAccs + ChunkSize - 1) >> ChunkShift];
        _accMeta = new AccMeta[maxAccs];
        _freeAccs = new int[maxAccs];
    }

    public WindowStats Stats
    {
        get
        {
            var s = StatsField;
            s.Entities = _entityHighWater - _freeEntityTop;
            s.OpenWindows = _accHighWater - _freeAccTop;
            return s;
        }
    }

    public int MaxEntities => _maxEntities;

    /// <summary>Entities alive: beyond what the caches hold, the pipeline prefetches ahead.</summary>
    public int EntityCount => _entityHighWater - _freeEntityTop;

    /// <summary>Writes one feature row for a closing window (<paramref name="slot"/>: its entity, whose state is still there).</summary>
    protected abstract void EmitRow(in TKey key, int slot, ref TAcc acc, long windowStartNs);

    /// <summary>Hands the rows written so far on (end of a close, or a full batch).</summary>
    protected abstract void FlushRows();

    /// <summary>Rows written and not yet handed on.</summary>
    protected abstract int PendingRows { get; }

    protected abstract int MaxPendingRows { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected ref TAcc Acc(int index) => ref _accChunks[index >> ChunkShift]![index & (ChunkSize - 1)];

    protected ref TEnt Entity(int slot) => ref _slots[slot].Ent;

    protected void MarkFinished(int slot) => _slots[slot].Flags |= Finished;

    /// <summary>
    /// Prefetch hint for a record a few places ahead: brings its index bucket, slot and open
    /// accumulator toward the cache so that resolving it later does not wait on memory. Returns the
    /// accumulator of its entity's newest window (or -1) for the family to prefetch further lines.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected unsafe int Prefetch(in TKey key, int depth, out int slotIndex)
    {
        slotIndex = -1;
        var i = key.Hash & _indexMask;
        if (depth == 0)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref _index[i]));
            return -1;
        }
        var v = _index[i];
        if (v == 0) return -1;
        var s = (int)(v & 0xffffffff) - 1;
        ref var slot = ref _slots[s];
        if (depth == 1)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref slot));
            return -1;
        }
        slotIndex = s;
        return slot.Acc1 >= 0 ? slot.Acc1 : slot.Acc0;
    }

    /// <summary>
    /// Finds (or opens) the accumulator of <paramref name="key"/>'s window at <paramref name="eventNs"/>, advancing
    /// the host's watermark first. Returns -1 for a late record (counted). <paramref name="isNew"/> tells that the
    /// accumulator was just opened (zeroed).
    /// </summary>
    protected int Resolve(in TKey key, long eventNs, int labelId, out int slot, out bool isNew)
    {
        var hostIndex = key.HostIndex;
        while (_hosts.Count <= hostIndex) _hosts.Add(new HostClock());
        var host = _hosts[hostIndex];
        if (eventNs > host.MaxEventNs)
        {
            host.MaxEventNs = eventNs;
            var wm = eventNs - _latenessNs;
            if (wm >= host.NextCloseNs) AdvanceWatermark(host, wm);
            else host.WatermarkNs = wm;
        }
        var start = WindowStart(eventNs);
        if (start + WindowNs <= host.WatermarkNs)
        {
            // Its window closed (or would have: the watermark is past its end).
            StatsField.LateRecords++;
            slot = -1;
            isNew = false;
            return -1;
        }

        if (_lastSlot >= 0 && _lastKey.Equals(key)) slot = _lastSlot;
        else
        {
            slot = FindOrInsert(in key);
            _lastKey = key;
            _lastSlot = slot;
        }
        ref var e = ref _slots[slot];
        e.Flags |= Referenced;
        if (eventNs > e.LastSeen) e.LastSeen = eventNs;

        isNew = false;
        var tag = (int)(start / WindowNs);
        int acc;
        if (e.Acc0 >= 0 && e.Win0 == tag) acc = e.Acc0;
        else if (e.Acc1 >= 0 && e.Win1 == tag) acc = e.Acc1;
        else
        {
            acc = OpenAccumulator(slot, host, start, labelId);
            isNew = true;
        }
        ref var a = ref Acc(acc);
        a.Records++;
        StatsField.Records++;
        if (a.Label != labelId) MergeLabel(ref a, labelId);
        return acc;
    }

    private void MergeLabel(ref TAcc a, int labelId)
    {
        var current = a.Label;
        if (labelId == 0 || current == 0) return; // live data beside labelled: keep what is there
        StatsField.MixedLabelWindows++;
        if (Labels.IsNormal(current) && !Labels.IsNormal(labelId)) a.Label = labelId;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long WindowStart(long ns)
    {
        var r = ns % WindowNs;
        if (r < 0) r += WindowNs;
        return ns - r;
    }

    private int FindOrInsert(in TKey key)
    {
        var hash = key.Hash;
        var i = hash & _indexMask;
        while (true)
        {
            var v = _index[i];
            if (v == 0) break;
            if ((int)(v >> 32) == hash)
            {
                var s = (int)(v & 0xffffffff) - 1;
                if (_slots[s].Key.Equals(key)) return s;
            }
            i = (i + 1) & _indexMask;
        }
        // Not there: take a free slot, or evict to make one.
        int slot;
        if (_freeEntityTop > 0) slot = _freeEntities[--_freeEntityTop];
        else if (_entityHighWater < _maxEntities) slot = _entityHighWater++;
        else
        {
            slot = Evict();
            // Eviction moved index entries: probe again for the insertion point.
            i = hash & _indexMask;
            while (_index[i] != 0) i = (i + 1) & _indexMask;
        }
        ref var e = ref _slots[slot];
        e.Key = key;
        e.Ent = default;
        e.LastSeen = long.MinValue;
        e.Acc0 = -1;
        e.Acc1 = -1;
        e.Flags = Used;
        _index[i] = ((long)hash << 32) | (uint)(slot + 1);
        return slot;
    }

    private int Evict()
    {
        while (true)
        {
            var h = _clockHand;
            _clockHand = h + 1 == _entityHighWater ? 0 : h + 1;
            ref var e = ref _slots[h];
            if ((e.Flags & Used) == 0) continue;
            if ((e.Flags & Referenced) != 0)
            {
                e.Flags &= ~Referenced;
                continue;
            }
            StatsField.Evictions++;
            if (e.Acc0 >= 0 || e.Acc1 >= 0)
            {
                var host = _hosts[e.Key.HostIndex];
                if (e.Acc0 >= 0) CloseEarly(host, e.Acc0);
                if (e.Acc1 >= 0) CloseEarly(host, e.Acc1);
                e.Acc0 = -1;
                e.Acc1 = -1;
                if (PendingRows >= MaxPendingRows) FlushRows();
            }
            RemoveEntity(h, pushFree: false);
            return h;
        }
    }

    private void CloseEarly(HostClock host, int acc)
    {
        StatsField.EarlyClosedWindows++;
        Unlink(host, host.OpenStart[0] == _accMeta[acc].Start ? 0 : 1, acc);
        EmitAndFree(acc);
    }

    private void RemoveEntity(int slot, bool pushFree)
    {
        var hash = _slots[slot].Key.Hash;
        var i = hash & _indexMask;
        var tag = (uint)(slot + 1);
        while ((uint)(_index[i] & 0xffffffff) != tag) i = (i + 1) & _indexMask;
        // Backward-shift deletion keeps every probe chain unbroken without tombstones.
        var j = i;
        while (true)
        {
            j = (j + 1) & _indexMask;
            var v = _index[j];
            if (v == 0) break;
            var k = (int)(v >> 32) & _indexMask;
            var between = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (between) continue;
            _index[i] = v;
            i = j;
        }
        _index[i] = 0;
        _slots[slot].Flags = 0;
        if (_lastSlot == slot) _lastSlot = -1;
        if (pushFree) _freeEntities[_freeEntityTop++] = slot;
    }

    private int OpenAccumulator(int slot, HostClock host, long start, int labelId)
    {
        ref var e = ref _slots[slot];
        // An entity keeps at most two windows (lateness < window); should a third appear, the
        // oldest is emitted early rather than lost.
        if (e.Acc0 >= 0 && e.Acc1 >= 0)
        {
            var olderIs0 = _accMeta[e.Acc0].Start < _accMeta[e.Acc1].Start;
            CloseEarly(host, olderIs0 ? e.Acc0 : e.Acc1);
            if (olderIs0) e.Acc0 = -1; else e.Acc1 = -1;
        }
        int index;
        if (_freeAccTop > 0) index = _freeAccs[--_freeAccTop];
        else
        {
            index = _accHighWater++;
            var chunk = index >> ChunkShift;
            _accChunks[chunk] ??= new TAcc[ChunkSize];
        }
        ref var a = ref Acc(index); // zero: new chunks are, and EmitAndFree clears what it frees
        a.Label = labelId;
        ref var m = ref _accMeta[index];
        m.Start = start;
        m.Entity = slot;
        var tag = (int)(start / WindowNs);
        if (e.Acc0 < 0)
        {
            e.Acc0 = index;
            e.Win0 = tag;
        }
        else
        {
            e.Acc1 = index;
            e.Win1 = tag;
        }

        var w = host.OpenStart[0] == start ? 0 : host.OpenStart[1] == start ? 1 : -1;
        if (w < 0)
        {
            w = host.OpenStart[0] == HostClock.NoWindow ? 0 : 1;
            if (host.OpenStart[w] != HostClock.NoWindow)
                throw new InvalidOperationException("a host has more than two open windows; allowed lateness must be shorter than the window");
            host.OpenStart[w] = start;
            host.OpenHead[w] = -1;
            host.OpenCount[w] = 0;
            host.NextCloseNs = Math.Min(host.OpenStart[0] == HostClock.NoWindow ? long.MaxValue : host.OpenStart[0] + WindowNs,
                host.OpenStart[1] == HostClock.NoWindow ? long.MaxValue : host.OpenStart[1] + WindowNs);
        }
        var head = host.OpenHead[w];
        m.Prev = -1;
        m.Next = head;
        if (head >= 0) _accMeta[head].Prev = index;
        host.OpenHead[w] = index;
        host.OpenCount[w]++;
        return index;
    }

    private void Unlink(HostClock host, int w, int acc)
    {
        ref var m = ref _accMeta[acc];
        if (m.Prev >= 0) _accMeta[m.Prev].Next = m.Next; else host.OpenHead[w] = m.Next;
        if (m.Next >= 0) _accMeta[m.Next].Prev = m.Prev;
        host.OpenCount[w]--;
    }

    private void EmitAndFree(int acc)
    {
        ref var m = ref _accMeta[acc];
        ref var a = ref Acc(acc);
        EmitRow(in _slots[m.Entity].Key, m.Entity, ref a, m.Start);
        a = default; // cleared now, while the row's reads have it in cache
        StatsField.Rows++;
        _freeAccs[_freeAccTop++] = acc;
    }

    /// <summary>Closes, for every host, the windows ending at or before <paramref name="watermarkNs"/> (long.MaxValue: all).</summary>
    public void AdvanceAll(long watermarkNs)
    {
        foreach (var host in _hosts) AdvanceWatermark(host, watermarkNs);
    }

    /// <summary>Moves a host's watermark to <paramref name="watermarkNs"/> and closes every window that ends at or before it.</summary>
    private void AdvanceWatermark(HostClock host, long watermarkNs)
    {
        if (watermarkNs <= host.WatermarkNs && watermarkNs < host.NextCloseNs) return;
        if (watermarkNs > host.WatermarkNs) host.WatermarkNs = watermarkNs;
        watermarkNs = host.WatermarkNs;
        var closeThrough = watermarkNs == long.MaxValue ? long.MaxValue : WindowStart(watermarkNs);
        var closedAny = false;
        while (true)
        {
            // Oldest open window first.
            var w = -1;
            for (var k = 0; k < 2; k++)
                if (host.OpenStart[k] != HostClock.NoWindow && (w < 0 || host.OpenStart[k] < host.OpenStart[w])) w = k;
            if (w < 0 || host.OpenStart[w] > closeThrough - WindowNs) break;
            var start = host.OpenStart[w];
            for (var acc = host.OpenHead[w]; acc >= 0;)
            {
                ref var m = ref _accMeta[acc];
                var next = m.Next;
                ref var e = ref _slots[m.Entity];
                if (e.Acc0 == acc) e.Acc0 = -1; else e.Acc1 = -1;
                EmitAndFree(acc);
                if (PendingRows >= MaxPendingRows) FlushRows();
                acc = next;
            }
            host.OpenStart[w] = HostClock.NoWindow;
            host.OpenHead[w] = -1;
            host.OpenCount[w] = 0;
            if (start + WindowNs > host.ClosedThroughNs) host.ClosedThroughNs = start + WindowNs;
            closedAny = true;
        }
        if (closeThrough > host.ClosedThroughNs) host.ClosedThroughNs = closeThrough;
        host.NextCloseNs = Math.Min(host.OpenStart[0] == HostClock.NoWindow ? long.MaxValue : host.OpenStart[0] + WindowNs,
            host.OpenStart[1] == HostClock.NoWindow ? long.MaxValue : host.OpenStart[1] + WindowNs);
        if (closedAny)
        {
            if (PendingRows > 0) FlushRows();
            Sweep(4096);
        }
    }

    /// <summary>Forgets idle entities (no open window, quiet past the idle timeout, or exited), a bounded number of slots per call.</summary>
    private void Sweep(int budget)
    {
        if (_entityHighWater == 0) return;
        budget = Math.Min(budget, _entityHighWater);
        for (var n = 0; n < budget; n++)
        {
            var s = _sweepCursor;
            _sweepCursor = s + 1 >= _entityHighWater ? 0 : s + 1;
            ref var e = ref _slots[s];
            if ((e.Flags & Used) == 0 || e.Acc0 >= 0 || e.Acc1 >= 0) continue;
            var host = _hosts[e.Key.HostIndex];
            if ((e.Flags & Finished) != 0 || e.LastSeen < host.WatermarkNs - _idleNs)
            {
                RemoveEntity(s, pushFree: true);
                StatsField.Expired++;
            }
        }
    }
}
