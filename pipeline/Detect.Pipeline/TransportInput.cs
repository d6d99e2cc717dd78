using Detect.Transport;

namespace Detect.Pipeline;

/// <summary>
/// Feeds a pipeline from the transport: each message's payload (the records, back to back) goes to
/// <see cref="FeaturePipeline.Process"/> as it is, with its host and the boot-to-realtime offset its
/// header carries. At least once: a message is committed after its records were applied;
/// duplicates are committed unseen.
/// </summary>
public sealed class TransportInput
{
    private readonly FeaturePipeline _pipeline;
    private readonly Func<ulong, string> _hostName;
    private readonly Dictionary<ulong, RecordSource> _sources = [];

    /// <param name="hostName">Host id -> the name in the `host` column. Default: this machine's name for
    /// <see cref="HostIdentity.Local"/>, `host-` and the id in hex for others.</param>
    public TransportInput(FeaturePipeline pipeline, Func<ulong, string>? hostName = null)
    {
        _pipeline = pipeline;
        _hostName = hostName ?? (id => id == HostIdentity.Local ? Environment.MachineName : $"host-{id:x16}");
    }

    public long Messages { get; private set; }
    public long Duplicates { get; private set; }

    /// <summary>Applies one message (skipping a duplicate's records). The caller commits it.</summary>
    public void Apply(InboundMessage message)
    {
        Messages++;
        if (message.IsDuplicate)
        {
            Duplicates++;
            return;
        }
        var offset = message.Header.BootToRealtimeNs;
        // One source per host, replaced when the sensor's clock offset moves (it is read at each seal).
        if (!_sources.TryGetValue(message.HostId, out var source) || source.BootToRealtimeNs != offset)
        {
            source = new RecordSource(source?.Host ?? _hostName(message.HostId), offset);
            _sources[message.HostId] = source;
        }
        _pipeline.Process(message.Payload, source);
    }

    /// <summary>Reads, applies and commits messages until cancelled; advances quiet hosts' windows by wall clock each second.</summary>
    public async Task RunAsync(IMessageConsumer consumer, CancellationToken cancellationToken)
    {
        var lastTick = DateTime.UtcNow;
        while (!cancellationToken.IsCancellationRequested)
        {
            InboundMessage? message;
            if (!consumer.TryReceive(out message))
            {
                using var tick = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                tick.CancelAfter(TimeSpan.FromSeconds(1));
                try
                {
                    message = await consumer.ReceiveAsync(tick.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    message = null;
                }
            }
            if (message != null)
            {
                using (message)
                {
                    Apply(message);
                    consumer.Commit(message);
                }
            }
            var now = DateTime.UtcNow;
            if (now - lastTick >= TimeSpan.FromSeconds(1))
            {
                lastTick = now;
                _pipeline.AdvanceTo((now - DateTime.UnixEpoch).Ticks * 100);
            }
        }
    }
}
