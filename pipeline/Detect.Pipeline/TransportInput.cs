using Detect.Records;
using Detect.Transport;

namespace Detect.Pipeline;

/// <summary>
/// Feeds a pipeline from the transport: each message's payload (the records, back to back) goes to
/// <see cref="FeaturePipeline.Process"/> as it is, with the source of its host. At least once: a
/// message is committed after its records were applied; duplicates are committed unseen.
/// </summary>
public sealed class TransportInput
{
    private readonly FeaturePipeline _pipeline;
    private readonly Func<ulong, RecordSource> _sourceOf;
    private readonly Dictionary<ulong, RecordSource> _sources = [];

    /// <param name="sourceOf">Host id -> its source (name and boot-to-realtime offset). The message header carries
    /// no clock offset, so the default assumes every host's boot clock is this machine's (true in process,
    /// `./detect up`); a multi-host deployment must pass the offsets its hosts announce.</param>
    public TransportInput(FeaturePipeline pipeline, Func<ulong, RecordSource>? sourceOf = null)
    {
        _pipeline = pipeline;
        var local = KernelClock.BootToRealtimeOffsetNs();
        _sourceOf = sourceOf ?? (id => new RecordSource(id == HostIdentity.Local ? Environment.MachineName : $"host-{id:x16}", local));
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
        if (!_sources.TryGetValue(message.HostId, out var source))
        {
            source = _sourceOf(message.HostId);
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
