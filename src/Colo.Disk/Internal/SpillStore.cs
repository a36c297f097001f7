using System.Buffers;
using Microsoft.Win32.SafeHandles;

namespace Colo.Disk.Internal;

/// <summary>
/// A linear byte address space: positions below <see cref="MemoryLimit"/> live in memory chunks (rented from
/// the shared array pool on first use, returned by Clear), positions at or above it in a temporary spill file
/// (created on first use, deleted on close, truncated by <see cref="Clear"/>). Not thread-safe for writes;
/// concurrent <see cref="Read"/> calls are safe while nothing writes.
/// </summary>
internal sealed class SpillStore : IDisposable
{
    private const int MaxChunkSize = 1024 * 1024;

    private readonly string _directory;
    private readonly string _prefix;
    private readonly int _chunkSize;
    private readonly byte[]?[] _chunks;
    private SafeFileHandle? _file;
    private long _fileHighWater;

    public SpillStore(long memoryLimit, string directory, string prefix)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(memoryLimit);
        MemoryLimit = memoryLimit;
        _directory = directory;
        _prefix = prefix;
        _chunkSize = (int)Math.Min(MaxChunkSize, Math.Max(memoryLimit, 1));
        _chunks = new byte[]?[(memoryLimit + _chunkSize - 1) / _chunkSize];
    }

    /// <summary>Bytes kept in memory before spilling.</summary>
    public long MemoryLimit { get; }

    /// <summary>Highest file position written since the last <see cref="Clear"/> (bytes in the spill file).</summary>
    public long SpilledBytes => _fileHighWater;

    /// <summary>Path of the spill file, or null before the first spill.</summary>
    public string? SpillPath { get; private set; }

    public void Write(long position, ReadOnlySpan<byte> source)
    {
        while (!source.IsEmpty && position < MemoryLimit)
        {
            Span<byte> chunk = Chunk(position, allocate: true);
            int n = Math.Min(chunk.Length, source.Length);
            source[..n].CopyTo(chunk);
            source = source[n..];
            position += n;
        }
        if (source.IsEmpty)
            return;
        SafeFileHandle file = EnsureFile();
        long filePos = position - MemoryLimit;
        RandomAccess.Write(file, source, filePos);
        _fileHighWater = Math.Max(_fileHighWater, filePos + source.Length);
    }

    public void Read(long position, Span<byte> destination)
    {
        while (!destination.IsEmpty && position < MemoryLimit)
        {
            Span<byte> chunk = Chunk(position, allocate: false);
            int n = Math.Min(chunk.Length, destination.Length);
            if (chunk.IsEmpty)
            {
                // Never written: cannot be read by callers that only read what they wrote.
                n = (int)Math.Min(Math.Min(destination.Length, _chunkSize - position % _chunkSize), MemoryLimit - position);
                destination[..n].Clear();
            }
            else
            {
                chunk[..n].CopyTo(destination);
            }
            destination = destination[n..];
            position += n;
        }
        if (destination.IsEmpty)
            return;
        long filePos = position - MemoryLimit;
        if (_file == null)
        {
            destination.Clear();
            return;
        }
        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(_file, destination, filePos);
            if (n <= 0)
            {
                destination.Clear();
                return;
            }
            destination = destination[n..];
            filePos += n;
        }
    }

    /// <summary>
    /// The bytes at <paramref name="position"/> as one memory span if they lie in a single memory chunk
    /// (no copy), otherwise false.
    /// </summary>
    public bool TryGetMemory(long position, int length, out ReadOnlySpan<byte> span)
    {
        span = default;
        if (position + length > MemoryLimit)
            return false;
        Span<byte> chunk = Chunk(position, allocate: false);
        if (chunk.Length < length)
            return false;
        span = chunk[..length];
        return true;
    }

    /// <summary>
    /// Forgets every byte: memory chunks go back to the shared array pool, the spill file is truncated to 0
    /// (a failed truncation is ignored: the stale bytes are never read and are overwritten by later spills).
    /// </summary>
    public void Clear()
    {
        ReturnChunks();
        if (_file != null && _fileHighWater > 0)
        {
            try
            {
                RandomAccess.SetLength(_file, 0);
            }
            catch (IOException)
            {
            }
        }
        _fileHighWater = 0;
    }

    /// <summary>Bytes of memory chunks currently held.</summary>
    public long MemoryBytes { get; private set; }

    public void Dispose()
    {
        _file?.Dispose();
        _file = null;
        ReturnChunks();
    }

    private void ReturnChunks()
    {
        for (int i = 0; i < _chunks.Length; i++)
        {
            if (_chunks[i] is { } chunk)
            {
                _chunks[i] = null;
                ArrayPool<byte>.Shared.Return(chunk);
            }
        }
        MemoryBytes = 0;
    }

    private Span<byte> Chunk(long position, bool allocate)
    {
        int index = (int)(position / _chunkSize);
        int within = (int)(position % _chunkSize);
        byte[]? chunk = _chunks[index];
        if (chunk == null)
        {
            if (!allocate)
                return default;
            long start = (long)index * _chunkSize;
            int length = (int)Math.Min(_chunkSize, MemoryLimit - start);
            chunk = ArrayPool<byte>.Shared.Rent(length);
            _chunks[index] = chunk;
            MemoryBytes += length;
        }
        return chunk.AsSpan(within, (int)Math.Min(_chunkSize, MemoryLimit - (long)index * _chunkSize) - within);
    }

    private SafeFileHandle EnsureFile()
    {
        if (_file == null)
        {
            string path = Path.Combine(_directory, $"{_prefix}-{Environment.ProcessId}-{Guid.NewGuid():N}.spill");
            _file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
            SpillPath = path;
        }
        return _file;
    }
}
