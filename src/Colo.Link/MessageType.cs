namespace Colo.Link;

/// <summary>The kind of a replication-link message (byte 3 of the header). Values are part of the wire format.</summary>
public enum MessageType : byte
{
    /// <summary>First message on a link: a JSON <see cref="LinkHello"/> describing the sender.</summary>
    Hello = 1,

    /// <summary>Liveness probe; empty payload.</summary>
    Heartbeat = 2,

    /// <summary>An Ethernet frame from a client, forwarded from the primary to the secondary.</summary>
    ClientFrame = 3,

    /// <summary>An Ethernet frame produced by the SVM, returned from the secondary to the primary for comparison.</summary>
    SvmFrame = 4,

    /// <summary>Start of a checkpoint; the header's epoch is the new epoch.</summary>
    CheckpointBegin = 5,

    /// <summary>A batch of changed guest pages belonging to the checkpoint in progress.</summary>
    CheckpointPages = 6,

    /// <summary>QEMU device state (migration stream without RAM) of the checkpoint in progress.</summary>
    CheckpointDeviceState = 7,

    /// <summary>End of a checkpoint: everything of the epoch has been sent; the secondary may commit.</summary>
    CheckpointEnd = 8,

    /// <summary>Acknowledgement from the secondary that the checkpoint of the header's epoch is loaded.</summary>
    CheckpointLoaded = 9,

    /// <summary>Orderly shutdown of the link; the payload is a UTF-8 reason (see <see cref="LinkGoodbye"/>).</summary>
    Goodbye = 10,

    /// <summary>The checkpoint in progress is abandoned; the secondary discards what it received of it.</summary>
    CheckpointAbort = 11,

    /// <summary>Start of the initial disk sync: payload = disk size in bytes (u64 big-endian). The secondary (re)creates its base image of that size, all zeroes.</summary>
    DiskSyncBegin = 12,

    /// <summary>Initial disk sync data: payload = byte offset (u64 big-endian) followed by the bytes at that offset (ranges not sent stay zero).</summary>
    DiskSyncData = 13,

    /// <summary>End of the initial disk sync: payload = bytes of data sent (u64 big-endian). The first checkpoint follows.</summary>
    DiskSyncEnd = 14,

    /// <summary>Guest disk writes of the PVM in order, as records with epoch barriers (format: docs/DISK.md).</summary>
    DiskWrites = 15,
}
