using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using Colo.Disk.Internal;

namespace Colo.Disk;

/// <summary>
/// Wire format of the disk write stream (primary to secondary, carried as payloads of replication-link
/// messages). A payload is a sequence of whole records; each record is, big-endian:
/// <code>
///  0  u8   version (= <see cref="Version"/>)
///  1  u8   kind    (<see cref="DiskRecordKind"/>)
///  2  u8   flags   (<see cref="DiskWriteFlags"/>; 0 for a barrier)
///  3  u8   reserved, 0
///  4  u64  write: byte offset on the disk; barrier: epoch
/// 12  u32  write: length in bytes; barrier: 0
/// 16  data write without Zero/Trim: length bytes; otherwise nothing
///  .. u32  CRC-32C (Castagnoli) of every preceding byte of the record
/// </code>
/// Parsers follow the Try pattern: <c>false</c> means "need more bytes" and consumes nothing, an
/// <see cref="InvalidDataException"/> means malformed input (the stream cannot be resynchronised), and the
/// position advances only on success. A header is validated as soon as its 16 bytes are present, so an
/// oversized record throws without waiting for its data.
/// </summary>
public static class DiskRecordCodec
{
    /// <summary>Format version written and accepted (1).</summary>
    public const byte Version = 1;

    /// <summary>Header bytes before the data (16).</summary>
    public const int HeaderSize = 16;

    /// <summary>Bytes a record takes besides its data: header and CRC (20).</summary>
    public const int Overhead = HeaderSize + 4;

    /// <summary>Largest data of one plain write record: 4 MiB (4,194,304 bytes). Longer writes are split into several records.</summary>
    public const int MaxDataLength = 4 * 1024 * 1024;

    /// <summary>Largest range of one zero or trim record: 1 GiB (1,073,741,824 bytes). Longer ranges are split.</summary>
    public const int MaxRangeLength = 1024 * 1024 * 1024;

    /// <summary>Encoded size in bytes of a barrier record (20).</summary>
    public const int BarrierSize = Overhead;

    /// <summary>Encoded size in bytes of a zero or trim record (20).</summary>
    public const int RangeRecordSize = Overhead;

    private const DiskWriteFlags KnownFlags = DiskWriteFlags.Fua | DiskWriteFlags.Zero | DiskWriteFlags.Trim | DiskWriteFlags.NoHole;

    /// <summary>Encoded size in bytes of a plain write record carrying <paramref name="dataLength"/> bytes.</summary>
    /// <param name="dataLength">Data bytes, 1 to <see cref="MaxDataLength"/>.</param>
    /// <returns><see cref="Overhead"/> + <paramref name="dataLength"/>.</returns>
    public static int GetWriteSize(int dataLength) => Overhead + dataLength;

    /// <summary>Encodes a plain write record at <paramref name="position"/> in <paramref name="destination"/>.</summary>
    /// <param name="destination">The buffer to write into.</param>
    /// <param name="position">Where to write; advanced past the record on success, unchanged otherwise.</param>
    /// <param name="offset">Byte offset on the disk, 0 or more, with <paramref name="offset"/> + data length not overflowing.</param>
    /// <param name="data">The written bytes, 1 to <see cref="MaxDataLength"/>.</param>
    /// <param name="fua">Whether the PVM asked for force-unit-access.</param>
    /// <returns><c>false</c> if the record does not fit in the rest of <paramref name="destination"/> (nothing written).</returns>
    /// <exception cref="ArgumentOutOfRangeException">Offset negative or the range overflows, data empty or longer than <see cref="MaxDataLength"/>, position outside the buffer.</exception>
    public static bool TryWriteWrite(Span<byte> destination, ref int position, long offset, ReadOnlySpan<byte> data, bool fua)
    {
        if (data.Length is 0 or > MaxDataLength)
            ThrowArg(nameof(data), $"write data of {data.Length} bytes is outside 1..{MaxDataLength}");
        CheckRange(offset, data.Length);
        CheckPosition(destination, position);
        int size = Overhead + data.Length;
        if (destination.Length - position < size)
            return false;
        Span<byte> rec = destination.Slice(position, size);
        WriteHeader(rec, DiskRecordKind.Write, fua ? DiskWriteFlags.Fua : DiskWriteFlags.None, (ulong)offset, (uint)data.Length);
        data.CopyTo(rec[HeaderSize..]);
        BinaryPrimitives.WriteUInt32BigEndian(rec[(HeaderSize + data.Length)..], Crc32C.Compute(rec[..(HeaderSize + data.Length)]));
        position += size;
        return true;
    }

    /// <summary>Encodes a zero or trim record (no data) at <paramref name="position"/> in <paramref name="destination"/>.</summary>
    /// <param name="destination">The buffer to write into.</param>
    /// <param name="position">Where to write; advanced by <see cref="RangeRecordSize"/> on success, unchanged otherwise.</param>
    /// <param name="offset">Byte offset on the disk, 0 or more.</param>
    /// <param name="length">Bytes in the range, 1 to <see cref="MaxRangeLength"/>.</param>
    /// <param name="flags">Must contain exactly one of <see cref="DiskWriteFlags.Zero"/> and <see cref="DiskWriteFlags.Trim"/>; may add <see cref="DiskWriteFlags.Fua"/>, and <see cref="DiskWriteFlags.NoHole"/> with Zero.</param>
    /// <returns><c>false</c> if the record does not fit (nothing written).</returns>
    /// <exception cref="ArgumentOutOfRangeException">Bad offset, length, flags or position.</exception>
    public static bool TryWriteRange(Span<byte> destination, ref int position, long offset, int length, DiskWriteFlags flags)
    {
        if (length is <= 0 or > MaxRangeLength)
            ThrowArg(nameof(length), $"range of {length} bytes is outside 1..{MaxRangeLength}");
        if (!IsValidRangeFlags(flags))
            ThrowArg(nameof(flags), $"flags {flags} are not a zero or trim range");
        CheckRange(offset, length);
        CheckPosition(destination, position);
        if (destination.Length - position < Overhead)
            return false;
        Span<byte> rec = destination.Slice(position, Overhead);
        WriteHeader(rec, DiskRecordKind.Write, flags, (ulong)offset, (uint)length);
        BinaryPrimitives.WriteUInt32BigEndian(rec[HeaderSize..], Crc32C.Compute(rec[..HeaderSize]));
        position += Overhead;
        return true;
    }

    /// <summary>Encodes an epoch barrier at <paramref name="position"/> in <paramref name="destination"/>.</summary>
    /// <param name="destination">The buffer to write into.</param>
    /// <param name="position">Where to write; advanced by <see cref="BarrierSize"/> on success, unchanged otherwise.</param>
    /// <param name="epoch">The checkpoint epoch the barrier closes, 1 or more.</param>
    /// <returns><c>false</c> if the record does not fit (nothing written).</returns>
    /// <exception cref="ArgumentOutOfRangeException">Epoch 0 or position outside the buffer.</exception>
    public static bool TryWriteBarrier(Span<byte> destination, ref int position, ulong epoch)
    {
        if (epoch == 0)
            ThrowArg(nameof(epoch), "barrier epoch must be 1 or more");
        CheckPosition(destination, position);
        if (destination.Length - position < BarrierSize)
            return false;
        Span<byte> rec = destination.Slice(position, BarrierSize);
        WriteHeader(rec, DiskRecordKind.Barrier, DiskWriteFlags.None, epoch, 0);
        BinaryPrimitives.WriteUInt32BigEndian(rec[HeaderSize..], Crc32C.Compute(rec[..HeaderSize]));
        position += BarrierSize;
        return true;
    }

    /// <summary>Tries to decode one record at <paramref name="position"/> in <paramref name="source"/>.</summary>
    /// <param name="source">Received bytes.</param>
    /// <param name="position">Where the record starts; advanced past it on success, unchanged otherwise.</param>
    /// <param name="record">The record; its <see cref="DiskRecord.Data"/> is a slice of <paramref name="source"/>. Default when <c>false</c>.</param>
    /// <returns><c>true</c> if a whole record was decoded; <c>false</c> if more bytes are needed.</returns>
    /// <exception cref="InvalidDataException">Unknown version, kind or flags, non-zero reserved byte, zero or oversized length,
    /// a range past 2^63 bytes, a barrier with epoch 0 or a length, or a CRC mismatch.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="position"/> is outside <paramref name="source"/>.</exception>
    public static bool TryRead(ReadOnlySpan<byte> source, ref int position, out DiskRecord record)
    {
        if ((uint)position > (uint)source.Length)
            ThrowArg(nameof(position), $"position {position} is outside the {source.Length}-byte buffer");
        ReadOnlySpan<byte> rest = source[position..];
        record = default;
        if (rest.Length < HeaderSize)
            return false;

        byte version = rest[0];
        var kind = (DiskRecordKind)rest[1];
        var flags = (DiskWriteFlags)rest[2];
        ulong word = BinaryPrimitives.ReadUInt64BigEndian(rest[4..]);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(rest[12..]);
        if (version != Version)
            ThrowInvalid($"disk record version {version}, expected {Version}");
        if (rest[3] != 0)
            ThrowInvalid($"disk record reserved byte is {rest[3]}");

        int dataLength = 0;
        if (kind == DiskRecordKind.Write)
        {
            if ((flags & ~KnownFlags) != 0)
                ThrowInvalid($"disk write flags 0x{(byte)flags:X2} has unknown bits");
            bool range = (flags & (DiskWriteFlags.Zero | DiskWriteFlags.Trim)) != 0;
            if (range && !IsValidRangeFlags(flags))
                ThrowInvalid($"disk write flags 0x{(byte)flags:X2} combine zero and trim");
            if (!range && (flags & DiskWriteFlags.NoHole) != 0)
                ThrowInvalid("disk write flag NoHole without Zero");
            uint max = range ? (uint)MaxRangeLength : (uint)MaxDataLength;
            if (length == 0 || length > max)
                ThrowInvalid($"disk write length {length} is outside 1..{max}");
            if (word > long.MaxValue || (long)word > long.MaxValue - length)
                ThrowInvalid($"disk write range {word}+{length} overflows");
            if (!range)
                dataLength = (int)length;
        }
        else if (kind == DiskRecordKind.Barrier)
        {
            if (flags != DiskWriteFlags.None || length != 0)
                ThrowInvalid("disk barrier with flags or a length");
            if (word == 0)
                ThrowInvalid("disk barrier with epoch 0");
        }
        else
        {
            ThrowInvalid($"unknown disk record kind {(byte)kind}");
        }

        int size = Overhead + dataLength;
        if (rest.Length < size)
            return false;
        uint expected = BinaryPrimitives.ReadUInt32BigEndian(rest[(HeaderSize + dataLength)..]);
        uint actual = Crc32C.Compute(rest[..(HeaderSize + dataLength)]);
        if (expected != actual)
            ThrowInvalid($"disk record CRC mismatch: 0x{expected:X8} in the record, 0x{actual:X8} computed");

        record = kind == DiskRecordKind.Write
            ? new DiskRecord(kind, flags, (long)word, (int)length, 0, rest.Slice(HeaderSize, dataLength))
            : new DiskRecord(kind, DiskWriteFlags.None, 0, 0, word, default);
        position += size;
        return true;
    }

    internal static bool IsValidRangeFlags(DiskWriteFlags flags)
    {
        if ((flags & ~KnownFlags) != 0)
            return false;
        bool zero = (flags & DiskWriteFlags.Zero) != 0;
        bool trim = (flags & DiskWriteFlags.Trim) != 0;
        if (zero == trim)
            return false;
        return zero || (flags & DiskWriteFlags.NoHole) == 0;
    }

    private static void WriteHeader(Span<byte> rec, DiskRecordKind kind, DiskWriteFlags flags, ulong word, uint length)
    {
        rec[0] = Version;
        rec[1] = (byte)kind;
        rec[2] = (byte)flags;
        rec[3] = 0;
        BinaryPrimitives.WriteUInt64BigEndian(rec[4..], word);
        BinaryPrimitives.WriteUInt32BigEndian(rec[12..], length);
    }

    private static void CheckRange(long offset, int length)
    {
        if (offset < 0 || offset > long.MaxValue - length)
            ThrowArg(nameof(offset), $"range {offset}+{length} is negative or overflows");
    }

    private static void CheckPosition(Span<byte> destination, int position)
    {
        if ((uint)position > (uint)destination.Length)
            ThrowArg(nameof(position), $"position {position} is outside the {destination.Length}-byte buffer");
    }

    [DoesNotReturn]
    private static void ThrowInvalid(string message) => throw new InvalidDataException(message);

    [DoesNotReturn]
    private static void ThrowArg(string name, string message) => throw new ArgumentOutOfRangeException(name, message);
}
