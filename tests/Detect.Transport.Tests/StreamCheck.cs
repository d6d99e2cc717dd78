using Detect.Records;

namespace Detect.Transport.Tests;

/// <summary>
/// The test's own account of what arrived, from the records themselves (host = Task.Pid, index =
/// KtimeNs): per host, indexes must arrive in increasing order; an index below the next expected is
/// a duplicate, one above it means records are missing. Independent of the transport's counters.
/// </summary>
internal interface IObserver
{
    void Observe(InboundMessage message);
}

internal sealed class StreamCheck : IObserver
{
    private readonly Dictionary<uint, ulong> _next = [];
    private readonly HashSet<(string, int)> _partitions = [];
    private readonly Dictionary<ulong, HashSet<int>> _hostPartitions = [];

    /// <summary>The partitions each host's messages came from.</summary>
    public IReadOnlyDictionary<ulong, HashSet<int>> HostPartitions => _hostPartitions;

    public long Unique { get; private set; }
    public long Duplicates { get; private set; }
    public long Missing { get; private set; }
    public long Messages { get; private set; }

    /// <summary>The boot-to-realtime offset of the last message.</summary>
    public long LastBootToRealtimeNs { get; private set; }

    public void Observe(InboundMessage message)
    {
        lock (this)
        {
            Messages++;
            LastBootToRealtimeNs = message.Header.BootToRealtimeNs;
            _partitions.Add((message.Topic, message.Partition));
            if (!_hostPartitions.TryGetValue(message.HostId, out var set)) _hostPartitions[message.HostId] = set = [];
            set.Add(message.Partition);
            var reader = message.Records();
            while (reader.TryRead(out var record))
            {
                var syscall = record.As<SyscallRecord>();
                var host = syscall.Task.Pid;
                var index = syscall.Header.KtimeNs;
                var next = _next.GetValueOrDefault(host);
                if (index < next)
                {
                    Duplicates++;
                    continue;
                }
                if (index > next) Missing += (long)(index - next);
                _next[host] = index + 1;
                Unique++;
            }
        }
    }

    public int Partitions
    {
        get { lock (this) return _partitions.Count; }
    }

    public ulong NextOf(uint host)
    {
        lock (this) return _next.GetValueOrDefault(host);
    }

    /// <summary>Records seen or known missing for every host: what the publishers sent, once everything arrived.</summary>
    public long Accounted
    {
        get { lock (this) return _next.Values.Sum(v => (long)v); }
    }
}
