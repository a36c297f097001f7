namespace Colo.Node;

/// <summary>Disk replication figures in <c>status.json</c> (<c>"disk": {...}</c>); all sizes in bytes.</summary>
public sealed class DiskStatus
{
    /// <summary>Size of the guest disk.</summary>
    public long SizeBytes { get; set; }

    /// <summary>Initial sync: bytes copied (all-zero chunks are skipped, so this is at most <see cref="SizeBytes"/>).</summary>
    public long SyncBytes { get; set; }

    /// <summary>Initial sync duration in ms (0 until done).</summary>
    public double SyncMs { get; set; }

    /// <summary>Primary: guest writes forwarded to the secondary (records).</summary>
    public long ForwardedWrites { get; set; }

    /// <summary>Primary: bytes of write data forwarded.</summary>
    public long ForwardedBytes { get; set; }

    /// <summary>Primary: peak bytes queued for the link.</summary>
    public long QueueBytesMax { get; set; }

    /// <summary>Secondary: SVM overlay now.</summary>
    public long OverlayBytes { get; set; }

    /// <summary>Secondary: largest SVM overlay seen.</summary>
    public long OverlayBytesMax { get; set; }

    /// <summary>Secondary: buffered PVM writes now.</summary>
    public long BufferBytes { get; set; }

    /// <summary>Secondary: largest PVM write buffer seen.</summary>
    public long BufferBytesMax { get; set; }

    /// <summary>Secondary: last checkpoint committed to the base image.</summary>
    public ulong CommittedEpoch { get; set; }

    /// <summary>Secondary after failover: bytes of the SVM overlay merged into the base.</summary>
    public long FailoverMergedBytes { get; set; }

    /// <summary>Secondary after failover: buffered PVM writes dropped (after the last checkpoint).</summary>
    public long FailoverDroppedBytes { get; set; }
}
