using System.Runtime.CompilerServices;

namespace Detect.Pipeline.Features;

/// <summary>
/// Storage for the syscall numbers of open windows, in call order (the `seq` column of syscall/2).
/// Calls live in fixed blocks of <see cref="BlockCalls"/> chained per window; blocks come from one
/// pool bounded by <see cref="PipelineOptions.SequencePoolCalls"/> and are allocated in chunks as
/// they are first needed, so memory grows with the open windows, never past the bound. A window
/// that finds the pool empty (or reaches its own cap) stops recording; the caller counts the calls
/// that did not fit. No allocation after warm-up: freed blocks are reused.
/// </summary>
internal sealed class SequencePool
{
    public const int BlockShift = 6;
    public const int BlockCalls = 1 << BlockShift;
    private const int ChunkShift = 12; // 4096 blocks = 256 Ki calls = 512 KiB per chunk
    private const int ChunkBlocks = 1 << ChunkShift;

    private readonly ushort[]?[] _chunks;
    private readonly int[] _next; // next block of the same window + 1; 0 = last
    private readonly int[] _free;
    private int _freeTop;
    private int _highWater;

    public SequencePool(long maxCalls)
    {
        var blocks = (int)Math.Clamp((maxCalls + BlockCalls - 1) / BlockCalls, 0, int.MaxValue / 2);
        MaxBlocks = blocks;
        _chunks = new ushort[]?[(blocks + ChunkBlocks - 1) >> ChunkShift];
        _next = new int[blocks];
        _free = new int[blocks];
    }

    public int MaxBlocks { get; }

    /// <summary>Blocks holding calls of open windows now.</summary>
    public int BlocksInUse => _highWater - _freeTop;

    /// <summary>Bytes the pool has allocated so far (it never shrinks; at most MaxBlocks blocks).</summary>
    public long AllocatedBytes => (long)_chunks.Count(c => c != null) * ChunkBlocks * BlockCalls * sizeof(ushort);

    /// <summary>A free block (1-based id), or 0 when the pool is exhausted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Allocate()
    {
        int block;
        if (_freeTop > 0) block = _free[--_freeTop];
        else if (_highWater < MaxBlocks)
        {
            block = _highWater++;
            _chunks[block >> ChunkShift] ??= new ushort[ChunkBlocks * BlockCalls];
        }
        else return 0;
        _next[block] = 0;
        return block + 1;
    }

    /// <summary>Chains <paramref name="block"/> after <paramref name="tail"/> (both 1-based).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Link(int tail, int block) => _next[tail - 1] = block;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ushort At(int block, int index)
    {
        var b = block - 1;
        return ref _chunks[b >> ChunkShift]![((b & (ChunkBlocks - 1)) << BlockShift) + index];
    }

    /// <summary>The calls of one block (1-based id), the first <paramref name="count"/> of them.</summary>
    public ReadOnlySpan<ushort> Block(int block, int count)
    {
        var b = block - 1;
        return _chunks[b >> ChunkShift].AsSpan(((b & (ChunkBlocks - 1)) << BlockShift), count);
    }

    public int Next(int block) => _next[block - 1];

    /// <summary>Returns a window's chain of blocks, starting at <paramref name="head"/> (1-based; 0 = none).</summary>
    public void FreeChain(int head)
    {
        for (var b = head; b != 0;)
        {
            var next = _next[b - 1];
            _free[_freeTop++] = b - 1;
            b = next;
        }
    }
}
