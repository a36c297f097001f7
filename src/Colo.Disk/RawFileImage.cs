using System.Buffers;
using Microsoft.Win32.SafeHandles;

namespace Colo.Disk;

/// <summary>
/// A raw disk image file as an <see cref="IBaseImage"/>: positional reads and writes (pread/pwrite), so
/// concurrent reads are safe. The size is the file's length when opened; it never changes.
/// </summary>
public sealed class RawFileImage : IBaseImage, IDisposable
{
    private readonly SafeFileHandle _handle;

    private RawFileImage(SafeFileHandle handle, long size, string path)
    {
        _handle = handle;
        Size = size;
        Path = path;
    }

    /// <summary>Opens an existing raw image for reading and writing.</summary>
    /// <param name="path">The image file.</param>
    /// <returns>The open image; dispose it to close the file.</returns>
    /// <exception cref="IOException">The file cannot be opened (missing, locked, ...).</exception>
    /// <exception cref="UnauthorizedAccessException">No permission to open it for writing.</exception>
    public static RawFileImage Open(string path)
    {
        SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        return new RawFileImage(handle, RandomAccess.GetLength(handle), path);
    }

    /// <summary>Creates (or truncates) a sparse raw image of <paramref name="size"/> bytes reading as zeroes.</summary>
    /// <param name="path">The image file.</param>
    /// <param name="size">Size in bytes, 0 or more.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is negative.</exception>
    /// <exception cref="IOException">The file cannot be created.</exception>
    public static RawFileImage Create(string path, long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        SafeFileHandle handle = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.Read);
        RandomAccess.SetLength(handle, size);
        return new RawFileImage(handle, size, path);
    }

    /// <summary>
    /// Opens <paramref name="path"/> (created when missing) under an exclusive advisory lock (flock, held while the image is
    /// open) and only then empties it and sets its size, so an image another process holds exclusively (e.g. the primary's
    /// own disk, when both daemons were pointed at one shared path) is refused untouched.
    /// </summary>
    /// <exception cref="IOException">The file is locked by another process, or cannot be created.</exception>
    public static RawFileImage CreateExclusive(string path, long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        SafeFileHandle handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        try
        {
            RandomAccess.SetLength(handle, 0);
            RandomAccess.SetLength(handle, size);
            return new RawFileImage(handle, size, path);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The image file's path.</summary>
    public string Path { get; }

    /// <inheritdoc/>
    public long Size { get; }

    /// <inheritdoc/>
    public void Read(long offset, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(_handle, destination, offset);
            if (n <= 0)
            {
                // Past the end of a file shorter than its recorded size cannot happen for our own images;
                // treat it as zeroes rather than failing a guest read.
                destination.Clear();
                return;
            }
            destination = destination[n..];
            offset += n;
        }
    }

    /// <inheritdoc/>
    public void Write(long offset, ReadOnlySpan<byte> source) => RandomAccess.Write(_handle, source, offset);

    /// <inheritdoc/>
    public void WriteZeroes(long offset, long length)
    {
        const int Chunk = 256 * 1024;
        byte[] zeroes = ArrayPool<byte>.Shared.Rent((int)Math.Min(Chunk, Math.Max(length, 1)));
        try
        {
            Array.Clear(zeroes);
            while (length > 0)
            {
                int n = (int)Math.Min(length, zeroes.Length);
                RandomAccess.Write(_handle, zeroes.AsSpan(0, n), offset);
                offset += n;
                length -= n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(zeroes);
        }
    }

    /// <inheritdoc/>
    public void Flush() => RandomAccess.FlushToDisk(_handle);

    /// <summary>Closes the file.</summary>
    public void Dispose() => _handle.Dispose();
}
