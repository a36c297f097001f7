namespace Colo.Disk;

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
