using System.Runtime.CompilerServices;

namespace Detect.Models.Detectors;

/// <summary>
/// A generalized suffix automaton over a corpus of call sequences (symbols below 1024): every
/// contiguous substring of any corpus sequence is a path from the root, and nothing else is
/// (Blumer et al. 1985; the generalized form restarts at the root for each sequence, so no
/// substring spans two sequences). Built in time and space linear in the corpus (at most 2N
/// states and 3N transitions for N calls), then compacted: the root's transitions in a direct
/// table, every other state's in one sorted run of a flat array. Walking it answers "is this
/// substring normal?" one call at a time in O(1), which is what covering needs.
/// </summary>
public sealed class SuffixAutomaton
{
    public const int Alphabet = 1024;

    private readonly int[] _root;     // symbol -> state, -1 = none
    private readonly int[] _start;    // state -> first transition index (States + 1 entries)
    private readonly ushort[] _symbol; // transitions, sorted by symbol within a state
    private readonly int[] _target;

    private SuffixAutomaton(int[] root, int[] start, ushort[] symbol, int[] target, long corpusCalls, int sequences)
    {
        _root = root;
        _start = start;
        _symbol = symbol;
        _target = target;
        CorpusCalls = corpusCalls;
        Sequences = sequences;
    }

    public int States => _start.Length - 1;
    public int Transitions => _symbol.Length;
    public long CorpusCalls { get; }
    public int Sequences { get; }

    /// <summary>Bytes held by the compacted automaton.</summary>
    public long Bytes => (long)_start.Length * 4 + (long)_symbol.Length * 6 + _root.Length * 4;

    /// <summary>The state reached from <paramref name="state"/> by <paramref name="symbol"/>, or -1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Next(int state, int symbol)
    {
        if ((uint)symbol >= Alphabet) return -1;
        if (state == 0) return _root[symbol];
        int lo = _start[state], hi = _start[state + 1];
        if (hi - lo <= 8)
        {
            for (var i = lo; i < hi; i++)
                if (_symbol[i] == symbol) return _target[i];
            return -1;
        }
        hi--;
        while (lo <= hi)
        {
            var mid = (lo + hi) >> 1;
            var s = _symbol[mid];
            if (s == symbol) return _target[mid];
            if (s < symbol) lo = mid + 1; else hi = mid - 1;
        }
        return -1;
    }

    /// <summary>Whether <paramref name="s"/> occurs contiguously in some corpus sequence.</summary>
    public bool Contains(ReadOnlySpan<ushort> s)
    {
        var state = 0;
        foreach (var c in s)
        {
            state = Next(state, c);
            if (state < 0) return false;
        }
        return true;
    }

    /// <summary>Length of the longest prefix of <paramref name="s"/> that occurs in the corpus.</summary>
    public int LongestPrefix(ReadOnlySpan<ushort> s)
    {
        var state = 0;
        for (var i = 0; i < s.Length; i++)
        {
            state = Next(state, s[i]);
            if (state < 0) return i;
        }
        return s.Length;
    }

    /// <summary>
    /// Covers <paramref name="s"/> greedily from the left with the longest substrings of the
    /// corpus (Marteau's sequence covering). For a set of pieces closed under taking substrings,
    /// as here, greedy longest-first gives the fewest pieces. A call never seen at all is a piece of
    /// its own and is counted in <paramref name="unknownCalls"/>. Writes where each piece starts into
    /// <paramref name="starts"/> while room lasts; returns the number of pieces.
    /// </summary>
    public int Cover(ReadOnlySpan<ushort> s, out int unknownCalls, Span<int> starts = default)
    {
        var pieces = 0;
        unknownCalls = 0;
        var i = 0;
        while (i < s.Length)
        {
            if (pieces < starts.Length) starts[pieces] = i;
            pieces++;
            var state = _root[s[i] & (Alphabet - 1)];
            if (s[i] >= Alphabet || state < 0)
            {
                unknownCalls++;
                i++;
                continue;
            }
            var j = i + 1;
            while (j < s.Length)
            {
                var next = Next(state, s[j]);
                if (next < 0) break;
                state = next;
                j++;
            }
            i = j;
        }
        return pieces;
    }

    /// <summary>Builds the automaton of a corpus of sequences (each symbol must be below 1024).</summary>
    public static SuffixAutomaton Build(IReadOnlyList<ushort[]> corpus)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        var b = new Builder(corpus.Sum(s => (long)s.Length));
        foreach (var s in corpus)
        {
            var last = 0;
            foreach (var c in s)
            {
                if (c >= Alphabet) throw new ArgumentException($"symbol {c} is not below {Alphabet}", nameof(corpus));
                last = b.Extend(last, c);
            }
        }
        return b.Compact(corpus.Sum(s => (long)s.Length), corpus.Count);
    }

    /// <summary>Construction state: suffix links, lengths, and transitions as per-state linked lists.</summary>
    private sealed class Builder
    {
        private int[] _len, _link, _head;
        private int[] _edgeSymbol, _edgeTarget, _edgeNext;
        private int _states, _edges;
        private readonly int[] _root = new int[Alphabet]; // the root's edges, direct

        public Builder(long calls)
        {
            var states = (int)Math.Clamp(2 * calls + 2, 16, int.MaxValue / 4);
            _len = new int[states];
            _link = new int[states];
            _head = new int[states];
            var edges = (int)Math.Clamp(3 * calls + 2, 16, int.MaxValue / 4);
            _edgeSymbol = new int[edges];
            _edgeTarget = new int[edges];
            _edgeNext = new int[edges];
            Array.Fill(_root, -1);
            _link[0] = -1;
            _head[0] = -1;
            _states = 1;
        }

        private int Get(int state, int c)
        {
            if (state == 0) return _root[c];
            for (var e = _head[state]; e >= 0; e = _edgeNext[e])
                if (_edgeSymbol[e] == c) return _edgeTarget[e];
            return -1;
        }

        private void Set(int state, int c, int target)
        {
            if (state == 0)
            {
                _root[c] = target;
                return;
            }
            for (var e = _head[state]; e >= 0; e = _edgeNext[e])
            {
                if (_edgeSymbol[e] != c) continue;
                _edgeTarget[e] = target;
                return;
            }
            if (_edges == _edgeSymbol.Length)
            {
                var n = _edges * 2;
                Array.Resize(ref _edgeSymbol, n);
                Array.Resize(ref _edgeTarget, n);
                Array.Resize(ref _edgeNext, n);
            }
            _edgeSymbol[_edges] = c;
            _edgeTarget[_edges] = target;
            _edgeNext[_edges] = _head[state];
            _head[state] = _edges++;
        }

        private int NewState(int len, int link)
        {
            if (_states == _len.Length)
            {
                var n = _states * 2;
                Array.Resize(ref _len, n);
                Array.Resize(ref _link, n);
                Array.Resize(ref _head, n);
            }
            _len[_states] = len;
            _link[_states] = link;
            _head[_states] = -1;
            return _states++;
        }

        private int Clone(int p, int c, int q)
        {
            var clone = NewState(_len[p] + 1, _link[q]);
            for (var e = _head[q]; e >= 0; e = _edgeNext[e]) Set(clone, _edgeSymbol[e], _edgeTarget[e]);
            while (p != -1 && Get(p, c) == q)
            {
                Set(p, c, clone);
                p = _link[p];
            }
            _link[q] = clone;
            return clone;
        }

        /// <summary>Appends symbol c after the state of the sequence so far; returns the new last state.</summary>
        public int Extend(int last, int c)
        {
            var existing = Get(last, c);
            if (existing >= 0)
            {
                // The extended string is already in the automaton (seen in an earlier sequence).
                return _len[existing] == _len[last] + 1 ? existing : Clone(last, c, existing);
            }
            var cur = NewState(_len[last] + 1, 0);
            var p = last;
            while (p != -1 && Get(p, c) < 0)
            {
                Set(p, c, cur);
                p = _link[p];
            }
            if (p == -1) return cur;
            var q = Get(p, c);
            _link[cur] = _len[p] + 1 == _len[q] ? q : Clone(p, c, q);
            return cur;
        }

        public SuffixAutomaton Compact(long calls, int sequences)
        {
            // The root's run is empty (its transitions are the direct table); state s >= 1 owns [start[s], start[s + 1]).
            var start = new int[_states + 1];
            for (var s = 1; s < _states; s++)
            {
                var k = 0;
                for (var e = _head[s]; e >= 0; e = _edgeNext[e]) k++;
                start[s + 1] = start[s] + k;
            }
            var total = start[_states];
            var symbol = new ushort[total];
            var target = new int[total];
            var buffer = new List<(int Symbol, int Target)>();
            for (var s = 1; s < _states; s++)
            {
                buffer.Clear();
                for (var e = _head[s]; e >= 0; e = _edgeNext[e]) buffer.Add((_edgeSymbol[e], _edgeTarget[e]));
                buffer.Sort((a, b) => a.Symbol.CompareTo(b.Symbol));
                var at = start[s];
                foreach (var (sym, t) in buffer)
                {
                    symbol[at] = (ushort)sym;
                    target[at++] = t;
                }
            }
            return new SuffixAutomaton((int[])_root.Clone(), start, symbol, target, calls, sequences);
        }
    }
}
