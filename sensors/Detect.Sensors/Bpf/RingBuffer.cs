using System.Runtime.InteropServices;
using Detect.Sensors.Bpf.Native;

namespace Detect.Sensors.Bpf;

/// <summary>Told of each record of a drained batch (a struct implementation is inlined by the JIT).</summary>
public interface IRingBufferHandler
{
    void OnRecord(ReadOnlySpan<byte> record);
}

/// <summary>
/// Reads a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) through its own mmap, as cilium/ebpf does: the
/// consumer page (read-write) at offset 0, then the producer page and the data pages, which the
/// kernel maps twice in a row so that a record that wraps is still one contiguous span. Records
/// are handed over in place (no copy, no allocation); the consumer position moves once per batch,
/// after the batch is processed, so the kernel cannot reuse the space while the spans are read.
/// One reader per ring, used from one thread.
/// </summary>
public sealed unsafe class RingBufferReader : IDisposable
{
    private const uint BusyBit = 1u << 31, DiscardBit = 1u << 30;
    private const int HeaderSize = 8;

    private readonly SafeBpfFd? _ownedFd;
    private readonly int _pageSize;
    private readonly nuint _dataLength;
    private nint _consumerMap, _producerMap;
    private readonly ulong* _consumerPos;
    private readonly ulong* _producerPos;
    private readonly byte* _data;
    private readonly ulong _mask;
    private ulong _consumed; // our copy of *_consumerPos
    private int _disposed;

    /// <summary>A reader over an object's ring-buffer map (after load). The map must outlive the reader.</summary>
    public RingBufferReader(BpfMap map) : this(map.Fd, map.MaxEntries, map.Name, null)
    {
        if (map.Type != BpfMapType.RingBuf) throw new ArgumentException($"map {map.Name} is a {map.Type}, not a ring buffer", nameof(map));
    }

    private RingBufferReader(int fd, uint size, string name, SafeBpfFd? owned)
    {
        if (size == 0 || (size & (size - 1)) != 0) throw new ArgumentException($"ring {name}: size {size} is not a power of two");
        Name = name;
        Fd = fd;
        Size = size;
        _ownedFd = owned;
        _pageSize = Libc.getpagesize();
        _consumerMap = Libc.mmap(0, (nuint)_pageSize, Libc.ProtRead | Libc.ProtWrite, Libc.MapShared, fd, 0);
        if (_consumerMap == -1) throw MapError("consumer page");
        _dataLength = (nuint)_pageSize + 2 * (nuint)size;
        _producerMap = Libc.mmap(0, _dataLength, Libc.ProtRead, Libc.MapShared, fd, _pageSize);
        if (_producerMap == -1)
        {
            var e = MapError("producer and data pages");
            Libc.munmap(_consumerMap, (nuint)_pageSize);
            throw e;
        }
        _consumerPos = (ulong*)_consumerMap;
        _producerPos = (ulong*)_producerMap;
        _data = (byte*)_producerMap + _pageSize;
        _mask = size - 1;
        _consumed = Volatile.Read(ref *_consumerPos);
    }

    public string Name { get; }

    /// <summary>The ring map's fd (for epoll: readable when records wait).</summary>
    public int Fd { get; }

    /// <summary>Data area size in bytes.</summary>
    public uint Size { get; }

    /// <summary>Bytes written and not yet consumed.</summary>
    public ulong PendingBytes => Volatile.Read(ref *_producerPos) - _consumed;

    /// <summary>Records and bytes consumed since the reader was made.</summary>
    public long RecordsRead { get; private set; }

    private Exception MapError(string what)
    {
        var errno = Marshal.GetLastPInvokeError();
        return new BpfException($"ring {Name}: could not mmap the {what}: {Errnos.Describe(errno)}", errno);
    }

    /// <summary>
    /// Hands each committed record (up to <paramref name="maxRecords"/>) to <paramref name="handler"/>,
    /// then releases them all to the kernel at once. Returns the number handed over.
    /// </summary>
    public int Drain<THandler>(ref THandler handler, int maxRecords = int.MaxValue)
        where THandler : IRingBufferHandler, allows ref struct
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var cons = _consumed;
        var prod = Volatile.Read(ref *_producerPos);
        var n = 0;
        while (cons < prod && n < maxRecords)
        {
            var header = (uint*)(_data + (cons & _mask));
            var len = Volatile.Read(ref *header);
            if ((len & BusyBit) != 0) break; // reserved, not submitted yet: records after it wait too
            var length = len & ~(BusyBit | DiscardBit);
            if ((len & DiscardBit) == 0)
            {
                handler.OnRecord(new ReadOnlySpan<byte>(header + 2, (int)length));
                n++;
            }
            cons += (length + HeaderSize + 7) & ~7UL;
        }
        if (cons != _consumed)
        {
            _consumed = cons;
            Volatile.Write(ref *_consumerPos, cons); // release: the kernel may now reuse the space
        }
        RecordsRead += n;
        return n;
    }

    /// <summary>
    /// The committed records now in the ring (up to <paramref name="maxRecords"/>), in place.
    /// Enumerate it, then <see cref="Release"/> it; the spans are valid until then.
    /// </summary>
    public RingBufferBatch ReadBatch(int maxRecords = int.MaxValue)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        var start = _consumed;
        var cons = start;
        var prod = Volatile.Read(ref *_producerPos);
        var n = 0;
        while (cons < prod && n < maxRecords)
        {
            var len = Volatile.Read(ref *(uint*)(_data + (cons & _mask)));
            if ((len & BusyBit) != 0) break;
            if ((len & DiscardBit) == 0) n++;
            cons += ((len & ~(BusyBit | DiscardBit)) + HeaderSize + 7) & ~7UL;
        }
        return new RingBufferBatch(_data, _mask, start, cons, n);
    }

    /// <summary>Gives the space of a batch back to the kernel.</summary>
    public void Release(in RingBufferBatch batch)
    {
        if (batch.Start != _consumed) throw new InvalidOperationException($"ring {Name}: batches must be released in order");
        if (batch.End == _consumed) return;
        _consumed = batch.End;
        Volatile.Write(ref *_consumerPos, batch.End);
        RecordsRead += batch.Count;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Libc.munmap(_producerMap, _dataLength);
        Libc.munmap(_consumerMap, (nuint)_pageSize);
        _producerMap = _consumerMap = 0;
        _ownedFd?.Dispose();
    }
}

/// <summary>Committed records of a ring, in place. Valid until <see cref="RingBufferReader.Release"/>.</summary>
public readonly unsafe ref struct RingBufferBatch
{
    private readonly byte* _data;
    private readonly ulong _mask;

    internal RingBufferBatch(byte* data, ulong mask, ulong start, ulong end, int count)
    {
        _data = data;
        _mask = mask;
        Start = start;
        End = end;
        Count = count;
    }

    internal ulong Start { get; }
    internal ulong End { get; }

    /// <summary>Records in the batch.</summary>
    public int Count { get; }

    /// <summary>Ring bytes the batch spans (record headers and padding included).</summary>
    public long Bytes => (long)(End - Start);

    public Enumerator GetEnumerator() => new(_data, _mask, Start, End);

    public ref struct Enumerator
    {
        private readonly byte* _data;
        private readonly ulong _mask;
        private readonly ulong _end;
        private ulong _pos;

        internal Enumerator(byte* data, ulong mask, ulong start, ulong end)
        {
            _data = data;
            _mask = mask;
            _pos = start;
            _end = end;
            Current = default;
        }

        public ReadOnlySpan<byte> Current { get; private set; }

        public bool MoveNext()
        {
            while (_pos < _end)
            {
                var header = (uint*)(_data + (_pos & _mask));
                var len = *header; // committed: ReadBatch saw it with acquire semantics
                var length = len & ~((1u << 31) | (1u << 30));
                _pos += (length + 8 + 7) & ~7UL;
                if ((len & (1u << 30)) != 0) continue;
                Current = new ReadOnlySpan<byte>(header + 2, (int)length);
                return true;
            }
            return false;
        }
    }
}

/// <summary>
/// Waits for any of several rings to hold records (epoll on the ring fds; the kernel signals a
/// ring when a producer asks for a wakeup), or for <see cref="Interrupt"/> from another thread.
/// </summary>
public sealed unsafe class RingBufferPoller : IDisposable
{
    private readonly SafeBpfFd _epoll;
    private readonly SafeBpfFd _wake;
    private readonly byte* _events;
    private const int MaxEvents = 16;
    private int _disposed;

    public RingBufferPoller()
    {
        var ep = Libc.epoll_create1(Libc.EpollCloexec);
        if (ep < 0) throw new BpfException($"epoll_create1: {Errnos.Describe(Marshal.GetLastPInvokeError())}");
        _epoll = new SafeBpfFd(ep);
        var ev = Libc.eventfd(0, Libc.EfdCloexec | Libc.EfdNonblock);
        if (ev < 0)
        {
            _epoll.Dispose();
            throw new BpfException($"eventfd: {Errnos.Describe(Marshal.GetLastPInvokeError())}");
        }
        _wake = new SafeBpfFd(ev);
        _events = (byte*)NativeMemory.AllocZeroed((nuint)(MaxEvents * Libc.EpollEventSize));
        Add(ev, ulong.MaxValue);
    }

    /// <summary>Watches a ring; <paramref name="tag"/> comes back from <see cref="Wait"/> when it is ready.</summary>
    public void Add(RingBufferReader ring, int tag)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tag);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(tag, 62);
        Add(ring.Fd, (ulong)tag);
    }

    private void Add(int fd, ulong data)
    {
        var ev = stackalloc byte[16];
        Libc.WriteEpollEvent(ev, Libc.EpollIn, data);
        if (Libc.epoll_ctl(_epoll.Fd, Libc.EpollCtlAdd, fd, ev) != 0)
            throw new BpfException($"epoll_ctl(ADD, fd {fd}): {Errnos.Describe(Marshal.GetLastPInvokeError())}");
    }

    /// <summary>
    /// Blocks up to <paramref name="timeoutMs"/> (-1: forever) until a ring has records or
    /// <see cref="Interrupt"/> is called. Returns a bit set of the ready tags (bit 63: interrupted).
    /// </summary>
    public ulong Wait(int timeoutMs)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        int n;
        do
        {
            n = Libc.epoll_wait(_epoll.Fd, _events, MaxEvents, timeoutMs);
        }
        while (n < 0 && Marshal.GetLastPInvokeError() == 4); // EINTR
        if (n < 0) throw new BpfException($"epoll_wait: {Errnos.Describe(Marshal.GetLastPInvokeError())}");
        ulong ready = 0;
        for (var i = 0; i < n; i++)
        {
            var data = Libc.ReadEpollData(_events + i * Libc.EpollEventSize);
            if (data == ulong.MaxValue)
            {
                ulong drain;
                Libc.read(_wake.Fd, &drain, 8);
                ready |= 1UL << 63;
            }
            else
            {
                ready |= 1UL << (int)(data % 63);
            }
        }
        return ready;
    }

    /// <summary>Wakes a <see cref="Wait"/> in progress (or the next one). Safe from any thread.</summary>
    public void Interrupt()
    {
        if (_disposed != 0) return;
        ulong one = 1;
        Libc.write(_wake.Fd, &one, 8);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _wake.Dispose();
        _epoll.Dispose();
        NativeMemory.Free(_events);
    }
}
