using System.Runtime.CompilerServices;

namespace Detect.Pipeline.Windows;

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
}

/// <summary>
/// Tumbling event-time windows over a bounded table of entities, shared by every feature family.
/// Entities live in fixed slots found through an open-addressing index (no per-record allocation);
/// each entity has at most two open accumulators (current window and the previous one while it is
/// within the allowed lateness). When a host's watermark reaches a window's end, every accumulator of
/// that window is emitted as one feature row and freed: a window closes exactly once. A new entity
/// beyond the bound evicts the least recently active one (CLOCK), emitting its open windows early.
/// </summary>
internal abstract class WindowedFamily<TKey, TEnt, TAcc>
    where TKey : unmanaged, IEntityKey<TKey>
    where TEnt : struct
    where TAcc : struct
{
    private const int ChunkShift = 8;
    private const int ChunkSize = 1 << ChunkShift;

    protected readonly long WindowNs;
    private readonly long _latenessNs;
    private readonly long _idleNs;
    private readonly int _maxEntities;
    private readonly List<HostClock> _hosts; // per host index, this family's own clock

    // Entity slots.
    private readonly TKey[] _keys;
    private readonly TEnt[] _ents;
    private readonly long[] _lastSeen;
    private readonly int[] _acc0;
    private readonly int[] _acc1;
    private readonly byte[] _flags; // bit 0 used, bit 1 referenced (CLOCK), bit 2 finished
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
    private readonly long[] _accStart;
    private readonly int[] _accEntity;
    private readonly int[] _accPrev;
    private readonly int[] _accNext;
    private readonly int[] _accLabel;
    private readonly long[] _accRecords;
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
        _hosts = [];
        _keys = new TKey[maxEntities];
        _ents = new TEnt[maxEntities];
        _lastSeen = new long[maxEntities];
        _acc0 = new int[maxEntities];
        _acc1 = new int[maxEntities];
        _flags = new byte[maxEntities];
        _freeEntities = new int[maxEntities];
        var indexSize = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)maxEntities * 2);
        _index = new long[indexSize];
        _indexMask = indexSize - 1;
        var maxAccs = maxEntities * 2;
        _accChunks = new TAcc[]?[(maxAccs + ChunkSize - 1) >> ChunkShift];
        _accStart = new long[maxAccs];
        _accEntity = new int[maxAccs];
        _accPrev = new int[maxAccs];
        _accNext = new int[maxAccs];
        _accLabel = new int[maxAccs];
        _accRecords = new long[maxAccs];
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

    /// <summary>Writes one feature row for a closing window.</summary>
    protected abstract void EmitRow(in TKey key, ref TAcc acc, long windowStartNs, long recordCount, int labelId);

    /// <summary>Hands the rows written so far on (end of a close, or a full batch).</summary>
    protected abstract void FlushRows();

    /// <summary>Rows written and not yet handed on.</summary>
    protected abstract int PendingRows { get; }

    protected abstract int MaxPendingRows { get; }

    /// <summary>Called when an entity's slot is reused, so per-entity state starts clean.</summary>
    protected virtual void ResetEntity(ref TEnt ent) => ent = default;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected ref TAcc Acc(int index) => ref _accChunks[index >> ChunkShift]![index & (ChunkSize - 1)];

    protected ref TEnt Entity(int slot) => ref _ents[slot];

    protected void MarkFinished(int slot) => _flags[slot] |= 4;

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
            if (wm > host.WatermarkNs) AdvanceWatermark(host, wm);
        }
        var start = WindowStart(eventNs);
        if (start + WindowNs <= host.ClosedThroughNs)
        {
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
        _flags[slot] |= 2;
        if (eventNs > _lastSeen[slot]) _lastSeen[slot] = eventNs;

        isNew = false;
        var a0 = _acc0[slot];
        int acc;
        if (a0 >= 0 && _accStart[a0] == start) acc = a0;
        else
        {
            var a1 = _acc1[slot];
            if (a1 >= 0 && _accStart[a1] == start) acc = a1;
            else
            {
                acc = OpenAccumulator(slot, host, start, labelId);
                isNew = true;
            }
        }
        _accRecords[acc]++;
        StatsField.Records++;
        if (!isNew && _accLabel[acc] != labelId) MergeLabel(acc, labelId);
        return acc;
    }

    private void MergeLabel(int acc, int labelId)
    {
        var current = _accLabel[acc];
        if (labelId == 0 || current == 0) return; // live data beside labelled: keep what is there
        StatsField.MixedLabelWindows++;
        if (Labels.IsNormal(current) && !Labels.IsNormal(labelId)) _accLabel[acc] = labelId;
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
                if (_keys[s].Equals(key)) return s;
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
        _keys[slot] = key;
        ResetEntity(ref _ents[slot]);
        _lastSeen[slot] = long.MinValue;
        _acc0[slot] = -1;
        _acc1[slot] = -1;
        _flags[slot] = 1;
        _index[i] = ((long)hash << 32) | (uint)(slot + 1);
        return slot;
    }

    private int Evict()
    {
        while (true)
        {
            var h = _clockHand;
            _clockHand = h + 1 == _entityHighWater ? 0 : h + 1;
            var f = _flags[h];
            if ((f & 1) == 0) continue;
            if ((f & 2) != 0)
            {
                _flags[h] = (byte)(f & ~2);
                continue;
            }
            StatsField.Evictions++;
            var early = (_acc0[h] >= 0 ? 1 : 0) + (_acc1[h] >= 0 ? 1 : 0);
            if (early > 0)
            {
                StatsField.EarlyClosedWindows += early;
                CloseEntityWindows(h);
                if (PendingRows >= MaxPendingRows) FlushRows();
            }
            RemoveEntity(h, pushFree: false);
            return h;
        }
    }

    private void CloseEntityWindows(int slot)
    {
        var host = _hosts[_keys[slot].HostIndex];
        CloseEarly(host, _acc0[slot]);
        CloseEarly(host, _acc1[slot]);
        _acc0[slot] = -1;
        _acc1[slot] = -1;
    }

    private void CloseEarly(HostClock host, int acc)
    {
        if (acc < 0) return;
        Unlink(host, host.OpenStart[0] == _accStart[acc] ? 0 : 1, acc);
        EmitAndFree(acc);
    }

    private void RemoveEntity(int slot, bool pushFree)
    {
        var hash = _keys[slot].Hash;
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
        _flags[slot] = 0;
        if (_lastSlot == slot) _lastSlot = -1;
        if (pushFree) _freeEntities[_freeEntityTop++] = slot;
    }

    private int OpenAccumulator(int slot, HostClock host, long start, int labelId)
    {
        // An entity keeps at most two windows; a third means the older one is behind the watermark
        // of another path (cannot happen with lateness < window), so close it early rather than lose it.
        if (_acc0[slot] >= 0 && _acc1[slot] >= 0)
        {
            StatsField.EarlyClosedWindows++;
            var older = _accStart[_acc0[slot]] < _accStart[_acc1[slot]] ? 0 : 1;
            var acc = older == 0 ? _acc0[slot] : _acc1[slot];
            Unlink(host, host.OpenStart[0] == _accStart[acc] ? 0 : 1, acc);
            EmitAndFree(acc);
            if (older == 0) _acc0[slot] = -1; else _acc1[slot] = -1;
        }
        int index;
        if (_freeAccTop > 0) index = _freeAccs[--_freeAccTop];
        else
        {
            index = _accHighWater++;
            var chunk = index >> ChunkShift;
            _accChunks[chunk] ??= new TAcc[ChunkSize];
        }
        Acc(index) = default;
        _accStart[index] = start;
        _accEntity[index] = slot;
        _accLabel[index] = labelId;
        _accRecords[index] = 0;
        if (_acc0[slot] < 0) _acc0[slot] = index; else _acc1[slot] = index;

        var w = host.OpenStart[0] == start ? 0 : host.OpenStart[1] == start ? 1 : -1;
        if (w < 0)
        {
            w = host.OpenStart[0] == HostClock.NoWindow ? 0 : 1;
            if (host.OpenStart[w] != HostClock.NoWindow)
                throw new InvalidOperationException("a host has more than two open windows; allowed lateness must be shorter than the window");
            host.OpenStart[w] = start;
            host.OpenHead[w] = -1;
            host.OpenCount[w] = 0;
        }
        var head = host.OpenHead[w];
        _accPrev[index] = -1;
        _accNext[index] = head;
        if (head >= 0) _accPrev[head] = index;
        host.OpenHead[w] = index;
        host.OpenCount[w]++;
        return index;
    }

    private void Unlink(HostClock host, int w, int acc)
    {
        var prev = _accPrev[acc];
        var next = _accNext[acc];
        if (prev >= 0) _accNext[prev] = next; else host.OpenHead[w] = next;
        if (next >= 0) _accPrev[next] = prev;
        host.OpenCount[w]--;
    }

    private void EmitAndFree(int acc)
    {
        var slot = _accEntity[acc];
        EmitRow(in _keys[slot], ref Acc(acc), _accStart[acc], _accRecords[acc], _accLabel[acc]);
        StatsField.Rows++;
        _freeAccs[_freeAccTop++] = acc;
    }

    /// <summary>Closes, for every host, the windows ending at or before <paramref name="watermarkNs"/> (long.MaxValue: all).</summary>
    public void AdvanceAll(long watermarkNs)
    {
        foreach (var host in _hosts) AdvanceWatermark(host, watermarkNs);
    }

    /// <summary>Closes a quiet host's windows by processing time: the watermark moves to at least <paramref name="watermarkNs"/>.</summary>
    public void AdvanceHost(int hostIndex, long watermarkNs)
    {
        if (hostIndex < _hosts.Count) AdvanceWatermark(_hosts[hostIndex], watermarkNs);
    }

    /// <summary>Moves a host's watermark to <paramref name="watermarkNs"/> and closes every window that ends at or before it.</summary>
    private void AdvanceWatermark(HostClock host, long watermarkNs)
    {
        if (watermarkNs <= host.WatermarkNs) return;
        host.WatermarkNs = watermarkNs;
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
                var next = _accNext[acc];
                var slot = _accEntity[acc];
                if (_acc0[slot] == acc) _acc0[slot] = -1; else _acc1[slot] = -1;
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
            var f = _flags[s];
            if ((f & 1) == 0 || _acc0[s] >= 0 || _acc1[s] >= 0) continue;
            var host = _hosts[_keys[s].HostIndex];
            if ((f & 4) != 0 || _lastSeen[s] < host.WatermarkNs - _idleNs)
            {
                RemoveEntity(s, pushFree: true);
                StatsField.Expired++;
            }
        }
    }
}
