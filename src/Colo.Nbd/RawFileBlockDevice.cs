using Colo.Nbd.Internal;
using Microsoft.Win32.SafeHandles;

namespace Colo.Nbd;

/// <summary>
/// A raw image file as a block device: <c>pread</c>/<c>pwrite</c> through <see cref="RandomAccess"/> on one
/// <see cref="SafeFileHandle"/>, <c>fdatasync</c> for flush and FUA, <c>fallocate</c> for trim and write-zeroes.
/// </summary>
/// <remarks>
/// <para>Reads and non-FUA writes run synchronously on the calling thread: through the page cache they are memory
/// copies, and completing synchronously lets the server handle the next request without a thread hop. Flushes and
/// FUA writes run <c>fdatasync</c> on the thread pool so the connection keeps reading requests meanwhile. With
/// <c>asyncIo: true</c> reads and writes also go to the thread pool (for images on slow disks, where a cache miss
/// would otherwise stall the connection's other requests).</para>
/// <para>Trim punches a hole (<c>FALLOC_FL_PUNCH_HOLE</c>); where the file system cannot, it is ignored (allowed by
/// NBD). Write-zeroes punches a hole unless NO_HOLE is asked for, then uses <c>FALLOC_FL_ZERO_RANGE</c>; where
/// neither works it writes zeroes (1 MiB at a time).</para>
/// <para>One handle is shared by all connections, so a flush covers every completed write (multi-connection safe).
/// </para>
/// </remarks>
public sealed class RawFileBlockDevice : IBlockDevice, IDisposable
{
    private const int ZeroChunk = 1024 * 1024;
    private static readonly byte[] Zeroes = new byte[ZeroChunk];

    private readonly SafeFileHandle _handle;
    private readonly bool _asyncIo;
    private volatile bool _punchUnsupported;
    private volatile bool _zeroRangeUnsupported;

    private RawFileBlockDevice(SafeFileHandle handle, long size, bool readOnly, bool asyncIo, string path)
    {
        _handle = handle;
        Size = size;
        IsReadOnly = readOnly;
        _asyncIo = asyncIo;
        Path = path;
    }

    /// <summary>The image file.</summary>
    public string Path { get; }

    /// <inheritdoc/>
    public long Size { get; }

    /// <inheritdoc/>
    public bool IsReadOnly { get; }

    /// <summary>Opens an existing raw image; its current length is the device size.</summary>
    /// <param name="path">The image file.</param>
    /// <param name="readOnly">Open for reading only (the export is then read-only).</param>
    /// <param name="asyncIo">Run reads and writes on the thread pool instead of the calling thread (see remarks).</param>
    /// <param name="exclusive">Take an exclusive advisory lock (flock) for as long as the device is open, so a second
    /// exclusive opener (another daemon pointed at the same image) fails instead of corrupting it.</param>
    /// <exception cref="IOException">The file cannot be opened, or (with <paramref name="exclusive"/>) it is open elsewhere.</exception>
    public static RawFileBlockDevice Open(string path, bool readOnly = false, bool asyncIo = false, bool exclusive = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        SafeFileHandle handle = File.OpenHandle(
            path, FileMode.Open, readOnly ? FileAccess.Read : FileAccess.ReadWrite, exclusive ? FileShare.None : FileShare.ReadWrite);
        try
        {
            return new RawFileBlockDevice(handle, RandomAccess.GetLength(handle), readOnly, asyncIo, System.IO.Path.GetFullPath(path));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Creates (or truncates) a sparse raw image of <paramref name="size"/> bytes and opens it.</summary>
    /// <exception cref="IOException">The file cannot be created.</exception>
    public static RawFileBlockDevice Create(string path, long size, bool asyncIo = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        using (SafeFileHandle handle = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            RandomAccess.SetLength(handle, size);
        }

        return Open(path, readOnly: false, asyncIo);
    }

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer)
    {
        if (_asyncIo)
        {
            return ReadOnPoolAsync(offset, buffer);
        }

        try
        {
            ReadCore(offset, buffer.Span);
            return default;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua)
    {
        if (_asyncIo || fua)
        {
            return WriteOnPoolAsync(offset, data, fua);
        }

        try
        {
            RandomAccess.Write(_handle, data.Span, offset);
            return default;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <inheritdoc/>
    public ValueTask FlushAsync() => new(Task.Run(() => LibC.FDataSync(_handle)));

    /// <inheritdoc/>
    public ValueTask TrimAsync(long offset, long length)
    {
        if (length == 0 || _punchUnsupported)
        {
            return default;
        }

        try
        {
            int errno = LibC.FAllocate(_handle, LibC.FallocPunchHole | LibC.FallocKeepSize, offset, length);
            if (errno == LibC.EOPNOTSUPP || errno == LibC.ENOSYS)
            {
                _punchUnsupported = true; // a trim is only a hint: ignoring it is allowed
            }
            else if (errno != 0)
            {
                throw ErrnoException("fallocate(PUNCH_HOLE)", errno);
            }

            return default;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <inheritdoc/>
    public ValueTask WriteZeroesAsync(long offset, long length, bool noHole)
    {
        if (length == 0)
        {
            return default;
        }

        try
        {
            if (!noHole && !_punchUnsupported)
            {
                int errno = LibC.FAllocate(_handle, LibC.FallocPunchHole | LibC.FallocKeepSize, offset, length);
                if (errno == 0)
                {
                    return default;
                }

                if (errno != LibC.EOPNOTSUPP && errno != LibC.ENOSYS)
                {
                    throw ErrnoException("fallocate(PUNCH_HOLE)", errno);
                }

                _punchUnsupported = true;
            }

            if (!_zeroRangeUnsupported)
            {
                int errno = LibC.FAllocate(_handle, LibC.FallocZeroRange | LibC.FallocKeepSize, offset, length);
                if (errno == 0)
                {
                    return default;
                }

                if (errno != LibC.EOPNOTSUPP && errno != LibC.ENOSYS)
                {
                    throw ErrnoException("fallocate(ZERO_RANGE)", errno);
                }

                _zeroRangeUnsupported = true;
            }

            // Large zero ranges (mkfs, qemu-img convert) go to the thread pool; small ones are written here.
            if (length > ZeroChunk || _asyncIo)
            {
                return new ValueTask(Task.Run(() => WriteZeroBytes(offset, length)));
            }

            WriteZeroBytes(offset, length);
            return default;
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(ex);
        }
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _handle.Dispose();

    private void ReadCore(long offset, Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int n = RandomAccess.Read(_handle, buffer, offset);
            if (n == 0)
            {
                buffer.Clear(); // the file was shortened behind our back: past its end reads as zero
                return;
            }

            buffer = buffer[n..];
            offset += n;
        }
    }

    private async ValueTask ReadOnPoolAsync(long offset, Memory<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int n = await RandomAccess.ReadAsync(_handle, buffer, offset).ConfigureAwait(false);
            if (n == 0)
            {
                buffer.Span.Clear();
                return;
            }

            buffer = buffer[n..];
            offset += n;
        }
    }

    private async ValueTask WriteOnPoolAsync(long offset, ReadOnlyMemory<byte> data, bool fua)
    {
        await RandomAccess.WriteAsync(_handle, data, offset).ConfigureAwait(false);
        if (fua)
        {
            await Task.Run(() => LibC.FDataSync(_handle)).ConfigureAwait(false);
        }
    }

    private void WriteZeroBytes(long offset, long length)
    {
        while (length > 0)
        {
            int n = (int)Math.Min(length, ZeroChunk);
            RandomAccess.Write(_handle, Zeroes.AsSpan(0, n), offset);
            offset += n;
            length -= n;
        }
    }

    private static IOException ErrnoException(string call, int errno) =>
        new($"{call} failed: {System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno)}", errno);
}
