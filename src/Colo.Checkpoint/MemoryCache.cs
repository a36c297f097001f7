using System.Buffers;
using System.Runtime.InteropServices;

namespace Colo.Checkpoint;

/// <summary>
/// The secondary's memory cache: the PVM's RAM as of the last checkpoint (COLO paper, §4;
/// DESIGN.md "The checkpoint transaction"). Incoming checkpoint pages land here; at commit the
/// cache is written into the SVM's RAM wherever the two differ, which is exactly the union of
/// PVM-changed and SVM-changed pages. Lives in unmanaged memory (one allocation of the guest's
/// RAM size). Not thread-safe.
/// </summary>
public sealed unsafe class MemoryCache : IDisposable
{
    private byte* _data;

    /// <summary>Allocates a zeroed cache of <paramref name="lengthBytes"/> (a multiple of 4096).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The length is not a positive multiple of 4096.</exception>
    public MemoryCache(long lengthBytes)
    {
        if (lengthBytes <= 0 || lengthBytes % GuestRam.PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(lengthBytes), lengthBytes, "cache size must be a positive multiple of 4096 bytes");
        Length = lengthBytes;
        _data = (byte*)NativeMemory.AllocZeroed((nuint)lengthBytes);
    }

    /// <summary>Size in bytes.</summary>
    public long Length { get; }

    /// <summary>Number of 4 KiB pages.</summary>
    public int PageCount => (int)(Length / GuestRam.PageSize);

    /// <summary>Pages written into the cache since the last <see cref="TakeReceivedCount"/>.</summary>
    public int ReceivedPages { get; private set; }

    /// <summary>The cached copy of page <paramref name="index"/>.</summary>
    public Span<byte> Page(int index)
    {
        if ((uint)index >= (uint)PageCount)
            throw new ArgumentOutOfRangeException(nameof(index));
        ObjectDisposedException.ThrowIf(_data == null, this);
        return new Span<byte>(_data + (long)index * GuestRam.PageSize, GuestRam.PageSize);
    }

    /// <summary>Stores the pages of one <see cref="PageBatch"/> payload.</summary>
    /// <returns>Pages stored.</returns>
    /// <exception cref="InvalidDataException">The batch is malformed.</exception>
    public int Apply(ReadOnlySequence<byte> batch)
    {
        int n = PageBatch.Read(batch, PageCount, this, static (cache, index, page) => page.CopyTo(cache.Page(index)));
        ReceivedPages += n;
        return n;
    }

    /// <summary>Returns and resets the count of pages received since the last call.</summary>
    public int TakeReceivedCount()
    {
        int n = ReceivedPages;
        ReceivedPages = 0;
        return n;
    }

    /// <summary>
    /// Makes <paramref name="ram"/> equal to the cache by writing every page that differs
    /// (the SVM must be stopped). Compares both host cores' worth of pages in parallel.
    /// </summary>
    /// <returns>Number of pages written.</returns>
    /// <exception cref="ArgumentException">The RAM size differs from the cache's.</exception>
    public int RestoreInto(GuestRam ram)
    {
        if (ram.Length != Length)
            throw new ArgumentException("SVM RAM size differs from the memory cache's", nameof(ram));
        int pages = PageCount;
        int workers = Math.Max(1, Math.Min(Environment.ProcessorCount, 4));
        int chunk = (pages + workers - 1) / workers;
        int written = 0;
        Parallel.For(0, workers, w =>
        {
            int start = w * chunk;
            int end = Math.Min(pages, start + chunk);
            int local = 0;
            for (int i = start; i < end; i++)
            {
                Span<byte> cached = Page(i);
                Span<byte> live = ram.Page(i);
                if (!cached.SequenceEqual(live))
                {
                    cached.CopyTo(live);
                    local++;
                }
            }
            Interlocked.Add(ref written, local);
        });
        return written;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_data == null)
            return;
        NativeMemory.Free(_data);
        _data = null;
    }
}
