namespace Colo.Disk;

/// <summary>
/// A block device as an NBD export sees it. Same shape as the NBD server's device interface so the node can
/// adapt one to the other in a few lines. Offsets and lengths are bytes; callers keep every range within
/// [0, <see cref="Size"/>).
/// </summary>
public interface IBlockDevice
{
    /// <summary>Size of the device in bytes.</summary>
    long Size { get; }

    /// <summary>Fills <paramref name="destination"/> with the device's bytes starting at <paramref name="offset"/>.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> destination);

    /// <summary>Writes <paramref name="source"/> at <paramref name="offset"/>; with <paramref name="fua"/> the write is durable when the task completes.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool fua);

    /// <summary>Makes every completed write durable.</summary>
    ValueTask FlushAsync();

    /// <summary>Discards <paramref name="length"/> bytes at <paramref name="offset"/> (reads afterwards return zeroes here).</summary>
    ValueTask TrimAsync(long offset, long length);

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> read as zeroes; <paramref name="noHole"/> asks to keep them allocated.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, bool noHole);
}

/// <summary>
/// The secondary's base image: synchronous positional I/O on the disk as of the last checkpoint.
/// Implementations must allow concurrent <see cref="Read"/> calls (from several threads) while no
/// <see cref="Write"/>, <see cref="WriteZeroes"/> or <see cref="Flush"/> runs; the <see cref="SecondaryDisk"/>
/// never overlaps a mutation with anything else.
/// </summary>
public interface IBaseImage
{
    /// <summary>Size in bytes (fixed for the image's lifetime).</summary>
    long Size { get; }

    /// <summary>Fills <paramref name="destination"/> from byte <paramref name="offset"/>; the range lies within <see cref="Size"/>.</summary>
    /// <exception cref="IOException">The read failed.</exception>
    void Read(long offset, Span<byte> destination);

    /// <summary>Writes <paramref name="source"/> at byte <paramref name="offset"/>; the range lies within <see cref="Size"/>.</summary>
    /// <exception cref="IOException">The write failed.</exception>
    void Write(long offset, ReadOnlySpan<byte> source);

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> read as zeroes.</summary>
    /// <exception cref="IOException">The write failed.</exception>
    void WriteZeroes(long offset, long length);

    /// <summary>Makes every completed write durable (fsync).</summary>
    /// <exception cref="IOException">The flush failed.</exception>
    void Flush();
}
