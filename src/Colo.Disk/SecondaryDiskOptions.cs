namespace Colo.Disk;

/// <summary>Settings of a <see cref="SecondaryDisk"/>.</summary>
public sealed class SecondaryDiskOptions
{
    /// <summary>
    /// Granularity of the SVM's overlay in bytes: a power of two from 512 to 1 MiB; default 4096. An SVM
    /// write that covers part of a block copies the rest of the block from the base first (read-modify-write).
    /// </summary>
    public int BlockSize { get; init; } = 4096;

    /// <summary>
    /// Bytes of overlay data kept in memory; beyond it overlay blocks go to a temporary spill file.
    /// Default 64 MiB; 0 puts every overlay block in the file.
    /// </summary>
    public long OverlayMemoryLimit { get; init; } = 64L * 1024 * 1024;

    /// <summary>
    /// Bytes of buffered PVM write data kept in memory; beyond it the data goes to a temporary spill file.
    /// Default 64 MiB; 0 puts all of it in the file.
    /// </summary>
    public long BufferMemoryLimit { get; init; } = 64L * 1024 * 1024;

    /// <summary>Folder for the spill files (created on first spill, deleted when closed); default <see cref="Path.GetTempPath"/>.</summary>
    public string? SpillDirectory { get; init; }
}

/// <summary>What a <see cref="SecondaryDisk.Failover"/> did.</summary>
/// <param name="DroppedRecords">PVM write records dropped (written after the last committed checkpoint).</param>
/// <param name="DroppedBytes">Data bytes of those records.</param>
/// <param name="DroppedBarriers">Barriers dropped with them (checkpoints whose commit never happened).</param>
/// <param name="MergedOverlayBytes">Bytes of SVM overlay blocks written into the base image.</param>
/// <param name="CompletedCommitEpoch">The epoch of a failed commit that the failover completed first, or 0.</param>
public readonly record struct DiskFailoverResult(int DroppedRecords, long DroppedBytes, int DroppedBarriers, long MergedOverlayBytes, ulong CompletedCommitEpoch);

/// <summary>
/// A checkpoint commit on a <see cref="SecondaryDisk"/> failed. The base image may hold part of the epoch's
/// PVM writes; nothing else changed (the buffered writes and the overlay are kept). Recovery: call
/// <see cref="SecondaryDisk.Commit"/> again with the same (or a later) epoch, or <see cref="SecondaryDisk.Failover"/>,
/// which completes this commit first. Until then the SVM's reads and writes throw.
/// </summary>
public sealed class DiskCommitException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="epoch">The epoch being committed.</param>
    /// <param name="step">The step that failed: "apply" (writing buffered PVM writes to the base), "flush" (fsync of the base) or "buffer" (keeping writes after the barrier).</param>
    /// <param name="recordIndex">Index of the buffered record being applied at "apply" (0-based), otherwise -1.</param>
    /// <param name="innerException">The failure.</param>
    public DiskCommitException(ulong epoch, string step, int recordIndex, Exception innerException)
        : base($"disk commit of epoch {epoch} failed at {step}" + (recordIndex >= 0 ? $" (record {recordIndex})" : "") + ": " + innerException.Message, innerException)
    {
        Epoch = epoch;
        Step = step;
        RecordIndex = recordIndex;
    }

    /// <summary>The epoch being committed.</summary>
    public ulong Epoch { get; }

    /// <summary>The step that failed: "apply", "flush" or "buffer".</summary>
    public string Step { get; }

    /// <summary>Index of the buffered record being applied when <see cref="Step"/> is "apply", otherwise -1.</summary>
    public int RecordIndex { get; }
}

/// <summary>
/// A <see cref="SecondaryDisk.Failover"/> failed while merging the overlay into the base image or flushing it.
/// The buffered PVM writes are already dropped; the overlay is kept and reads still see overlay over base, so
/// calling <see cref="SecondaryDisk.Failover"/> again completes it.
/// </summary>
public sealed class DiskFailoverException : IOException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="step">"merge" or "flush".</param>
    /// <param name="innerException">The failure.</param>
    public DiskFailoverException(string step, Exception innerException)
        : base($"disk failover failed at {step}: {innerException.Message}", innerException)
    {
        Step = step;
    }

    /// <summary>"merge" (writing overlay blocks to the base) or "flush" (fsync of the base).</summary>
    public string Step { get; }
}
