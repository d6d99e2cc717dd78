using System.Text.Json;
using Detect.Transport;

namespace Detect.Alerts.Policy;

/// <summary>
/// Reads the policy-acks topic (a consumer group of its own, so every pipeline instance sees every
/// acknowledgement) and keeps counts per status and the last acknowledgements, so the terminal can
/// say what the sensors did with each decision.
/// </summary>
public sealed class AckTracker
{
    private readonly Lock _gate = new();
    private readonly Dictionary<PolicyAckStatus, long> _byStatus = [];
    private readonly Queue<PolicyAck> _recent = new();
    private long _bad;

    public long Total
    {
        get
        {
            lock (_gate) return _byStatus.Values.Sum();
        }
    }

    /// <summary>Records on the topic that were not acknowledgements (counted, skipped).</summary>
    public long Malformed => Interlocked.Read(ref _bad);

    public long Count(PolicyAckStatus status)
    {
        lock (_gate) return _byStatus.GetValueOrDefault(status);
    }

    public IReadOnlyList<PolicyAck> Recent
    {
        get
        {
            lock (_gate) return [.. _recent];
        }
    }

    /// <summary>Takes the acknowledgements of one message's payload.</summary>
    public void Apply(ReadOnlySpan<byte> payload)
    {
        ControlRecord.ForEach(payload, (type, json) =>
        {
            if (type != ControlRecordType.PolicyAck)
            {
                Interlocked.Increment(ref _bad);
                return;
            }
            PolicyAck ack;
            try
            {
                ack = PolicyAck.FromJson(json);
            }
            catch (JsonException)
            {
                Interlocked.Increment(ref _bad);
                return;
            }
            lock (_gate)
            {
                _byStatus[ack.Status] = _byStatus.GetValueOrDefault(ack.Status) + 1;
                _recent.Enqueue(ack);
                while (_recent.Count > 50) _recent.Dequeue();
            }
        }, (_, _) => Interlocked.Increment(ref _bad));
    }

    /// <summary>Follows the topic until cancelled.</summary>
    public async Task RunAsync(ITransport transport, string groupId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transport);
        using var consumer = transport.Subscribe(new ConsumerOptions
        {
            GroupId = groupId,
            Families = [MessageFamily.PolicyAcks],
            SessionTimeout = TimeSpan.FromSeconds(6),
            Log = _ => { },
        });
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                using var message = await consumer.ReceiveAsync(cancellationToken).ConfigureAwait(false);
                if (!message.IsDuplicate) Apply(message.Payload);
                consumer.Commit(message);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }
}
