namespace Colo.Nbd;

/// <summary>
/// A fixed-size array of bytes served by <see cref="NbdServer"/>. Offsets and lengths are in bytes; the server only
/// calls a method after checking that <c>offset + length &lt;= Size</c>, so implementations need not re-check.
/// </summary>
/// <remarks>
/// <para>Concurrency: the server calls these methods concurrently (up to
/// <see cref="NbdServerOptions.MaxInFlightRequests"/> per connection, several connections). Overlapping concurrent
/// requests have no defined order (NBD gives none either); non-overlapping ones must not disturb each other.</para>
/// <para>Durability: <see cref="FlushAsync"/> makes durable every write, trim and write-zeroes that completed before
/// it was called, whichever connection issued it (one shared cache). This is what lets the server advertise
/// <c>NBD_FLAG_CAN_MULTI_CONN</c>.</para>
/// <para>Errors: throw <see cref="BlockDeviceException"/> to answer with a specific NBD error, any other
/// <see cref="IOException"/> is answered with EIO (ENOSPC when its errno says so). Exceptions of other types are
/// treated as bugs: the request is answered with EIO and the exception is logged as an error.</para>
/// <para>Methods may complete synchronously; the server then handles the next request on the same thread without a
/// thread hop (the fast path for a device backed by the page cache or memory).</para>
/// </remarks>
public interface IBlockDevice
{
    /// <summary>Size of the device in bytes; constant for the device's lifetime.</summary>
    long Size { get; }

    /// <summary>Whether the device refuses writes; the server then advertises NBD_FLAG_READ_ONLY and answers writes, trims
    /// and write-zeroes with EPERM without calling the device.</summary>
    bool IsReadOnly { get; }

    /// <summary>Reads <c>buffer.Length</c> bytes starting at <paramref name="offset"/> into <paramref name="buffer"/>.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer);

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>.</summary>
    /// <param name="offset">Byte offset.</param>
    /// <param name="data">The bytes; only valid until the returned task completes.</param>
    /// <param name="fua">Force unit access: the write must be durable (as after <see cref="FlushAsync"/>) when the
    /// task completes. Earlier writes need not be.</param>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua);

    /// <summary>Makes every completed write durable (see the remarks on the interface).</summary>
    ValueTask FlushAsync();

    /// <summary>A hint that <paramref name="length"/> bytes at <paramref name="offset"/> are no longer needed. The
    /// contents read afterwards are unspecified until written again (zero is a good choice; ignoring the hint is
    /// allowed).</summary>
    ValueTask TrimAsync(long offset, long length);

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> read as zero.</summary>
    /// <param name="offset">Byte offset.</param>
    /// <param name="length">Byte count (may exceed the 32 MiB payload limit: there is no payload).</param>
    /// <param name="noHole">When true the range must stay allocated (write real zeroes or allocate zeroed blocks);
    /// when false the device may deallocate it (punch a hole).</param>
    ValueTask WriteZeroesAsync(long offset, long length, bool noHole);
}
