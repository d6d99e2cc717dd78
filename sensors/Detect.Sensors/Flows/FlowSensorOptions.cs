namespace Detect.Sensors.Flows;

/// <summary>Options of <see cref="FlowSensor.Start"/>. Timeouts as in IPFIX exporters.</summary>
public sealed record FlowSensorOptions
{
    /// <summary>A flow with no packet for this long is exported (reason Idle) and its entry later removed.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>A long flow is exported at least this often (reason Active); each record counts its own slice.</summary>
    public TimeSpan ActiveTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// After a TCP end (RST, or FIN both ways and the last ACK), how long the entry stays to
    /// collect strays before it is removed; packets that still arrive are exported after this
    /// long as another TcpEnd record.
    /// </summary>
    public TimeSpan TcpLinger { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>When the table passes <see cref="PressureMark"/>, flows idle this long are exported (reason Evicted) and removed.</summary>
    public TimeSpan PressureIdle { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Capacity of the flow table (entries; about 200 bytes each in the kernel).</summary>
    public int MaxFlows { get; init; } = 65536;

    /// <summary>Fraction of <see cref="MaxFlows"/> from which a sweep makes room.</summary>
    public double PressureMark { get; init; } = 0.9;

    /// <summary>Ring size in bytes (a power of two): 4 MiB holds about 29,000 records.</summary>
    public uint RingBytes { get; init; } = 4u << 20;

    /// <summary>How often <see cref="FlowSensor.Pump"/> sweeps the table (timeouts are checked then).</summary>
    public TimeSpan SweepInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Record the process that starts a TCP connection (tp_btf/inet_sock_set_state, host-wide).</summary>
    public bool AttributeConnects { get; init; } = true;

    /// <summary>
    /// cgroup v2 directories whose connect()/sendmsg() calls are attributed (cgroup sock_addr
    /// hooks; they never refuse a call). Needed for UDP attribution. None by default.
    /// </summary>
    public IReadOnlyList<string> AttributionCgroups { get; init; } = [];

    /// <summary>Allow the cgroup v2 root in <see cref="AttributionCgroups"/> (every process of the host).</summary>
    public bool AllowRootCgroup { get; init; }

    /// <summary>Folder of the BPF objects; default: beside the assemblies (bpf/), then the checkout's bpf/build.</summary>
    public string? ObjectDirectory { get; init; }
}
