namespace Colo.Nbd;

/// <summary>
/// A block device held in one managed array (at most <see cref="Array.MaxLength"/> bytes). Flush does nothing; trim
/// and write-zeroes zero the range. For tests and for measuring the protocol path without a file system.
/// </summary>
public sealed class MemoryBlockDevice : IBlockDevice
{
    private readonly byte[] _data;

    /// <summary>Creates a zero-filled device.</summary>
    /// <param name="size">Size in bytes, 0 to <see cref="Array.MaxLength"/>.</param>
    /// <param name="readOnly">Value of <see cref="IsReadOnly"/>.</param>
    public MemoryBlockDevice(long size, bool readOnly = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, Array.MaxLength);
        _data = new byte[size];
        IsReadOnly = readOnly;
    }

    /// <inheritdoc/>
    public long Size => _data.LongLength;

    /// <inheritdoc/>
    public bool IsReadOnly { get; }

    /// <summary>The contents, for inspection (writes to it are visible to clients).</summary>
    public Span<byte> Contents => _data;

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer)
    {
        _data.AsSpan(checked((int)offset), buffer.Length).CopyTo(buffer.Span);
        return default;
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua)
    {
        data.Span.CopyTo(_data.AsSpan(checked((int)offset)));
        return default;
    }

    /// <inheritdoc/>
    public ValueTask FlushAsync() => default;

    /// <inheritdoc/>
    public ValueTask TrimAsync(long offset, long length)
    {
        _data.AsSpan(checked((int)offset), checked((int)length)).Clear();
        return default;
    }

    /// <inheritdoc/>
    public ValueTask WriteZeroesAsync(long offset, long length, bool noHole) => TrimAsync(offset, length);
}
