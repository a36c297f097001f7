namespace Colo.Disk;

/// <summary>The kind of a record in the disk write stream (byte 1 of a record). Values are part of the wire format.</summary>
public enum DiskRecordKind : byte
{
    /// <summary>A PVM write (or zero / trim of a range, per <see cref="DiskWriteFlags"/>).</summary>
    Write = 1,

    /// <summary>An epoch barrier: every record before it belongs to the checkpoint of its epoch.</summary>
    Barrier = 2,
}

/// <summary>Flags of a <see cref="DiskRecordKind.Write"/> record (byte 2 of a record). Values are part of the wire format.</summary>
[Flags]
public enum DiskWriteFlags : byte
{
    /// <summary>A plain write carrying its data.</summary>
    None = 0,

    /// <summary>The PVM asked for force-unit-access (informational on the secondary: a commit always flushes).</summary>
    Fua = 1,

    /// <summary>The range reads as zeroes afterwards (NBD WRITE_ZEROES); the record carries no data.</summary>
    Zero = 2,

    /// <summary>The range was trimmed (NBD TRIM); the record carries no data and the secondary makes it read as zeroes.</summary>
    Trim = 4,

    /// <summary>With <see cref="Zero"/>: the PVM asked not to punch a hole (NBD_CMD_FLAG_NO_HOLE); contents are the same either way.</summary>
    NoHole = 8,
}

/// <summary>
/// One decoded record of the disk write stream. Produced by <see cref="DiskRecordCodec.TryRead"/>;
/// <see cref="Data"/> is a slice of the decoded buffer (no copy) and is valid only as long as that buffer is.
/// </summary>
public readonly ref struct DiskRecord
{
    /// <summary>Creates a record (the codec validates fields; this constructor does not).</summary>
    /// <param name="kind">The record kind.</param>
    /// <param name="flags">Write flags; <see cref="DiskWriteFlags.None"/> for a barrier.</param>
    /// <param name="offset">Byte offset on the disk of a write; 0 for a barrier.</param>
    /// <param name="length">Bytes covered by a write; 0 for a barrier.</param>
    /// <param name="epoch">Epoch of a barrier; 0 for a write.</param>
    /// <param name="data">The data of a plain write; empty for zero, trim and barrier records.</param>
    public DiskRecord(DiskRecordKind kind, DiskWriteFlags flags, long offset, int length, ulong epoch, ReadOnlySpan<byte> data)
    {
        Kind = kind;
        Flags = flags;
        Offset = offset;
        Length = length;
        Epoch = epoch;
        Data = data;
    }

    /// <summary>The record kind.</summary>
    public DiskRecordKind Kind { get; }

    /// <summary>Write flags (<see cref="DiskWriteFlags.None"/> for a barrier).</summary>
    public DiskWriteFlags Flags { get; }

    /// <summary>Byte offset on the disk of a write (0 for a barrier).</summary>
    public long Offset { get; }

    /// <summary>Bytes covered by a write, 1 to <see cref="DiskRecordCodec.MaxDataLength"/> for a plain write, 1 to <see cref="DiskRecordCodec.MaxRangeLength"/> for zero/trim (0 for a barrier).</summary>
    public int Length { get; }

    /// <summary>Epoch of a barrier (0 for a write).</summary>
    public ulong Epoch { get; }

    /// <summary>The data of a plain write (<see cref="Length"/> bytes); empty for zero, trim and barrier records.</summary>
    public ReadOnlySpan<byte> Data { get; }

    /// <summary>Whether this is a write whose range becomes zeroes (<see cref="DiskWriteFlags.Zero"/> or <see cref="DiskWriteFlags.Trim"/>).</summary>
    public bool IsZeroRange => Kind == DiskRecordKind.Write && (Flags & (DiskWriteFlags.Zero | DiskWriteFlags.Trim)) != 0;
}
